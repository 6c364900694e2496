/**
 * Port prediction shared by UDP and TCP hole punching (RFC 4787 §4.1 calls NATs whose mapping depends on the
 * destination "address and port dependent"; many of them hand each new mapping the next port of a counter).
 *
 *   hardNatKind()     what a NAT report or a quick local measurement says about how our mappings behave:
 *                     'cone' (endpoint-independent mapping: the srflx port is valid for every peer),
 *                     'sequential' (a new port per destination, stepping by `delta`), 'random' (unpredictable)
 *   predictPorts()    the next `count` ports after the last observed one: the window a sequential NAT will most
 *                     likely hand out next ("outgoing port is 4901, then the next is 4902, if not taken 4903 ...")
 *   observeMapping()  one STUN Binding (RFC 8489 §7) just before punching: the latest external port, so the window
 *                     starts right after it and stays small
 *   measureNat()      a self-contained measurement (fresh sockets + two server ports) when no netcheck report exists
 */
import { analyseAllocation, type AllocationReport } from '../discovery/allocation.js';
import type { NatReport } from '../discovery/netcheck.js';
import { UdxEndpoint } from '../net/udx.js';
import { StunClient } from '../stun/client.js';
import { NatpunchError } from '../util/errors.js';
import { candidatePriority, type Candidate } from './candidate.js';

/** How mappings toward different peers relate; decides the hard-NAT strategy (src/traversal/birthday.ts). */
export type HardNatKind = 'cone' | 'sequential' | 'random' | 'unknown';

/**
 * Predicted window for UDP. Each check we send to a new destination takes one port; the peer's first probe toward
 * us is normally our 1st or 2nd new mapping, so 8 covers it plus a few flows of other hosts behind the same NAT.
 */
export const DEFAULT_PREDICTION_WINDOW = 8;
/** Fresh sockets for measureNat()'s allocation samples (netcheck uses the same count, ALLOCATION_SAMPLES). */
export const MEASURE_SAMPLES = 5;
/** Per STUN Binding in observeMapping()/measureNat() (RFC 8489 §6.2.1 retransmits within this). */
export const OBSERVE_TIMEOUT_MS = 1_500;

/** The ports a sequential NAT will most likely allocate after `lastPort`, likeliest first. */
export function predictPorts(lastPort: number, delta: number, count: number = DEFAULT_PREDICTION_WINDOW): number[] {
  const out: number[] = [];
  if (!Number.isInteger(delta) || delta === 0) return out;
  for (let i = 1; i <= count; i++) {
    const port = lastPort + delta * i;
    if (port < 1 || port > 65535) break;
    out.push(port);
  }
  return out;
}

/** `predicted` candidates for those ports; earlier predictions get the higher local preference. */
export function predictedCandidates(
  last: { address: string; port: number },
  delta: number,
  transport: 'udp' | 'tcp',
  count: number = DEFAULT_PREDICTION_WINDOW,
): Candidate[] {
  return predictPorts(last.port, delta, count).map((port, i) => ({
    type: 'predicted' as const,
    transport,
    address: last.address,
    port,
    priority: candidatePriority('predicted', 65535 - (i + 1)),
  }));
}

/** What a netcheck report says about our UDP mappings. */
export function hardNatKind(report: Pick<NatReport, 'udp'>): { kind: HardNatKind; delta: number | null } {
  const u = report.udp;
  if (u.mapping === 'endpoint-independent' || u.behindNat === false) return { kind: 'cone', delta: null };
  if (u.mapping === 'unknown') return { kind: 'unknown', delta: null };
  if (u.allocation.pattern === 'sequential' && u.allocation.delta)
    return { kind: 'sequential', delta: u.allocation.delta };
  if (u.allocation.pattern === 'random') return { kind: 'random', delta: null };
  return { kind: 'unknown', delta: null };
}

export interface StunServerAddress {
  address: string;
  port: number;
}

/** One Binding from `endpoint`: the mapping it has toward `server` now (a new mapping on a symmetric NAT). */
export async function observeMapping(
  endpoint: UdxEndpoint,
  server: StunServerAddress,
  options: { signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<{ address: string; port: number }> {
  const stun = new StunClient(endpoint);
  try {
    const r = await stun.binding(server, {
      timeoutMs: options.timeoutMs ?? OBSERVE_TIMEOUT_MS,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return { address: r.mapped.address, port: r.mapped.port };
  } finally {
    stun.close();
  }
}

export interface MeasureOptions {
  signal?: AbortSignal;
  samples?: number;
  bindAddress?: string;
  /** `endpoint` has sent to servers[0] already (e.g. a rendezvous request to the same host and port), so its NAT
   *  mapping toward it exists: the two first observations may run in parallel. */
  mappedToFirst?: boolean;
}

export interface NatMeasurement {
  kind: HardNatKind;
  delta: number | null;
  allocation: AllocationReport;
  /** The mapping `endpoint` got toward the second server port (the latest observation when sequential). */
  last: { address: string; port: number };
  /** The mapping `endpoint` got toward the first server port (its srflx address for that server). */
  first: { address: string; port: number };
}

/**
 * Measures our NAT without a full netcheck: the endpoint asks `servers[0]` and `servers[1]` (same host, two ports,
 * or two hosts): the same mapping for both means endpoint-independent mapping (RFC 4787 §4.1, "cone"); otherwise
 * `samples` fresh sockets ask `servers[0]` one after the other and allocation.ts judges their ports.
 */
export async function measureNat(
  endpoint: UdxEndpoint,
  servers: [StunServerAddress, StunServerAddress],
  options: MeasureOptions = {},
): Promise<NatMeasurement> {
  const opts = options.signal ? { signal: options.signal } : {};
  // With a mapping toward servers[0] already there, the first observation allocates nothing and both can go at once
  // (one round trip, not two); else the first must create its mapping before the second's, which starts the series.
  const [first, second] = options.mappedToFirst
    ? await Promise.all([observeMapping(endpoint, servers[0], opts), observeMapping(endpoint, servers[1], opts)])
    : [await observeMapping(endpoint, servers[0], opts), await observeMapping(endpoint, servers[1], opts)];
  if (first.port === second.port && first.address === second.address) {
    return { kind: 'cone', delta: null, allocation: { pattern: 'unknown', samples: [] }, last: second, first };
  }
  const samples: Array<{ local: number; external: number }> = [];
  const n = Math.max(3, Math.min(options.samples ?? MEASURE_SAMPLES, 16));
  for (let i = 0; i < n; i++) {
    const ep = await UdxEndpoint.bind({ ...(options.bindAddress ? { address: options.bindAddress } : {}) });
    try {
      const m = await observeMapping(ep, servers[0], opts);
      samples.push({ local: ep.address().port, external: m.port });
    } catch (err) {
      if (options.signal?.aborted) throw err;
    } finally {
      await ep.close().catch(() => {});
    }
  }
  // The endpoint's own second observation was the first new mapping in the row: it belongs to the series.
  const allocation = analyseAllocation([{ local: endpoint.address().port, external: second.port }, ...samples]);
  if (allocation.pattern === 'unknown')
    throw new NatpunchError('STUN_TIMEOUT', `only ${samples.length} of ${n} allocation samples answered`);
  const kind: HardNatKind =
    allocation.pattern === 'sequential' ? 'sequential' : allocation.pattern === 'random' ? 'random' : 'unknown';
  return { kind, delta: allocation.delta ?? null, allocation, last: second, first };
}

/** What one side tells the other before a hard punch (through the rendezvous or the caller's signalling). */
export interface HardNatAdvert {
  kind: HardNatKind;
  delta: number | null;
  /** Our public address. */
  address: string;
  /**
   * Ports to aim at, likeliest first: a cone's srflx port; a sequential NAT's predicted window (only: its srflx
   * port toward the server is no use to the peer, and aiming at it would spend one of our own mappings out of
   * order); nothing for a random NAT.
   */
  ports: number[];
}

/**
 * Measures our NAT (measureNat) and, when sequential, re-observes from a fresh socket right away so the predicted
 * window starts just after the latest mapping: the next new flow of `endpoint` then takes the window's first port.
 */
export async function advertiseHardNat(
  endpoint: UdxEndpoint,
  servers: [StunServerAddress, StunServerAddress],
  options: MeasureOptions & { window?: number; measurement?: NatMeasurement } = {},
): Promise<HardNatAdvert & { measurement: NatMeasurement }> {
  const m = options.measurement ?? (await measureNat(endpoint, servers, options));
  if (m.kind === 'cone' || m.kind === 'unknown')
    return { kind: m.kind, delta: null, address: m.first.address, ports: [m.first.port], measurement: m };
  if (m.kind === 'random') return { kind: 'random', delta: null, address: m.first.address, ports: [], measurement: m };
  const latest = await reobserve(servers[0], options);
  return {
    kind: 'sequential',
    delta: m.delta,
    address: latest.address,
    ports: predictPorts(latest.port, m.delta!, options.window),
    measurement: m,
  };
}

/** The latest mapping our NAT handed out: one Binding from a fresh socket (a new flow on any symmetric NAT). */
export async function reobserve(
  server: StunServerAddress,
  options: { signal?: AbortSignal; bindAddress?: string } = {},
): Promise<{ address: string; port: number }> {
  const ep = await UdxEndpoint.bind(options.bindAddress ? { address: options.bindAddress } : {});
  try {
    return await observeMapping(ep, server, options.signal ? { signal: options.signal } : {});
  } finally {
    await ep.close().catch(() => {});
  }
}
