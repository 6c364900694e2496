/**
 * Shared pieces of the port-mapping clients: the mapping shape, the default gateway, the local address facing the
 * gateway, the UDP request/response matching of NAT-PMP and PCP (retransmitted by the one transaction engine,
 * src/stun/transaction.ts), and gateway-epoch tracking.
 */
import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { NatpunchError, isNatpunchError } from '../util/errors.js';
import { throwIfAborted } from '../util/abort.js';
import type { NodeDatagramTransport, RemoteInfo } from '../net/datagram.js';
import type { Logger } from '../util/log.js';
import { TransactionTable } from '../stun/transaction.js';

export type PortMapProtocol = 'pcp' | 'natpmp' | 'upnp';
export type MapTransport = 'udp' | 'tcp';

/** A mapping the gateway made for us. */
export interface PortMapping {
  protocol: PortMapProtocol;
  transport: MapTransport;
  gateway: string;
  internalAddress: string;
  internalPort: number;
  externalAddress: string;
  externalPort: number;
  /** Seconds the gateway granted; 0 means permanent (UPnP IGDv1 quirk), natpunch still deletes it on close. */
  lifetime: number;
  /** Date.now() when the lease runs out (Infinity for permanent UPnP leases). */
  expiresAt: number;
}

/** Retransmission schedule of a UDP request: first wait, doubling, up to `attempts` sends. */
export interface RetransmitSchedule {
  /** First wait in ms (RFC 6886 §3.1: 250 ms; RFC 6887 §8.1.1: IRT 3 s). */
  initialMs: number;
  /** How many times the request is sent at most (RFC 6886 §3.1: 9). */
  attempts: number;
  /** Cap on a single wait (RFC 6887 §8.1.1: MRT 1024 s). */
  maxDelayMs?: number;
  /** ± fraction of random jitter on each wait (RFC 6887 §8.1.1: RAND in -0.1..+0.1). */
  jitter?: number;
}

/** RFC 6886 §3.1: 250 ms, doubling, 9 tries (the last wait is 64 s; 127.75 s in all). */
export const NATPMP_RETRANSMIT: RetransmitSchedule = { initialMs: 250, attempts: 9 };
/** RFC 6887 §8.1.1: IRT 3 s, MRT 1024 s, ±10%; MRC is unbounded there, natpunch bounds it to 4 sends (~45 s). */
export const PCP_RETRANSMIT: RetransmitSchedule = { initialMs: 3000, attempts: 4, maxDelayMs: 1024_000, jitter: 0.1 };
/** A quick presence probe: 3 sends, 250 ms doubling (1.75 s). */
export const PROBE_RETRANSMIT: RetransmitSchedule = { initialMs: 250, attempts: 3 };

/** Total time a schedule waits before giving up. */
export function scheduleDuration(s: RetransmitSchedule): number {
  let total = 0;
  let d = s.initialMs;
  for (let i = 0; i < s.attempts; i++) {
    total += d * (1 + (s.jitter ?? 0));
    d = Math.min(d * 2, s.maxDelayMs ?? Infinity);
  }
  return Math.ceil(total);
}

export interface UdpTransactionOptions<T> {
  socket: NodeDatagramTransport;
  gateway: string;
  port: number;
  request: Uint8Array;
  /** Returns the answer, undefined to ignore a packet, or throws (PORTMAP) for a malformed one (dropped, noted). */
  parse: (msg: Buffer, rinfo: RemoteInfo) => T | undefined;
  schedule: RetransmitSchedule;
  /** Overall cap in ms, on top of the schedule. */
  timeoutMs?: number;
  signal?: AbortSignal;
  what: string;
  logger?: Logger;
}

/**
 * Sends `request` to gateway:port and retransmits on the schedule until `parse` accepts an answer from that
 * address. Malformed answers are dropped as RFC 6886 §3.1 / RFC 6887 §8.3 ask, but if nothing valid arrives the
 * error says what was wrong with them. Bounded by the schedule, `timeoutMs` and `signal`.
 */
export async function udpTransaction<T>(o: UdpTransactionOptions<T>): Promise<T> {
  throwIfAborted(o.signal);
  // One transaction at a time per call: the table's engine owns the schedule, this function the matching.
  const table = new TransactionTable<0, T>();
  const started = Date.now();
  let sent = 0;
  let lastMalformed: unknown;
  const giveUp = (): NatpunchError => {
    if (lastMalformed !== undefined) {
      const why = lastMalformed instanceof Error ? lastMalformed.message : String(lastMalformed);
      return new NatpunchError('PORTMAP', `${o.what}: ${o.gateway}:${o.port} sent only malformed answers (${why})`, {
        cause: lastMalformed,
      });
    }
    const secs = ((Date.now() - started) / 1000).toFixed(2);
    return new NatpunchError(
      'TIMEOUT',
      `${o.what}: no answer from ${o.gateway}:${o.port} after ${sent} tries (${secs} s)`,
      {
        details: { gateway: o.gateway, port: o.port, attempts: sent },
      },
    );
  };
  const off = o.socket.onMessage((msg, rinfo) => {
    if (rinfo.port !== o.port || normalize(rinfo.address) !== normalize(o.gateway)) return;
    try {
      const value = o.parse(msg, rinfo);
      if (value !== undefined) table.resolve(0, value);
    } catch (err) {
      if (!isNatpunchError(err, 'PORTMAP')) {
        table.reject(0, err instanceof Error ? err : new Error(String(err)));
        return;
      }
      lastMalformed = err;
      o.logger?.debug({ err: (err as Error).message, from: rinfo.address }, 'dropped malformed gateway answer');
    }
  });
  const cap = o.timeoutMs === undefined ? undefined : setTimeout(() => table.reject(0, giveUp()), o.timeoutMs);
  try {
    const r = await table.run(
      0,
      () => {
        if (o.socket.closed) throw giveUp();
        sent++;
        o.socket.send(o.request, o.port, o.gateway);
      },
      {
        timing: {
          rtoMs: o.schedule.initialMs,
          rc: o.schedule.attempts,
          ...(o.schedule.maxDelayMs !== undefined ? { maxRtoMs: o.schedule.maxDelayMs } : {}),
          ...(o.schedule.jitter ? { jitter: o.schedule.jitter } : {}),
        },
        ...(o.signal ? { signal: o.signal } : {}),
        timeoutError: giveUp,
        abortError: (reason) => new NatpunchError('ABORTED', `${o.what}: aborted`, { cause: reason }),
      },
    );
    return r.answer;
  } finally {
    clearTimeout(cap);
    off();
  }
}

function normalize(a: string): string {
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

/**
 * RFC 6887 §8.5 epoch validation (RFC 6886 §3.6 is the same idea): the server's epoch must advance about as fast
 * as our clock. When it does not, the gateway lost its state (reboot) and every mapping must be made again.
 */
export class EpochTracker {
  #serverEpoch: number | undefined;
  #clientTime = 0;

  /** Feeds a server epoch; returns true when it shows the gateway restarted (state lost). */
  update(epoch: number, now = Date.now()): boolean {
    const prev = this.#serverEpoch;
    const prevClient = this.#clientTime;
    this.#serverEpoch = epoch;
    this.#clientTime = now;
    if (prev === undefined) return false;
    if (epoch + 1 < prev) return true; // time went backwards by more than a second
    const clientDelta = (now - prevClient) / 1000;
    const serverDelta = epoch - prev;
    return clientDelta + 2 < serverDelta - serverDelta / 16 || serverDelta + 2 < clientDelta - clientDelta / 16;
  }

  get epoch(): number | undefined {
    return this.#serverEpoch;
  }
}

/**
 * The IPv4 default route's gateway from /proc/net/route (Linux). Undefined when there is none or the file is
 * unreadable (other systems: pass the gateway explicitly).
 */
export async function defaultGateway(routeFile = '/proc/net/route'): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(routeFile, 'utf8');
  } catch {
    return undefined;
  }
  let best: { gw: string; metric: number } | undefined;
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [, dest, gw, flags, , , metric, mask] = f;
    // RTF_UP 0x1, RTF_GATEWAY 0x2; destination and mask 0 = default route. Fields are little-endian hex.
    const fl = parseInt(flags!, 16);
    if (dest !== '00000000' || mask !== '00000000' || (fl & 0x3) !== 0x3) continue;
    const n = parseInt(gw!, 16);
    if (!Number.isFinite(n) || n === 0) continue;
    const ip = `${n & 0xff}.${(n >>> 8) & 0xff}.${(n >>> 16) & 0xff}.${(n >>> 24) & 0xff}`;
    const m = Number(metric);
    if (!best || m < best.metric) best = { gw: ip, metric: m };
  }
  return best?.gw;
}

/** The local address the kernel would use to reach `remote` (a connected UDP socket; nothing is sent). */
export async function localAddressFor(remote: string): Promise<string> {
  const family = isIP(remote);
  if (!family) throw new NatpunchError('BAD_ARGUMENT', `"${remote}" is not an IP address`);
  const s = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.connect(9, remote, () => resolve());
    });
    return s.address().address;
  } catch (err) {
    throw new NatpunchError('PORTMAP', `no route to gateway ${remote}`, { cause: err });
  } finally {
    s.close();
  }
}

export async function resolveGateway(explicit: string | undefined): Promise<string> {
  if (explicit) {
    if (!isIP(explicit)) throw new NatpunchError('BAD_ARGUMENT', `gateway "${explicit}" is not an IP address`);
    return explicit;
  }
  const gw = await defaultGateway();
  if (!gw)
    throw new NatpunchError(
      'PORTMAP',
      'no default gateway found in /proc/net/route; pass the gateway address (--gateway IP)',
    );
  return gw;
}

export function checkPort(name: string, port: number, allowZero = false): void {
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new NatpunchError('BAD_ARGUMENT', `${name} must be an integer ${allowZero ? 0 : 1}..65535`);
  }
}
