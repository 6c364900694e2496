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

// Load only the command being run: each module pulls in its own part of the library, and start-up time counts
// (netcheck must finish in under 3 s). Help, no command or an unknown one load them all.
const requested = process.argv.slice(2).find((arg) => !arg.startsWith('-'));
const toLoad = requested !== undefined && Object.hasOwn(commands, requested) ? [commands[requested]!] : Object.values(commands);
for (const mod of await Promise.all(toLoad.map((load) => load()))) mod.register(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  printError(err, process.argv.includes('--debug'));
  process.exitCode = 1;
}
