/**
 * The attribute and method table. It is OPEN: later layers (TURN, ICE) define their attributes with
 * `defineAttribute` and register them on their own registry made with `coreRegistry.extend()`, so the core never
 * changes and nothing here is module-level mutable state (the core registry is frozen).
 */
import { NatpunchError } from '../../util/errors.js';
import { addressToBytes, FAMILY_IPV4, FAMILY_IPV6, formatIPv4, formatIPv6, type TransportAddress } from './address.js';
import { Attr, MAGIC_COOKIE, StunMethod } from './constants.js';

/** What an attribute codec may need from its message: the transaction id (XOR attributes). */
export interface AttributeContext {
  /** The 12 bytes after the magic cookie (RFC 8489 §5). */
  readonly transactionId: Uint8Array;
}

export interface AttributeCodec<T> {
  /** Decodes the value (without padding). Throws only NatpunchError('STUN_DECODE'). */
  decode(value: Uint8Array, ctx: AttributeContext): T;
  encode(value: T, ctx: AttributeContext): Uint8Array;
}

export interface AttributeDef<T> extends AttributeCodec<T> {
  readonly type: number;
  readonly name: string;
}

export function defineAttribute<T>(type: number, name: string, codec: AttributeCodec<T>): AttributeDef<T> {
  if (!Number.isInteger(type) || type < 0 || type > 0xffff)
    throw new NatpunchError('BAD_ARGUMENT', `attribute type ${type} out of range`);
  return Object.freeze({ type, name, decode: codec.decode, encode: codec.encode });
}

export function decodeError(message: string): NatpunchError {
  return new NatpunchError('STUN_DECODE', message);
}

// ---------------------------------------------------------------------------------------------------------------
// Reusable value codecs (exported so TURN can build XOR-PEER-ADDRESS, LIFETIME, ... from them).

/** RFC 8489 §14.1: 0x00, family, port, address (4 or 16 bytes). */
export const addressCodec: AttributeCodec<TransportAddress> = {
  decode(v) {
    if (v.length < 4) throw decodeError('address attribute too short');
    const family = v[1];
    const port = (v[2]! << 8) | v[3]!;
    if (family === FAMILY_IPV4 && v.length === 8) return { family: 'IPv4', address: formatIPv4(v, 4), port };
    if (family === FAMILY_IPV6 && v.length === 20) return { family: 'IPv6', address: formatIPv6(v, 4), port };
    throw decodeError(`address attribute has family ${family} and length ${v.length}`);
  },
  encode(a) {
    const bytes = addressBytes(a);
    const out = new Uint8Array(4 + bytes.length);
    out[1] = bytes.length === 4 ? FAMILY_IPV4 : FAMILY_IPV6;
    out[2] = a.port >> 8;
    out[3] = a.port & 0xff;
    out.set(bytes, 4);
    return out;
  },
};

function addressBytes(a: TransportAddress): Uint8Array {
  const bytes = addressToBytes(a.address);
  if (!bytes) throw new NatpunchError('BAD_ARGUMENT', `not an IP address: ${a.address}`);
  if (!Number.isInteger(a.port) || a.port < 0 || a.port > 0xffff)
    throw new NatpunchError('BAD_ARGUMENT', `bad port ${a.port}`);
  return bytes;
}

/** RFC 8489 §14.2: port XOR the cookie's top 16 bits; address XOR cookie (IPv4) or cookie || transaction id (IPv6). */
export const xorAddressCodec: AttributeCodec<TransportAddress> = {
  decode(v, ctx) {
    const a = readXorAddress(v, ctx.transactionId);
    if (!a) throw decodeError(`XOR address attribute has family ${v[1]} and length ${v.length}`);
    return a;
  },
  encode(a, ctx) {
    const bytes = addressBytes(a);
    const out = new Uint8Array(4 + bytes.length);
    writeXorAddress(out, 0, bytes, a.port, ctx.transactionId);
    return out;
  },
};

/** RFC 8489 §14.2: an XOR address value, or null when its family or length is wrong. No exceptions. */
export function readXorAddress(v: Uint8Array, tid: Uint8Array): TransportAddress | null {
  if (v.length < 4) return null;
  const family = v[1];
  const n = family === FAMILY_IPV4 ? 4 : family === FAMILY_IPV6 ? 16 : 0;
  if (n === 0 || v.length !== 4 + n) return null;
  const port = ((v[2]! << 8) | v[3]!) ^ (MAGIC_COOKIE >>> 16);
  if (n === 4) {
    // IPv4, the common case: no intermediate bytes.
    const a = (((v[4]! << 24) | (v[5]! << 16) | (v[6]! << 8) | v[7]!) ^ MAGIC_COOKIE) >>> 0;
    return { family: 'IPv4', address: `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`, port };
  }
  const addr = new Uint8Array(16);
  xorInto(addr, v.subarray(4), tid);
  return { family: 'IPv6', address: formatIPv6(addr), port };
}

/**
 * RFC 8489 §14.2: writes the XOR address value of `ip` (4 or 16 bytes) and `port` at `out[off..]`, in place (a
 * relay's Data indication is built in one buffer). Returns the bytes written: 8 or 20.
 */
export function writeXorAddress(out: Uint8Array, off: number, ip: Uint8Array, port: number, tid: Uint8Array): number {
  out[off] = 0;
  out[off + 1] = ip.length === 4 ? FAMILY_IPV4 : FAMILY_IPV6;
  const x = port ^ (MAGIC_COOKIE >>> 16);
  out[off + 2] = x >> 8;
  out[off + 3] = x & 0xff;
  for (let i = 0; i < ip.length; i++)
    out[off + 4 + i] = ip[i]! ^ (i < 4 ? (MAGIC_COOKIE >>> (24 - i * 8)) & 0xff : tid[i - 4]!);
  return 4 + ip.length;
}

function xorInto(out: Uint8Array, src: Uint8Array, tid: Uint8Array): void {
  for (let i = 0; i < out.length; i++) {
    const key = i < 4 ? (MAGIC_COOKIE >>> (24 - i * 8)) & 0xff : (tid[i - 4] ?? 0);
    out[i] = src[i]! ^ key;
  }
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** UTF-8 text with a byte limit (RFC 8489 §14.3 USERNAME < 513, §14.9/§14.10/§14.14 ≤ 763). */
export function textCodec(maxBytes: number): AttributeCodec<string> {
  return {
    decode(v) {
      if (v.length > maxBytes) throw decodeError(`text attribute longer than ${maxBytes} bytes`);
      try {
        return utf8Decoder.decode(v);
      } catch {
        throw decodeError('text attribute is not valid UTF-8');
      }
    },
    encode(s) {
      const out = utf8Encoder.encode(s);
      if (out.length > maxBytes)
        throw new NatpunchError('BAD_ARGUMENT', `text attribute longer than ${maxBytes} bytes`);
      return out;
    },
  };
}

/** Opaque bytes, optionally of an exact or bounded length. Decoding returns a view into the message. */
export function bytesCodec(check?: (length: number) => boolean): AttributeCodec<Uint8Array> {
  return {
    decode(v) {
      if (check && !check(v.length)) throw decodeError(`attribute length ${v.length} not allowed`);
      return v;
    },
    encode(v) {
      if (check && !check(v.length))
        throw new NatpunchError('BAD_ARGUMENT', `attribute length ${v.length} not allowed`);
      return v;
    },
  };
}

export const uint32Codec: AttributeCodec<number> = {
  decode(v) {
    if (v.length !== 4) throw decodeError('32-bit attribute must be 4 bytes');
    return ((v[0]! << 24) | (v[1]! << 16) | (v[2]! << 8) | v[3]!) >>> 0;
  },
  encode(n) {
    const out = new Uint8Array(4);
    new DataView(out.buffer).setUint32(0, n >>> 0);
    return out;
  },
};

/** A flag attribute with no value (e.g. TURN's DONT-FRAGMENT, ICE's USE-CANDIDATE). */
export const emptyCodec: AttributeCodec<true> = {
  decode(v) {
    if (v.length !== 0) throw decodeError('flag attribute must be empty');
    return true;
  },
  encode() {
    return new Uint8Array(0);
  },
};

export interface ErrorCodeValue {
  code: number;
  reason: string;
}

/** RFC 8489 §14.8: 21 reserved bits, class (3 bits, 3..6), number (8 bits, 0..99), UTF-8 reason (< 128 chars). */
export const errorCodeCodec: AttributeCodec<ErrorCodeValue> = {
  decode(v) {
    if (v.length < 4 || v.length > 4 + 763) throw decodeError('ERROR-CODE has a bad length');
    const cls = v[2]! & 0x07;
    const num = v[3]!;
    if (cls < 3 || cls > 6 || num > 99) throw decodeError(`ERROR-CODE ${cls}${num} out of range`);
    let reason: string;
    try {
      reason = utf8Decoder.decode(v.subarray(4));
    } catch {
      throw decodeError('ERROR-CODE reason is not valid UTF-8');
    }
    return { code: cls * 100 + num, reason };
  },
  encode({ code, reason }) {
    if (!Number.isInteger(code) || code < 300 || code > 699)
      throw new NatpunchError('BAD_ARGUMENT', `error code ${code} out of range`);
    const text = utf8Encoder.encode(reason);
    const out = new Uint8Array(4 + Math.min(text.length, 763));
    out[2] = Math.floor(code / 100);
    out[3] = code % 100;
    out.set(text.subarray(0, 763), 4);
    return out;
  },
};

/** RFC 8489 §14.13: a list of 16-bit attribute types. */
export const unknownAttributesCodec: AttributeCodec<number[]> = {
  decode(v) {
    if (v.length % 2 !== 0) throw decodeError('UNKNOWN-ATTRIBUTES length is odd');
    const out: number[] = [];
    for (let i = 0; i < v.length; i += 2) out.push((v[i]! << 8) | v[i + 1]!);
    return out;
  },
  encode(types) {
    const out = new Uint8Array(types.length * 2);
    types.forEach((t, i) => {
      out[i * 2] = t >> 8;
      out[i * 2 + 1] = t & 0xff;
    });
    return out;
  },
};

export interface PasswordAlgorithmValue {
  algorithm: number;
  params: Uint8Array;
}

function decodeAlgorithms(v: Uint8Array, single: boolean): PasswordAlgorithmValue[] {
  const out: PasswordAlgorithmValue[] = [];
  let o = 0;
  while (o < v.length) {
    if (o + 4 > v.length) throw decodeError('PASSWORD-ALGORITHM(S) truncated');
    const algorithm = (v[o]! << 8) | v[o + 1]!;
    const len = (v[o + 2]! << 8) | v[o + 3]!;
    if (o + 4 + len > v.length) throw decodeError('PASSWORD-ALGORITHM(S) parameters overrun');
    out.push({ algorithm, params: v.subarray(o + 4, o + 4 + len) });
    o += 4 + ((len + 3) & ~3);
    if (single) break;
  }
  if (single && (out.length !== 1 || o !== v.length))
    throw decodeError('PASSWORD-ALGORITHM must hold exactly one algorithm');
  if (o !== v.length) throw decodeError('PASSWORD-ALGORITHMS padding overruns');
  return out;
}

function encodeAlgorithms(list: PasswordAlgorithmValue[]): Uint8Array {
  const size = list.reduce((n, a) => n + 4 + ((a.params.length + 3) & ~3), 0);
  const out = new Uint8Array(size);
  let o = 0;
  for (const a of list) {
    out[o] = a.algorithm >> 8;
    out[o + 1] = a.algorithm & 0xff;
    out[o + 2] = a.params.length >> 8;
    out[o + 3] = a.params.length & 0xff;
    out.set(a.params, o + 4);
    o += 4 + ((a.params.length + 3) & ~3);
  }
  return out;
}

/** RFC 8489 §14.11 */
export const passwordAlgorithmsCodec: AttributeCodec<PasswordAlgorithmValue[]> = {
  decode: (v) => decodeAlgorithms(v, false),
  encode: encodeAlgorithms,
};

/** RFC 8489 §14.12 */
export const passwordAlgorithmCodec: AttributeCodec<PasswordAlgorithmValue> = {
  decode: (v) => decodeAlgorithms(v, true)[0]!,
  encode: (a) => encodeAlgorithms([a]),
};

export interface ChangeRequestValue {
  changeIp: boolean;
  changePort: boolean;
}

/** RFC 5780 §7.2: 32 bits, A (0x4 = change IP) and B (0x2 = change port) flags. */
export const changeRequestCodec: AttributeCodec<ChangeRequestValue> = {
  decode(v) {
    if (v.length !== 4) throw decodeError('CHANGE-REQUEST must be 4 bytes');
    return { changeIp: (v[3]! & 0x04) !== 0, changePort: (v[3]! & 0x02) !== 0 };
  },
  encode({ changeIp, changePort }) {
    return Uint8Array.of(0, 0, 0, (changeIp ? 0x04 : 0) | (changePort ? 0x02 : 0));
  },
};

/** RFC 5780 §7.5: 16-bit port and 16 reserved bits. */
export const responsePortCodec: AttributeCodec<number> = {
  decode(v) {
    if (v.length !== 4) throw decodeError('RESPONSE-PORT must be 4 bytes');
    return (v[0]! << 8) | v[1]!;
  },
  encode(port) {
    return Uint8Array.of(port >> 8, port & 0xff, 0, 0);
  },
};

// ---------------------------------------------------------------------------------------------------------------
// The core attributes (RFC 8489, RFC 5389, RFC 3489 legacy, RFC 5780).

export const MappedAddress = defineAttribute(Attr.MAPPED_ADDRESS, 'MAPPED-ADDRESS', addressCodec);
export const XorMappedAddress = defineAttribute(Attr.XOR_MAPPED_ADDRESS, 'XOR-MAPPED-ADDRESS', xorAddressCodec);
export const Username = defineAttribute(Attr.USERNAME, 'USERNAME', textCodec(512));
export const Userhash = defineAttribute(
  Attr.USERHASH,
  'USERHASH',
  bytesCodec((n) => n === 32),
);
export const MessageIntegrity = defineAttribute(
  Attr.MESSAGE_INTEGRITY,
  'MESSAGE-INTEGRITY',
  bytesCodec((n) => n === 20),
);
export const MessageIntegritySha256 = defineAttribute(
  Attr.MESSAGE_INTEGRITY_SHA256,
  'MESSAGE-INTEGRITY-SHA256',
  // RFC 8489 §14.6: 16 to 32 bytes in steps of 4 (truncation).
  bytesCodec((n) => n >= 16 && n <= 32 && n % 4 === 0),
);
export const Fingerprint = defineAttribute(Attr.FINGERPRINT, 'FINGERPRINT', uint32Codec);
export const ErrorCodeAttr = defineAttribute(Attr.ERROR_CODE, 'ERROR-CODE', errorCodeCodec);
export const UnknownAttributes = defineAttribute(Attr.UNKNOWN_ATTRIBUTES, 'UNKNOWN-ATTRIBUTES', unknownAttributesCodec);
export const Realm = defineAttribute(Attr.REALM, 'REALM', textCodec(763));
export const Nonce = defineAttribute(Attr.NONCE, 'NONCE', textCodec(763));
export const PasswordAlgorithms = defineAttribute(
  Attr.PASSWORD_ALGORITHMS,
  'PASSWORD-ALGORITHMS',
  passwordAlgorithmsCodec,
);
export const PasswordAlgorithmAttr = defineAttribute(
  Attr.PASSWORD_ALGORITHM,
  'PASSWORD-ALGORITHM',
  passwordAlgorithmCodec,
);
export const AlternateServer = defineAttribute(Attr.ALTERNATE_SERVER, 'ALTERNATE-SERVER', addressCodec);
export const AlternateDomain = defineAttribute(Attr.ALTERNATE_DOMAIN, 'ALTERNATE-DOMAIN', textCodec(255));
export const Software = defineAttribute(Attr.SOFTWARE, 'SOFTWARE', textCodec(763));
export const ChangeRequest = defineAttribute(Attr.CHANGE_REQUEST, 'CHANGE-REQUEST', changeRequestCodec);
export const ResponseOrigin = defineAttribute(Attr.RESPONSE_ORIGIN, 'RESPONSE-ORIGIN', addressCodec);
export const OtherAddress = defineAttribute(Attr.OTHER_ADDRESS, 'OTHER-ADDRESS', addressCodec);
export const ResponsePort = defineAttribute(Attr.RESPONSE_PORT, 'RESPONSE-PORT', responsePortCodec);
export const Padding = defineAttribute(Attr.PADDING, 'PADDING', bytesCodec());
export const SourceAddress = defineAttribute(Attr.SOURCE_ADDRESS, 'SOURCE-ADDRESS', addressCodec);
export const ChangedAddress = defineAttribute(Attr.CHANGED_ADDRESS, 'CHANGED-ADDRESS', addressCodec);

const CORE_ATTRIBUTES: ReadonlyArray<AttributeDef<unknown>> = [
  MappedAddress,
  XorMappedAddress,
  Username,
  Userhash,
  MessageIntegrity,
  MessageIntegritySha256,
  Fingerprint,
  ErrorCodeAttr,
  UnknownAttributes,
  Realm,
  Nonce,
  PasswordAlgorithms,
  PasswordAlgorithmAttr,
  AlternateServer,
  AlternateDomain,
  Software,
  ChangeRequest,
  ResponseOrigin,
  OtherAddress,
  ResponsePort,
  Padding,
  SourceAddress,
  ChangedAddress,
];

export class StunRegistry {
  #attributes = new Map<number, AttributeDef<unknown>>();
  #methods = new Map<number, string>();
  #frozen = false;

  /** Adds an attribute; returns its definition for typed get/encode. */
  registerAttribute<T>(type: number, name: string, codec: AttributeCodec<T>): AttributeDef<T> {
    const def = defineAttribute(type, name, codec);
    this.register(def);
    return def;
  }

  register(def: AttributeDef<unknown>): this {
    if (this.#frozen)
      throw new NatpunchError('BAD_ARGUMENT', 'this STUN registry is frozen; use extend() to add attributes');
    this.#attributes.set(def.type, def);
    return this;
  }

  /** Methods are 12 bits (RFC 8489 §5). */
  registerMethod(method: number, name: string): this {
    if (this.#frozen)
      throw new NatpunchError('BAD_ARGUMENT', 'this STUN registry is frozen; use extend() to add methods');
    if (!Number.isInteger(method) || method < 0 || method > 0xfff)
      throw new NatpunchError('BAD_ARGUMENT', `method ${method} out of range`);
    this.#methods.set(method, name);
    return this;
  }

  attribute(type: number): AttributeDef<unknown> | undefined {
    return this.#attributes.get(type);
  }

  isKnownAttribute(type: number): boolean {
    return this.#attributes.has(type);
  }

  isKnownMethod(method: number): boolean {
    return this.#methods.has(method);
  }

  attributeName(type: number): string {
    return this.#attributes.get(type)?.name ?? `0x${type.toString(16).padStart(4, '0')}`;
  }

  methodName(method: number): string {
    return this.#methods.get(method) ?? `0x${method.toString(16).padStart(3, '0')}`;
  }

  /** A new, unfrozen registry holding everything this one has. */
  extend(): StunRegistry {
    const r = new StunRegistry();
    for (const def of this.#attributes.values()) r.register(def);
    for (const [m, name] of this.#methods) r.registerMethod(m, name);
    return r;
  }

  freeze(): this {
    this.#frozen = true;
    return this;
  }

  get frozen(): boolean {
    return this.#frozen;
  }
}

function createCoreRegistry(): StunRegistry {
  const r = new StunRegistry();
  for (const def of CORE_ATTRIBUTES) r.register(def);
  r.registerMethod(StunMethod.Binding, 'Binding');
  return r.freeze();
}

/** The STUN core table (frozen). TURN: `const registry = coreRegistry.extend(); registry.registerAttribute(...)`. */
export const coreRegistry: StunRegistry = createCoreRegistry();
