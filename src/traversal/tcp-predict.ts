/**
 * TCP port prediction for NATs that allocate sequentially (RFC 4787 §4.1 "address and port-dependent mapping"; many
 * such NATs hand each new mapping the next port of a counter). The peer behind such a NAT measures its allocation
 * with a few TCP connections to the rendezvous server in a row, right before it offers its candidates, and offers
 * the ports its NAT will most likely give its next flows — among them the SYN it sends to the peer. The analysis is
 * the one the UDP side uses (src/discovery/allocation.ts).
 *
 * On the wire the window is ONE 'predicted' TCP candidate (the rendezvous carries at most 16 candidates per peer,
 * src/wire/rendezvous.ts MAX_CANDIDATES): its port is the likeliest next port, and its priority encodes the window,
 * the same way src/traversal/hardwire.ts encodes the UDP hard-NAT advert:
 *   2^24 * 50 ('predicted' type preference, RFC 8445 §5.1.2.1) + 2^16 * 0x54 ('T') + 2^8 * count + (delta + 128).
 * A peer that does not know the encoding punches the likeliest port only; one that does expands the window
 * (expandTcpPredictions).
 */
import net from 'node:net';
import { analyseAllocation, type AllocationReport } from '../discovery/allocation.js';
import { StunTcpClient } from '../stun/client.js';
import { timeoutSignal } from '../util/abort.js';
import { candidatePriority, TYPE_PREFERENCE, type Candidate } from './candidate.js';
import { predictedCandidates, predictPorts } from './predict.js';

/**
 * How many next ports to offer. Between the last sample and our SYN to the peer's server-reflexive candidate our NAT
 * allocates for: the UDP mapping toward the rendezvous (when new), our SYNs to the peer's host candidates, and
 * whatever other hosts behind the NAT open meanwhile; 8 covers that on a quiet NAT (the UDP window is 8 too).
 */
export const DEFAULT_PREDICTED_PORTS = 8;
/** Fresh connections measured in a row (analyseAllocation needs 3 to tell a pattern from chance). */
export const TCP_ALLOCATION_SAMPLES = 3;
/** Bound on the whole measurement: a connect and a STUN Binding per sample, run concurrently. */
export const TCP_PREDICT_TIMEOUT_MS = 2_000;
/** A window from the peer never expands to more ports than this (twice our own window). */
export const MAX_EXPANDED_PORTS = 2 * DEFAULT_PREDICTED_PORTS;
/** Tag byte of the window candidate's priority ('T'); the UDP hard-NAT marker uses 'N' (hardwire.ts). */
const TCP_WINDOW_TAG = 0x54;
/** Deltas beyond ±127 cannot be encoded (and a sequential allocator's step is small, allocation.ts). */
const MAX_ENCODED_DELTA = 127;

export interface TcpAllocationSample {
  /** Local port of the connection. */
  local: number;
  /** External port the server saw. */
  external: number;
}

/**
 * Predicted TCP candidates after the last observed mapping `last` (address and port the server saw for our most
 * recent connection), from the samples of mappings made in a row (oldest first). Empty unless the NAT allocates
 * sequentially: a preserving or endpoint-independent NAT needs no prediction, a random one defeats it.
 */
export function predictTcpCandidates(
  samples: TcpAllocationSample[],
  last: { address: string; port: number },
  count: number = DEFAULT_PREDICTED_PORTS,
): { report: AllocationReport; candidates: Candidate[] } {
  const report = analyseAllocation(samples);
  const candidates: Candidate[] =
    report.pattern === 'sequential' && report.delta !== undefined
      ? predictedCandidates(last, report.delta, 'tcp', count)
      : [];
  return { report, candidates };
}

/** A sequential NAT's next TCP ports, as offered to the peer. */
export interface TcpPrediction {
  address: string;
  /** The likeliest next external port (the last observed one + delta). */
  first: number;
  delta: number;
  count: number;
}

/** The prediction as the one window candidate described in the module comment. */
export function tcpPredictionCandidate(p: TcpPrediction): Candidate {
  const delta = Math.max(-MAX_ENCODED_DELTA, Math.min(MAX_ENCODED_DELTA, p.delta));
  const count = Math.max(1, Math.min(255, p.count));
  return {
    type: 'predicted',
    transport: 'tcp',
    address: p.address,
    port: p.first,
    priority: TYPE_PREFERENCE.predicted * 2 ** 24 + TCP_WINDOW_TAG * 2 ** 16 + count * 2 ** 8 + (delta + 128),
  };
}

/** The prediction a window candidate stands for, or null when `c` is not one. */
export function tcpPredictionOf(c: Candidate): TcpPrediction | null {
  if (c.type !== 'predicted' || c.transport !== 'tcp') return null;
  const p = c.priority;
  if (Math.floor(p / 2 ** 24) !== TYPE_PREFERENCE.predicted || Math.floor(p / 2 ** 16) % 256 !== TCP_WINDOW_TAG)
    return null;
  const count = Math.floor(p / 2 ** 8) % 256;
  const delta = (p % 256) - 128;
  if (count < 1 || delta === 0) return null;
  return { address: c.address, first: c.port, delta, count };
}

/**
 * The peer's candidates with each window candidate replaced by the ports it stands for (likeliest first, at
 * 'predicted' priority below every other candidate type but relay). Other candidates pass unchanged. The peer's
 * word is bounded: at most MAX_EXPANDED_PORTS ports per window (each becomes a stream of SYNs from us), and only a
 * window at an address the peer also offers as server-reflexive (a NAT predicts ports of its own public address).
 */
export function expandTcpPredictions(list: readonly Candidate[]): Candidate[] {
  const out: Candidate[] = [];
  const reflexive = new Set(list.filter((c) => c.type === 'srflx').map((c) => c.address));
  for (const c of list) {
    const p = tcpPredictionOf(c);
    if (!p) {
      out.push(c);
      continue;
    }
    if (!reflexive.has(p.address)) continue;
    const ports = [p.first, ...predictPorts(p.first, p.delta, Math.min(p.count, MAX_EXPANDED_PORTS) - 1)];
    ports.forEach((port, i) =>
      out.push({
        type: 'predicted',
        transport: 'tcp',
        address: p.address,
        port,
        priority: candidatePriority('predicted', 65535 - i),
      }),
    );
  }
  return out;
}

export interface MeasureTcpAllocationOptions {
  /** The STUN-over-TCP server (numeric address): the rendezvous under `natpunch serve`. */
  server: { address: string; port: number };
  samples?: number;
  count?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Measures how our NAT allocates TCP mappings: `samples` fresh connections to the server, opened one right after
 * the other, each asking with a STUN Binding over TCP (RFC 8489 §6.2.2) which public port it got. Resolves with the
 * allocation report and, for a sequential NAT, the prediction after the latest mapping; null prediction otherwise.
 * Rejects with TIMEOUT / ABORTED / a STUN or connect error; the caller then offers no prediction.
 */
export async function measureTcpAllocation(
  o: MeasureTcpAllocationOptions,
): Promise<{ report: AllocationReport; prediction: TcpPrediction | null }> {
  const n = Math.max(3, Math.min(16, o.samples ?? TCP_ALLOCATION_SAMPLES));
  const { signal, dispose } = timeoutSignal(o.timeoutMs ?? TCP_PREDICT_TIMEOUT_MS, o.signal);
  const sockets: net.Socket[] = [];
  const clients: StunTcpClient[] = [];
  try {
    // The SYNs leave in order (each connect starts right after the previous one was issued), so the NAT allocates in
    // that order; the STUN transactions then run concurrently.
    const connected = [];
    for (let i = 0; i < n; i++) {
      const socket = net.connect({ host: o.server.address, port: o.server.port, noDelay: true });
      socket.on('error', () => {});
      sockets.push(socket);
      connected.push(
        new Promise<net.Socket>((resolve, reject) => {
          const onAbort = () => reject(signal.reason);
          signal.addEventListener('abort', onAbort, { once: true });
          socket.once('connect', () => {
            signal.removeEventListener('abort', onAbort);
            resolve(socket);
          });
          socket.once('error', (err) => {
            signal.removeEventListener('abort', onAbort);
            reject(err);
          });
        }),
      );
    }
    const results = await Promise.all(
      connected.map(async (p) => {
        const socket = await p;
        const client = new StunTcpClient(socket, o.server);
        clients.push(client);
        const r = await client.binding({ signal });
        return { local: socket.localPort ?? 0, address: r.mapped.address, external: r.mapped.port };
      }),
    );
    const report = analyseAllocation(results.map((r) => ({ local: r.local, external: r.external })));
    const last = results.at(-1)!;
    // A NAT with several public addresses (RFC 4787 §4.1 "IP address pooling" not paired) cannot be predicted.
    if (
      report.pattern !== 'sequential' ||
      report.delta === undefined ||
      results.some((r) => r.address !== last.address)
    )
      return { report, prediction: null };
    const first = last.external + report.delta;
    if (first < 1 || first > 65535) return { report, prediction: null };
    return {
      report,
      prediction: { address: last.address, first, delta: report.delta, count: o.count ?? DEFAULT_PREDICTED_PORTS },
    };
  } finally {
    for (const c of clients) c.close();
    for (const s of sockets) s.destroy();
    dispose();
  }
}
