import { isPeerId } from '../session/identity.js';
import { NatpunchError } from '../util/errors.js';
import { createPrinter, type Emit } from './events.js';
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

/** The CLI's pin store: reports a name pinned for the first time (as ssh's "Permanently added") as a `pinned` event. */
class AnnouncingKnownPeers extends KnownPeers {
  constructor(
    options: ConstructorParameters<typeof KnownPeers>[0],
    readonly emit: Emit,
  ) {
    super(options);
  }

  override async remember(name: string, key: Uint8Array): Promise<void> {
    await super.remember(name, key);
    this.emit({ event: 'pinned', name, key: Buffer.from(key).toString('hex'), file: this.file });
  }
}

/**
 * The known_peers store of the CLI: --known-peers FILE or ~/.natpunch/known_peers; pins and notes are events on
 * `emit` (without one, `trust`/`forget`: human lines on stderr).
 */
export function knownPeersStore(file: string | undefined, emit: Emit = createPrinter()): KnownPeers {
  return new AnnouncingKnownPeers(
    { ...(file ? { file } : {}), warn: (line) => emit({ event: 'warning', message: line }) },
    emit,
  );
}

/** The `to` and `knownPeers` options of connect() for PEER (name or key) and the pinning flags. */
export function pinOptions(
  peer: string,
  opts: { peerKey?: string; knownPeers?: string },
  emit: Emit,
): { to: PeerSpec; knownPeers: KnownPeers } {
  const knownPeers = knownPeersStore(opts.knownPeers, emit);
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
