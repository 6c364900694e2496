/**
 * What the dashboard shows besides counters: the success matrix by NAT pair from peers' outcome reports, the
 * introductions in progress, and the most recent refusals. Bounded in memory; fed by the rendezvous observer.
 */
import type { RendezvousEvent, RendezvousObserver } from '../rendezvous/server.js';
import { hex, type ReportMessage } from '../wire/rendezvous.js';

/** Connection ids remembered so the two sides' reports of one connection count once. */
const SEEN_CONNECTIONS = 10_000;
/** Times kept per matrix cell for the median (a sliding window of the latest). */
const TIMES_PER_CELL = 256;
/** Recent refusals kept. */
const RECENT_ERRORS = 50;
/** An introduction counts as active this long after the server made it (connect() is bounded at 30 s). */
export const INTRODUCTION_ACTIVE_MS = 30_000;
const MAX_ACTIVE_INTRODUCTIONS = 10_000;

export interface MatrixCell {
  /** "natA/natB", the two NAT types sorted, so both directions meet in one cell. */
  pair: string;
  attempts: number;
  connected: number;
  direct: number;
  relayed: number;
  /** Median time to connect of the connected attempts, ms (null before the first). */
  medianMs: number | null;
  successRate: number;
  directShare: number;
}

export interface RecentError {
  at: number;
  request: string;
  code: string;
  message: string;
  /** The requester's address with the last part hidden (dashboards are shared on screens). */
  from: string;
}

export interface ActivitySnapshot {
  matrix: MatrixCell[];
  introductions: { active: number; recent: Array<{ at: number; from: string; to: string; remote: boolean }> };
  errors: RecentError[];
  reports: number;
}

export function natPair(a: string, b: string): string {
  return [a, b].sort().join('/');
}

function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : Math.round((sorted[mid - 1]! + sorted[mid]!) / 2);
}

function hideHost(ip: string): string {
  if (ip.includes(':')) return `${ip.split(':').slice(0, 3).join(':')}:…`;
  const parts = ip.split('.');
  return parts.length === 4 ? `${parts.slice(0, 3).join('.')}.x` : ip;
}

/** Keeps the dashboard's state; `onChange` fires (at most once per tick) when something it shows changed. */
export class Activity implements RendezvousObserver {
  #cells = new Map<string, { attempts: number; connected: number; direct: number; relayed: number; times: number[] }>();
  #seen = new Set<string>();
  #intros = new Map<string, { at: number; from: string; to: string; remote: boolean }>();
  #errors: RecentError[] = [];
  #reports = 0;
  #now: () => number;
  #listeners = new Set<(what: string) => void>();

  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  onChange(listener: (what: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  onEvent(e: RendezvousEvent): void {
    switch (e.type) {
      case 'report':
        if (this.#countReport(e.report)) this.#changed('matrix');
        return;
      case 'introduction': {
        const id = hex(e.connectionId);
        this.#intros.delete(id);
        if (this.#intros.size >= MAX_ACTIVE_INTRODUCTIONS) this.#intros.delete(this.#intros.keys().next().value!);
        this.#intros.set(id, { at: this.#now(), from: hex(e.from).slice(0, 16), to: hex(e.to).slice(0, 16), remote: e.remote });
        this.#changed('introductions');
        return;
      }
      case 'refused':
        this.#errors.unshift({ at: this.#now(), request: e.request, code: e.code, message: e.message.slice(0, 200), from: hideHost(e.from) });
        if (this.#errors.length > RECENT_ERRORS) this.#errors.length = RECENT_ERRORS;
        this.#changed('errors');
        return;
      case 'register':
        if (!e.refresh) this.#changed('peers');
        return;
      case 'unregister':
        this.#changed('peers');
        return;
      default:
        return;
    }
  }

  /** Counts one connection once (the first of its two reports). Returns whether it counted. */
  #countReport(r: ReportMessage): boolean {
    this.#reports++;
    if (r.result === 'aborted') return false;
    const id = hex(r.connectionId);
    if (this.#seen.has(id)) return false;
    this.#seen.add(id);
    if (this.#seen.size > SEEN_CONNECTIONS) this.#seen.delete(this.#seen.values().next().value!);
    const pair = natPair(r.localNat, r.peerNat);
    let c = this.#cells.get(pair);
    if (!c) {
      c = { attempts: 0, connected: 0, direct: 0, relayed: 0, times: [] };
      this.#cells.set(pair, c);
    }
    c.attempts++;
    if (r.result === 'connected') {
      c.connected++;
      if (r.path === 'relay') c.relayed++;
      else c.direct++;
      if (r.timeToConnectMs !== undefined) {
        c.times.push(r.timeToConnectMs);
        if (c.times.length > TIMES_PER_CELL) c.times.shift();
      }
    }
    return true;
  }

  snapshot(): ActivitySnapshot {
    const now = this.#now();
    for (const [id, i] of this.#intros) if (now - i.at > INTRODUCTION_ACTIVE_MS) this.#intros.delete(id);
    const matrix: MatrixCell[] = [...this.#cells.entries()]
      .map(([pair, c]) => ({
        pair,
        attempts: c.attempts,
        connected: c.connected,
        direct: c.direct,
        relayed: c.relayed,
        medianMs: median(c.times),
        successRate: c.attempts ? c.connected / c.attempts : 0,
        directShare: c.connected ? c.direct / c.connected : 0,
      }))
      .sort((a, b) => a.pair.localeCompare(b.pair));
    const recent = [...this.#intros.values()].reverse().slice(0, 20);
    return { matrix, introductions: { active: this.#intros.size, recent }, errors: [...this.#errors], reports: this.#reports };
  }

  #changed(what: string): void {
    for (const l of this.#listeners) l(what);
  }
}
