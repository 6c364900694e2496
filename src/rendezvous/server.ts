import type { Socket } from 'node:net';
import { RequestIds } from './ids.js';
import type { DatagramTransport, RemoteInfo } from '../net/datagram.js';
import { FirstByte } from '../net/demux.js';
import { candidatePriority, dedupeCandidates, type Candidate } from '../traversal/candidate.js';
import { SharedSecretIssuer, type RelayCredentialIssuer } from '../relay/issuer.js';
import { isNatpunchError, NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { decodeSeqOffer, type SeqOfferFields } from '../wire/seq-offer.js';
import {
  decodeRendezvous,
  encodeRendezvous,
  frameTcp,
  hex,
  isSignedMessage,
  peekHeader,
  verifyRendezvous,
  MAX_CANDIDATES,
  MAX_CONNECT_NOTIFY_BYTES,
  MAX_LOOKUP_RESULT_BYTES,
  MessageType,
  PONG_BYTES,
  RENDEZVOUS_VERSION,
  TcpFrameDecoder,
  type ConnectMessage,
  type ConnectMode,
  type ReleaseNameMessage,
  type ReportMessage,
  type Endpoint,
  type EncodableMessage,
  type ErrorCodeName,
  type LookupMessage,
  type RegisterMessage,
  type SeqOfferMessage,
  type SignedMessage,
  type Target,
  type UnregisterMessage,
} from '../wire/rendezvous.js';
import type { ClusterBus, ClusterPush } from './cluster.js';
import { MemoryRegistry, DEFAULT_MAX_PEERS, DEFAULT_NAME_HOLD_MS, type PeerRecord, type Registry } from './registry.js';
import { ReplayCache, DEFAULT_MAX_REPLAY_ENTRIES } from './replay.js';
import { ByteSlab } from './slab.js';
import {
  keyId,
  nonceEntryAnswer,
  nonceEntryKind,
  nonceEntrySignatureIs,
  nonceEntrySource,
  NonceAnswer,
  packNonceEntry,
  Scratch,
  sourceId,
  withNonceAnswer,
  withNonceRebuild,
} from './compact.js';
import { formatAddress } from '../wire/ip.js';

/**
 * Defaults. Registrations double as NAT keepalives towards the server (so it can push CONNECT_NOTIFY), so the refresh
 * interval stays under the shortest common UDP mapping lifetime: RFC 4787 §4.3 (REQ-5) asks for ≥ 2 min, but
 * deployed NATs often keep idle UDP mappings only ~30 s; 25 s is what RFC 8445 §11 / RFC 6263 keepalive guidance
 * lands on. A registration lives for a few missed refreshes.
 */
export const DEFAULT_REFRESH_INTERVAL_MS = 25_000;
export const DEFAULT_TTL_MS = 90_000;
/** Signed messages older or newer than this (clock skew + transit) are stale. */
export const DEFAULT_REPLAY_WINDOW_MS = 30_000;
/** Token bucket per source IP: sustained messages per second and burst. A refreshing peer sends ~0.04/s. */
export const DEFAULT_RATE_PER_SECOND = 20;
export const DEFAULT_RATE_BURST = 40;
export const DEFAULT_MAX_RATE_SOURCES = 65_536;
/** The replay cache's hard cap (src/rendezvous/replay.ts: when full, signed messages are refused, never forgotten). */
export const DEFAULT_MAX_NONCES = DEFAULT_MAX_REPLAY_ENTRIES;
export const DEFAULT_MAX_PENDING_NOTIFIES = 10_000;
export const DEFAULT_MAX_TCP_CONNECTIONS = 1024;
/** Responder notifications are retransmitted until acknowledged (RFC 8489 §6.2.1 style doubling, shorter). */
export const DEFAULT_NOTIFY_RTO_MS = 250;
export const DEFAULT_NOTIFY_MAX_TRANSMISSIONS = 5;
export const DEFAULT_SWEEP_INTERVAL_MS = 5_000;
/**
 * How long the first SEQ_OFFER of a connection waits for the other peer's (both are sent right after the low-TTL
 * SYNs, within about one RTT of each other; the peers' SYN_SENT sockets give up well before this).
 */
export const SEQ_OFFER_PAIR_TIMEOUT_MS = 20_000;
/**
 * How long the server remembers which two keys a CONNECT introduced (SEQ_OFFERs are accepted between exactly those
 * two, for that connection id): connect() as a whole is bounded at 30 s; P2P-NAT and the offers come well inside.
 */
export const CONNECTION_RECORD_TTL_MS = 60_000;
/** Bytes queued on a TCP connection beyond which the client is too slow and is dropped. */
export const MAX_TCP_BACKLOG_BYTES = 64 * 1024;

export type StartSchedule = 'initiator-first' | 'sync';

/** How long handed-out TURN credentials stay valid (draft-uberti-behave-turn-rest suggests a day; we keep it short). */
export const DEFAULT_TURN_CREDENTIAL_TTL_S = 3600;

/**
 * Unscoped TURN credentials (the shared-secret scheme, see relay/auth.ts) for the keys the operator allows; any
 * other key gets none from this (issue 18 hole 4). Peer-relay mode gives every key scoped ones instead
 * (relay/peer-relay.ts, through `relayIssuer`).
 */
export interface TurnCredentialConfig {
  /** The TURN server's shared secret (the first `--auth-secret`). */
  secret: string;
  /** The TURN server's port on this host (serve runs it on the rendezvous' own port). */
  port: number;
  /** Default DEFAULT_TURN_CREDENTIAL_TTL_S. */
  ttlSeconds?: number;
  /** Keys (hex) that get them; 'any' hands them to every key (closed deployments only). Default: none. */
  allow?: Iterable<string> | 'any';
  /** Credentials per source IP per minute (relay/issuer.ts default). */
  ratePerMinute?: number;
}

/** What the server needs to send STUNT #1 SYN-ACKs (tcp-stunt1.ts SynAckSpoofer matches it). */
export interface SeqOfferSpoofer {
  /** Sends each of the two peers the SYN-ACK the other would have sent. Resolves with the packets sent. */
  spoof(a: unknown, b: unknown): Promise<number>;
}

export interface RendezvousServerOptions {
  /**
   * Lab/research only (needs a raw socket and a network without BCP 38 filtering): when both peers of a connection
   * have sent SEQ_OFFERs whose public address is the address each came from, spoof STUNT #1 SYN-ACKs for them.
   * The server does not own it (whoever opened it closes it).
   */
  spoofer?: SeqOfferSpoofer;
  /** Hand out unscoped TURN credentials after REGISTERED. Can also be set later with setTurnCredentials(). */
  turnCredentials?: TurnCredentialConfig;
  /**
   * Who gets relay credentials after REGISTERED and what the relay learns from introductions (peer-relay mode:
   * relay/peer-relay.ts). Replaces `turnCredentials`; can also be set later with setRelayIssuer().
   */
  relayIssuer?: RelayCredentialIssuer;
  registry?: Registry;
  /**
   * Several nodes sharing one registry (Redis): introductions for peers held by another node go there over this bus,
   * and records carry this node's id. Absent: one node (the registry may still be shared, but every peer it
   * introduces must be registered here).
   */
  cluster?: ClusterBus;
  /** For the default registry: how long a name stays reserved for its last key (default 30 days). */
  nameHoldMs?: number;
  /** Names the operator assigned to keys (name → 64 hex digits): only that key may register them, ever. */
  reservedNames?: Readonly<Record<string, string>>;
  /** Count peers' signed outcome reports (REPORT) and pass them to `observer` (default true). */
  reports?: boolean;
  /** Outcome reports accepted per key per minute at most (default DEFAULT_REPORTS_PER_MINUTE). */
  reportsPerMinute?: number;
  /** Told about registrations, introductions, reports and errors (metrics, dashboards). Must not throw. */
  observer?: RendezvousObserver;
  logger?: Logger;
  refreshIntervalMs?: number;
  ttlMs?: number;
  replayWindowMs?: number;
  rateLimit?: { perSecond: number; burst: number };
  maxPeers?: number;
  maxRateSources?: number;
  /** Replay cache hard cap; above it signed messages get SERVER_FULL (nothing inside the window is forgotten). */
  maxNonces?: number;
  maxPendingNotifies?: number;
  maxTcpConnections?: number;
  /** Idle TCP connections are closed after this long (default: the registration TTL). */
  tcpIdleTimeoutMs?: number;
  notifyRtoMs?: number;
  notifyMaxTransmissions?: number;
  sweepIntervalMs?: number;
  /**
   * 'initiator-first' (default): the initiator probes at once; the responder waits only as long as its notification
   * would otherwise arrive before the initiator's, so neither side's first probes hit a closed NAT. 'sync': both
   * start at the same moment, half the larger RTT after the server sends (DCUtR-style synchronisation).
   */
  schedule?: StartSchedule;
  /** Clock (ms since the epoch); replaceable for tests. */
  now?: () => number;
}

/** Outcome reports one key may send per minute (a peer makes a few connections a minute; more are dropped). */
export const DEFAULT_REPORTS_PER_MINUTE = 30;

/** What the server tells an observer (metrics and the dashboard, src/server/metrics.ts). */
export type RendezvousEvent =
  | { type: 'register'; publicKey: Buffer; name?: string; reflexive: Endpoint; refresh: boolean }
  | { type: 'unregister'; publicKey: Buffer; reason: 'unregister' | 'expired' }
  | { type: 'lookup'; found: boolean }
  | { type: 'introduction'; connectionId: Buffer; from: Buffer; to: Buffer; remote: boolean }
  | { type: 'report'; report: ReportMessage }
  | { type: 'refused'; request: string; code: ErrorCodeName; message: string; from: string };

export interface RendezvousObserver {
  onEvent(event: RendezvousEvent): void;
}

export interface RendezvousStats {
  received: number;
  sent: number;
  malformed: number;
  unknownType: number;
  rateLimited: number;
  badSignature: number;
  stale: number;
  replays: number;
  retransmitsAnswered: number;
  registrations: number;
  refreshes: number;
  unregistrations: number;
  nameTaken: number;
  lookups: number;
  connects: number;
  notifySent: number;
  notifyRetransmits: number;
  notifyAcked: number;
  notifyGivenUp: number;
  notFound: number;
  serverFull: number;
  expired: number;
  pings: number;
  rttSamples: number;
  tcpAccepted: number;
  tcpRejected: number;
  internalErrors: number;
  /** SEQ_OFFERs admitted (signature, window and replay checks passed). */
  seqOffers: number;
  /** SEQ_OFFERs forwarded to the other peer (first transmissions). */
  seqForwarded: number;
  /** Pairs of offers for which STUNT #1 SYN-ACKs were spoofed. */
  seqSpoofed: number;
  /** SEQ_OFFERs answered with an ERROR (unknown sender or peer, rate limit, full). */
  seqRefused: number;
  /** UDP answers not sent (or cut short) because they would have been larger than their request. */
  amplificationDropped: number;
  /** Requests answered TOO_SMALL (unpadded LOOKUP / CONNECT whose answer is larger). */
  tooSmall: number;
  /** Push transmissions withheld from an address that never proved it is there (#push). */
  pushesWithheld: number;
  /** Introductions handed to another node (cluster). */
  remoteIntroductions: number;
  /** Pushes received from other nodes and delivered to a peer here. */
  remoteDelivered: number;
  namesReleased: number;
  reports: number;
  reportsDropped: number;
  /** MOVE messages sent while draining. */
  moves: number;
  /** Gauges. */
  peers: number;
  pendingNotifies: number;
  tcpOpen: number;
}

/**
 * Where a message came from and answers go. A UDP channel made for one received datagram carries `budget`: the
 * bytes the server may still send back for it (anti-amplification: never more than the request had, see #send).
 * Channels kept for later pushes (registrations, connection records) have no budget: pushes are bounded by #push.
 */
type Channel =
  | {
      kind: 'udp';
      transport: DatagramTransport;
      address: string;
      port: number;
      observed: Endpoint;
      ip: string;
      /** sourceId() of (transport, address, port): equal for equal sources, compact enough to keep. */
      source: string;
      budget?: { left: number };
    }
  | { kind: 'tcp'; socket: Socket; observed: Endpoint; ip: string; source: string };

/** A channel to keep (for pushes later): without the per-request answer budget. */
function kept(ch: Channel): Channel {
  if (ch.kind !== 'udp' || !ch.budget) return ch;
  const { transport, address, port, observed, ip, source } = ch;
  return { kind: 'udp', transport, address, port, observed, ip, source };
}

interface ChannelEntry {
  channel: Channel;
  rttMs?: number;
  /** The request id of the peer's latest REGISTER: MOVE carries it, so only we can make the peer move. */
  registerRequestId?: number;
  /** Forgotten after this (the registry's expiry sweep runs on one node; every node drops its own channels). */
  expiresAt: number;
  /** Whole seconds since the epoch until which the channel's source counts as proven (#markVerified); 0: never. */
  verifiedUntil?: number;
}

/**
 * A registered peer's UDP channel entry as bytes in a ByteSlab (slab.ts: no object per peer, and the rewrites of
 * every refresh and PONG go over the old bytes instead of leaving a string as old-generation garbage): transport
 * index u8, registerRequestId u32, expiresAt in whole seconds u32 (rounded up), rtt ms u16 (0xffff: unknown),
 * verifiedUntil in whole seconds u32, sourceId. TCP channels (a socket object each, at most maxTcpConnections) stay
 * ChannelEntry objects.
 */
const NO_RTT = 0xffff;
const PACKED_HEAD = 15;
const PACKED_EXPIRES_AT = 5;
const PACKED_VERIFIED_UNTIL = 11;

/** A proof is rewritten only when it would move by more than this (seconds): most acks then leave the entry as is. */
const VERIFIED_REWRITE_S = 10;

/** Whether `b` holds the one-byte string `s` at `offset`, to its end. */
function bytesEndWith(b: Buffer, offset: number, s: string): boolean {
  if (b.length !== offset + s.length) return false;
  for (let i = 0; i < s.length; i++) if (b[offset + i] !== s.charCodeAt(i)) return false;
  return true;
}

interface Bucket {
  tokens: number;
  last: number;
  lastErrorAt: number;
}

interface PendingNotify {
  bytes: Buffer;
  channel: Channel;
  transmissions: number;
  timer: NodeJS.Timeout;
  /** 'notify': a CONNECT_NOTIFY (counted in notify*); 'seq': a forwarded SEQ_OFFER. */
  kind: 'notify' | 'seq';
  /** The registered peer it goes to, when it goes to a registered channel (its acknowledgement proves the source). */
  id?: string;
}

/** The registered peer a push goes to: its key id and channel entry (where the source's proof is kept). */
interface PushPeer {
  id: string;
  entry: ChannelEntry;
}

/** The first SEQ_OFFER of a connection, waiting for the other peer's. */
/** Who a CONNECT introduced to whom, and where the initiator asked from (it need not be registered). */
interface ConnectionRecord {
  initiator: string;
  responder: string;
  initiatorChannel: Channel;
  expiresAt: number;
}

interface WaitingOffer {
  offer: SeqOfferFields | undefined;
  /** Spoofing-eligible: a spoofer is configured, and the offer's public address is where it came from. */
  eligible: boolean;
  expiresAt: number;
}

/** `::ffff:1.2.3.4` → `1.2.3.4`, so a peer on an IPv4 socket can use the address it is told. */
function unmapV4(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function channelSource(ch: Channel): string {
  return ch.source;
}

function srflxCandidate(e: Endpoint): Candidate {
  return {
    type: 'srflx',
    transport: e.transport,
    address: e.address,
    port: e.port,
    priority: candidatePriority('srflx'),
  };
}

function sameEndpoint(c: Candidate, e: Endpoint): boolean {
  return c.transport === e.transport && c.address === e.address && c.port === e.port;
}

/** Candidates to tell the other side: the peer's own, plus what the server observed, within MAX_CANDIDATES. */
function withReflexive(own: readonly Candidate[], observed: readonly Endpoint[]): Candidate[] {
  // An observed address that is also one of the peer's own (a public host address) keeps its own, better type.
  const extra = observed.filter((e) => !own.some((c) => sameEndpoint(c, e))).map(srflxCandidate);
  const keep = dedupeCandidates([...own]);
  return dedupeCandidates([...keep.slice(0, MAX_CANDIDATES - extra.length), ...extra]);
}

/**
 * The rendezvous server. It owns no sockets: `attach()` it to DatagramTransports (it ignores every datagram whose
 * first byte is not 0xF0, so STUN and TURN can share the port) and hand it TCP connections with `handleTcp()`
 * (the fallback for peers whose UDP is blocked; a rendezvous TCP connection's first byte is 0xF0).
 *
 * It only ever learns public keys, names and addresses: session keys and data never pass through it, and it cannot
 * sign for a peer (registrations and connect requests are signed by the peer's Ed25519 key).
 */
export class RendezvousServer {
  readonly registry: Registry;
  #log: Logger;
  #now: () => number;
  #refreshMs: number;
  #ttlMs: number;
  #windowMs: number;
  #rate: { perSecond: number; burst: number };
  #maxRateSources: number;
  #maxPending: number;
  #maxTcp: number;
  #tcpIdleMs: number;
  #notifyRto: number;
  #notifyMax: number;
  #schedule: StartSchedule;
  #maxPeers: number;
  #issuer: RelayCredentialIssuer | undefined;
  #spoofer: SeqOfferSpoofer | undefined;
  /** First offers by `connectionId/from/to` (hex), bounded by maxPendingNotifies. */
  #seqOffers = new Map<string, WaitingOffer>();
  #connections = new Map<string, ConnectionRecord>();

  #detach = new Set<() => void>();
  #tcp = new Map<Socket, Set<string>>();
  /**
   * keyId → the peer's channel: its address in #channelBytes (UDP) or a ChannelEntry (TCP). Read with #entry,
   * written with #setEntry, removed with #unbind.
   */
  #channels = new Map<string, number | ChannelEntry>();
  #channelBytes = new ByteSlab();
  /** Attached transports; a packed channel names its transport by index here. */
  #transports: Array<DatagramTransport | undefined> = [];
  #scratch = new Scratch();
  /** nonce (latin1) → packNonceEntry(source, signature, answer). */
  #nonces: ReplayCache<string>;
  /**
   * Whether a registration's record stands in for its REGISTER's replay-cache entry (#register): the registry keeps
   * a record until it expires or this server deletes it (Registry.recordsGuardReplays), and a registration outlives
   * twice the replay window, so no REGISTER older than the record's newest can be inside the window once the
   * record expires. Then the cache holds no entry per registered peer.
   */
  #recordGuards: boolean;
  /**
   * With #recordGuards: keyId → the timestamp of the UNREGISTER that withdrew the key, until that timestamp leaves
   * the window; REGISTERs of the key at or before it are refused (their replay entries are gone).
   */
  #withdrawn: ReplayCache<number>;
  #cluster: ClusterBus | undefined;
  #offCluster: (() => void) | undefined;
  #reserved: Map<string, string>;
  #reports: boolean;
  #reportsPerMinute: number;
  /** Reports per key in the current minute. */
  #reportCounts = new Map<string, { minute: number; n: number }>();
  #observer: RendezvousObserver | undefined;
  #draining = false;
  #buckets = new Map<string, Bucket>();
  #pending = new Map<string, PendingNotify>();
  readonly #ids = new RequestIds();
  /** PING request id (as int32, a small integer for V8) → who was pinged. */
  #pings = new Map<number, { id: string; source: string; expiresAt: number }>();
  /**
   * Sources (transport:address:port) that proved they receive what we send there: they answered our PING (its
   * random request id) or acknowledged a push. Only these get pushes retransmitted (#push). A registered peer's proof
   * is kept in its channel entry (verifiedUntil); this map holds the others' (an initiator that only asks), bounded
   * by maxPeers.
   */
  #verified = new Map<string, number>(); // sourceId → verified until (whole seconds since the epoch)
  #sweep: NodeJS.Timeout;
  #closed = false;
  #stats: Omit<RendezvousStats, 'peers' | 'pendingNotifies' | 'tcpOpen'> = {
    received: 0,
    sent: 0,
    malformed: 0,
    unknownType: 0,
    rateLimited: 0,
    badSignature: 0,
    stale: 0,
    replays: 0,
    retransmitsAnswered: 0,
    registrations: 0,
    refreshes: 0,
    unregistrations: 0,
    nameTaken: 0,
    lookups: 0,
    connects: 0,
    notifySent: 0,
    notifyRetransmits: 0,
    notifyAcked: 0,
    notifyGivenUp: 0,
    notFound: 0,
    serverFull: 0,
    expired: 0,
    pings: 0,
    rttSamples: 0,
    tcpAccepted: 0,
    tcpRejected: 0,
    internalErrors: 0,
    seqOffers: 0,
    seqForwarded: 0,
    seqSpoofed: 0,
    seqRefused: 0,
    amplificationDropped: 0,
    tooSmall: 0,
    pushesWithheld: 0,
    remoteIntroductions: 0,
    remoteDelivered: 0,
    namesReleased: 0,
    reports: 0,
    reportsDropped: 0,
    moves: 0,
  };

  constructor(options: RendezvousServerOptions = {}) {
    this.#maxPeers = options.maxPeers ?? DEFAULT_MAX_PEERS;
    this.setTurnCredentials(options.turnCredentials);
    if (options.relayIssuer) this.setRelayIssuer(options.relayIssuer);
    this.registry =
      options.registry ??
      new MemoryRegistry({ maxPeers: this.#maxPeers, nameHoldMs: options.nameHoldMs ?? DEFAULT_NAME_HOLD_MS });
    this.#cluster = options.cluster;
    this.#offCluster = this.#cluster?.onPush((push) => this.#deliverRemote(push));
    this.#reserved = new Map(Object.entries(options.reservedNames ?? {}).map(([n, k]) => [n, k.toLowerCase()]));
    this.#reports = options.reports ?? true;
    this.#reportsPerMinute = options.reportsPerMinute ?? DEFAULT_REPORTS_PER_MINUTE;
    this.#observer = options.observer;
    this.#log = options.logger ?? silentLogger;
    this.#now = options.now ?? Date.now;
    this.#refreshMs = options.refreshIntervalMs ?? DEFAULT_REFRESH_INTERVAL_MS;
    this.#ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
    this.#windowMs = options.replayWindowMs ?? DEFAULT_REPLAY_WINDOW_MS;
    this.#rate = options.rateLimit ?? { perSecond: DEFAULT_RATE_PER_SECOND, burst: DEFAULT_RATE_BURST };
    this.#maxRateSources = options.maxRateSources ?? DEFAULT_MAX_RATE_SOURCES;
    this.#nonces = new ReplayCache({ maxEntries: options.maxNonces ?? DEFAULT_MAX_NONCES });
    this.#withdrawn = new ReplayCache({ maxEntries: options.maxNonces ?? DEFAULT_MAX_NONCES });
    this.#recordGuards = this.registry.recordsGuardReplays === true && this.#ttlMs > 2 * this.#windowMs;
    this.#maxPending = options.maxPendingNotifies ?? DEFAULT_MAX_PENDING_NOTIFIES;
    this.#maxTcp = options.maxTcpConnections ?? DEFAULT_MAX_TCP_CONNECTIONS;
    this.#tcpIdleMs = options.tcpIdleTimeoutMs ?? this.#ttlMs;
    this.#notifyRto = options.notifyRtoMs ?? DEFAULT_NOTIFY_RTO_MS;
    this.#notifyMax = options.notifyMaxTransmissions ?? DEFAULT_NOTIFY_MAX_TRANSMISSIONS;
    this.#schedule = options.schedule ?? 'initiator-first';
    this.#spoofer = options.spoofer;
    this.#sweep = setInterval(() => void this.sweep(), options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS);
    this.#sweep.unref();
  }

  /** Starts (or, with undefined, stops) handing out unscoped TURN credentials to the allowed keys that register. */
  setTurnCredentials(config: TurnCredentialConfig | undefined): void {
    if (config && (!config.secret || !Number.isInteger(config.port) || config.port <= 0 || config.port > 0xffff)) {
      throw new NatpunchError('BAD_ARGUMENT', 'TURN credentials need a non-empty secret and a port');
    }
    this.#issuer = config
      ? new SharedSecretIssuer({
          secret: config.secret,
          port: config.port,
          ttlSeconds: config.ttlSeconds ?? DEFAULT_TURN_CREDENTIAL_TTL_S,
          ...(config.allow !== undefined ? { allow: config.allow } : {}),
          ...(config.ratePerMinute !== undefined ? { ratePerMinute: config.ratePerMinute } : {}),
        })
      : undefined;
  }

  /** Starts (or, with undefined, stops) handing out relay credentials through `issuer` (see RendezvousServerOptions). */
  setRelayIssuer(issuer: RelayCredentialIssuer | undefined): void {
    this.#issuer = issuer;
  }

  /** Starts answering rendezvous datagrams arriving on `transport`. Returns a function that detaches again. */
  attach(transport: DatagramTransport): () => void {
    let index = this.#transports.indexOf(undefined);
    if (index < 0) index = this.#transports.push(transport) - 1;
    else this.#transports[index] = transport;
    const off = transport.onMessage((msg: Buffer, rinfo: RemoteInfo) => {
      if (msg.length === 0 || msg[0] !== FirstByte.RENDEZVOUS) return; // STUN, TURN, probes: not ours
      const observed: Endpoint = { transport: 'udp', address: unmapV4(rinfo.address), port: rinfo.port };
      this.#receive(msg, {
        kind: 'udp',
        transport,
        address: rinfo.address,
        port: rinfo.port,
        observed,
        ip: observed.address,
        source: sourceId(this.#scratch, 'udp', rinfo.address, rinfo.port),
        budget: { left: msg.length },
      });
    });
    const detach = () => {
      off();
      if (this.#transports[index] === transport) this.#transports[index] = undefined;
      this.#detach.delete(detach);
    };
    this.#detach.add(detach);
    return detach;
  }

  /**
   * Serves one TCP connection (length-prefixed frames, see TcpFrameDecoder). `head` is whatever a dispatcher already
   * read from the socket (starting with 0xF0). The server owns the socket from now on and destroys it on close().
   */
  handleTcp(socket: Socket, head?: Buffer): void {
    if (this.#closed || this.#tcp.size >= this.#maxTcp || !socket.remoteAddress) {
      this.#stats.tcpRejected++;
      socket.destroy();
      return;
    }
    this.#stats.tcpAccepted++;
    const observed: Endpoint = {
      transport: 'tcp',
      address: unmapV4(socket.remoteAddress),
      port: socket.remotePort ?? 0,
    };
    const channel: Channel = {
      kind: 'tcp',
      socket,
      observed,
      ip: observed.address,
      source: sourceId(this.#scratch, 'tcp', observed.address, observed.port),
    };
    this.#tcp.set(socket, new Set());
    const decoder = new TcpFrameDecoder();
    socket.setNoDelay(true);
    socket.setTimeout(this.#tcpIdleMs, () => socket.destroy());
    socket.on('error', () => {});
    socket.on('close', () => {
      for (const id of this.#tcp.get(socket) ?? []) {
        const e = this.#channels.get(id);
        if (typeof e === 'object' && e.channel === channel) this.#channels.delete(id);
      }
      this.#tcp.delete(socket);
    });
    const onData = (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = decoder.push(chunk);
      } catch {
        this.#stats.malformed++;
        socket.destroy();
        return;
      }
      for (const f of frames) this.#receive(f, channel);
    };
    if (head?.length) onData(head);
    socket.on('data', onData);
  }

  stats(): RendezvousStats {
    return { ...this.#stats, peers: this.#channels.size, pendingNotifies: this.#pending.size, tcpOpen: this.#tcp.size };
  }

  /** Drops expired registrations, replay-cache entries, idle rate buckets and stale ping records. */
  async sweep(): Promise<void> {
    const now = this.#now();
    try {
      const gone = await this.registry.expire(now);
      for (const key of gone) {
        this.#stats.expired++;
        this.#unbind(keyId(key));
        this.#emit({ type: 'unregister', publicKey: key, reason: 'expired' });
      }
    } catch (err) {
      this.#stats.internalErrors++;
      this.#log.warn({ err }, 'rendezvous registry expire failed');
    }
    this.#nonces.sweep(now);
    this.#withdrawn.sweep(now);
    for (const [ip, b] of this.#buckets) {
      if (now - b.last > (this.#rate.burst / this.#rate.perSecond) * 1000) this.#buckets.delete(ip);
    }
    for (const [id, p] of this.#pings) if (p.expiresAt <= now) this.#pings.delete(id);
    for (const [src, until] of this.#verified) if (until * 1000 <= now) this.#verified.delete(src);
    for (const [k, o] of this.#seqOffers) if (o.expiresAt <= now) this.#seqOffers.delete(k);
    for (const [k, c] of this.#connections) if (c.expiresAt <= now) this.#connections.delete(k);
    for (const [id, e] of this.#channels) {
      const expiresAt =
        typeof e === 'number' ? this.#channelBytes.readUInt32(e, PACKED_EXPIRES_AT) * 1000 : e.expiresAt;
      if (expiresAt <= now) this.#unbind(id);
    }
    const minute = Math.floor(now / 60_000);
    for (const [k, c] of this.#reportCounts) if (c.minute !== minute) this.#reportCounts.delete(k);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#offCluster?.();
    for (const d of [...this.#detach]) d();
    for (const s of this.#tcp.keys()) s.destroy();
    this.#tcp.clear();
    for (const p of this.#pending.values()) clearTimeout(p.timer);
    this.#pending.clear();
    this.#channels.clear();
    this.#channelBytes = new ByteSlab();
    this.#nonces.clear();
    this.#withdrawn.clear();
    this.#buckets.clear();
    this.#pings.clear();
    this.#verified.clear();
    this.#seqOffers.clear();
    this.#connections.clear();
  }

  // -------------------------------------------------------------------------------------------------------------

  #receive(bytes: Buffer, channel: Channel): void {
    if (this.#closed) return;
    this.#stats.received++;
    if (!this.#take(channel, bytes)) return;
    let msg;
    try {
      msg = decodeRendezvous(bytes);
    } catch (err) {
      this.#stats.malformed++;
      const h = peekHeader(bytes);
      if (h && isNatpunchError(err)) {
        const code: ErrorCodeName = h.version !== RENDEZVOUS_VERSION ? 'UNSUPPORTED_VERSION' : 'MALFORMED';
        // Never answer with more bytes than arrived (no amplification from spoofed sources).
        const reply = this.#errorBytes(h.requestId, h.type, code, err.message.slice(0, 80));
        if (reply.length <= bytes.length) this.#send(channel, reply);
      }
      return;
    }
    this.#handle(msg, channel).catch((err: unknown) => {
      this.#stats.internalErrors++;
      this.#log.warn({ err }, 'rendezvous handler failed');
      // Storage unreachable (Redis down) and the like: say so, so the peer retries instead of failing over or
      // waiting out its timeout; never more bytes than the request (no amplification).
      const reply = this.#errorBytes(
        msg.requestId,
        typeCode(msg.type),
        'SERVER_FULL',
        'temporarily unavailable; retry',
        1000,
      );
      if (reply.length <= bytes.length) this.#send(channel, reply);
    });
  }

  async #handle(msg: ReturnType<typeof decodeRendezvous>, channel: Channel): Promise<void> {
    switch (msg.type) {
      case 'ping':
        this.#stats.pings++;
        return this.#reply(channel, { type: 'pong', requestId: msg.requestId, echo: msg.time, time: this.#now() });
      case 'pong': {
        const p = this.#pings.get(msg.requestId | 0);
        if (!p || p.source !== channelSource(channel)) return;
        this.#pings.delete(msg.requestId | 0);
        const entry = this.#entry(p.id);
        const rtt = this.#now() - msg.echo;
        if (entry && entry.channel.source === p.source) {
          // One write for both: the proof of the source and the RTT.
          entry.verifiedUntil = this.#verifiedUntil();
          if (rtt >= 0 && rtt < 60_000) {
            entry.rttMs = rtt;
            this.#stats.rttSamples++;
          }
          this.#setEntry(p.id, entry);
        } else this.#markVerified(p.source);
        return;
      }
      case 'notify-ack': {
        // A CONNECT_NOTIFY is acked by connection id; a forwarded SEQ_OFFER by connection id and its request id.
        for (const key of [hex(msg.connectionId), `seq/${hex(msg.connectionId)}/${msg.requestId}`]) {
          const p = this.#pending.get(key);
          if (p && channelSource(p.channel) === channelSource(channel)) {
            clearTimeout(p.timer);
            this.#pending.delete(key);
            this.#markVerified(channelSource(channel), p.id);
            if (p.kind === 'notify') this.#stats.notifyAcked++;
          }
        }
        return;
      }
      case 'register':
        return this.#register(msg, channel);
      case 'lookup':
        return this.#lookup(msg, channel);
      case 'connect':
        return this.#connect(msg, channel);
      case 'unregister':
        return this.#unregister(msg, channel);
      case 'seq-offer':
        return this.#seqOffer(msg, channel);
      case 'release-name':
        return this.#releaseName(msg, channel);
      case 'report':
        return this.#report(msg, channel);
      default:
        // Server-to-client messages sent to the server.
        this.#stats.unknownType++;
        return;
    }
  }

  /** The token bucket of an IP address, refilled (continuously) up to now. */
  #bucket(ip: string, now: number): Bucket {
    let b = this.#buckets.get(ip);
    if (!b) {
      if (this.#buckets.size >= this.#maxRateSources) {
        const oldest = this.#buckets.keys().next().value;
        if (oldest !== undefined) this.#buckets.delete(oldest);
      }
      b = { tokens: this.#rate.burst, last: now, lastErrorAt: 0 };
      this.#buckets.set(ip, b);
    }
    b.tokens = Math.min(this.#rate.burst, b.tokens + ((now - b.last) / 1000) * this.#rate.perSecond);
    b.last = now;
    return b;
  }

  /**
   * Charges a destination for an unsolicited message (a responder's CONNECT_NOTIFY), so no address can be flooded
   * through the server by many initiators: what the server pushes to an IP is bounded by the same rate.
   */
  #charge(ip: string): boolean {
    const b = this.#bucket(ip, this.#now());
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Token bucket per source IP (both transports); one token per message. */
  #take(channel: Channel, bytes: Buffer): boolean {
    const now = this.#now();
    const b = this.#bucket(channel.ip, now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return true;
    }
    this.#stats.rateLimited++;
    // Tell the sender once a second at most, and never with more bytes than it sent.
    const h = peekHeader(bytes);
    if (h && now - b.lastErrorAt >= 1000) {
      b.lastErrorAt = now;
      const retryAfterMs = Math.ceil(((1 - b.tokens) / this.#rate.perSecond) * 1000);
      const reply = this.#errorBytes(h.requestId, h.type, 'RATE_LIMITED', '', retryAfterMs);
      if (reply.length <= bytes.length) this.#send(channel, reply);
    }
    return false;
  }

  /**
   * Replay protection for signed messages: the signature must verify, the timestamp must be inside the window, and a
   * nonce may be used once. A retransmission (same signature from the same source) gets the cached answer again;
   * the same message from elsewhere is a replay. 'new': the caller handles the message; 'rebuild': a retransmission
   * whose answer the caller makes again (NonceAnswer.REBUILD); 'done': nothing more to do.
   */
  #admit(msg: SignedMessage, channel: Channel): 'new' | 'rebuild' | 'done' {
    const now = this.#now();
    const nonce = msg.nonce.toString('latin1');
    const seen = this.#nonces.get(nonce);
    if (seen !== undefined && msg.signature && nonceEntrySignatureIs(seen, msg.signature)) {
      if (nonceEntrySource(seen) === channelSource(channel)) {
        if (nonceEntryKind(seen) === NonceAnswer.REBUILD) return 'rebuild';
        const answer = nonceEntryAnswer(seen);
        if (answer) {
          this.#stats.retransmitsAnswered++;
          this.#send(channel, answer);
        }
        return 'done';
      }
    }
    if (!verifyRendezvous(msg, this.#scratch.buf)) {
      this.#stats.badSignature++;
      this.#error(channel, msg, 'BAD_SIGNATURE', 'signature does not verify for the key in the message', 0, false);
      return 'done';
    }
    if (Math.abs(now - msg.timestamp) > this.#windowMs) {
      this.#stats.stale++;
      this.#error(
        channel,
        msg,
        'STALE',
        `timestamp is ${Math.round((now - msg.timestamp) / 1000)} s off the server clock; check the clock`,
        0,
        false,
      );
      return 'done';
    }
    if (seen !== undefined) {
      this.#stats.replays++;
      this.#error(channel, msg, 'REPLAY', 'this signed message was already used', 0, false);
      return 'done';
    }
    // Remembered until its timestamp leaves the window (then the window check refuses it). A full cache refuses
    // the message rather than forget one that could still be replayed.
    if (this.#nonces.full) this.#nonces.sweep(now);
    if (
      !this.#nonces.add(
        nonce,
        packNonceEntry(this.#scratch, channelSource(channel), msg.signature!),
        this.#nonceExpiry(msg),
      )
    ) {
      this.#stats.serverFull++;
      this.#error(
        channel,
        msg,
        'SERVER_FULL',
        'too many signed messages right now; retry shortly',
        Math.max(1000, this.#nonces.msUntilRoom(now)),
        false,
      );
      return 'done';
    }
    return 'new';
  }

  /** When a signed message's replay entry may go: its timestamp has then left the window (+ 1 s of margin). */
  #nonceExpiry(msg: SignedMessage): number {
    return msg.timestamp + this.#windowMs + 1000;
  }

  #remember(msg: SignedMessage, response: Buffer): void {
    const nonce = msg.nonce.toString('latin1');
    const e = this.#nonces.get(nonce);
    if (e !== undefined) this.#nonces.replace(nonce, withNonceAnswer(this.#scratch, e, response));
  }

  /** A retransmission of `msg` gets its answer rebuilt (#connectAgain), none is kept. */
  #rememberRebuild(msg: SignedMessage): void {
    const nonce = msg.nonce.toString('latin1');
    const e = this.#nonces.get(nonce);
    if (e !== undefined) this.#nonces.replace(nonce, withNonceRebuild(this.#scratch, e));
  }

  /** Drops `msg`'s replay entry: the key's registration record guards it from now on (#recordGuards). */
  #forgetNonce(msg: SignedMessage): void {
    this.#nonces.delete(msg.nonce.toString('latin1'), this.#nonceExpiry(msg));
  }

  async #register(msg: RegisterMessage, channel: Channel): Promise<void> {
    if (this.#admit(msg, channel) !== 'new') return;
    const now = this.#now();
    if (this.#draining) {
      // Going away: the peer should register elsewhere (it was or will be told with MOVE).
      this.#stats.serverFull++;
      return this.#error(channel, msg, 'SERVER_FULL', 'this server is shutting down; register with another one', 5_000);
    }
    const operatorKey = msg.name !== undefined ? this.#reserved.get(msg.name) : undefined;
    if (operatorKey !== undefined && operatorKey !== hex(msg.publicKey)) {
      this.#stats.nameTaken++;
      return this.#error(
        channel,
        msg,
        'NAME_TAKEN',
        `name "${msg.name}" is assigned to another key by the operator of this server`,
      );
    }
    const id = keyId(msg.publicKey); // one string for the channel map and the ping record
    const existing = await this.registry.get(msg.publicKey, now);
    // Timestamps only move forward per key, so an older REGISTER can never be replayed, even after its replay entry
    // is gone (#recordGuards drops it once the record holds its timestamp).
    if (existing && msg.timestamp < existing.lastTimestamp) {
      this.#stats.stale++;
      return this.#error(channel, msg, 'STALE', 'a newer registration for this key exists');
    }
    if (existing && msg.timestamp === existing.lastTimestamp) return this.#registerAgain(msg, channel, id, existing);
    const withdrawn = existing ? undefined : this.#withdrawn.get(id);
    if (withdrawn !== undefined && msg.timestamp <= withdrawn) {
      this.#stats.stale++;
      return this.#error(channel, msg, 'STALE', 'the key unregistered after this registration was signed');
    }
    const reflexive = channel.observed;
    const reachable = msg.reachable || msg.candidates.some((c) => c.type === 'host' && sameEndpoint(c, reflexive));
    const record: PeerRecord = {
      publicKey: msg.publicKey,
      candidates: dedupeCandidates(msg.candidates).slice(0, MAX_CANDIDATES - 1),
      reflexive,
      reachable,
      registeredAt: existing?.registeredAt ?? now,
      expiresAt: now + this.#ttlMs,
      lastTimestamp: msg.timestamp,
    };
    if (msg.name !== undefined) record.name = msg.name;
    const rtt = msg.rttMs || existing?.rttMs;
    if (rtt) record.rttMs = rtt;
    if (this.#cluster) record.node = this.#cluster.nodeId;
    const result = await this.registry.put(record, now, id);
    if (result === 'name-taken') {
      this.#stats.nameTaken++;
      const held = await this.registry.reservation(msg.name!, now);
      // Names are bound to keys (issue 18): say until when, so the owner of the name can tell squatting from a mistake.
      const until = held ? new Date(held.until).toISOString().replace(/\.\d{3}Z$/, 'Z') : undefined;
      const why = held?.live
        ? `name "${msg.name}" is registered by another key`
        : `name "${msg.name}" is reserved for the key that last held it`;
      const retry = held ? Math.min(0xffffffff, Math.max(0, held.until - now)) : 0;
      return this.#error(channel, msg, 'NAME_TAKEN', until ? `${why} until ${until}` : why, retry);
    }
    if (result === 'full') {
      this.#stats.serverFull++;
      return this.#error(channel, msg, 'SERVER_FULL', 'registry is full', 30_000);
    }
    if (existing) this.#stats.refreshes++;
    else this.#stats.registrations++;
    this.#bind(id, channel, msg.requestId, now);
    // (Events are built only for an observer: serve has one only with its admin endpoint.)
    if (this.#observer)
      this.#emit({
        type: 'register',
        publicKey: msg.publicKey,
        ...(msg.name !== undefined ? { name: msg.name } : {}),
        reflexive,
        refresh: Boolean(existing),
      });
    // Relay credentials follow REGISTERED (a refresh gets new ones only when the old are half spent, relay/issuer.ts,
    // or when the peer says the announced ones never arrived).
    const credentials = this.#issuer?.issue(
      msg.publicKey,
      reflexive,
      existing !== undefined && !msg.wantCredentials,
      now,
    );
    const reply = this.#registered(msg, reflexive, now, reachable, Boolean(credentials));
    // The record now holds this REGISTER's timestamp: older and equal ones are refused or answered (#registerAgain)
    // from it, so its replay entry is not kept (with #recordGuards; otherwise it keeps the answer as for any message).
    if (this.#recordGuards) this.#forgetNonce(msg);
    else this.#remember(msg, reply);
    this.#send(channel, reply);
    if (credentials) this.#reply(channel, { type: 'turn-credentials', requestId: msg.requestId, ...credentials });
    // Guarded: the hex keys cost more than the rest of the log call when debug is off (the usual case).
    if (this.#log.isLevelEnabled('debug'))
      this.#log.debug({ key: hex(msg.publicKey), name: msg.name, reflexive }, 'rendezvous register');
    // Measure the RTT to the peer (the answer comes back as PONG) to schedule simultaneous starts later.
    if (this.#pings.size < this.#maxPeers) {
      // Random, not from #ids: answering it proves the peer receives at this address (anti-amplification), so it
      // must not be guessable.
      const requestId = this.#ids.next();
      this.#pings.set(requestId | 0, {
        id,
        source: channelSource(channel),
        expiresAt: now + 10_000,
      });
      // Padded to PONG's size so the peer's answer is no larger than our question (it proves the address too).
      this.#send(channel, encodeRendezvous({ type: 'ping', requestId, time: now }, undefined, { padTo: PONG_BYTES }));
    }
  }

  /**
   * A REGISTER with the live registration's own timestamp: a retransmission when it comes from where the
   * registration was made (answered with the REGISTERED it got, rebuilt from the record), else a replay. Reached when
   * its replay entry is gone (#recordGuards) or, with a shared registry, on a node that did not see the original.
   */
  #registerAgain(msg: RegisterMessage, channel: Channel, id: string, existing: PeerRecord): void {
    const bound = this.#entry(id);
    if (!bound || channelSource(bound.channel) !== channelSource(channel)) {
      this.#stats.replays++;
      return this.#error(channel, msg, 'REPLAY', 'this signed message was already used');
    }
    if (this.#recordGuards) this.#forgetNonce(msg); // #admit made it again
    this.#stats.retransmitsAnswered++;
    // The first answer was lost, and relay credentials that followed it most likely too: issue them again (the
    // issuer's rate limit bounds how often; they are stateless, the earlier ones stay valid).
    const credentials = this.#issuer?.issue(msg.publicKey, existing.reflexive, false, this.#now());
    const serverTime = existing.expiresAt - this.#ttlMs;
    this.#send(
      channel,
      this.#registered(msg, existing.reflexive, serverTime, existing.reachable, Boolean(credentials)),
    );
    if (credentials) this.#reply(channel, { type: 'turn-credentials', requestId: msg.requestId, ...credentials });
  }

  /** REGISTERED answering `msg`; it says so when relay credentials follow (TURN_CREDENTIALS, same request id). */
  #registered(
    msg: RegisterMessage,
    reflexive: Endpoint,
    serverTime: number,
    reachable: boolean,
    credentialsFollow: boolean,
  ): Buffer {
    return encodeRendezvous({
      type: 'registered',
      requestId: msg.requestId,
      reflexive,
      refreshMs: this.#refreshMs,
      ttlMs: this.#ttlMs,
      serverTime,
      reachable,
      ...(credentialsFollow ? { credentialsFollow } : {}),
    });
  }

  async #resolve(target: Target, now: number): Promise<PeerRecord | undefined> {
    return 'key' in target ? this.registry.get(target.key, now) : this.registry.getByName(target.name, now);
  }

  async #lookup(msg: LookupMessage, channel: Channel): Promise<void> {
    this.#stats.lookups++;
    const now = this.#now();
    const r = await this.#resolve(msg.target, now);
    this.#emit({ type: 'lookup', found: Boolean(r) });
    if (!r) {
      this.#stats.notFound++;
      return this.#error(channel, msg, 'NOT_FOUND', `no peer registered as ${describe(msg.target)}`);
    }
    const reply: EncodableMessage = {
      type: 'lookup-result',
      requestId: msg.requestId,
      publicKey: r.publicKey,
      reachable: r.reachable,
      expiresInMs: Math.max(0, r.expiresAt - now),
      candidates: withReflexive(r.candidates, [r.reflexive]),
    };
    if (r.name !== undefined) reply.name = r.name;
    const bytes = encodeRendezvous(reply);
    if (!this.#fits(channel, bytes.length)) return this.#tooSmall(channel, msg, MAX_LOOKUP_RESULT_BYTES);
    this.#send(channel, bytes);
  }

  /** Whether an answer of `n` bytes fits what is left of the request's budget (always, over TCP). */
  #fits(channel: Channel, n: number): boolean {
    return channel.kind === 'tcp' || !channel.budget || n <= channel.budget.left;
  }

  /** The answer would be larger than the request: say how large the request must be (if even that fits). */
  #tooSmall(channel: Channel, msg: { requestId: number; type: string }, size: number): void {
    this.#stats.tooSmall++;
    this.#error(channel, msg, 'TOO_SMALL', `pad the request to ${size} bytes (answers are never larger than requests)`);
  }

  #verifiedUntil(): number {
    return Math.ceil((this.#now() + this.#ttlMs) / 1000);
  }

  /** `source` proved itself: in the channel entry of `id` when that is where it registered, else in #verified. */
  #markVerified(source: string, id?: string): void {
    const until = this.#verifiedUntil();
    const packed = id === undefined ? undefined : this.#channels.get(id);
    // Read in place first: a peer acknowledges every push, and most acks find a proof that is still fresh.
    if (
      typeof packed === 'number' &&
      this.#channelBytes.readUInt32(packed, PACKED_VERIFIED_UNTIL) + VERIFIED_REWRITE_S >= until &&
      bytesEndWith(this.#channelBytes.view(packed), PACKED_HEAD, source)
    )
      return;
    const entry = packed === undefined ? undefined : this.#entry(id!);
    if (entry && entry.channel.source === source) {
      entry.verifiedUntil = until;
      this.#setEntry(id!, entry);
      return;
    }
    this.#verified.delete(source);
    while (this.#verified.size >= this.#maxPeers) {
      const oldest = this.#verified.keys().next().value;
      if (oldest === undefined) break;
      this.#verified.delete(oldest);
    }
    this.#verified.set(source, this.#verifiedUntil());
  }

  /** TCP's handshake proves the address; over UDP, an answered PING or acknowledged push does. */
  #isVerified(channel: Channel, peer?: PushPeer): boolean {
    if (channel.kind === 'tcp') return true;
    const until =
      peer && peer.entry.channel.source === channel.source
        ? peer.entry.verifiedUntil
        : this.#verified.get(channelSource(channel));
    return until !== undefined && until * 1000 > this.#now();
  }

  async #connect(msg: ConnectMessage, channel: Channel): Promise<void> {
    // What the initiator sent (the signed part plus the signature): pushes on its behalf are bounded by it.
    const requestBytes = msg.signedPart!.length + msg.signature!.length;
    const admitted = this.#admit(msg, channel);
    if (admitted === 'rebuild') return this.#connectAgain(msg, channel);
    if (admitted !== 'new') return;
    this.#stats.connects++;
    const now = this.#now();
    const target = await this.#resolve(msg.target, now);
    // The node that holds the target's channel: here, or (several nodes on one registry) the one it registered with.
    const remoteNode =
      target && this.#cluster && target.node !== undefined && target.node !== this.#cluster.nodeId
        ? target.node
        : undefined;
    const targetId = target && !remoteNode ? keyId(target.publicKey) : undefined;
    const local = targetId !== undefined ? this.#entry(targetId) : undefined;
    const remoteAlive = remoteNode !== undefined && (await this.#cluster!.isAlive(remoteNode));
    const delivery: { ip: string; rttMs?: number } | undefined = local
      ? { ip: local.channel.ip, ...(local.rttMs !== undefined ? { rttMs: local.rttMs } : {}) }
      : remoteAlive
        ? { ip: target!.reflexive.address }
        : undefined;
    if (!target || !delivery) {
      this.#stats.notFound++;
      return this.#error(channel, msg, 'NOT_FOUND', `no peer registered as ${describe(msg.target)}`);
    }
    if (!this.#charge(delivery.ip)) {
      this.#stats.rateLimited++;
      return this.#error(channel, msg, 'RATE_LIMITED', 'that peer is being contacted too often; retry shortly', 1000);
    }
    if (this.#pending.size >= this.#maxPending) {
      this.#stats.serverFull++;
      return this.#error(channel, msg, 'SERVER_FULL', 'too many connections being set up; retry shortly', 1000);
    }
    const initiator = await this.registry.get(msg.publicKey, now);
    const plan = this.#plan(msg, channel, target, initiator, delivery.rttMs, now);
    const reply = encodeRendezvous(plan.answer);
    // Anti-amplification: neither side hears of the connection unless the initiator's answer fits its request
    // (clients pad CONNECT to MAX_CONNECT_NOTIFY_BYTES); the push to the responder is bounded by #push.
    if (!this.#fits(channel, reply.length)) return this.#tooSmall(channel, msg, MAX_CONNECT_NOTIFY_BYTES);
    this.#stats.notifySent++;
    if (local) {
      this.#push(hex(msg.connectionId), encodeRendezvous(plan.notify), local.channel, 'notify', requestBytes, {
        id: targetId!,
        entry: local,
      });
    } else {
      // The node holding the responder pushes it (and sees its NOTIFY_ACKs); exactly once, in order (cluster.ts).
      this.#stats.remoteIntroductions++;
      await this.#cluster!.send(remoteNode!, {
        to: hex(target.publicKey),
        pendingKey: hex(msg.connectionId),
        bytes: encodeRendezvous(plan.notify),
        kind: 'notify',
        requestBytes,
        introduced: { key: hex(msg.publicKey), seen: plan.observed },
      });
    }
    if (this.#observer)
      this.#emit({
        type: 'introduction',
        connectionId: msg.connectionId,
        from: msg.publicKey,
        to: target.publicKey,
        remote: !local,
      });
    // A retransmission gets this answer rebuilt (#connectAgain) rather than kept for the replay window.
    this.#rememberRebuild(msg);
    this.#send(channel, reply);
    // Peer-relay mode: each side's relay allocation may now reach the other (at the addresses seen here).
    this.#issuer?.introduce(
      msg.publicKey,
      plan.observed,
      target.publicKey,
      [target.reflexive, ...(local ? [local.channel.observed] : [])],
      now,
    );
    const cid = hex(msg.connectionId);
    this.#connections.delete(cid);
    while (this.#connections.size >= this.#maxPending) {
      const oldest = this.#connections.keys().next().value;
      if (oldest === undefined) break;
      this.#connections.delete(oldest);
    }
    this.#connections.set(cid, {
      initiator: keyId(msg.publicKey),
      responder: keyId(target.publicKey),
      initiatorChannel: kept(channel),
      expiresAt: now + CONNECTION_RECORD_TTL_MS,
    });
    if (this.#log.isLevelEnabled('debug'))
      this.#log.debug(
        {
          from: hex(msg.publicKey),
          to: hex(target.publicKey),
          initiatorMode: plan.answer.mode,
          responderMode: plan.notify.mode,
          delayR: plan.notify.startDelayMs,
        },
        'rendezvous connect',
      );
  }

  /**
   * A retransmitted CONNECT that introduced (its answer got lost): the initiator's CONNECT_NOTIFY again, made from the
   * message and the target's record as they are now (same connection, roles and candidates unless the target
   * re-registered meanwhile; the server time is now's). The responder is not notified again: that push retransmits
   * on its own until acknowledged.
   */
  async #connectAgain(msg: ConnectMessage, channel: Channel): Promise<void> {
    const now = this.#now();
    const target = await this.#resolve(msg.target, now);
    if (!target) {
      this.#stats.notFound++;
      return this.#error(channel, msg, 'NOT_FOUND', `no peer registered as ${describe(msg.target)}`, 0, false);
    }
    const here = !this.#cluster || target.node === undefined || target.node === this.#cluster.nodeId;
    const local = here ? this.#entry(keyId(target.publicKey)) : undefined;
    const initiator = await this.registry.get(msg.publicKey, now);
    const reply = encodeRendezvous(this.#plan(msg, channel, target, initiator, local?.rttMs, now).answer);
    if (!this.#fits(channel, reply.length)) return;
    this.#stats.retransmitsAnswered++;
    this.#send(channel, reply);
  }

  /**
   * The two CONNECT_NOTIFYs of an introduction: connection reversal (RFC 5128 §2.3: whoever cannot be reached
   * connects to the one who can) and start times from the RTTs (each side learns of the connection half its RTT
   * after the server sends).
   */
  #plan(
    msg: ConnectMessage,
    channel: Channel,
    target: PeerRecord,
    initiator: PeerRecord | undefined,
    targetRttMs: number | undefined,
    now: number,
  ): {
    answer: EncodableMessage & { type: 'connect-notify' };
    notify: EncodableMessage & { type: 'connect-notify' };
    observed: Endpoint[];
  } {
    const observed: Endpoint[] = [channel.observed];
    if (initiator && initiator.reflexive.transport === 'udp' && channel.observed.transport !== 'udp')
      observed.push(initiator.reflexive);
    const initiatorReachable =
      msg.reachable || msg.candidates.some((c) => c.type === 'host' && sameEndpoint(c, channel.observed));
    let initiatorMode: ConnectMode = 'punch';
    let responderMode: ConnectMode = 'punch';
    if (target.reachable) {
      initiatorMode = 'connect';
      responderMode = 'await';
    } else if (initiatorReachable) {
      initiatorMode = 'await';
      responderMode = 'connect';
    }
    const rttI = msg.rttMs || initiator?.rttMs || this.#entry(keyId(msg.publicKey))?.rttMs || 0;
    const rttR = targetRttMs || target.rttMs || 0;
    let delayI = 0;
    let delayR = Math.max(0, (rttI - rttR) / 2);
    if (this.#schedule === 'sync') {
      const oneWay = Math.max(rttI, rttR) / 2;
      delayI = oneWay - rttI / 2;
      delayR = oneWay - rttR / 2;
    }
    const notify: EncodableMessage & { type: 'connect-notify' } = {
      type: 'connect-notify',
      requestId: this.#ids.next(),
      connectionId: msg.connectionId,
      role: 'responder',
      mode: responderMode,
      peerKey: msg.publicKey,
      startDelayMs: Math.min(0xffff, Math.round(delayR)),
      serverTime: now,
      candidates: withReflexive(msg.candidates, observed),
    };
    if (initiator?.name !== undefined) notify.peerName = initiator.name;
    const answer: EncodableMessage & { type: 'connect-notify' } = {
      type: 'connect-notify',
      requestId: msg.requestId,
      connectionId: msg.connectionId,
      role: 'initiator',
      mode: initiatorMode,
      peerKey: target.publicKey,
      startDelayMs: Math.min(0xffff, Math.round(delayI)),
      serverTime: now,
      candidates: withReflexive(target.candidates, [target.reflexive]),
    };
    if (target.name !== undefined) answer.peerName = target.name;
    return { answer, notify, observed };
  }

  /**
   * Sends an unsolicited message to a peer, retransmitted over UDP until it is acknowledged (NOTIFY_ACK), with
   * doubling intervals from notifyRtoMs, at most notifyMaxTransmissions times; once over TCP.
   *
   * Anti-amplification: the request that causes a push may come from a spoofed source, and the peer's registered
   * address may be a victim's (a REGISTER can be spoofed too). So only an address that proved it is there (it
   * answered our PING or acknowledged a push: #isVerified) gets retransmissions; any other gets at most
   * `requestBytes` bytes in all (the pusher's request size: ≤ 1x), i.e. usually one transmission.
   */
  #push(
    pendingKey: string,
    bytes: Buffer,
    channel: Channel,
    kind: PendingNotify['kind'],
    requestBytes: number,
    peer?: PushPeer,
  ): void {
    const old = this.#pending.get(pendingKey);
    if (old) clearTimeout(old.timer);
    const limit = this.#isVerified(channel, peer)
      ? this.#notifyMax
      : Math.min(this.#notifyMax, Math.floor(requestBytes / bytes.length));
    if (limit < this.#notifyMax) this.#stats.pushesWithheld += this.#notifyMax - limit;
    if (limit === 0) {
      this.#pending.delete(pendingKey);
      return;
    }
    const pending: PendingNotify = {
      bytes,
      channel,
      transmissions: 0,
      timer: undefined as unknown as NodeJS.Timeout,
      kind,
      ...(peer ? { id: peer.id } : {}),
    };
    this.#pending.set(pendingKey, pending);
    const transmit = () => {
      if (this.#closed || this.#pending.get(pendingKey) !== pending) return;
      if (pending.transmissions >= limit) {
        this.#pending.delete(pendingKey);
        if (kind === 'notify') this.#stats.notifyGivenUp++;
        return;
      }
      if (pending.transmissions > 0 && kind === 'notify') this.#stats.notifyRetransmits++;
      pending.transmissions++;
      this.#send(pending.channel, pending.bytes);
      // Over TCP delivery is reliable: no retransmission, just forget it.
      if (pending.channel.kind === 'tcp') {
        this.#pending.delete(pendingKey);
        return;
      }
      pending.timer = setTimeout(transmit, this.#notifyRto * 2 ** (pending.transmissions - 1));
      pending.timer.unref();
    };
    transmit();
  }

  /**
   * SEQ_OFFER (STUNT #1 / NATBlaster sequence numbers, Guha & Francis IMC 2005 §3): forwards the sender's signed
   * bytes unchanged to the peer it names (the server cannot alter or forge an offer), answers SEQ_OFFER_RESULT, and
   * with a spoofer, once both peers' offers are in, sends each the SYN-ACK the other would have sent.
   */
  async #seqOffer(msg: SeqOfferMessage, channel: Channel): Promise<void> {
    // The original message is the signed part plus the signature (the decoder refuses trailing bytes); copy it
    // before the first await, the input buffer is not ours to keep.
    const original = Buffer.concat([msg.signedPart!, msg.signature!]);
    if (this.#admit(msg, channel) !== 'new') return;
    this.#stats.seqOffers++;
    const now = this.#now();
    // Only between the two keys a CONNECT introduced, for that connection. The initiator need not be registered
    // (connect() only asks): it is reached where its CONNECT came from.
    const conn = this.#connections.get(hex(msg.connectionId));
    const from = keyId(msg.publicKey);
    const to = keyId(msg.peerKey);
    const party =
      conn &&
      conn.expiresAt > now &&
      ((conn.initiator === from && conn.responder === to) || (conn.initiator === to && conn.responder === from));
    const entry = party && to !== conn.initiator ? this.#entry(to) : undefined;
    const delivery = party ? (to === conn.initiator ? { channel: conn.initiatorChannel } : entry) : undefined;
    if (!delivery) {
      this.#stats.notFound++;
      this.#stats.seqRefused++;
      const why = party
        ? `no peer registered as key ${hex(msg.peerKey).slice(0, 16)}…`
        : 'no connection with this id between these two keys (a SEQ_OFFER follows a CONNECT)';
      return this.#error(channel, msg, 'NOT_FOUND', why);
    }
    // Pushed to the target unasked: charged to its IP like a CONNECT_NOTIFY, so it cannot be flooded through us.
    if (!this.#charge(delivery.channel.ip)) {
      this.#stats.rateLimited++;
      this.#stats.seqRefused++;
      return this.#error(channel, msg, 'RATE_LIMITED', 'that peer is being contacted too often; retry shortly', 1000);
    }
    if (this.#pending.size >= this.#maxPending) {
      this.#stats.serverFull++;
      this.#stats.seqRefused++;
      return this.#error(channel, msg, 'SERVER_FULL', 'too many messages being delivered; retry shortly', 1000);
    }
    const cid = hex(msg.connectionId);
    this.#stats.seqForwarded++;
    this.#push(
      `seq/${cid}/${msg.requestId}`,
      original,
      delivery.channel,
      'seq',
      original.length,
      entry ? { id: to, entry } : undefined,
    );

    // Spoofed packets only go to hosts that asked, from sources that also asked (as src/server/spoof.ts): the
    // offer's public address must be the address this request came from.
    const decoded = msg.offer ? (decodeSeqOffer(msg.offer) ?? undefined) : undefined;
    const eligible = Boolean(this.#spoofer && decoded && decoded.public.address === channel.ip);
    const reply = encodeRendezvous({
      type: 'seq-offer-result',
      requestId: msg.requestId,
      connectionId: msg.connectionId,
      spoofing: eligible,
    });
    this.#remember(msg, reply);
    this.#send(channel, reply);
    this.#log.debug(
      { from: hex(msg.publicKey), to: hex(msg.peerKey), offer: Boolean(msg.offer), spoofing: eligible },
      'rendezvous seq-offer',
    );

    const otherKey = `${cid}/${to}/${from}`;
    const other = this.#seqOffers.get(otherKey);
    if (other && other.expiresAt > now) {
      // The pair is complete: spoof at most once for it.
      this.#seqOffers.delete(otherKey);
      if (other.eligible && eligible && other.offer && decoded && this.#spoofer) {
        this.#stats.seqSpoofed++;
        this.#log.info({ a: other.offer.public, b: decoded.public }, 'rendezvous: sending STUNT #1 SYN-ACKs');
        const spoofer = this.#spoofer;
        const [a, b] = [other.offer, decoded];
        // Never thrown into the message loop, even by a spoofer that throws instead of rejecting.
        Promise.resolve()
          .then(() => spoofer.spoof(a, b))
          .catch((err: unknown) => this.#log.warn({ err }, 'rendezvous: STUNT #1 spoofing failed'));
      }
      return;
    }
    if (other) this.#seqOffers.delete(otherKey);
    const ownKey = `${cid}/${from}/${to}`;
    this.#seqOffers.delete(ownKey); // a newer offer from the same sender replaces its older one
    while (this.#seqOffers.size >= this.#maxPending) {
      const oldest = this.#seqOffers.keys().next().value;
      if (oldest === undefined) break;
      this.#seqOffers.delete(oldest);
    }
    this.#seqOffers.set(ownKey, { offer: decoded, eligible, expiresAt: now + SEQ_OFFER_PAIR_TIMEOUT_MS });
  }

  async #unregister(msg: UnregisterMessage, channel: Channel): Promise<void> {
    if (this.#admit(msg, channel) !== 'new') return;
    const existing = await this.registry.get(msg.publicKey, this.#now());
    if (!existing) return;
    if (msg.timestamp <= existing.lastTimestamp) {
      // Older than the live registration: a replay of a withdrawal from before it.
      this.#stats.stale++;
      return;
    }
    const id = keyId(msg.publicKey);
    if (this.#recordGuards) {
      // The record goes, and with it what refuses the key's older REGISTERs (their replay entries are gone): a
      // marker does that until this withdrawal leaves the window. No room for it: the key stays registered (fail
      // closed, as the replay cache does).
      if (this.#withdrawn.full) this.#withdrawn.sweep(this.#now());
      const before = this.#withdrawn.get(id);
      if (before !== undefined) this.#withdrawn.delete(id, before + this.#windowMs + 1000);
      if (!this.#withdrawn.add(id, msg.timestamp, this.#nonceExpiry(msg))) {
        this.#stats.serverFull++;
        return;
      }
    }
    if (await this.registry.delete(msg.publicKey, this.#now())) {
      this.#stats.unregistrations++;
      this.#emit({ type: 'unregister', publicKey: msg.publicKey, reason: 'unregister' });
    }
    this.#unbind(id);
  }

  /**
   * RELEASE_NAME (wire/rendezvous.ts): the key that holds or reserves a name gives it up now. Signed by that key and
   * replay-checked like every signed request; answered with ACK (1 released, 0 the key held no such name).
   */
  async #releaseName(msg: ReleaseNameMessage, channel: Channel): Promise<void> {
    if (this.#admit(msg, channel) !== 'new') return;
    const released = await this.registry.release(msg.name, msg.publicKey, this.#now());
    if (released) this.#stats.namesReleased++;
    const reply = encodeRendezvous({ type: 'ack', requestId: msg.requestId, status: released ? 1 : 0 });
    this.#remember(msg, reply);
    this.#send(channel, reply);
  }

  /**
   * REPORT (wire/rendezvous.ts): one connection attempt's outcome, signed by the peer that made it. Counted at most
   * reportsPerMinute times per key; the 8-byte ACK is never larger than the report. Reports only feed metrics.
   */
  async #report(msg: ReportMessage, channel: Channel): Promise<void> {
    if (this.#admit(msg, channel) !== 'new') return;
    const id = hex(msg.publicKey);
    const minute = Math.floor(this.#now() / 60_000);
    let count = this.#reportCounts.get(id);
    if (!count || count.minute !== minute) {
      if (this.#reportCounts.size >= this.#maxRateSources)
        this.#reportCounts.delete(this.#reportCounts.keys().next().value!);
      count = { minute, n: 0 };
      this.#reportCounts.set(id, count);
    }
    const accepted = this.#reports && count.n < this.#reportsPerMinute;
    count.n++;
    if (accepted) {
      this.#stats.reports++;
      this.#emit({ type: 'report', report: msg });
      if (msg.localNat !== 'unknown') {
        this.registry.noteNatType(msg.publicKey, msg.localNat, this.#now()).catch(() => {});
      }
    } else {
      this.#stats.reportsDropped++;
    }
    const reply = encodeRendezvous({ type: 'ack', requestId: msg.requestId, status: accepted ? 1 : 0 });
    this.#remember(msg, reply);
    this.#send(channel, reply);
  }

  /** A push another node handed us for a peer whose channel is here (cluster.ts). */
  #deliverRemote(push: ClusterPush): void {
    const id = keyId(Buffer.from(push.to, 'hex'));
    const entry = this.#entry(id);
    if (!entry || this.#closed) return;
    // Every push to a peer passes the node that holds it, so this one bucket bounds what all nodes together push
    // to its address (no shared rate-limit state needed for it).
    if (!this.#charge(entry.channel.ip)) {
      this.#stats.rateLimited++;
      return;
    }
    this.#stats.remoteDelivered++;
    this.#push(push.pendingKey, push.bytes, entry.channel, push.kind, push.requestBytes, { id, entry });
    // Peer-relay mode: the introduction was made on another node; our relay learns it here, where the responder is.
    // The initiator's node says where it saw the initiator (never the notify's candidates: a peer lists any address
    // it likes as its own srflx).
    if (push.introduced) {
      this.#issuer?.introduce(
        Buffer.from(push.introduced.key, 'hex'),
        push.introduced.seen,
        Buffer.from(push.to, 'hex'),
        [entry.channel.observed],
        this.#now(),
      );
    }
  }

  /**
   * Drain (SIGTERM): stop taking registrations and tell every peer registered here to move (MOVE, wire/rendezvous.ts),
   * so each registers with its next server at once instead of after a missed keepalive. Resolves when the MOVEs
   * are sent; UDP ones twice, a little apart, as datagrams get lost.
   */
  async drain(options: { retryAfterMs?: number; signal?: AbortSignal } = {}): Promise<number> {
    this.#draining = true;
    const targets = [...this.#channels.keys()]
      .map((id) => this.#entry(id))
      .filter((e): e is ChannelEntry => e?.registerRequestId !== undefined);
    const send = () => {
      for (const e of targets) {
        this.#send(
          e.channel,
          encodeRendezvous({
            type: 'move',
            requestId: e.registerRequestId!,
            reason: 'draining',
            retryAfterMs: options.retryAfterMs ?? 0,
          }),
        );
      }
    };
    send();
    this.#stats.moves += targets.length;
    if (targets.some((e) => e.channel.kind === 'udp') && !options.signal?.aborted) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        options.signal?.addEventListener(
          'abort',
          () => {
            clearTimeout(t);
            resolve();
          },
          { once: true },
        );
      });
      send();
    }
    return targets.length;
  }

  /** Whether drain() was called. */
  get draining(): boolean {
    return this.#draining;
  }

  #emit(event: RendezvousEvent): void {
    if (!this.#observer) return;
    try {
      this.#observer.onEvent(event);
    } catch (err) {
      this.#log.warn({ err }, 'rendezvous observer threw');
    }
  }

  #bind(id: string, channel: Channel, registerRequestId: number, now: number): void {
    const prev = this.#entry(id);
    if (prev?.channel.kind === 'tcp' && prev.channel !== channel) this.#tcp.get(prev.channel.socket)?.delete(id);
    const sameSource = prev && channelSource(prev.channel) === channelSource(channel);
    const entry: ChannelEntry = { channel: kept(channel), registerRequestId, expiresAt: now + this.#ttlMs };
    if (sameSource && prev.rttMs !== undefined) entry.rttMs = prev.rttMs;
    if (sameSource && prev.verifiedUntil) entry.verifiedUntil = prev.verifiedUntil;
    this.#setEntry(id, entry);
    if (channel.kind === 'tcp') this.#tcp.get(channel.socket)?.add(id);
  }

  #unbind(id: string): void {
    const prev = this.#channels.get(id);
    if (prev === undefined) return;
    if (typeof prev === 'number') this.#channelBytes.release(prev);
    else if (prev.channel.kind === 'tcp') this.#tcp.get(prev.channel.socket)?.delete(id);
    this.#channels.delete(id);
  }

  /** The channel entry of key `id` (a fresh object for a packed one: write changes back with #setEntry). */
  #entry(id: string): ChannelEntry | undefined {
    const at = this.#channels.get(id);
    if (at === undefined || typeof at === 'object') return at;
    const e = this.#channelBytes.view(at);
    const transport = this.#transports[e[0]!];
    if (!transport) return undefined;
    const source = e.toString('latin1', PACKED_HEAD);
    const len = e[PACKED_HEAD + 1]!;
    const text = (e[PACKED_HEAD]! & 0x80) !== 0;
    const raw = e.subarray(PACKED_HEAD + 2, PACKED_HEAD + 2 + len);
    const address = text ? raw.toString('utf8') : formatAddress(raw);
    const port = e.readUInt16BE(PACKED_HEAD + 2 + len);
    const ip = unmapV4(address);
    const rtt = e.readUInt16BE(9);
    const verifiedUntil = e.readUInt32BE(PACKED_VERIFIED_UNTIL);
    const entry: ChannelEntry = {
      channel: { kind: 'udp', transport, address, port, observed: { transport: 'udp', address: ip, port }, ip, source },
      registerRequestId: e.readUInt32BE(1),
      expiresAt: e.readUInt32BE(PACKED_EXPIRES_AT) * 1000,
    };
    if (rtt !== NO_RTT) entry.rttMs = rtt;
    if (verifiedUntil !== 0) entry.verifiedUntil = verifiedUntil;
    return entry;
  }

  #setEntry(id: string, entry: ChannelEntry): void {
    const ch = entry.channel;
    const index = ch.kind === 'udp' ? this.#transports.indexOf(ch.transport) : -1;
    const prev = this.#channels.get(id);
    if (ch.kind !== 'udp' || index < 0 || index > 0xff || entry.registerRequestId === undefined) {
      if (typeof prev === 'number') this.#channelBytes.release(prev);
      this.#channels.set(id, entry);
      return;
    }
    const b = this.#scratch.buf;
    b[0] = index;
    b.writeUInt32BE(entry.registerRequestId >>> 0, 1);
    b.writeUInt32BE(Math.min(0xffffffff, Math.ceil(entry.expiresAt / 1000)), 5);
    b.writeUInt16BE(entry.rttMs === undefined ? NO_RTT : Math.min(NO_RTT - 1, Math.round(entry.rttMs)), 9);
    b.writeUInt32BE(Math.min(0xffffffff, entry.verifiedUntil ?? 0), 11);
    const n = PACKED_HEAD + b.write(ch.source, PACKED_HEAD, 'latin1');
    if (typeof prev === 'number') {
      const at = this.#channelBytes.replace(prev, b.subarray(0, n));
      if (at !== prev) this.#channels.set(id, at);
    } else this.#channels.set(id, this.#channelBytes.store(b.subarray(0, n)));
  }

  #errorBytes(requestId: number, inResponseTo: number, code: ErrorCodeName, message: string, retryAfterMs = 0): Buffer {
    return encodeRendezvous({
      type: 'error',
      requestId,
      code,
      inResponseTo: inResponseTo & 0xff,
      retryAfterMs,
      message,
    });
  }

  /**
   * Sends an ERROR answer; for admitted signed requests it is also what a retransmission gets. Over UDP the text is
   * cut to what the request's budget allows (an error is never larger than its request), or the error is not sent.
   */
  #error(
    channel: Channel,
    msg: { requestId: number; type: string },
    code: ErrorCodeName,
    message: string,
    retryAfterMs = 0,
    remember = true,
  ): void {
    let text = message;
    if (channel.kind === 'udp' && channel.budget) {
      const room = channel.budget.left - ERROR_OVERHEAD_BYTES;
      if (room < 0) {
        this.#stats.amplificationDropped++;
        return;
      }
      if (Buffer.byteLength(text) > room)
        text = Buffer.from(text)
          .subarray(0, room)
          .toString('utf8')
          .replace(/\uFFFD$/, '');
      while (Buffer.byteLength(text) > room) text = text.slice(0, -1);
    }
    const bytes = this.#errorBytes(msg.requestId, typeCode(msg.type), code, text, retryAfterMs);
    if (remember && isSignedMessage(msg as never)) this.#remember(msg as SignedMessage, bytes);
    this.#emit({ type: 'refused', request: msg.type, code, message, from: channel.ip });
    this.#send(channel, bytes);
  }

  #reply(channel: Channel, msg: EncodableMessage): void {
    this.#send(channel, encodeRendezvous(msg));
  }

  #send(channel: Channel, bytes: Buffer): void {
    if (this.#closed) return;
    if (channel.kind === 'udp' && channel.budget) {
      // The anti-amplification invariant, enforced in one place: all answers to one datagram together are at most
      // as large as it was. Whatever does not fit is not sent.
      if (bytes.length > channel.budget.left) {
        this.#stats.amplificationDropped++;
        return;
      }
      channel.budget.left -= bytes.length;
    }
    this.#stats.sent++;
    if (channel.kind === 'udp') {
      channel.transport.send(bytes, channel.port, channel.address);
      return;
    }
    const s = channel.socket;
    if (s.destroyed) return;
    if (s.writableLength > MAX_TCP_BACKLOG_BYTES) {
      s.destroy();
      return;
    }
    s.write(frameTcp(bytes));
  }
}

/** An ERROR with an empty text: header, code, inResponseTo, retry-after, text length. */
const ERROR_OVERHEAD_BYTES = 7 + 1 + 1 + 4 + 1;

function typeCode(type: string): number {
  switch (type) {
    case 'register':
      return MessageType.REGISTER;
    case 'lookup':
      return MessageType.LOOKUP;
    case 'connect':
      return MessageType.CONNECT;
    case 'unregister':
      return MessageType.UNREGISTER;
    case 'seq-offer':
      return MessageType.SEQ_OFFER;
    case 'release-name':
      return MessageType.RELEASE_NAME;
    case 'report':
      return MessageType.REPORT;
    default:
      return 0;
  }
}

function describe(target: Target): string {
  return 'key' in target ? `key ${hex(target.key).slice(0, 16)}…` : `"${target.name}"`;
}

/** What `serve` (or any embedding server) offers services: shared UDP sockets and TCP dispatch by first byte. */
export interface ServiceHost {
  readonly sockets: readonly DatagramTransport[];
  registerTcpHandler(
    match: (firstByte: number) => boolean,
    handler: (socket: Socket, head: Buffer) => void,
  ): () => void;
}

/**
 * Runs a RendezvousServer on a host's shared sockets: it attaches to every UDP socket (it only reads datagrams whose
 * first byte is 0xF0) and takes the TCP connections whose first byte is 0xF0. `close()` undoes both and stops it.
 */
export function attachRendezvous(
  host: ServiceHost,
  options: RendezvousServerOptions = {},
): { server: RendezvousServer; close(): void } {
  const server = new RendezvousServer(options);
  const detach = host.sockets.map((s) => server.attach(s));
  const unregister = host.registerTcpHandler(
    (b) => b === FirstByte.RENDEZVOUS,
    (socket, head) => server.handleTcp(socket, head),
  );
  return {
    server,
    close() {
      unregister();
      for (const d of detach) d();
      server.close();
    },
  };
}
