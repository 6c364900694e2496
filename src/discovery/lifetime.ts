/**
 * Binding lifetime search (RFC 5780 §4.6, RFC 4787 §4.3).
 *
 * Method: at t=0 each of K fresh sockets X_k makes a mapping with one Binding request to the server and then stays
 * silent. At its check time t_k a separate checker socket Y sends a Binding request carrying RESPONSE-PORT = X_k's
 * mapped port (RFC 5780 §7.5); the server answers from the address X_k talked to, to (our public IP, that port). If
 * X_k receives it, its mapping outlived t_k idle seconds; if nothing arrives after a full retransmission schedule it
 * had expired. Checks never send from X_k (outbound packets refresh mappings, RFC 4787 REQ-6) and each socket is
 * checked once (an inbound answer may refresh it too), so all K checks run in parallel on one clock.
 *
 * Bounded: the grid stops at `maxMs`, and the search ends at the first expired check (later ones would be expired
 * too). The answer is a bracket: alive after `aliveAtS`, gone by `expiredByS` (null: outlived the search). A control
 * check right after t=0 proves the server honours RESPONSE-PORT; without it the result would mean nothing.
 */
import { NodeDatagramTransport } from '../net/datagram.js';
import { sleep } from '../util/abort.js';
import type { Endpoint } from './classify.js';
import { BindingProber, sendOffsets, type ProbeSchedule } from './probe.js';
import { decodeBindingResponse, encodeBindingRequest, newTransactionId } from './binding.js';

export interface LifetimeResult {
  /** The longest idle time (s) after which a mapping still received. */
  aliveAtS: number;
  /** The shortest idle time (s) after which it no longer did; null if every check up to the bound succeeded. */
  expiredByS: number | null;
  /** Idle times checked, with outcome. */
  checks: Array<{ idleS: number; alive: boolean }>;
}

/** Idle times to check, in seconds: dense where NATs commonly sit (30 s, 60 s, 2 min, 5 min). */
export const LIFETIME_GRID_S = [2, 5, 10, 20, 30, 45, 60, 90, 120, 150, 180, 240, 300, 330, 600];
/** The control check's idle time. */
const CONTROL_IDLE_MS = 200;

export async function measureLifetime(options: {
  server: Endpoint;
  maxMs: number;
  schedule: ProbeSchedule;
  localAddress?: string;
  signal?: AbortSignal;
  onStep?: (detail: string) => void;
}): Promise<LifetimeResult | { why: string }> {
  const maxS = options.maxMs / 1000;
  const grid = LIFETIME_GRID_S.filter((s) => s < maxS);
  grid.push(maxS);
  const owned: Array<{ close(): void }> = [];
  const bind = async () => {
    const t = await NodeDatagramTransport.bind({ type: 'udp4', address: options.localAddress });
    owned.push(t);
    const p = new BindingProber(t);
    owned.push(p);
    return { t, p };
  };
  try {
    const checker = await bind();
    const sockets = await Promise.all([bind(), ...grid.map(() => bind())]);
    const mapped = await Promise.all(
      sockets.map((s) => s.p.request(options.server, { schedule: options.schedule, signal: options.signal })),
    );
    const t0 = Date.now();
    if (mapped.some((m) => !m?.ok || !(m.xorMapped ?? m.mapped)))
      return { why: 'not every lifetime socket got a mapping' };

    /** One check: does a RESPONSE-PORT answer reach socket i? */
    const check = (i: number): Promise<boolean | 'rejected'> =>
      new Promise((resolve) => {
        const target = sockets[i]!;
        const port = (mapped[i]!.xorMapped ?? mapped[i]!.mapped)!.port;
        const txid = newTransactionId();
        const key = txid.toString('hex');
        const packet = encodeBindingRequest(txid, { responsePort: port });
        const timers: NodeJS.Timeout[] = [];
        const finish = (v: boolean | 'rejected') => {
          for (const t of timers) clearTimeout(t);
          offTarget();
          offChecker();
          options.signal?.removeEventListener('abort', onAbort);
          resolve(v);
        };
        const onAbort = () => finish(false);
        const offTarget = target.t.onMessage((msg) => {
          const r = decodeBindingResponse(msg);
          if (r?.transactionId === key && r.ok) finish(true);
        });
        // RFC 5780 §7.5: a server that does not know RESPONSE-PORT answers 420 to the sender.
        const offChecker = checker.t.onMessage((msg) => {
          const r = decodeBindingResponse(msg);
          if (r?.transactionId === key && !r.ok) finish('rejected');
        });
        if (options.signal?.aborted) return finish(false);
        options.signal?.addEventListener('abort', onAbort, { once: true });
        for (const at of sendOffsets(options.schedule)) {
          timers.push(setTimeout(() => checker.t.send(packet, options.server.port, options.server.address), at));
        }
        timers.push(setTimeout(() => finish(false), options.schedule.budgetMs));
      });

    await sleep(CONTROL_IDLE_MS, options.signal);
    const control = await check(0);
    if (control === 'rejected')
      return { why: 'the server rejects RESPONSE-PORT (RFC 5780 §7.5), which the lifetime test needs' };
    if (!control)
      return {
        why: 'a RESPONSE-PORT answer did not arrive even right after the mapping was made (server ignores RESPONSE-PORT, or our public IP differs per socket)',
      };

    const checks: LifetimeResult['checks'] = [];
    for (let k = 0; k < grid.length; k++) {
      const idleS = grid[k]!;
      const wait = t0 + idleS * 1000 - Date.now();
      options.onStep?.(`checking a mapping idle for ${idleS} s`);
      if (wait > 0) await sleep(wait, options.signal);
      const alive = (await check(k + 1)) === true;
      checks.push({ idleS, alive });
      if (!alive) break;
    }
    const aliveAt = checks.filter((c) => c.alive).map((c) => c.idleS);
    const dead = checks.find((c) => !c.alive);
    return {
      aliveAtS: aliveAt.length ? Math.max(...aliveAt) : CONTROL_IDLE_MS / 1000,
      expiredByS: dead ? dead.idleS : null,
      checks,
    };
  } finally {
    for (const o of owned.reverse()) {
      try {
        o.close();
      } catch {
        // best effort
      }
    }
  }
}
