// STUN benchmark: Binding requests answered per second by `natpunch serve` and by coturn's turnserver (stun-only),
// both on loopback, driven by the same load generator (bench/stun-load.ts), one run each; plus the codec's
// decode+encode rate. Writes bench/results/stun.json and bench/results/stun.md.
//
// Cores: on a machine with 2+ cores the server is pinned to CPU 1 and the generator to CPU 0 (taskset), so both
// servers get exactly one core. coturn still starts its threads, they share that core.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stunBinding } from '../src/stun/client.js';
import { startCoturn } from '../test/helpers/coturn.js';
import { freePort } from '../test/helpers/net.js';
import { stop, which } from '../test/helpers/proc.js';
import { StunServer } from '../src/stun/server.js';
import {
  attr,
  createTransactionId,
  decodeStun,
  encodeStun,
  StunClass,
  StunMethod,
  XorMappedAddress,
  Software,
  checkFingerprint,
} from '../src/wire/stun/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const SOCKETS = Number(process.env.STUN_BENCH_SOCKETS ?? 4);
const WINDOW = Number(process.env.STUN_BENCH_WINDOW ?? 32);
const WARMUP_MS = Number(process.env.STUN_BENCH_WARMUP_MS ?? 1000);
const DURATION_MS = Number(process.env.STUN_BENCH_DURATION_MS ?? 5000);

const TASKSET = os.availableParallelism() >= 2 ? which('taskset') : undefined;
const pinned = (cpu: number, cmd: string, args: string[]): [string, string[]] =>
  TASKSET ? [TASKSET, ['-c', String(cpu), cmd, ...args]] : [cmd, args];

async function waitReady(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 80 && child.exitCode === null; i++) {
    try {
      await stunBinding({ host: '127.0.0.1', port }, { timeoutMs: 250 });
      return;
    } catch {
      /* not yet */
    }
  }
  throw new Error('server did not answer STUN');
}

interface LoadResult {
  answered: number;
  seconds: number;
  rate: number;
  losses: number;
  generatorCpu: number;
  serverCpu: number | null;
}

async function load(port: number, serverPid: number): Promise<LoadResult> {
  const [cmd, args] = pinned(0, process.execPath, [
    '--import',
    'tsx',
    join(here, 'stun-load.ts'),
    '127.0.0.1',
    String(port),
    String(SOCKETS),
    String(WINDOW),
    String(WARMUP_MS),
    String(DURATION_MS),
    String(serverPid),
  ]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], cwd: root });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), WARMUP_MS + DURATION_MS + 30_000);
  await new Promise((r) => child.once('exit', r));
  clearTimeout(timer);
  return JSON.parse(out.trim().split('\n').pop()!);
}

/** A server under load: where it listens, the PID to measure, and how to stop it. */
interface BenchTarget {
  port: number;
  pid: number;
  stop(): Promise<unknown>;
}

/** `natpunch serve` with `args`, pinned to CPU 1, once it answers STUN. */
async function startNatpunch(args: string[]): Promise<BenchTarget> {
  const port = await freePort();
  const [cmd, argv] = pinned(1, process.execPath, [join(root, 'bin', 'natpunch.js'), 'serve', '--port', String(port), '--address', '127.0.0.1', ...args]);
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: root });
  child.stdout.resume();
  child.stderr.resume();
  try {
    await waitReady(port, child);
  } catch (e) {
    await stop(child);
    throw e;
  }
  // The process to measure: taskset execs the server in place, so the PID is the server's.
  return { port, pid: child.pid!, stop: () => stop(child) };
}

async function benchServer(name: string, start: () => Promise<BenchTarget>): Promise<LoadResult & { name: string }> {
  const server = await start();
  try {
    const r = await load(server.port, server.pid);
    return { name, ...r };
  } finally {
    await server.stop();
  }
}

function codecBench(): { opsPerSecond: number; iterations: number } {
  // What the server does per request: decode the request, check FINGERPRINT, read an attribute, encode the answer.
  const req = encodeStun({ cls: StunClass.Request, method: StunMethod.Binding, transactionId: createTransactionId() }, { fingerprint: true });
  const from = { family: 'IPv4' as const, address: '192.0.2.1', port: 40000 };
  const run = (n: number) => {
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const m = decodeStun(req);
      checkFingerprint(m);
      m.unknownComprehensionRequired();
      const out = encodeStun(
        { cls: StunClass.SuccessResponse, method: m.method, transactionId: m.transactionId, attributes: [attr(XorMappedAddress, from), attr(Software, 'natpunch')] },
        { fingerprint: true },
      );
      bytes += out.length;
    }
    return bytes;
  };
  run(20_000); // warm-up (JIT)
  const iterations = 300_000;
  const t0 = performance.now();
  run(iterations);
  const s = (performance.now() - t0) / 1000;
  return { opsPerSecond: iterations / s, iterations };
}

function serverPathBench(): { opsPerSecond: number; iterations: number } {
  // StunServer's whole per-datagram path (decode, checks, response encode) without the socket: a stub transport.
  let sent = 0;
  let listener: ((msg: Buffer, rinfo: { address: string; port: number; family: 'IPv4' }) => void) | undefined;
  const stub = {
    closed: false,
    send: () => void sent++,
    onMessage: (l: typeof listener) => ((listener = l), () => {}),
    address: () => ({ address: '127.0.0.1', port: 3478, family: 'IPv4' }),
  };
  const server = new StunServer();
  server.attachUdp(stub as never);
  const req = encodeStun({ cls: StunClass.Request, method: StunMethod.Binding, transactionId: createTransactionId() });
  const rinfo = { address: '127.0.0.1', port: 40000, family: 'IPv4' as const };
  for (let i = 0; i < 50_000; i++) listener!(req, rinfo);
  const iterations = 500_000;
  const t0 = performance.now();
  for (let i = 0; i < iterations; i++) listener!(req, rinfo);
  const s = (performance.now() - t0) / 1000;
  server.close();
  if (sent !== 550_000) throw new Error('server stub did not answer every request');
  return { opsPerSecond: iterations / s, iterations };
}

const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  node: process.version,
  cpus: os.cpus().length,
  cpuModel: os.cpus()[0]?.model,
  loadAverageAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  pinning: TASKSET ? 'server on CPU 1, load generator on CPU 0 (taskset)' : 'none (fewer than 2 CPUs or no taskset)',
  load: { sockets: SOCKETS, inFlightPerSocket: WINDOW, warmupMs: WARMUP_MS, durationMs: DURATION_MS, request: '20-byte Binding request' },
};

const codec = codecBench();
results.codec = { decodeEncodePerSecond: Math.round(codec.opsPerSecond), iterations: codec.iterations };
console.log(`codec: ${Math.round(codec.opsPerSecond).toLocaleString('en')} decode+encode/s`);
const serverPath = serverPathBench();
results.serverPathWithoutSockets = { requestsPerSecond: Math.round(serverPath.opsPerSecond), iterations: serverPath.iterations };
console.log(`server path without sockets: ${Math.round(serverPath.opsPerSecond).toLocaleString('en')} requests/s`);

const natpunch = await benchServer('natpunch serve (libudx sockets, the default)', () => startNatpunch([]));
console.log(`natpunch serve: ${Math.round(natpunch.rate).toLocaleString('en')} Binding/s (server CPU ${natpunch.serverCpu?.toFixed(2)}, generator CPU ${natpunch.generatorCpu.toFixed(2)})`);
results.natpunch = natpunch;
// For reference: the same server on node:dgram sockets (what libudx buys).
const natpunchDgram = await benchServer('natpunch serve --udp dgram', () => startNatpunch(['--udp', 'dgram']));
console.log(`natpunch serve --udp dgram: ${Math.round(natpunchDgram.rate).toLocaleString('en')} Binding/s (server CPU ${natpunchDgram.serverCpu?.toFixed(2)})`);
results.natpunchDgram = natpunchDgram;

const TURNSERVER = which('turnserver');
let coturn: (LoadResult & { name: string }) | undefined;
if (TURNSERVER) {
  coturn = await benchServer('coturn turnserver --stun-only', () => startCoturn({ stunOnly: true, wrap: (cmd, args) => pinned(1, cmd, args) }));
  console.log(`coturn: ${Math.round(coturn.rate).toLocaleString('en')} Binding/s (server CPU ${coturn.serverCpu?.toFixed(2)}, generator CPU ${coturn.generatorCpu.toFixed(2)})`);
  results.coturn = coturn;
  results.ratio = natpunch.rate / coturn.rate;
  if (natpunch.serverCpu && coturn.serverCpu) {
    results.perCpuSecond = {
      natpunch: Math.round(natpunch.rate / natpunch.serverCpu),
      coturn: Math.round(coturn.rate / coturn.serverCpu),
      ratio: natpunch.rate / natpunch.serverCpu / (coturn.rate / coturn.serverCpu),
    };
  }
  console.log(`ratio natpunch/coturn: ${(natpunch.rate / coturn.rate).toFixed(2)}`);
} else {
  results.coturn = null;
  results.ratio = null;
  console.log('coturn turnserver not installed: ratio not measured');
}

mkdirSync(join(here, 'results'), { recursive: true });
writeFileSync(join(here, 'results', 'stun.json'), `${JSON.stringify(results, null, 2)}\n`);
const fmt = (n: number) => Math.round(n).toLocaleString('en');
const row = (r: LoadResult & { name: string }) =>
  `| ${r.name} | ${fmt(r.rate)} | ${r.serverCpu === null ? 'n/a' : r.serverCpu.toFixed(2)} | ${r.generatorCpu.toFixed(2)} | ${r.losses} |`;
const md = `# STUN benchmark

${results.date} · Node ${process.version} · ${results.cpus} × ${results.cpuModel} · ${results.pinning}

Load: ${SOCKETS} UDP sockets × ${WINDOW} Binding requests in flight (20-byte requests, loopback), ${WARMUP_MS} ms warm-up,
${DURATION_MS} ms measured, one run per server, same generator (bench/stun-load.ts).

| server | Binding/s answered | server CPU (cores) | generator CPU (cores) | re-sent after 200 ms |
|---|---:|---:|---:|---:|
${row(natpunch)}
${row(natpunchDgram)}
${coturn ? row(coturn) : '| coturn | not installed | | | |'}

**Ratio natpunch / coturn: ${results.ratio === null ? 'n/a' : (results.ratio as number).toFixed(2)}** (answered per second, default natpunch serve)

${
  results.perCpuSecond
    ? `Per CPU-second of the server process (answered ÷ server CPU, less sensitive to other load on the machine):
natpunch ${fmt((results.perCpuSecond as { natpunch: number }).natpunch)}, coturn ${fmt((results.perCpuSecond as { coturn: number }).coturn)},
ratio ${((results.perCpuSecond as { ratio: number }).ratio).toFixed(2)}.`
    : ''
}

Load average when the run started: ${(results.loadAverageAtStart as number[]).join(', ')} (other work on the machine lowers
both rates; neither server reached a full core in that case, so the answered-per-second ratio then reflects scheduling
as much as the servers).

Codec: ${fmt(codec.opsPerSecond)} decode + FINGERPRINT check + encode (with XOR-MAPPED-ADDRESS, SOFTWARE, FINGERPRINT)
per second in the bench process (not pinned; CPU contention lowers it).

StunServer's whole per-request path without sockets (decode, checks, response encode, stub send):
${fmt(serverPath.opsPerSecond)} requests/s in the bench process, i.e. ${(1e6 / serverPath.opsPerSecond).toFixed(1)} µs per request. Everything
above that per request is the socket receive and send.

What bounds natpunch: \`natpunch serve\` runs on libudx sockets (udx-native; \`--udp dgram\` for node:dgram), which
receive natively into a preallocated slab and send through libuv's \`uv_udp_try_send\`, but every packet still costs a
receive and a send system call, a crossing into JavaScript, a response Buffer and the STUN work above, on one
event-loop thread (no SO_REUSEPORT fan-out across cores in Node 20). coturn does the same work in C with no runtime
in between. A server CPU near 1.00 means the server was the
bottleneck; a generator CPU near 1.00 with a lower server CPU means the (equally Node-bound) generator was.
`;
writeFileSync(join(here, 'results', 'stun.md'), md);
