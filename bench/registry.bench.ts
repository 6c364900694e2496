// Registry scale-out: registrations and introductions per second across two `natpunch serve` nodes sharing a real
// redis-server, against one node with the in-memory registry, in the same run (interleaved rounds); Redis round
// trips per introduction (redis INFO commandstats); memory per registered peer in Redis mode (node RSS, Redis
// used_memory and RSS), extrapolated to 100k peers. The servers are the real CLI as child processes on loopback; the
// load generator is this process (its CPU, the servers' CPU and the load average are recorded with the numbers).
//
//   node --import tsx bench/registry.bench.ts [--registrations N] [--introductions N] [--peers N] [--rounds N]
//
// Writes bench/results/registry.{json,md}.
import { createSocket, type Socket } from 'node:dgram';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from 'redis';
import { generateKeyPair, type KeyPair } from '../src/session/identity.js';
import { candidatePriority } from '../src/traversal/candidate.js';
import {
  decodeRendezvous,
  encodeRendezvous,
  MAX_CONNECT_NOTIFY_BYTES,
  PONG_BYTES,
  REGISTER_PAD_BYTES,
  hex,
} from '../src/wire/rendezvous.js';
import { startRedis, type RedisServer } from '../test/helpers/redis.js';
import { startServeNode, type ServeNode } from '../test/helpers/serve-node.js';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const REGISTRATIONS = arg('registrations', 2000);
const INTRODUCTIONS = arg('introductions', 1000);
const PEERS = arg('peers', 10_000);
const ROUNDS = arg('rounds', 2);
/** Requests in flight at once from the generator. */
const WINDOW = 64;
const RESPONDERS = 20;
const SERVE_ARGS = [
  '--rate-limit',
  '1000000',
  '--rate-burst',
  '1000000',
  '--registration-ttl',
  '30m',
  '--registration-refresh',
  '10m',
  '--name-hold',
  '0',
  '--admin',
  '0',
];

function cpuOf(pid: number): number {
  // /proc/<pid>/stat fields 14 and 15: utime and stime in clock ticks (100 Hz on Linux).
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

async function bindUdp(): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

function registerBytes(kp: KeyPair, requestId: number, port: number): Buffer {
  return encodeRendezvous(
    {
      type: 'register',
      requestId,
      publicKey: kp.publicKey,
      reachable: false,
      rttMs: 0,
      candidates: [{ type: 'host', transport: 'udp', address: '127.0.0.1', port, priority: candidatePriority('host') }],
    },
    kp.secretKey,
    { padTo: REGISTER_PAD_BYTES },
  );
}

/**
 * Sends every message (keeping WINDOW outstanding, round robin over `ports`) and resolves when each got an answer
 * that `done` accepts (by request id), with the elapsed seconds. Bounded: rejects after `ms`.
 */
async function pump(
  sock: Socket,
  messages: Buffer[],
  ports: number[],
  done: (msg: Buffer) => number | undefined,
  ms = 120_000,
): Promise<number> {
  const t0 = process.hrtime.bigint();
  let next = 0;
  let answered = 0;
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`only ${answered} of ${messages.length} answered within ${ms} ms`)),
      ms,
    );
    const send = () => {
      if (next >= messages.length) return;
      const i = next++;
      sock.send(messages[i]!, ports[i % ports.length]!, '127.0.0.1');
    };
    const onMessage = (msg: Buffer) => {
      if (done(msg) === undefined) return;
      answered++;
      if (answered === messages.length) {
        clearTimeout(timer);
        sock.off('message', onMessage);
        resolve(Number(process.hrtime.bigint() - t0) / 1e9);
        return;
      }
      send();
    };
    sock.on('message', onMessage);
    for (let i = 0; i < WINDOW; i++) send();
  });
}

interface Setup {
  label: 'memory (1 node)' | 'redis (2 nodes)';
  nodes: ServeNode[];
}

async function registrations(setup: Setup, n: number): Promise<number> {
  const sock = await bindUdp();
  const keys = Array.from({ length: n }, () => generateKeyPair());
  const ids = new Set<number>();
  const msgs = keys.map((kp, i) => {
    ids.add(i + 1);
    return registerBytes(kp, i + 1, sock.address().port);
  });
  const seconds = await pump(
    sock,
    msgs,
    setup.nodes.map((x) => x.port),
    (b) => {
      try {
        const m = decodeRendezvous(b);
        return m.type === 'registered' || m.type === 'error' ? m.requestId : undefined;
      } catch {
        return undefined;
      }
    },
  );
  sock.close();
  return n / seconds;
}

/** Responders registered on the first node answer PINGs (they prove their address) and acknowledge notifications. */
async function responders(
  setup: Setup,
): Promise<{ sock: Socket; keys: KeyPair[]; notified: Set<string>; close(): void }> {
  const sock = await bindUdp();
  const keys = Array.from({ length: RESPONDERS }, () => generateKeyPair());
  const notified = new Set<string>();
  sock.on('message', (b, rinfo) => {
    try {
      const m = decodeRendezvous(b);
      if (m.type === 'ping')
        sock.send(
          encodeRendezvous({ type: 'pong', requestId: m.requestId, echo: m.time, time: Date.now() }, undefined, {
            padTo: PONG_BYTES,
          }),
          rinfo.port,
          rinfo.address,
        );
      if (m.type === 'connect-notify' && m.role === 'responder') {
        notified.add(hex(m.connectionId));
        sock.send(
          encodeRendezvous({ type: 'notify-ack', requestId: m.requestId, connectionId: m.connectionId }),
          rinfo.port,
          rinfo.address,
        );
      }
    } catch {
      // not ours
    }
  });
  const msgs = keys.map((kp, i) => registerBytes(kp, 1000 + i, sock.address().port));
  await pump(sock, msgs, [setup.nodes[0]!.port], (b) => {
    try {
      const m = decodeRendezvous(b);
      return m.type === 'registered' ? m.requestId : undefined;
    } catch {
      return undefined;
    }
  });
  // Let the servers' address-proving PINGs be answered before introductions start.
  await new Promise((r) => setTimeout(r, 300));
  return { sock, keys, notified, close: () => sock.close() };
}

/** Introductions through the LAST node to responders on the first: complete when the responder heard of each. */
async function introductions(setup: Setup, n: number, rs: Awaited<ReturnType<typeof responders>>): Promise<number> {
  const sock = await bindUdp();
  const initiator = generateKeyPair();
  const target = setup.nodes[setup.nodes.length - 1]!.port;
  const now = Date.now();
  const msgs: Buffer[] = [];
  const cids: string[] = [];
  for (let i = 0; i < n; i++) {
    const connectionId = Buffer.alloc(16);
    connectionId.writeUInt32BE(i, 12);
    connectionId.writeUInt32BE((Math.random() * 2 ** 32) >>> 0, 0);
    cids.push(hex(connectionId));
    msgs.push(
      encodeRendezvous(
        {
          type: 'connect',
          requestId: i + 1,
          publicKey: initiator.publicKey,
          timestamp: now + i,
          reachable: false,
          target: { key: rs.keys[i % rs.keys.length]!.publicKey },
          connectionId,
          rttMs: 0,
          candidates: [
            {
              type: 'host',
              transport: 'udp',
              address: '127.0.0.1',
              port: sock.address().port,
              priority: candidatePriority('host'),
            },
          ],
        },
        initiator.secretKey,
        { padTo: MAX_CONNECT_NOTIFY_BYTES },
      ),
    );
  }
  const t0 = process.hrtime.bigint();
  await pump(sock, msgs, [target], (b) => {
    try {
      const m = decodeRendezvous(b);
      return (m.type === 'connect-notify' && m.role === 'initiator') || m.type === 'error' ? m.requestId : undefined;
    } catch {
      return undefined;
    }
  });
  // Complete when the responders got every notification (bounded).
  const until = Date.now() + 30_000;
  while (cids.some((c) => !rs.notified.has(c)) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const delivered = cids.filter((c) => rs.notified.has(c)).length;
  sock.close();
  if (delivered < n) throw new Error(`${setup.label}: only ${delivered} of ${n} introductions reached the responder`);
  return n / seconds;
}

async function redisCalls(url: string): Promise<number> {
  const c = createClient({ url, RESP: 2 });
  await c.connect();
  const info = (await c.sendCommand(['INFO', 'commandstats'])) as string;
  await c.close();
  let calls = 0;
  for (const m of info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm))
    if (m[1] !== 'info' && m[1] !== 'xread') calls += Number(m[2]);
  return calls;
}

async function redisMemory(url: string): Promise<number> {
  const c = createClient({ url, RESP: 2 });
  await c.connect();
  const info = (await c.sendCommand(['INFO', 'memory'])) as string;
  await c.close();
  return Number(/used_memory:(\d+)/.exec(info)![1]);
}

async function main() {
  const load0 = loadavg();
  const cpu0 = process.cpuUsage();
  const redis: RedisServer = await startRedis();
  const memNode = await startServeNode(SERVE_ARGS);
  const r1 = await startServeNode(['--redis', redis.url, '--node-id', 'b1', ...SERVE_ARGS]);
  const r2 = await startServeNode(['--redis', redis.url, '--node-id', 'b2', ...SERVE_ARGS]);
  const setups: Setup[] = [
    { label: 'memory (1 node)', nodes: [memNode] },
    { label: 'redis (2 nodes)', nodes: [r1, r2] },
  ];
  const serverCpu0 = [memNode, r1, r2].map((n) => cpuOf(n.pid));
  const results: Record<string, { registrationsPerSecond: number[]; introductionsPerSecond: number[] }> = {};
  for (const s of setups) results[s.label] = { registrationsPerSecond: [], introductionsPerSecond: [] };
  const rs = new Map<string, Awaited<ReturnType<typeof responders>>>();
  for (const s of setups) rs.set(s.label, await responders(s));
  let roundTrips = 0;
  let roundTripIntros = 0;
  try {
    // Interleaved: memory, redis, memory, redis ... so both see the same machine load.
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of setups) {
        results[s.label]!.registrationsPerSecond.push(Math.round(await registrations(s, REGISTRATIONS)));
        const before = s.label.startsWith('redis') ? await redisCalls(redis.url) : 0;
        results[s.label]!.introductionsPerSecond.push(
          Math.round(await introductions(s, INTRODUCTIONS, rs.get(s.label)!)),
        );
        if (s.label.startsWith('redis')) {
          // Includes the nodes' background commands in that time (heartbeats, expiry sweeps): an upper bound.
          roundTrips += (await redisCalls(redis.url)) - before;
          roundTripIntros += INTRODUCTIONS;
        }
      }
    }
    // Memory per registered peer in Redis mode: PEERS more registrations on node b1 (its RSS, Redis' memory).
    const rssNode0 = rssOf(r1.pid);
    const rssRedis0 = rssOf(redis.pid());
    const used0 = await redisMemory(redis.url);
    const rssMem0 = rssOf(memNode.pid);
    await registrations({ label: 'redis (2 nodes)', nodes: [r1] }, PEERS);
    await registrations({ label: 'memory (1 node)', nodes: [memNode] }, PEERS);
    const scale = 100_000 / PEERS;
    const memory = {
      peersRegistered: PEERS,
      extrapolatedTo: 100_000,
      redisMode: {
        nodeRssBytesPer100k: Math.round((rssOf(r1.pid) - rssNode0) * scale),
        redisUsedMemoryBytesPer100k: Math.round(((await redisMemory(redis.url)) - used0) * scale),
        redisRssBytesPer100k: Math.round((rssOf(redis.pid()) - rssRedis0) * scale),
        // The difference above is at the mercy of the node's GC between the two samples (it can come out negative
        // when a collection ran in between); the node's RSS itself, holding every registration of the run, is the
        // number to compare with the in-memory node.
        nodeRssBytesAtEnd: rssOf(r1.pid),
      },
      memoryMode: {
        nodeRssBytesPer100k: Math.round((rssOf(memNode.pid) - rssMem0) * scale),
        nodeRssBytesAtEnd: rssOf(memNode.pid),
      },
    };
    const cpu = process.cpuUsage(cpu0);
    const out = {
      bench: 'registry',
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, loadavgBefore: load0, loadavgAfter: loadavg() },
      loadGeneratorCpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(2),
      serverCpuSeconds: Object.fromEntries(
        [memNode, r1, r2].map((n, i) => [
          ['memory', 'redis-b1', 'redis-b2'][i]!,
          +(cpuOf(n.pid) - serverCpu0[i]!).toFixed(2),
        ]),
      ),
      parameters: {
        registrations: REGISTRATIONS,
        introductions: INTRODUCTIONS,
        rounds: ROUNDS,
        window: WINDOW,
        responders: RESPONDERS,
      },
      results,
      redisRoundTripsPerIntroduction: +(roundTrips / roundTripIntros).toFixed(2),
      memory,
      note: 'Loopback, servers and generator on one machine; numbers from a loaded machine are not claims (see loadavg).',
    };
    mkdirSync(join(here, 'results'), { recursive: true });
    writeFileSync(join(here, 'results', 'registry.json'), `${JSON.stringify(out, null, 2)}\n`);
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
    const md = [
      '# Registry: memory (1 node) vs Redis (2 nodes)',
      '',
      `${out.date}; ${out.machine.cpus} CPUs; load average before ${load0.map((x) => x.toFixed(2)).join(' ')}, after ${out.machine.loadavgAfter.map((x) => x.toFixed(2)).join(' ')}; generator CPU ${out.loadGeneratorCpuSeconds} s; servers' CPU ${JSON.stringify(out.serverCpuSeconds)} s.`,
      '',
      '| setup | registrations/s (median of rounds) | introductions/s (median of rounds) |',
      '|---|---|---|',
      ...setups.map(
        (s) =>
          `| ${s.label} | ${med(results[s.label]!.registrationsPerSecond)} | ${med(results[s.label]!.introductionsPerSecond)} |`,
      ),
      '',
      `Redis round trips per introduction (all commands in the window, incl. background heartbeats): ${out.redisRoundTripsPerIntroduction}`,
      '',
      `Memory per 100k registered peers (measured with ${PEERS}, scaled linearly): Redis mode node RSS ${(memory.redisMode.nodeRssBytesPer100k / 1e6).toFixed(1)} MB, Redis used_memory ${(memory.redisMode.redisUsedMemoryBytesPer100k / 1e6).toFixed(1)} MB, Redis RSS ${(memory.redisMode.redisRssBytesPer100k / 1e6).toFixed(1)} MB; memory mode node RSS ${(memory.memoryMode.nodeRssBytesPer100k / 1e6).toFixed(1)} MB (node RSS deltas are GC-noisy). Node RSS at the end, holding every registration of the run: Redis mode ${(memory.redisMode.nodeRssBytesAtEnd / 1e6).toFixed(1)} MB, memory mode ${(memory.memoryMode.nodeRssBytesAtEnd / 1e6).toFixed(1)} MB.`,
      '',
      out.note,
      '',
    ].join('\n');
    writeFileSync(join(here, 'results', 'registry.md'), md);
    process.stdout.write(md);
  } finally {
    for (const r of rs.values()) r.close();
    for (const n of [memNode, r1, r2]) await n.stop('SIGKILL');
    await redis.stop();
  }
}

await main();
