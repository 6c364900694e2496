/**
 * The few STUN Binding messages netcheck sends and the response attributes it reads. Kept deliberately small and
 * private to discovery: the full codec (integrity, fingerprint, every attribute) lives in the STUN module; this only
 * builds unauthenticated Binding requests and pulls addresses out of responses. Decoding never throws.
 */
import { randomBytes } from 'node:crypto';
import type { Endpoint } from './classify.js';

/** RFC 8489 §5: the fixed magic cookie. */
export const MAGIC_COOKIE = 0x2112a442;
const HEADER = 20;

// RFC 8489 §5: method Binding = 0x001; class bits request 0b00, success 0b10, error 0b11.
const BINDING_REQUEST = 0x0001;
const BINDING_SUCCESS = 0x0101;
const BINDING_ERROR = 0x0111;

// Attribute types: RFC 8489 §18.3, RFC 5780 §7, RFC 3489 §11.2.
const ATTR = {
  MAPPED_ADDRESS: 0x0001, // RFC 8489 §14.1
  CHANGE_REQUEST: 0x0003, // RFC 5780 §7.2
  SOURCE_ADDRESS: 0x0004, // RFC 3489 §11.2.3 (legacy)
  CHANGED_ADDRESS: 0x0005, // RFC 3489 §11.2.4 (legacy)
  ERROR_CODE: 0x0009, // RFC 8489 §14.8
  XOR_MAPPED_ADDRESS: 0x0020, // RFC 8489 §14.2
  RESPONSE_PORT: 0x0027, // RFC 5780 §7.5
  SOFTWARE: 0x8022, // RFC 8489 §14.14
  RESPONSE_ORIGIN: 0x802b, // RFC 5780 §7.3
  OTHER_ADDRESS: 0x802c, // RFC 5780 §7.4
} as const;

export interface BindingRequestOptions {
  /** RFC 5780 §7.2: ask the server to answer from its alternate IP. */
  changeIp?: boolean;
  /** RFC 5780 §7.2: ask the server to answer from its alternate port. */
  changePort?: boolean;
  /** RFC 5780 §7.5: ask the server to answer to this port (at our source IP). */
  responsePort?: number;
  /**
   * An RFC 3489 request (no magic cookie: the 128-bit transaction id fills bytes 4-19), which servers answer with the
   * plain MAPPED-ADDRESS — the copy an address-rewriting ALG can recognise (used for ALG detection).
   */
  legacy?: boolean;
}

export interface BindingResponse {
  transactionId: string;
  ok: boolean;
  xorMapped?: Endpoint;
  mapped?: Endpoint;
  otherAddress?: Endpoint;
  responseOrigin?: Endpoint;
  software?: string;
  error?: { code: number; reason: string };
}

/** 96-bit id (RFC 8489 §5), or for a legacy request 128 bits that do not start with the magic cookie. */
export function newTransactionId(legacy = false): Buffer {
  if (!legacy) return randomBytes(12);
  const id = randomBytes(16);
  if (id.readUInt32BE(0) === MAGIC_COOKIE) id[0]! ^= 0xff;
  return id;
}

/** RFC 8489 §14.14: SOFTWARE in our requests. It also raises servers' amplification bound (responses are capped at a
 * multiple of the request size), so OTHER-ADDRESS and RESPONSE-ORIGIN are not dropped from answers. */
export const PROBE_SOFTWARE = 'natpunch netcheck';

/** RFC 8489 §5 header + §14 attributes (each padded to 4 bytes). */
export function encodeBindingRequest(transactionId: Uint8Array, options: BindingRequestOptions = {}): Buffer {
  const attrs: Buffer[] = [];
  if (options.changeIp || options.changePort) {
    const a = Buffer.alloc(8);
    a.writeUInt16BE(ATTR.CHANGE_REQUEST, 0);
    a.writeUInt16BE(4, 2);
    // RFC 5780 §7.2: bit 0x4 = change IP, bit 0x2 = change port.
    a.writeUInt32BE((options.changeIp ? 0x4 : 0) | (options.changePort ? 0x2 : 0), 4);
    attrs.push(a);
  }
  if (options.responsePort !== undefined) {
    const a = Buffer.alloc(8);
    a.writeUInt16BE(ATTR.RESPONSE_PORT, 0);
    a.writeUInt16BE(4, 2);
    // RFC 5780 §7.5: a 16-bit port followed by two bytes of padding.
    a.writeUInt16BE(options.responsePort, 4);
    attrs.push(a);
  }
  if (!options.legacy) {
    const sw = Buffer.from(PROBE_SOFTWARE, 'utf8');
    const a = Buffer.alloc(4 + sw.length + ((4 - (sw.length % 4)) % 4));
    a.writeUInt16BE(ATTR.SOFTWARE, 0);
    a.writeUInt16BE(sw.length, 2);
    sw.copy(a, 4);
    attrs.push(a);
  }
  const body = Buffer.concat(attrs);
  const header = Buffer.alloc(HEADER);
  header.writeUInt16BE(BINDING_REQUEST, 0);
  header.writeUInt16BE(body.length, 2);
  if (options.legacy) {
    // RFC 3489 §11.1: a 128-bit transaction id right after the length.
    Buffer.from(transactionId).copy(header, 4, 0, 16);
  } else {
    header.writeUInt32BE(MAGIC_COOKIE, 4);
    Buffer.from(transactionId).copy(header, 8);
  }
  return Buffer.concat([header, body]);
}

/** Total length of the STUN message at the start of `buf` (RFC 8489 §6.2.2 framing over TCP), or undefined. */
export function stunFrameLength(buf: Uint8Array): number | undefined {
  if (buf.length < HEADER) return undefined;
  return HEADER + ((buf[2]! << 8) | buf[3]!);
}

/** Parses a Binding success/error response; anything else (or malformed) → undefined. Never throws. */
export function decodeBindingResponse(msg: Uint8Array): BindingResponse | undefined {
  if (msg.length < HEADER || (msg[0]! & 0xc0) !== 0) return undefined;
  const buf = Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength);
  const type = buf.readUInt16BE(0);
  const length = buf.readUInt16BE(2);
  if (length % 4 !== 0 || HEADER + length > buf.length) return undefined;
  if (type !== BINDING_SUCCESS && type !== BINDING_ERROR) return undefined;
  // Without the cookie it is an RFC 3489 response: bytes 4-19 are its transaction id (and nothing is XOR'd).
  const legacy = buf.readUInt32BE(4) !== MAGIC_COOKIE;
  const txid = buf.subarray(8, 20);
  const out: BindingResponse = { transactionId: buf.subarray(legacy ? 4 : 8, 20).toString('hex'), ok: type === BINDING_SUCCESS };
  let off = HEADER;
  const end = HEADER + length;
  while (off + 4 <= end) {
    const t = buf.readUInt16BE(off);
    const len = buf.readUInt16BE(off + 2);
    const v = off + 4;
    if (v + len > end) return undefined;
    const value = buf.subarray(v, v + len);
    switch (t) {
      case ATTR.XOR_MAPPED_ADDRESS:
        if (!legacy) out.xorMapped ??= decodeAddress(value, txid, true);
        break;
      case ATTR.MAPPED_ADDRESS:
        out.mapped ??= decodeAddress(value, txid, false);
        break;
      case ATTR.OTHER_ADDRESS:
      case ATTR.CHANGED_ADDRESS:
        out.otherAddress ??= decodeAddress(value, txid, false);
        break;
      case ATTR.RESPONSE_ORIGIN:
      case ATTR.SOURCE_ADDRESS:
        out.responseOrigin ??= decodeAddress(value, txid, false);
        break;
      case ATTR.SOFTWARE:
        out.software ??= value.toString('utf8').replace(/[^\x20-\x7e]/g, '').slice(0, 128);
        break;
      case ATTR.ERROR_CODE:
        // RFC 8489 §14.8: 21 reserved bits, class (hundreds) in 3 bits, number in 8 bits, then the reason phrase.
        if (len >= 4) {
          out.error = {
            code: (value[2]! & 0x7) * 100 + value[3]!,
            reason: value.subarray(4).toString('utf8').replace(/[^\x20-\x7e]/g, '').slice(0, 128),
          };
        }
        break;
      default:
        break;
    }
    off = v + len + ((4 - (len % 4)) % 4);
  }
  return out;
}

/** RFC 8489 §14.1/§14.2: family 0x01 IPv4 / 0x02 IPv6; the XOR form masks with the cookie (and txid for IPv6). */
function decodeAddress(value: Buffer, txid: Buffer, xor: boolean): Endpoint | undefined {
  if (value.length < 8) return undefined;
  const family = value[1];
  let port = value.readUInt16BE(2);
  if (xor) port ^= MAGIC_COOKIE >>> 16;
  if (family === 0x01) {
    const raw = Buffer.from(value.subarray(4, 8));
    if (xor) {
      const mask = Buffer.alloc(4);
      mask.writeUInt32BE(MAGIC_COOKIE, 0);
      for (let i = 0; i < 4; i++) raw[i]! ^= mask[i]!;
    }
    return { address: Array.from(raw).join('.'), port };
  }
  if (family === 0x02 && value.length >= 20) {
    const raw = Buffer.from(value.subarray(4, 20));
    if (xor) {
      const mask = Buffer.alloc(16);
      mask.writeUInt32BE(MAGIC_COOKIE, 0);
      txid.copy(mask, 4);
      for (let i = 0; i < 16; i++) raw[i]! ^= mask[i]!;
    }
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(raw.readUInt16BE(i).toString(16));
    return { address: compressV6(groups), port };
  }
  return undefined;
}

/** Canonical RFC 5952 text form so addresses compare equal with what node reports. */
function compressV6(groups: string[]): string {
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLen).join(':')}`;
}
