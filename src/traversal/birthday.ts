/**
 * Hard-NAT punching: port prediction for sequential symmetric NATs and birthday punching for random ones.
 *
 * A symmetric NAT (RFC 4787 §4.1 "address and port dependent mapping") gives each destination its own external
 * port, so the srflx port a server saw is useless to the peer. Strategies, by the two sides' kinds (predict.ts):
 *
 *   predict         cone/sequential ↔ cone/sequential. Each side offers its srflx port plus, when sequential, the
 *                   window of ports its NAT will hand out next (predictPorts() after a fresh observation). Both
 *                   send PROBEs from their one socket to the peer's ports in the same order, so the i-th new mapping
 *                   of one side meets the i-th of the other (sequential ↔ sequential) or the cone's fixed port.
 *   birthday        random ↔ cone. The random side opens k sockets and sends an OPEN from each to the cone's srflx
 *                   (the first one with a low TTL: it opens our NAT and dies before the peer's NAT, so that NAT sees
 *                   no unsolicited packet); the cone side sprays PROBEs to p distinct random ports of the random
 *                   side's public address. A PROBE that lands on one of the k mappings is answered (ACK) from that
 *                   socket: that socket and 5-tuple carry the session. With N ports in the NAT's range,
 *                       P(hit) = 1 − (1 − k/N)^p
 *                   k = 256, N = 64512 (1024-65535), p = 1750 → 0.99904; the median hit needs ~175 probes.
 *   double-random   random ↔ random, opt-in only (a budget). Every PROBE creates a fresh random mapping on both
 *                   NATs, so a hit needs one side's (ext port, target port) pair to equal the other's reversed:
 *                       P(hit) ≈ 1 − (1 − 1/N²)^(pA·pB) ≈ 1 − exp(−pA·pB / N²)
 *                   the default budget (20000 probes each, 20 s) gives ~9%; off by default and refused at once.
 *
 * Packets (first byte 0xF2, unused by src/net/demux.ts): [0xF2][kind][role][16-byte tag], tag = first 16 bytes of
 * HMAC-SHA256(check key, "natpunch hardnat" | kind | role): only the peer holding the connection's check key
 * (checks.ts deriveCheckKey) can make them; everything else is dropped silently. The Noise handshake that follows
 * authenticates the peer anyway.
 *
 * Bounds: every loop is capped in packets and time; mappings created on our own NAT (sockets × destinations) stay
 * under `maxMappings` (DEFAULT_MAX_MAPPINGS) unless an explicit double-random budget raises it.
 */
import { createHmac, randomInt, timingSafeEqual } from 'node:crypto';
import { UdxEndpoint } from '../net/udx.js';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { HardNatKind } from './predict.js';

export const HARDNAT_FIRST_BYTE = 0xf2;
const KIND = { PROBE: 1, ACK: 2, OPEN: 3 } as const;
const PACKET_LEN = 19;

/** Ports a random NAT allocates from (Linux fully-random masquerade and most CPE: the non-privileged range). */
export const BIRTHDAY_PORT_SPACE = 65536 - 1024;
/** k: sockets the random side opens (hyperdht uses 256 too). */
export const DEFAULT_BIRTHDAY_SOCKETS = 256;
/** p: probes the easy side sprays; with k = 256: P(hit) = 1 − (1 − 256/64512)^1750 = 0.99904. */
export const DEFAULT_BIRTHDAY_PROBES = 1750;
/**
 * Rounds of p probes the cone side sprays while nothing answered: P(hit) above holds when the random side's k
 * mappings exist for the whole spray. When that side is late (a busy host binds its sockets slowly, or its
 * introduction came later), the first round's early probes meet fewer mappings; a second round of p fresh ports
 * (within DEFAULT_MAX_MAPPINGS, and the relay's 4 s hold-back) makes up for it. A hit stops the spray, so a punch that
 * works costs no more.
 */
export const BIRTHDAY_SPRAY_ROUNDS = 2;
/** Spray rate (probes per second): 1750 probes in 1.75 s, well inside a 5 s budget; paced in 10 ms slices. */
export const DEFAULT_PROBE_RATE = 1000;
/** Ceiling on any spray rate (probes per second). */
export const MAX_PROBE_RATE = 20_000;
/** Whole hard punch (one attempt), default. */
export const DEFAULT_HARDNAT_TIMEOUT_MS = 8_000;
/** TTL of the random side's first OPEN per socket: leaves our NAT (hop 1) and dies at the next router. 0 = off. */
export const DEFAULT_OPEN_TTL = 2;
/** Normal-TTL OPENs afterwards (full / restricted cones let them in; also opens our NAT if the low TTL was too low). */
export const OPEN_INTERVAL_MS = 1_000;
/** PROBE rounds to a predicted window (predict strategy): every 100 ms, like RFC 8445 §14.2 pacing but per round. */
export const PREDICT_ROUND_MS = 100;
/** Mappings one attempt may create on our own NAT (sockets × destinations) outside a double-random budget. */
export const DEFAULT_MAX_MAPPINGS = 4096;
/** The winner keeps answering PROBEs this long after the punch resolved (the peer may still be waiting for an ACK). */
export const ACK_LINGER_MS = 3_000;

/** Opt-in budget for random ↔ random. */
export interface DoubleRandomBudget {
  sockets: number;
  probes: number;
  seconds: number;
}
export const DEFAULT_DOUBLE_RANDOM_BUDGET: DoubleRandomBudget = { sockets: 64, probes: 20_000, seconds: 20 };
/** Hard ceilings on a budget (so a typo cannot flood a NAT). */
export const MAX_BUDGET: DoubleRandomBudget = { sockets: 1024, probes: 100_000, seconds: 120 };

/** P(hit) for the birthday strategy: 1 − (1 − k/N)^p. */
export function birthdaySuccess(sockets: number, probes: number, space: number = BIRTHDAY_PORT_SPACE): number {
  return 1 - (1 - Math.min(1, sockets / space)) ** probes;
}

/** Probes needed for P(hit) ≥ target with k sockets: p = ln(1 − target) / ln(1 − k/N). */
export function birthdayProbesFor(target: number, sockets: number, space: number = BIRTHDAY_PORT_SPACE): number {
  return Math.ceil(Math.log(1 - target) / Math.log(1 - sockets / space));
}

/** P(hit) for double-random with pA and pB probes (both sides spraying): 1 − exp(−pA·pB / N²). */
export function doubleRandomSuccess(probesA: number, probesB: number, space: number = BIRTHDAY_PORT_SPACE): number {
  return 1 - Math.exp((-probesA * probesB) / (space * space));
}

export type HardStrategy = 'predict' | 'birthday-sockets' | 'birthday-spray' | 'double-random';

/** Which strategy this side runs, or an error (PUNCH_FAILED) at once when both are random and no budget was given. */
export function planHardPunch(
  local: HardNatKind,
  remote: HardNatKind,
  budget?: DoubleRandomBudget | null,
): HardStrategy {
  const hard = (k: HardNatKind) => k === 'random';
  // A sequential side facing a random one cannot predict the mapping its peer aims at: as hard as double-random.
  const unpredictable = (a: HardNatKind, b: HardNatKind) =>
    (hard(a) && (hard(b) || b === 'sequential')) || (a === 'sequential' && hard(b));
  if (unpredictable(local, remote)) {
    if (!budget) {
      throw new NatpunchError(
        'PUNCH_FAILED',
        `both NATs are hard (${local} ↔ ${remote}): no direct path without the opt-in double-random budget; use a relay`,
        {
          details: { reason: 'double-random', local, remote },
        },
      );
    }
    return 'double-random';
  }
  if (hard(local)) return 'birthday-sockets';
  if (hard(remote)) return 'birthday-spray';
  return 'predict';
}

export interface HardPunchOptions {
  role: 'initiator' | 'responder';
  /** The connection's check key (checks.ts deriveCheckKey): authenticates our packets. */
  key: Uint8Array;
  /** Our main socket (cone / sequential side); random sides open their own. Not closed here. */
  endpoint: UdxEndpoint;
  local: HardNatKind;
  /** The peer: its public address, kind, and ports to aim at (srflx first, then its predicted window). */
  remote: { address: string; kind: HardNatKind; ports: number[] };
  budget?: DoubleRandomBudget | null;
  sockets?: number;
  probes?: number;
  rate?: number;
  openTtl?: number;
  maxMappings?: number;
  timeoutMs?: number;
  bindAddress?: string;
  signal?: AbortSignal;
  logger?: Logger;
  /** Called once before a double-random attempt starts, with its success estimate. */
  onEstimate?: (e: { strategy: HardStrategy; success: number; budget: DoubleRandomBudget }) => void;
}

export interface HardPunchResult {
  strategy: HardStrategy;
  /** The socket that won: `endpoint` itself, or one of the birthday sockets (then the caller owns and closes it). */
  endpoint: UdxEndpoint;
  ownsEndpoint: boolean;
  /** The peer's address as seen by the winning socket (the first one heard); `remotes` all it heard from. */
  remote: { address: string; port: number };
  remotes: Array<{ address: string; port: number }>;
  probesSent: number;
  socketsOpened: number;
  elapsedMs: number;
}

function tag(key: Uint8Array, kind: number, role: number): Buffer {
  return createHmac('sha256', key)
    .update('natpunch hardnat')
    .update(Buffer.from([kind, role]))
    .digest()
    .subarray(0, 16);
}

/**
 * One hard-NAT punch attempt. run() resolves with the winning socket and the peer's address on it, or rejects with
 * PUNCH_FAILED / TIMEOUT / ABORTED; close() stops everything (also the lingering ACKs).
 */
export class HardPunch {
  readonly strategy: HardStrategy;
  #o: HardPunchOptions;
  #log: Logger;
  #sockets: UdxEndpoint[] = [];
  #unsubs = new Map<UdxEndpoint, () => void>();
  #timers = new Set<NodeJS.Timeout>();
  #winner: { ep: UdxEndpoint; remote: { address: string; port: number } } | null = null;
  #remotes: Array<{ address: string; port: number }> = [];
  #probesSent = 0;
  #mappings = 0;
  #closed = false;
  #done: ((r: HardPunchResult) => void) | null = null;
  #fail: ((e: Error) => void) | null = null;
  #t0 = 0;
  #myRole: number;
  #packets: { probe: Buffer; ack: Buffer; open: Buffer };
  #peerTags: { probe: Buffer; ack: Buffer; open: Buffer };

  constructor(options: HardPunchOptions) {
    this.#o = options;
    this.#log = options.logger ?? silentLogger;
    this.strategy = planHardPunch(options.local, options.remote.kind, options.budget);
    this.#myRole = options.role === 'initiator' ? 1 : 2;
    const peerRole = 3 - this.#myRole;
    const pkt = (kind: number) =>
      Buffer.concat([Buffer.from([HARDNAT_FIRST_BYTE, kind, this.#myRole]), tag(options.key, kind, this.#myRole)]);
    this.#packets = { probe: pkt(KIND.PROBE), ack: pkt(KIND.ACK), open: pkt(KIND.OPEN) };
    this.#peerTags = {
      probe: tag(options.key, KIND.PROBE, peerRole),
      ack: tag(options.key, KIND.ACK, peerRole),
      open: tag(options.key, KIND.OPEN, peerRole),
    };
    if (!options.remote.ports.length && this.strategy !== 'birthday-spray' && this.strategy !== 'double-random') {
      throw new NatpunchError('BAD_ARGUMENT', 'hard punch needs at least one remote port');
    }
  }

  /** The success estimate of this attempt (birthday / double-random), or null for prediction. */
  estimate(): number | null {
    const b = this.#budget();
    if (this.strategy === 'double-random') return doubleRandomSuccess(b.probes, b.probes);
    if (this.strategy === 'predict') return null;
    return birthdaySuccess(this.#o.sockets ?? DEFAULT_BIRTHDAY_SOCKETS, this.#o.probes ?? DEFAULT_BIRTHDAY_PROBES);
  }

  #budget(): DoubleRandomBudget {
    const b = this.#o.budget ?? DEFAULT_DOUBLE_RANDOM_BUDGET;
    const clamp = (v: number, max: number, name: string) => {
      if (!Number.isFinite(v) || v <= 0) throw new NatpunchError('BAD_ARGUMENT', `budget ${name} must be positive`);
      return Math.min(Math.floor(v), max);
    };
    return {
      sockets: clamp(b.sockets, MAX_BUDGET.sockets, 'sockets'),
      probes: clamp(b.probes, MAX_BUDGET.probes, 'probes'),
      seconds: Math.min(b.seconds, MAX_BUDGET.seconds),
    };
  }

  async run(): Promise<HardPunchResult> {
    const o = this.#o;
    this.#t0 = performance.now();
    const budget = this.strategy === 'double-random' ? this.#budget() : null;
    const timeoutMs = budget ? budget.seconds * 1000 : (o.timeoutMs ?? DEFAULT_HARDNAT_TIMEOUT_MS);
    const maxMappings = budget ? budget.sockets + budget.probes : (o.maxMappings ?? DEFAULT_MAX_MAPPINGS);
    if (budget) {
      const success = this.estimate()!;
      this.#log.warn({ budget, success }, 'double-random punch: opt-in budget');
      o.onEstimate?.({ strategy: this.strategy, success, budget });
    }
    if (o.signal?.aborted) throw new NatpunchError('ABORTED', 'hard punch aborted');
    const result = new Promise<HardPunchResult>((resolve, reject) => {
      this.#done = resolve;
      this.#fail = reject;
    });
    const onAbort = () => this.#finish(new NatpunchError('ABORTED', 'hard punch aborted'));
    o.signal?.addEventListener('abort', onAbort, { once: true });
    this.#timer(timeoutMs, () =>
      this.#finish(
        new NatpunchError(
          'PUNCH_FAILED',
          `no hard-NAT path within ${timeoutMs} ms (${this.strategy}, ${this.#probesSent} probes, ${this.#sockets.length} sockets)`,
          {
            details: { strategy: this.strategy, probesSent: this.#probesSent, socketsOpened: this.#sockets.length },
          },
        ),
      ),
    );
    const take = (n: number): boolean => {
      if (this.#mappings + n > maxMappings) return false;
      this.#mappings += n;
      return true;
    };
    try {
      switch (this.strategy) {
        case 'predict':
          this.#listen(o.endpoint);
          this.#predict(take);
          break;
        case 'birthday-spray':
          this.#listen(o.endpoint);
          this.#spray([o.endpoint], (o.probes ?? DEFAULT_BIRTHDAY_PROBES) * BIRTHDAY_SPRAY_ROUNDS, take);
          break;
        case 'birthday-sockets':
          await this.#openSockets(o.sockets ?? DEFAULT_BIRTHDAY_SOCKETS, take, true);
          break;
        case 'double-random':
          await this.#openSockets(budget!.sockets, take, false);
          // Spread the budget's probes over 80% of its seconds (at least the default rate).
          this.#spray(
            this.#sockets,
            budget!.probes,
            take,
            Math.max(o.rate ?? DEFAULT_PROBE_RATE, budget!.probes / (0.8 * budget!.seconds)),
          );
          break;
      }
    } catch (err) {
      this.#finish(err as Error);
    }
    try {
      return await result;
    } finally {
      o.signal?.removeEventListener('abort', onAbort);
    }
  }

  #timer(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
  }

  #interval(ms: number, fn: () => boolean): void {
    // Repeats fn every ms while it returns true and the punch is undecided.
    const tick = () => {
      if (this.#winner || this.#closed) return;
      if (fn()) this.#timer(ms, tick);
    };
    tick();
  }

  #send(ep: UdxEndpoint, pkt: Buffer, port: number, address: string, ttl?: number): void {
    if (ep.closed) return;
    ep.send(pkt, port, address, ttl);
  }

  /** Rounds of PROBEs to the peer's ports in order (its srflx, then its predicted window). */
  #predict(take: (n: number) => boolean): void {
    const { address, ports } = this.#o.remote;
    if (!take(ports.length))
      throw new NatpunchError('BAD_ARGUMENT', `a window of ${ports.length} ports exceeds the mapping cap`);
    const rounds = Math.ceil((this.#o.timeoutMs ?? DEFAULT_HARDNAT_TIMEOUT_MS) / PREDICT_ROUND_MS);
    let round = 0;
    this.#interval(PREDICT_ROUND_MS, () => {
      for (const port of ports) {
        this.#send(this.#o.endpoint, this.#packets.probe, port, address);
        this.#probesSent++;
      }
      return ++round < rounds;
    });
  }

  /** PROBEs to distinct random ports of the peer's address, round-robin over `from`, paced at `rate`. */
  #spray(
    from: UdxEndpoint[],
    total: number,
    take: (n: number) => boolean,
    wanted = this.#o.rate ?? DEFAULT_PROBE_RATE,
  ): void {
    const address = this.#o.remote.address;
    const rate = Math.max(1, Math.min(wanted, MAX_PROBE_RATE));
    const slice = 10;
    const used = new Set<number>();
    // Ports the peer told us of (its srflx toward the server, predictions) go first: cheap and sometimes right.
    const queue = [...this.#o.remote.ports];
    let i = 0;
    const start = performance.now();
    let sent = 0;
    const burst = Math.max(1, Math.ceil((4 * rate * slice) / 1000)); // at most 4 slices' worth at once
    this.#interval(slice, () => {
      // Pace by elapsed time, not by tick count: late timers (a busy host) are caught up, never exceeded.
      const due = Math.min(
        burst,
        Math.min(total, Math.ceil(((performance.now() - start + slice) * rate) / 1000)) - sent,
      );
      for (let n = 0; n < due && this.#probesSent < total; n++) {
        sent++;
        let port = queue.shift();
        if (port === undefined) {
          if (used.size >= BIRTHDAY_PORT_SPACE) return false;
          do port = randomInt(1024, 65536);
          while (used.has(port));
        }
        if (used.has(port)) continue;
        if (!take(1)) return false;
        used.add(port);
        this.#send(from[i++ % from.length]!, this.#packets.probe, port, address);
        this.#probesSent++;
      }
      return this.#probesSent < total;
    });
  }

  /** Binds k sockets; with `open`, each sends OPENs to the peer's ports (low TTL first, then normal). */
  async #openSockets(k: number, take: (n: number) => boolean, open: boolean): Promise<void> {
    const { address, ports } = this.#o.remote;
    const perSocket = open ? Math.max(1, ports.length) : 0;
    const ttl = this.#o.openTtl ?? DEFAULT_OPEN_TTL;
    const batch = 32;
    for (let i = 0; i < k && !this.#winner && !this.#closed; i += batch) {
      const n = Math.min(batch, k - i);
      const eps = await Promise.all(
        Array.from({ length: n }, () => UdxEndpoint.bind(this.#o.bindAddress ? { address: this.#o.bindAddress } : {})),
      );
      for (const ep of eps) {
        if (this.#closed || this.#winner || !take(1 + perSocket)) {
          void ep.close().catch(() => {});
          continue;
        }
        this.#sockets.push(ep);
        this.#listen(ep);
        if (open) for (const port of ports) this.#send(ep, this.#packets.open, port, address, ttl || undefined);
      }
    }
    if (!open) return;
    let rounds = Math.ceil((this.#o.timeoutMs ?? DEFAULT_HARDNAT_TIMEOUT_MS) / OPEN_INTERVAL_MS);
    this.#timer(ttl ? OPEN_INTERVAL_MS : 0, () =>
      this.#interval(OPEN_INTERVAL_MS, () => {
        for (const ep of this.#sockets) for (const port of ports) this.#send(ep, this.#packets.open, port, address);
        return --rounds > 0;
      }),
    );
  }

  #listen(ep: UdxEndpoint): void {
    const unsub = ep.onMessage((msg, rinfo) => this.#onPacket(ep, msg, rinfo));
    this.#unsubs.set(ep, unsub);
  }

  #onPacket(ep: UdxEndpoint, msg: Buffer, rinfo: { address: string; port: number }): void {
    if (msg.length !== PACKET_LEN || msg[0] !== HARDNAT_FIRST_BYTE || msg[2] !== 3 - this.#myRole) return;
    const kind = msg[1];
    const t = msg.subarray(3);
    const expect =
      kind === KIND.PROBE
        ? this.#peerTags.probe
        : kind === KIND.ACK
          ? this.#peerTags.ack
          : kind === KIND.OPEN
            ? this.#peerTags.open
            : null;
    if (!expect || !timingSafeEqual(t, expect)) return;
    const from = { address: rinfo.address, port: rinfo.port };
    if (kind === KIND.OPEN) {
      // A random side's OPEN got through our NAT (we filter little): answer with PROBEs, it picks the socket.
      if (!this.#winner) for (let i = 0; i < 3; i++) this.#send(ep, this.#packets.probe, from.port, from.address);
      return;
    }
    if (this.#winner && this.#winner.ep !== ep) return;
    if (!this.#remotes.some((r) => r.address === from.address && r.port === from.port)) this.#remotes.push(from);
    if (kind === KIND.PROBE) this.#send(ep, this.#packets.ack, from.port, from.address);
    if (!this.#winner) {
      this.#winner = { ep, remote: from };
      this.#finish(null);
      // A few more ACKs in case the first is lost (after #finish, which cancels the sending timers); the winner
      // keeps answering PROBEs while it lingers.
      for (const d of [30, 100]) this.#timer(d, () => this.#send(ep, this.#packets.ack, from.port, from.address));
    }
  }

  #finish(err: Error | null): void {
    if (!this.#done) return;
    const done = this.#done;
    const fail = this.#fail!;
    this.#done = this.#fail = null;
    if (err || !this.#winner) {
      this.close();
      fail(err ?? new NatpunchError('PUNCH_FAILED', 'hard punch ended without a path'));
      return;
    }
    const w = this.#winner;
    // Close every socket but the winner and stop sending; the winner answers PROBEs a little longer.
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    for (const ep of this.#sockets) {
      if (ep === w.ep) continue;
      this.#unsubs.get(ep)?.();
      void ep.close().catch(() => {});
    }
    for (const [ep, unsub] of this.#unsubs) {
      if (ep === w.ep) continue;
      unsub();
    }
    const t = setTimeout(() => this.close(), ACK_LINGER_MS);
    t.unref();
    this.#timers.add(t);
    done({
      strategy: this.strategy,
      endpoint: w.ep,
      ownsEndpoint: w.ep !== this.#o.endpoint,
      remote: w.remote,
      remotes: this.#remotes,
      probesSent: this.#probesSent,
      socketsOpened: this.#sockets.length,
      elapsedMs: performance.now() - this.#t0,
    });
  }

  get probesSent(): number {
    return this.#probesSent;
  }

  get socketsOpened(): number {
    return this.#sockets.length;
  }

  /** Stops sending and listening; closes the birthday sockets except a winner already handed out. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    for (const unsub of this.#unsubs.values()) unsub();
    this.#unsubs.clear();
    for (const ep of this.#sockets) if (ep !== this.#winner?.ep) void ep.close().catch(() => {});
    if (this.#done) this.#finish(new NatpunchError('ABORTED', 'hard punch closed'));
  }
}
