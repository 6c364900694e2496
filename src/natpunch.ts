import { EventEmitter } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { NatpunchError, isNatpunchError } from './util/errors.js';
import { silentLogger, type Logger } from './util/log.js';
import { sleep, timeoutSignal } from './util/abort.js';
import { UdxEndpoint } from './net/udx.js';
import { parseRendezvousList, RendezvousClient } from './rendezvous/client.js';
import { advertFromCandidates, gatherHardNat, needsHardPunch, normalizeHardNat, type HardNatOptions } from './traversal/hardwire.js';
import { hardSession, isHardPunchFailure } from './traversal/hardnat.js';
import type { HardNatAdvert } from './traversal/predict.js';
import type { DatagramTransport } from './net/datagram.js';
import { keyToId, type KeyPair } from './session/identity.js';
import { Session, streamIdsFor, DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_KEEPALIVE_MS, type Allow, type SessionPath, isAllowed } from './session/session.js';
import { ConnectivityChecks, deriveCheckKey, DEFAULT_CHECK_TIMEOUT_MS, type CheckHandshake, type CheckResult } from './traversal/checks.js';
import { IkReplayCache, type IkInitiator } from './session/handshake-ik.js';
import { initiatorIk, initiatorIkSession, IkListenerAttempt } from './session/ik-attempt.js';
import { candidatePriority, dedupeCandidates, type Candidate } from './traversal/candidate.js';
import { RelayPath, openRendezvousRelay, parseRelaySpec } from './relay/path.js';
import { addonStatus } from './net/native.js';
import { openTcpLocal, punchTcp, sessionOverTcp, tcpCandidatesOf, TCP_GATHER_AUTO_TIMEOUT_MS, type TcpLocal, type TcpPathResult, type TcpSequenceMode } from './traversal/tcp-session.js';
import type { SeqChannel } from './traversal/tcp-seqpunch.js';
import { decodeSeqOffer, encodeSeqOffer } from './wire/seq-offer.js';
import { MAX_CANDIDATES } from './wire/rendezvous.js';
import type { PortMapper, PortMapperOptions } from './portmap/mapper.js';
import { peerTarget, verifyPeer, type PeerSpec } from './identity/verify.js';
import type { PeerPins } from './identity/known-peers.js';

/** STUN's port (RFC 8489 §18.6); `natpunch serve` runs the rendezvous on it too. */
export const DEFAULT_RENDEZVOUS_PORT = 3478;
/** connect() as a whole: rendezvous exchange, checks (10 s) and handshake. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
/** A listener punches for at most this many introductions at once (each sends bounded probes); more are dropped. */
export const MAX_CONCURRENT_ATTEMPTS = 32;
/** With a TURN relay configured, relayed candidate pairs wait this long so direct pairs win when they work
 *  (relay candidates have the lowest priority, RFC 8445 §5.1.2.1). */
export const DEFAULT_RELAY_HOLD_MS = 1_500;
/** transport 'auto': when TCP punched first, wait this long for UDP before settling for TCP (UDP is preferred: its
 *  session can migrate when a NAT rebinds and has no head-of-line blocking across streams). */
export const AUTO_UDP_GRACE_MS = 1_000;
/** portMapping: how long gathering waits for the gateway to map the endpoint's port (PCP, NAT-PMP, UPnP IGD)
 *  before going on without a mapped candidate. The protocols' own schedules are longer (RFC 6887 §8.1.1,
 *  RFC 6886 §3.1); a gateway that maps at all answers within a few round trips. */
export const DEFAULT_PORT_MAPPING_TIMEOUT_MS = 2_000;
/** portMapping: SSDP search window inside that bound (UPnP Device Architecture 1.1 §1.3.2 lets devices answer
 *  within MX seconds; an IGD on the LAN answers in milliseconds). */
const PORT_MAPPING_SSDP_MS = 1_200;
/** Never wait longer than this for the rendezvous' scheduled start time. */
const MAX_START_DELAY_MS = 5_000;

/** What the composition needs from a rendezvous client (src/rendezvous/client.ts provides it). */
export interface RendezvousLike {
  register(signal?: AbortSignal): Promise<{ reflexive: { address: string; port: number } }>;
  requestConnect(nameOrKey: string | Uint8Array, options: { connectionId?: Uint8Array; candidates?: Candidate[]; signal?: AbortSignal }): Promise<ConnectOfferLike>;
  on(event: 'connect-request', listener: (offer: ConnectOfferLike) => void): unknown;
  off(event: 'connect-request', listener: (offer: ConnectOfferLike) => void): unknown;
  close(): void;
  /** SEQ_OFFER (TCP sequence-number techniques): publish ours, wait for the peer's. Optional for custom clients. */
  exchangeSeqOffer?(p: { connectionId: Uint8Array; peerKey: Uint8Array; offer?: Buffer; decline?: string; signal?: AbortSignal }): Promise<{ spoofing: boolean }>;
  awaitSeqOffer?(connectionId: Uint8Array, peerKey: Uint8Array, signal: AbortSignal): Promise<{ offer?: Buffer; decline?: string }>;
}

/** The rendezvous as the channel of STUNT #1 / NATBlaster offers for one connection (null: it cannot carry them). */
function seqChannel(rv: RendezvousLike | null, connectionId: Uint8Array, peerKey: Uint8Array): SeqChannel | null {
  if (!rv?.exchangeSeqOffer || !rv.awaitSeqOffer) return null;
  const exchange = rv.exchangeSeqOffer.bind(rv);
  const wait = rv.awaitSeqOffer.bind(rv);
  return {
    send: ({ offer, decline }, signal) =>
      exchange({ connectionId, peerKey, ...(offer ? { offer: encodeSeqOffer(offer) } : {}), ...(decline !== undefined ? { decline } : {}), signal }),
    receive: async (signal) => {
      const got = await wait(connectionId, peerKey, signal);
      if (got.decline !== undefined) return { decline: got.decline };
      const offer = got.offer ? decodeSeqOffer(got.offer) : null;
      if (!offer) throw new NatpunchError('PUNCH_FAILED', 'the peer sent a malformed sequence offer', { details: { reason: 'malformed-offer' } });
      return { offer };
    },
  };
}

export interface ConnectOfferLike {
  connectionId: Buffer;
  role: 'initiator' | 'responder';
  mode?: string;
  peerKey: Buffer;
  peerName?: string;
  candidates: Candidate[];
  /** Local clock time at which to start probing (both sides start together). */
  startAt?: number;
}

export type RendezvousFactory = (init: {
  transport: DatagramTransport;
  keyPair: KeyPair;
  name?: string;
  candidates: () => Candidate[];
  logger: Logger;
}) => RendezvousLike;

/** Progress of connect()/listen(), for CLIs and logs. */
export type Progress =
  | { phase: 'gathering'; local: { address: string; port: number } }
  | { phase: 'registered'; reflexive: { address: string; port: number } }
  | { phase: 'offer'; peer: string; peerName?: string; candidates: Candidate[]; role: 'initiator' | 'responder'; mode?: string }
  | { phase: 'punching'; pairs: number }
  | { phase: 'path'; kind: SessionPath['kind']; remote: { address: string; port: number }; type: string; rttMs: number | null; technique?: TcpPathResult['technique']; reason?: string }
  | { phase: 'connected'; peer: string; rttMs: number | null }
  /** Which transport carries (or will carry) the session and why; e.g. auto without the native addon → UDP. */
  | { phase: 'transport'; transport: 'udp' | 'tcp'; reason: string }
  /** portMapping: the gateway mapped our UDP port (a 'mapped' candidate is offered), or why not (we go on without). */
  | { phase: 'port-mapping'; ok: boolean; protocol?: string; gateway?: string; external?: { address: string; port: number }; error?: string }
  /** hardNat: our measured NAT kind at gathering ('hard-nat'), and the hard punch that found the path ('hard-punch'). */
  | { phase: 'hard-nat'; kind: HardNatAdvert['kind']; delta: number | null; ports: number[] }
  /** The hard punch found the path; or, with `fallback: 'relay'`, it failed (`error`) and the normal attempt through
   *  the connecting side's TURN relay runs instead. */
  | { phase: 'hard-punch'; local: HardNatAdvert['kind']; peer: HardNatAdvert['kind']; strategy: string; probesSent: number; fallback?: 'relay'; error?: string };

/** 'udp': UDX over UDP hole punching; 'tcp': TCP hole punching (needs the native addon); 'auto': both, see connect(). */
export type TransportMode = 'udp' | 'tcp' | 'auto';

interface CommonOptions {
  keyPair: KeyPair;
  /** Local UDP address to bind (default 0.0.0.0, any port). */
  bind?: { address?: string; port?: number };
  /** Use this socket instead of binding one (e.g. one that already learned its mapping with STUN). Whoever passes
   *  it keeps owning it: closing the session or listener does not close it. */
  endpoint?: UdxEndpoint;
  /** Our candidates; default: host candidates of the bound address (for a wildcard bind: the interfaces). */
  candidates?: Candidate[];
  keepAliveMs?: number;
  /**
   * The NAT's UDP mapping lifetime when known (netcheck's lifetime measurement: `aliveAtS * 1000`). Without an
   * explicit keepAliveMs, keepalives then run at half of it (at most the 15 s default, at least 1 s).
   */
  mappingLifetimeMs?: number;
  idleTimeoutMs?: number;
  /** How long a session whose transport died waits for a new path before failing (default 20 s). */
  reconnectGraceMs?: number;
  checkTimeoutMs?: number;
  logger?: Logger;
  onProgress?: (p: Progress) => void;
  /** How to reach the rendezvous: "host[:port]", {host, port}, or a factory (tests, custom clients). */
  rendezvous?: string | { host: string; port?: number } | Array<{ host: string; port?: number }> | RendezvousFactory;
  /** Which transport to punch (default 'auto': UDP and TCP in parallel; UDP kept when both work). */
  transport?: TransportMode;
  /**
   * TCP techniques beyond P2P-NAT (src/traversal/tcp-session.ts TcpSequenceMode). Default 'auto': when P2P-NAT fails
   * and this host may use raw sockets (root), STUNT #1 (the rendezvous spoofs: `serve --spoof`) or NATBlaster, with
   * the offers carried by the rendezvous; 'off': P2P-NAT only; 'natblaster' / 'stunt1': that technique only.
   */
  tcpSequence?: TcpSequenceMode;
  /**
   * Off by default. When on, asks the gateway (PCP, NAT-PMP, UPnP IGD; src/portmap/mapper.ts) to map the socket's
   * UDP port and offers the external address as a 'mapped' candidate; gives up after
   * DEFAULT_PORT_MAPPING_TIMEOUT_MS without failing. The mapping is renewed while the session / listener lives and
   * deleted when it closes. Options (e.g. `gateway`) go to the PortMapper.
   */
  portMapping?: boolean | PortMapperOptions;
  /**
   * Off by default. When on, gathering measures our NAT against the rendezvous (src/traversal/hardwire.ts, bounded;
   * on failure it carries on without) and offers the kind and prediction advert as candidates; when both sides
   * did and either is not a cone, the hard punch (hardSession(), src/traversal/hardnat.ts) replaces the normal checks.
   */
  hardNat?: boolean | HardNatOptions;
}

/** A TURN relay for connect(): credentials ("user:password@host[:port]" or an object), or a RelayPath already opened
 *  on the same endpoint (its candidate then already went to the peer). connect() owns it either way: it is released
 *  when the session takes a direct path, or when the relayed session closes. */
export type RelayOption = RelayPath | string | { server: { address: string; port: number }; username: string; password: string } | 'auto';

/** relay: 'auto' waits at most this long after registering for the rendezvous' TURN credentials (they follow
 *  REGISTERED immediately; a server without TURN sends none). */
export const AUTO_RELAY_WAIT_MS = 1000;

/**
 * relay: 'auto': the TURN credentials the rendezvous handed out (shared-secret scheme, same host as the rendezvous),
 * opened as a RelayPath on `endpoint`; null when the rendezvous gave none (no TURN there, or a custom factory).
 */
async function autoRelay(rv: RendezvousLike, endpoint: UdxEndpoint, registered: boolean, signal: AbortSignal | undefined, logger: Logger): Promise<RelayPath | null> {
  if (!(rv instanceof RendezvousClient)) return null;
  if (!registered && !rv.turnCredentials) await rv.register(signal);
  for (let waited = 0; !rv.turnCredentials && waited < AUTO_RELAY_WAIT_MS && !signal?.aborted; waited += 50) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const c = rv.turnCredentials;
  if (!c) {
    logger.debug('relay auto: the rendezvous handed out no TURN credentials; no relay');
    return null;
  }
  // UDP from the punching socket, else TCP (always when the rendezvous itself runs over TCP: UDP is blocked), else TLS.
  return openRendezvousRelay({ transport: endpoint, credentials: c, rendezvousVia: rv.via, ...(signal ? { signal } : {}), logger });
}

export interface ConnectOptions extends CommonOptions {
  /** TURN fallback: when no direct pair answers within `relayHoldMs`, the session runs through this relay, still
   *  end-to-end encrypted (the relay sees only ciphertext). */
  relay?: RelayOption;
  relayHoldMs?: number;
  /** The peer's name or key (hex or bytes), through the rendezvous; `{ name, key }`: by name, and it must have
   *  this key (checked before anything is sent to the peer the rendezvous introduces). */
  to?: PeerSpec;
  /**
   * Names pinned to keys (src/identity/known-peers.ts, SSH known_hosts style): connecting by name refuses a key other
   * than the pinned one (PEER_KEY_CHANGED) before anything is sent to the introduced peer, and pins a name on its
   * first successful session. The CLI passes ~/.natpunch/known_peers. Default: no pins (only `{ name, key }` pins).
   */
  knownPeers?: PeerPins;
  /** Direct mode, without a rendezvous: the peer's key and candidates (the caller did the signalling). */
  peer?: { publicKey: Uint8Array; candidates: Candidate[] };
  /** Direct mode: the connection id both sides agreed on (16 random bytes by default; give the same to acceptOffer). */
  connectionId?: Uint8Array;
  /**
   * Up to 1000 bytes sent inside the first connectivity check (Noise IK message 1, docs/handshake.md): the listener
   * gets them in `session.earlyData` one trip earlier than anything sent after connect() resolves, exactly once.
   * Not forward secret against a later theft of the listener's key. `session.earlyDataAccepted` says whether they
   * arrived (false after a fallback to XX: then send them on a stream).
   */
  earlyData?: Uint8Array;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** ICMP hole punching (src/traversal/icmp.ts) to a `listen --icmp` server behind this public IPv4 address, used
   *  when no rendezvous is given or the rendezvous cannot be reached; `to`, when a key, is the server's key. Needs
   *  root / CAP_NET_RAW; binds its own socket on the agreed port (not `endpoint`). */
  icmp?: { server: string; port?: number; probeAddress?: string; source?: string; timeoutMs?: number };
}

export interface ListenOptions extends CommonOptions {
  /** TURN relay for incoming connections too (see ConnectOptions.relay): needed when this side cannot be reached
   *  directly even by a relayed peer, e.g. when its UDP is blocked. The listener owns it and releases it on close. */
  relay?: RelayOption;
  relayHoldMs?: number;
  /** A name to claim on the rendezvous. */
  name?: string;
  /** Keys that may connect (list of keys/hex ids, or a function). Default: anyone with a valid key. */
  allow?: Allow;
  /** Noise IK first messages already seen (docs/handshake.md). Listeners of one key in one process share one, so a
   *  first flight accepted by one is a replay to the others; default: the listener's own. */
  replayCache?: IkReplayCache;
  signal?: AbortSignal;
}

/** The rendezvous as host and port when given as an address or name, else null (a factory). */
function rendezvousServer(spec: CommonOptions['rendezvous']): { host: string; port: number } | null {
  if (!spec || typeof spec === 'function') return null;
  return rendezvousList(spec)[0]!;
}

/** Every server of a rendezvous spec ("a,b" or an array: failover order). */
function rendezvousList(spec: Exclude<NonNullable<CommonOptions['rendezvous']>, RendezvousFactory>): Array<{ host: string; port: number }> {
  if (typeof spec === 'string') return parseRendezvousList(spec, DEFAULT_RENDEZVOUS_PORT);
  return (Array.isArray(spec) ? spec : [spec]).map((s) => ({ host: s.host, port: s.port ?? DEFAULT_RENDEZVOUS_PORT }));
}

/**
 * hardNat with a relay: a hard punch that fails (PUNCH_FAILED) falls back to the normal attempt through the relay,
 * so it gets at most this long (only a double-random budget asks for more: its probes are then sent faster, the
 * success estimate is unchanged). connect()'s DEFAULT_CONNECT_TIMEOUT_MS (30 s) then holds: gathering (NAT
 * measurement ~0.5 s, at most DEFAULT_HARDNAT_MEASURE_TIMEOUT_MS 5 s) + TURN allocation and introduction (~1 s;
 * 'auto' waits at most AUTO_RELAY_WAIT_MS 1 s for credentials) + this 12 s + the relayed checks (DEFAULT_RELAY_HOLD_MS
 * 1.5 s, then a round trip; they give up after DEFAULT_CHECK_TIMEOUT_MS 5 s) and the handshake. Without a budget the
 * hard punch takes at most DEFAULT_HARDNAT_TIMEOUT_MS (8 s), or is refused at once (random ↔ random).
 */
export const HARD_PUNCH_RELAY_BOUND_MS = 12_000;

/**
 * The hard punch for one introduction; null when it failed with PUNCH_FAILED and `relayFallback` is on: the caller
 * then runs the normal attempt (initiate() / respond()) with the relay's candidates, as without hardNat.
 *
 * Both sides decide the same way without extra signalling: the fallback is on when the CONNECTING side offered a
 * TURN relay candidate (the initiator knows its own relay; the responder sees the candidate in the introduction). A
 * listener's own relay is not in its advertised candidates, so it cannot count: the connector would not know of it.
 * Whether the punch is refused up front (planHardPunch) follows from both adverts, which both sides hold.
 */
async function hardOrFallback(p: {
  role: 'initiator' | 'responder';
  keyPair: KeyPair;
  peerKey: Uint8Array;
  connectionId: Uint8Array;
  endpoint: UdxEndpoint;
  hard: { advert: HardNatAdvert; opts: HardNatOptions };
  peer: HardNatAdvert;
  relayFallback: boolean;
  signal: AbortSignal;
  logger: Logger;
  progress: ((p: Progress) => void) | undefined;
  /** Responder: the listener's IK replay cache, shared with the hard punch's own listener. */
  replayCache?: IkReplayCache;
}): Promise<Session | null> {
  const { hard, peer, logger } = p;
  let budget = hard.opts.budget;
  if (budget && p.relayFallback) budget = { ...budget, seconds: Math.min(budget.seconds, HARD_PUNCH_RELAY_BOUND_MS / 1000) };
  try {
    const { session, punch } = await hardSession({
      role: p.role, keyPair: p.keyPair, peerKey: p.peerKey, connectionId: p.connectionId, endpoint: p.endpoint,
      local: hard.advert, peer, ...(budget ? { budget } : {}), ...(p.replayCache ? { replayCache: p.replayCache } : {}),
      onEstimate: (e) => logger.warn({ strategy: e.strategy, success: e.success, budget: e.budget }, 'hard punch: success estimate'),
      signal: p.signal, logger,
    });
    p.progress?.({ phase: 'hard-punch', local: hard.advert.kind, peer: peer.kind, strategy: punch.strategy, probesSent: punch.probesSent });
    return session;
  } catch (err) {
    if (!isHardPunchFailure(err)) throw err;
    const d = err.details ?? {};
    const strategy = typeof d.strategy === 'string' ? d.strategy : typeof d.reason === 'string' ? d.reason : 'hard';
    const probesSent = typeof d.probesSent === 'number' ? d.probesSent : 0;
    if (p.relayFallback) {
      logger.info({ err: err.message }, 'hard punch failed; falling back to the normal checks through the relay');
      p.progress?.({ phase: 'hard-punch', local: hard.advert.kind, peer: peer.kind, strategy, probesSent, fallback: 'relay', error: err.message });
      return null;
    }
    throw new NatpunchError(
      'PUNCH_FAILED',
      `${err.message}. No relay to fall back to: the connecting side offered none; a TURN relay would have carried the session (connect with \`--relay auto\` through a rendezvous run with \`natpunch serve --turn\`)`,
      { cause: err, details: { ...d, relay: false } },
    );
  }
}

/** hardNat gathering: the advert and its candidates, or null (off, or the measurement failed: logged, not fatal). */
async function gatherHard(
  options: CommonOptions,
  endpoint: UdxEndpoint,
  logger: Logger,
  signal?: AbortSignal,
): Promise<{ advert: HardNatAdvert; candidates: Candidate[]; opts: HardNatOptions } | null> {
  const opts = normalizeHardNat(options.hardNat);
  if (!opts) return null;
  try {
    const g = await gatherHardNat(endpoint, opts, rendezvousServer(options.rendezvous), signal);
    logger.info({ kind: g.advert.kind, delta: g.advert.delta, ports: g.advert.ports.length }, 'hard NAT advert');
    options.onProgress?.({ phase: 'hard-nat', kind: g.advert.kind, delta: g.advert.delta, ports: g.advert.ports });
    return { ...g, opts };
  } catch (err) {
    if (signal?.aborted) throw err;
    logger.warn({ err: (err as Error).message }, 'hardNat: NAT measurement failed; carrying on without the hard punch');
    return null;
  }
}

async function makeRendezvous(
  spec: NonNullable<CommonOptions['rendezvous']>,
  init: Parameters<RendezvousFactory>[0],
): Promise<RendezvousLike> {
  if (typeof spec === 'function') return spec(init);
  const server = rendezvousList(spec);
  for (const s of server) {
    if (!Number.isInteger(s.port) || s.port <= 0 || s.port > 65535) throw new NatpunchError('BAD_ARGUMENT', `bad rendezvous port in ${JSON.stringify(spec)}`);
  }
  return new RendezvousClient({
    transport: init.transport,
    server,
    keyPair: init.keyPair,
    ...(init.name !== undefined ? { name: init.name } : {}),
    candidates: init.candidates,
    logger: init.logger,
  });
}

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** The rendezvous' host when it is given as an address or name, else null (a factory). */
function rendezvousHost(spec: CommonOptions['rendezvous']): string | null {
  if (!spec || typeof spec === 'function') return null;
  return rendezvousList(spec)[0]!.host;
}

/**
 * Host candidates for an endpoint: its bound address, or for a wildcard bind the non-internal interface addresses
 * (with `loopback`, only 127.0.0.1: a rendezvous on loopback means both peers are on this machine).
 */
export async function defaultCandidates(endpoint: UdxEndpoint, opts: { loopback?: boolean } = {}): Promise<Candidate[]> {
  const { networkInterfaces } = await import('node:os');
  const { address, port } = endpoint.address();
  if (address !== '0.0.0.0' && address !== '::') return [{ type: 'host', transport: 'udp', address, port, priority: candidatePriority('host') }];
  if (opts.loopback) return [{ type: 'host', transport: 'udp', address: '127.0.0.1', port, priority: candidatePriority('host') }];
  const out: Candidate[] = [];
  let pref = 65535;
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) {
      if (i.internal || i.family !== 'IPv4') continue;
      out.push({ type: 'host', transport: 'udp', address: i.address, port, priority: candidatePriority('host', pref--) });
    }
  }
  return dedupeCandidates(out);
}

/**
 * portMapping: maps the endpoint's UDP port on the gateway, bounded by DEFAULT_PORT_MAPPING_TIMEOUT_MS. Resolves
 * with the mapper holding the mapping (the caller closes it, which deletes the mapping), or null when the gateway
 * could not map in time (reported in a 'port-mapping' progress event). Throws only when `signal` aborts.
 */
async function openPortMapping(
  spec: CommonOptions['portMapping'],
  endpoint: UdxEndpoint,
  logger: Logger,
  onProgress: ((p: Progress) => void) | undefined,
  signal?: AbortSignal,
): Promise<PortMapper | null> {
  if (!spec) return null;
  const { PortMapper } = await import('./portmap/mapper.js');
  const opts: PortMapperOptions = spec === true ? {} : spec;
  const mapper = new PortMapper({
    logger,
    ...opts,
    upnp: { ...opts.upnp, ssdp: { timeoutMs: PORT_MAPPING_SSDP_MS, ...opts.upnp?.ssdp } },
  });
  const t = timeoutSignal(DEFAULT_PORT_MAPPING_TIMEOUT_MS, signal);
  try {
    const m = await mapper.map({ internalPort: endpoint.address().port, transport: 'udp' }, t.signal);
    onProgress?.({ phase: 'port-mapping', ok: true, protocol: m.protocol, gateway: m.gateway, external: { address: m.externalAddress, port: m.externalPort } });
    return mapper;
  } catch (err) {
    await mapper.close();
    if (signal?.aborted) throw err;
    const error = t.signal.aborted ? `no mapping within ${DEFAULT_PORT_MAPPING_TIMEOUT_MS} ms` : (err as Error).message;
    logger.info({ err: error }, 'port mapping unavailable; going on without');
    onProgress?.({ phase: 'port-mapping', ok: false, error });
    return null;
  } finally {
    t.dispose();
  }
}

/** The mapper's current mappings as 'mapped' candidates (a renewal may have changed the external address). */
function mappedCandidates(mapper: PortMapper | null): Candidate[] {
  return (mapper?.mappings ?? []).map((m) => ({ type: 'mapped', transport: m.transport, address: m.externalAddress, port: m.externalPort, priority: candidatePriority('mapped') }));
}

function pathKind(result: CheckResult): SessionPath['kind'] {
  // Through a TURN relay when either end of the nominated pair is a relayed address.
  if (result.remoteCandidate.type === 'relay' || result.localCandidate?.type === 'relay') return 'relay';
  return result.kind;
}

interface Attempt {
  endpoint: UdxEndpoint;
  role: 'initiator' | 'responder';
  connectionId: Uint8Array;
  peerKey: Buffer;
  local: Candidate[];
  remote: Candidate[];
  keyPair: KeyPair;
  allow?: Allow;
  startAt?: number;
  options: CommonOptions;
  signal: AbortSignal;
  logger: Logger;
  recover?: (signal: AbortSignal) => Promise<{ address: string; port: number; path?: Partial<SessionPath> }>;
  ownsEndpoint: boolean;
  /** Checks keep answering the peer briefly after completion; whoever owns the attempt closes them. */
  track?: (c: ConnectivityChecks) => void;
  /** Why the session runs on this transport (reported in session.path.transportReason). */
  transportReason?: string;
  /** Carries STUNT #1 / NATBlaster offers (TCP); null without a rendezvous that can. */
  rendezvous?: RendezvousLike | null;
  /** Connector: Noise IK rides on the checks (docs/handshake.md); absent: XX after them. */
  ik?: IkInitiator;
  /** Listener: its replay cache of IK first messages; absent: XX only. */
  ikReplay?: IkReplayCache;
}

/** Waits for the rendezvous' scheduled start, bounded. */
async function waitStart(a: Attempt): Promise<void> {
  if (a.startAt === undefined) return;
  const wait = Math.min(MAX_START_DELAY_MS, a.startAt - Date.now());
  if (wait > 0) await sleep(wait, a.signal);
}

function newChecks(a: Attempt, handshake: CheckHandshake | undefined = a.ik): ConnectivityChecks {
  const checks = new ConnectivityChecks({
    ...(handshake ? { handshake } : {}),
    transport: a.endpoint,
    role: a.role,
    connectionId: a.connectionId,
    key: deriveCheckKey(a.connectionId, a.keyPair.publicKey, a.peerKey),
    local: a.local,
    remote: a.remote,
    nomination: 'implicit',
    signal: a.signal,
    logger: a.logger,
    ...(a.options.checkTimeoutMs !== undefined ? { timeoutMs: a.options.checkTimeoutMs } : {}),
  });
  a.track?.(checks);
  return checks;
}

function pathOf(result: CheckResult): Partial<SessionPath> {
  return { kind: pathKind(result), candidatePair: { local: result.localCandidate, remote: result.remoteCandidate }, rttMs: result.rttMs };
}

/** Initiator side of the punch: checks until the first pair works (implicit nomination: it is used at once). */
async function punch(a: Attempt): Promise<CheckResult> {
  await waitStart(a);
  a.options.onProgress?.({ phase: 'punching', pairs: a.remote.length });
  const result = await newChecks(a).run();
  a.options.onProgress?.({ phase: 'path', kind: pathKind(result), remote: result.remote, type: result.remoteCandidate.type, rttMs: result.rttMs });
  return result;
}

/** Keepalive interval: explicit, else half the measured mapping lifetime, else the session default (15 s). */
export function keepAliveFor(options: { keepAliveMs?: number; mappingLifetimeMs?: number }): number | undefined {
  if (options.keepAliveMs !== undefined) return options.keepAliveMs;
  if (options.mappingLifetimeMs !== undefined && options.mappingLifetimeMs > 0) {
    return Math.max(1_000, Math.min(DEFAULT_KEEPALIVE_MS, Math.floor(options.mappingLifetimeMs / 2)));
  }
  return undefined;
}

function sessionOptions(a: Attempt) {
  const keepAliveMs = keepAliveFor(a.options);
  return {
    endpoint: a.endpoint,
    keyPair: a.keyPair,
    ...(keepAliveMs !== undefined ? { keepAliveMs } : {}),
    ...(a.options.idleTimeoutMs !== undefined ? { idleTimeoutMs: a.options.idleTimeoutMs } : {}),
    ...(a.options.reconnectGraceMs !== undefined ? { reconnectGraceMs: a.options.reconnectGraceMs } : {}),
    ownsEndpoint: a.ownsEndpoint,
    logger: a.logger,
    signal: a.signal,
  };
}

/**
 * One connection attempt: checks, then the Noise handshake over the first pair that worked. The initiator starts
 * the handshake as soon as a check succeeds; the responder's UDX stream waits (unconnected) and attaches itself to
 * the address the initiator's first packet comes from, if that address passed an authenticated check.
 */
async function udpInitiatorSession(a: Attempt, result: CheckResult): Promise<Session> {
  const ids = streamIdsFor(a.connectionId);
  const ik = a.ik
    ? initiatorIkSession(a.ik, {
        ...sessionOptions(a), connectionId: a.connectionId, peerKey: a.peerKey, remote: result.remote,
        path: { ...pathOf(result), ...(a.transportReason ? { transportReason: a.transportReason } : {}) }, ...(a.recover ? { recover: a.recover } : {}),
      })
    : null;
  if (ik) return ik;
  return Session.establish({
    ...sessionOptions(a),
    isInitiator: true,
    remote: result.remote,
    localStreamId: ids.initiator,
    remoteStreamId: ids.responder,
    expectedRemoteKey: a.peerKey,
    path: { ...pathOf(result), ...(a.transportReason ? { transportReason: a.transportReason } : {}) },
    ...(a.recover ? { recover: a.recover } : {}),
  });
}

async function attempt(a: Attempt): Promise<Session> {
  const ids = streamIdsFor(a.connectionId);
  if (a.role === 'initiator') return udpInitiatorSession(a, await punch(a));
  await waitStart(a);
  a.options.onProgress?.({ phase: 'punching', pairs: a.remote.length });
  // Noise IK in the checks when the listener gave us its replay cache; the XX responder below waits as fallback.
  const ik = a.ikReplay
    ? new IkListenerAttempt({ keyPair: a.keyPair, connectionId: a.connectionId, peerKey: a.peerKey, replay: a.ikReplay, ...(a.allow !== undefined ? { allow: a.allow } : {}) })
    : null;
  const xx = new AbortController();
  const checks = newChecks(a, ik?.handshake);
  const udx = a.endpoint.acceptStream(ids.responder, ids.initiator, (address, port) => checks.isValidated(address, port));
  let result: CheckResult | null = null;
  udx.once('connect', () => {
    result = checks.select(udx.remoteHost!, udx.remotePort);
    if (result) a.options.onProgress?.({ phase: 'path', kind: pathKind(result), remote: result.remote, type: result.remoteCandidate.type, rttMs: result.rttMs });
  });
  const checksFailed = checks.run().then(
    (r) => {
      const s = ik?.session({ ...sessionOptions(a), path: pathOf(r) });
      if (!s) return new Promise<never>(() => {}); // XX: the session comes from Session.establish below
      a.options.onProgress?.({ phase: 'path', kind: pathKind(r), remote: r.remote, type: r.remoteCandidate.type, rttMs: r.rttMs });
      return s;
    },
    (err: unknown) => {
      udx.destroy();
      throw err;
    },
  );
  const session = Session.establish({
    ...sessionOptions(a),
    isInitiator: false,
    udxStream: udx,
    localStreamId: ids.responder,
    remoteStreamId: ids.initiator,
    ...(a.allow !== undefined ? { allow: a.allow } : {}),
    handshakeTimeoutMs: (a.options.checkTimeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS) + DEFAULT_HANDSHAKE_TIMEOUT_MS,
    path: () => (result ? pathOf(result) : {}),
    signal: AbortSignal.any([a.signal, xx.signal]),
  });
  const won = await Promise.race([session, checksFailed, ...(ik ? [ik.refused] : [])]);
  if (won.handshakePattern === 'IK') xx.abort(new NatpunchError('ABORTED', 'the session runs on Noise IK'));
  return won;
}

/** Relay upgrade: while a session runs over the TURN relay, direct checks are retried this often (paced rounds)... */
export const RELAY_UPGRADE_INTERVAL_MS = 2_000;
/** ...each round bounded by this (the checks' own pacing and retransmission schedule, RFC 8445 §14) ... */
export const RELAY_UPGRADE_ROUND_MS = 3_000;
/** ...for at most this long after the session started; then the session stays on the relay. */
export const RELAY_UPGRADE_MAX_MS = 120_000;
/** After the session moved to a direct path, the relay allocation is released once it has been idle this long
 *  (Refresh with lifetime 0, RFC 8656 §7.2). */
export const RELAY_RELEASE_IDLE_MS = 5_000;

/**
 * The peer's direct (non-relay UDP) candidates for the background upgrade checks, plus "predicted" ones: its
 * reflexive address with each host port (a NAT that became port-preserving maps the socket's own port).
 */
export function upgradeCandidates(remote: readonly Candidate[]): Candidate[] {
  const direct = remote.filter((c) => c.transport === 'udp' && c.type !== 'relay' && c.type !== 'icmp' && c.address !== '127.0.0.1');
  const predicted: Candidate[] = [];
  for (const s of direct.filter((c) => c.type === 'srflx')) {
    for (const h of direct.filter((c) => c.type === 'host' && c.address.includes(':') === s.address.includes(':'))) {
      predicted.push({ type: 'predicted', transport: 'udp', address: s.address, port: h.port, priority: candidatePriority('predicted') });
    }
  }
  return dedupeCandidates([...direct, ...predicted]).slice(0, MAX_UPGRADE_CANDIDATES);
}
const MAX_UPGRADE_CANDIDATES = 16;

/**
 * Issue 12 upgrade: while `session` runs over the relay, both peers keep running authenticated direct checks in
 * bounded rounds (their own connection tag, derived from the session's connection id) between their direct
 * candidates. When a pair answers both ways and is nominated, each side moves the session onto it
 * (Session#migrate: the initiator's move is announced on the new path, the responder follows it). `onDirect` runs
 * once the session's path is direct. Stops when the session closes, moves by itself, or after RELAY_UPGRADE_MAX_MS.
 */
function upgradeInBackground(a: Attempt, session: Session, remote: readonly Candidate[], onDirect?: () => void): void {
  if (session.transport !== 'udp' || session.path.kind !== 'relay') return;
  const targets = upgradeCandidates(remote);
  if (targets.length === 0) return;
  const local = a.local.filter((c) => c.transport === 'udp' && c.type !== 'relay');
  const id = createHash('sha256').update(a.connectionId).update('natpunch relay upgrade').digest().subarray(0, 16);
  const key = deriveCheckKey(id, a.keyPair.publicKey, a.peerKey);
  const ac = new AbortController();
  const stop = () => ac.abort();
  session.once('close', stop);
  const deadline = Date.now() + RELAY_UPGRADE_MAX_MS;
  const log = a.logger;
  void (async () => {
    try {
      while (!ac.signal.aborted && Date.now() < deadline && session.path.kind === 'relay') {
        const checks = new ConnectivityChecks({
          transport: a.endpoint, role: a.role, connectionId: id, key, local, remote: targets, nomination: 'ack',
          timeoutMs: RELAY_UPGRADE_ROUND_MS, signal: ac.signal, logger: log,
        });
        try {
          const r = await checks.run();
          if (ac.signal.aborted) return;
          log.info({ remote: r.remote }, 'direct path found while relayed; moving the session');
          await session.migrate(r.remote, pathOf(r));
          if (session.path.kind !== 'relay') {
            a.options.onProgress?.({ phase: 'path', kind: session.path.kind, remote: session.path.remote, type: r.remoteCandidate.type, rttMs: r.rttMs });
            onDirect?.();
            return;
          }
        } catch (err) {
          log.debug({ err: (err as Error).message }, 'relay upgrade round failed');
        } finally {
          // Keep answering the peer's last probes for a moment (its nomination may need a retransmission).
          setTimeout(() => checks.close(), RELAY_UPGRADE_INTERVAL_MS).unref();
        }
        await sleep(RELAY_UPGRADE_INTERVAL_MS, ac.signal).catch(() => {});
      }
    } finally {
      session.off('close', stop);
    }
  })();
}

/** The connector's attempt with Noise IK in its checks (docs/handshake.md): the key comes from the offer / pin. */
function withIk(att: Attempt, options: ConnectOptions): Attempt {
  att.ik = initiatorIk({ keyPair: options.keyPair, peerKey: att.peerKey, connectionId: att.connectionId, ...(options.earlyData ? { earlyData: options.earlyData } : {}) });
  return att;
}

/**
 * The key the ICMP path must authenticate for `to`: the key given, or the one a name is pinned to. A name with
 * neither is refused: ICMP has no rendezvous to resolve it, and without a key any server would be accepted.
 */
async function icmpPeerKey(to: PeerSpec, pins: PeerPins | undefined): Promise<Buffer> {
  const target = peerTarget(to);
  if (target.key) return target.key;
  const pinned = target.name && pins?.pinned ? await pins.pinned(target.name) : null;
  if (pinned) return Buffer.from(pinned);
  throw new NatpunchError('PEER_KEY_MISMATCH', `ICMP hole punching cannot check who "${target.name}" is: give its key (--peer-key, or to: { name, key }), or connect once through the rendezvous so the name is pinned`);
}

/** The key `to` demands (by key, or `{ name, key }`), else null. */
function toKey(to: PeerSpec): Buffer | null {
  return peerTarget(to).key ?? null;
}

/** Trust on first use: the session authenticated the introduced key, so a name seen for the first time is pinned to
 *  it. A pin file that cannot be written does not fail the session (logged). */
async function pinName(pin: (() => Promise<void>) | null, logger: Logger): Promise<void> {
  if (!pin) return;
  try {
    await pin();
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'could not pin the peer name to its key');
  }
}

/**
 * Connects to a peer and resolves with an authenticated session. Through a rendezvous (`to` + `rendezvous`):
 * one UDP socket registers, asks for the introduction, punches and carries the session. Direct mode (`peer`):
 * the caller provides the peer's key and candidates.
 */
export async function connect(options: ConnectOptions): Promise<Session> {
  const logger = options.logger ?? silentLogger;
  if (options.icmp && !options.peer && !options.rendezvous) return connectViaIcmp(options, logger);
  if (!options.peer && (options.to === undefined || !options.rendezvous)) {
    throw new NatpunchError('BAD_ARGUMENT', 'connect needs `to` and `rendezvous`, or `peer` (direct mode), or `icmp`');
  }
  const { signal, dispose } = timeoutSignal(options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, options.signal);
  const ownsEndpoint = !options.endpoint;
  const endpoint = options.endpoint ?? (await UdxEndpoint.bind(options.bind ?? {}));
  let rendezvous: RendezvousLike | null = null;
  let relay: RelayPath | null = null;
  const checks: ConnectivityChecks[] = [];
  const lingering = () => checks.forEach((c) => c.close());
  const mode = options.transport ?? 'auto';
  let tcp: TcpLocal | null = null;
  /** Remote candidates plus, with a relay, the same peers reached through it (loopback proxies, lowest priority). */
  const withRelay = async (remote: Candidate[]): Promise<Candidate[]> => {
    if (!relay) return remote;
    relay.hold(options.relayHoldMs ?? DEFAULT_RELAY_HOLD_MS);
    const permitted = await relay.permit(remote, signal);
    const proxied = await relay.proxied(remote, permitted);
    return [...remote, ...proxied];
  };
  let introduced = false;
  let pinAfterSession: (() => Promise<void>) | null = null;
  let mapper: PortMapper | null = null;
  try {
    options.onProgress?.({ phase: 'gathering', local: endpoint.address() });
    const rvHost = rendezvousHost(options.rendezvous);
    let local = options.candidates ?? (await defaultCandidates(endpoint, { loopback: rvHost !== null && isLoopbackHost(rvHost) }));
    mapper = await openPortMapping(options.portMapping, endpoint, logger, options.onProgress, signal);
    if (mapper) local = dedupeCandidates([...local, ...mappedCandidates(mapper)]);
    if (options.relay && options.relay !== 'auto') {
      relay =
        options.relay instanceof RelayPath
          ? options.relay
          : await RelayPath.open({
              transport: endpoint,
              ...(typeof options.relay === 'string' ? parseRelaySpec(options.relay) : options.relay),
              signal,
              logger,
            });
      local = dedupeCandidates([...local, relay.candidate()]);
    }
    // TCP transport (issue 7): TCP candidates on a reuseport port P next to the UDP ones.
    const gathered = await gatherTcp(mode, options, local, logger, signal);
    tcp = gathered.tcp;
    const transportReason = gathered.reason;
    if (tcp) local = dedupeCandidates([...local, ...tcp.candidates]);
    if (transportReason) options.onProgress?.({ phase: 'transport', transport: 'udp', reason: transportReason });
    const hard = options.peer ? null : await gatherHard(options, endpoint, logger, signal);
    if (hard) local = [...local, ...hard.candidates];
    // TCP port prediction last: the NAT measurement must be the latest allocation before our SYNs (tcp-predict.ts).
    if (tcp) local = [...local, ...(await tcp.predict({ signal }))];
    let session: Session;
    let upgradeFrom: { a: Attempt; remote: Candidate[] } | null = null;
    if (options.peer) {
      const att: Attempt = {
        endpoint, role: 'initiator', connectionId: options.connectionId ?? randomBytes(16), peerKey: Buffer.from(options.peer.publicKey),
        local, remote: await withRelay(options.peer.candidates), keyPair: options.keyPair, options, signal, logger, ownsEndpoint,
        track: (c) => checks.push(c), ...(transportReason ? { transportReason } : {}),
      };
      upgradeFrom = { a: att, remote: options.peer.candidates };
      session = await initiate(withIk(att, options), tcp, mode);
    } else {
      const rv = await makeRendezvous(options.rendezvous!, { transport: endpoint, keyPair: options.keyPair, candidates: () => local, logger });
      rendezvous = rv;
      if (options.relay === 'auto') {
        relay = await autoRelay(rv, endpoint, false, signal, logger);
        if (relay) local = dedupeCandidates([...local, relay.candidate()]);
      }
      const to = options.to!;
      if (hard && relay) {
        // The peer decides the hard-punch fallback from our relay candidate (lowest priority, so sent last): the
        // client keeps MAX_CANDIDATES - 1 and the server may add up to 2 observed ones.
        const sent = dedupeCandidates(local).slice(0, MAX_CANDIDATES - 3);
        if (!sent.some((c) => c.type === 'relay')) logger.warn('hardNat: too many candidates; the relay candidate may not reach the peer, which then does not fall back to it');
      }
      const target = peerTarget(to);
      const offer = await rv.requestConnect(target.lookup, { candidates: local, signal });
      introduced = true;
      // Identity before any byte goes to the introduced peer (no probe, no handshake): its key must be the one asked
      // for, or the one the name is pinned to. A lying rendezvous then gives a failed connection, never a wrong one.
      pinAfterSession = await verifyPeer(target, offer.peerKey, options.knownPeers);
      options.onProgress?.({ phase: 'offer', peer: keyToId(offer.peerKey), ...(offer.peerName ? { peerName: offer.peerName } : {}), candidates: offer.candidates, role: 'initiator', ...(offer.mode ? { mode: offer.mode } : {}) });
      const peerHard = hard ? advertFromCandidates(offer.candidates) : null;
      // A failed hard punch falls back to the normal attempt below when we offered a relay (hardOrFallback()).
      const hs =
        hard && peerHard?.advert && needsHardPunch(hard.advert, peerHard.advert)
          ? await hardOrFallback({
              role: 'initiator', keyPair: options.keyPair, peerKey: offer.peerKey, connectionId: offer.connectionId, endpoint,
              hard, peer: peerHard.advert, relayFallback: relay !== null, signal, logger, progress: options.onProgress,
            })
          : null;
      if (hs) {
        tcp?.close();
        const [hardRelay, hardMapper] = [relay, mapper];
        relay = null;
        mapper = null; // the session owns them now
        void hardRelay?.close(); // the hard punch found a direct path
        hs.once('close', () => {
          lingering();
          rendezvous?.close();
          void hardMapper?.close();
          if (ownsEndpoint) void endpoint.close().catch(() => {});
        });
        await pinName(pinAfterSession, logger);
        options.onProgress?.({ phase: 'connected', peer: keyToId(hs.remotePublicKey), rttMs: hs.path.rttMs });
        return hs;
      }
      if (peerHard?.advert) offer.candidates = peerHard.rest;
      // Re-establish through the rendezvous when the path dies (NAT rebinding the peer's probes cannot get through):
      // a fresh punch to the same key, then the session moves onto the punched pair (Session#migrate).
      const recover = async (rsignal: AbortSignal) => {
        const again = await rv.requestConnect(offer.peerKey, { candidates: local, signal: rsignal });
        if (!again.peerKey.equals(offer.peerKey)) throw new NatpunchError('HANDSHAKE_FAILED', 'the rendezvous introduced another key');
        const r = await punch({
          endpoint, role: 'initiator', connectionId: again.connectionId, peerKey: offer.peerKey, local, remote: again.candidates,
          keyPair: options.keyPair, options, signal: rsignal, logger, ownsEndpoint, track: (c) => checks.push(c),
          ...(again.startAt !== undefined ? { startAt: again.startAt } : {}),
        });
        return { address: r.remote.address, port: r.remote.port, path: { kind: pathKind(r), candidatePair: { local: r.localCandidate, remote: r.remoteCandidate }, rttMs: r.rttMs } };
      };
      const att: Attempt = {
        endpoint, role: 'initiator', connectionId: offer.connectionId, peerKey: offer.peerKey, local, remote: await withRelay(offer.candidates),
        keyPair: options.keyPair, options, signal, logger, ownsEndpoint, recover, track: (c) => checks.push(c), rendezvous: rv,
        ...(offer.startAt !== undefined ? { startAt: offer.startAt } : {}),
        ...(transportReason ? { transportReason } : {}),
      };
      upgradeFrom = { a: att, remote: offer.candidates };
      session = await initiate(withIk(att, options), tcp, mode);
    }
    // Port P is no longer needed: the punched connection (if TCP won) lives on by itself.
    tcp?.close();
    if (session.transport === 'tcp' && ownsEndpoint) session.once('close', () => void endpoint.close().catch(() => {}));
    const usedRelay = relay;
    if (usedRelay && session.path.kind !== 'relay') {
      // Direct won the race: release the allocation now.
      relay = null;
      void usedRelay.close();
    } else if (usedRelay && upgradeFrom) {
      // Relayed: keep trying direct in the background; once moved, release the allocation after an idle period.
      const { a, remote } = upgradeFrom;
      upgradeInBackground({ ...a, signal: new AbortController().signal, track: (c) => checks.push(c) }, session, remote, () => {
        const t = setTimeout(() => {
          if (relay !== usedRelay) return;
          relay = null;
          logger.info('relay allocation released (session moved to a direct path)');
          void usedRelay.close();
        }, RELAY_RELEASE_IDLE_MS);
        t.unref();
        session.once('close', () => clearTimeout(t));
      });
    }
    const usedMapper = mapper;
    mapper = null; // the session owns it now: renewed while it lives, deleted when it closes
    session.once('close', () => {
      lingering();
      rendezvous?.close();
      void relay?.close();
      void usedMapper?.close();
    });
    await pinName(pinAfterSession, logger);
    options.onProgress?.({ phase: 'connected', peer: keyToId(session.remotePublicKey), rttMs: session.path.rttMs });
    return session;
  } catch (err) {
    lingering();
    tcp?.close();
    rendezvous?.close();
    await relay?.close();
    await mapper?.close();
    if (ownsEndpoint) await endpoint.close().catch(() => {});
    if (options.icmp && !options.peer && !introduced && !options.signal?.aborted) {
      logger.info({ err: (err as Error).message }, 'rendezvous unreachable; trying ICMP hole punching');
      return connectViaIcmp(options, logger);
    }
    if (isNatpunchError(err, 'ABORTED') && signal.reason instanceof NatpunchError && signal.reason.code === 'TIMEOUT') {
      throw new NatpunchError('TIMEOUT', `no session with the peer within ${options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS} ms`, { cause: err });
    }
    throw err;
  } finally {
    dispose();
  }
}

/** The `icmp` candidate inside connect(): ICMP hole punching to the server's public address (no rendezvous). */
async function connectViaIcmp(options: ConnectOptions, logger: Logger): Promise<Session> {
  const icmp = options.icmp!;
  const peerKey = options.to !== undefined ? await icmpPeerKey(options.to, options.knownPeers) : null;
  const { connectIcmp } = await import('./traversal/icmp.js');
  return connectIcmp({
    keyPair: options.keyPair,
    server: icmp.server,
    ...(peerKey ? { peerKey } : {}),
    ...(icmp.port !== undefined ? { port: icmp.port } : {}),
    ...(icmp.probeAddress !== undefined ? { probeAddress: icmp.probeAddress } : {}),
    ...(icmp.source !== undefined ? { source: icmp.source } : {}),
    ...(icmp.timeoutMs !== undefined ? { timeoutMs: icmp.timeoutMs } : {}),
    ...(options.keepAliveMs !== undefined ? { keepAliveMs: options.keepAliveMs } : {}),
    ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    logger,
    onProgress: (p) => {
      if (p.phase === 'path' || p.phase === 'connected') options.onProgress?.(p as Progress);
    },
  });
}

/**
 * Accepts sessions. Events: 'session' (Session), 'progress' (Progress), 'connection-error' (Error, peer id):
 * a failed or refused incoming attempt (never fatal to the listener).
 */
export class Listener extends EventEmitter {
  readonly endpoint: UdxEndpoint;
  readonly publicKey: Buffer;
  #options: ListenOptions;
  #logger: Logger;
  #local: Candidate[];
  #rendezvous: RendezvousLike | null = null;
  #sessions = new Set<Session>();
  #checks = new Set<ConnectivityChecks>();
  #attempts = new Set<AbortController>();
  #closed = false;
  #reflexive: { address: string; port: number } | null = null;
  #onOffer = (offer: ConnectOfferLike) => void this.acceptOffer(offer);
  #ownsEndpoint: boolean;
  #tcp: TcpLocal | null = null;
  #mode: TransportMode = 'auto';
  #mapper: PortMapper | null = null;
  #hard: { advert: HardNatAdvert; opts: HardNatOptions } | null = null;
  /** Remembers Noise IK first messages so a replayed one opens no second session (docs/handshake.md). */
  #ikReplay: IkReplayCache;

  /** @internal listen() hands over the hardNat advert (its candidates are already in `local`). */
  attachHardNat(hard: { advert: HardNatAdvert; opts: HardNatOptions } | null): void {
    this.#hard = hard;
  }

  /** @internal listen() hands over the port mapping (portMapping); close() deletes it. */
  attachPortMapper(mapper: PortMapper | null): void {
    this.#mapper = mapper;
  }

  /** What the registration carries: our own candidates, the gateway's mapping, and our relayed address. */
  #registeredCandidates(): Candidate[] {
    const relay = this.#relay();
    return relay ? dedupeCandidates([...this.#localNow(), relay.candidate()]) : this.#localNow();
  }

  /** Our own candidates plus the gateway's current mapping, if any. */
  #localNow(): Candidate[] {
    return this.#mapper ? dedupeCandidates([...this.#local, ...mappedCandidates(this.#mapper)]) : this.#local;
  }

  /** @internal listen() hands over the TCP side (port P and its candidates, already in `local`). */
  attachTcp(tcp: TcpLocal | null, mode: TransportMode): void {
    this.#tcp = tcp;
    this.#mode = mode;
  }

  /** @internal use listen() */
  constructor(endpoint: UdxEndpoint, local: Candidate[], options: ListenOptions, ownsEndpoint = true) {
    super();
    this.#ownsEndpoint = ownsEndpoint;
    this.endpoint = endpoint;
    this.publicKey = options.keyPair.publicKey;
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.#local = local;
    this.#ikReplay = options.replayCache ?? new IkReplayCache();
  }

  /** Our candidates (host, plus the server-reflexive one once registered). */
  get candidates(): Candidate[] {
    const srflx: Candidate[] = this.#reflexive
      ? [{ type: 'srflx', transport: 'udp', address: this.#reflexive.address, port: this.#reflexive.port, priority: candidatePriority('srflx') }]
      : [];
    const relay = this.#relay();
    return dedupeCandidates([...this.#localNow(), ...srflx, ...(relay ? [relay.candidate()] : [])]);
  }

  get reflexive(): { address: string; port: number } | null {
    return this.#reflexive;
  }

  /** @internal The registration's client (an Endpoint's connects share it); null before start() or without one. */
  get rendezvous(): RendezvousLike | null {
    return this.#rendezvous;
  }

  get sessions(): ReadonlySet<Session> {
    return this.#sessions;
  }

  /** @internal */
  async start(signal?: AbortSignal): Promise<void> {
    if (!this.#options.rendezvous) return;
    const progress = (p: Progress) => {
      this.#options.onProgress?.(p);
      this.emit('progress', p);
    };
    const rv = await makeRendezvous(this.#options.rendezvous, {
      transport: this.endpoint,
      keyPair: this.#options.keyPair,
      ...(this.#options.name !== undefined ? { name: this.#options.name } : {}),
      // With a relay, its relayed address is registered too: a connector relayed on the same server then reaches
      // us relay to relay from its first check (peer-relay mode lets it: we are introduced).
      candidates: () => this.#registeredCandidates(),
      logger: this.#logger,
    });
    this.#rendezvous = rv;
    rv.on('connect-request', this.#onOffer);
    const reg = await rv.register(signal);
    this.#reflexive = { address: reg.reflexive.address, port: reg.reflexive.port };
    if (this.#options.relay === 'auto') {
      const relay = await autoRelay(rv, this.endpoint, true, signal, this.#logger);
      // The listener owns it from here (released by close()); later offers carry its candidate.
      this.#options = { ...this.#options, ...(relay ? { relay } : {}) };
      if (!relay) delete this.#options.relay;
      // Register again at once so the relayed address is in our registration (not only after the next refresh).
      else await rv.register(signal);
    }
    progress({ phase: 'registered', reflexive: this.#reflexive });
  }

  /**
   * Handles one introduction (from the rendezvous, or handed over directly in direct mode): punch, then accept the
   * Noise handshake, check `allow`, emit 'session'. Resolves with the session, or null when the attempt failed.
   */
  async acceptOffer(offer: ConnectOfferLike): Promise<Session | null> {
    if (this.#closed) return null;
    const peer = keyToId(offer.peerKey);
    if (offer.role !== 'responder') return null; // our own requests' answers are not introductions to accept
    if (this.#attempts.size >= MAX_CONCURRENT_ATTEMPTS) {
      this.#logger.warn({ peer }, 'too many connection attempts in progress; dropping one');
      this.emit('connection-error', new NatpunchError('RATE_LIMITED', `more than ${MAX_CONCURRENT_ATTEMPTS} connection attempts in progress`), peer);
      return null;
    }
    const progress = (p: Progress) => {
      this.#options.onProgress?.(p);
      this.emit('progress', p);
    };
    progress({ phase: 'offer', peer, ...(offer.peerName ? { peerName: offer.peerName } : {}), candidates: offer.candidates, role: 'responder', ...(offer.mode ? { mode: offer.mode } : {}) });
    const ac = new AbortController();
    this.#attempts.add(ac);
    const { signal, dispose } = timeoutSignal(DEFAULT_CONNECT_TIMEOUT_MS, ac.signal);
    try {
      const peerHard = this.#hard ? advertFromCandidates(offer.candidates) : null;
      let session: Session | null = null;
      if (this.#hard && peerHard?.advert && needsHardPunch(this.#hard.advert, peerHard.advert)) {
        // `allow` before anything is sent (the rendezvous authenticated the key; the handshake proves it again).
        if (!(await isAllowed(this.#options.allow, Buffer.from(offer.peerKey)))) throw new NatpunchError('NOT_ALLOWED', `peer ${peer} is not allowed`);
        // Falls back (null) like the connector does: when the connecting side offered a relay candidate.
        session = await hardOrFallback({
          role: 'responder', keyPair: this.#options.keyPair, peerKey: offer.peerKey, connectionId: offer.connectionId, endpoint: this.endpoint,
          hard: this.#hard, peer: peerHard.advert, relayFallback: offer.candidates.some((c) => c.type === 'relay'),
          signal, logger: this.#logger, progress, replayCache: this.#ikReplay,
        });
      }
      if (!session) {
      const att: Attempt = {
        endpoint: this.endpoint, role: 'responder', connectionId: offer.connectionId, peerKey: offer.peerKey,
        local: this.candidates, remote: await this.#withRelay(peerHard?.advert ? peerHard.rest : offer.candidates, signal), keyPair: this.#options.keyPair,
        ...(this.#options.allow !== undefined ? { allow: this.#options.allow } : {}),
        ...(offer.startAt !== undefined ? { startAt: offer.startAt } : {}),
        options: { ...this.#options, onProgress: progress }, signal, logger: this.#logger, ownsEndpoint: false, rendezvous: this.#rendezvous,
        ikReplay: this.#ikReplay,
        track: (c) => {
          this.#checks.add(c);
          setTimeout(() => this.#checks.delete(c), 60_000).unref();
        },
      };
      session = await respond(att, this.#tcp, this.#mode);
      // Relayed: keep trying direct in the background (the listener's relay serves other sessions: kept).
      upgradeInBackground({ ...att, signal: new AbortController().signal }, session, offer.candidates);
      }
      if (this.#closed) {
        await session.close();
        return null;
      }
      this.#sessions.add(session);
      session.once('close', () => this.#sessions.delete(session));
      progress({ phase: 'connected', peer, rttMs: session.path.rttMs });
      this.emit('session', session);
      return session;
    } catch (err) {
      // A peer that re-punched to resume an existing session never starts a handshake: not worth an error.
      const resumed = [...this.#sessions].some((s) => s.remotePublicKey.equals(offer.peerKey)) && isNatpunchError(err, 'HANDSHAKE_FAILED');
      this.#logger.info({ peer, err: (err as Error).message }, resumed ? 'resume punch finished' : 'incoming connection failed');
      if (!resumed && !this.#closed) this.emit('connection-error', err, peer);
      return null;
    } finally {
      dispose();
      this.#attempts.delete(ac);
    }
  }

  /** Stops accepting, closes every session it accepted and the socket. */
  /** With a relay: the peer's candidates reached through it too (see connect()). */
  #relay(): RelayPath | null {
    return this.#options.relay instanceof RelayPath ? this.#options.relay : null;
  }

  async #withRelay(remote: Candidate[], signal: AbortSignal): Promise<Candidate[]> {
    const relay = this.#relay();
    if (!relay || relay.closed) return remote;
    relay.hold(this.#options.relayHoldMs ?? DEFAULT_RELAY_HOLD_MS);
    const permitted = await relay.permit(remote, signal);
    const proxied = await relay.proxied(remote, permitted);
    return [...remote, ...proxied];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    void this.#relay()?.close();
    this.#rendezvous?.off('connect-request', this.#onOffer);
    this.#rendezvous?.close();
    for (const a of this.#attempts) a.abort(new NatpunchError('ABORTED', 'listener closed'));
    for (const c of this.#checks) c.close();
    this.#tcp?.close();
    await Promise.all([...this.#sessions].map((s) => s.close()));
    await this.#mapper?.close();
    if (this.#ownsEndpoint) await this.endpoint.close();
    this.emit('close');
  }
}

/** Listens for sessions: binds one UDP socket, registers it with the rendezvous (when given) and accepts. */
export async function listen(options: ListenOptions): Promise<Listener> {
  const ownsEndpoint = !options.endpoint;
  const endpoint = options.endpoint ?? (await UdxEndpoint.bind(options.bind ?? {}));
  let tcp: TcpLocal | null = null;
  let mapper: PortMapper | null = null;
  try {
    options.onProgress?.({ phase: 'gathering', local: endpoint.address() });
    const rvHost = rendezvousHost(options.rendezvous);
    let local = options.candidates ?? (await defaultCandidates(endpoint, { loopback: rvHost !== null && isLoopbackHost(rvHost) }));
    mapper = await openPortMapping(options.portMapping, endpoint, options.logger ?? silentLogger, options.onProgress, options.signal);
    const mode = options.transport ?? 'auto';
    const gathered = await gatherTcp(mode, options, local, options.logger ?? silentLogger, options.signal);
    tcp = gathered.tcp;
    if (tcp) local = dedupeCandidates([...local, ...tcp.candidates]);
    if (gathered.reason) options.onProgress?.({ phase: 'transport', transport: 'udp', reason: gathered.reason });
    const hard = await gatherHard(options, endpoint, options.logger ?? silentLogger, options.signal);
    if (hard) local = [...local, ...hard.candidates];
    if (tcp) local = [...local, ...(await tcp.predict(options.signal ? { signal: options.signal } : {}))];
    if (options.relay && options.relay !== 'auto' && !(options.relay instanceof RelayPath)) {
      const spec = typeof options.relay === 'string' ? parseRelaySpec(options.relay) : options.relay;
      options = { ...options, relay: await RelayPath.open({ transport: endpoint, ...spec, ...(options.signal ? { signal: options.signal } : {}), ...(options.logger ? { logger: options.logger } : {}) }) };
    }
    const listener = new Listener(endpoint, local, options, ownsEndpoint);
    listener.attachTcp(tcp, mode);
    listener.attachPortMapper(mapper);
    listener.attachHardNat(hard);
    tcp = null; // the listener owns it now
    mapper = null;
    await listener.start(options.signal).catch(async (err: unknown) => {
      await listener.close();
      throw err;
    });
    return listener;
  } catch (err) {
    tcp?.close();
    await mapper?.close();
    if (ownsEndpoint) await endpoint.close().catch(() => {});
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// TCP transport (issue 7): gathering, the initiator's choice between UDP and TCP, the responder accepting either.

/**
 * Opens the TCP side for `mode` ('udp': none). Without the addon, 'tcp' fails with ADDON_UNAVAILABLE and 'auto'
 * carries on over UDP with the reason. The srflx TCP candidate comes from STUN over TCP at the rendezvous' address.
 */
async function gatherTcp(
  mode: TransportMode,
  options: CommonOptions,
  udpLocal: Candidate[],
  logger: Logger,
  signal?: AbortSignal,
): Promise<{ tcp: TcpLocal | null; reason?: string }> {
  if (mode === 'udp') return { tcp: null };
  if (mode !== 'tcp' && mode !== 'auto') throw new NatpunchError('BAD_ARGUMENT', `transport must be udp, tcp or auto (got ${String(mode)})`);
  const status = addonStatus();
  if (!status.available) {
    if (mode === 'tcp') throw new NatpunchError('ADDON_UNAVAILABLE', `TCP transport unavailable: ${status.reason}`, { details: { reason: status.reason } });
    return { tcp: null, reason: `TCP hole punching unavailable (${status.reason}); using UDP` };
  }
  const spec = options.rendezvous;
  const rv = rendezvousServer(spec);
  try {
    const tcp = await openTcpLocal({
      hostAddresses: udpLocal.filter((c) => c.type === 'host').map((c) => c.address),
      ...(rv ? { stun: rv } : {}),
      ...(mode === 'auto' ? { timeoutMs: TCP_GATHER_AUTO_TIMEOUT_MS } : {}),
      ...(options.tcpSequence === 'off' ? { sequencePort: false } : {}),
      ...(signal ? { signal } : {}),
      logger,
    });
    return { tcp };
  } catch (err) {
    if (mode === 'tcp') throw err;
    return { tcp: null, reason: `TCP unavailable (${(err as Error).message}); using UDP` };
  }
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: Error };
const settle = <T>(p: Promise<T>): Promise<Settled<T>> => p.then((value) => ({ ok: true as const, value }), (error: Error) => ({ ok: false as const, error }));

function tcpPathProgress(a: Attempt, r: TcpPathResult): void {
  const type = r.candidate.type ?? 'prflx';
  a.options.onProgress?.({
    phase: 'path', kind: type === 'host' ? 'lan' : 'direct', remote: { address: r.candidate.address, port: r.candidate.port }, type: `tcp-${type}`, rttMs: null,
    technique: r.technique, ...(r.reason ? { reason: r.reason } : {}),
  });
}

/** How punchTcp may go beyond P2P-NAT for this attempt. */
function tcpSequence(a: Attempt) {
  return { mode: a.options.tcpSequence ?? 'auto', channel: seqChannel(a.rendezvous ?? null, a.connectionId, a.peerKey) };
}

function tcpSessionOptions(a: Attempt, signal: AbortSignal, transportReason?: string) {
  return {
    keyPair: a.keyPair,
    peerKey: a.peerKey,
    ...(a.allow !== undefined ? { allow: a.allow } : {}),
    ...(a.options.keepAliveMs !== undefined ? { keepAliveMs: a.options.keepAliveMs } : {}),
    ...(a.options.idleTimeoutMs !== undefined ? { idleTimeoutMs: a.options.idleTimeoutMs } : {}),
    logger: a.logger,
    signal,
    ...(transportReason ? { transportReason } : {}),
  };
}

/**
 * The initiator: 'tcp' punches TCP only; 'auto' punches UDP and TCP in parallel and runs the Noise handshake on ONE
 * of them (so the responder ends up with exactly one session): UDP when its check succeeds first, or within
 * AUTO_UDP_GRACE_MS of TCP's connection; TCP when UDP fails or is slower than that. The loser is closed.
 */
async function initiate(a: Attempt, tcp: TcpLocal | null, mode: TransportMode): Promise<Session> {
  if (!tcp || mode === 'udp') return attempt(a);
  const progress = (transport: 'udp' | 'tcp', reason: string) => a.options.onProgress?.({ phase: 'transport', transport, reason });
  const tcpOpts = (signal: AbortSignal) => ({ local: tcp, role: 'initiator' as const, remote: a.remote, signal, logger: a.logger, sequence: tcpSequence(a) });
  if (mode === 'tcp') {
    await waitStart(a);
    a.options.onProgress?.({ phase: 'punching', pairs: tcpCandidatesOf(a.remote).length });
    const punched = await punchTcp(tcpOpts(a.signal));
    tcpPathProgress(a, punched);
    return sessionOverTcp('initiator', punched, tcpSessionOptions(a, a.signal, 'transport tcp requested'));
  }
  if (tcpCandidatesOf(a.remote).length === 0) {
    const reason = 'the peer offered no TCP candidates; using UDP';
    return attempt({ ...a, transportReason: reason });
  }
  const udpAc = new AbortController();
  const tcpAc = new AbortController();
  const udpSignal = AbortSignal.any([a.signal, udpAc.signal]);
  const tcpSignal = AbortSignal.any([a.signal, tcpAc.signal]);
  const udpP = settle(punch({ ...a, signal: udpSignal }));
  const tcpP = settle(waitStart(a).then(() => punchTcp(tcpOpts(tcpSignal))));
  let udp: Settled<CheckResult> | undefined;
  let tcpR: Settled<TcpPathResult> | undefined;
  await Promise.race([udpP.then((x) => (udp = x)), tcpP.then((x) => (tcpR = x))]);
  let choice: 'udp' | 'tcp';
  let reason: string;
  if (udp?.ok) {
    choice = 'udp';
    reason = 'UDP punched first (preferred)';
  } else if (udp) {
    tcpR = await tcpP;
    choice = 'tcp';
    reason = `UDP failed (${udp.error.message})`;
  } else if (tcpR?.ok) {
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([udpP, new Promise<null>((r) => (timer = setTimeout(() => r(null), AUTO_UDP_GRACE_MS)))]);
    clearTimeout(timer);
    if (late?.ok) {
      udp = late;
      choice = 'udp';
      reason = `both punched; UDP preferred`;
    } else {
      choice = 'tcp';
      reason = late ? `UDP failed (${late.error.message})` : `TCP connected and UDP did not within ${AUTO_UDP_GRACE_MS} ms`;
    }
  } else {
    udp = await udpP;
    choice = 'udp';
    reason = `TCP failed (${(tcpR as { error: Error } | undefined)?.error.message})`;
  }
  if (choice === 'udp') {
    tcpAc.abort(new NatpunchError('ABORTED', 'UDP chosen'));
    void tcpP.then((x) => x.ok && x.value.socket.destroy());
    if (!udp?.ok) {
      if (a.signal.aborted) throw (udp as { error: Error }).error;
      throw new NatpunchError('PUNCH_FAILED', `no path to the peer over UDP (${(udp as { error: Error }).error.message}) nor TCP (${reason})`, { cause: (udp as { error: Error }).error });
    }
    if (tcpR?.ok === false && tcpR.error) progress('udp', reason); // a plain UDP win is the normal case: path info only
    a.options.onProgress?.({ phase: 'path', kind: pathKind(udp.value), remote: udp.value.remote, type: udp.value.remoteCandidate.type, rttMs: udp.value.rttMs });
    return udpInitiatorSession({ ...a, transportReason: reason }, udp.value);
  }
  udpAc.abort(new NatpunchError('ABORTED', 'TCP chosen'));
  if (!tcpR?.ok) {
    if (a.signal.aborted) throw (tcpR as { error: Error }).error;
    throw new NatpunchError('PUNCH_FAILED', `no path to the peer over UDP (${reason}) nor TCP (${(tcpR as { error: Error }).error.message})`, { cause: (tcpR as { error: Error }).error });
  }
  progress('tcp', reason);
  tcpPathProgress(a, tcpR.value);
  try {
    return await sessionOverTcp('initiator', tcpR.value, tcpSessionOptions(a, a.signal, reason));
  } catch (err) {
    // The peer's port accepted and closed at once: it was not punching TCP for us (e.g. it got no TCP candidates).
    if (udp && !udp.ok && isNatpunchError(err, 'HANDSHAKE_FAILED') && /closed during the handshake/.test((err as Error).message)) {
      throw new NatpunchError('PUNCH_FAILED', `no path to the peer over UDP (${udp.error.message}) nor TCP (the peer closed the connection before the handshake)`, { cause: udp.error });
    }
    throw err;
  }
}

/**
 * The responder: accepts the session on whichever transport the initiator starts the handshake on (UDP attempt and
 * TCP punch + handshake run in parallel; the first session wins and the other attempt is aborted).
 */
async function respond(a: Attempt, tcp: TcpLocal | null, mode: TransportMode): Promise<Session> {
  const tcpOk = tcp !== null && mode !== 'udp' && tcpCandidatesOf(a.remote).length > 0;
  if (!tcpOk) {
    if (mode === 'tcp') throw new NatpunchError('PUNCH_FAILED', 'the peer offered no TCP candidates and this listener takes TCP only');
    return attempt(a);
  }
  const udpAc = new AbortController();
  const tcpAc = new AbortController();
  const tcpSignal = AbortSignal.any([a.signal, tcpAc.signal]);
  const tcpS = (async () => {
    await waitStart(a);
    const punched = await punchTcp({ local: tcp, role: 'responder', remote: a.remote, signal: tcpSignal, logger: a.logger, sequence: tcpSequence(a) });
    tcpPathProgress(a, punched);
    return sessionOverTcp('responder', punched, tcpSessionOptions(a, tcpSignal));
  })();
  if (mode === 'tcp') return tcpS;
  const udpS = attempt({ ...a, signal: AbortSignal.any([a.signal, udpAc.signal]) });
  try {
    const s = await Promise.any([udpS, tcpS]);
    (s.transport === 'tcp' ? udpAc : tcpAc).abort(new NatpunchError('ABORTED', `the session runs over ${s.transport}`));
    for (const p of [udpS, tcpS]) {
      void p.then(
        (o) => {
          if (o !== s) void o.close();
        },
        () => {},
      );
    }
    return s;
  } catch (err) {
    const errors = (err as AggregateError).errors as Error[] | undefined;
    throw errors?.[0] ?? err;
  }
}
