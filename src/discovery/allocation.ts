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

export function analyseAllocation(samples: Array<{ local: number; external: number }>): AllocationReport {
  if (samples.length < MIN_ALLOCATION_SAMPLES) return { pattern: 'unknown', samples };
  if (samples.every((s) => s.local === s.external)) return { pattern: 'preserving', samples };
  const steps: number[] = [];
  for (let i = 1; i < samples.length; i++) steps.push(samples[i]!.external - samples[i - 1]!.external);
  const sorted = [...steps].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  // A sequential allocator moves by a small steady step; a random one jumps by thousands.
  const near = steps.filter((s) => s !== 0 && Math.abs(s - median) <= SEQUENTIAL_TOLERANCE).length;
  if (median !== 0 && Math.abs(median) <= 64 && near >= Math.ceil(steps.length * 0.6)) {
    return { pattern: 'sequential', delta: median, samples };
  }
  return { pattern: 'random', samples };
}
