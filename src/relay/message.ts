import { createHmac, timingSafeEqual } from 'node:crypto';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { formatIp, parseIp } from './ip.js';
import { TurnMethod } from '../wire/turn.js';

/**
 * The slice of STUN (RFC 8489) the TURN server and client need, kept small and allocation-light for the relay hot
 * path: parse a message into attribute offsets (views, no copies), build responses/indications, MESSAGE-INTEGRITY
 * (-SHA256) and FINGERPRINT. The general STUN codec lives in src/wire/stun; this adapter is what TURN codes against.
 */

/** RFC 8489 §5 */
export const MAGIC_COOKIE = 0x2112a442;
export const HEADER = 20;

/** RFC 8489 §5: class bits. */
export const Cls = { Request: 0, Indication: 1, Success: 2, Error: 3 } as const;

/** RFC 8489 §18.2 Binding plus the TURN methods (RFC 8656 §17, RFC 6062 §6.1), numbered once in src/wire/turn.ts. */
export const Method = { Binding: 0x001, ...TurnMethod } as const;

/** Attribute types: RFC 8489 §18.3, RFC 8656 §18, RFC 6062 §6.2. */
export const A = {
  MAPPED_ADDRESS: 0x0001,
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  UNKNOWN_ATTRIBUTES: 0x000a,
  CHANNEL_NUMBER: 0x000c, // RFC 8656 §18.1
  LIFETIME: 0x000d, // §18.2
  XOR_PEER_ADDRESS: 0x0012, // §18.3
  DATA: 0x0013, // §18.4
  REALM: 0x0014,
  NONCE: 0x0015,
  XOR_RELAYED_ADDRESS: 0x0016, // §18.5
  REQUESTED_ADDRESS_FAMILY: 0x0017, // §18.6
  EVEN_PORT: 0x0018, // §18.7
  REQUESTED_TRANSPORT: 0x0019, // §18.8
  DONT_FRAGMENT: 0x001a, // §18.9
  MESSAGE_INTEGRITY_SHA256: 0x001c,
  PASSWORD_ALGORITHM: 0x001d,
  USERHASH: 0x001e,
  XOR_MAPPED_ADDRESS: 0x0020,
  RESERVATION_TOKEN: 0x0022, // §18.10
  PADDING: 0x0026, // RFC 5780 §7.6: ignored by the server; pads an unauthenticated request to its answer's size
  CONNECTION_ID: 0x002a, // RFC 6062 §6.2.1
  ADDITIONAL_ADDRESS_FAMILY: 0x8000, // RFC 8656 §18.11
  ADDRESS_ERROR_CODE: 0x8001, // §18.12
  PASSWORD_ALGORITHMS: 0x8002,
  ICMP: 0x8004, // §18.13
  SOFTWARE: 0x8022,
  FINGERPRINT: 0x8028,
} as const;

/** The comprehension-required attributes the TURN server understands (RFC 8489 §14: < 0x8000 unknown → 420). */
export const KNOWN_REQUIRED = new Set<number>([
  A.MAPPED_ADDRESS,
  A.USERNAME,
  A.MESSAGE_INTEGRITY,
  A.ERROR_CODE,
  A.UNKNOWN_ATTRIBUTES,
  A.CHANNEL_NUMBER,
  A.LIFETIME,
  A.XOR_PEER_ADDRESS,
  A.DATA,
  A.REALM,
  A.NONCE,
  A.XOR_RELAYED_ADDRESS,
  A.REQUESTED_ADDRESS_FAMILY,
  A.EVEN_PORT,
  A.REQUESTED_TRANSPORT,
  A.DONT_FRAGMENT,
  A.MESSAGE_INTEGRITY_SHA256,
  A.PASSWORD_ALGORITHM,
  A.USERHASH,
  A.XOR_MAPPED_ADDRESS,
  A.RESERVATION_TOKEN,
  A.CONNECTION_ID,
  A.PADDING,
]);

export interface Attr {
  type: number;
  /** Offset of the value in the message buffer. */
  offset: number;
  length: number;
}

export interface StunMsg {
  method: number;
  cls: number;
  /** 12-byte view into the message. */
  tid: Buffer;
  buf: Buffer;
  attrs: Attr[];
}

/**
 * Parses one STUN message (RFC 8489 §5, §14). Returns null for anything malformed; never throws. `buf` must be the
 * whole message (trailing bytes → null).
 */
export function parseStun(buf: Buffer): StunMsg | null {
  if (buf.length < HEADER || (buf[0]! & 0xc0) !== 0) return null;
  const type = buf.readUInt16BE(0);
  const length = buf.readUInt16BE(2);
  if (length % 4 !== 0 || HEADER + length !== buf.length) return null;
  if (buf.readUInt32BE(4) !== MAGIC_COOKIE) return null;
  const method = (type & 0x000f) | ((type & 0x00e0) >> 1) | ((type & 0x3e00) >> 2);
  const cls = ((type & 0x0010) >> 4) | ((type & 0x0100) >> 7);
  const attrs: Attr[] = [];
  let off = HEADER;
  // RFC 8489 §14.5/§14.6/§14.7: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT count, after
  // MESSAGE-INTEGRITY-SHA256 only FINGERPRINT, after FINGERPRINT nothing: anything else there is not authenticated
  // and is ignored (an attacker could append an XOR-PEER-ADDRESS).
  let stage = 0;
  while (off < buf.length) {
    if (off + 4 > buf.length) return null;
    const at = buf.readUInt16BE(off);
    const al = buf.readUInt16BE(off + 2);
    if (off + 4 + al > buf.length) return null;
    const keep =
      stage === 0 ||
      (stage === 1 && (at === A.MESSAGE_INTEGRITY_SHA256 || at === A.FINGERPRINT)) ||
      (stage === 2 && at === A.FINGERPRINT);
    if (keep) {
      attrs.push({ type: at, offset: off + 4, length: al });
      if (at === A.MESSAGE_INTEGRITY) stage = Math.max(stage, 1);
      else if (at === A.MESSAGE_INTEGRITY_SHA256) stage = Math.max(stage, 2);
      else if (at === A.FINGERPRINT) stage = 3;
    }
    off += 4 + ((al + 3) & ~3);
    if (attrs.length > 64) return null;
  }
  if (off !== buf.length) return null;
  return { method, cls, tid: buf.subarray(8, HEADER), buf, attrs };
}

export function messageType(method: number, cls: number): number {
  return (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7);
}

export function findAttr(m: StunMsg, type: number): Attr | undefined {
  for (const a of m.attrs) if (a.type === type) return a;
  return undefined;
}

export function attrValue(m: StunMsg, type: number): Buffer | undefined {
  const a = findAttr(m, type);
  return a ? m.buf.subarray(a.offset, a.offset + a.length) : undefined;
}

export function attrText(m: StunMsg, type: number): string | undefined {
  const v = attrValue(m, type);
  return v ? v.toString('utf8') : undefined;
}

export function attrUint32(m: StunMsg, type: number): number | undefined {
  const v = attrValue(m, type);
  return v && v.length === 4 ? v.readUInt32BE(0) : undefined;
}

export interface Peer {
  address: string;
  port: number;
}

/** RFC 8489 §14.2 XOR address decoding (XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS, XOR-MAPPED-ADDRESS). */
export function decodeXorAddress(v: Buffer, tid: Buffer): Peer | null {
  if (v.length < 8) return null;
  const family = v[1];
  const port = v.readUInt16BE(2) ^ (MAGIC_COOKIE >>> 16);
  if (family === 1 && v.length === 8) {
    const c = v.readUInt32BE(4) ^ MAGIC_COOKIE;
    return { address: `${c >>> 24}.${(c >>> 16) & 0xff}.${(c >>> 8) & 0xff}.${c & 0xff}`, port };
  }
  if (family === 2 && v.length === 20) {
    const b = new Uint8Array(16);
    for (let i = 0; i < 16; i++) b[i] = v[4 + i]! ^ (i < 4 ? (MAGIC_COOKIE >>> (24 - 8 * i)) & 0xff : tid[i - 4]!);
    return { address: formatIp(b), port };
  }
  return null;
}

export function attrXorAddresses(m: StunMsg, type: number): Array<Peer | null> {
  const out: Array<Peer | null> = [];
  for (const a of m.attrs)
    if (a.type === type) out.push(decodeXorAddress(m.buf.subarray(a.offset, a.offset + a.length), m.tid));
  return out;
}

/** Writes an XOR address value (8 or 20 bytes) at `off` of `out`. Returns bytes written, 0 when the address is bad. */
export function writeXorAddress(out: Buffer, off: number, peer: Peer, tid: Uint8Array): number {
  const bytes = parseIp(peer.address);
  if (!bytes) return 0;
  const v4 = bytes.length === 4;
  out[off] = 0;
  out[off + 1] = v4 ? 1 : 2;
  out.writeUInt16BE(peer.port ^ (MAGIC_COOKIE >>> 16), off + 2);
  for (let i = 0; i < bytes.length; i++)
    out[off + 4 + i] = bytes[i]! ^ (i < 4 ? (MAGIC_COOKIE >>> (24 - 8 * i)) & 0xff : tid[i - 4]!);
  return 4 + bytes.length;
}

export function xorAddressValue(peer: Peer, tid: Uint8Array): Buffer {
  const out = Buffer.alloc(20);
  const n = writeXorAddress(out, 0, peer, tid);
  if (n === 0) throw new RangeError(`not an IP address: ${peer.address}`);
  return out.subarray(0, n);
}

// ---------------------------------------------------------------------------------------------------------------
// Integrity and fingerprint (RFC 8489 §14.5, §14.6, §14.7)

/** CRC-32 (ISO 3309, as RFC 8489 §14.7 asks) of buf[0..end), with zlib's native implementation. */
export function crc32(buf: Uint8Array, end = buf.length): number {
  return zlibCrc32(end === buf.length ? buf : buf.subarray(0, end)) >>> 0;
}

/**
 * Checks MESSAGE-INTEGRITY-SHA256 (preferred) or MESSAGE-INTEGRITY against `key` (RFC 8489 §14.5/§14.6: HMAC over
 * the message up to the attribute, with the header length adjusted to end after it). Returns which one matched.
 */
export function verifyIntegrity(m: StunMsg, key: Uint8Array): 'sha256' | 'sha1' | null {
  for (const a of m.attrs) {
    if (a.type !== A.MESSAGE_INTEGRITY && a.type !== A.MESSAGE_INTEGRITY_SHA256) continue;
    const sha256 = a.type === A.MESSAGE_INTEGRITY_SHA256;
    if (sha256 ? a.length < 16 || a.length > 32 || a.length % 4 : a.length !== 20) return null;
    const start = a.offset - 4;
    const hdr = Buffer.from(m.buf.subarray(0, HEADER));
    hdr.writeUInt16BE(start + 4 + a.length - HEADER, 2);
    const mac = createHmac(sha256 ? 'sha256' : 'sha1', key)
      .update(hdr)
      .update(m.buf.subarray(HEADER, start))
      .digest();
    const got = m.buf.subarray(a.offset, a.offset + a.length);
    return timingSafeEqual(mac.subarray(0, a.length), got) ? (sha256 ? 'sha256' : 'sha1') : null;
  }
  return null;
}

/** Which integrity attribute a message carries, if any (the first one counts, RFC 8489 §14.6). */
export function integrityKind(m: StunMsg): 'sha256' | 'sha1' | null {
  for (const a of m.attrs) {
    if (a.type === A.MESSAGE_INTEGRITY_SHA256) return 'sha256';
    if (a.type === A.MESSAGE_INTEGRITY) return 'sha1';
  }
  return null;
}

/** RFC 8489 §14.7: true when there is no FINGERPRINT or it is correct. */
export function fingerprintOk(m: StunMsg): boolean {
  const a = findAttr(m, A.FINGERPRINT);
  if (!a) return true;
  if (a.length !== 4 || a.offset + 4 !== m.buf.length) return false;
  return (crc32(m.buf, a.offset - 4) ^ 0x5354554e) >>> 0 === m.buf.readUInt32BE(a.offset);
}

// ---------------------------------------------------------------------------------------------------------------
// Building messages

/** Builds one STUN message. Attributes are appended in call order; `finish` adds integrity and fingerprint. */
export class StunBuilder {
  #parts: Buffer[] = [];
  #len = 0;
  readonly tid: Buffer;

  constructor(
    readonly method: number,
    readonly cls: number,
    tid: Uint8Array,
  ) {
    this.tid = Buffer.from(tid);
  }

  /** Bytes of the message so far (header and attributes, without MESSAGE-INTEGRITY / FINGERPRINT). */
  get length(): number {
    return HEADER + this.#len;
  }

  add(type: number, value: Uint8Array): this {
    const padded = (value.length + 3) & ~3;
    const b = Buffer.alloc(4 + padded);
    b.writeUInt16BE(type, 0);
    b.writeUInt16BE(value.length, 2);
    b.set(value, 4);
    this.#parts.push(b);
    this.#len += b.length;
    return this;
  }

  text(type: number, s: string): this {
    return this.add(type, Buffer.from(s, 'utf8'));
  }

  u32(type: number, n: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0, 0);
    return this.add(type, b);
  }

  xorAddress(type: number, peer: Peer): this {
    return this.add(type, xorAddressValue(peer, this.tid));
  }

  /** RFC 8489 §14.8 */
  error(code: number, reason: string): this {
    const r = Buffer.from(reason, 'utf8');
    const b = Buffer.alloc(4 + r.length);
    b[2] = Math.floor(code / 100);
    b[3] = code % 100;
    r.copy(b, 4);
    return this.add(A.ERROR_CODE, b);
  }

  /** Serialises, appending MESSAGE-INTEGRITY(-SHA256) when a key is given and FINGERPRINT when asked. */
  finish(options: { key?: Uint8Array; integrity?: 'sha1' | 'sha256'; fingerprint?: boolean } = {}): Buffer {
    const micLen = options.key ? (options.integrity === 'sha256' ? 36 : 24) : 0;
    const fpLen = options.fingerprint ? 8 : 0;
    const out = Buffer.alloc(HEADER + this.#len + micLen + fpLen);
    out.writeUInt16BE(messageType(this.method, this.cls), 0);
    out.writeUInt32BE(MAGIC_COOKIE, 4);
    this.tid.copy(out, 8);
    let off = HEADER;
    for (const p of this.#parts) {
      p.copy(out, off);
      off += p.length;
    }
    if (options.key) {
      const sha256 = options.integrity === 'sha256';
      out.writeUInt16BE(off + micLen - HEADER, 2);
      const mac = createHmac(sha256 ? 'sha256' : 'sha1', options.key)
        .update(out.subarray(0, off))
        .digest();
      out.writeUInt16BE(sha256 ? A.MESSAGE_INTEGRITY_SHA256 : A.MESSAGE_INTEGRITY, off);
      out.writeUInt16BE(mac.length, off + 2);
      mac.copy(out, off + 4);
      off += micLen;
    }
    if (options.fingerprint) {
      out.writeUInt16BE(off + 8 - HEADER, 2);
      out.writeUInt16BE(A.FINGERPRINT, off);
      out.writeUInt16BE(4, off + 2);
      out.writeUInt32BE((crc32(out, off) ^ 0x5354554e) >>> 0, off + 4);
      off += 8;
    }
    out.writeUInt16BE(off - HEADER, 2);
    return out;
  }
}

export function errorInfo(m: StunMsg): { code: number; reason: string } | null {
  const v = attrValue(m, A.ERROR_CODE);
  if (!v || v.length < 4) return null;
  return { code: (v[2]! & 7) * 100 + v[3]!, reason: v.subarray(4).toString('utf8') };
}

/**
 * Data indication (RFC 8656 §11.4) built in one allocation for the relay hot path: header + XOR-PEER-ADDRESS +
 * DATA. `tid` is a fresh 12-byte transaction id the caller supplies.
 */
export function encodeDataIndication(peer: Peer, data: Uint8Array, tid: Uint8Array): Buffer | null {
  const v6 = peer.address.includes(':');
  const addrLen = v6 ? 20 : 8;
  const padded = (data.length + 3) & ~3;
  const out = Buffer.allocUnsafe(HEADER + 4 + addrLen + 4 + padded);
  out.writeUInt16BE(messageType(Method.Data, Cls.Indication), 0);
  out.writeUInt16BE(4 + addrLen + 4 + padded, 2);
  out.writeUInt32BE(MAGIC_COOKIE, 4);
  out.set(tid, 8);
  out.writeUInt16BE(A.XOR_PEER_ADDRESS, HEADER);
  out.writeUInt16BE(addrLen, HEADER + 2);
  if (writeXorAddress(out, HEADER + 4, peer, tid) !== addrLen) return null;
  const d = HEADER + 4 + addrLen;
  out.writeUInt16BE(A.DATA, d);
  out.writeUInt16BE(data.length, d + 2);
  out.set(data, d + 4);
  out.fill(0, d + 4 + data.length);
  return out;
}

export { formatIp };
