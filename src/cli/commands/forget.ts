import type { Command } from 'commander';
import { action, printEvent } from '../util.js';
import { KNOWN_PEERS_FILE_HELP, KNOWN_PEERS_FLAG, knownPeersStore } from '../known-peers.js';

export function register(program: Command): void {
  program
    .command('forget')
    .description("remove a peer name's pin from known_peers; the next `connect NAME` pins whatever key it reaches")
    .argument('<name>', "the peer's registered name")
    .option(KNOWN_PEERS_FLAG, KNOWN_PEERS_FILE_HELP)
    .option('--json', 'machine-readable output')
    .action(
      action(async (name: string, opts: { knownPeers?: string; json?: boolean }) => {
        const peers = knownPeersStore(opts.knownPeers);
        const removed = await peers.forget(name);
        if (opts.json) printEvent('forgotten', { name, removedKey: removed, file: peers.file });
        else
          process.stdout.write(
            removed
              ? `forgot ${name} (was pinned to ${removed}) in ${peers.file}\n`
              : `${name} was not pinned in ${peers.file}\n`,
          );
      }),
    );
}
