import { randomBytes } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { FirstByte } from '../net/demux.js';
import { sign, verify, PUBLIC_KEY_BYTES, SIGNATURE_BYTES } from '../session/identity.js';
import type { Candidate, CandidateType } from '../traversal/candidate.js';
import { NatpunchError } from '../util/errors.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from './ip.js';
import { SEQ_OFFER_BYTES } from './seq-offer.js';

/**
 * natpunch rendezvous messages: a pure codec, no I/O.
 *
 * Every message starts with a 7-byte header:
 *   0      0xF0 (the rendezvous first byte, src/net/demux.ts; RFC 7983 §7 style demultiplexing)
 *   1      version (1)
 *   2      message type
 *   3..6   request id (u32 BE): a response carries the id of its request; pushes from the server carry their own
 * then a type-specific body (all integers big-endian). Signed messages (REGISTER, CONNECT, UNREGISTER, SEQ_OFFER) end with a
 * 64-byte Ed25519 signature (RFC 8032 §5.1.6) over SIGNATURE_CONTEXT followed by every byte before the signature,
 * header included, so neither the request id, a candidate nor a flag can be altered without the peer's key.
 * A timestamp and a 16-byte random nonce let the server refuse replays outside a window.
 *
 * Sizes are bounded so a message always fits one unfragmented datagram (RFC 8085 §3.2: stay under the path MTU;
 * 1200 bytes is what QUIC, RFC 9000 §14, assumes every path carries).
 */

export const RENDEZVOUS_VERSION = 1;
export const HEADER_BYTES = 7;
export const MAX_MESSAGE_BYTES = 1200;
export const MAX_CANDIDATES = 16;
export const MAX_NAME_LENGTH = 63;
export const NONCE_BYTES = 16;
export const CONNECTION_ID_BYTES = 16;
export const MAX_ERROR_TEXT_BYTES = 200;
/** Domain separation, so a rendezvous signature can never be mistaken for a signature over anything else. */
export const SIGNATURE_CONTEXT = Buffer.from('natpunch/rendezvous/v1\0', 'latin1');

/** Names are short, lowercase and unambiguous: a 64-hex-character peer key can never be a name (63 max). */
export const NAME_PATTERN = /^[a-z0-9._-]{1,63}$/;

export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

/**
 * Anti-amplification (issue 18): the server never answers a UDP request with more bytes than the request had (a
 * spoofed source must not turn the server into an amplifier, as RFC 9000 §8.1 bounds QUIC servers at 3x and we
 * bound at 1x). Requests whose answer can be larger carry zero padding, which the decoder accepts at the end of
 * every request type that may need it (LOOKUP, PING and the signed ones, after the signature: it is bulk, not
 * content). Padding is all zero bytes; anything else there is malformed. The client pads to these sizes; a request too small for its answer gets
 * ERROR TOO_SMALL (naming the size) when even that fits, else silence.
 */
/** Largest candidate on the wire: type, transport, family + IPv6 address, port, priority. */
const MAX_CANDIDATE_BYTES = 1 + 1 + 1 + 16 + 2 + 4;
const MAX_CANDIDATE_LIST_BYTES = 1 + MAX_CANDIDATES * MAX_CANDIDATE_BYTES;
/** LOOKUP_RESULT at its largest: key, 63-byte name, flags, expiry, 16 IPv6 candidates. A LOOKUP is padded to it. */
export const MAX_LOOKUP_RESULT_BYTES = 7 + 32 + 1 + 63 + 1 + 4 + MAX_CANDIDATE_LIST_BYTES;
/** CONNECT_NOTIFY at its largest (the initiator's answer). A CONNECT is padded to it. */
export const MAX_CONNECT_NOTIFY_BYTES = 7 + 16 + 1 + 1 + 32 + 1 + 63 + 2 + 8 + MAX_CANDIDATE_LIST_BYTES;
/** PONG's size (header, echo, time): a PING is padded to it, in both directions. */
export const PONG_BYTES = 7 + 8 + 8;
/**
 * A REGISTER is padded to this: its answers are REGISTERED (at most 44 bytes with an IPv6 address), the TURN
 * credentials when the server hands them out (~90 bytes with the shared-secret scheme) and the server's PING
 * (PONG_BYTES), which proves the peer's address before the server pushes it anything (see the server's #push).
 */
export const REGISTER_PAD_BYTES = 320;

/** Longest TURN username/password carried in TURN_CREDENTIALS (one length byte). */
export const MAX_TURN_CREDENTIAL_BYTES = 255;

export const MessageType = {
  REGISTER: 0x01,
  REGISTERED: 0x02,
  LOOKUP: 0x03,
  LOOKUP_RESULT: 0x04,
  CONNECT: 0x05,
  CONNECT_NOTIFY: 0x06,
  ERROR: 0x07,
  PING: 0x08,
  PONG: 0x09,
  NOTIFY_ACK: 0x0a,
  UNREGISTER: 0x0b,
  /**
   * Short-lived TURN credentials (shared-secret scheme), sent by the server right after REGISTERED with the same
   * request id. A separate message type rather than a trailing REGISTERED field: decoders reject trailing bytes and
   * drop unknown types, so old clients silently ignore this while their registration keeps working.
   */
  TURN_CREDENTIALS: 0x0c,
  /**
   * A peer's TCP sequence offer (wire/seq-offer.ts: its low-TTL SYN's ISN, options and endpoints) for the other peer
   * of a connection, or why it declines to take part (STUNT #1 / NATBlaster, Guha & Francis, IMC 2005 §3). Signed by
   * the sender; the server forwards these exact bytes, so the receiver checks the sender's signature itself.
   */
  SEQ_OFFER: 0x0d,
  /** The server's answer to SEQ_OFFER: whether it will spoof STUNT #1 SYN-ACKs once both offers are in. */
  SEQ_OFFER_RESULT: 0x0e,
  /** Signed: the key that holds (or reserves) a name gives it up now, instead of after the server's name hold. */
  RELEASE_NAME: 0x10,
  /** Signed: how one connection attempt went (NAT types, techniques, outcome, timings; never payload). */
  REPORT: 0x11,
  /** The server's answer to RELEASE_NAME and REPORT: 8 bytes, never larger than the request. */
  ACK: 0x12,
  /** Server → registered peer: this node is going away, register with another server now (drain on SIGTERM). */
  MOVE: 0x13,
} as const;

export const ErrorCode = {
  NOT_FOUND: 1,
  RATE_LIMITED: 2,
  BAD_SIGNATURE: 3,
  STALE: 4,
  MALFORMED: 5,
  NAME_TAKEN: 6,
  REPLAY: 7,
  SERVER_FULL: 8,
  UNSUPPORTED_VERSION: 9,
  /** The answer would be larger than the request (anti-amplification): pad the request (see MAX_*_BYTES). */
  TOO_SMALL: 10,
} as const;
export type ErrorCodeName = keyof typeof ErrorCode;
const ERROR_NAMES = new Map<number, ErrorCodeName>(Object.entries(ErrorCode).map(([k, v]) => [v, k as ErrorCodeName]));

/** How a peer should act on a CONNECT_NOTIFY (connection reversal, as in RFC 5128 §2.3). */
export type ConnectMode =
  | 'punch' // both sides probe each other's candidates at the same time
  | 'connect' // the other side is publicly reachable: just connect to it
  | 'await'; // you are reachable: the other side was told to connect to you (answer its checks)
const MODES: readonly ConnectMode[] = ['punch', 'connect', 'await'];

export type ConnectRole = 'initiator' | 'responder';
const ROLES: readonly ConnectRole[] = ['initiator', 'responder'];

const CANDIDATE_TYPES: readonly CandidateType[] = ['host', 'srflx', 'prflx', 'predicted', 'mapped', 'relay', 'icmp'];

export interface Endpoint {
  transport: 'udp' | 'tcp';
  address: string;
  port: number;
}

export type Target = { key: Buffer } | { name: string };

interface Header {
  requestId: number;
}

interface SignedFields {
  timestamp: number;
  nonce: Buffer;
  /** Present on decoded messages. */
  signature?: Buffer;
  /** The bytes the signature covers (a view into the decoded input), present on decoded messages. */
  signedPart?: Buffer;
}

export interface RegisterMessage extends Header, SignedFields {
  type: 'register';
  publicKey: Buffer;
  name?: string;
  /** The peer believes it is reachable from anywhere (public address or full-cone, e.g. from netcheck). */
  reachable: boolean;
  /** The peer's own measurement of its RTT to the server in ms, 0 when unknown. */
  rttMs: number;
  candidates: Candidate[];
  /**
   * Flag 0x02: the server announced relay credentials (REGISTERED's `credentialsFollow`) but none arrived: issue them
   * again, even on a refresh. Datagrams get lost; without this a lost TURN_CREDENTIALS left a peer without a relay
   * until its credentials were half spent (hours).
   */
  wantCredentials?: boolean;
}

export interface RegisteredMessage extends Header {
  type: 'registered';
  reflexive: Endpoint;
  refreshMs: number;
  ttlMs: number;
  serverTime: number;
  /** The server's judgement: flag set, or the reflexive address equals a host candidate. */
  reachable: boolean;
  /** Flag 0x02: a TURN_CREDENTIALS with this request id follows; a peer that does not get it asks again. */
  credentialsFollow?: boolean;
}

export interface TurnCredentialsMessage extends Header {
  type: 'turn-credentials';
  /** "expiry:user" (coturn `use-auth-secret` / draft-uberti-behave-turn-rest). */
  username: string;
  /** base64(HMAC-SHA1(secret, username)). */
  password: string;
  /** Lifetime in seconds from serverTime. */
  ttlSeconds: number;
  /** The TURN server's port on the rendezvous host (same host the client reached the rendezvous on). */
  port: number;
  /**
   * Its TURN-over-TLS port, when the server runs one (RFC 8656 §3.1). Optional trailing field, present only when
   * set: a decoder from before it rejects the message (trailing bytes) and the peer simply gets no credentials.
   */
  tlsPort?: number;
}

export interface LookupMessage extends Header {
  type: 'lookup';
  target: Target;
}

export interface LookupResultMessage extends Header {
  type: 'lookup-result';
  publicKey: Buffer;
  name?: string;
  reachable: boolean;
  expiresInMs: number;
  candidates: Candidate[];
}

export interface ConnectMessage extends Header, SignedFields {
  type: 'connect';
  publicKey: Buffer;
  reachable: boolean;
  target: Target;
  connectionId: Buffer;
  rttMs: number;
  candidates: Candidate[];
}

export interface ConnectNotifyMessage extends Header {
  type: 'connect-notify';
  connectionId: Buffer;
  role: ConnectRole;
  mode: ConnectMode;
  peerKey: Buffer;
  peerName?: string;
  /** Start probing this many ms after receipt (0: at once). */
  startDelayMs: number;
  serverTime: number;
  candidates: Candidate[];
}

export interface ErrorMessage extends Header {
  type: 'error';
  code: ErrorCodeName;
  /** The MessageType value of the request this answers (0 when unknown). */
  inResponseTo: number;
  retryAfterMs: number;
  message: string;
}

export interface PingMessage extends Header {
  type: 'ping';
  time: number;
}

export interface PongMessage extends Header {
  type: 'pong';
  echo: number;
  time: number;
}

export interface NotifyAckMessage extends Header {
  type: 'notify-ack';
  connectionId: Buffer;
}

export interface UnregisterMessage extends Header, SignedFields {
  type: 'unregister';
  publicKey: Buffer;
}

/** Exactly one of `offer` and `decline` is present. */
export interface SeqOfferMessage extends Header, SignedFields {
  type: 'seq-offer';
  /** The sender. */
  publicKey: Buffer;
  connectionId: Buffer;
  /** The other peer of the connection, whom this offer is for. */
  peerKey: Buffer;
  /** SEQ_OFFER_BYTES bytes (wire/seq-offer.ts), opaque to this codec. */
  offer?: Buffer;
  /** Why the sender will not take part (utf8, 1..MAX_ERROR_TEXT_BYTES bytes). */
  decline?: string;
}

export interface SeqOfferResultMessage extends Header {
  type: 'seq-offer-result';
  connectionId: Buffer;
  /** The server will send STUNT #1 spoofed SYN-ACKs once both offers of the connection are in. */
  spoofing: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// Name release, outcome reports, acknowledgements and moves (operator issue 19; names bound to keys, issue 18).

/**
 * RELEASE_NAME (0x10), signed:
 *   header | public key (32) | name (u8 length, 1..63 bytes [a-z0-9._-]) | timestamp u64 | nonce (16) | signature (64)
 * Answered with ACK (released: 1 when the key held the name, 0 when it did not) or ERROR.
 */
export interface ReleaseNameMessage extends Header, SignedFields {
  type: 'release-name';
  publicKey: Buffer;
  name: string;
}

/** NAT types in reports (src/discovery/classify.ts ClassicNatType); code = index, 0 unknown. */
export const REPORT_NAT_TYPES = [
  'unknown',
  'open-internet',
  'full-cone',
  'restricted-cone',
  'port-restricted-cone',
  'symmetric',
  'symmetric-udp-firewall',
  'udp-blocked',
] as const;
export type ReportNatType = (typeof REPORT_NAT_TYPES)[number];

/** Techniques in reports; code = index, 0 for any technique this list does not name (new ones: append). */
export const REPORT_TECHNIQUES = [
  'other',
  'lan',
  'udp',
  'reversal',
  'udp-predict',
  'birthday',
  'hardnat',
  'mapped',
  'relay',
  'peer-relay',
  'icmp',
  'tcp-p2pnat',
  'tcp-stunt1',
  'tcp-natblaster',
] as const;
export type ReportTechnique = (typeof REPORT_TECHNIQUES)[number];

/** Why a technique failed; code = index. */
export const REPORT_FAILURES = [
  'other',
  'timeout',
  'refused',
  'no-candidates',
  'blocked',
  'handshake',
  'aborted',
  'relay-unavailable',
  'not-found',
] as const;
export type ReportFailure = (typeof REPORT_FAILURES)[number];

export const MAX_REPORT_TECHNIQUES = 16;
export const MAX_REPORT_FAILURES = 8;
/** "unknown" for the u32 timings. */
export const REPORT_NO_TIME = 0xffffffff;

/**
 * REPORT (0x11), signed, at most 7 + 32 + 16 + 24 + 14 + 17 + 17 + 64 = 191 bytes:
 *   header | public key (32) | connection id (16) | timestamp u64 | nonce (16)
 *   | role u8 (0 initiator, 1 responder) | result u8 (0 connected, 1 failed, 2 aborted) | path u8 (0 none, 1 direct, 2 relay)
 *   | local NAT u8 | peer NAT u8 (REPORT_NAT_TYPES) | winner u8 (REPORT_TECHNIQUES, 0 when none)
 *   | time to connect u32 ms | time to first byte u32 ms (0xFFFFFFFF: unknown)
 *   | tried u8 count (≤ 16), then one technique u8 each
 *   | failures u8 count (≤ 8), then technique u8 + reason u8 (REPORT_FAILURES) each
 *   | signature (64)
 * Only enumerations and numbers: a report can carry no payload, address or free text. Answered with ACK.
 */
export interface ReportMessage extends Header, SignedFields {
  type: 'report';
  publicKey: Buffer;
  connectionId: Buffer;
  role: ConnectRole;
  result: 'connected' | 'failed' | 'aborted';
  path: 'none' | 'direct' | 'relay';
  localNat: ReportNatType;
  peerNat: ReportNatType;
  winner: ReportTechnique | undefined;
  timeToConnectMs: number | undefined;
  timeToFirstByteMs: number | undefined;
  tried: ReportTechnique[];
  failures: Array<{ technique: ReportTechnique; reason: ReportFailure }>;
}

/** ACK (0x12): header | status u8. */
export interface AckMessage extends Header {
  type: 'ack';
  /** RELEASE_NAME: 1 released, 0 nothing to release. REPORT: 1 counted, 0 not counted (reports off, or too many). */
  status: number;
}

/**
 * MOVE (0x13), server → peer: header (request id = the peer's latest REGISTER, so only the server that registered
 * it can make it move; an off-path sender would have to guess 32 bits) | reason u8 (0 draining) | retry-after u32 ms.
 * The peer registers with its next server at once; the reason is informational.
 */
export interface MoveMessage extends Header {
  type: 'move';
  reason: 'draining';
  /** How long this server stays away, when known (0: unknown). */
  retryAfterMs: number;
}

const RESULTS: readonly ReportMessage['result'][] = ['connected', 'failed', 'aborted'];
const PATHS: readonly ReportMessage['path'][] = ['none', 'direct', 'relay'];
const MOVE_REASONS: readonly MoveMessage['reason'][] = ['draining'];

function reportCode<T extends string>(list: readonly T[], value: T | undefined): number {
  const i = value === undefined ? 0 : list.indexOf(value);
  return i < 0 ? 0 : i;
}

export type RendezvousMessage =
  | ReleaseNameMessage
  | ReportMessage
  | AckMessage
  | MoveMessage
  | RegisterMessage
  | RegisteredMessage
  | TurnCredentialsMessage
  | LookupMessage
  | LookupResultMessage
  | ConnectMessage
  | ConnectNotifyMessage
  | ErrorMessage
  | PingMessage
  | PongMessage
  | NotifyAckMessage
  | UnregisterMessage
  | SeqOfferMessage
  | SeqOfferResultMessage;

export type SignedMessage =
  RegisterMessage | ConnectMessage | UnregisterMessage | SeqOfferMessage | ReleaseNameMessage | ReportMessage;

function decodeError(what: string): NatpunchError {
  return new NatpunchError('RENDEZVOUS_DECODE', `malformed rendezvous message: ${what}`);
}

function encodeError(what: string): NatpunchError {
  return new NatpunchError('BAD_ARGUMENT', `cannot encode rendezvous message: ${what}`);
}

// ---------------------------------------------------------------------------------------------------------------
// IP addresses: family byte 4 or 6, then 4 or 16 bytes in network order.

export function isEncodableAddress(address: string): boolean {
  return isIPv4(address) || (isIPv6(address) && !address.includes('%'));
}

// ---------------------------------------------------------------------------------------------------------------

class Writer {
  #buf = Buffer.alloc(MAX_MESSAGE_BYTES);
  #pos = 0;

  #room(n: number): void {
    if (this.#pos + n > MAX_MESSAGE_BYTES) throw encodeError(`longer than ${MAX_MESSAGE_BYTES} bytes`);
  }
  u8(v: number): void {
    this.#room(1);
    this.#buf.writeUInt8(v, this.#pos);
    this.#pos += 1;
  }
  u16(v: number): void {
    this.#room(2);
    this.#buf.writeUInt16BE(v, this.#pos);
    this.#pos += 2;
  }
  u32(v: number): void {
    this.#room(4);
    this.#buf.writeUInt32BE(v, this.#pos);
    this.#pos += 4;
  }
  u64(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw encodeError(`bad 64-bit value ${v}`);
    this.#room(8);
    this.#buf.writeBigUInt64BE(BigInt(v), this.#pos);
    this.#pos += 8;
  }
  bytes(b: Uint8Array, length: number, what: string): void {
    if (b.length !== length) throw encodeError(`${what} must be ${length} bytes`);
    this.#room(length);
    this.#buf.set(b, this.#pos);
    this.#pos += length;
  }
  shortString(text: string, max: number): void {
    const b = Buffer.from(text, 'utf8');
    const n = Math.min(b.length, max);
    this.u8(n);
    this.#room(n);
    b.copy(this.#buf, this.#pos, 0, n);
    this.#pos += n;
  }
  get length(): number {
    return this.#pos;
  }
  /** A copy of what was written (the working buffer is reused by nobody, but keep the result exact-sized). */
  finish(): Buffer {
    return Buffer.from(this.#buf.subarray(0, this.#pos));
  }
  view(): Buffer {
    return this.#buf.subarray(0, this.#pos);
  }
}

class Reader {
  #pos = 0;
  constructor(readonly buf: Buffer) {}

  #need(n: number, what: string): void {
    if (this.#pos + n > this.buf.length) throw decodeError(`truncated ${what}`);
  }
  u8(what: string): number {
    this.#need(1, what);
    return this.buf[this.#pos++]!;
  }
  u16(what: string): number {
    this.#need(2, what);
    const v = this.buf.readUInt16BE(this.#pos);
    this.#pos += 2;
    return v;
  }
  u32(what: string): number {
    this.#need(4, what);
    const v = this.buf.readUInt32BE(this.#pos);
    this.#pos += 4;
    return v;
  }
  u64(what: string): number {
    this.#need(8, what);
    const v = this.buf.readBigUInt64BE(this.#pos);
    this.#pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw decodeError(`${what} out of range`);
    return Number(v);
  }
  /** A view into the input; callers copy what outlives the packet. */
  bytes(n: number, what: string): Buffer {
    this.#need(n, what);
    const v = this.buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return v;
  }
  get pos(): number {
    return this.#pos;
  }
  get remaining(): number {
    return this.buf.length - this.#pos;
  }
}

function writeAddress(w: Writer, address: string): void {
  if (isIPv4(address)) {
    w.u8(4);
    for (const b of parseIPv4(address)!) w.u8(b);
  } else if (isIPv6(address) && !address.includes('%')) {
    const bytes = parseIPv6(address);
    if (!bytes) throw encodeError(`not an IP address: "${address.slice(0, 60)}"`);
    w.u8(6);
    for (const b of bytes) w.u8(b);
  } else {
    throw encodeError(`not an IP address: "${address.slice(0, 60)}"`);
  }
}

function readAddress(r: Reader): string {
  const family = r.u8('address family');
  if (family === 4) return formatIPv4(r.bytes(4, 'IPv4 address'));
  if (family === 6) return formatIPv6(r.bytes(16, 'IPv6 address'));
  throw decodeError(`address family ${family}`);
}

function writePort(w: Writer, port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw encodeError(`bad port ${port}`);
  w.u16(port);
}

function writeTransport(w: Writer, t: 'udp' | 'tcp'): void {
  if (t !== 'udp' && t !== 'tcp') throw encodeError(`bad transport ${String(t)}`);
  w.u8(t === 'udp' ? 0 : 1);
}

function readTransport(r: Reader): 'udp' | 'tcp' {
  const t = r.u8('transport');
  if (t === 0) return 'udp';
  if (t === 1) return 'tcp';
  throw decodeError(`transport ${t}`);
}

function writeEndpoint(w: Writer, e: Endpoint): void {
  writeTransport(w, e.transport);
  writeAddress(w, e.address);
  writePort(w, e.port);
}

function readEndpoint(r: Reader): Endpoint {
  const transport = readTransport(r);
  const address = readAddress(r);
  const port = r.u16('port');
  return { transport, address, port };
}

// Candidate: type u8 | transport u8 | address | port u16 | priority u32 (RFC 8445 §5.1.2 priority, fits 32 bits)
function writeCandidates(w: Writer, list: readonly Candidate[]): void {
  if (list.length > MAX_CANDIDATES) throw encodeError(`more than ${MAX_CANDIDATES} candidates`);
  w.u8(list.length);
  for (const c of list) {
    const t = CANDIDATE_TYPES.indexOf(c.type);
    if (t < 0) throw encodeError(`candidate type ${String(c.type)}`);
    w.u8(t);
    writeTransport(w, c.transport);
    writeAddress(w, c.address);
    writePort(w, c.port);
    if (!Number.isInteger(c.priority) || c.priority < 0 || c.priority > 0xffffffff)
      throw encodeError(`candidate priority ${c.priority}`);
    w.u32(c.priority);
  }
}

function readCandidates(r: Reader): Candidate[] {
  const n = r.u8('candidate count');
  if (n > MAX_CANDIDATES) throw decodeError(`${n} candidates (max ${MAX_CANDIDATES})`);
  const out: Candidate[] = [];
  for (let i = 0; i < n; i++) {
    const t = r.u8('candidate type');
    const type = CANDIDATE_TYPES[t];
    if (!type) throw decodeError(`candidate type ${t}`);
    const transport = readTransport(r);
    const address = readAddress(r);
    const port = r.u16('candidate port');
    const priority = r.u32('candidate priority');
    out.push({ type, transport, address, port, priority });
  }
  return out;
}

function writeName(w: Writer, name: string | undefined): void {
  if (name === undefined || name === '') return w.u8(0);
  if (!isValidName(name)) throw encodeError(`name "${name.slice(0, 80)}" is not [a-z0-9._-]{1,63}`);
  w.shortString(name, MAX_NAME_LENGTH);
}

function readName(r: Reader): string | undefined {
  const n = r.u8('name length');
  if (n === 0) return undefined;
  if (n > MAX_NAME_LENGTH) throw decodeError(`name longer than ${MAX_NAME_LENGTH}`);
  const name = r.bytes(n, 'name').toString('latin1');
  if (!isValidName(name)) throw decodeError('name has characters outside [a-z0-9._-]');
  return name;
}

function writeTarget(w: Writer, target: Target): void {
  if ('key' in target) {
    w.u8(1);
    w.bytes(target.key, PUBLIC_KEY_BYTES, 'target key');
  } else {
    w.u8(2);
    if (!target.name) throw encodeError('empty target name');
    writeName(w, target.name);
  }
}

function readTarget(r: Reader): Target {
  const kind = r.u8('target kind');
  if (kind === 1) return { key: Buffer.from(r.bytes(PUBLIC_KEY_BYTES, 'target key')) };
  if (kind === 2) {
    const name = readName(r);
    if (!name) throw decodeError('empty target name');
    return { name };
  }
  throw decodeError(`target kind ${kind}`);
}

function readFlags(r: Reader, allowed: number): number {
  const f = r.u8('flags');
  if (f & ~allowed) throw decodeError(`unknown flags 0x${f.toString(16)}`);
  return f;
}

function readEnum<T>(r: Reader, values: readonly T[], what: string): T {
  const v = r.u8(what);
  const out = values[v];
  if (out === undefined) throw decodeError(`${what} ${v}`);
  return out;
}

function checkU(v: number, max: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw encodeError(`${what} ${v} out of range`);
  return v;
}

const TYPE_CODE: Record<RendezvousMessage['type'], number> = {
  register: MessageType.REGISTER,
  registered: MessageType.REGISTERED,
  lookup: MessageType.LOOKUP,
  'lookup-result': MessageType.LOOKUP_RESULT,
  connect: MessageType.CONNECT,
  'connect-notify': MessageType.CONNECT_NOTIFY,
  error: MessageType.ERROR,
  ping: MessageType.PING,
  pong: MessageType.PONG,
  'notify-ack': MessageType.NOTIFY_ACK,
  unregister: MessageType.UNREGISTER,
  'turn-credentials': MessageType.TURN_CREDENTIALS,
  'seq-offer': MessageType.SEQ_OFFER,
  'seq-offer-result': MessageType.SEQ_OFFER_RESULT,
  'release-name': MessageType.RELEASE_NAME,
  report: MessageType.REPORT,
  ack: MessageType.ACK,
  move: MessageType.MOVE,
};

/** Requests that may carry zero padding (anti-amplification, see MAX_LOOKUP_RESULT_BYTES). */
const PADDED_TYPES: ReadonlySet<number> = new Set([
  MessageType.LOOKUP,
  MessageType.PING,
  MessageType.REGISTER,
  MessageType.CONNECT,
  MessageType.UNREGISTER,
  MessageType.SEQ_OFFER,
]);

/** Consumes the zero padding at the end of a request; a non-zero byte there is malformed. */
function skipPadding(r: Reader): void {
  const n = r.remaining;
  if (n <= 0) return;
  const pad = r.bytes(n, 'padding');
  for (let i = 0; i < pad.length; i++) if (pad[i] !== 0) throw decodeError('non-zero padding');
}

/** SEQ_OFFER payload kinds. */
const SEQ_KIND_OFFER = 1;
const SEQ_KIND_DECLINE = 2;
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Fields a caller supplies to encode a signed message; timestamp and nonce are filled in when absent. */
export type Unsigned<T extends SignedMessage> = Omit<T, 'signature' | 'signedPart' | 'timestamp' | 'nonce'> &
  Partial<Pick<T, 'timestamp' | 'nonce'>>;

export type EncodableMessage =
  | Unsigned<RegisterMessage>
  | Unsigned<ConnectMessage>
  | Unsigned<UnregisterMessage>
  | Unsigned<SeqOfferMessage>
  | Unsigned<ReleaseNameMessage>
  | Unsigned<ReportMessage>
  | Exclude<RendezvousMessage, SignedMessage>;

/**
 * Encodes a message. REGISTER, CONNECT, UNREGISTER and SEQ_OFFER need the sender's secret key and are signed here
 * (a fresh timestamp and nonce are used unless given).
 */
export function encodeRendezvous(
  msg: EncodableMessage,
  secretKey?: Uint8Array,
  options: { padTo?: number } = {},
): Buffer {
  const w = new Writer();
  const code = TYPE_CODE[msg.type];
  if (code === undefined) throw encodeError(`unknown type ${String((msg as { type: unknown }).type)}`);
  w.u8(FirstByte.RENDEZVOUS);
  w.u8(RENDEZVOUS_VERSION);
  w.u8(code);
  w.u32(checkU(msg.requestId, 0xffffffff, 'request id'));
  let signed = false;
  const signedFields = (m: { timestamp?: number; nonce?: Buffer }) => {
    w.u64(m.timestamp ?? Date.now());
    w.bytes(m.nonce ?? randomBytes(NONCE_BYTES), NONCE_BYTES, 'nonce');
    signed = true;
  };
  switch (msg.type) {
    case 'register':
      w.u8((msg.reachable ? 1 : 0) | (msg.wantCredentials ? 2 : 0));
      w.bytes(msg.publicKey, PUBLIC_KEY_BYTES, 'public key');
      writeName(w, msg.name);
      signedFields(msg);
      w.u16(checkU(Math.round(msg.rttMs), 0xffff, 'rtt'));
      writeCandidates(w, msg.candidates);
      break;
    case 'registered':
      writeEndpoint(w, msg.reflexive);
      w.u32(checkU(msg.refreshMs, 0xffffffff, 'refresh interval'));
      w.u32(checkU(msg.ttlMs, 0xffffffff, 'ttl'));
      w.u64(msg.serverTime);
      w.u8((msg.reachable ? 1 : 0) | (msg.credentialsFollow ? 2 : 0));
      break;
    case 'turn-credentials':
      if (
        Buffer.byteLength(msg.username) > MAX_TURN_CREDENTIAL_BYTES ||
        Buffer.byteLength(msg.password) > MAX_TURN_CREDENTIAL_BYTES
      ) {
        throw encodeError('turn credential too long');
      }
      w.shortString(msg.username, MAX_TURN_CREDENTIAL_BYTES);
      w.shortString(msg.password, MAX_TURN_CREDENTIAL_BYTES);
      w.u32(checkU(msg.ttlSeconds, 0xffffffff, 'turn ttl'));
      w.u16(checkU(msg.port, 0xffff, 'turn port'));
      if (msg.tlsPort) w.u16(checkU(msg.tlsPort, 0xffff, 'turn tls port'));
      break;
    case 'lookup':
      writeTarget(w, msg.target);
      break;
    case 'lookup-result':
      w.bytes(msg.publicKey, PUBLIC_KEY_BYTES, 'public key');
      writeName(w, msg.name);
      w.u8(msg.reachable ? 1 : 0);
      w.u32(checkU(msg.expiresInMs, 0xffffffff, 'expiry'));
      writeCandidates(w, msg.candidates);
      break;
    case 'connect':
      w.u8(msg.reachable ? 1 : 0);
      w.bytes(msg.publicKey, PUBLIC_KEY_BYTES, 'public key');
      writeTarget(w, msg.target);
      w.bytes(msg.connectionId, CONNECTION_ID_BYTES, 'connection id');
      signedFields(msg);
      w.u16(checkU(Math.round(msg.rttMs), 0xffff, 'rtt'));
      writeCandidates(w, msg.candidates);
      break;
    case 'connect-notify':
      w.bytes(msg.connectionId, CONNECTION_ID_BYTES, 'connection id');
      w.u8(ROLES.indexOf(msg.role));
      w.u8(MODES.indexOf(msg.mode));
      w.bytes(msg.peerKey, PUBLIC_KEY_BYTES, 'peer key');
      writeName(w, msg.peerName);
      w.u16(checkU(Math.round(msg.startDelayMs), 0xffff, 'start delay'));
      w.u64(msg.serverTime);
      writeCandidates(w, msg.candidates);
      break;
    case 'error': {
      const c = ErrorCode[msg.code];
      if (c === undefined) throw encodeError(`error code ${String(msg.code)}`);
      w.u8(c);
      w.u8(checkU(msg.inResponseTo, 0xff, 'inResponseTo'));
      w.u32(checkU(msg.retryAfterMs, 0xffffffff, 'retry after'));
      w.shortString(msg.message, MAX_ERROR_TEXT_BYTES);
      break;
    }
    case 'ping':
      w.u64(msg.time);
      break;
    case 'pong':
      w.u64(msg.echo);
      w.u64(msg.time);
      break;
    case 'notify-ack':
      w.bytes(msg.connectionId, CONNECTION_ID_BYTES, 'connection id');
      break;
    case 'unregister':
      w.bytes(msg.publicKey, PUBLIC_KEY_BYTES, 'public key');
      signedFields(msg);
      break;
    // publicKey | connection id | peer key | timestamp | nonce | kind u8 | offer (32) or decline (u8 length, utf8)
    case 'seq-offer': {
      w.bytes(msg.publicKey, PUBLIC_KEY_BYTES, 'public key');
      w.bytes(msg.connectionId, CONNECTION_ID_BYTES, 'connection id');
      w.bytes(msg.peerKey, PUBLIC_KEY_BYTES, 'peer key');
      signedFields(msg);
      if ((msg.offer === undefined) === (msg.decline === undefined))
        throw encodeError('seq-offer needs exactly one of offer and decline');
      if (msg.offer !== undefined) {
        w.u8(SEQ_KIND_OFFER);
        w.bytes(msg.offer, SEQ_OFFER_BYTES, 'sequence offer');
      } else {
        const n = Buffer.byteLength(msg.decline!, 'utf8');
        if (n < 1 || n > MAX_ERROR_TEXT_BYTES)
          throw encodeError(`decline text must be 1..${MAX_ERROR_TEXT_BYTES} bytes`);
        w.u8(SEQ_KIND_DECLINE);
        w.shortString(msg.decline!, MAX_ERROR_TEXT_BYTES);
      }
      break;
    }
    case 'seq-offer-result':
      w.bytes(msg.connectionId, CONNECTION_ID_BYTES, 'connection id');
      w.u8(msg.spoofing ? 1 : 0);
      break;
    case 'release-name':
      w.bytes(msg.publicKey, PUBLIC_KEY_BYTES, 'public key');
      if (!msg.name) throw encodeError('release-name needs a name');
      writeName(w, msg.name);
      signedFields(msg);
      break;
    case 'report': {
      w.bytes(msg.publicKey, PUBLIC_KEY_BYTES, 'public key');
      w.bytes(msg.connectionId, CONNECTION_ID_BYTES, 'connection id');
      signedFields(msg);
      w.u8(reportCode(ROLES, msg.role));
      w.u8(reportCode(RESULTS, msg.result));
      w.u8(reportCode(PATHS, msg.path));
      w.u8(reportCode(REPORT_NAT_TYPES, msg.localNat));
      w.u8(reportCode(REPORT_NAT_TYPES, msg.peerNat));
      w.u8(reportCode(REPORT_TECHNIQUES, msg.winner));
      const ms = (v: number | undefined) =>
        v === undefined ? REPORT_NO_TIME : Math.min(REPORT_NO_TIME - 1, Math.max(0, Math.round(v)));
      w.u32(ms(msg.timeToConnectMs));
      w.u32(ms(msg.timeToFirstByteMs));
      const tried = msg.tried.slice(0, MAX_REPORT_TECHNIQUES);
      w.u8(tried.length);
      for (const t of tried) w.u8(reportCode(REPORT_TECHNIQUES, t));
      const failures = msg.failures.slice(0, MAX_REPORT_FAILURES);
      w.u8(failures.length);
      for (const f of failures) {
        w.u8(reportCode(REPORT_TECHNIQUES, f.technique));
        w.u8(reportCode(REPORT_FAILURES, f.reason));
      }
      break;
    }
    case 'ack':
      w.u8(checkU(msg.status, 0xff, 'ack status'));
      break;
    case 'move':
      w.u8(reportCode(MOVE_REASONS, msg.reason));
      w.u32(checkU(msg.retryAfterMs, 0xffffffff, 'retry after'));
      break;
  }
  if (signed) {
    if (!secretKey) throw encodeError(`${msg.type} must be signed: pass the secret key`);
    // RFC 8032 §5.1.6: Ed25519 over the context and every byte before the signature.
    const sig = sign(Buffer.concat([SIGNATURE_CONTEXT, w.view()]), secretKey);
    w.bytes(sig, SIGNATURE_BYTES, 'signature');
  }
  if (options.padTo !== undefined) {
    // Zero padding at the very end (after the signature: it only adds bulk, there is nothing in it to protect).
    if (!PADDED_TYPES.has(code)) throw encodeError(`${msg.type} cannot be padded`);
    const zeros = Math.min(options.padTo, MAX_MESSAGE_BYTES) - w.length;
    for (let i = 0; i < zeros; i++) w.u8(0);
  }
  return w.finish();
}

/**
 * Decodes one message. Anything that is not a complete, well-formed version-1 message throws
 * NatpunchError('RENDEZVOUS_DECODE'); nothing else is ever thrown. Byte fields are views into `input` except keys,
 * nonces and connection ids, which are copied (they outlive the packet in registries and caches).
 */
export function decodeRendezvous(input: Uint8Array): RendezvousMessage {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (buf.length > MAX_MESSAGE_BYTES) throw decodeError(`longer than ${MAX_MESSAGE_BYTES} bytes`);
  const r = new Reader(buf);
  if (r.u8('first byte') !== FirstByte.RENDEZVOUS) throw decodeError('first byte is not 0xF0');
  const version = r.u8('version');
  if (version !== RENDEZVOUS_VERSION) {
    throw new NatpunchError('RENDEZVOUS_DECODE', `unsupported rendezvous version ${version}`, { details: { version } });
  }
  const type = r.u8('type');
  const requestId = r.u32('request id');
  const signedTail = (start: { timestamp: number; nonce: Buffer }) => {
    const signedPart = buf.subarray(0, r.pos);
    const signature = r.bytes(SIGNATURE_BYTES, 'signature');
    return { ...start, signedPart, signature };
  };
  let msg: RendezvousMessage;
  switch (type) {
    case MessageType.REGISTER: {
      const flags = readFlags(r, 3);
      const publicKey = Buffer.from(r.bytes(PUBLIC_KEY_BYTES, 'public key'));
      const name = readName(r);
      const timestamp = r.u64('timestamp');
      const nonce = Buffer.from(r.bytes(NONCE_BYTES, 'nonce'));
      const rttMs = r.u16('rtt');
      const candidates = readCandidates(r);
      const tail = signedTail({ timestamp, nonce });
      msg = { type: 'register', requestId, reachable: (flags & 1) !== 0, publicKey, rttMs, candidates, ...tail };
      if (name !== undefined) msg.name = name;
      if (flags & 2) msg.wantCredentials = true;
      break;
    }
    case MessageType.REGISTERED: {
      const reflexive = readEndpoint(r);
      const refreshMs = r.u32('refresh interval');
      const ttlMs = r.u32('ttl');
      const serverTime = r.u64('server time');
      const flags = readFlags(r, 3);
      msg = { type: 'registered', requestId, reflexive, refreshMs, ttlMs, serverTime, reachable: (flags & 1) !== 0 };
      if (flags & 2) msg.credentialsFollow = true;
      break;
    }
    case MessageType.TURN_CREDENTIALS: {
      const username = r.bytes(r.u8('turn username length'), 'turn username').toString('utf8');
      const password = r.bytes(r.u8('turn password length'), 'turn password').toString('utf8');
      const ttlSeconds = r.u32('turn ttl');
      const port = r.u16('turn port');
      const tlsPort = r.remaining > 0 ? r.u16('turn tls port') : undefined;
      if (!username || !password || port === 0 || tlsPort === 0) throw decodeError('empty turn credentials');
      msg = {
        type: 'turn-credentials',
        requestId,
        username,
        password,
        ttlSeconds,
        port,
        ...(tlsPort ? { tlsPort } : {}),
      };
      break;
    }
    case MessageType.LOOKUP:
      msg = { type: 'lookup', requestId, target: readTarget(r) };
      break;
    case MessageType.LOOKUP_RESULT: {
      const publicKey = Buffer.from(r.bytes(PUBLIC_KEY_BYTES, 'public key'));
      const name = readName(r);
      const flags = readFlags(r, 1);
      const expiresInMs = r.u32('expiry');
      const candidates = readCandidates(r);
      msg = { type: 'lookup-result', requestId, publicKey, reachable: (flags & 1) !== 0, expiresInMs, candidates };
      if (name !== undefined) msg.name = name;
      break;
    }
    case MessageType.CONNECT: {
      const flags = readFlags(r, 1);
      const publicKey = Buffer.from(r.bytes(PUBLIC_KEY_BYTES, 'public key'));
      const target = readTarget(r);
      const connectionId = Buffer.from(r.bytes(CONNECTION_ID_BYTES, 'connection id'));
      const timestamp = r.u64('timestamp');
      const nonce = Buffer.from(r.bytes(NONCE_BYTES, 'nonce'));
      const rttMs = r.u16('rtt');
      const candidates = readCandidates(r);
      const tail = signedTail({ timestamp, nonce });
      msg = {
        type: 'connect',
        requestId,
        reachable: (flags & 1) !== 0,
        publicKey,
        target,
        connectionId,
        rttMs,
        candidates,
        ...tail,
      };
      break;
    }
    case MessageType.CONNECT_NOTIFY: {
      const connectionId = Buffer.from(r.bytes(CONNECTION_ID_BYTES, 'connection id'));
      const role = readEnum(r, ROLES, 'role');
      const mode = readEnum(r, MODES, 'mode');
      const peerKey = Buffer.from(r.bytes(PUBLIC_KEY_BYTES, 'peer key'));
      const peerName = readName(r);
      const startDelayMs = r.u16('start delay');
      const serverTime = r.u64('server time');
      const candidates = readCandidates(r);
      msg = {
        type: 'connect-notify',
        requestId,
        connectionId,
        role,
        mode,
        peerKey,
        startDelayMs,
        serverTime,
        candidates,
      };
      if (peerName !== undefined) msg.peerName = peerName;
      break;
    }
    case MessageType.ERROR: {
      const c = r.u8('error code');
      const code = ERROR_NAMES.get(c);
      if (!code) throw decodeError(`error code ${c}`);
      const inResponseTo = r.u8('inResponseTo');
      const retryAfterMs = r.u32('retry after');
      const n = r.u8('error text length');
      if (n > MAX_ERROR_TEXT_BYTES) throw decodeError('error text too long');
      const message = r.bytes(n, 'error text').toString('utf8');
      msg = { type: 'error', requestId, code, inResponseTo, retryAfterMs, message };
      break;
    }
    case MessageType.PING:
      msg = { type: 'ping', requestId, time: r.u64('time') };
      break;
    case MessageType.PONG: {
      const echo = r.u64('echo');
      msg = { type: 'pong', requestId, echo, time: r.u64('time') };
      break;
    }
    case MessageType.NOTIFY_ACK:
      msg = { type: 'notify-ack', requestId, connectionId: Buffer.from(r.bytes(CONNECTION_ID_BYTES, 'connection id')) };
      break;
    case MessageType.UNREGISTER: {
      const publicKey = Buffer.from(r.bytes(PUBLIC_KEY_BYTES, 'public key'));
      const timestamp = r.u64('timestamp');
      const nonce = Buffer.from(r.bytes(NONCE_BYTES, 'nonce'));
      msg = { type: 'unregister', requestId, publicKey, ...signedTail({ timestamp, nonce }) };
      break;
    }
    case MessageType.SEQ_OFFER: {
      const publicKey = Buffer.from(r.bytes(PUBLIC_KEY_BYTES, 'public key'));
      const connectionId = Buffer.from(r.bytes(CONNECTION_ID_BYTES, 'connection id'));
      const peerKey = Buffer.from(r.bytes(PUBLIC_KEY_BYTES, 'peer key'));
      const timestamp = r.u64('timestamp');
      const nonce = Buffer.from(r.bytes(NONCE_BYTES, 'nonce'));
      const kind = r.u8('seq-offer kind');
      let payload: { offer: Buffer } | { decline: string };
      if (kind === SEQ_KIND_OFFER) {
        payload = { offer: Buffer.from(r.bytes(SEQ_OFFER_BYTES, 'sequence offer')) };
      } else if (kind === SEQ_KIND_DECLINE) {
        const n = r.u8('decline length');
        if (n < 1 || n > MAX_ERROR_TEXT_BYTES) throw decodeError(`decline text of ${n} bytes`);
        const text = r.bytes(n, 'decline text');
        let decline: string;
        try {
          decline = utf8Strict.decode(text);
        } catch {
          throw decodeError('decline text is not UTF-8');
        }
        payload = { decline };
      } else {
        throw decodeError(`seq-offer kind ${kind}`);
      }
      const tail = signedTail({ timestamp, nonce });
      msg = { type: 'seq-offer', requestId, publicKey, connectionId, peerKey, ...payload, ...tail };
      break;
    }
    case MessageType.SEQ_OFFER_RESULT: {
      const connectionId = Buffer.from(r.bytes(CONNECTION_ID_BYTES, 'connection id'));
      const flags = readFlags(r, 1);
      msg = { type: 'seq-offer-result', requestId, connectionId, spoofing: (flags & 1) !== 0 };
      break;
    }
    case MessageType.RELEASE_NAME: {
      const publicKey = Buffer.from(r.bytes(PUBLIC_KEY_BYTES, 'public key'));
      const name = readName(r);
      if (!name) throw decodeError('release-name without a name');
      const timestamp = r.u64('timestamp');
      const nonce = Buffer.from(r.bytes(NONCE_BYTES, 'nonce'));
      msg = { type: 'release-name', requestId, publicKey, name, ...signedTail({ timestamp, nonce }) };
      break;
    }
    case MessageType.REPORT: {
      const publicKey = Buffer.from(r.bytes(PUBLIC_KEY_BYTES, 'public key'));
      const connectionId = Buffer.from(r.bytes(CONNECTION_ID_BYTES, 'connection id'));
      const timestamp = r.u64('timestamp');
      const nonce = Buffer.from(r.bytes(NONCE_BYTES, 'nonce'));
      const role = readEnum(r, ROLES, 'report role');
      const result = readEnum(r, RESULTS, 'report result');
      const path = readEnum(r, PATHS, 'report path');
      const localNat = readEnum(r, REPORT_NAT_TYPES, 'report NAT type');
      const peerNat = readEnum(r, REPORT_NAT_TYPES, 'report NAT type');
      const winnerCode = r.u8('report winner');
      const winner = REPORT_TECHNIQUES[winnerCode];
      if (winner === undefined) throw decodeError(`report technique ${winnerCode}`);
      const time = (v: number) => (v === REPORT_NO_TIME ? undefined : v);
      const timeToConnectMs = time(r.u32('time to connect'));
      const timeToFirstByteMs = time(r.u32('time to first byte'));
      const nTried = r.u8('tried count');
      if (nTried > MAX_REPORT_TECHNIQUES) throw decodeError(`${nTried} techniques (max ${MAX_REPORT_TECHNIQUES})`);
      const tried: ReportTechnique[] = [];
      for (let i = 0; i < nTried; i++) tried.push(readEnum(r, REPORT_TECHNIQUES, 'report technique'));
      const nFailures = r.u8('failure count');
      if (nFailures > MAX_REPORT_FAILURES) throw decodeError(`${nFailures} failures (max ${MAX_REPORT_FAILURES})`);
      const failures: ReportMessage['failures'] = [];
      for (let i = 0; i < nFailures; i++) {
        const technique = readEnum(r, REPORT_TECHNIQUES, 'report technique');
        failures.push({ technique, reason: readEnum(r, REPORT_FAILURES, 'failure reason') });
      }
      const tail = signedTail({ timestamp, nonce });
      msg = {
        type: 'report',
        requestId,
        publicKey,
        connectionId,
        role,
        result,
        path,
        localNat,
        peerNat,
        winner: winnerCode === 0 ? undefined : winner,
        timeToConnectMs,
        timeToFirstByteMs,
        tried,
        failures,
        ...tail,
      };
      break;
    }
    case MessageType.ACK:
      msg = { type: 'ack', requestId, status: r.u8('ack status') };
      break;
    case MessageType.MOVE: {
      const reason = readEnum(r, MOVE_REASONS, 'move reason');
      msg = { type: 'move', requestId, reason, retryAfterMs: r.u32('retry after') };
      break;
    }
    default:
      throw new NatpunchError('RENDEZVOUS_DECODE', `unknown rendezvous message type ${type}`, { details: { type } });
  }
  if (PADDED_TYPES.has(type)) skipPadding(r);
  if (r.remaining !== 0) throw decodeError(`${r.remaining} trailing bytes`);
  return msg;
}

/**
 * Checks a decoded signed message's Ed25519 signature against the public key it names. A server passes a scratch
 * buffer of its own to assemble context + signed part in (no allocation per message); without one, or when it is
 * too small, a fresh buffer is used.
 */
export function verifyRendezvous(msg: SignedMessage, scratch?: Buffer): boolean {
  if (!msg.signature || !msg.signedPart) return false;
  const n = SIGNATURE_CONTEXT.length + msg.signedPart.length;
  let signed: Buffer;
  if (scratch && scratch.length >= n) {
    SIGNATURE_CONTEXT.copy(scratch, 0);
    scratch.set(msg.signedPart, SIGNATURE_CONTEXT.length);
    signed = scratch.subarray(0, n);
  } else signed = Buffer.concat([SIGNATURE_CONTEXT, msg.signedPart]);
  return verify(msg.signature, signed, msg.publicKey);
}

export function isSignedMessage(msg: RendezvousMessage): msg is SignedMessage {
  return (
    msg.type === 'register' ||
    msg.type === 'connect' ||
    msg.type === 'unregister' ||
    msg.type === 'seq-offer' ||
    msg.type === 'release-name' ||
    msg.type === 'report'
  );
}

/** Reads the type and request id of something that starts like a rendezvous message, without decoding the body. */
export function peekHeader(input: Uint8Array): { version: number; type: number; requestId: number } | undefined {
  if (input.length < HEADER_BYTES || input[0] !== FirstByte.RENDEZVOUS) return undefined;
  const b = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  return { version: b[1]!, type: b[2]!, requestId: b.readUInt32BE(3) };
}

// ---------------------------------------------------------------------------------------------------------------
// TCP framing (fallback when UDP is blocked). Each frame is
//   0xF0 | length u16 BE | one rendezvous message (length bytes, itself starting with 0xF0)
// so a TCP connection's very first byte is 0xF0 (how `serve` tells rendezvous from STUN over TCP, RFC 8489 §6.2.2
// frames STUN by its own length field) and every frame boundary can be checked.

export const TCP_FRAME_HEADER_BYTES = 3;

export function frameTcp(message: Uint8Array): Buffer {
  if (message.length > MAX_MESSAGE_BYTES) throw encodeError('frame too long');
  const out = Buffer.alloc(TCP_FRAME_HEADER_BYTES + message.length);
  out[0] = FirstByte.RENDEZVOUS;
  out.writeUInt16BE(message.length, 1);
  out.set(message, TCP_FRAME_HEADER_BYTES);
  return out;
}

/**
 * Splits a TCP byte stream into messages. `push` returns the complete messages so far; a bad frame header throws
 * NatpunchError('RENDEZVOUS_DECODE') and the caller closes the connection. Buffers at most one frame.
 */
export class TcpFrameDecoder {
  #pending: Buffer = Buffer.alloc(0);

  push(chunk: Uint8Array): Buffer[] {
    this.#pending = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : Buffer.from(chunk);
    const out: Buffer[] = [];
    while (this.#pending.length >= TCP_FRAME_HEADER_BYTES) {
      if (this.#pending[0] !== FirstByte.RENDEZVOUS) throw decodeError('TCP frame does not start with 0xF0');
      const len = this.#pending.readUInt16BE(1);
      if (len > MAX_MESSAGE_BYTES || len < HEADER_BYTES) throw decodeError(`TCP frame length ${len}`);
      if (this.#pending.length < TCP_FRAME_HEADER_BYTES + len) break;
      out.push(Buffer.from(this.#pending.subarray(TCP_FRAME_HEADER_BYTES, TCP_FRAME_HEADER_BYTES + len)));
      this.#pending = this.#pending.subarray(TCP_FRAME_HEADER_BYTES + len);
    }
    if (this.#pending.length > TCP_FRAME_HEADER_BYTES + MAX_MESSAGE_BYTES)
      throw decodeError('TCP frame buffer overflow');
    return out;
  }
}

/** The lowercase hex form, for map keys and logs. */
export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}
