import { randomBytes } from 'node:crypto';
import { lookup as dnsLookup } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import { connect as tcpConnect, isIP, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { DatagramTransport, RemoteInfo } from '../net/datagram.js';
import { FirstByte } from '../net/demux.js';
import { idToKey, isPeerId, keyToId, type KeyPair } from '../session/identity.js';
import { candidatePriority, dedupeCandidates, type Candidate } from '../traversal/candidate.js';
import { timeoutSignal } from '../util/abort.js';
import { NatpunchError, isNatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import {
  decodeRendezvous,
  encodeRendezvous,
  frameTcp,
  hex,
  isEncodableAddress,
  isValidName,
  verifyRendezvous,
  CONNECTION_ID_BYTES,
  MAX_CANDIDATES,
  MAX_CONNECT_NOTIFY_BYTES,
  MAX_LOOKUP_RESULT_BYTES,
  PONG_BYTES,
  REGISTER_PAD_BYTES,
  MAX_ERROR_TEXT_BYTES,
  TcpFrameDecoder,
  type ConnectMode,
  type ConnectNotifyMessage,
  type ConnectRole,
  type Endpoint,
  type ErrorMessage,
  type RendezvousMessage,
  type ReportMessage,
  type SeqOfferMessage,
  type Target,
} from '../wire/rendezvous.js';
import { SEQ_OFFER_BYTES } from '../wire/seq-offer.js';
import { TransactionTable } from '../stun/transaction.js';

/**
 * Request timing over UDP: first retransmission after 250 ms, doubling (RFC 8489 §6.2.1's scheme with a shorter RTO,
 * as the rendezvous server is one round trip away and answers at once), 4 transmissions at 0, 0.25, 0.75 and 1.75 s,
 * then 2 s more for an answer (3.75 s) before falling back to TCP. Every request is bounded overall by DEFAULT_REQUEST_TIMEOUT_MS.
 */
export const DEFAULT_INITIAL_RTO_MS = 250;
export const DEFAULT_MAX_RTO_MS = 2_000;
export const DEFAULT_MAX_TRANSMISSIONS = 4;
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
/**
 * Until the server has answered over UDP once, a request whose first this-many UDP transmissions went unanswered
 * (0 and 0.25 s: the next one leaves at 0.75 s) also goes over TCP, and whichever transport answers first wins:
 * where UDP is blocked the answer comes after ~0.75 s and one TCP round trip instead of after the whole UDP schedule
 * (3.75 s), in the spirit of Happy Eyeballs (RFC 8305 §5). Once UDP has worked, a silent request is loss, not a
 * block, and waits for its UDP schedule as before: a second copy over TCP could introduce a peer twice. The TCP copy
 * is built afresh (a new timestamp and signature, the same request id): the server may have received the UDP one,
 * and takes the same signed bytes from another source as a replay.
 */
export const TCP_HEDGE_AFTER_TRANSMISSIONS = 2;
/** While registered over TCP, the first re-registration (which tries UDP first) comes this soon, then backs off. */
export const TCP_REPROBE_INITIAL_MS = 1_000;
/** Transmissions of a registration over UDP while on TCP, to notice UDP working again. */
export const UDP_REPROBE_TRANSMISSIONS = 2;
/** After a failed refresh, try again this soon (bounded by the refresh interval). */
export const REFRESH_RETRY_MS = 2_000;
/**
 * A REGISTERED that announced relay credentials (credentialsFollow) with none arriving this long after it (at least;
 * twice the RTT when that is longer): register again asking for them (REGISTER wantCredentials), at most
 * CREDENTIAL_ASKS times per registration, the wait doubling. Both datagrams leave the server back to back, so a
 * missing one was lost, not late.
 */
export const CREDENTIAL_WAIT_MS = 250;
export const CREDENTIAL_ASKS = 3;
/** Other addresses of a multihomed server that answered us. */
const MAX_SERVER_SOURCES = 8;
/** How many recent connection ids are remembered to drop retransmitted notifications. */
const SEEN_NOTIFY_CAP = 256;
/** Sequence offers received from peers, kept for awaitSeqOffer() (the peer's may arrive before we wait). */
export const SEQ_OFFER_STORE_CAP = 64;
export const SEQ_OFFER_STORE_TTL_MS = 30_000;

/** Outcome reports sent per minute at most (the server also bounds them per key). */
export const MAX_REPORTS_PER_MINUTE = 30;
/** A report is best effort: it gives up after this long. */
export const REPORT_TIMEOUT_MS = 3_000;

export interface RendezvousServerAddress {
  host: string;
  port: number;
  tcpPort?: number;
}

/** What a peer tells the server about one connection attempt (wire/rendezvous.ts REPORT). */
export type ConnectionOutcome = Omit<
  ReportMessage,
  'type' | 'requestId' | 'publicKey' | 'timestamp' | 'nonce' | 'signature' | 'signedPart'
>;

export interface RendezvousClientOptions {
  /** The caller's socket: the same one the peer will punch from, so the server sees the mapping that matters. */
  transport: DatagramTransport;
  /**
   * The server; `tcpPort` defaults to `port` (`natpunch serve` listens on both). Several servers (nodes sharing one
   * registry): the client uses the first and moves to the next when one stops answering or tells it to (MOVE),
   * registering there.
   */
  server: RendezvousServerAddress | readonly RendezvousServerAddress[];
  /** Send outcome reports with report() (default true; false makes report() a no-op). */
  report?: boolean;
  keyPair: KeyPair;
  /** A name to claim ([a-z0-9._-]{1,63}); first come, bound to this key while the registration lives. */
  name?: string;
  /** The candidates to advertise; default: host candidates of the transport's address (interfaces when wildcard). */
  candidates?: () => Candidate[];
  /** This peer is reachable from anywhere (public address or full-cone NAT, e.g. from netcheck). */
  reachable?: boolean | (() => boolean);
  logger?: Logger;
  /** Fall back to TCP when UDP gets no answer (default true). */
  tcpFallback?: boolean;
  /** Re-register before the registration expires (default true). */
  autoRefresh?: boolean;
  initialRtoMs?: number;
  maxTransmissions?: number;
  requestTimeoutMs?: number;
}

/** TURN credentials the rendezvous handed out (shared-secret scheme); use them on `host:port`. */
export interface TurnCredentials {
  /** The rendezvous server's address as resolved (the TURN server runs on the same host). */
  host: string;
  port: number;
  /** The relay's TLS port on the same host, when it runs TURN over TLS. */
  tlsPort?: number;
  username: string;
  password: string;
  /** Local clock (ms) after which they no longer work. */
  expiresAt: number;
}

export interface RegisterResult {
  /** The address the server saw this peer's messages come from (server-reflexive). */
  reflexive: Endpoint;
  refreshMs: number;
  ttlMs: number;
  serverTime: number;
  /** The server judged this peer reachable (flagged, or its reflexive address is one of its host addresses). */
  reachable: boolean;
  /** RTT to the server measured on this exchange, when it was not retransmitted (RFC 6298 §3, Karn). */
  rttMs?: number;
  via: 'udp' | 'tcp';
}

export interface LookupResult {
  publicKey: Buffer;
  /** Hex of the public key. */
  id: string;
  name?: string;
  reachable: boolean;
  expiresInMs: number;
  /** The peer's own candidates plus the server-reflexive address the server saw. */
  candidates: Candidate[];
}

/** What the rendezvous tells each side of a connection (CONNECT_NOTIFY). */
export interface ConnectOffer {
  connectionId: Buffer;
  role: ConnectRole;
  /** 'punch': probe all pairs; 'connect': the peer is reachable, just connect; 'await': the peer will connect to you. */
  mode: ConnectMode;
  peerKey: Buffer;
  peerId: string;
  peerName?: string;
  /** The peer's candidates, including the server-reflexive address the server observed. */
  candidates: Candidate[];
  startDelayMs: number;
  /** Local clock (Date.now()) at which to start probing. */
  startAt: number;
  serverTime: number;
  via: 'udp' | 'tcp';
}

/** A peer's SEQ_OFFER, forwarded by the server; its signature was checked against `peerKey`. */
export interface SeqOfferEvent {
  connectionId: Buffer;
  /** The sender. */
  peerKey: Buffer;
  /** SEQ_OFFER_BYTES bytes (wire/seq-offer.ts decodeSeqOffer), when the peer takes part. */
  offer?: Buffer;
  /** Why the peer will not take part, when it declines. */
  decline?: string;
}

export interface RendezvousClientEvents {
  'connect-request': [offer: ConnectOffer];
  'seq-offer': [event: SeqOfferEvent];
  registered: [result: RegisterResult];
  'turn-credentials': [credentials: TurnCredentials];
  'refresh-failed': [error: NatpunchError];
  /** Moved to another server (the previous one stopped answering, or asked peers to move). */
  'server-changed': [server: { host: string; port: number }, reason: 'unreachable' | 'moved'];
}

interface Pending {
  via: 'udp' | 'tcp';
  /** `via`: the transport the answer came over (a UDP request hedged over TCP may be answered on either). */
  resolve: (msg: RendezvousMessage, via: 'udp' | 'tcp') => void;
  reject: (err: unknown) => void;
}

function unmapV4(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

export function parseTarget(target: string | Uint8Array): Target {
  if (typeof target !== 'string') {
    if (target.length !== 32) throw new NatpunchError('BAD_ARGUMENT', 'a peer key is 32 bytes');
    return { key: Buffer.from(target) };
  }
  if (isPeerId(target)) return { key: idToKey(target) };
  if (isValidName(target)) return { name: target };
  throw new NatpunchError(
    'BAD_ARGUMENT',
    `"${target.slice(0, 80)}" is neither a peer key (64 hex characters) nor a name ([a-z0-9._-]{1,63})`,
  );
}

/** Host candidates for a bound transport: its address, or every non-internal interface address for a wildcard. */
export function hostCandidates(transport: DatagramTransport): Candidate[] {
  const { address, port, family } = transport.address();
  if (address !== '0.0.0.0' && address !== '::') {
    return isEncodableAddress(address)
      ? [{ type: 'host', transport: 'udp', address, port, priority: candidatePriority('host') }]
      : [];
  }
  const out: Candidate[] = [];
  let pref = 65535;
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) {
      if (i.internal) continue;
      if (i.family === 'IPv6' && (family !== 'IPv6' || i.address.startsWith('fe80') || i.scopeid)) continue;
      if (!isEncodableAddress(i.address)) continue;
      out.push({
        type: 'host',
        transport: 'udp',
        address: i.address,
        port,
        priority: candidatePriority('host', Math.max(0, pref--)),
      });
    }
  }
  return dedupeCandidates(out).slice(0, MAX_CANDIDATES - 1);
}

function seqResult(e: SeqOfferEvent): { offer?: Buffer; decline?: string } {
  return e.offer ? { offer: e.offer } : { decline: e.decline ?? '' };
}

/** At most `max` bytes of UTF-8, cut at a character boundary. */
function truncateUtf8(text: string, max: number): string {
  if (Buffer.byteLength(text, 'utf8') <= max) return text;
  let out = '';
  let n = 0;
  for (const ch of text) {
    const l = Buffer.byteLength(ch, 'utf8');
    if (n + l > max) break;
    out += ch;
    n += l;
  }
  return out;
}

/** The server did not answer at all (as opposed to answering with an ERROR): worth trying another server. */
function isUnreachable(err: unknown): boolean {
  if (isNatpunchError(err, 'TIMEOUT')) return true;
  return (
    isNatpunchError(err, 'RENDEZVOUS') && err.details?.serverCode === undefined && /reach|closed/.test(err.message)
  );
}

/**
 * Rendezvous servers from text: "host[:port]" or several separated by commas ("a:3478,b:3478"; "[v6]:port"
 * for IPv6). The CLI's `--rendezvous a,b` and the API's string form both use it.
 */
export function parseRendezvousList(spec: string, defaultPort: number): RendezvousServerAddress[] {
  const out: RendezvousServerAddress[] = [];
  for (const part of spec
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(part);
    let host: string;
    let port: number;
    if (v6) {
      host = v6[1]!;
      port = v6[2] ? Number(v6[2]) : defaultPort;
    } else {
      const bits = part.split(':');
      host = bits.length === 2 ? bits[0]! : part;
      port = bits.length === 2 ? Number(bits[1]) : defaultPort;
    }
    if (!Number.isInteger(port) || port <= 0 || port > 65535)
      throw new NatpunchError('BAD_ARGUMENT', `bad rendezvous port in "${part.slice(0, 80)}"`);
    out.push({ host, port });
  }
  if (out.length === 0) throw new NatpunchError('BAD_ARGUMENT', 'no rendezvous server given');
  return out;
}

function serverError(msg: ErrorMessage, what: string): NatpunchError {
  const details = { serverCode: msg.code, retryAfterMs: msg.retryAfterMs };
  if (msg.code === 'NOT_FOUND') return new NatpunchError('PEER_NOT_FOUND', `${what}: ${msg.message}`, { details });
  return new NatpunchError('RENDEZVOUS', `rendezvous server refused ${what}: ${msg.message} [${msg.code}]`, {
    details,
  });
}

/**
 * A rendezvous client over the caller's UDP socket (it never owns it), with TCP fallback. Registers (signed by the
 * peer key) and keeps the registration alive, looks peers up, asks for connections and hears about incoming ones.
 */
export class RendezvousClient extends EventEmitter<RendezvousClientEvents> {
  readonly keyPair: KeyPair;
  readonly name: string | undefined;
  #transport: DatagramTransport;
  #servers: Array<{ host: string; port: number; tcpPort: number }>;
  #serverIndex = 0;
  #server: { host: string; port: number; tcpPort: number };
  /** The request id of the REGISTER the current server last answered (a MOVE must carry it). */
  #registerRequestId: number | undefined;
  #report: boolean;
  #reportTimes: number[] = [];
  #registering = false;
  #serverIp: string | undefined;
  #candidates: () => Candidate[];
  #reachable: () => boolean;
  #log: Logger;
  #tcpFallback: boolean;
  #autoRefresh: boolean;
  #rto: number;
  #maxTx: number;
  #timeoutMs: number;

  #pending = new Map<number, Pending>();
  #udpTransactions = new TransactionTable<number, RendezvousMessage>();
  #off: () => void;
  #mode: 'udp' | 'tcp' = 'udp';
  #tcp: Socket | undefined;
  #tcpReady: Promise<Socket> | undefined;
  #rtt: number | undefined;
  #registered: RegisterResult | undefined;
  #turnCredentials: TurnCredentials | undefined;
  #refreshTimer: NodeJS.Timeout | undefined;
  /** The server announced relay credentials that have not arrived (see CREDENTIAL_WAIT_MS). */
  #credentialsPending = false;
  #credentialAsks = 0;
  #credentialTimer: NodeJS.Timeout | undefined;
  /** The request id the latest credentials came with (they may overtake their REGISTERED). */
  #credentialsRequestId: number | undefined;
  #seen = new Map<string, true>();
  #seqOffers = new Map<string, { event: SeqOfferEvent; expiresAt: number }>();
  #seqWaiters = new Set<{
    key: string;
    resolve: (v: { offer?: Buffer; decline?: string }) => void;
    reject: (err: unknown) => void;
  }>();
  #serverSources = new Set<string>();
  #closer = new AbortController();
  #closed = false;
  /** Server clock minus local clock, learned when the server called a timestamp stale. */
  #clockOffset = 0;
  #tcpReprobeMs = TCP_REPROBE_INITIAL_MS;
  /** The current server has answered over UDP at least once (TCP_HEDGE_AFTER_TRANSMISSIONS). */
  #heardOverUdp = false;
  #lastTimestamp = 0;

  constructor(options: RendezvousClientOptions) {
    super();
    if (options.name !== undefined && !isValidName(options.name)) {
      throw new NatpunchError('BAD_ARGUMENT', `name "${options.name.slice(0, 80)}" must match [a-z0-9._-]{1,63}`);
    }
    this.keyPair = options.keyPair;
    this.name = options.name;
    this.#transport = options.transport;
    const list = Array.isArray(options.server) ? options.server : [options.server as RendezvousServerAddress];
    if (list.length === 0) throw new NatpunchError('BAD_ARGUMENT', 'give at least one rendezvous server');
    this.#servers = list.map((s) => ({ host: s.host, port: s.port, tcpPort: s.tcpPort ?? s.port }));
    this.#server = this.#servers[0]!;
    this.#report = options.report ?? true;
    this.#candidates = options.candidates ?? (() => hostCandidates(this.#transport));
    const r = options.reachable;
    this.#reachable = typeof r === 'function' ? r : () => Boolean(r);
    this.#log = options.logger ?? silentLogger;
    this.#tcpFallback = options.tcpFallback ?? true;
    this.#autoRefresh = options.autoRefresh ?? true;
    this.#rto = options.initialRtoMs ?? DEFAULT_INITIAL_RTO_MS;
    this.#maxTx = options.maxTransmissions ?? DEFAULT_MAX_TRANSMISSIONS;
    this.#timeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#off = this.#transport.onMessage((msg: Buffer, rinfo: RemoteInfo) => this.#onDatagram(msg, rinfo));
  }

  /** The current registration, if any. */
  get registration(): RegisterResult | undefined {
    return this.#registered;
  }

  /** TURN credentials the server handed out with the latest registration, while they are still valid. */
  get turnCredentials(): TurnCredentials | undefined {
    const c = this.#turnCredentials;
    return c && c.expiresAt > Date.now() ? { ...c } : undefined;
  }

  /** The server said relay credentials follow the latest registration and they have not arrived yet (the client is
   *  asking again, see CREDENTIAL_WAIT_MS): a caller that wants a relay waits for 'turn-credentials'. */
  get credentialsPending(): boolean {
    return this.#credentialsPending && !this.#closed;
  }

  /** 'udp' normally; 'tcp' after UDP got no answer and TCP did. */
  get via(): 'udp' | 'tcp' {
    return this.#mode;
  }

  /** RTT to the server in ms, once measured. */
  get rttMs(): number | undefined {
    return this.#rtt;
  }

  /** Registers (or refreshes) this peer; with autoRefresh, keeps re-registering before expiry until close(). */
  async register(signal?: AbortSignal): Promise<RegisterResult> {
    this.#checkOpen();
    this.#registering = true;
    try {
      return await this.#register(signal);
    } finally {
      this.#registering = false;
    }
  }

  async #register(signal?: AbortSignal): Promise<RegisterResult> {
    const candidates = this.#gather();
    const reachable = this.#reachable();
    const { msg, via, rttMs } = await this.#signedRequest(
      (requestId) =>
        encodeRendezvous(
          {
            type: 'register',
            requestId,
            publicKey: this.keyPair.publicKey,
            timestamp: this.#timestamp(),
            ...(this.name !== undefined ? { name: this.name } : {}),
            reachable,
            rttMs: Math.min(0xffff, Math.round(this.#rtt ?? 0)),
            candidates,
            ...(this.#credentialsPending ? { wantCredentials: true } : {}),
          },
          this.keyPair.secretKey,
          // Anti-amplification: the server answers with at most as many bytes as a request has (REGISTERED, TURN
          // credentials and its address-proving PING).
          { padTo: REGISTER_PAD_BYTES },
        ),
      signal,
      true,
    );
    if (msg.type === 'error') throw serverError(msg, 'registration');
    if (msg.type !== 'registered')
      throw new NatpunchError('RENDEZVOUS', `unexpected ${msg.type} answering a registration`);
    this.#registerRequestId = msg.requestId;
    const result: RegisterResult = {
      reflexive: msg.reflexive,
      refreshMs: msg.refreshMs,
      ttlMs: msg.ttlMs,
      serverTime: msg.serverTime,
      reachable: msg.reachable,
      via,
    };
    if (rttMs !== undefined) result.rttMs = rttMs;
    this.#registered = result;
    if (msg.credentialsFollow && msg.requestId !== this.#credentialsRequestId) this.#expectCredentials();
    this.#log.debug({ reflexive: msg.reflexive, via }, 'rendezvous registered');
    let next = Math.max(50, Math.min(msg.refreshMs, msg.ttlMs * 0.75));
    if (via === 'tcp') {
      // UDP may only have been silent for a moment (a server restart straddling the retransmissions), and only a
      // UDP registration gives the server the mapping punching needs: try UDP again soon, backing off to the
      // refresh interval while it stays blocked.
      next = Math.min(next, this.#tcpReprobeMs);
      this.#tcpReprobeMs = Math.min(this.#tcpReprobeMs * 2, msg.refreshMs);
    } else {
      this.#tcpReprobeMs = TCP_REPROBE_INITIAL_MS;
    }
    if (this.#autoRefresh) this.#scheduleRefresh(next);
    this.emit('registered', result);
    return result;
  }

  /** Finds a registered peer by name or key (hex or bytes). Throws PEER_NOT_FOUND when there is none. */
  async lookup(nameOrKey: string | Uint8Array, signal?: AbortSignal): Promise<LookupResult> {
    this.#checkOpen();
    const target = parseTarget(nameOrKey);
    const { msg } = await this.#request(
      (requestId) =>
        encodeRendezvous({ type: 'lookup', requestId, target }, undefined, { padTo: MAX_LOOKUP_RESULT_BYTES }),
      signal,
    );
    if (msg.type === 'error')
      throw serverError(msg, `lookup of ${typeof nameOrKey === 'string' ? nameOrKey : keyToId(nameOrKey)}`);
    if (msg.type !== 'lookup-result')
      throw new NatpunchError('RENDEZVOUS', `unexpected ${msg.type} answering a lookup`);
    const out: LookupResult = {
      publicKey: msg.publicKey,
      id: keyToId(msg.publicKey),
      reachable: msg.reachable,
      expiresInMs: msg.expiresInMs,
      candidates: msg.candidates,
    };
    if (msg.name !== undefined) out.name = msg.name;
    return out;
  }

  /**
   * Asks the server to introduce this peer to `nameOrKey`. The server sends the other side a CONNECT_NOTIFY
   * ('connect-request' there) and answers here with this side's: the peer's candidates, role, mode and start time.
   */
  async requestConnect(
    nameOrKey: string | Uint8Array,
    options: { connectionId?: Uint8Array; candidates?: Candidate[]; signal?: AbortSignal } = {},
  ): Promise<ConnectOffer> {
    this.#checkOpen();
    const target = parseTarget(nameOrKey);
    const connectionId = Buffer.from(options.connectionId ?? randomBytes(CONNECTION_ID_BYTES));
    if (connectionId.length !== CONNECTION_ID_BYTES)
      throw new NatpunchError('BAD_ARGUMENT', `connectionId must be ${CONNECTION_ID_BYTES} bytes`);
    const candidates = options.candidates
      ? dedupeCandidates(options.candidates).slice(0, MAX_CANDIDATES - 1)
      : this.#gather();
    const reachable = this.#reachable();
    const { msg, via } = await this.#signedRequest(
      (requestId) =>
        encodeRendezvous(
          {
            type: 'connect',
            requestId,
            publicKey: this.keyPair.publicKey,
            timestamp: this.#timestamp(),
            reachable,
            target,
            connectionId,
            rttMs: Math.min(0xffff, Math.round(this.#rtt ?? 0)),
            candidates,
          },
          this.keyPair.secretKey,
          // Anti-amplification: the answer (the peer's candidates) is at most as large as the request.
          { padTo: MAX_CONNECT_NOTIFY_BYTES },
        ),
      options.signal,
      false,
    );
    const who = typeof nameOrKey === 'string' ? nameOrKey : keyToId(nameOrKey);
    if (msg.type === 'error') throw serverError(msg, `connection to ${who}`);
    if (msg.type !== 'connect-notify' || msg.role !== 'initiator' || !msg.connectionId.equals(connectionId)) {
      throw new NatpunchError('RENDEZVOUS', `unexpected ${msg.type} answering a connect request`);
    }
    return this.#offer(msg, via);
  }

  /**
   * Sends this peer's TCP sequence offer (or, with `decline`, why it will not take part) for connection
   * `connectionId` to the other peer `peerKey`, through the server (STUNT #1 / NATBlaster). Signed with our key: the
   * server forwards it unchanged and the peer checks the signature. Resolves once the server has taken it, with
   * whether the server will spoof STUNT #1 SYN-ACKs when both offers are in. PEER_NOT_FOUND when the server
   * introduced no such connection between the two keys (a SEQ_OFFER follows a CONNECT), or the peer is gone.
   */
  async exchangeSeqOffer(p: {
    connectionId: Uint8Array;
    peerKey: Uint8Array;
    offer?: Buffer;
    decline?: string;
    signal?: AbortSignal;
  }): Promise<{ spoofing: boolean }> {
    this.#checkOpen();
    if (p.connectionId.length !== CONNECTION_ID_BYTES)
      throw new NatpunchError('BAD_ARGUMENT', `connectionId must be ${CONNECTION_ID_BYTES} bytes`);
    if (p.peerKey.length !== 32) throw new NatpunchError('BAD_ARGUMENT', 'peerKey must be 32 bytes');
    if ((p.offer === undefined) === (p.decline === undefined))
      throw new NatpunchError('BAD_ARGUMENT', 'give exactly one of offer and decline');
    if (p.offer !== undefined && p.offer.length !== SEQ_OFFER_BYTES)
      throw new NatpunchError('BAD_ARGUMENT', `offer must be ${SEQ_OFFER_BYTES} bytes`);
    const connectionId = Buffer.from(p.connectionId);
    const peerKey = Buffer.from(p.peerKey);
    let decline = p.decline;
    if (decline !== undefined) {
      if (decline === '') throw new NatpunchError('BAD_ARGUMENT', 'decline needs a reason');
      decline = truncateUtf8(decline, MAX_ERROR_TEXT_BYTES);
    }
    const payload = p.offer !== undefined ? { offer: Buffer.from(p.offer) } : { decline: decline! };
    const { msg } = await this.#signedRequest(
      (requestId) =>
        encodeRendezvous(
          {
            type: 'seq-offer',
            requestId,
            publicKey: this.keyPair.publicKey,
            timestamp: this.#timestamp(),
            connectionId,
            peerKey,
            ...payload,
          },
          this.keyPair.secretKey,
        ),
      p.signal,
      false,
    );
    if (msg.type === 'error') throw serverError(msg, `sequence offer to ${keyToId(peerKey)}`);
    if (msg.type !== 'seq-offer-result' || !msg.connectionId.equals(connectionId)) {
      throw new NatpunchError('RENDEZVOUS', `unexpected ${msg.type} answering a sequence offer`);
    }
    return { spoofing: msg.spoofing };
  }

  /**
   * The other peer's SEQ_OFFER for `connectionId` from `peerKey`: at once when it already arrived (kept
   * SEQ_OFFER_STORE_TTL_MS), else when it does. Rejects with the signal's reason when aborted, SOCKET_CLOSED on close().
   */
  awaitSeqOffer(
    connectionId: Uint8Array,
    peerKey: Uint8Array,
    signal: AbortSignal,
  ): Promise<{ offer?: Buffer; decline?: string }> {
    if (this.#closed) return Promise.reject(new NatpunchError('SOCKET_CLOSED', 'rendezvous client closed'));
    const key = `${hex(connectionId)}/${hex(peerKey)}`;
    const stored = this.#seqOffers.get(key);
    if (stored && stored.expiresAt > Date.now()) return Promise.resolve(seqResult(stored.event));
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#seqWaiters.delete(waiter);
        reject(signal.reason);
      };
      const waiter = {
        key,
        resolve: (v: { offer?: Buffer; decline?: string }) => {
          signal.removeEventListener('abort', onAbort);
          this.#seqWaiters.delete(waiter);
          resolve(v);
        },
        reject: (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          this.#seqWaiters.delete(waiter);
          reject(err);
        },
      };
      this.#seqWaiters.add(waiter);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The server in use now (one of those given; it changes on failover). */
  get server(): { host: string; port: number } {
    return { host: this.#server.host, port: this.#server.port };
  }

  /**
   * Gives up `name` (default: this client's name) on the server now, instead of it staying reserved for this key
   * for the server's name hold after unregistering (RELEASE_NAME, signed). Resolves with whether the key held it.
   */
  async releaseName(name = this.name, signal?: AbortSignal): Promise<boolean> {
    this.#checkOpen();
    if (name === undefined || !isValidName(name))
      throw new NatpunchError('BAD_ARGUMENT', 'releaseName needs a name ([a-z0-9._-]{1,63})');
    const { msg } = await this.#signedRequest(
      (requestId) =>
        encodeRendezvous(
          { type: 'release-name', requestId, publicKey: this.keyPair.publicKey, timestamp: this.#timestamp(), name },
          this.keyPair.secretKey,
        ),
      signal,
      false,
    );
    if (msg.type === 'error') throw serverError(msg, `release of name "${name}"`);
    if (msg.type !== 'ack') throw new NatpunchError('RENDEZVOUS', `unexpected ${msg.type} answering a name release`);
    return msg.status === 1;
  }

  /**
   * Tells the server how a connection attempt went (REPORT, signed; NAT types, techniques, outcome and timings, never
   * payload), for its metrics and dashboard. Best effort and bounded: at most MAX_REPORTS_PER_MINUTE a minute, one
   * try of at most REPORT_TIMEOUT_MS; resolves false (never rejects) when reports are off, over the rate, or lost.
   */
  async report(outcome: ConnectionOutcome, signal?: AbortSignal): Promise<boolean> {
    if (!this.#report || this.#closed) return false;
    const now = Date.now();
    this.#reportTimes = this.#reportTimes.filter((t) => now - t < 60_000);
    if (this.#reportTimes.length >= MAX_REPORTS_PER_MINUTE) return false;
    this.#reportTimes.push(now);
    const t = timeoutSignal(REPORT_TIMEOUT_MS, signal);
    try {
      const { msg } = await this.#request(
        (requestId) =>
          encodeRendezvous(
            { ...outcome, type: 'report', requestId, publicKey: this.keyPair.publicKey, timestamp: this.#timestamp() },
            this.keyPair.secretKey,
          ),
        t.signal,
        false,
        false,
      );
      return msg.type === 'ack' && msg.status === 1;
    } catch (err) {
      this.#log.debug({ err: (err as Error).message }, 'rendezvous: outcome report not delivered');
      return false;
    } finally {
      t.dispose();
    }
  }

  /** Measures the RTT to the server (PING/PONG). */
  async ping(signal?: AbortSignal): Promise<number> {
    this.#checkOpen();
    const started = Date.now();
    const { msg } = await this.#request(
      (requestId) => encodeRendezvous({ type: 'ping', requestId, time: started }, undefined, { padTo: PONG_BYTES }),
      signal,
    );
    if (msg.type !== 'pong') throw new NatpunchError('RENDEZVOUS', `unexpected ${msg.type} answering a ping`);
    const rtt = Date.now() - msg.echo;
    this.#rtt = rtt;
    return rtt;
  }

  /** Stops refreshing, withdraws the registration (best effort, one message) and closes the TCP connection. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closer.abort(new NatpunchError('SOCKET_CLOSED', 'rendezvous client closed'));
    clearTimeout(this.#refreshTimer);
    clearTimeout(this.#credentialTimer);
    const err = new NatpunchError('SOCKET_CLOSED', 'rendezvous client closed');
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    for (const w of [...this.#seqWaiters]) w.reject(err);
    this.#seqOffers.clear();
    if (this.#registered && this.#serverIp) {
      try {
        const bye = encodeRendezvous(
          { type: 'unregister', requestId: 0, publicKey: this.keyPair.publicKey, timestamp: this.#timestamp() },
          this.keyPair.secretKey,
        );
        if (this.#mode === 'tcp' && this.#tcp && !this.#tcp.destroyed) this.#tcp.write(frameTcp(bye));
        else this.#transport.send(bye, this.#server.port, this.#serverIp);
      } catch {
        // best effort
      }
    }
    this.#registered = undefined;
    this.#off();
    if (this.#tcp) {
      const s = this.#tcp;
      s.end();
      setTimeout(() => s.destroy(), 1000).unref();
    }
    this.#tcp = undefined;
    this.#tcpReady = undefined;
  }

  // -------------------------------------------------------------------------------------------------------------

  /** Signed-message timestamps: the server's clock as best known, strictly increasing (the server requires it). */
  #timestamp(): number {
    this.#lastTimestamp = Math.max(Math.round(Date.now() + this.#clockOffset), this.#lastTimestamp + 1);
    return this.#lastTimestamp;
  }

  /**
   * Runs a signed request; when the server calls its timestamp stale (a local clock off by more than the server's
   * window), learns the server's clock from a PING and tries once more.
   */
  async #signedRequest(build: (requestId: number) => Buffer, signal: AbortSignal | undefined, probeUdp: boolean) {
    const first = await this.#request(build, signal, probeUdp);
    if (first.msg.type !== 'error' || first.msg.code !== 'STALE') return first;
    const t0 = Date.now();
    const { msg } = await this.#request(
      (requestId) => encodeRendezvous({ type: 'ping', requestId, time: t0 }, undefined, { padTo: PONG_BYTES }),
      signal,
    );
    if (msg.type !== 'pong') return first;
    const t1 = Date.now();
    const offset = msg.time - (t0 + t1) / 2;
    if (Math.abs(offset - this.#clockOffset) < 1000) return first; // the clock was not the problem
    this.#log.info({ offsetMs: Math.round(offset) }, 'rendezvous: local clock differs from the server; compensating');
    this.#clockOffset = offset;
    this.#lastTimestamp = 0;
    return this.#request(build, signal, probeUdp);
  }

  #checkOpen(): void {
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'rendezvous client closed');
  }

  #gather(): Candidate[] {
    const all = this.#candidates().filter((c) => isEncodableAddress(c.address) && c.port > 0 && c.port < 65536);
    return dedupeCandidates(all).slice(0, MAX_CANDIDATES - 1);
  }

  #offer(msg: ConnectNotifyMessage, via: 'udp' | 'tcp'): ConnectOffer {
    const offer: ConnectOffer = {
      connectionId: msg.connectionId,
      role: msg.role,
      mode: msg.mode,
      peerKey: msg.peerKey,
      peerId: keyToId(msg.peerKey),
      candidates: msg.candidates,
      startDelayMs: msg.startDelayMs,
      startAt: Date.now() + msg.startDelayMs,
      serverTime: msg.serverTime,
      via,
    };
    if (msg.peerName !== undefined) offer.peerName = msg.peerName;
    return offer;
  }

  /** REGISTERED said credentials follow: unless they are here by then, register again asking for them. */
  #expectCredentials(): void {
    if (this.#closed) return;
    this.#credentialsPending = true;
    clearTimeout(this.#credentialTimer);
    if (this.#credentialAsks >= CREDENTIAL_ASKS) return; // the next refresh asks again (wantCredentials)
    const wait = Math.max(CREDENTIAL_WAIT_MS, 2 * (this.#rtt ?? 0)) * 2 ** this.#credentialAsks;
    this.#credentialTimer = setTimeout(() => {
      if (!this.#credentialsPending || this.#closed || this.#registering) return;
      this.#credentialAsks++;
      this.#log.debug({ asks: this.#credentialAsks }, 'rendezvous: announced relay credentials missing; asking again');
      this.register(this.#closer.signal).catch((err: unknown) => {
        if (!this.#closed)
          this.#log.debug({ err: (err as Error).message }, 'rendezvous: asking for credentials failed');
      });
    }, wait);
    this.#credentialTimer.unref();
  }

  #credentialsDone(): void {
    this.#credentialsPending = false;
    this.#credentialAsks = 0;
    clearTimeout(this.#credentialTimer);
  }

  #scheduleRefresh(ms: number): void {
    clearTimeout(this.#refreshTimer);
    if (this.#closed) return;
    this.#refreshTimer = setTimeout(() => {
      this.register(this.#closer.signal).catch((err: unknown) => {
        if (this.#closed) return;
        const e = isNatpunchError(err) ? err : new NatpunchError('RENDEZVOUS', 'refresh failed', { cause: err });
        this.#log.warn({ err: e.message }, 'rendezvous refresh failed');
        this.emit('refresh-failed', e);
        this.#scheduleRefresh(Math.min(REFRESH_RETRY_MS, this.#registered?.refreshMs ?? REFRESH_RETRY_MS));
      });
    }, ms);
    this.#refreshTimer.unref();
  }

  async #resolveServer(signal: AbortSignal): Promise<string> {
    if (this.#serverIp) return this.#serverIp;
    const host = this.#server.host;
    if (isIP(host)) {
      this.#serverIp = host;
      return host;
    }
    const family = this.#transport.address().family === 'IPv6' ? 6 : 4;
    const res = await dnsLookup(host, { family }).catch((err: NodeJS.ErrnoException) => {
      throw new NatpunchError('RENDEZVOUS', `cannot resolve rendezvous server ${host}: ${err.code ?? err.message}`);
    });
    if (signal.aborted) throw this.#abortError(signal);
    this.#serverIp = res.address;
    return res.address;
  }

  #abortError(signal: AbortSignal): NatpunchError {
    const reason: unknown = signal.reason;
    if (isNatpunchError(reason)) return reason;
    return new NatpunchError('ABORTED', 'operation aborted', { cause: reason });
  }

  #newRequestId(): number {
    let id: number;
    do id = randomBytes(4).readUInt32BE(0);
    while (id === 0 || this.#pending.has(id));
    return id;
  }

  /**
   * One request/answer exchange with failover: when the server does not answer at all (UDP and TCP), the next
   * server of the list is tried, each at most once; a server's refusal (ERROR) is an answer and is returned.
   */
  async #request(
    build: (requestId: number) => Buffer,
    signal?: AbortSignal,
    probeUdp = false,
    failover = true,
  ): Promise<{ msg: RendezvousMessage; via: 'udp' | 'tcp'; rttMs?: number }> {
    for (let tried = 1; ; tried++) {
      try {
        return await this.#requestOnce(build, signal, probeUdp);
      } catch (err) {
        if (!failover || tried >= this.#servers.length || this.#closed || signal?.aborted || !isUnreachable(err))
          throw err;
        this.#log.info(
          { server: this.#server, err: (err as Error).message },
          'rendezvous: server not answering; moving to the next',
        );
        this.#switchServer('unreachable');
      }
    }
  }

  /** Moves to the next server of the list; a registered peer registers there at once. */
  #switchServer(reason: 'unreachable' | 'moved'): void {
    this.#serverIndex = (this.#serverIndex + 1) % this.#servers.length;
    this.#server = this.#servers[this.#serverIndex]!;
    this.#serverIp = undefined;
    this.#serverSources.clear();
    this.#heardOverUdp = false;
    this.#mode = 'udp';
    this.#tcpReprobeMs = TCP_REPROBE_INITIAL_MS;
    const tcp = this.#tcp;
    this.#tcp = undefined;
    this.#tcpReady = undefined;
    tcp?.destroy();
    this.#registerRequestId = undefined;
    // TURN credentials are for the old server's host.
    this.#turnCredentials = undefined;
    this.#credentialsDone();
    this.emit('server-changed', { host: this.#server.host, port: this.#server.port }, reason);
    if (this.#registered && this.#autoRefresh && !this.#registering) this.#scheduleRefresh(0);
  }

  /** One request/answer exchange: UDP with retransmissions, then TCP when UDP stays silent. */
  async #requestOnce(
    build: (requestId: number) => Buffer,
    signal?: AbortSignal,
    probeUdp = false,
  ): Promise<{ msg: RendezvousMessage; via: 'udp' | 'tcp'; rttMs?: number }> {
    const closeSignal = this.#closer.signal;
    const parent = signal ? AbortSignal.any([signal, closeSignal]) : closeSignal;
    const t = timeoutSignal(this.#timeoutMs, parent);
    try {
      await this.#resolveServer(t.signal);
      if (this.#mode === 'udp' || !this.#tcpFallback) {
        try {
          const res = await this.#udpExchange(
            build,
            t.signal,
            this.#maxTx,
            this.#tcpFallback && !this.#heardOverUdp ? TCP_HEDGE_AFTER_TRANSMISSIONS : Infinity,
          );
          if (res.via === 'tcp') {
            if (this.#mode !== 'tcp') this.#log.info({ server: this.#server }, 'rendezvous: using TCP');
            this.#mode = 'tcp';
          }
          return res;
        } catch (err) {
          if (!this.#tcpFallback || !isNatpunchError(err, 'TIMEOUT') || t.signal.aborted) throw err;
          this.#log.info({ server: this.#server }, 'rendezvous: no answer over UDP, trying TCP');
        }
      } else if (probeUdp) {
        // On TCP, registrations try UDP again briefly: the UDP mapping is what punching needs, and UDP may have been
        // blocked only for a while.
        try {
          const res = await this.#udpExchange(build, t.signal, UDP_REPROBE_TRANSMISSIONS);
          this.#log.info({ server: this.#server }, 'rendezvous: UDP works again, leaving TCP');
          this.#mode = 'udp';
          this.#tcp?.end();
          return res;
        } catch (err) {
          if (!isNatpunchError(err, 'TIMEOUT') || t.signal.aborted) throw err;
        }
      }
      const res = await this.#tcpExchange(build, t.signal);
      if (this.#mode !== 'tcp') this.#log.info({ server: this.#server }, 'rendezvous: using TCP');
      this.#mode = 'tcp';
      return res;
    } finally {
      t.dispose();
    }
  }

  /**
   * One request over UDP, retransmitted by the shared engine (src/stun/transaction.ts) on this client's timing; after
   * `hedgeAfter` unanswered transmissions the request, built afresh, also goes over TCP (TCP_HEDGE_AFTER_TRANSMISSIONS),
   * and the answer may come back over either.
   */
  async #udpExchange(
    build: (requestId: number) => Buffer,
    signal: AbortSignal,
    maxTx: number,
    hedgeAfter = Infinity,
  ): Promise<{ msg: RendezvousMessage; via: 'udp' | 'tcp'; rttMs?: number }> {
    const requestId = this.#newRequestId();
    const bytes = build(requestId);
    const ip = this.#serverIp!;
    let answeredVia: 'udp' | 'tcp' = 'udp';
    let hedged = false;
    let sent = 0;
    const send = () => {
      this.#transport.send(bytes, this.#server.port, ip);
      if (++sent <= hedgeAfter || hedged) return;
      hedged = true;
      this.#log.info({ server: this.#server }, 'rendezvous: no answer over UDP yet, trying TCP beside it');
      // A TCP that cannot connect changes nothing: UDP goes on, and the caller falls back as before.
      this.#tcpSocket(signal).then(
        (socket) => {
          // Built again (same request id, a fresh timestamp and signature): the server takes the same signed bytes
          // from another source as a replay (REPLAY), and it may have seen the UDP copy.
          if (!socket.destroyed && this.#pending.has(requestId)) socket.write(frameTcp(build(requestId)));
        },
        () => {},
      );
    };
    // #pending routes the answer (#onMessage) and close() to the engine's transaction.
    this.#pending.set(requestId, {
      via: 'udp',
      resolve: (msg, via) => {
        answeredVia = via;
        this.#udpTransactions.resolve(requestId, msg);
      },
      reject: (err) =>
        this.#udpTransactions.reject(
          requestId,
          err instanceof Error ? err : new NatpunchError('RENDEZVOUS', String(err)),
        ),
    });
    try {
      const r = await this.#udpTransactions.run(requestId, send, {
        timing: { rtoMs: this.#rto, rc: maxTx, maxRtoMs: DEFAULT_MAX_RTO_MS },
        signal,
        timeoutError: (sent) =>
          new NatpunchError(
            'TIMEOUT',
            `no answer from rendezvous server ${this.#server.host}:${this.#server.port} over UDP after ${sent} tries`,
          ),
      });
      // Karn (RFC 6298 §3): only an answer to a request sent once is an RTT sample.
      const rttMs = r.transmissions === 1 ? Math.round(r.rttMs) : undefined;
      if (rttMs !== undefined) this.#rtt = rttMs;
      // UDP answered after all, but a hedged connection stays open: the server may have taken the TCP copy last and
      // push over it (it drops a peer's TCP channel when that connection closes); the next registration over UDP
      // moves the server back to UDP, and close() ends the connection.
      return rttMs === undefined ? { msg: r.answer, via: answeredVia } : { msg: r.answer, via: answeredVia, rttMs };
    } finally {
      this.#pending.delete(requestId);
    }
  }

  async #tcpExchange(
    build: (requestId: number) => Buffer,
    signal: AbortSignal,
  ): Promise<{ msg: RendezvousMessage; via: 'tcp'; rttMs?: number }> {
    const socket = await this.#tcpSocket(signal);
    const requestId = this.#newRequestId();
    const bytes = build(requestId);
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(this.#abortError(signal));
      const started = Date.now();
      const finish = () => {
        this.#pending.delete(requestId);
        signal.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        finish();
        reject(this.#abortError(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(requestId, {
        via: 'tcp',
        resolve: (msg) => {
          finish();
          const rttMs = Date.now() - started;
          this.#rtt = rttMs;
          resolve({ msg, via: 'tcp', rttMs });
        },
        reject: (err) => {
          finish();
          reject(err);
        },
      });
      socket.write(frameTcp(bytes));
    });
  }

  #tcpSocket(signal: AbortSignal): Promise<Socket> {
    if (this.#tcp && !this.#tcp.destroyed && this.#tcpReady) return this.#tcpReady;
    const socket = tcpConnect({ host: this.#serverIp!, port: this.#server.tcpPort });
    socket.setNoDelay(true);
    this.#tcp = socket;
    const decoder = new TcpFrameDecoder();
    socket.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = decoder.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const f of frames) {
        let msg: RendezvousMessage;
        try {
          msg = decodeRendezvous(f);
        } catch {
          continue;
        }
        this.#onMessage(msg, 'tcp');
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (this.#tcp === socket) {
        this.#tcp = undefined;
        this.#tcpReady = undefined;
      }
      const err = new NatpunchError('RENDEZVOUS', 'TCP connection to the rendezvous server closed');
      for (const p of [...this.#pending.values()]) if (p.via === 'tcp') p.reject(err);
      // The server pushes notifications over this connection: get it back soon.
      if (!this.#closed && this.#registered && this.#mode === 'tcp' && this.#autoRefresh) this.#scheduleRefresh(500);
    });
    const ready = new Promise<Socket>((resolve, reject) => {
      const onAbort = () => {
        cleanup();
        socket.destroy();
        reject(this.#abortError(signal));
      };
      const onError = (err: NodeJS.ErrnoException) => {
        cleanup();
        reject(
          new NatpunchError(
            'RENDEZVOUS',
            `cannot reach rendezvous server over TCP ${this.#server.host}:${this.#server.tcpPort}: ${err.code ?? err.message}`,
          ),
        );
      };
      const onConnect = () => {
        cleanup();
        resolve(socket);
      };
      const cleanup = () => {
        signal.removeEventListener('abort', onAbort);
        socket.off('error', onError);
        socket.off('connect', onConnect);
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      socket.once('error', onError);
      socket.once('connect', onConnect);
    });
    this.#tcpReady = ready;
    ready.catch(() => {
      if (this.#tcpReady === ready) this.#tcpReady = undefined;
    });
    return ready;
  }

  #onDatagram(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.#closed || msg.length === 0 || msg[0] !== FirstByte.RENDEZVOUS) return;
    // Only the server speaks rendezvous to us. A server bound to a wildcard address on a multihomed host may answer
    // from another of its addresses: an answer to a pending request (its 32-bit id matches) teaches us that address;
    // unsolicited messages (notifications, pings) are taken only from known server addresses.
    if (!this.#serverIp || rinfo.port !== this.#server.port) return;
    const from = unmapV4(rinfo.address);
    const known = from === unmapV4(this.#serverIp) || this.#serverSources.has(from);
    let decoded: RendezvousMessage;
    try {
      decoded = decodeRendezvous(msg);
    } catch {
      return;
    }
    if (!known) {
      const isAnswer =
        decoded.type !== 'ping' &&
        decoded.type !== 'seq-offer' &&
        !(decoded.type === 'connect-notify' && decoded.role === 'responder');
      if (!isAnswer || this.#pending.get(decoded.requestId)?.via !== 'udp') return;
      if (this.#serverSources.size < MAX_SERVER_SOURCES) this.#serverSources.add(from);
    }
    this.#heardOverUdp = true;
    this.#onMessage(decoded, 'udp');
  }

  #sendVia(via: 'udp' | 'tcp', bytes: Buffer): void {
    if (via === 'tcp') {
      if (this.#tcp && !this.#tcp.destroyed) this.#tcp.write(frameTcp(bytes));
    } else if (this.#serverIp) {
      this.#transport.send(bytes, this.#server.port, this.#serverIp);
    }
  }

  #onMessage(msg: RendezvousMessage, via: 'udp' | 'tcp'): void {
    if (this.#closed) return;
    if (msg.type === 'ping') {
      // The server measures its RTT to us (used to schedule simultaneous starts).
      this.#sendVia(
        via,
        encodeRendezvous({ type: 'pong', requestId: msg.requestId, echo: msg.time, time: Date.now() }),
      );
      return;
    }
    if (msg.type === 'connect-notify' && msg.role === 'responder') {
      this.#sendVia(
        via,
        encodeRendezvous({ type: 'notify-ack', requestId: msg.requestId, connectionId: msg.connectionId }),
      );
      const id = hex(msg.connectionId);
      if (this.#seen.has(id)) return; // a retransmission
      this.#seen.set(id, true);
      if (this.#seen.size > SEEN_NOTIFY_CAP) this.#seen.delete(this.#seen.keys().next().value!);
      this.emit('connect-request', this.#offer(msg, via));
      return;
    }
    if (msg.type === 'seq-offer') {
      this.#onSeqOffer(msg, via);
      return;
    }
    if (msg.type === 'move') {
      // Only the server that answered our latest REGISTER knows its request id (wire/rendezvous.ts MOVE).
      if (!this.#registered || msg.requestId !== this.#registerRequestId) return;
      this.#log.info({ server: this.#server, reason: msg.reason }, 'rendezvous: server asked peers to move');
      if (this.#servers.length > 1) this.#switchServer('moved');
      return;
    }
    if (msg.type === 'turn-credentials') {
      // Sent right after REGISTERED; only from the server (see #onDatagram), any request id of ours is fine.
      this.#turnCredentials = {
        host: this.#serverIp ? unmapV4(this.#serverIp) : this.#server.host,
        port: msg.port,
        ...(msg.tlsPort ? { tlsPort: msg.tlsPort } : {}),
        username: msg.username,
        password: msg.password,
        expiresAt: Date.now() + msg.ttlSeconds * 1000,
      };
      this.#credentialsRequestId = msg.requestId;
      this.#credentialsDone();
      this.emit('turn-credentials', { ...this.#turnCredentials });
      return;
    }
    const p = this.#pending.get(msg.requestId);
    if (!p) return;
    if (
      msg.type === 'registered' ||
      msg.type === 'lookup-result' ||
      msg.type === 'connect-notify' ||
      msg.type === 'error' ||
      msg.type === 'pong' ||
      msg.type === 'seq-offer-result' ||
      msg.type === 'ack'
    ) {
      p.resolve(msg, via);
    }
  }

  /** A peer's SEQ_OFFER, forwarded by the server: checked, acknowledged, remembered, announced. */
  #onSeqOffer(msg: SeqOfferMessage, via: 'udp' | 'tcp'): void {
    // The server forwards the sender's signed bytes: only the sender's key can have made them (RFC 8032 §5.1.7).
    if (!msg.peerKey.equals(this.keyPair.publicKey) || !verifyRendezvous(msg)) return;
    this.#sendVia(
      via,
      encodeRendezvous({ type: 'notify-ack', requestId: msg.requestId, connectionId: msg.connectionId }),
    );
    const seenKey = `seq/${hex(msg.nonce)}`;
    if (this.#seen.has(seenKey)) return; // a retransmission
    this.#seen.set(seenKey, true);
    if (this.#seen.size > SEEN_NOTIFY_CAP) this.#seen.delete(this.#seen.keys().next().value!);
    const event: SeqOfferEvent = { connectionId: msg.connectionId, peerKey: msg.publicKey };
    if (msg.offer) event.offer = Buffer.from(msg.offer);
    if (msg.decline !== undefined) event.decline = msg.decline;
    const key = `${hex(msg.connectionId)}/${hex(msg.publicKey)}`;
    const now = Date.now();
    for (const [k, e] of this.#seqOffers) if (e.expiresAt <= now) this.#seqOffers.delete(k);
    this.#seqOffers.delete(key);
    while (this.#seqOffers.size >= SEQ_OFFER_STORE_CAP) this.#seqOffers.delete(this.#seqOffers.keys().next().value!);
    this.#seqOffers.set(key, { event, expiresAt: now + SEQ_OFFER_STORE_TTL_MS });
    for (const w of [...this.#seqWaiters]) if (w.key === key) w.resolve(seqResult(event));
    this.emit('seq-offer', event);
  }
}
