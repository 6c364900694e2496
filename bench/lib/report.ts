// What every benchmark records next to its numbers: when, on what machine, and how loaded the machine was at the
// start and the end (a run on a loaded machine is a smoke test, not a result), plus the raw runs.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
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
  /** CPU time the whole machine had been busy (all cores, /proc/stat) when this was taken; seconds. */
  busySeconds: number;
  /** CPU time this bench and every process it started had used by then (see ownTreeCpuSeconds); seconds. */
  ownSeconds: number;
  /** process.hrtime in seconds, for the wall time between two snapshots. */
  at: number;
}

export function machine(): MachineInfo {
  return {
    date: new Date().toISOString(),
    nproc: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    kernel: os.release(),
    node: process.version,
    loadavg: os.loadavg(),
    busySeconds: machineBusySeconds(),
    ownSeconds: ownTreeCpuSeconds(),
    at: Number(process.hrtime.bigint()) / 1e9,
  };
}

/** Seconds the machine's CPUs spent busy since boot: /proc/stat's "cpu" line minus idle and iowait. */
export function machineBusySeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already inside user/nice).
    const busy = f.slice(0, 8).reduce((a, b) => a + b, 0) - f[3]! - f[4]!;
    return busy / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/**
 * CPU seconds used by this process and everything it started: its own user+system time, its reaped children's
 * (cutime/cstime, which include theirs), and every live descendant's (found through /proc/PID/stat's parent field)
 * with their reaped children. The kernel's ksoftirqd threads count as the bench's too: when loopback traffic is heavy
 * they finish the packet processing the bench's own processes started, and on a quiet machine nothing else feeds
 * them. What is left of the machine's busy time is other people's.
 */
export function ownTreeCpuSeconds(root = process.pid): number {
  const parent = new Map<number, number>();
  const cpu = new Map<number, number>();
  let names: string[] = [];
  try {
    names = readdirSync('/proc');
  } catch {
    return NaN;
  }
  for (const name of names) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const stat = readStat(pid);
    if (!stat) continue;
    const f = stat.fields;
    parent.set(pid, stat.comm.startsWith('ksoftirqd/') ? root : Number(f[1]));
    cpu.set(pid, (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / CLOCK_TICKS);
  }
  let total = 0;
  for (const [pid, seconds] of cpu) {
    for (let p: number | undefined = pid, hops = 0; p !== undefined && p > 1 && hops < 64; hops++) {
      if (p === root) {
        total += seconds;
        break;
      }
      p = parent.get(p);
    }
  }
  return total;
}

/**
 * /proc/PID/stat: the command name, and the fields after it (index 0 is the state, 1 the parent, 11.. utime stime
 * cutime cstime).
 */
function readStat(pid: number): { comm: string; fields: string[] } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const end = stat.lastIndexOf(')');
    return { comm: stat.slice(stat.indexOf('(') + 1, end), fields: stat.slice(end + 2).split(' ') };
  } catch {
    return null;
  }
}

/**
 * Other processes' CPU during the bench, as a share of the whole machine: the busy time /proc/stat counted between
 * the two snapshots minus what this bench's own process tree used. The load average is no use here: it still counts
 * the previous bench's own servers for minutes after they exit.
 */
export function othersCpuShare(start: MachineInfo, end: MachineInfo): number {
  const wall = end.at - start.at;
  if (!(wall > 0)) return NaN;
  const others = end.busySeconds - start.busySeconds - (end.ownSeconds - start.ownSeconds);
  return Math.max(0, others) / (wall * start.nproc);
}

/** Other processes may use this share of the machine's CPU during a bench before its results count as loaded. */
export const OTHERS_CPU_MAX = 0.05;

/**
 * The machine counts as loaded when processes other than the bench's own used more than OTHERS_CPU_MAX of its CPU
 * between the two snapshots (othersCpuShare), or the caller says the machine is shared (BENCH_SHARED=1). Loaded
 * results are written, marked, and must not be quoted. Where /proc cannot be read, the 1-minute load average
 * decides, as before.
 */
export function isLoaded(start: MachineInfo, end: MachineInfo): boolean {
  if (process.env.BENCH_SHARED === '1') return true;
  const share = othersCpuShare(start, end);
  if (Number.isFinite(share)) return share > OTHERS_CPU_MAX;
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
const pct = (x: number) => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : 'unknown');

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
  const others = othersCpuShare(r.start, end);
  mkdirSync(RESULTS_DIR, { recursive: true });
  const json = {
    name,
    title: r.title,
    loaded,
    machine: {
      ...r.start,
      loadavgStart: r.start.loadavg,
      loadavgEnd: end.loadavg,
      dateEnd: end.date,
      othersCpuShare: others,
    },
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
      ? `**LOADED MACHINE — smoke run, not a result.** Other processes used ${pct(others)} of the machine's CPU during the run (limit ${pct(OTHERS_CPU_MAX)}); load average ${r.start.loadavg.map((x) => x.toFixed(2)).join(' ')} at start, ${end.loadavg.map((x) => x.toFixed(2)).join(' ')} at end on ${r.start.nproc} cores.`
      : `Quiet machine: other processes used ${pct(others)} of its CPU during the run. Load average ${r.start.loadavg.map((x) => x.toFixed(2)).join(' ')} at start, ${end.loadavg.map((x) => x.toFixed(2)).join(' ')} at end (it includes the bench's own servers).`,
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
