// TURN relay: `natpunch serve --turn` against coturn's turnserver with coturn's own load tools, interleaved in one
// invocation (coturn, natpunch, ... BENCH_RUNS each), each run in a private network namespace, the server pinned to
// its cores. Load: turnutils_uclient (UDP allocations, channels, no RTCP, -z 0: back to back) echoing off
// turnutils_peer, both pinned to the load core. Configurations: server on 1 and 2 cores × 1 and 10 clients × 100 and
// 1000-byte messages.
//
// Per run: relayed packets/s (client→peer plus peer→client datagrams the server forwarded, over uclient's own
// transmit time, not its set-up and waits), loss (uclient's lost packets / sent), server CPU µs per relayed packet
// (/proc/PID/stat), and the load tools' CPU (uclient via its parent shell's cutime/cstime, the peer from /proc).
// Writes bench/results/turn.{json,md}.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CORES, coreCount, coturnArgs, Netns, NATPUNCH_BIN, RUNS, runToEnd, stopPid, waitFor } from './lib/harness.js';
import { machine, median, processCpuSeconds, ratios, writeResults } from './lib/report.js';

const PORT = 3478;
const PEER_PORT = 3480;
const MESSAGES = Number(process.env.BENCH_TURN_MESSAGES ?? 5000);
const CLIENT_COUNTS = (process.env.BENCH_TURN_CLIENTS ?? '1,10').split(',').map(Number);
const SIZES = (process.env.BENCH_TURN_SIZES ?? '100,1000').split(',').map(Number);
const CORE_SETS = (process.env.BENCH_TURN_CORES ?? `${CORES.server1};${CORES.server2}`).split(';');
const LOAD_MAX_CPU = 0.8;

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
  received: number;
  lost: number;
  loss: number;
  transmitSeconds: number;
  relayedPerSecond: number;
  serverCpuUsPerPacket: number;
  uclientCpuShare: number;
  peerCpuShare: number;
}

function parseUclient(out: string): { sent: number; received: number; lost: number; seconds: number } {
  const totals = [...out.matchAll(/tot_send_msgs=(\d+), tot_recv_msgs=(\d+)/g)].pop();
  const lost = /Total lost packets (\d+)/.exec(out);
  const time = /Total transmit time is (\d+)/.exec(out);
  if (!totals) throw new Error(`uclient produced no totals:\n${out.slice(-1500)}`);
  return {
    sent: Number(totals[1]),
    received: Number(totals[2]),
    lost: Number(lost?.[1] ?? 0),
    seconds: Math.max(1, Number(time?.[1] ?? 0)),
  };
}

async function oneRun(
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
  const peer = ns.spawn('turnutils_peer', ['-L', '127.0.0.1', '-p', String(PEER_PORT)], CORES.load);
  // What natpunch says it runs (implementation, workers), from its --json "listening" line.
  let listening = '';
  child.stdout!.on('data', (d: Buffer) => (listening += d.toString()));
  try {
    const probe = async () => {
      const r = await runToEnd(
        ns.spawn('turnutils_uclient', [
          '-u',
          'bench',
          '-w',
          'bench',
          '-p',
          String(PORT),
          '-e',
          '127.0.0.1',
          '-r',
          String(PEER_PORT),
          '-n',
          '1',
          '-c',
          '127.0.0.1',
        ]),
        10_000,
      );
      return /tot_recv_msgs=1\b/.test(r.stdout + r.stderr);
    };
    await waitFor(probe, `${server} in ${ns.name}`);
    const cpu0 = processCpuSeconds(child.pid!);
    const peer0 = processCpuSeconds(peer.pid!);
    const t0 = performance.now();
    const args = [
      '-u',
      'bench',
      '-w',
      'bench',
      '-p',
      String(PORT),
      '-e',
      '127.0.0.1',
      '-r',
      String(PEER_PORT),
      '-m',
      String(clients),
      '-n',
      String(MESSAGES),
      '-l',
      String(size),
      '-z',
      '0',
      '-c',
      '127.0.0.1',
    ];
    // The shell reports the CPU of the uclient it waited for (cutime + cstime, fields 16 and 17 of /proc/self/stat).
    const script = `taskset -c ${CORES.load} turnutils_uclient ${args.join(' ')}; echo; echo CHILDSTAT $(cat /proc/$$/stat)`;
    const r = await runToEnd(ns.spawn('sh', ['-c', script]), 300_000);
    const wall = (performance.now() - t0) / 1000;
    const cpu = processCpuSeconds(child.pid!) - cpu0;
    const peerCpu = processCpuSeconds(peer.pid!) - peer0;
    const out = r.stdout + r.stderr;
    const u = parseUclient(out);
    const stat = /CHILDSTAT .*\) (.*)$/m.exec(out)?.[1]?.split(' ') ?? [];
    const uclientCpu = (Number(stat[13] ?? 0) + Number(stat[14] ?? 0)) / 100;
    const relayed = u.sent + u.received;
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
      sent: u.sent,
      received: u.received,
      lost: u.lost,
      loss: u.sent > 0 ? u.lost / u.sent : 1,
      transmitSeconds: u.seconds,
      relayedPerSecond: Math.round(relayed / u.seconds),
      serverCpuUsPerPacket: relayed > 0 ? (cpu * 1e6) / relayed : NaN,
      uclientCpuShare: uclientCpu / wall,
      peerCpuShare: peerCpu / wall,
    };
  } finally {
    await stopPid(peer);
    await stopPid(child);
    ns.close();
    rmSync(logDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const start = machine();
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
          const r = await oneRun(server, c.cores, c.clients, c.size, i, users);
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
      loadMaxCpuShare: Math.max(...[...ct, ...np].map((r) => r.uclientCpuShare + r.peerCpuShare)),
    };
  });
  const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  writeResults('turn', {
    title: 'TURN relay: natpunch serve --turn vs coturn (turnutils_uclient/peer, interleaved, private netns, pinned)',
    start,
    config: {
      messagesPerClient: MESSAGES,
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
        'load tools CPU',
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
        `${f(s.loadMaxCpuShare * 100, 0)}%`,
      ]),
    ],
    notes: [
      `turnutils_uclient -m CLIENTS -n ${MESSAGES} -l BYTES -z 0 -c (UDP, channels, back to back), echoed by turnutils_peer; ${RUNS} runs per server per configuration, interleaved.`,
      'relayed/s counts both directions over uclient\'s "Total transmit time" (whole seconds, as uclient prints it).',
      `Load tools CPU: uclient + peer as a share of one core (both on core ${CORES.load}); above ${LOAD_MAX_CPU * 100}% the tools, not the server, may be the limit.`,
    ],
  });
}

await main();
