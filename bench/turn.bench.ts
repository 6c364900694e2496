// TURN relay: `natpunch serve --turn` against coturn's turnserver, interleaved in one invocation (coturn, natpunch,
// ... BENCH_RUNS each), each run in a private network namespace, the server pinned to its cores. Load: a C tool
// (bench/loadgen/turn-load.c) that allocates and binds a channel once per client, then sends ChannelData over each
// client's socket and echoes it back from its own peer socket, batched (sendmmsg/recvmmsg), closed loop (a window of
// messages in flight), pinned to the load core, its sends with UDP GSO (see GSO below). Configurations: server on 1
// (and 2) cores × 1 and 10 clients × 100 and 1000-byte messages.
//
// Why not coturn's turnutils_uclient: it reports its transmit time in whole seconds (a 1.4 s run and a 1.9 s run both
// print 1), sends back to back with no window (so what it measures at 10 clients is mostly overflow of socket
// buffers, whose loss then depends on buffer sizes rather than on relay speed), and spends a syscall per datagram,
// so at the servers' rates it is close to its own core's limit. turn-load counts every relayed datagram both ways
// over its exact elapsed time and reports its own CPU.
//
// Per run: relayed packets/s (client→peer datagrams the peer received plus peer→client datagrams back at the
// clients, over the measured seconds), loss (messages sent whose echo did not come back within 100 ms), server CPU µs
// per relayed packet (/proc/PID/stat), and the tool's CPU share of its core. Writes bench/results/turn.{json,md}.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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

const PORT = 3478;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP_SECONDS ?? 1);
const CLIENT_COUNTS = (process.env.BENCH_TURN_CLIENTS ?? '1,10').split(',').map(Number);
const SIZES = (process.env.BENCH_TURN_SIZES ?? '100,1000').split(',').map(Number);
/** One core by default (the acceptance configuration); add `;0-1` for two on a machine with a third core for load. */
const CORE_SETS = (process.env.BENCH_TURN_CORES ?? CORES.server1).split(';');
/**
 * Messages in flight at most, over all clients. Enough to keep either server busy between the tool's 200 µs read
 * rounds, few enough that queueing (window / rate: ~5 ms at 50k round trips/s) stays far below the 100 ms after which
 * an echo counts as lost.
 */
const WINDOW = Number(process.env.BENCH_TURN_WINDOW ?? 256);
/** Clients' total send-rate cap (0: none, the window alone saturates the server). */
const PPS = Number(process.env.BENCH_TURN_PPS ?? 0);
const LOAD_MAX_CPU = 0.8;
/**
 * UDP GSO for the tool's own sends (default on): a client's burst and the peer's echoes to one relayed address leave
 * in one sendmsg with UDP_SEGMENT; the kernel splits them on delivery, so the servers receive the same separate
 * datagrams. It halves the tool's CPU per packet (most of which is the kernel's per-datagram send path), so the tool
 * stays clear of its core's limit. BENCH_TURN_GSO=0 sends one datagram at a time (sendmmsg) as before.
 */
const GSO = process.env.BENCH_TURN_GSO !== '0';

interface Run {
  server: 'coturn' | 'natpunch';
  /** natpunch runs: the workers and UDP implementation it reported (the bench checks what actually ran). */
  natpunchWorkers?: number | null;
  natpunchUdp?: string | null;
  cores: string;
  clients: number;
  size: number;
  run: number;
  sent: number;
  /** Relayed client→peer (what the peer received). */
  toPeer: number;
  /** Relayed peer→client (echoes back at the clients). */
  toClient: number;
  lost: number;
  loss: number;
  seconds: number;
  relayedPerSecond: number;
  serverCpuUsPerPacket: number;
  loadCpuShare: number;
  loadSaturated: boolean;
  /** The load tool's sends used UDP GSO in this run. */
  loadGso: boolean;
}

interface LoadOut {
  sent: number;
  peer_received: number;
  received: number;
  lost: number;
  seconds: number;
  elapsed: number;
  cpu_user: number;
  cpu_sys: number;
  /** Whether the tool sent with UDP GSO (it falls back to sendmmsg where the kernel refuses). */
  gso?: number;
}

async function oneRun(
  tool: string,
  server: Run['server'],
  cores: string,
  clients: number,
  size: number,
  run: number,
  users: string,
): Promise<Run> {
  const ns = new Netns('turn');
  const logDir = mkdtempSync(join(tmpdir(), 'natpunch-bench-coturn-'));
  const workers = coreCount(cores);
  const child =
    server === 'natpunch'
      ? ns.spawn(
          process.execPath,
          [
            NATPUNCH_BIN,
            'serve',
            '--turn',
            '--no-relay',
            '--no-rendezvous',
            '--port',
            String(PORT),
            '--address',
            '127.0.0.1',
            '--workers',
            String(workers),
            '--relay-address',
            '127.0.0.1',
            '--users',
            users,
            '--allow-peer',
            '127.0.0.0/8',
            '--user-quota',
            '10000',
            '--min-port',
            '40000',
            '--max-port',
            '49999',
            '--json',
          ],
          cores,
        )
      : ns.spawn(
          'turnserver',
          coturnArgs(PORT, { threads: workers, logDir, user: 'bench:bench', relayPorts: [50000, 59999] }),
          cores,
        );
  // What natpunch says it runs (implementation, workers), from its --json "listening" line.
  let listening = '';
  child.stdout!.on('data', (d: Buffer) => (listening += d.toString()));
  const load = (seconds: number, n: number, pin?: string) =>
    runToEnd(
      ns.spawn(
        tool,
        [
          '127.0.0.1',
          String(PORT),
          'bench',
          'bench',
          '127.0.0.1',
          String(seconds),
          String(n),
          String(size),
          String(WINDOW),
          String(PPS),
          GSO ? '1' : '0',
        ],
        pin,
      ),
      (seconds + 30) * 1000,
    );
  try {
    await waitFor(async () => {
      const r = await load(0.05, 1);
      return r.code === 0 && (JSON.parse(r.stdout) as LoadOut).received > 0;
    }, `${server} in ${ns.name}`);
    // Warm-up (JIT, caches, socket buffers), not counted.
    await load(WARMUP_SECONDS, clients, CORES.load);
    const cpu0 = processCpuSeconds(child.pid!);
    const r = await load(SECONDS, clients, CORES.load);
    const cpu = processCpuSeconds(child.pid!) - cpu0;
    if (r.code !== 0) throw new Error(`turn-load failed against ${server}: ${r.stderr.trim()}`);
    const out = JSON.parse(r.stdout) as LoadOut;
    const relayed = out.peer_received + out.received;
    const loadCpuShare = (out.cpu_user + out.cpu_sys) / out.elapsed;
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
      clients,
      size,
      run,
      sent: out.sent,
      toPeer: out.peer_received,
      toClient: out.received,
      lost: out.lost,
      loss: out.sent > 0 ? out.lost / out.sent : 1,
      seconds: out.seconds,
      relayedPerSecond: Math.round(relayed / out.seconds),
      serverCpuUsPerPacket: relayed > 0 ? (cpu * 1e6) / relayed : NaN,
      loadCpuShare,
      loadSaturated: loadCpuShare > LOAD_MAX_CPU,
      loadGso: out.gso === 1,
    };
  } finally {
    await stopPid(child);
    ns.close();
    rmSync(logDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const start = machine();
  const tool = buildLoadgen('turn-load', ['-lcrypto']);
  const dir = mkdtempSync(join(tmpdir(), 'natpunch-bench-turn-'));
  const users = join(dir, 'users');
  writeFileSync(users, 'bench:bench\n');
  const runs: Run[] = [];
  const configs = CORE_SETS.flatMap((cores) =>
    CLIENT_COUNTS.flatMap((clients) => SIZES.map((size) => ({ cores, clients, size }))),
  );
  try {
    for (const c of configs) {
      for (let i = 0; i < RUNS; i++) {
        for (const server of ['coturn', 'natpunch'] as const) {
          // A set-up that fails under a loaded machine (an answer lost past the tool's retries) is run again once.
          const r = await oneRun(tool, server, c.cores, c.clients, c.size, i, users).catch((err: Error) => {
            console.error(`retrying ${server} run ${i}: ${err.message}`);
            return oneRun(tool, server, c.cores, c.clients, c.size, i, users);
          });
          runs.push(r);
          console.log(JSON.stringify(r));
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const summary = configs.map((c) => {
    const of = (s: Run['server']) =>
      runs.filter((r) => r.server === s && r.cores === c.cores && r.clients === c.clients && r.size === c.size);
    const [ct, np] = [of('coturn'), of('natpunch')];
    const side = (rs: Run[]) => ({
      relayedPerSecond: median(rs.map((r) => r.relayedPerSecond)),
      loss: median(rs.map((r) => r.loss)),
      cpuUsPerPacket: median(rs.map((r) => r.serverCpuUsPerPacket)),
    });
    return {
      ...c,
      coturn: side(ct),
      natpunch: side(np),
      rateRatio: ratios(
        np.map((r) => r.relayedPerSecond),
        ct.map((r) => r.relayedPerSecond),
      ),
      cpuRatio: ratios(
        np.map((r) => r.serverCpuUsPerPacket),
        ct.map((r) => r.serverCpuUsPerPacket),
      ),
      loadMaxCpuShare: Math.max(...[...ct, ...np].map((r) => r.loadCpuShare)),
    };
  });
  const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  writeResults('turn', {
    title: 'TURN relay: natpunch serve --turn vs coturn (turn-load, interleaved, private netns, pinned)',
    start,
    config: {
      seconds: SECONDS,
      window: WINDOW,
      maxPps: PPS,
      loadGso: GSO,
      loadgen: 'bench/loadgen/turn-load.c',
      runs: RUNS,
      cores: CORES,
      coreSets: CORE_SETS,
      clients: CLIENT_COUNTS,
      sizes: SIZES,
    },
    summary,
    runs,
    table: [
      [
        'cores',
        'clients × bytes',
        'coturn relayed/s',
        'natpunch relayed/s',
        'ratio median (min–max)',
        'coturn loss',
        'natpunch loss',
        'coturn µs/pkt',
        'natpunch µs/pkt',
        'CPU ratio (natpunch/coturn)',
        'load tool CPU',
      ],
      ...summary.map((s) => [
        s.cores,
        `${s.clients} × ${s.size}`,
        String(s.coturn.relayedPerSecond),
        String(s.natpunch.relayedPerSecond),
        `${f(s.rateRatio.median, 2)} (${f(s.rateRatio.min, 2)}–${f(s.rateRatio.max, 2)})`,
        `${f(s.coturn.loss * 100)}%`,
        `${f(s.natpunch.loss * 100)}%`,
        f(s.coturn.cpuUsPerPacket),
        f(s.natpunch.cpuUsPerPacket),
        `${f(s.cpuRatio.median, 2)}`,
        `${f(s.loadMaxCpuShare * 100, 0)}%`,
      ]),
    ],
    notes: [
      `turn-load: per client one allocation and one channel, then ChannelData of BYTES echoed by its own peer socket; at most ${WINDOW} messages in flight over all clients (unanswered after 100 ms: lost), ${PPS > 0 ? `at most ${PPS}/s` : 'no rate cap'}; ${SECONDS} s after ${WARMUP_SECONDS} s of warm-up; ${RUNS} runs per server per configuration, interleaved.`,
      GSO
        ? "The tool's own sends use UDP GSO (UDP_SEGMENT; the kernel splits them before delivery, so both servers receive separate datagrams as from any client); BENCH_TURN_GSO=0 sends one datagram at a time."
        : 'The tool sends one datagram at a time (sendmmsg; BENCH_TURN_GSO=0).',
      'relayed/s: client→peer datagrams the peer received plus peer→client datagrams the clients received, over the measured seconds. Loss: messages whose echo did not return.',
      'µs/pkt: server CPU (user+system, all threads, /proc/PID/stat) per relayed datagram; cpu ratio is natpunch/coturn (median of pairwise ratios).',
      `Load tool CPU: the highest share of its core (${CORES.load}) in any run; above ${LOAD_MAX_CPU * 100}% the tool, not the server, may be the limit (loadSaturated in the JSON).`,
    ],
  });
}

await main();
