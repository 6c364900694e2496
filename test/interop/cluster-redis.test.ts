// Two `natpunch serve` nodes sharing a real redis-server (started and killed by this test, loopback only):
// a peer registered on node 1 is reached by `natpunch connect NAME` through node 2 with data both ways; node 1 is
// killed and its peer re-registers on node 2; Redis is killed and restarted and everything recovers without anyone
// stepping in; a draining node (SIGTERM) tells its peers to move, and exits 0. /metrics parses as Prometheus text
// and its counters move with the connections.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listen, type Listener } from '../../src/natpunch.js';
import { RendezvousClient } from '../../src/rendezvous/client.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import type { Session } from '../../src/session/session.js';
import type { MuxStream } from '../../src/session/mux.js';
import { generateKeyPair, keyToId, saveKeyPair } from '../../src/session/identity.js';
import { NATPUNCH, which } from '../helpers/proc.js';
import { metricValue, parsePrometheus } from '../helpers/prom.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { startServeNode, type ServeNode } from '../helpers/serve-node.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const FAST = ['--registration-refresh', '2s', '--registration-ttl', '8s', '--drain-timeout', '5s', '--admin', '0'];

async function waitFor<T>(probe: () => Promise<T | undefined | false>, what: string, ms = 30_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: r.status, body: await r.text() };
}

async function peerNode(node: ServeNode, name: string): Promise<string | undefined> {
  const { body } = await get(`${node.admin}api/peers?q=${name}`);
  const p = (JSON.parse(body) as { peers: Array<{ name: string | null; node: string | null }> }).peers.find(
    (x) => x.name === name,
  );
  return p?.node ?? undefined;
}

async function metrics(node: ServeNode) {
  return parsePrometheus((await get(`${node.admin}metrics`)).body);
}

/** `natpunch connect NAME --rendezvous 127.0.0.1:PORT`: sends `payload`, returns what came back (the echo). */
async function cliConnect(name: string, port: number, keyFile: string, payload: Buffer): Promise<Buffer> {
  const c = spawn(
    process.execPath,
    [NATPUNCH, 'connect', name, '--rendezvous', `127.0.0.1:${port}`, '--key', keyFile],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  const out: Buffer[] = [];
  let err = '';
  c.stdout!.on('data', (d: Buffer) => out.push(d));
  c.stderr!.on('data', (d: Buffer) => (err += d));
  c.stdin!.end(payload);
  const timer = setTimeout(() => c.kill('SIGKILL'), 45_000);
  const [code] = (await once(c, 'exit')) as [number | null];
  clearTimeout(timer);
  assert.equal(code, 0, err);
  return Buffer.concat(out);
}

test(
  'cluster on Redis: connect through another node, node death, Redis restart, drain',
  { skip: which('redis-server') ? false : 'redis-server not installed', timeout: 240_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'natpunch-cluster-'));
    const nodes: ServeNode[] = [];
    let redis: RedisServer | undefined;
    let listener: Listener | undefined;
    let mover: RendezvousClient | undefined;
    let moverTransport: NodeDatagramTransport | undefined;
    try {
      redis = await startRedis();
      const n1 = await startServeNode(['--redis', redis.url, '--node-id', 'n1', ...FAST]);
      nodes.push(n1);
      const n2 = await startServeNode(['--redis', redis.url, '--node-id', 'n2', ...FAST]);
      nodes.push(n2);
      const alice = generateKeyPair();
      const bob = generateKeyPair();
      const bobKey = join(dir, 'bob.key');
      await saveKeyPair(bobKey, bob);

      // Alice registers on node 1 (node 2 second in her list) and echoes whatever a session's stream sends.
      listener = await listen({
        keyPair: alice,
        name: 'alice',
        rendezvous: [
          { host: '127.0.0.1', port: n1.port },
          { host: '127.0.0.1', port: n2.port },
        ],
        bind: { address: '127.0.0.1' },
        allow: [bob.publicKey],
        transport: 'udp',
      });
      listener.on('session', (s: Session) => s.on('stream', (st: MuxStream) => st.pipe(st)));
      assert.equal(
        await waitFor(() => peerNode(n2, 'alice'), 'alice in the shared registry'),
        'n1',
        'registered with node 1, visible on node 2',
      );

      // 1. Bob reaches alice by name through node 2: the introduction crosses to node 1 over Redis.
      const before = await metrics(n2);
      const payload = randomBytes(64 * 1024);
      assert.equal(
        sha(await cliConnect('alice', n2.port, bobKey, payload)),
        sha(payload),
        'data both ways through node 2',
      );
      const after2 = await metrics(n2);
      const after1 = await metrics(n1);
      assert.equal(
        metricValue(after2, 'natpunch_rendezvous_introductions_total', { result: 'remote' }) -
          metricValue(before, 'natpunch_rendezvous_introductions_total', { result: 'remote' }),
        1,
      );
      assert.equal(
        metricValue(after1, 'natpunch_cluster_pushes_total', { direction: 'delivered' }),
        1,
        'node 1 delivered it, once',
      );
      assert.ok(metricValue(after2, 'stun_requests_total') >= metricValue(before, 'stun_requests_total'));
      assert.ok(metricValue(after2, 'natpunch_rendezvous_registrations') >= 1);
      await waitFor(
        async () =>
          metricValue(await metrics(n2), 'natpunch_punch_reports_total', { result: 'counted' }) >= 1 ||
          metricValue(await metrics(n1), 'natpunch_punch_reports_total', { result: 'counted' }) >= 1,
        'an outcome report',
      );

      // 2. Node 1 dies (SIGKILL, no drain): alice's next refresh gets no answer, she moves to node 2 and registers there.
      await n1.stop('SIGKILL');
      assert.equal(
        await waitFor(
          async () => ((await peerNode(n2, 'alice')) === 'n2' ? 'n2' : undefined),
          'alice re-registered on node 2',
          60_000,
        ),
        'n2',
      );
      const again = randomBytes(16 * 1024);
      assert.equal(
        sha(await cliConnect('alice', n2.port, bobKey, again)),
        sha(again),
        'new connections succeed through node 2',
      );

      // 3. Redis dies: node 2 reports unhealthy; Redis comes back empty: node 2 reconnects, alice re-registers, and
      //    connections work again, with no operator action.
      await redis.kill();
      await waitFor(
        async () => (await get(`${n2.admin}healthz`)).status === 503,
        '/healthz failing while Redis is down',
      );
      const ready = await get(`${n2.admin}readyz`);
      assert.equal(ready.status, 503);
      await redis.start();
      await waitFor(async () => (await get(`${n2.admin}healthz`)).status === 200, '/healthz passing again');
      await waitFor(() => peerNode(n2, 'alice'), 'alice back in the (restarted, empty) Redis', 60_000);
      const third = randomBytes(8 * 1024);
      assert.equal(
        sha(await cliConnect('alice', n2.port, bobKey, third)),
        sha(third),
        'connections after the Redis restart',
      );

      // 4. Drain: node 3 joins; a peer on node 2 with node 3 next is told to move when node 2 gets SIGTERM.
      const n3 = await startServeNode(['--redis', redis.url, '--node-id', 'n3', ...FAST]);
      nodes.push(n3);
      moverTransport = await NodeDatagramTransport.bind({ type: 'udp4', address: '127.0.0.1' });
      mover = new RendezvousClient({
        transport: moverTransport,
        server: [
          { host: '127.0.0.1', port: n2.port },
          { host: '127.0.0.1', port: n3.port },
        ],
        keyPair: generateKeyPair(),
        name: 'carol',
      });
      await mover.register();
      const moved = once(mover, 'server-changed');
      const registeredOn3 = new Promise<void>((resolve) =>
        mover!.on('registered', () => mover!.server.port === n3.port && resolve()),
      );
      await n2.stop('SIGTERM');
      const [where, reason] = (await moved) as [{ port: number }, string];
      assert.equal(reason, 'moved', 'told to move (MOVE), not timed out');
      assert.equal(where.port, n3.port);
      await registeredOn3;
      assert.equal(await waitFor(() => peerNode(n3, 'carol'), 'carol on node 3'), 'n3');
      const exit = await n2.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, 'a draining node exits 0');
      assert.ok(keyToId(alice.publicKey));
    } finally {
      mover?.close();
      moverTransport?.close();
      await listener?.close();
      for (const n of nodes) await n.stop('SIGKILL');
      await redis?.stop();
      await rm(dir, { recursive: true, force: true });
    }
  },
);
