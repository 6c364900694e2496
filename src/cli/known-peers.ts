import { isPeerId } from '../session/identity.js';
import { NatpunchError } from '../util/errors.js';
import { toEvent } from './events.js';
import { KnownPeers } from '../identity/known-peers.js';
import type { PeerSpec } from '../identity/verify.js';

/** Flags `connect`, `forward` and `socks` share for pinning who they reach by name. */
export const KNOWN_PEERS_FLAG = '--known-peers <file>';
export const KNOWN_PEERS_HELP =
  'names pinned to keys (default ~/.natpunch/known_peers): a name is pinned to the key of its first successful connection, and later connections refuse another key';
export const PEER_KEY_FLAG = '--peer-key <hex>';
export const PEER_KEY_HELP =
  "the peer's key (64 hex): with a name, the rendezvous must introduce this key (checked before anything is sent to the peer); with --icmp, the server's key";

export const KNOWN_PEERS_FILE_HELP = 'the known peers file (default ~/.natpunch/known_peers)';

/** The CLI's pin store: says so on stderr when it pins a name for the first time (as ssh's "Permanently added"). */
class AnnouncingKnownPeers extends KnownPeers {
  constructor(
    options: ConstructorParameters<typeof KnownPeers>[0],
    readonly json: boolean,
  ) {
    super(options);
  }

  override async remember(name: string, key: Uint8Array): Promise<void> {
    await super.remember(name, key);
    const hex = Buffer.from(key).toString('hex');
    if (this.json)
      process.stderr.write(`${JSON.stringify(toEvent({ event: 'pinned', name, key: hex, file: this.file }))}\n`);
    else
      process.stderr.write(
        `natpunch: pinned "${name}" to key ${hex} in ${this.file} (first connection by this name; later ones must present this key)\n`,
      );
  }
}

/** The known_peers store of the CLI: --known-peers FILE or ~/.natpunch/known_peers; notes go to stderr. */
export function knownPeersStore(file: string | undefined, json = false): KnownPeers {
  return new AnnouncingKnownPeers(
    { ...(file ? { file } : {}), warn: (line) => process.stderr.write(`natpunch: ${line}\n`) },
    json,
  );
}

/** The `to` and `knownPeers` options of connect() for PEER (name or key) and the pinning flags. */
export function pinOptions(
  peer: string,
  opts: { peerKey?: string; knownPeers?: string; json?: boolean },
): { to: PeerSpec; knownPeers: KnownPeers } {
  const knownPeers = knownPeersStore(opts.knownPeers, Boolean(opts.json));
  if (opts.peerKey === undefined) return { to: peer, knownPeers };
  if (!isPeerId(opts.peerKey))
    throw new NatpunchError(
      'BAD_ARGUMENT',
      `--peer-key: "${opts.peerKey.slice(0, 80)}" is not a peer key (64 hex characters)`,
    );
  const key = opts.peerKey.toLowerCase();
  if (isPeerId(peer)) {
    if (peer.toLowerCase() !== key)
      throw new NatpunchError('BAD_ARGUMENT', `--peer-key ${key} contradicts the peer key ${peer.toLowerCase()} given`);
    return { to: key, knownPeers };
  }
  return { to: { name: peer, key }, knownPeers };
}
