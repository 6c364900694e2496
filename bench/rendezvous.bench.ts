// Rendezvous on loopback: request latencies through the real client and server, and server throughput for signed
// registrations (Ed25519 verification bound) and lookups. Writes bench/results/rendezvous.{json,md}.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { NodeDatagramTransport } from '../src/net/datagram.js';
import { RendezvousServer } from '../src/rendezvous/server.js';
import { RendezvousClient, type ConnectOffer } from '../src/rendezvous/client.js';
import { generateKeyPair } from '../src/session/identity.js';
import { encodeRendezvous } from '../src/wire/rendezvous.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROUNDS = 200;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function main() {
  const udp = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const server = new RendezvousServer({ rateLimit: { perSecond: 1e9, burst: 1e9 } });
  server.attach(udp);
  const tcp = createServer((s) => server.handleTcp(s));
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
  const port = udp.address().port;
  const tcpPort = (tcp.address() as { port: number }).port;
  const closers: Array<() => void> = [];
  const client = async (name?: string, udpPort = port) => {
    const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    const c = new RendezvousClient({ transport, server: { host: '127.0.0.1', port: udpPort, tcpPort }, keyPair: generateKeyPair(), ...(name ? { name } : {}), initialRtoMs: 100, maxTransmissions: 2 });
    closers.push(() => {
      c.close();
      transport.close();
    });
    return c;
  };
  const results: Record<string, { median_ms: number; p99_ms: number }> = {};
  const time = async (label: string, fn: () => Promise<unknown>) => {
    const xs: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const t0 = process.hrtime.bigint();
      await fn();
      xs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    results[label] = { median_ms: +pct(xs, 50).toFixed(3), p99_ms: +pct(xs, 99).toFixed(3) };
  };

  const alice = await client('alice');
  const bob = await client('bob');
  await bob.register();
  await time('register (UDP, signed)', () => alice.register());
  await time('lookup (UDP)', () => alice.lookup('bob'));
  await time('connect → both offers (UDP)', async () => {
    const got = new Promise<ConnectOffer>((r) => bob.once('connect-request', r));
    await alice.requestConnect('bob');
    await got;
  });
  const dead = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const deadPort = dead.address().port;
  dead.close();
  const walled = await client('walled', deadPort);
  await walled.register();
  await time('lookup (TCP fallback, after switch)', () => walled.lookup('bob'));

  // Throughput: pipelined raw requests from one socket, 64 in flight.
  const throughput = async (label: string, make: (i: number) => Buffer, total: number) => {
    const t = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    let next = 0;
    let done = 0;
    const t0 = process.hrtime.bigint();
    await new Promise<void>((resolve) => {
      const send = () => {
        if (next < total) t.send(make(next++), port, '127.0.0.1');
      };
      t.onMessage((msg) => {
        if (msg[2] === 0x08) return; // the server's RTT ping
        done++;
        if (done === total) resolve();
        else send();
      });
      for (let i = 0; i < 64; i++) send();
      setTimeout(resolve, 20_000).unref();
    });
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    results[label] = { median_ms: +((secs * 1000) / done).toFixed(4), p99_ms: NaN };
    (results[label] as Record<string, number>).per_second = Math.round(done / secs);
    t.close();
  };
  const keys = Array.from({ length: 64 }, () => generateKeyPair());
  await throughput('server: signed REGISTERs', (i) => {
    const k = keys[i % keys.length]!;
    return encodeRendezvous({ type: 'register', requestId: i + 1, publicKey: k.publicKey, reachable: false, rttMs: 1, candidates: [{ type: 'host', transport: 'udp', address: '10.0.0.1', port: 1000 + (i % 100), priority: 1 }] }, k.secretKey);
  }, 5000);
  await throughput('server: LOOKUPs', (i) => encodeRendezvous({ type: 'lookup', requestId: i + 1, target: { name: 'bob' } }), 20000);

  for (const c of closers) c();
  server.close();
  udp.close();
  tcp.close();

  const out = join(here, 'results');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'rendezvous.json'), `${JSON.stringify({ date: new Date().toISOString(), node: process.version, rounds: ROUNDS, results }, null, 2)}\n`);
  const lines = ['| Operation (loopback) | median ms | p99 ms | per second |', '|---|---|---|---|'];
  for (const [k, v] of Object.entries(results)) {
    const ps = (v as Record<string, number>).per_second;
    lines.push(`| ${k} | ${v.median_ms} | ${Number.isNaN(v.p99_ms) ? '–' : v.p99_ms} | ${ps ?? '–'} |`);
  }
  writeFileSync(join(out, 'rendezvous.md'), `# Rendezvous (loopback, ${process.version})\n\n${lines.join('\n')}\n`);
  console.log(lines.join('\n'));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
