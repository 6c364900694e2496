import { Command, CommanderError } from 'commander';
import { commands } from './commands/index.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, printError } from './util.js';

const program = new Command();
program
  .name('natpunch')
  .description('Direct, authenticated connections between any two machines, whatever NATs stand between them.')
  .version('0.1.0')
  .option('--debug', 'print stack traces and debug logs')
  // Subcommands inherit this: commander's own errors end in a CommanderError we map to exit 2, not process.exit(1).
  .exitOverride()
  .configureOutput({
    // commander's own errors (bad flags) are one line; the usage hint stays on it (one-line errors, exit 2).
    outputError: (str, write) => write(`${str.trimEnd()} (run with --help for usage)\n`),
  });

// Load only the command being run: each module pulls in its own part of the library, and start-up time counts
// (bench/cli-start.bench.ts). `natpunch --help`, no command or an unknown one list the commands from the table
// alone, importing none of them. `natpunch help CMD` loads CMD for its help.
const args = process.argv.slice(2);
const positional = args.filter((arg) => !arg.startsWith('-'));
const requested = positional[0] === 'help' ? positional[1] : positional[0];
const entry = requested !== undefined && Object.hasOwn(commands, requested) ? commands[requested] : undefined;
if (entry) {
  (await entry.load()).register(program);
} else {
  for (const [name, { summary, args: usage }] of Object.entries(commands)) {
    program.command(usage ? `${name} ${usage}` : name).description(summary);
  }
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version end here too, with exit code 0; the message is already printed.
    process.exitCode = err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  } else {
    printError(err, process.argv.includes('--debug'));
    process.exitCode = EXIT_FAILURE;
  }
}
