/**
 * The TCP path of connect()/listen(): TCP candidates on one reuseport port P, P2P-NAT punching (tcp-p2pnat.ts) and
 * the session's Noise handshake over the punched connection (Session.establishTcp).
 *
 * Candidates (RFC 6544 §4 names TCP candidates the same way as UDP ones): a host candidate per local IPv4 address on
 * port P, and a server-reflexive one learned with a STUN Binding over a TCP connection made FROM P to the rendezvous
 * host (RFC 8489 §6.2.2; `natpunch serve` answers STUN on TCP at the rendezvous port). That connection stays open
 * while the candidates are in use, so the NAT keeps the mapping P2P-NAT needs (Ford et al. 2005 §4.1: "each client
 * keeps its TCP connection to the server from P"); a Binding every TCP_MAPPING_REFRESH_MS keeps it from idling out.
 */
import type net from 'node:net';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { loadAddon } from '../net/native.js';
import { connectFrom, listenReusePort } from '../net/tcp.js';
import { StunTcpClient } from '../stun/client.js';
import type { KeyPair } from '../session/identity.js';
import { Session, type Allow, type SessionPath } from '../session/session.js';
import { candidatePriority, type Candidate } from './candidate.js';
import { tcpPunch, TCP_PUNCH_DEFAULTS, type TcpPunchCandidate, type TcpPunchResult } from './tcp-p2pnat.js';
import { installIcmpGuard, openCraftSocket, type SeqTechnique } from './tcp-seq.js';
import { declineSequencePunch, sequencePunch, type SeqChannel } from './tcp-seqpunch.js';
import { NatHopCache } from './tcp-stunt.js';
import { expandTcpPredictions, measureTcpAllocation, tcpPredictionCandidate, tcpPredictionOf, TCP_PREDICT_TIMEOUT_MS, type TcpPrediction } from './tcp-predict.js';

/** STUN TCP connection refresh: below serve's STUN TCP idle timeout (30 s, src/stun/server.ts) and common NAT
 *  established-TCP timeouts (RFC 5382 REQ-5 asks ≥ 2 h 4 min, but small NATs use minutes). */
export const TCP_MAPPING_REFRESH_MS = 20_000;
/** Gathering the TCP srflx candidate: one connect plus one STUN transaction (three round trips). */
export const TCP_GATHER_TIMEOUT_MS = 5_000;
/** transport 'auto' waits less: a rendezvous whose TCP port is filtered must not delay every UDP connect much. */
export const TCP_GATHER_AUTO_TIMEOUT_MS = 1_500;
/** TCP candidates rank just below UDP ones of the same type (UDP is the preferred transport; RFC 6544 §4.2). */
const TCP_LOCAL_PREFERENCE = 32_000;

/**
 * With the sequence-number techniques available ('auto'), P2P-NAT gets this long before they take over: a cone pair
 * punches in well under a second (bench/results/tcp-punch.md), and one SYN retransmission (1 s) fits many times.
 */
export const TCP_P2PNAT_BEFORE_SEQ_MS = 8_000;
/**
 * The sequence-number step after P2P-NAT: both peers leave P2P-NAT within its start skew, the offers cross in one
 * rendezvous round trip, and the SYN-ACK schedule ends 5 s later (TCP_SEQ_DEFAULTS.synAckScheduleMs): nothing
 * arriving after 10 s will, and connect()'s 30 s budget keeps room for the Noise handshake.
 */
export const TCP_SEQ_STEP_TIMEOUT_MS = 10_000;
/**
 * STUNT #2 inside P2P-NAT: the side that does not open waits this long before its first SYN, so the opener's low-TTL
 * SYN has left (the opener's TTL discovery starts at gathering and is cached; the offers reach both sides within
 * the rendezvous' start skew). An earlier SYN is not lost: dropped, it is retransmitted on the same 5-tuple; refused
 * (RST), the next attempt follows TCP_PUNCH_DEFAULTS.retryDelayMs later.
 */
export const TCP_OPENER_HOLDBACK_MS = 300;

/**
 * Which TCP techniques connect()/listen() use. 'auto': P2P-NAT, then STUNT #1 (when the rendezvous spoofs) or
 * NATBlaster when P2P-NAT fails and this host may use raw sockets; 'off': P2P-NAT only; 'natblaster' / 'stunt1':
 * that technique only (both peers should say the same).
 */
export type TcpSequenceMode = 'auto' | 'off' | SeqTechnique;
export const TCP_SEQUENCE_MODES: readonly TcpSequenceMode[] = ['auto', 'off', 'natblaster', 'stunt1'];

/** Our TCP side: the listening socket on P, its candidates, and the STUN connection holding the NAT mapping. */
export interface TcpLocal {
  readonly port: number;
  readonly listener: net.Server;
  readonly candidates: Candidate[];
  /** Port P's public endpoint as the rendezvous saw it (null when STUN over TCP failed). */
  readonly srflx: { address: string; port: number } | null;
  /** Hops to our outermost NAT, discovered once per network (the low TTL of the sequence-number techniques). */
  readonly hops: NatHopCache;
  /**
   * The TTL for STUNT #2 SYNs from port P (tcp-stunt.ts: passes our NATs, expires before the peer's), discovered once
   * in the background after gathering; null when unknown or when we are not behind a NAT (nothing to open).
   */
  lowTtl(signal?: AbortSignal): Promise<number | null>;
  /** The prediction last offered by predict() (null: none, our NAT keeps P's port or is not sequential). */
  readonly prediction: TcpPrediction | null;
  /**
   * Port prediction (tcp-predict.ts), to run right before our candidates are sent: when our NAT did not keep port
   * P's number, measures its TCP allocation and resolves with the one window candidate of a sequential NAT, else
   * with none. Never rejects for a failed measurement (then no prediction is offered; the reason is logged).
   */
  predict(options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<Candidate[]>;
  close(): void;
}

export interface TcpLocalOptions {
  /** Our IPv4 host addresses (from the UDP host candidates). */
  hostAddresses: string[];
  /** Host (name or address) and port of a STUN-over-TCP server: the rendezvous under `natpunch serve`. */
  stun?: { host: string; port: number };
  /** Bound on gathering the srflx candidate (default TCP_GATHER_TIMEOUT_MS). */
  timeoutMs?: number;
  signal?: AbortSignal;
  logger?: Logger;
}

/**
 * Opens port P (reuseport listener) and gathers its candidates. Throws ADDON_UNAVAILABLE without the native addon.
 * A STUN failure is not fatal: then only host candidates are offered (enough on one LAN).
 */
export async function openTcpLocal(options: TcpLocalOptions): Promise<TcpLocal> {
  const addon = loadAddon('TCP hole punching');
  const log = options.logger ?? silentLogger;
  const listener = await listenReusePort({ address: '0.0.0.0', port: 0, addon });
  const port = (listener.address() as net.AddressInfo).port;
  // Connections arriving while no punch is running (tcpPunch adds its own listener) are nobody's: close them, so a
  // peer whose SYN got here without us punching learns at once that this is not its path.
  listener.on('connection', (socket: net.Socket) => {
    if (listener.listenerCount('connection') <= 1) socket.destroy();
  });
  const candidates: Candidate[] = [];
  let pref = TCP_LOCAL_PREFERENCE;
  for (const address of new Set(options.hostAddresses)) {
    if (isIP(address) !== 4) continue;
    candidates.push({ type: 'host', transport: 'tcp', address, port, priority: candidatePriority('host', pref--) });
  }
  let stun: StunTcpClient | null = null;
  let srflx: { address: string; port: number } | null = null;
  let timer: NodeJS.Timeout | null = null;
  let server: { address: string; port: number } | null = null;
  if (options.stun) {
    try {
      const address = isIP(options.stun.host) ? options.stun.host : (await lookup(options.stun.host, { family: 4 })).address;
      server = { address, port: options.stun.port };
      const gatherMs = options.timeoutMs ?? TCP_GATHER_TIMEOUT_MS;
      const signal = options.signal ? AbortSignal.any([options.signal, AbortSignal.timeout(gatherMs)]) : AbortSignal.timeout(gatherMs);
      const socket = await connectFrom({ address, port: options.stun.port, localAddress: '0.0.0.0', localPort: port, timeoutMs: gatherMs, signal, addon });
      socket.on('error', () => {});
      stun = new StunTcpClient(socket, { address, port: options.stun.port });
      const res = await stun.binding({ signal, timeoutMs: gatherMs });
      const mapped = { address: res.mapped.address, port: res.mapped.port };
      srflx = mapped;
      if (!candidates.some((c) => c.address === mapped.address && c.port === mapped.port)) {
        candidates.unshift({ type: 'srflx', transport: 'tcp', ...mapped, priority: candidatePriority('srflx', TCP_LOCAL_PREFERENCE) });
      }
      const client = stun;
      timer = setInterval(() => void client.binding({ timeoutMs: TCP_GATHER_TIMEOUT_MS }).catch(() => {}), TCP_MAPPING_REFRESH_MS);
      timer.unref();
      log.debug({ port, mapped }, 'tcp: server-reflexive candidate');
    } catch (err) {
      stun?.close();
      stun = null;
      log.info({ err: (err as Error).message }, 'tcp: no server-reflexive TCP candidate (STUN over TCP failed); offering host candidates only');
    }
  }
  let closed = false;
  let prediction: TcpPrediction | null = null;
  const hops = new NatHopCache();
  // Probes toward our own public address only (tcp-stunt.ts), at most TTL_DISCOVERY_DEFAULTS.maxTtl SYNs.
  const ttl: Promise<number | null> = !srflx
    ? Promise.resolve(null)
    : hops.discover({ publicAddress: srflx.address, logger: log }).then(
        (h) => (h.natHops > 0 ? h.lowTtl : null),
        (err: unknown) => {
          log.debug({ err: (err as Error).message }, 'tcp: TTL discovery failed; no STUNT #2');
          return null;
        },
      );
  return {
    port,
    listener,
    candidates,
    srflx,
    hops,
    lowTtl(signal) {
      if (!signal) return ttl;
      return Promise.race([ttl, new Promise<null>((resolve) => signal.addEventListener('abort', () => resolve(null), { once: true }))]);
    },
    get prediction() {
      return prediction;
    },
    async predict(o = {}) {
      // A NAT that kept P's number most likely keeps it toward the peer too (or maps endpoint-independently).
      if (!server || !srflx || srflx.port === port || closed) return [];
      try {
        const r = await measureTcpAllocation({ server, timeoutMs: o.timeoutMs ?? TCP_PREDICT_TIMEOUT_MS, ...(o.signal ? { signal: o.signal } : {}) });
        prediction = r.prediction;
        log.debug({ pattern: r.report.pattern, delta: r.report.delta, prediction }, 'tcp: allocation measured');
        return prediction ? [tcpPredictionCandidate(prediction)] : [];
      } catch (err) {
        if (o.signal?.aborted) throw err;
        log.info({ err: (err as Error).message }, 'tcp: allocation measurement failed; offering no predicted TCP candidates');
        return [];
      }
    },
    close() {
      if (closed) return;
      closed = true;
      if (timer) clearInterval(timer);
      stun?.close();
      stun?.socket.destroy();
      listener.close();
    },
  };
}

export interface TcpAttemptOptions {
  local: TcpLocal;
  /** initiator = P2P-NAT's controlling side (it nominates the connection and starts the Noise handshake). */
  role: 'initiator' | 'responder';
  remote: Candidate[];
  signal: AbortSignal;
  logger?: Logger;
  timeoutMs?: number;
  /** The sequence-number techniques: mode (default 'off' here) and the rendezvous channel carrying the offers. */
  sequence?: { mode: TcpSequenceMode; channel: SeqChannel | null };
}

/** A punched TCP connection and the technique that made it. */
export interface TcpPathResult extends TcpPunchResult {
  technique: NonNullable<SessionPath['tcpTechnique']>;
  /** Why P2P-NAT was not the technique (its failure), when it was not. */
  reason?: string;
}

/** The peer's IPv4 TCP candidates, its predicted window (tcp-predict.ts) expanded into one candidate per port. */
export function tcpCandidatesOf(remote: Candidate[]): Candidate[] {
  return expandTcpPredictions(remote.filter((c) => c.transport === 'tcp' && isIP(c.address) === 4));
}

/** Whether this process may send crafted packets (raw sockets need CAP_NET_RAW); the reason when not. */
function rawSocketDenied(): string | null {
  try {
    openCraftSocket().close();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * Punches a TCP connection to the peer from P (both roles): P2P-NAT first; with `sequence` on, STUNT #1 / NATBlaster
 * when P2P-NAT fails (or alone, when a technique is named). Resolves with the connection both sides agreed on.
 */
export async function punchTcp(o: TcpAttemptOptions): Promise<TcpPathResult> {
  let candidates = tcpCandidatesOf(o.remote);
  if (o.local.prediction) {
    // Behind a sequential NAT every SYN to a new endpoint takes the next port of the window we offered: the SYN to the
    // peer's public endpoint goes first so it gets one of the likeliest ports (host candidates of a peer on another
    // LAN lead nowhere, and each would take a port before it).
    candidates = [...candidates.filter((c) => c.type !== 'host'), ...candidates.filter((c) => c.type === 'host')];
  }
  if (candidates.length === 0) {
    throw new NatpunchError('PUNCH_FAILED', 'the peer offered no TCP candidates (it runs without the native addon, or with --transport udp)');
  }
  const mode = o.sequence?.mode ?? 'off';
  const channel = o.sequence?.channel ?? null;
  const opening = stuntOpening({ role: o.role, weSequential: o.local.prediction !== null, peerSequential: o.remote.some((c) => tcpPredictionOf(c) !== null) });
  const p2pnat = async (timeoutMs?: number): Promise<TcpPunchResult> => {
    const stunt = opening === 'we-open' ? await openWithLowTtl(o, candidates) : null;
    try {
      return await tcpPunch({
        localPort: o.local.port,
        candidates,
        role: o.role === 'initiator' ? 'controlling' : 'controlled',
        listener: o.local.listener,
        signal: o.signal,
        ...(stunt ? { lowTtl: stunt.lowTtl, lowTtlFor: (c: TcpPunchCandidate) => c.type !== 'host', icmpGuarded: true } : {}),
        ...(opening === 'peer-opens' ? { connectDelayMs: TCP_OPENER_HOLDBACK_MS } : {}),
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        ...(o.logger ? { logger: o.logger } : {}),
      });
    } finally {
      await stunt?.unguard();
    }
  };
  if (mode === 'off' || !channel) return { ...(await p2pnat(o.timeoutMs)), technique: 'p2pnat' };
  // Without raw sockets the techniques cannot run here: P2P-NAT keeps its whole budget and the peer hears why.
  const denied = rawSocketDenied();
  if (mode === 'auto') {
    const budget = denied ? (o.timeoutMs ?? TCP_PUNCH_DEFAULTS.timeoutMs) : Math.min(o.timeoutMs ?? TCP_P2PNAT_BEFORE_SEQ_MS, TCP_P2PNAT_BEFORE_SEQ_MS);
    try {
      return { ...(await p2pnat(budget)), technique: 'p2pnat' };
    } catch (err) {
      if (o.signal.aborted || !(err instanceof NatpunchError) || err.code !== 'PUNCH_FAILED') throw err;
      const why = `P2P-NAT failed (${err.message})`;
      o.logger?.info({ err: err.message }, 'tcp: P2P-NAT failed; trying the sequence-number techniques');
      return await sequenceStep(o, channel, candidates, denied, 'auto', why);
    }
  }
  return sequenceStep(o, channel, candidates, denied, mode, `--tcp-seq ${mode}`);
}

/**
 * STUNT #2 inside P2P-NAT (Guha & Francis, IMC 2005 §3): when a NAT answers an unsolicited SYN with RST (RFC 5382
 * §7.1 allows it) the crossing SYNs of plain P2P-NAT must both be in flight at once, or the first one's RST closes
 * the mapping its sender's NAT just made. So one side opens: it sends its SYNs with a TTL that passes its own NAT and
 * expires before the peer's, which leaves its NAT's entry in SYN_SENT without any RST; the other side holds back its
 * first SYN by TCP_OPENER_HOLDBACK_MS and then walks in through that entry (simultaneous open at the opener's socket,
 * RFC 9293 §3.5). Who opens:
 *   - the side with endpoint-independent (cone) mapping when the other one offered a predicted window: its SYNs open
 *     the whole window, the sequential side's SYN lands on one of those ports;
 *   - the responder when neither offered a window; nobody when both did (UDP's hard-NAT punch is for that pair).
 */
export function stuntOpening(p: { role: 'initiator' | 'responder'; weSequential: boolean; peerSequential: boolean }): 'we-open' | 'peer-opens' | 'none' {
  if (p.weSequential && p.peerSequential) return 'none';
  if (p.peerSequential) return 'we-open';
  if (p.weSequential) return 'peer-opens';
  return p.role === 'responder' ? 'we-open' : 'peer-opens';
}

/**
 * The opener's low TTL, with the Time Exceeded those SYNs draw dropped on this host (a forwarded one would abort our
 * SYN_SENT socket, tcp-seq.ts installIcmpGuard). null (plain P2P-NAT) when the TTL is unknown, we are not behind a
 * NAT, or the guard cannot be installed (it needs CAP_NET_ADMIN and nft): an unguarded low-TTL socket would be
 * aborted and the peer's SYN would meet our listener, whose SYN-ACK a tracking NAT drops (tcp-p2pnat.ts).
 */
async function openWithLowTtl(o: TcpAttemptOptions, candidates: Candidate[]): Promise<{ lowTtl: number; unguard: () => Promise<void> } | null> {
  const remote = candidates.find((c) => c.type !== 'host');
  if (!remote) return null;
  const lowTtl = await o.local.lowTtl(o.signal);
  if (lowTtl === null) return null;
  try {
    const unguard = await installIcmpGuard({ address: remote.address, port: 0 }, o.local.port);
    o.logger?.debug({ lowTtl, remote: remote.address }, 'tcp: STUNT #2, opening our NAT with low-TTL SYNs');
    return { lowTtl, unguard };
  } catch (err) {
    o.logger?.info({ err: (err as Error).message }, 'tcp: no ICMP guard (needs root and nft); P2P-NAT without STUNT #2');
    return null;
  }
}

async function sequenceStep(
  o: TcpAttemptOptions,
  channel: SeqChannel,
  candidates: Candidate[],
  denied: string | null,
  prefer: 'auto' | SeqTechnique,
  why: string,
): Promise<TcpPathResult> {
  const remote = candidates.find((c) => c.type === 'srflx') ?? null;
  const own = o.local.srflx;
  const veto =
    (denied ? `no raw sockets here (${denied})` : null) ??
    (!own ? 'no server-reflexive TCP endpoint here (STUN over TCP to the rendezvous failed)' : null) ??
    (!remote ? 'the peer offered no server-reflexive TCP candidate' : null);
  if (veto || !own || !remote) {
    await declineSequencePunch(channel, veto ?? 'not applicable', o.signal);
    throw new NatpunchError('PUNCH_FAILED', `${why}; STUNT #1 / NATBlaster not tried: ${veto}`, { details: { reason: 'sequence-not-applicable' } });
  }
  let lowTtl: number;
  try {
    lowTtl = (await o.local.hops.discover({ publicAddress: own.address, signal: o.signal, ...(o.logger ? { logger: o.logger } : {}) })).lowTtl;
  } catch (err) {
    await declineSequencePunch(channel, `TTL discovery failed: ${(err as Error).message}`, o.signal);
    throw err;
  }
  try {
    const r = await sequencePunch({
      localPort: o.local.port,
      publicEndpoint: own,
      remote: { address: remote.address, port: remote.port },
      lowTtl,
      channel: channel,
      prefer,
      timeoutMs: TCP_SEQ_STEP_TIMEOUT_MS,
      signal: o.signal,
      ...(o.logger ? { logger: o.logger } : {}),
    });
    return { socket: r.socket, candidate: remote, direction: 'connect', attempts: 1, elapsedMs: r.elapsedMs, technique: r.technique, reason: why };
  } catch (err) {
    if (err instanceof NatpunchError && err.code === 'PUNCH_FAILED') {
      throw new NatpunchError('PUNCH_FAILED', `${why}; ${err.message}`, { cause: err, details: err.details });
    }
    throw err;
  }
}

export interface TcpSessionSetup {
  keyPair: KeyPair;
  peerKey: Buffer;
  allow?: Allow;
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  logger?: Logger;
  signal: AbortSignal;
  transportReason?: string;
}

/** The Noise handshake over a punched TCP connection. */
export function sessionOverTcp(role: 'initiator' | 'responder', punched: TcpPathResult, o: TcpSessionSetup): Promise<Session> {
  const c = punched.candidate;
  const remote: Candidate = { type: c.type ?? 'prflx', transport: 'tcp', address: c.address, port: c.port, priority: c.priority ?? candidatePriority('prflx') };
  const path: Partial<SessionPath> = {
    kind: remote.type === 'host' ? 'lan' : 'direct',
    candidatePair: { local: null, remote },
    rttMs: null,
    tcpTechnique: punched.technique,
    ...(o.transportReason ? { transportReason: o.transportReason } : {}),
  };
  return Session.establishTcp({
    socket: punched.socket,
    isInitiator: role === 'initiator',
    keyPair: o.keyPair,
    ...(role === 'initiator' ? { expectedRemoteKey: o.peerKey } : {}),
    ...(o.allow !== undefined ? { allow: o.allow } : {}),
    ...(o.keepAliveMs !== undefined ? { keepAliveMs: o.keepAliveMs } : {}),
    ...(o.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
    ...(o.logger ? { logger: o.logger } : {}),
    path,
    signal: o.signal,
  });
}
