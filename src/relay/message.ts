/**
 * What the TURN server and client use of STUN (RFC 8489), as thin helpers over the one codec in src/wire/stun:
 * parsing is decodeStun's walk (views into the datagram, no copies), integrity and fingerprint are its checks, XOR
 * addresses its codec, messages are built by encodeStun. Only the relay's own shapes live here: the TURN attribute
 * names in one table, lookups that return Buffer views and never throw, a builder that collects attributes in call
 * order, and the Data indication (RFC 8656 §11.4) written straight into one buffer for the relay path. ChannelData
 * (RFC 8656 §12.4) never comes here: the server reads its 4-byte header in place.
 */
import {
  Attr,
  checkFingerprint,
  encodeMessageType,
  encodeStun,
  ErrorCodeAttr,
  HEADER_LENGTH,
  MAGIC_COOKIE,
  readXorAddress,
  StunClass,
  StunMethod,
  type StunMessage,
  tryDecodeStun,
  verifyIntegrity as verifySha1,
  verifyIntegritySha256,
  writeXorAddress as writeXorAddressBytes,
  xorAddressCodec,
} from '../wire/stun/index.js';
import {
  AdditionalAddressFamily,
  AddressErrorCode,
  ChannelNumber,
  ConnectionId,
  Data,
  DontFragment,
  EvenPort,
  Icmp,
  Lifetime,
  RequestedAddressFamily,
  RequestedTransport,
  ReservationToken,
  TurnMethod,
  XorPeerAddress,
  XorRelayedAddress,
} from '../wire/turn.js';
import { formatIp, parseIp } from './ip.js';

export { MAGIC_COOKIE };
export const HEADER = HEADER_LENGTH;

/** RFC 8489 §5: class bits. */
export const Cls = {
  Request: StunClass.Request,
  Indication: StunClass.Indication,
  Success: StunClass.SuccessResponse,
  Error: StunClass.ErrorResponse,
} as const;

/** RFC 8489 §18.2 Binding plus the TURN methods (RFC 8656 §17, RFC 6062 §6.1), numbered once in src/wire/turn.ts. */
export const Method = { Binding: StunMethod.Binding, ...TurnMethod } as const;

/** The attribute types TURN reads or writes, by name; the numbers come from src/wire/stun and src/wire/turn. */
export const A = {
  MAPPED_ADDRESS: Attr.MAPPED_ADDRESS,
  USERNAME: Attr.USERNAME,
  MESSAGE_INTEGRITY: Attr.MESSAGE_INTEGRITY,
  ERROR_CODE: Attr.ERROR_CODE,
  UNKNOWN_ATTRIBUTES: Attr.UNKNOWN_ATTRIBUTES,
  CHANNEL_NUMBER: ChannelNumber.type,
  LIFETIME: Lifetime.type,
  XOR_PEER_ADDRESS: XorPeerAddress.type,
  DATA: Data.type,
  REALM: Attr.REALM,
  NONCE: Attr.NONCE,
  XOR_RELAYED_ADDRESS: XorRelayedAddress.type,
  REQUESTED_ADDRESS_FAMILY: RequestedAddressFamily.type,
  EVEN_PORT: EvenPort.type,
  REQUESTED_TRANSPORT: RequestedTransport.type,
  DONT_FRAGMENT: DontFragment.type,
  MESSAGE_INTEGRITY_SHA256: Attr.MESSAGE_INTEGRITY_SHA256,
  PASSWORD_ALGORITHM: Attr.PASSWORD_ALGORITHM,
  USERHASH: Attr.USERHASH,
  XOR_MAPPED_ADDRESS: Attr.XOR_MAPPED_ADDRESS,
  RESERVATION_TOKEN: ReservationToken.type,
  PADDING: Attr.PADDING, // RFC 5780 §7.6: ignored by the server; pads an unauthenticated request to its answer's size
  CONNECTION_ID: ConnectionId.type,
  ADDITIONAL_ADDRESS_FAMILY: AdditionalAddressFamily.type,
  ADDRESS_ERROR_CODE: AddressErrorCode.type,
  PASSWORD_ALGORITHMS: Attr.PASSWORD_ALGORITHMS,
  ICMP: Icmp.type,
  SOFTWARE: Attr.SOFTWARE,
  FINGERPRINT: Attr.FINGERPRINT,
} as const;

/**
 * The comprehension-required attributes (< 0x8000) the TURN server understands: anything else in a request is
 * answered 420 (RFC 8489 §14, §6.3.1).
 */
export const KNOWN_REQUIRED: ReadonlySet<number> = new Set(Object.values(A).filter((t) => t < 0x8000));

/** A parsed STUN message: the wire codec's view over the datagram. */
export type StunMsg = StunMessage;

/** Attributes a TURN message may carry before the server stops reading it (a bound on work per datagram). */
const MAX_ATTRIBUTES = 64;

/** Parses one whole STUN message (RFC 8489 §5, §14); null for anything malformed. Never throws. */
export function parseStun(buf: Uint8Array): StunMsg | null {
  return tryDecodeStun(buf, { maxAttributes: MAX_ATTRIBUTES });
}

export const messageType = (method: number, cls: number): number => encodeMessageType(cls as StunClass, method);

/** The first attribute of a type (RFC 8489 §14: only the first occurrence counts). */
export function findAttr(m: StunMsg, type: number): { type: number; value: Uint8Array } | undefined {
  return m.getRaw(type);
}

/** The first attribute's value as a Buffer view into the message (no copy). */
export function attrValue(m: StunMsg, type: number): Buffer | undefined {
  const v = m.getRaw(type)?.value;
  // A view of a Buffer is a Buffer already (the servers' datagrams are); wrap other views without copying.
  return v && (Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength));
}

export function attrText(m: StunMsg, type: number): string | undefined {
  return attrValue(m, type)?.toString('utf8');
}

export function attrUint32(m: StunMsg, type: number): number | undefined {
  const v = attrValue(m, type);
  return v && v.length === 4 ? v.readUInt32BE(0) : undefined;
}

export interface Peer {
  address: string;
  port: number;
}

/** Every attribute of an XOR address type, decoded (RFC 8489 §14.2); null for a malformed one. */
export function attrXorAddresses(m: StunMsg, type: number): Array<Peer | null> {
  const out: Array<Peer | null> = [];
  for (const a of m.attributes) {
    if (a.type !== type) continue;
    const p = readXorAddress(a.value, m.transactionId);
    out.push(p && { address: p.address, port: p.port });
  }
  return out;
}

/** Writes an XOR address value (8 or 20 bytes) at `off` of `out`. Returns bytes written, 0 when the address is bad. */
export function writeXorAddress(out: Uint8Array, off: number, peer: Peer, tid: Uint8Array): number {
  const bytes = parseIp(peer.address);
  return bytes ? writeXorAddressBytes(out, off, bytes, peer.port, tid) : 0;
}

/** Checks the first of MESSAGE-INTEGRITY-SHA256 / MESSAGE-INTEGRITY (RFC 8489 §14.5, §14.6) against `key`. */
export function verifyIntegrity(m: StunMsg, key: Uint8Array): 'sha256' | 'sha1' | null {
  const kind = integrityKind(m);
  if (kind === 'sha256') return verifyIntegritySha256(m, key) ? 'sha256' : null;
  if (kind === 'sha1') return verifySha1(m, key) ? 'sha1' : null;
  return null;
}

/** Which integrity attribute a message carries, if any (the first one counts, RFC 8489 §14.6). */
export function integrityKind(m: StunMsg): 'sha256' | 'sha1' | null {
  for (const a of m.attributes) {
    if (a.type === A.MESSAGE_INTEGRITY_SHA256) return 'sha256';
    if (a.type === A.MESSAGE_INTEGRITY) return 'sha1';
  }
  return null;
}

/** RFC 8489 §14.7: true when there is no FINGERPRINT or it is correct. */
export function fingerprintOk(m: StunMsg): boolean {
  return checkFingerprint(m) !== 'invalid';
}

/** The ERROR-CODE of a response (RFC 8489 §14.8), or null when absent or malformed. */
export function errorInfo(m: StunMsg): { code: number; reason: string } | null {
  try {
    const e = m.get(ErrorCodeAttr);
    return e ? { code: e.code, reason: e.reason } : null;
  } catch {
    return null;
  }
}

/** Builds one STUN message with encodeStun. Attributes are appended in call order; `finish` adds integrity/fingerprint. */
export class StunBuilder {
  readonly #attrs: Array<{ type: number; value: Uint8Array }> = [];
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
    this.#attrs.push({ type, value });
    this.#len += 4 + ((value.length + 3) & ~3);
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
    return this.add(A.ERROR_CODE, ErrorCodeAttr.encode({ code, reason }, { transactionId: this.tid }));
  }

  /** Serialises, appending MESSAGE-INTEGRITY(-SHA256) when a key is given and FINGERPRINT when asked. */
  finish(options: { key?: Uint8Array; integrity?: 'sha1' | 'sha256'; fingerprint?: boolean } = {}): Buffer {
    const sha256 = options.integrity === 'sha256';
    return encodeStun(
      { cls: this.cls as StunClass, method: this.method, transactionId: this.tid, attributes: this.#attrs },
      {
        ...(options.key && !sha256 ? { integrity: options.key } : {}),
        ...(options.key && sha256 ? { integritySha256: options.key } : {}),
        fingerprint: options.fingerprint ?? false,
      },
    );
  }
}

/** An XOR address value (RFC 8489 §14.2) for `peer`; RangeError when it is not an IP address. */
export function xorAddressValue(peer: Peer, tid: Uint8Array): Uint8Array {
  if (!parseIp(peer.address)) throw new RangeError(`not an IP address: ${peer.address}`);
  return xorAddressCodec.encode(
    { family: peer.address.includes(':') ? 'IPv6' : 'IPv4', address: peer.address, port: peer.port },
    { transactionId: tid },
  );
}

/**
 * Data indication (RFC 8656 §11.4) built in one allocation for the relay path: header + XOR-PEER-ADDRESS + DATA.
 * `tid` is a fresh 12-byte transaction id the caller supplies.
 */
export function encodeDataIndication(peer: Peer, data: Uint8Array, tid: Uint8Array): Buffer | null {
  const ip = parseIp(peer.address);
  if (!ip) return null;
  const addrLen = 4 + ip.length;
  const padded = (data.length + 3) & ~3;
  const out = Buffer.allocUnsafe(HEADER + 4 + addrLen + 4 + padded);
  out.writeUInt16BE(messageType(Method.Data, Cls.Indication), 0);
  out.writeUInt16BE(4 + addrLen + 4 + padded, 2);
  out.writeUInt32BE(MAGIC_COOKIE, 4);
  out.set(tid, 8);
  out.writeUInt16BE(A.XOR_PEER_ADDRESS, HEADER);
  out.writeUInt16BE(addrLen, HEADER + 2);
  writeXorAddressBytes(out, HEADER + 4, ip, peer.port, tid);
  const d = HEADER + 4 + addrLen;
  out.writeUInt16BE(A.DATA, d);
  out.writeUInt16BE(data.length, d + 2);
  out.set(data, d + 4);
  out.fill(0, d + 4 + data.length);
  return out;
}

export { formatIp };
