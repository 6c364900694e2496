/**
 * Compact per-peer state for the rendezvous server (issue 20: 100k registered peers in ≤ 150 MB).
 *
 * What the server keeps for every registered peer (its reply channel, its verified source, its replay-cache entry)
 * is held as flat one-byte strings instead of objects and Buffers: V8 stores a one-byte string as a 16-byte header
 * plus its bytes, while an object with nested objects and address strings costs a few hundred bytes, and a small
 * Buffer kept for long pins the whole 8 KiB pool slab it was cut from (a heap snapshot of 100k registrations showed
 * 7,500 such slabs, 60 MiB, held by replay-cache signatures and cached answers). Strings built with
 * Buffer#toString('latin1') are flat (never a rope of concatenations), so they cost exactly their bytes.
 */
import { parseIPv6 } from '../wire/ip.js';

/** One scratch buffer per process would be module state; each owner holds its own (`new Scratch()`). */
export class Scratch {
  readonly buf = Buffer.allocUnsafe(2048);
}

/** `key` (32 bytes) as a 32-character one-byte string: the map key for a public key (a hex string is 80 bytes). */
export function keyId(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
}

/** The public key a keyId() stands for. */
export function keyOfId(id: string): Buffer {
  return Buffer.from(id, 'latin1');
}

/** Writes IPv4 dotted-quad text as 4 bytes at `o`; false when it is not one. Hand-rolled: runs per datagram. */
function ipv4Into(text: string, out: Buffer, o: number): boolean {
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || part > 3) return false;
      out[o + part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      value = value * 10 + (c - 0x30);
      if (++digits > 3 || value > 255) return false;
    } else return false;
  }
  return part === 4;
}

/**
 * Where a message came from, as a short flat string: transport (0 udp, 1 tcp), address length, address bytes (the
 * address exactly as the socket reported it, so an IPv4-mapped IPv6 address stays one), port. 8 bytes for IPv4.
 * Equal sources give equal strings; anything unparsable falls back to its text.
 */
export function sourceId(scratch: Scratch, transport: 'udp' | 'tcp', address: string, port: number): string {
  const b = scratch.buf;
  b[0] = transport === 'tcp' ? 1 : 0;
  let len: number;
  if (ipv4Into(address, b, 2)) len = 4;
  else {
    // A zone (fe80::1%eth0) is part of where to send: such addresses are kept as text.
    const v6 = address.includes('%') ? null : parseIPv6(address);
    if (v6) {
      b.set(v6, 2);
      len = 16;
    } else {
      len = Math.min(200, b.write(address, 2, 'utf8'));
      b[0] |= 0x80; // text, not bytes
    }
  }
  b[1] = len;
  b[2 + len] = port >>> 8;
  b[3 + len] = port & 0xff;
  return b.toString('latin1', 0, 4 + len);
}

/**
 * How much of a signature a replay-cache entry keeps to tell a retransmission (same bytes, same source: answered
 * from the cache without verifying again) from another message with the same nonce (verified, then refused). A
 * forgery would have to match these bytes of a signature it has not seen; one that did (an on-path observer) would
 * only make the server repeat its answer to the original sender's address, as replaying the real message does.
 */
export const SIGNATURE_PREFIX_BYTES = 16;

/** What a replay-cache entry says about the answer to a retransmission (the byte after the signature prefix). */
export const NonceAnswer = {
  /** The message is still being handled: a retransmission is dropped (its answer is on the way). */
  PENDING: 0,
  /** The answer follows: a retransmission gets these bytes again. */
  STORED: 1,
  /**
   * A CONNECT that introduced: its answer is rebuilt from the message and the target's record when a retransmission
   * comes, instead of keeping ~100 bytes per introduction for the whole replay window.
   */
  REBUILD: 2,
} as const;
export type NonceAnswer = (typeof NonceAnswer)[keyof typeof NonceAnswer];

/**
 * A replay-cache entry: who sent the signed message (sourceId), the start of its signature, and what a
 * retransmission gets. One flat string: [source length u8][source][signature prefix (16)][NonceAnswer u8][answer].
 */
export function packNonceEntry(scratch: Scratch, source: string, signature: Uint8Array): string {
  const b = scratch.buf;
  const n = 1 + source.length + SIGNATURE_PREFIX_BYTES + 1;
  b[0] = source.length;
  b.write(source, 1, 'latin1');
  const o = 1 + source.length;
  b.fill(0, o, o + SIGNATURE_PREFIX_BYTES); // (the codec's signatures are always 64 bytes)
  b.set(signature.subarray(0, SIGNATURE_PREFIX_BYTES), o);
  b[o + SIGNATURE_PREFIX_BYTES] = NonceAnswer.PENDING;
  return b.toString('latin1', 0, n);
}

export function nonceEntrySource(e: string): string {
  return e.slice(1, 1 + e.charCodeAt(0));
}

/** Whether the entry was made for this signature (a retransmission, not another message with the same nonce). */
export function nonceEntrySignatureIs(e: string, signature: Uint8Array): boolean {
  const o = 1 + e.charCodeAt(0);
  if (signature.length < SIGNATURE_PREFIX_BYTES || e.length < o + SIGNATURE_PREFIX_BYTES) return false;
  for (let i = 0; i < SIGNATURE_PREFIX_BYTES; i++) if (e.charCodeAt(o + i) !== signature[i]) return false;
  return true;
}

/** What a retransmission of the entry's message gets. */
export function nonceEntryKind(e: string): NonceAnswer {
  return e.charCodeAt(1 + e.charCodeAt(0) + SIGNATURE_PREFIX_BYTES) as NonceAnswer;
}

/** The stored answer (NonceAnswer.STORED), if any. */
export function nonceEntryAnswer(e: string): Buffer | undefined {
  const o = 1 + e.charCodeAt(0) + SIGNATURE_PREFIX_BYTES;
  return e.charCodeAt(o) === NonceAnswer.STORED ? Buffer.from(e.slice(o + 1), 'latin1') : undefined;
}

/** The same entry with `answer` stored (left PENDING when it is too large to keep). */
export function withNonceAnswer(scratch: Scratch, e: string, answer: Uint8Array): string {
  const o = 1 + e.charCodeAt(0) + SIGNATURE_PREFIX_BYTES;
  const b = scratch.buf;
  if (o + 1 + answer.length > b.length) return e;
  b.write(e.slice(0, o), 0, 'latin1');
  b[o] = NonceAnswer.STORED;
  b.set(answer, o + 1);
  return b.toString('latin1', 0, o + 1 + answer.length);
}

/** The same entry marked NonceAnswer.REBUILD (no answer kept). */
export function withNonceRebuild(scratch: Scratch, e: string): string {
  const o = 1 + e.charCodeAt(0) + SIGNATURE_PREFIX_BYTES;
  const b = scratch.buf;
  b.write(e.slice(0, o), 0, 'latin1');
  b[o] = NonceAnswer.REBUILD;
  // Through the buffer: concatenating would keep a rope of both parts alive in the cache.
  return b.toString('latin1', 0, o + 1);
}
