/**
 * STUN counters of a `serve --workers N` process, summed over its threads. Each worker's StunServer counts what that
 * thread answered; the worker posts a snapshot to the main thread once a second (WORKER_COUNTERS_INTERVAL_MS), and
 * /metrics and the dashboard read the main thread's live counters plus the latest snapshot of every worker, so
 * they lag by at most that interval.
 */
import type { StunServer, StunServerCounters } from '../stun/server.js';

export interface MethodCounters {
  requests: number;
  responses: number;
  errors: number;
}

/** What metrics read from a STUN server: per-method counts, the totals, and method names. */
export interface StunCounterSource {
  readonly byMethod: ReadonlyMap<number, MethodCounters>;
  readonly counters: Readonly<StunServerCounters>;
  methodName(method: number): string;
}

/** One worker's counters, as it posts them (structured-cloned, so plain arrays and objects). */
export interface StunCounterSnapshot {
  counters: StunServerCounters;
  byMethod: Array<[number, MethodCounters]>;
}

/** How often a worker posts its snapshot. */
export const WORKER_COUNTERS_INTERVAL_MS = 1_000;

export function snapshotOf(stun: StunServer): StunCounterSnapshot {
  return { counters: { ...stun.counters }, byMethod: [...stun.byMethod].map(([m, t]) => [m, { ...t }]) };
}

/** The main thread's StunServer plus the latest snapshot of each worker. */
export class PooledStunCounters implements StunCounterSource {
  readonly #main: StunServer;
  readonly #workers = new Map<number, StunCounterSnapshot>();

  constructor(main: StunServer) {
    this.#main = main;
  }

  /** Records worker `index`'s latest snapshot (each replaces the previous: the counters only grow). */
  update(index: number, snapshot: StunCounterSnapshot): void {
    this.#workers.set(index, snapshot);
  }

  get counters(): Readonly<StunServerCounters> {
    const sum = { ...this.#main.counters };
    for (const { counters } of this.#workers.values())
      for (const k of Object.keys(sum) as Array<keyof StunServerCounters>) sum[k] += counters[k] ?? 0;
    return sum;
  }

  get byMethod(): ReadonlyMap<number, MethodCounters> {
    const sum = new Map<number, MethodCounters>();
    const add = (m: number, t: MethodCounters) => {
      const s = sum.get(m) ?? { requests: 0, responses: 0, errors: 0 };
      s.requests += t.requests;
      s.responses += t.responses;
      s.errors += t.errors;
      sum.set(m, s);
    };
    for (const [m, t] of this.#main.byMethod) add(m, t);
    for (const snap of this.#workers.values()) for (const [m, t] of snap.byMethod) add(m, t);
    return sum;
  }

  methodName(method: number): string {
    return this.#main.methodName(method);
  }
}
