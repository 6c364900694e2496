/**
 * STUN message encode/decode (RFC 8489 §5, §14), MESSAGE-INTEGRITY(-SHA256) (§14.5, §14.6) and FINGERPRINT (§14.7).
 * Pure: no I/O. Decoding returns views into the input (no copies); only NatpunchError('STUN_DECODE') is thrown.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { NatpunchError } from '../../util/errors.js';
import {
  Attr,
  FINGERPRINT_XOR,
  HEADER_LENGTH,
  isComprehensionRequired,
  MAGIC_COOKIE,
  type StunClass,
  TRANSACTION_ID_LENGTH,
} from './constants.js';
import { type AttributeContext, type AttributeDef, coreRegistry, decodeError, type StunRegistry } from './registry.js';

export interface RawAttribute {
  readonly type: number;
  /** The value without padding: a view into the message. */
  readonly value: Uint8Array;
  /** Offset of the attribute's 4-byte header within the message. */
  readonly offset: number;
}

/** RFC 8489 §5: M11..M7 C1 M6..M4 C0 M3..M0 in the 14 low bits of the type field. */
export function encodeMessageType(cls: StunClass, method: number): number {
  return (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7);
}

export function decodeMessageType(type: number): { cls: StunClass; method: number } {
  const cls = (((type >> 4) & 1) | ((type >> 7) & 2)) as StunClass;
  const method = (type & 0x000f) | ((type >> 1) & 0x0070) | ((type >> 2) & 0x0f80);
  return { cls, method };
}

export function createTransactionId(): Uint8Array {
  return randomBytes(TRANSACTION_ID_LENGTH);
}

export function transactionKey(tid: Uint8Array): string {
  return Buffer.from(tid.buffer, tid.byteOffset, tid.byteLength).toString('hex');
}

/**
 * A decoded attribute. Its value view is made on first use: a server that looks at two of a request's attributes
 * does not pay for a view of every one (on a Node Buffer each view is an object of its own).
 */
class DecodedAttribute implements RawAttribute {
  readonly type: number;
  readonly offset: number;
  readonly #raw: Uint8Array;
  readonly #length: number;
  #value: Uint8Array | undefined;

  constructor(raw: Uint8Array, type: number, offset: number, length: number) {
    this.#raw = raw;
    this.type = type;
    this.offset = offset;
    this.#length = length;
  }

  get value(): Uint8Array {
    return (this.#value ??= this.#raw.subarray(this.offset + 4, this.offset + 4 + this.#length));
  }
}

export class StunMessage implements AttributeContext {
  readonly cls: StunClass;
  readonly method: number;
  /** Bytes 4..7. Equal to MAGIC_COOKIE unless this is an RFC 3489 (classic STUN) message. */
  readonly cookie: number;
  #transactionId: Uint8Array | undefined;
  /** Attributes that count, in order. Those after MESSAGE-INTEGRITY (except -SHA256/FINGERPRINT) are left out (§14.5). */
  readonly attributes: readonly RawAttribute[];
  /** How many attributes were ignored because they followed MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT. */
  readonly ignoredAttributes: number;
  readonly raw: Uint8Array;

  /** @internal use decodeStun */
  constructor(
    raw: Uint8Array,
    cls: StunClass,
    method: number,
    cookie: number,
    attributes: RawAttribute[],
    ignored: number,
  ) {
    this.raw = raw;
    this.cls = cls;
    this.method = method;
    this.cookie = cookie;
    this.attributes = attributes;
    this.ignoredAttributes = ignored;
  }

  /** The 96-bit transaction id (bytes 8..19): a view into `raw`, made on first use. */
  get transactionId(): Uint8Array {
    return (this.#transactionId ??= this.raw.subarray(8, 20));
  }

  /** RFC 3489 message: no magic cookie, the whole 128 bits after the length are its transaction id. */
  get legacy(): boolean {
    return this.cookie !== MAGIC_COOKIE;
  }

  /** Hex of the transaction id, for maps. */
  get transactionKey(): string {
    return transactionKey(this.transactionId);
  }

  /** The first attribute of a type (RFC 8489 §14: only the first occurrence needs processing). */
  getRaw(type: number): RawAttribute | undefined {
    for (const a of this.attributes) if (a.type === type) return a;
    return undefined;
  }

  has(type: number): boolean {
    return this.getRaw(type) !== undefined;
  }

  /** Decodes the first attribute of `def`'s type; undefined when absent; NatpunchError('STUN_DECODE') when malformed. */
  get<T>(def: AttributeDef<T>): T | undefined {
    const a = this.getRaw(def.type);
    if (!a) return undefined;
    try {
      return def.decode(a.value, this);
    } catch (err) {
      if (err instanceof NatpunchError && err.code === 'STUN_DECODE') throw err;
      throw new NatpunchError('STUN_DECODE', `${def.name} could not be decoded`, { cause: err });
    }
  }

  /** RFC 8489 §6.3.1: comprehension-required attribute types (< 0x8000) the registry does not know. */
  unknownComprehensionRequired(registry: StunRegistry = coreRegistry): number[] {
    const out: number[] = [];
    for (const a of this.attributes) {
      if (isComprehensionRequired(a.type) && !registry.isKnownAttribute(a.type) && !out.includes(a.type))
        out.push(a.type);
    }
    return out;
  }

  /** Decodes every known attribute (for logging and tests); unknown ones are reported by type. */
  decodeAll(registry: StunRegistry = coreRegistry): Array<{ name: string; value: unknown }> {
    return this.attributes.map((a) => {
      const def = registry.attribute(a.type);
      return { name: registry.attributeName(a.type), value: def ? this.get(def) : a.value };
    });
  }
}

/** Cheap check (RFC 8489 §6.3 + §7 multiplexing): could this datagram be a STUN message? No exceptions. */
export function looksLikeStun(buf: Uint8Array, requireCookie = true): boolean {
  if (buf.length < HEADER_LENGTH || (buf[0]! & 0xc0) !== 0) return false;
  const len = (buf[2]! << 8) | buf[3]!;
  if (len % 4 !== 0 || len + HEADER_LENGTH !== buf.length) return false;
  if (!requireCookie) return true;
  return ((buf[4]! << 24) | (buf[5]! << 16) | (buf[6]! << 8) | buf[7]!) >>> 0 === MAGIC_COOKIE;
}

export interface DecodeOptions {
  /** Accept RFC 3489 messages without the magic cookie (servers do, for old clients). Default false. */
  allowLegacy?: boolean;
}

/**
 * Decodes one whole STUN message (a datagram, or one frame from StunFramer). RFC 8489 §6.3: the top two bits are
 * zero, the length is a multiple of 4 and matches the buffer, the cookie is present; attributes are walked and
 * bounds-checked but their values are decoded lazily by `get()`.
 */
export function decodeStun(buf: Uint8Array, options: DecodeOptions = {}): StunMessage {
  const r = decodeOrReason(buf, options);
  if (typeof r === 'string') throw decodeError(r);
  return r;
}

/**
 * decodeStun for servers' receive paths: null instead of an exception for what is not a well-formed STUN message
 * (RFC 8489 §6.3: such datagrams are dropped silently), so junk costs no Error object. `maxAttributes` bounds the
 * walk (a server's answer to a datagram should not grow with the attributes a stranger packs into it).
 */
export function tryDecodeStun(
  buf: Uint8Array,
  options: DecodeOptions & { maxAttributes?: number } = {},
): StunMessage | null {
  const r = decodeOrReason(buf, options);
  if (typeof r === 'string') return null;
  if (options.maxAttributes !== undefined && r.attributes.length > options.maxAttributes) return null;
  return r;
}

/** The one decoder: a message, or why the bytes are not one. */
function decodeOrReason(buf: Uint8Array, options: DecodeOptions): StunMessage | string {
  if (buf.length < HEADER_LENGTH) return `STUN message shorter than ${HEADER_LENGTH} bytes`;
  if ((buf[0]! & 0xc0) !== 0) return 'not a STUN message (top two bits set)';
  const type = (buf[0]! << 8) | buf[1]!;
  const length = (buf[2]! << 8) | buf[3]!;
  if (length % 4 !== 0) return 'STUN message length is not a multiple of 4';
  if (length + HEADER_LENGTH !== buf.length)
    return `STUN length field says ${length + HEADER_LENGTH} bytes, got ${buf.length}`;
  const cookie = ((buf[4]! << 24) | (buf[5]! << 16) | (buf[6]! << 8) | buf[7]!) >>> 0;
  if (cookie !== MAGIC_COOKIE && !options.allowLegacy) return 'STUN magic cookie missing';
  const cls = (((type >> 4) & 1) | ((type >> 7) & 2)) as StunClass; // as decodeMessageType, without its object
  const method = (type & 0x000f) | ((type >> 1) & 0x0070) | ((type >> 2) & 0x0f80);

  const attributes: RawAttribute[] = [];
  let ignored = 0;
  // §14.5/§14.6/§14.7: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT count; after
  // MESSAGE-INTEGRITY-SHA256 only FINGERPRINT; FINGERPRINT is last. Anything after them is not authenticated and is
  // ignored (an attacker could append an XOR-PEER-ADDRESS to a signed TURN request).
  let stage = 0; // 0: open, 1: after MI, 2: after MI-SHA256, 3: after FINGERPRINT
  let o = HEADER_LENGTH;
  while (o < buf.length) {
    if (o + 4 > buf.length) return 'truncated attribute header';
    const atype = (buf[o]! << 8) | buf[o + 1]!;
    const alen = (buf[o + 2]! << 8) | buf[o + 3]!;
    const end = o + 4 + alen;
    if (end > buf.length) return `attribute 0x${atype.toString(16)} overruns the message`;
    const padded = o + 4 + ((alen + 3) & ~3);
    if (padded > buf.length) return 'attribute padding overruns the message';
    let keep: boolean;
    if (stage === 0) keep = true;
    else if (stage === 1) keep = atype === Attr.MESSAGE_INTEGRITY_SHA256 || atype === Attr.FINGERPRINT;
    else if (stage === 2) keep = atype === Attr.FINGERPRINT;
    else keep = false;
    if (keep) {
      attributes.push(new DecodedAttribute(buf, atype, o, alen));
      if (atype === Attr.MESSAGE_INTEGRITY && stage < 1) stage = 1;
      else if (atype === Attr.MESSAGE_INTEGRITY_SHA256 && stage < 2) stage = 2;
      else if (atype === Attr.FINGERPRINT) stage = 3;
    } else {
      ignored++;
    }
    o = padded;
  }
  return new StunMessage(buf, cls, method, cookie, attributes, ignored);
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding

export type AttributeInit =
  | { readonly type: number; readonly value: Uint8Array }
  | { readonly def: AttributeDef<unknown>; readonly value: unknown };

/** A typed attribute for `encodeStun`. */
export function attr<T>(def: AttributeDef<T>, value: T): AttributeInit {
  return { def, value };
}

export interface StunMessageInit {
  cls: StunClass;
  method: number;
  /** 12 bytes (RFC 8489), or 16 bytes to answer an RFC 3489 client (written in place of cookie + id). */
  transactionId: Uint8Array;
  attributes?: readonly AttributeInit[];
}

export interface EncodeOptions {
  /** Key for MESSAGE-INTEGRITY (HMAC-SHA1, §14.5). See credentials.ts for key derivation. */
  integrity?: Uint8Array;
  /** Key for MESSAGE-INTEGRITY-SHA256 (§14.6). */
  integritySha256?: Uint8Array;
  /** Append FINGERPRINT (§14.7). */
  fingerprint?: boolean;
  /** Byte used for attribute padding. §14: senders SHOULD use 0, receivers ignore it (RFC 5769 uses 0x20). */
  paddingByte?: number;
}

const MAX_MESSAGE_LENGTH = 0xffff + HEADER_LENGTH;

/** Encodes a STUN message into one new Buffer. Throws NatpunchError('BAD_ARGUMENT') for values that cannot be sent. */
export function encodeStun(init: StunMessageInit, options: EncodeOptions = {}): Buffer {
  const tid = init.transactionId;
  if (tid.length !== TRANSACTION_ID_LENGTH && tid.length !== 16) {
    throw new NatpunchError('BAD_ARGUMENT', 'transaction id must be 12 bytes (or 16 for RFC 3489)');
  }
  const legacy = tid.length === 16;
  const ctx: AttributeContext = { transactionId: legacy ? tid.subarray(4) : tid };
  const values: Array<{ type: number; value: Uint8Array }> = [];
  let size = HEADER_LENGTH;
  for (const a of init.attributes ?? []) {
    const type = 'def' in a ? a.def.type : a.type;
    const value = 'def' in a ? a.def.encode(a.value, ctx) : a.value;
    if (value.length > 0xffff)
      throw new NatpunchError('BAD_ARGUMENT', `attribute 0x${type.toString(16)} longer than 65535 bytes`);
    values.push({ type, value });
    size += 4 + ((value.length + 3) & ~3);
  }
  const miAt = size;
  if (options.integrity) size += 24;
  const mi256At = size;
  if (options.integritySha256) size += 36;
  const fpAt = size;
  if (options.fingerprint) size += 8;
  if (size > MAX_MESSAGE_LENGTH) throw new NatpunchError('BAD_ARGUMENT', 'STUN message longer than 65555 bytes');

  const out = Buffer.allocUnsafe(size);
  out.writeUInt16BE(encodeMessageType(init.cls, init.method), 0);
  out.writeUInt16BE(size - HEADER_LENGTH, 2);
  if (legacy) out.set(tid, 4);
  else {
    out.writeUInt32BE(MAGIC_COOKIE, 4);
    out.set(tid, 8);
  }
  const pad = options.paddingByte ?? 0;
  let o = HEADER_LENGTH;
  for (const { type, value } of values) {
    out.writeUInt16BE(type, o);
    out.writeUInt16BE(value.length, o + 2);
    out.set(value, o + 4);
    const padded = (value.length + 3) & ~3;
    out.fill(pad, o + 4 + value.length, o + 4 + padded);
    o += 4 + padded;
  }
  // The message is ours, so each MAC and the fingerprint are computed over one contiguous range with the length
  // field set as §14.5-§14.7 ask (as if the attribute were the last), then the final length is written back.
  if (options.integrity) signInPlace(out, 'sha1', options.integrity, miAt);
  if (options.integritySha256) signInPlace(out, 'sha256', options.integritySha256, mi256At);
  out.writeUInt16BE(size - HEADER_LENGTH, 2);
  if (options.fingerprint) {
    out.writeUInt16BE(Attr.FINGERPRINT, fpAt);
    out.writeUInt16BE(4, fpAt + 2);
    out.writeUInt32BE((crc32(out.subarray(0, fpAt)) ^ FINGERPRINT_XOR) >>> 0, fpAt + 4);
  }
  return out;
}

/** §14.5/§14.6: writes MESSAGE-INTEGRITY(-SHA256) at `at`, its HMAC over out[0..at) with the length ending after it. */
function signInPlace(out: Buffer, alg: 'sha1' | 'sha256', key: Uint8Array, at: number): void {
  const macLength = alg === 'sha1' ? 20 : 32;
  out.writeUInt16BE(alg === 'sha1' ? Attr.MESSAGE_INTEGRITY : Attr.MESSAGE_INTEGRITY_SHA256, at);
  out.writeUInt16BE(macLength, at + 2);
  out.writeUInt16BE(at + 4 + macLength - HEADER_LENGTH, 2);
  createHmac(alg, key)
    .update(out.subarray(0, at))
    .digest()
    .copy(out, at + 4);
}

/**
 * §14.5: the HMAC covers the message up to (not including) the integrity attribute, with the header's length field
 * set as if the integrity attribute were the last one. `upto` is the attribute's offset.
 */
function hmacOver(
  alg: 'sha1' | 'sha256',
  key: Uint8Array,
  msg: Uint8Array,
  upto: number,
  adjustedLength: number,
): Buffer {
  // A copy of the 20-byte header with the adjusted length, then the rest as it is: two updates, no copy of the body.
  const header = Buffer.from(msg.subarray(0, HEADER_LENGTH));
  header.writeUInt16BE(adjustedLength, 2);
  return createHmac(alg, key).update(header).update(msg.subarray(HEADER_LENGTH, upto)).digest();
}

/** §14.7: CRC-32 of the message up to FINGERPRINT (length field covering it), XOR 0x5354554e. */
function fingerprintOf(msg: Uint8Array, upto: number, adjustedLength: number): number {
  let c = crc32(msg.subarray(0, 2));
  c = crc32(Uint8Array.of(adjustedLength >> 8, adjustedLength & 0xff), c);
  c = crc32(msg.subarray(4, upto), c);
  return (c ^ FINGERPRINT_XOR) >>> 0;
}

/** True when MESSAGE-INTEGRITY is present and matches `key` (§14.5). */
export function verifyIntegrity(msg: StunMessage, key: Uint8Array): boolean {
  const a = msg.getRaw(Attr.MESSAGE_INTEGRITY);
  if (!a || a.value.length !== 20) return false;
  const mac = hmacOver('sha1', key, msg.raw, a.offset, a.offset + 24 - HEADER_LENGTH);
  return timingSafeEqual(mac, a.value);
}

/** True when MESSAGE-INTEGRITY-SHA256 is present and matches `key` (§14.6, truncated values accepted). */
export function verifyIntegritySha256(msg: StunMessage, key: Uint8Array): boolean {
  const a = msg.getRaw(Attr.MESSAGE_INTEGRITY_SHA256);
  const n = a?.value.length ?? 0;
  if (!a || n < 16 || n > 32 || n % 4 !== 0) return false;
  const mac = hmacOver('sha256', key, msg.raw, a.offset, a.offset + 4 + n - HEADER_LENGTH);
  return timingSafeEqual(mac.subarray(0, n), a.value);
}

/** §14.7: 'absent', 'valid' or 'invalid'. FINGERPRINT counts only as the last attribute. */
export function checkFingerprint(msg: StunMessage): 'absent' | 'valid' | 'invalid' {
  const a = msg.getRaw(Attr.FINGERPRINT);
  if (!a) return 'absent';
  if (a.value.length !== 4 || a.offset + 8 !== msg.raw.length) return 'invalid';
  const want = ((a.value[0]! << 24) | (a.value[1]! << 16) | (a.value[2]! << 8) | a.value[3]!) >>> 0;
  return fingerprintOf(msg.raw, a.offset, msg.raw.length - HEADER_LENGTH) === want ? 'valid' : 'invalid';
}
