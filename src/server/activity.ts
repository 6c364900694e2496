/**
 * What the dashboard shows besides counters: the success matrix by NAT pair from peers' outcome reports, the
 * introductions in progress, and the most recent refusals. Bounded in memory; fed by the rendezvous observer.
 */
import type { RendezvousEvent, RendezvousObserver } from '../rendezvous/server.js';
import { hex, type ReportMessage } from '../wire/rendezvous.js';

/** Connections remembered for the matrix (the latest; both sides' reports of one connection count once). */
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
interface ConnectionRecord {
  /** The NAT types of the initiator and of the responder, as each side reported its own (or the other's). */
  initiatorNat: string;
  responderNat: string;
  result: 'connected' | 'failed';
  path: 'none' | 'direct' | 'relay';
  timeToConnectMs: number | undefined;
}

/**
 * Keeps the dashboard's state; `onChange` listeners hear what changed. The two reports of one connection (one from
 * each side) are merged: each side knows its own NAT type best, so the matrix places the connection by both.
 */
export class Activity implements RendezvousObserver {
  /** The latest connections by id (insertion order: oldest first), bounded by SEEN_CONNECTIONS. */
  #connections = new Map<string, ConnectionRecord>();
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
        this.#intros.set(id, {
          at: this.#now(),
          from: hex(e.from).slice(0, 16),
          to: hex(e.to).slice(0, 16),
          remote: e.remote,
        });
        this.#changed('introductions');
        return;
      }
      case 'refused':
        this.#errors.unshift({
          at: this.#now(),
          request: e.request,
          code: e.code,
          message: e.message.slice(0, 200),
          from: hideHost(e.from),
        });
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

  /** Records (or completes) one connection from a report. Returns whether the matrix changed. */
  #countReport(r: ReportMessage): boolean {
    this.#reports++;
    if (r.result === 'aborted') return false;
    const id = hex(r.connectionId);
    const own = r.role === 'initiator' ? 'initiatorNat' : 'responderNat';
    const other = r.role === 'initiator' ? 'responderNat' : 'initiatorNat';
    const known = this.#connections.get(id);
    if (known) {
      // The other side's report: its own NAT type wins over what its peer guessed; the outcome stays the first one.
      if (r.localNat !== 'unknown') known[own] = r.localNat;
      if (known[other] === 'unknown' && r.peerNat !== 'unknown') known[other] = r.peerNat;
      return true;
    }
    const rec: ConnectionRecord = {
      initiatorNat: 'unknown',
      responderNat: 'unknown',
      result: r.result,
      path: r.path,
      timeToConnectMs: r.result === 'connected' ? r.timeToConnectMs : undefined,
    };
    rec[own] = r.localNat;
    rec[other] = r.peerNat;
    this.#connections.set(id, rec);
    if (this.#connections.size > SEEN_CONNECTIONS) this.#connections.delete(this.#connections.keys().next().value!);
    return true;
  }

  snapshot(): ActivitySnapshot {
    const now = this.#now();
    for (const [id, i] of this.#intros) if (now - i.at > INTRODUCTION_ACTIVE_MS) this.#intros.delete(id);
    const cells = new Map<
      string,
      { attempts: number; connected: number; direct: number; relayed: number; times: number[] }
    >();
    for (const c of this.#connections.values()) {
      const pair = natPair(c.initiatorNat, c.responderNat);
      let cell = cells.get(pair);
      if (!cell) {
        cell = { attempts: 0, connected: 0, direct: 0, relayed: 0, times: [] };
        cells.set(pair, cell);
      }
      cell.attempts++;
      if (c.result !== 'connected') continue;
      cell.connected++;
      if (c.path === 'relay') cell.relayed++;
      else cell.direct++;
      if (c.timeToConnectMs !== undefined) {
        cell.times.push(c.timeToConnectMs);
        if (cell.times.length > TIMES_PER_CELL) cell.times.shift();
      }
    }
    const matrix: MatrixCell[] = [...cells.entries()]
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
    return {
      matrix,
      introductions: { active: this.#intros.size, recent },
      errors: [...this.#errors],
      reports: this.#reports,
    };
  }

  #changed(what: string): void {
    for (const l of this.#listeners) l(what);
  }
}
