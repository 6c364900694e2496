import type { Command } from 'commander';
import { action, printEvent } from '../util.js';
import { KNOWN_PEERS_FILE_HELP, KNOWN_PEERS_FLAG, knownPeersStore } from '../known-peers.js';

export function register(program: Command): void {
  program
    .command('trust')
    .description(
      'pin a peer name to a key in known_peers (e.g. after the peer really changed its key); `connect NAME` then accepts only this key',
    )
    .argument('<name>', "the peer's registered name (e.g. alice)")
    .argument('<key>', 'its key (64 hex characters)')
    .option(KNOWN_PEERS_FLAG, KNOWN_PEERS_FILE_HELP)
    .option('--json', 'machine-readable output')
    .action(
      action(async (name: string, key: string, opts: { knownPeers?: string; json?: boolean }) => {
        const peers = knownPeersStore(opts.knownPeers);
        const previous = await peers.trust(name, key);
        const pinned = key.toLowerCase();
        if (opts.json) printEvent('trusted', { name, key: pinned, previousKey: previous, file: peers.file });
        else if (previous === pinned) process.stdout.write(`${name} was already pinned to ${pinned}\n`);
        else
          process.stdout.write(
            `${name} is now pinned to ${pinned}${previous ? ` (was ${previous})` : ''} in ${peers.file}\n`,
          );
      }),
    );
}
