/**
 * Port allocation pattern from several fresh mappings in a row (the input to port prediction).
 * Samples are [localPort, externalPort] pairs in the order the mappings were created.
 */
export type AllocationPattern = 'preserving' | 'sequential' | 'random' | 'unknown';

export interface AllocationReport {
  pattern: AllocationPattern;
  /** For 'sequential': the typical step between consecutive external ports (may be negative). */
  delta?: number;
  samples: Array<{ local: number; external: number }>;
}

/** Fewer samples than this cannot tell a pattern from chance. */
export const MIN_ALLOCATION_SAMPLES = 3;
/** Consecutive steps within this distance of the typical step still count as sequential (other hosts' flows). */
export const SEQUENTIAL_TOLERANCE = 4;
/** A sequential allocator's step is small; anything larger is not predictable by stepping. */
export const MAX_SEQUENTIAL_DELTA = 64;
/**
 * Sorted fallback: n ports from a sequential allocator, some allocated out of order (a first packet lost and
 * retransmitted) or with other flows in between, still span at most this much per sample. Five random ports over
 * the 64k range span this little with probability ~1e-11.
 */
export const MAX_SPAN_PER_SAMPLE = 16;

function stepsOf(ports: number[]): number[] {
  const out: number[] = [];
  for (let i = 1; i < ports.length; i++) out.push(ports[i]! - ports[i - 1]!);
  return out;
}

/** The most frequent non-zero step (ties: the smaller magnitude), if most steps sit near it. */
function steadyStep(steps: number[]): number | undefined {
  const counts = new Map<number, number>();
  for (const s of steps) if (s !== 0) counts.set(s, (counts.get(s) ?? 0) + 1);
  let best: number | undefined;
  for (const [s, c] of counts) {
    const bc = best === undefined ? -1 : counts.get(best)!;
    if (c > bc || (c === bc && Math.abs(s) < Math.abs(best!))) best = s;
  }
  if (best === undefined || Math.abs(best) > MAX_SEQUENTIAL_DELTA) return undefined;
  const near = steps.filter(
    (s) => s !== 0 && Math.sign(s) === Math.sign(best!) && Math.abs(s - best!) <= SEQUENTIAL_TOLERANCE,
  ).length;
  return near >= Math.ceil(steps.length * 0.6) ? best : undefined;
}

export function analyseAllocation(samples: Array<{ local: number; external: number }>): AllocationReport {
  if (samples.length < MIN_ALLOCATION_SAMPLES) return { pattern: 'unknown', samples };
  if (samples.every((s) => s.local === s.external)) return { pattern: 'preserving', samples };
  const ports = samples.map((s) => s.external);
  const inOrder = stepsOf(ports);
  const delta = steadyStep(inOrder);
  if (delta !== undefined) return { pattern: 'sequential', delta, samples };
  // Loss reorders allocations and other flows take ports in between: judge the set of ports instead.
  const sorted = [...new Set(ports)].sort((a, b) => a - b);
  if (
    sorted.length >= MIN_ALLOCATION_SAMPLES &&
    sorted[sorted.length - 1]! - sorted[0]! <= MAX_SPAN_PER_SAMPLE * (ports.length - 1)
  ) {
    const step = steadyStep(stepsOf(sorted)) ?? Math.min(...stepsOf(sorted));
    const up = inOrder.filter((s) => s > 0).length;
    const down = inOrder.filter((s) => s < 0).length;
    return { pattern: 'sequential', delta: up >= down ? step : -step, samples };
  }
  return { pattern: 'random', samples };
}
