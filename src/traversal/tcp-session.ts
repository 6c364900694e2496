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
import { tcpPunch, TCP_PUNCH_DEFAULTS, type TcpPunchResult } from './tcp-p2pnat.js';
import { openCraftSocket, type SeqTechnique } from './tcp-seq.js';
import { declineSequencePunch, sequencePunch, type SeqChannel } from './tcp-seqpunch.js';
import { NatHopCache } from './tcp-stunt.js';

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
  if (options.stun) {
    try {
      const address = isIP(options.stun.host) ? options.stun.host : (await lookup(options.stun.host, { family: 4 })).address;
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
  return {
    port,
    listener,
    candidates,
    srflx,
    hops: new NatHopCache(),
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

/** The peer's TCP candidates, or PUNCH_FAILED saying it offered none. */
export function tcpCandidatesOf(remote: Candidate[]): Candidate[] {
  return remote.filter((c) => c.transport === 'tcp' && isIP(c.address) === 4);
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
  const candidates = tcpCandidatesOf(o.remote);
  if (candidates.length === 0) {
    throw new NatpunchError('PUNCH_FAILED', 'the peer offered no TCP candidates (it runs without the native addon, or with --transport udp)');
  }
  const mode = o.sequence?.mode ?? 'off';
  const channel = o.sequence?.channel ?? null;
  const p2pnat = (timeoutMs?: number) =>
    tcpPunch({
      localPort: o.local.port,
      candidates,
      role: o.role === 'initiator' ? 'controlling' : 'controlled',
      listener: o.local.listener,
      signal: o.signal,
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      ...(o.logger ? { logger: o.logger } : {}),
    });
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
