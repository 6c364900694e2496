import { NatpunchError } from '../util/errors.js';
import { idToKey, isPeerId, keyToId } from '../session/identity.js';
import { isValidName } from '../wire/rendezvous.js';
import type { PeerPins } from './known-peers.js';

/** Who connect() is asked to reach: a name, a key, or a name that must have a given key. */
export type PeerSpec = string | Uint8Array | { name: string; key: string | Uint8Array };

/** A PeerSpec resolved: what to ask the rendezvous for, and what the answer must satisfy. */
export interface PeerTarget {
  /** Passed to the rendezvous (a name, or the key's bytes). */
  lookup: string | Buffer;
  name?: string;
  /** The key the introduced peer must have (given by key, or `{ name, key }`). */
  key?: Buffer;
}

export function peerTarget(to: PeerSpec): PeerTarget {
  if (typeof to === 'string') {
    if (isPeerId(to)) return { lookup: idToKey(to), key: idToKey(to) };
    return { lookup: to, name: to };
  }
  if (to instanceof Uint8Array) return { lookup: Buffer.from(to), key: Buffer.from(to) };
  if (!isValidName(to.name))
    throw new NatpunchError(
      'BAD_ARGUMENT',
      `"${String(to.name).slice(0, 80)}" is not a peer name ([a-z0-9._-], 1 to 63 characters)`,
    );
  const key = typeof to.key === 'string' ? idToKey(to.key) : Buffer.from(to.key);
  if (key.length !== 32) throw new NatpunchError('BAD_ARGUMENT', 'a peer key is 32 bytes');
  return { lookup: to.name, name: to.name, key };
}

/**
 * The identity check between the rendezvous' introduction and the first byte sent to the introduced peer: the
 * introduced key must be the expected one (by key, `{ name, key }`); else a name must match its pin in `pins`.
 * Throws (PEER_KEY_MISMATCH, PEER_KEY_CHANGED) otherwise. Resolves with what to run once the session has
 * authenticated that key (trust on first use: pin a name seen for the first time), or null.
 */
export async function verifyPeer(
  target: PeerTarget,
  introduced: Uint8Array,
  pins?: PeerPins,
): Promise<(() => Promise<void>) | null> {
  const got = Buffer.from(introduced);
  if (target.key && !target.key.equals(got)) {
    const what = target.name ? `"${target.name}"` : 'the requested key';
    throw new NatpunchError(
      'PEER_KEY_MISMATCH',
      `the rendezvous introduced key ${keyToId(got)} for ${what}, not the expected ${keyToId(target.key)}; refusing before sending anything to it`,
      {
        details: {
          ...(target.name ? { name: target.name } : {}),
          expectedKey: keyToId(target.key),
          offeredKey: keyToId(got),
        },
      },
    );
  }
  // An explicit key is the pin for this connection (known_peers is neither consulted nor changed).
  if (target.key || !target.name || !pins) return null;
  const state = await pins.check(target.name, got);
  if (state === 'pinned') return null;
  const name = target.name;
  return () => pins.remember(name, got);
}
