import type { Command } from 'commander';
import { action, printEvent } from '../util.js';
import { generateKeyPair, keyToId, saveKeyPair } from '../../session/identity.js';

export function register(program: Command): void {
  program
    .command('keygen')
    .description('create a peer key pair (Ed25519); the public key is the peer id')
    .option(
      '--out <file>',
      'write the key file here (mode 0600, new directories 0700; never overwrites), e.g. ~/.natpunch/key; default: print it to stdout',
    )
    .option('--json', 'machine-readable output')
    .action(
      action(async (opts: { out?: string; json?: boolean }) => {
        const kp = generateKeyPair();
        const id = keyToId(kp.publicKey);
        if (opts.out) {
          await saveKeyPair(opts.out, kp, (line) => process.stderr.write(`natpunch: ${line}\n`));
          if (opts.json) printEvent('key', { publicKey: id, file: opts.out });
          else process.stdout.write(`wrote ${opts.out}\npublic key: ${id}\n`);
          return;
        }
        // No file: the key file itself is the data on stdout (`natpunch keygen > key.json`), so the id goes to
        // stderr, as the `key` event with --json (src/cli/event-stream.ts).
        process.stdout.write(
          `${JSON.stringify({ publicKey: id, secretKey: kp.secretKey.toString('hex') }, null, 2)}\n`,
        );
        if (opts.json) printEvent('key', { publicKey: id, file: null }, true);
        else process.stderr.write(`public key: ${id}\n`);
      }),
    );
}
