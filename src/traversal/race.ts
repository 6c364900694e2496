/**
 * Runs a plan (planner.ts): each step starts after its hold-back, the first authenticated path wins, every other
 * step is aborted through its AbortSignal, and a path that arrives after the winner is closed here. The race is the
 * one owner of everything the techniques hand back: a loser's session and resources are released by it, once.
 *
 * When every step has failed, the error lists each technique tried with why it failed, the NAT kinds of both sides,
 * the techniques left out and what would have helped.
 */
import { NatpunchError, isNatpunchError } from '../util/errors.js';
import { sleep } from '../util/abort.js';
import type { Plan, PlanStep } from './planner.js';
import type { NatView, PathResult, Technique, TechniqueContext, TechniqueName } from './technique.js';

export interface StepOutcome {
  technique: TechniqueName;
  started: boolean;
  ok: boolean;
  ms: number;
  error?: string;
}

export interface RaceOptions {
  plan: Plan;
  techniques: ReadonlyMap<TechniqueName, Technique>;
  /** The shared context; the race fills in claim()/unclaim() per step. */
  ctx: Omit<TechniqueContext, 'claim' | 'unclaim'>;
  signal: AbortSignal;
  /** Sentences for the failure message (planner.ts advice()). */
  advice?: string[];
  /** Called once when a step claims the race (its path works; its handshake runs now): the attempt is past the
   *  point where dropping it is free (the peer may hold a session from it). */
  onClaim?: (technique: TechniqueName) => void;
}

function describe(v: NatView): string {
  const parts: string[] = [v.kind === 'unknown' ? 'not measured' : v.kind];
  if (!v.udp) parts.push('UDP blocked');
  if (v.mapped) parts.push('port mapped');
  if (v.relay) parts.push('relay');
  return parts.join(', ');
}

/** The error when nothing worked: what was tried, why each failed, both NATs, what would help. */
export function raceFailure(o: RaceOptions, outcomes: StepOutcome[], cause?: unknown): NatpunchError {
  const tried = outcomes.filter((x) => x.started).map((x) => `${x.technique}: ${x.error ?? 'failed'}`);
  const left = o.plan.skipped.map((x) => `${x.technique} (${x.why})`);
  const msg = [
    `no path to the peer (our NAT: ${describe(o.ctx.local.nat)}; the peer's: ${describe(o.ctx.remote.nat)})`,
    tried.length ? `tried ${tried.join('; ')}` : 'no technique applied',
    left.length ? `not tried: ${left.join('; ')}` : '',
    o.advice?.length ? `what would help: ${o.advice.join('; ')}` : '',
  ]
    .filter(Boolean)
    .join('. ');
  return new NatpunchError('PUNCH_FAILED', msg, {
    ...(cause !== undefined ? { cause } : {}),
    details: {
      local: o.ctx.local.nat.kind,
      remote: o.ctx.remote.nat.kind,
      tried: outcomes
        .filter((x) => x.started)
        .map((x) => ({ technique: x.technique, error: x.error ?? null, ms: x.ms })),
      skipped: o.plan.skipped,
    },
  });
}

/**
 * Runs the plan; resolves with the winner (its session now belongs to the caller) or rejects with raceFailure()
 * (ABORTED/TIMEOUT when `signal` fired first).
 */
export async function race(o: RaceOptions): Promise<PathResult> {
  const t0 = Date.now();
  const outcomes: StepOutcome[] = o.plan.steps.map((s) => ({
    technique: s.technique,
    started: false,
    ok: false,
    ms: 0,
  }));
  /** An authenticated refusal (the handshake reached the peer and it said no, or proved another key) says more than
   *  any punch failure: it is rethrown as is when nothing won. */
  let decisive: NatpunchError | null = null;
  // This host cannot run a technique at all (no raw socket, no addon). When that is why every started step failed,
  // that one line is what the user must act on, not a "no path" summary.
  const localFaults: NatpunchError[] = [];
  const controllers = o.plan.steps.map(() => new AbortController());
  const running = new Set<PlanStep>(o.plan.steps);
  const st = { winner: null as PathResult | null, claimedBy: null as PlanStep | null };
  /** Wakes claim() waiters when a step ends or the claim is released. */
  let wake: () => void = () => {};
  let changed = new Promise<void>((r) => (wake = r));
  const notify = () => {
    const w = wake;
    changed = new Promise<void>((r) => (wake = r));
    w();
  };
  const abortAll = (reason: NatpunchError, except?: number) => {
    controllers.forEach((c, i) => {
      if (i !== except) c.abort(reason);
    });
  };
  const onAbort = () =>
    abortAll(new NatpunchError('ABORTED', 'connection attempt aborted', { cause: o.signal.reason }));
  o.signal.addEventListener('abort', onAbort, { once: true });

  const claimFor =
    (step: PlanStep, signal: AbortSignal) =>
    async (decided = false): Promise<boolean> => {
      const deadline = Date.now() + step.graceMs;
      if (decided && !st.winner && !signal.aborted) {
        const holder = st.claimedBy;
        st.claimedBy = step;
        if (holder && holder !== step)
          controllers[o.plan.steps.indexOf(holder)]!.abort(
            new NatpunchError('ABORTED', `the peer chose the path ${step.technique} found (Noise IK)`),
          );
        o.onClaim?.(step.technique);
        notify();
        return true;
      }
      for (;;) {
        if (st.winner || signal.aborted) return false;
        const better = [...running].some((s) => s !== step && s.preference < step.preference);
        if (!st.claimedBy && (!better || Date.now() >= deadline)) {
          st.claimedBy = step;
          o.onClaim?.(step.technique);
          return true;
        }
        let timer: NodeJS.Timeout | undefined;
        const left = deadline - Date.now();
        await Promise.race([
          changed,
          ...(left > 0 && !st.claimedBy ? [new Promise<void>((r) => (timer = setTimeout(r, left)))] : []),
        ]);
        clearTimeout(timer);
      }
    };

  const runStep = async (step: PlanStep, i: number): Promise<PathResult | null> => {
    const signal = AbortSignal.any([controllers[i]!.signal, o.signal]);
    const technique = o.techniques.get(step.technique);
    const out = outcomes[i]!;
    try {
      if (step.holdMs > 0) await sleep(step.holdMs, signal);
      if (!technique) throw new NatpunchError('BAD_ARGUMENT', `no module for technique ${step.technique}`);
      if (st.winner || signal.aborted) return null;
      out.started = true;
      const started = Date.now();
      o.ctx.progress({ phase: 'technique-start', technique: step.technique, holdMs: step.holdMs });
      try {
        const r = await technique.run(
          {
            ...o.ctx,
            claim: claimFor(step, signal),
            unclaim: () => {
              if (st.claimedBy === step) {
                st.claimedBy = null;
                notify();
              }
            },
          },
          signal,
        );
        out.ok = true;
        out.ms = Date.now() - started;
        o.ctx.progress({ phase: 'technique-end', technique: step.technique, ok: true, ms: out.ms });
        return r;
      } catch (err) {
        out.ms = Date.now() - started;
        if (isNatpunchError(err) && (err.code === 'HANDSHAKE_FAILED' || err.code === 'NOT_ALLOWED')) decisive ??= err;
        if (isNatpunchError(err) && (err.code === 'NOT_ROOT' || err.code === 'ADDON_UNAVAILABLE'))
          localFaults.push(err);
        out.error =
          isNatpunchError(err, 'ABORTED') && st.winner
            ? `stopped: ${(st.winner as PathResult).technique} won`
            : (err as Error).message;
        o.ctx.progress({ phase: 'technique-end', technique: step.technique, ok: false, ms: out.ms, error: out.error });
        throw err;
      }
    } finally {
      running.delete(step);
      if (st.claimedBy === step && !out.ok) st.claimedBy = null;
      notify();
    }
  };

  try {
    let won: (r: PathResult) => void = () => {};
    const first = new Promise<PathResult>((r) => (won = r));
    const results = o.plan.steps.map((step, i) =>
      runStep(step, i).then(
        (r) => {
          if (!r) return;
          if (st.winner) {
            // Lost by a hair: the race owns it and releases it (one owner).
            void r.session.close().catch(() => {});
            r.release?.();
            return;
          }
          st.winner = r;
          abortAll(new NatpunchError('ABORTED', `${r.technique} found the path`), i);
          won(r);
        },
        () => {},
      ),
    );
    // The winner is returned at once; the aborted steps unwind in the background (a late path is closed above).
    await Promise.race([first, Promise.all(results)]);
    if (st.winner) return st.winner;
    if (o.signal.aborted) {
      const reason = o.signal.reason;
      if (isNatpunchError(reason, 'TIMEOUT')) {
        throw new NatpunchError(
          'TIMEOUT',
          `${raceFailure(o, outcomes).message} (gave up after ${Date.now() - t0} ms)`,
          { cause: reason, details: raceFailure(o, outcomes).details },
        );
      }
      throw new NatpunchError('ABORTED', 'connection attempt aborted', { cause: reason });
    }
    if (decisive) throw decisive;
    if (localFaults.length > 0 && localFaults.length === outcomes.filter((x) => x.started).length)
      throw localFaults[0]!;
    throw raceFailure(o, outcomes);
  } finally {
    o.signal.removeEventListener('abort', onAbort);
  }
}
