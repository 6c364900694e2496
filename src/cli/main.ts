import { Command } from 'commander';
import { commands } from './commands/index.js';
import { printError } from './util.js';

const program = new Command();
program
  .name('natpunch')
  .description('Direct, authenticated connections between any two machines, whatever NATs stand between them.')
  .version('0.1.0')
  .option('--debug', 'print stack traces and debug logs')
  .showHelpAfterError('(run with --help for usage)')
  .configureOutput({
    // commander's own errors (bad flags) are already one line; keep them that way.
    outputError: (str, write) => write(str),
  });

for (const load of commands) {
  const mod = await load();
  mod.register(program);
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  printError(err, process.argv.includes('--debug'));
  process.exitCode = 1;
}
