// STUN Binding: `natpunch serve` against coturn's turnserver (--stun-only), interleaved in one invocation
// (coturn, natpunch, coturn, natpunch, ... BENCH_RUNS each), each run in its own network namespace, the server pinned
// to its cores with taskset, the load from a C generator (bench/loadgen/stun-load.c: sendmmsg/recvmmsg, closed loop
// with a window of requests in flight, its own CPU reported) on another core. Two configurations: the server on one core (natpunch --workers 1, coturn
// --relay-threads 1) and on two (--workers 2, --relay-threads 2).
//
// Per run: responses/s, loss (1 - valid responses / requests), server CPU µs per response (/proc/PID/stat), the
// generator's CPU share. Per configuration: medians, and natpunch/coturn as the median and min–max of the pairwise
// ratios of run i. The window (BENCH_STUN_WINDOW requests unanswered at most) keeps either server saturated, so
// responses/s is its capacity, while the generator sends only what gets answered (plus what is lost) and so stays
// well below its core; BENCH_STUN_PPS caps the rate for a fixed-rate run. Writes bench/results/stun.{json,md}.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildLoadgen,
  CORES,
  coreCount,
  coturnArgs,
  Netns,
  NATPUNCH_BIN,
  RUNS,
  runToEnd,
  stopPid,
  waitFor,
} from './lib/harness.js';
import { machine, median, processCpuSeconds, ratios, writeResults } from './lib/report.js';

/** Send-rate cap (0: none; the window alone keeps the server saturated). */
const PPS = Number(process.env.BENCH_STUN_PPS ?? 0);
/** Requests in flight at most: enough to keep either server busy for several milliseconds. */
const WINDOW = Number(process.env.BENCH_STUN_WINDOW ?? 1024);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 1);
const SOCKETS = Number(process.env.BENCH_STUN_SOCKETS ?? 16);
const PORT = 3478;
/** The generator must not be the bottleneck: a run where it used more than this share of its core is flagged. */
const LOADGEN_MAX_CPU = 0.8;

interface Run {
  server: 'coturn' | 'natpunch';
  /** natpunch runs: the workers and UDP implementation it reported (the bench checks what actually ran). */
  natpunchWorkers?: number | null;
  natpunchUdp?: string | null;
  cores: string;
  run: number;
  sent: number;
  valid: number;
  responsesPerSecond: number;
  loss: number;
  serverCpuSeconds: number;
  serverCpuUsPerResponse: number;
  loadgenCpuShare: number;
  loadgenSaturated: boolean;
}

async function oneRun(loadgen: string, server: Run['server'], cores: string, run: number): Promise<Run> {
  const ns = new Netns('stun');
  const logDir = mkdtempSync(join(tmpdir(), 'natpunch-bench-coturn-'));
  const workers = coreCount(cores);
  const child =
    server === 'natpunch'
      ? ns.spawn(
          process.execPath,
          [
            NATPUNCH_BIN,
            'serve',
            '--no-relay',
            '--port',
            String(PORT),
            '--address',
            '127.0.0.1',
            '--workers',
            String(workers),
            '--json',
          ],
          cores,
        )
      : ns.spawn('turnserver', coturnArgs(PORT, { stunOnly: true, threads: workers, logDir }), cores);
  // What natpunch says it runs (implementation, workers), from its --json "listening" line.
  let listening = '';
  child.stdout!.on('data', (d: Buffer) => (listening += d.toString()));
  try {
    const probe = async () => {
      const r = await runToEnd(ns.spawn(loadgen, ['127.0.0.1', String(PORT), '0.05', '200', '1']), 5000);
      return r.code === 0 && JSON.parse(r.stdout).valid > 0;
    };
    await waitFor(probe, `${server} in ${ns.name}`);
    // Warm-up (JIT, caches, socket buffers) at the same rate, not counted.
    await runToEnd(
      ns.spawn(
        loadgen,
        ['127.0.0.1', String(PORT), String(WARMUP_SECONDS), String(PPS), String(SOCKETS), String(WINDOW)],
        CORES.load,
      ),
      (WARMUP_SECONDS + 30) * 1000,
    );
    const cpu0 = processCpuSeconds(child.pid!);
    const r = await runToEnd(
      ns.spawn(
        loadgen,
        ['127.0.0.1', String(PORT), String(SECONDS), String(PPS), String(SOCKETS), String(WINDOW)],
        CORES.load,
      ),
      (SECONDS + 30) * 1000,
    );
    const cpu = processCpuSeconds(child.pid!) - cpu0;
    const out = JSON.parse(r.stdout) as {
      sent: number;
      valid: number;
      seconds: number;
      elapsed: number;
      cpu_user: number;
      cpu_sys: number;
    };
    const loadgenCpuShare = (out.cpu_user + out.cpu_sys) / out.elapsed;
    const ran =
      server === 'natpunch'
        ? (JSON.parse(listening.split('\n').find((l) => l.startsWith('{')) ?? '{}') as {
            workers?: number;
            udpImplementation?: string;
          })
        : {};
    return {
      server,
      cores,
      ...(server === 'natpunch'
        ? { natpunchWorkers: ran.workers ?? null, natpunchUdp: ran.udpImplementation ?? null }
        : {}),
      run,
      sent: out.sent,
      valid: out.valid,
      responsesPerSecond: Math.round(out.valid / out.seconds),
      loss: out.sent > 0 ? 1 - out.valid / out.sent : 1,
      serverCpuSeconds: cpu,
      serverCpuUsPerResponse: out.valid > 0 ? (cpu * 1e6) / out.valid : NaN,
      loadgenCpuShare,
      loadgenSaturated: loadgenCpuShare > LOADGEN_MAX_CPU,
    };
  } finally {
    await stopPid(child);
    ns.close();
    rmSync(logDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const start = machine();
  const loadgen = buildLoadgen('stun-load');
  const runs: Run[] = [];
  const configs = [CORES.server1, CORES.server2];
  for (const cores of configs) {
    for (let i = 0; i < RUNS; i++) {
      // Interleaved: A B A B ..., so drift in the machine's state hits both alike.
      for (const server of ['coturn', 'natpunch'] as const) {
        const r = await oneRun(loadgen, server, cores, i);
        runs.push(r);
        console.log(JSON.stringify(r));
      }
    }
  }
  const summary = configs.map((cores) => {
    const of = (s: Run['server']) => runs.filter((r) => r.cores === cores && r.server === s);
    const [c, n] = [of('coturn'), of('natpunch')];
    return {
      cores,
      coturn: {
        responsesPerSecond: median(c.map((r) => r.responsesPerSecond)),
        loss: median(c.map((r) => r.loss)),
        cpuUsPerResponse: median(c.map((r) => r.serverCpuUsPerResponse)),
      },
      natpunch: {
        responsesPerSecond: median(n.map((r) => r.responsesPerSecond)),
        loss: median(n.map((r) => r.loss)),
        cpuUsPerResponse: median(n.map((r) => r.serverCpuUsPerResponse)),
      },
      rateRatio: ratios(
        n.map((r) => r.responsesPerSecond),
        c.map((r) => r.responsesPerSecond),
      ),
      cpuRatio: ratios(
        n.map((r) => r.serverCpuUsPerResponse),
        c.map((r) => r.serverCpuUsPerResponse),
      ),
      loadgenMaxCpuShare: Math.max(...[...c, ...n].map((r) => r.loadgenCpuShare)),
    };
  });
  const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  writeResults('stun', {
    title: 'STUN Binding: natpunch serve vs coturn (interleaved, private netns, pinned)',
    start,
    config: {
      maxPps: PPS,
      window: WINDOW,
      seconds: SECONDS,
      sockets: SOCKETS,
      runs: RUNS,
      cores: CORES,
      loadgen: 'bench/loadgen/stun-load.c',
    },
    summary,
    runs,
    table: [
      [
        'server cores',
        'coturn resp/s',
        'natpunch resp/s',
        'ratio median (min–max)',
        'coturn loss',
        'natpunch loss',
        'coturn µs/resp',
        'natpunch µs/resp',
        'loadgen max CPU',
      ],
      ...summary.map((s) => [
        s.cores,
        String(s.coturn.responsesPerSecond),
        String(s.natpunch.responsesPerSecond),
        `${f(s.rateRatio.median, 2)} (${f(s.rateRatio.min, 2)}–${f(s.rateRatio.max, 2)})`,
        `${f(s.coturn.loss * 100)}%`,
        `${f(s.natpunch.loss * 100)}%`,
        f(s.coturn.cpuUsPerResponse),
        f(s.natpunch.cpuUsPerResponse),
        `${f(s.loadgenMaxCpuShare * 100, 0)}%`,
      ]),
    ],
    notes: [
      `Closed loop: at most ${WINDOW} Binding requests unanswered (one unanswered after 50 ms counts as lost), ${PPS > 0 ? `at most ${PPS}/s` : 'no rate cap'}, for ${SECONDS} s from ${SOCKETS} source ports; ${RUNS} runs per server per configuration, interleaved.`,
      'µs/resp: server CPU (user+system, all threads, /proc/PID/stat) divided by valid responses.',
      `A run whose generator used more than ${LOADGEN_MAX_CPU * 100}% of its core is marked loadgenSaturated in the JSON and is not a capacity figure.`,
      'With 2 cores in total, the two-core configuration shares a core with the generator; use a machine with 3+ cores (BENCH_SERVER_CORES_2, BENCH_LOAD_CORE).',
    ],
  });
}

await main();
