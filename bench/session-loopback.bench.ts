// Loopback numbers for the session layer: time from connect() to the first authenticated byte (direct mode: checks +
// Noise XX + HELLO), and stream goodput (one stream and four) against plain TCP on the same machine. Loopback has no
// delay or loss, so this measures CPU cost (encryption, multiplexing, libudx), not NAT traversal.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { connect, listen } from '../src/natpunch.js';
import { generateKeyPair } from '../src/session/identity.js';
import { candidatePriority } from '../src/traversal/candidate.js';
import type { Session } from '../src/session/session.js';
import type { MuxStream } from '../src/session/mux.js';

const here = dirname(fileURLToPath(import.meta.url));
const TOTAL = 64 * 1024 * 1024;
const CHUNK = 64 * 1024;
const LOOPBACK = { address: '127.0.0.1' };

async function pair(): Promise<{ a: Session; b: Session; close: () => Promise<void>; connectMs: number; firstByteMs: number }> {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK });
  const connectionId = randomBytes(16);
  const got = new Promise<Session>((r) => listener.once('session', r));
  const t0 = performance.now();
  const a = await connect({
    keyPair: ka, bind: LOOPBACK, connectionId, peer: { publicKey: kb.publicKey, candidates: listener.candidates },
    onProgress: (p) => {
      if (p.phase === 'gathering') {
        void listener.acceptOffer({ connectionId, role: 'responder', peerKey: ka.publicKey, candidates: [{ type: 'host', transport: 'udp', address: '127.0.0.1', port: p.local.port, priority: candidatePriority('host') }] });
      }
    },
  });
  const connectMs = performance.now() - t0;
  const b = await got;
  const first = new Promise<number>((r) => b.once('stream', (s: MuxStream) => {
    s.on('error', () => {});
    s.once('data', () => r(performance.now() - t0));
  }));
  const st = a.openStream();
  st.write('x');
  const firstByteMs = await first;
  st.destroy();
  return { a, b, connectMs, firstByteMs, close: async () => { await a.close(); await listener.close(); } };
}

async function sessionGoodput(streams: number): Promise<number> {
  const p = await pair();
  const per = TOTAL / streams;
  const chunk = randomBytes(CHUNK);
  const done = new Promise<void>((resolve) => {
    let left = streams;
    p.b.on('stream', (s: MuxStream) => {
      s.on('data', () => {});
      s.on('end', () => {
        s.end();
        if (--left === 0) resolve();
      });
    });
  });
  const t0 = performance.now();
  await Promise.all(Array.from({ length: streams }, async () => {
    const s = p.a.openStream();
    s.on('data', () => {});
    for (let sent = 0; sent < per; sent += CHUNK) {
      if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
    }
    s.end();
  }));
  await done;
  const secs = (performance.now() - t0) / 1000;
  await p.close();
  return (TOTAL * 8) / secs / 1e6;
}

async function tcpGoodput(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const done = new Promise<void>((resolve) => server.once('connection', (s) => {
    s.on('data', () => {});
    s.on('end', () => resolve());
  }));
  const c = net.connect(port, '127.0.0.1');
  await new Promise((r) => c.once('connect', r));
  const chunk = randomBytes(CHUNK);
  const t0 = performance.now();
  for (let sent = 0; sent < TOTAL; sent += CHUNK) {
    if (!c.write(chunk)) await new Promise((r) => c.once('drain', r));
  }
  c.end();
  await done;
  const secs = (performance.now() - t0) / 1000;
  server.close();
  return (TOTAL * 8) / secs / 1e6;
}

const setup: Array<{ connectMs: number; firstByteMs: number }> = [];
for (let i = 0; i < 5; i++) {
  const p = await pair();
  setup.push({ connectMs: p.connectMs, firstByteMs: p.firstByteMs });
  await p.close();
}
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const result = {
  name: 'session-loopback',
  date: new Date().toISOString(),
  node: process.version,
  bytes: TOTAL,
  connectMsMedian: Number(median(setup.map((s) => s.connectMs)).toFixed(1)),
  firstByteMsMedian: Number(median(setup.map((s) => s.firstByteMs)).toFixed(1)),
  goodputMbps: {
    session1Stream: Number((await sessionGoodput(1)).toFixed(0)),
    session4Streams: Number((await sessionGoodput(4)).toFixed(0)),
    plainTcp: Number((await tcpGoodput()).toFixed(0)),
  },
};
mkdirSync(join(here, 'results'), { recursive: true });
writeFileSync(join(here, 'results', 'session-loopback.json'), `${JSON.stringify(result, null, 2)}\n`);
const md = [
  '# session-loopback',
  '',
  `Loopback, ${TOTAL / 1024 / 1024} MiB per run, ${result.node}, ${result.date}. CPU-bound: no delay or loss.`,
  '',
  '| measure | value |',
  '|---|---|',
  `| connect() in direct mode (checks + Noise XX + HELLO), median of 5 | ${result.connectMsMedian} ms |`,
  `| connect() to first authenticated byte at the listener, median of 5 | ${result.firstByteMsMedian} ms |`,
  `| goodput, 1 stream | ${result.goodputMbps.session1Stream} Mbit/s |`,
  `| goodput, 4 streams | ${result.goodputMbps.session4Streams} Mbit/s |`,
  `| plain TCP, same machine | ${result.goodputMbps.plainTcp} Mbit/s |`,
  '',
].join('\n');
writeFileSync(join(here, 'results', 'session-loopback.md'), md);
console.log(md);
