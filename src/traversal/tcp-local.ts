/**
 * Our TCP side for connect()/listen(): port P (a reuseport listener) with its candidates, and — for the sequence-number
 * techniques — a second port Q with its own public endpoint.
 *
 * Candidates (RFC 6544 §4 names TCP candidates the same way as UDP ones): a host candidate per local IPv4 address on
 * port P, and a server-reflexive one learned with a STUN Binding over a TCP connection made FROM P to the rendezvous
 * host (RFC 8489 §6.2.2; `natpunch serve` answers STUN on TCP at the rendezvous port). That connection stays open
 * while the candidates are in use, so the NAT keeps the mapping P2P-NAT needs (Ford et al. 2005 §4.1: "each client
 * keeps its TCP connection to the server from P"); a Binding every TCP_MAPPING_REFRESH_MS keeps it from idling out.
 *
 * Why a second port: STUNT #1 and NATBlaster complete a connection with a SYN-ACK that a NAT accepts only while its
 * entry for the 5-tuple holds exactly our SYN (a NAT tracks TCP state to follow simultaneous open, RFC 5382 §4.2.2
 * REQ-2; Linux conntrack also checks sequence windows). P2P-NAT's SYNs on P can move that entry to SYN_SENT2 with the
 * peer's sequence number (simultaneous open, RFC 9293 §3.5) even when the NAT's filter then drops them, which makes
 * the later SYN-ACK invalid.
 * On Q the sequence techniques get a 5-tuple P2P-NAT never touched, so the two can run side by side
 * (tcp-path.ts). Q is opened only where the techniques can run at all: with raw sockets (CAP_NET_RAW).
 */
import type net from 'node:net';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { silentLogger, type Logger } from '../util/log.js';
import { loadAddon, type NativeAddon } from '../net/native.js';
import { connectFrom, listenReusePort } from '../net/tcp.js';
import { StunTcpClient } from '../stun/client.js';
import { candidatePriority, TYPE_PREFERENCE, type Candidate } from './candidate.js';
import { openCraftSocket } from './tcp-seq.js';
import { NatHopCache } from './tcp-stunt.js';
import {
  measureTcpAllocation,
  tcpPredictionCandidate,
  TCP_PREDICT_TIMEOUT_MS,
  type TcpPrediction,
} from './tcp-predict.js';

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
 * Port Q's public endpoint travels as a 'srflx' TCP candidate whose local preference is this tag ('S','Q'), so P2P-NAT
 * leaves it alone (tcpCandidatesOf) and a peer that does not know the tag punches one more endpoint, harmlessly.
 */
const SEQ_PORT_TAG = 0x5351;

export type Endpoint = { address: string; port: number };

/** Our TCP side: the listening socket on P, its candidates, and the STUN connection holding the NAT mapping. */
export interface TcpLocal {
  readonly port: number;
  readonly listener: net.Server;
  readonly candidates: Candidate[];
  /** Port P's public endpoint as the rendezvous saw it (null when STUN over TCP failed). */
  readonly srflx: Endpoint | null;
  /** Port Q of the sequence-number techniques and its public endpoint (null: no raw sockets, or STUN failed). */
  readonly seq: { port: number; srflx: Endpoint } | null;
  /** Hops to our outermost NAT, discovered once per network (the low TTL of the sequence-number techniques). */
  readonly hops: NatHopCache;
  /**
   * The TTL for STUNT #2 SYNs (tcp-stunt.ts: passes our NATs, expires before the peer's), discovered once in the
   * background after gathering; null when unknown or when we are not behind a NAT (nothing to open).
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
  /** Open port Q for the sequence-number techniques (default: when this process may use raw sockets). */
  sequencePort?: boolean;
  signal?: AbortSignal;
  logger?: Logger;
}

/** Whether this process may send crafted packets (raw sockets need CAP_NET_RAW); the reason when not. */
export function rawSocketDenied(): string | null {
  try {
    openCraftSocket().close();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Port Q's public endpoint as the tagged candidate described at SEQ_PORT_TAG. */
export function seqPortCandidate(e: Endpoint): Candidate {
  return {
    type: 'srflx',
    transport: 'tcp',
    address: e.address,
    port: e.port,
    priority: candidatePriority('srflx', SEQ_PORT_TAG),
  };
}

/** True for the candidate seqPortCandidate() makes. */
export function isSeqPortCandidate(c: Candidate): boolean {
  return (
    c.type === 'srflx' &&
    c.transport === 'tcp' &&
    c.priority === TYPE_PREFERENCE.srflx * 2 ** 24 + SEQ_PORT_TAG * 2 ** 8 + 255
  );
}

/** The peer's port Q endpoint, when it offered one. */
export function seqPortOf(remote: readonly Candidate[]): Endpoint | null {
  const c = remote.find((x) => isSeqPortCandidate(x) && isIP(x.address) === 4);
  return c ? { address: c.address, port: c.port } : null;
}

/** A STUN-over-TCP connection from `localPort` (0: any) that holds its NAT mapping, and the mapping it saw. */
async function reflexiveFrom(
  server: Endpoint,
  localPort: number,
  o: { timeoutMs: number; signal?: AbortSignal; addon: NativeAddon },
): Promise<{ stun: StunTcpClient; mapped: Endpoint; port: number }> {
  const signal = o.signal
    ? AbortSignal.any([o.signal, AbortSignal.timeout(o.timeoutMs)])
    : AbortSignal.timeout(o.timeoutMs);
  const socket = await connectFrom({
    address: server.address,
    port: server.port,
    localAddress: '0.0.0.0',
    localPort,
    timeoutMs: o.timeoutMs,
    signal,
    addon: o.addon,
  });
  socket.on('error', () => {});
  const stun = new StunTcpClient(socket, server);
  try {
    const res = await stun.binding({ signal, timeoutMs: o.timeoutMs });
    return {
      stun,
      mapped: { address: res.mapped.address, port: res.mapped.port },
      port: socket.localPort ?? localPort,
    };
  } catch (err) {
    stun.close();
    socket.destroy();
    throw err;
  }
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
  const stuns: StunTcpClient[] = [];
  let srflx: Endpoint | null = null;
  let seq: { port: number; srflx: Endpoint } | null = null;
  let server: Endpoint | null = null;
  if (options.stun) {
    const timeoutMs = options.timeoutMs ?? TCP_GATHER_TIMEOUT_MS;
    const o = { timeoutMs, addon, ...(options.signal ? { signal: options.signal } : {}) };
    try {
      server = {
        address: isIP(options.stun.host) ? options.stun.host : (await lookup(options.stun.host, { family: 4 })).address,
        port: options.stun.port,
      };
      const wantQ = options.sequencePort ?? rawSocketDenied() === null;
      const [p, q] = await Promise.allSettled([
        reflexiveFrom(server, port, o),
        wantQ ? reflexiveFrom(server, 0, o) : Promise.reject(new Error('not wanted')),
      ]);
      if (q.status === 'fulfilled') {
        stuns.push(q.value.stun);
        seq = { port: q.value.port, srflx: q.value.mapped };
      }
      if (p.status === 'rejected') throw p.reason;
      stuns.push(p.value.stun);
      const mapped = p.value.mapped;
      srflx = mapped;
      if (!candidates.some((c) => c.address === mapped.address && c.port === mapped.port)) {
        candidates.unshift({
          type: 'srflx',
          transport: 'tcp',
          ...mapped,
          priority: candidatePriority('srflx', TCP_LOCAL_PREFERENCE),
        });
      }
      if (seq) candidates.push(seqPortCandidate(seq.srflx));
      log.debug({ port, mapped, seq }, 'tcp: server-reflexive candidate');
    } catch (err) {
      log.info(
        { err: (err as Error).message },
        'tcp: no server-reflexive TCP candidate (STUN over TCP failed); offering host candidates only',
      );
    }
  }
  const timer = setInterval(() => {
    for (const s of stuns) void s.binding({ timeoutMs: TCP_GATHER_TIMEOUT_MS }).catch(() => {});
  }, TCP_MAPPING_REFRESH_MS);
  timer.unref();
  let closed = false;
  let prediction: TcpPrediction | null = null;
  const hops = new NatHopCache();
  const closing = new AbortController();
  // Probes toward our own public address only (tcp-stunt.ts), at most TTL_DISCOVERY_DEFAULTS.maxTtl SYNs.
  const ttl: Promise<number | null> = !srflx
    ? Promise.resolve(null)
    : hops.discover({ publicAddress: srflx.address, logger: log, signal: closing.signal, addon }).then(
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
    seq,
    hops,
    lowTtl(signal) {
      if (!signal) return ttl;
      return Promise.race([
        ttl,
        new Promise<null>((resolve) => signal.addEventListener('abort', () => resolve(null), { once: true })),
      ]);
    },
    get prediction() {
      return prediction;
    },
    async predict(o = {}) {
      // A NAT that kept P's number most likely keeps it toward the peer too (or maps endpoint-independently).
      if (!server || !srflx || srflx.port === port || closed) return [];
      try {
        const r = await measureTcpAllocation({
          server,
          timeoutMs: o.timeoutMs ?? TCP_PREDICT_TIMEOUT_MS,
          ...(o.signal ? { signal: o.signal } : {}),
        });
        prediction = r.prediction;
        log.debug({ pattern: r.report.pattern, delta: r.report.delta, prediction }, 'tcp: allocation measured');
        return prediction ? [tcpPredictionCandidate(prediction)] : [];
      } catch (err) {
        if (o.signal?.aborted) throw err;
        log.info(
          { err: (err as Error).message },
          'tcp: allocation measurement failed; offering no predicted TCP candidates',
        );
        return [];
      }
    },
    close() {
      if (closed) return;
      closed = true;
      closing.abort();
      clearInterval(timer);
      for (const s of stuns) {
        s.close();
        s.socket.destroy();
      }
      listener.close();
    },
  };
}
