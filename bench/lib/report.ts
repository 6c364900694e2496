// What every benchmark records next to its numbers: when, on what machine, and how loaded the machine was at the
// start and the end (a run on a loaded machine is a smoke test, not a result), plus the raw runs.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'results');

export interface MachineInfo {
  date: string;
  nproc: number;
  cpuModel: string;
  kernel: string;
  node: string;
  loadavg: number[];
}

export function machine(): MachineInfo {
  return {
    date: new Date().toISOString(),
    nproc: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    kernel: os.release(),
    node: process.version,
    loadavg: os.loadavg(),
  };
}

/**
 * The machine counts as loaded when the 1-minute load average exceeds 10% of a core per core, or the caller says the
 * machine is shared (BENCH_SHARED=1). Loaded results are written, marked, and must not be quoted.
 */
export function isLoaded(start: MachineInfo, end: MachineInfo): boolean {
  if (process.env.BENCH_SHARED === '1') return true;
  return Math.max(start.loadavg[0]!, end.loadavg[0]!) > 0.1 * start.nproc + 0.5;
}

/** Median of a list (the middle element; the upper one of two for even lengths). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

/** Pairwise ratios a[i]/b[i] of interleaved runs: median and min–max. */
export function ratios(a: number[], b: number[]): { median: number; min: number; max: number; pairs: number[] } {
  const pairs = a.map((x, i) => x / b[i]!).filter((r) => Number.isFinite(r));
  return { median: median(pairs), min: Math.min(...pairs), max: Math.max(...pairs), pairs };
}

/** CPU time (user + system, seconds) a process has used so far, from /proc/PID/stat (fields 14 and 15). */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / CLOCK_TICKS;
}
/** USER_HZ: 100 on every Linux architecture natpunch runs on (sysconf(_SC_CLK_TCK)). */
const CLOCK_TICKS = 100;

export function writeResults(
  name: string,
  r: {
    title: string;
    start: MachineInfo;
    config: unknown;
    summary: unknown;
    runs: unknown;
    table: string[][];
    notes?: string[];
  },
): void {
  const end = machine();
  const loaded = isLoaded(r.start, end);
  mkdirSync(RESULTS_DIR, { recursive: true });
  const json = {
    name,
    title: r.title,
    loaded,
    machine: { ...r.start, loadavgStart: r.start.loadavg, loadavgEnd: end.loadavg, dateEnd: end.date },
    config: r.config,
    summary: r.summary,
    runs: r.runs,
    notes: r.notes ?? [],
  };
  writeFileSync(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(json, null, 2)}\n`);
  const fmt = (row: string[]) => `| ${row.join(' | ')} |`;
  const md = [
    `# ${r.title}`,
    '',
    loaded
      ? `**LOADED MACHINE — smoke run, not a result.** Load average ${r.start.loadavg.map((x) => x.toFixed(2)).join(' ')} at start, ${end.loadavg.map((x) => x.toFixed(2)).join(' ')} at end on ${r.start.nproc} cores.`
      : `Unloaded run. Load average ${r.start.loadavg.map((x) => x.toFixed(2)).join(' ')} at start, ${end.loadavg.map((x) => x.toFixed(2)).join(' ')} at end.`,
    '',
    `${r.start.date} — ${r.start.nproc} × ${r.start.cpuModel}, Linux ${r.start.kernel}, Node ${r.start.node}.`,
    '',
    fmt(r.table[0]!),
    fmt(r.table[0]!.map(() => '---')),
    ...r.table.slice(1).map(fmt),
    '',
    ...(r.notes ?? []).map((n) => `- ${n}`),
    '',
    `Raw runs: \`bench/results/${name}.json\`.`,
    '',
  ].join('\n');
  writeFileSync(join(RESULTS_DIR, `${name}.md`), md);
  console.log(md);
}
