// Rendezvous server: memory per registered peer and introductions per second, measured from outside. `natpunch serve`
// (rendezvous on, its default per-address rate limits on, --workers 1: one core) runs pinned in a private network
// namespace; a separate load process (bench/lib/rendezvous-load.ts) on another core registers peers with real
// Ed25519 signatures from many source addresses, pausing at 10k and 100k registered peers while the server's RSS is
// read from /proc/PID/status (VmRSS; after 100k every second for the replay window while the peers refresh, median
// and max), then sends signed CONNECTs at a fixed offered rate, counts the initiators' CONNECT_NOTIFYs, and reads the
// RSS once more when they end (the replay cache then holds every CONNECT of the last window).
// BENCH_RUNS runs. Writes bench/results/rendezvous.{json,md}.
import { createWriteStream, existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BENCH_DIR, CORES, Netns, NATPUNCH_BIN, stopPid, waitFor } from './lib/harness.js';
import { ensureBuilt } from './lib/build.js';
import { machine, median, processCpuSeconds, writeResults } from './lib/report.js';

const PORT = 3478;
const PEERS = Number(process.env.BENCH_RDV_PEERS ?? 100_000);
const MILESTONES = [10_000, 100_000].filter((m) => m <= PEERS);
const ADDRESSES = Number(process.env.BENCH_RDV_ADDRESSES ?? 2000);
const CONNECT_SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECT_RATE = Number(process.env.BENCH_RDV_CONNECT_RATE ?? 8000);
/** The server's replay window (DEFAULT_REPLAY_WINDOW_MS) plus a margin: after it, only registrations remain. */
const SETTLE_MS = Number(process.env.BENCH_RDV_SETTLE_MS ?? 35_000);
/** Runs (each ~80-100 s: 100k registrations, the replay window, the introductions): 3 keep the default under 5 min. */
const RUNS = Number(process.env.BENCH_RDV_RUNS ?? process.env.BENCH_RUNS ?? 3);
/**
 * Profiling aids (off by default): extra node flags for the server (e.g. `--cpu-prof --cpu-prof-dir=/tmp/p`), and
 * BENCH_RDV_HEAPSNAPSHOT=1 writes a heap snapshot of the server (SIGUSR2) once the last milestone's peers are in,
 * BENCH_RDV_HEAPSNAPSHOT=after once the introductions have ended.
 */
const SERVER_NODE_ARGS = (process.env.BENCH_RDV_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
const HEAP_SNAPSHOT = process.env.BENCH_RDV_HEAPSNAPSHOT ?? '';
/** BENCH_RDV_SERVER_OUT=FILE: the server's stdout (e.g. --trace-gc lines) is also written there. */
const SERVER_OUT = process.env.BENCH_RDV_SERVER_OUT;
/**
 * BENCH_RDV_MEMTRACE=1: where the server's RSS goes at each milestone and at the end of the introductions (RSS by
 * mapping, V8's heap spaces used/committed, external memory), from bench/lib/memory-trace.mjs loaded into the
 * server (it only reads /proc/self/smaps and V8's statistics once a second); in the JSON as `memory`.
 */
const MEMTRACE = process.env.BENCH_RDV_MEMTRACE === '1';

/** The trace's latest line (memory-trace.mjs), or undefined. */
function memorySample(file: string): Record<string, unknown> | undefined {
  if (!existsSync(file)) return undefined;
  const lines = readFileSync(file, 'utf8').trim().split('\n');
  return lines.length && lines[lines.length - 1]
    ? (JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>)
    : undefined;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Asks the server for a heap snapshot (node writes Heap.*.heapsnapshot into tmpdir()) and waits until it is written. */
async function heapSnapshot(pid: number): Promise<void> {
  const before = new Set(readdirSync(tmpdir()));
  process.kill(pid, 'SIGUSR2');
  await waitFor(
    async () => {
      const f = readdirSync(tmpdir()).find((n) => n.endsWith('.heapsnapshot') && !before.has(n));
      if (!f) return false;
      const size = statSync(join(tmpdir(), f)).size;
      await new Promise((r) => setTimeout(r, 1000));
      const done = size > 0 && statSync(join(tmpdir(), f)).size === size;
      if (done) console.error(`heap snapshot: ${join(tmpdir(), f)}`);
      return done;
    },
    'heap snapshot',
    300_000,
  );
}

interface Run {
  run: number;
  rssMiB: Record<string, number>;
  rssSettledMiB: number;
  /** Server CPU seconds from start to the last milestone (registrations, their PINGs, early refreshes). */
  serverCpuSecondsToLastMilestone: number;
  /** RSS sampled every second from the last milestone to the end of the replay window (peers refreshing). */
  rssSteadyMiB: { median: number; max: number; samples: number };
  /** RSS when the introduction phase has ended (its replay-cache entries and connection records still held). */
  rssAfterIntroductionsMiB: number;
  registered: number;
  registerSeconds: number;
  introductionsPerSecond: number;
  connectsSent: number;
  introductions: number;
  serverCpuShareDuringConnects: number;
  serverCpuUsPerIntroduction: number;
  loadCpuShareDuringConnects: number;
  errors: Record<string, number>;
  /** With BENCH_RDV_MEMTRACE=1: the server's memory split at each milestone and after the introductions. */
  memory?: Record<string, Record<string, unknown> | undefined>;
  /** The server's own rendezvous counters, from its "serve: stopped" log line. */
  serverStats?: Record<string, number>;
  /** Everything the load process reported (skipped CONNECTs, acks, refreshes, signing time). */
  load: Record<string, unknown>;
}

async function oneRun(run: number): Promise<Run> {
  const ns = new Netns('rdv');
  const traceFile = join(tmpdir(), `natpunch-rdv-memtrace-${process.pid}-${run}.jsonl`);
  rmSync(traceFile, { force: true });
  const memory: Record<string, Record<string, unknown> | undefined> = {};
  if (MEMTRACE) process.env.NATPUNCH_MEMTRACE_FILE = traceFile;
  const server = ns.spawn(
    process.execPath,
    [
      ...SERVER_NODE_ARGS,
      ...(MEMTRACE ? ['--import', join(BENCH_DIR, 'lib', 'memory-trace.mjs')] : []),
      ...(HEAP_SNAPSHOT !== '' ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${tmpdir()}`] : []),
      NATPUNCH_BIN,
      'serve',
      '--port',
      String(PORT),
      '--address',
      '127.0.0.1',
      '--workers',
      '1',
      '--json',
    ],
    CORES.server1,
  );
  let serverOut = '';
  let serverLog = '';
  server.stdout!.on('data', (d: Buffer) => (serverOut += d.toString()));
  if (SERVER_OUT) server.stdout!.pipe(createWriteStream(SERVER_OUT));
  server.stderr!.on('data', (d: Buffer) => (serverLog += d.toString()));
  const load = ns.spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(BENCH_DIR, 'lib', 'rendezvous-load.ts'),
      String(PORT),
      String(PEERS),
      String(ADDRESSES),
      MILESTONES.join(','),
      String(CONNECT_SECONDS),
      String(CONNECT_RATE),
    ],
    CORES.load,
    { stdin: true },
  );
  try {
    await waitFor(async () => serverOut.includes('"listening"'), 'natpunch serve');
    const rss: Record<string, number> = { idle: rssMiB(server.pid!) };
    if (MEMTRACE) {
      await waitFor(async () => existsSync(traceFile), 'memory trace', 5000);
      memory.idle = memorySample(traceFile);
    }
    const cpuAtStart = processCpuSeconds(server.pid!);
    let cpuAtLastMilestone = NaN;
    let out = '';
    let settled = NaN;
    const steady: number[] = [];
    let afterIntroductions = NaN;
    /** The load's result line has arrived (it exits then, maybe while a heap snapshot is still being written). */
    let finished = false;
    let cpuAtEnd = 0;
    let wallAtEnd = 0;
    let cpuAtConnects = 0;
    let connectsStartedAt = 0;
    const done = new Promise<string>((resolve, reject) => {
      load.stderr!.on('data', (d: Buffer) => process.stderr.write(d));
      load.stdout!.on('data', async (d: Buffer) => {
        out += d.toString();
        let nl: number;
        while ((nl = out.indexOf('\n')) >= 0) {
          const line = out.slice(0, nl);
          out = out.slice(nl + 1);
          const m = /^MILESTONE (\d+)/.exec(line);
          if (m) {
            rss[m[1]!] = rssMiB(server.pid!);
            if (MEMTRACE) memory[m[1]!] = memorySample(traceFile);
            if (Number(m[1]) === MILESTONES[MILESTONES.length - 1]) {
              cpuAtLastMilestone = processCpuSeconds(server.pid!);
              if (HEAP_SNAPSHOT === '1') await heapSnapshot(server.pid!);
              // RSS moves with the collector (a sample in a registration burst can sit anywhere on the old
              // generation's sawtooth): sampled every second while the peers refresh, median and max reported.
              const end = performance.now() + SETTLE_MS;
              while (performance.now() < end) {
                await new Promise((r) => setTimeout(r, Math.min(1000, Math.max(0, end - performance.now()))));
                steady.push(rssMiB(server.pid!));
              }
              settled = steady[steady.length - 1]!;
            }
            load.stdin!.write('\n');
          } else if (line === 'CONNECTS') {
            // The load has signed its CONNECTs and stopped refreshing: the introduction phase starts now.
            cpuAtConnects = processCpuSeconds(server.pid!);
            connectsStartedAt = performance.now();
            load.stdin!.write('\n');
          } else if (line.startsWith('{')) {
            finished = true;
            afterIntroductions = rssMiB(server.pid!);
            if (MEMTRACE) memory.afterIntroductions = memorySample(traceFile);
            cpuAtEnd = processCpuSeconds(server.pid!);
            wallAtEnd = performance.now();
            if (HEAP_SNAPSHOT === 'after') await heapSnapshot(server.pid!);
            resolve(line);
          }
        }
      });
      load.once('exit', (code) => {
        if (!finished) reject(new Error(`load process exited with ${code}`));
      });
    });
    const result = JSON.parse(await done) as {
      registered: number;
      registerSeconds: number;
      connectsSent: number;
      introductions: number;
      introductionsPerSecond: number;
      connectSeconds: number;
      loadCpuShareDuringConnects: number;
      errors: Record<string, number>;
    };
    const serverCpu = cpuAtEnd - cpuAtConnects;
    const wall = (wallAtEnd - connectsStartedAt) / 1000;
    await stopPid(server);
    const stopped = serverLog.split('\n').find((l) => l.includes('"serve: stopped"'));
    const serverStats = stopped
      ? (JSON.parse(stopped) as { rendezvous?: Record<string, number> }).rendezvous
      : undefined;
    return {
      ...(MEMTRACE ? { memory } : {}),
      ...(serverStats ? { serverStats } : {}),
      run,
      rssMiB: rss,
      rssSettledMiB: settled,
      serverCpuSecondsToLastMilestone: cpuAtLastMilestone - cpuAtStart,
      rssSteadyMiB: { median: median(steady), max: Math.max(...steady), samples: steady.length },
      rssAfterIntroductionsMiB: afterIntroductions,
      registered: result.registered,
      registerSeconds: result.registerSeconds,
      introductionsPerSecond: Math.round(result.introductionsPerSecond),
      connectsSent: result.connectsSent,
      introductions: result.introductions,
      serverCpuShareDuringConnects: serverCpu / wall,
      serverCpuUsPerIntroduction: result.introductions > 0 ? (serverCpu * 1e6) / result.introductions : NaN,
      loadCpuShareDuringConnects: result.loadCpuShareDuringConnects,
      errors: result.errors,
      load: result as unknown as Record<string, unknown>,
    };
  } finally {
    await stopPid(load);
    await stopPid(server);
    ns.close();
    rmSync(traceFile, { force: true });
  }
}

type MemorySample = {
  byMapping: Record<string, number>;
  heapSpaces: Record<string, { used: number; committed: number }>;
  external: number;
};

/** With BENCH_RDV_MEMTRACE=1: the RSS at the last milestone split by where it goes, per run. */
function memoryRows(runs: Run[], at: string): string[][] {
  const samples = runs.map((r) => r.memory?.[at] as MemorySample | undefined);
  if (!samples.some(Boolean)) return [];
  const row = (label: string, pick: (m: MemorySample) => number | undefined): string[] => {
    const values = samples.map((m) => (m ? pick(m) : undefined) ?? NaN);
    return [`${label} at ${at} peers (MiB)`, median(values).toFixed(1), values.map((v) => v.toFixed(1)).join(', ')];
  };
  return [
    row("… the node binary's pages", (m) => m.byMapping.node),
    row('… glibc malloc heap', (m) => m.byMapping.mallocHeap),
    row('… V8 young generation committed', (m) => m.heapSpaces.new?.committed),
    row('… V8 old space used', (m) => m.heapSpaces.old?.used),
    row('… V8 old space committed', (m) => m.heapSpaces.old?.committed),
    row('… V8 large objects (hash tables) committed', (m) => m.heapSpaces.large_object?.committed),
    row('… external (ArrayBuffers etc.)', (m) => m.external),
  ];
}

async function main(): Promise<void> {
  const serverFrom = ensureBuilt();
  const start = machine();
  const runs: Run[] = [];
  for (let i = 0; i < RUNS; i++) {
    const r = await oneRun(i);
    runs.push(r);
    console.log(JSON.stringify(r));
  }
  const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  const summary = {
    rssMiB: Object.fromEntries(
      ['idle', ...MILESTONES.map(String)].map((k) => [k, median(runs.map((r) => r.rssMiB[k]!))]),
    ),
    rssSettledMiB: median(runs.map((r) => r.rssSettledMiB)),
    rssSteadyMedianMiB: median(runs.map((r) => r.rssSteadyMiB.median)),
    rssSteadyMaxMiB: Math.max(...runs.map((r) => r.rssSteadyMiB.max)),
    rssAfterIntroductionsMiB: median(runs.map((r) => r.rssAfterIntroductionsMiB)),
    introductionsPerSecond: median(runs.map((r) => r.introductionsPerSecond)),
    introductionsMinMax: [
      Math.min(...runs.map((r) => r.introductionsPerSecond)),
      Math.max(...runs.map((r) => r.introductionsPerSecond)),
    ],
    serverCpuUsPerIntroduction: median(runs.map((r) => r.serverCpuUsPerIntroduction)),
    loadMaxCpuShare: Math.max(...runs.map((r) => r.loadCpuShareDuringConnects)),
  };
  writeResults('rendezvous', {
    title: 'Rendezvous server: RSS per registered peer and introductions/s (separate signed load, rate limits on)',
    start,
    config: {
      serverFrom,
      peers: PEERS,
      addresses: ADDRESSES,
      connectSeconds: CONNECT_SECONDS,
      offeredConnectsPerSecond: CONNECT_RATE,
      settleMs: SETTLE_MS,
      runs: RUNS,
      cores: CORES,
    },
    summary,
    runs,
    table: [
      ['measure', 'median', 'runs'],
      ...['idle', ...MILESTONES.map(String)].map((k) => [
        `RSS at ${k === 'idle' ? 'start' : `${k} peers`} (MiB)`,
        f(summary.rssMiB[k]!),
        runs.map((r) => f(r.rssMiB[k]!)).join(', '),
      ]),
      [
        `RSS with ${PEERS} peers refreshing, sampled each second for ${SETTLE_MS / 1000} s: median (MiB)`,
        f(summary.rssSteadyMedianMiB),
        runs.map((r) => f(r.rssSteadyMiB.median)).join(', '),
      ],
      [`… and max (MiB)`, `${f(summary.rssSteadyMaxMiB)} (max)`, runs.map((r) => f(r.rssSteadyMiB.max)).join(', ')],
      [
        `RSS at ${PEERS} peers after the replay window (MiB)`,
        f(summary.rssSettledMiB),
        runs.map((r) => f(r.rssSettledMiB)).join(', '),
      ],
      [
        `RSS at ${PEERS} peers after the introductions (MiB)`,
        f(summary.rssAfterIntroductionsMiB),
        runs.map((r) => f(r.rssAfterIntroductionsMiB)).join(', '),
      ],
      [
        'introductions/s',
        String(summary.introductionsPerSecond),
        runs.map((r) => String(r.introductionsPerSecond)).join(', '),
      ],
      [
        'server CPU µs per introduction',
        f(summary.serverCpuUsPerIntroduction),
        runs.map((r) => f(r.serverCpuUsPerIntroduction)).join(', '),
      ],
      [
        'server CPU share during introductions',
        `${f(median(runs.map((r) => r.serverCpuShareDuringConnects)) * 100, 0)}%`,
        runs.map((r) => `${f(r.serverCpuShareDuringConnects * 100, 0)}%`).join(', '),
      ],
      [
        'load process CPU share during connects',
        `${f(summary.loadMaxCpuShare * 100, 0)}% (max)`,
        runs.map((r) => `${f(r.loadCpuShareDuringConnects * 100, 0)}%`).join(', '),
      ],
      ...memoryRows(runs, String(MILESTONES[MILESTONES.length - 1])),
    ],
    notes: [
      `${PEERS} peers registered from ${ADDRESSES} source addresses (127.1.x.y) at ≤ 15 requests/s per address (the server limits at 20); REGISTER and CONNECT carry real Ed25519 signatures.`,
      `Introductions: signed CONNECTs (signed before the phase, padded as natpunch's client pads them) offered at ${CONNECT_RATE}/s for ${CONNECT_SECONDS} s; one introduction = one CONNECT_NOTIFY received by the initiator (errors are counted apart, in the JSON). Responders acknowledge their notifications. Refreshes run during the registration and memory phases and stop for the introduction phase, so its server CPU is the introductions'.`,
      "Server CPU µs per introduction = the server process's CPU time (/proc/PID/stat) in the introduction phase / introductions: the figure to compare across machines and runs; introductions/s is a capacity only when the server's CPU share is near 100% and the load's is not.",
      "If the load process's CPU share is near 100% the offered rate was not reached; the server's CPU share says whether the server was saturated.",
    ],
  });
}

await main();
