/**
 * Issue 19's cluster acceptance in the NAT lab: a real redis-server on a lab host (`db`), two `natpunch serve --redis`
 * nodes on two public lab hosts (`s1`, `s2`), peers behind real Linux NATs, and the CLI exactly as a user runs it —
 * `natpunch listen --name NAME --rendezvous s1,s2` and `natpunch connect NAME --rendezvous s2` with NO traversal
 * flags. Proven here, on real kernels and real NATs (each node sees the peers' public addresses, not loopback):
 *
 *   1. a peer registered on node 1 (behind a full cone) is reached by `connect NAME` through node 2 (from behind a
 *      port-restricted cone), data both ways; node 2's /metrics counts a remote introduction, node 1's a delivered
 *      cluster push;
 *   2. two peers behind symmetric-random NATs, one on each node, connect through the relay (no direct path exists):
 *      each node's peer relay learned the introduction made on the other node; the two connections' outcome
 *      reports (each peer reports to its own node) are counted once each across the cluster;
 *   3. node 1 dies (SIGKILL): its peer moves to node 2 by itself and new connections succeed;
 *   4. Redis dies: node 2's /healthz fails (503) while it is unreachable; Redis restarts empty: node 2 reconnects,
 *      the peer re-registers, and connections work again — nobody steps in.
 *
 * Nothing leaves the lab: Redis listens on the db host's lab address, the admin endpoints on each server
 * namespace's own loopback (read with curl inside the namespace).
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type LabProcess, type TopologySpec } from '../../src/lab/index.js';
import { REPORT_MERGE_WAIT_MS } from '../../src/server/metrics.js';
import { which } from '../helpers/proc.js';
import { metricValue, parsePrometheus } from '../helpers/prom.js';
import { CLI } from './fixtures/connect-matrix.js';
import { cliEvent, tokenBothWays } from './fixtures/cli-event.js';

const ENDPOINT = fileURLToPath(new URL('./fixtures/cluster-endpoint.ts', import.meta.url));
const RV_PORT = 3478;
const REDIS_PORT = 6379;
const ADMIN = '127.0.0.1:9478';
/** Short registration refresh/TTL so a peer notices a dead node within seconds (defaults: 25 s / 90 s). */
/** The listener ends a silent session after this long (see listener()). */
const LISTEN_IDLE_MS = 3_000;
const FAST = ['--registration-refresh', '2s', '--registration-ttl', '8s', '--drain-timeout', '5s'];

const skip =
  labUnavailableReason() ??
  (!which('redis-server') ? 'redis-server is not installed' : !which('curl') ? 'curl is not installed' : false);
if (skip) console.log(`# lab cluster test skipped: ${skip}`);

/** Two server hosts and a database host on the public side; a cone pair and a symmetric-random pair behind NATs. */
function clusterTopology(): TopologySpec {
  return {
    routers: {
      natA: { on: 'internet', wan: '198.51.100.10/26', lan: '10.1.0.0/24', nat: 'port-restricted-cone' },
      natB: { on: 'internet', wan: '203.0.113.10/26', lan: '10.2.0.0/24', nat: 'full-cone' },
      rndA: { on: 'internet', wan: '198.51.100.70/26', lan: '10.3.0.0/24', nat: 'symmetric-random' },
      rndB: { on: 'internet', wan: '203.0.113.70/26', lan: '10.4.0.0/24', nat: 'symmetric-random' },
    },
    hosts: {
      s1: { on: 'internet', addrs: ['192.0.2.10/26'] },
      s2: { on: 'internet', addrs: ['192.0.2.70/26'] },
      db: { on: 'internet', addrs: ['192.0.2.130/26'] },
      a: { on: 'natA' },
      b: { on: 'natB' },
      ra: { on: 'rndA' },
      rb: { on: 'rndB' },
    },
  };
}

/** A CLI's progress events, one word each (for failure messages). */
function events(p: LabProcess): string {
  return p.stderr
    .split('\n')
    .map((x) => /"event":"([^"]+)"/.exec(x)?.[1] ?? /"ok":(true|false)/.exec(x)?.[1])
    .filter(Boolean)
    .join(' ');
}

async function until<T>(probe: () => Promise<T | undefined | false>, what: string, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('cluster on Redis in the NAT lab: two serve nodes, peers behind real NATs', { skip }, () => {
  let lab: Lab;
  let redis: LabProcess | undefined;
  const nodes = new Map<string, LabProcess>();

  const redisUrl = () => `redis://${lab.addr('db')}:${REDIS_PORT}`;
  const rv = (host: string) => `${lab.addr(host)}:${RV_PORT}`;

  async function startRedis(): Promise<void> {
    redis = lab.spawn('db', [
      'redis-server',
      '--port',
      String(REDIS_PORT),
      '--bind',
      lab.addr('db'),
      '--save',
      '',
      '--appendonly',
      'no',
      // Reachable from the other lab hosts (protected mode answers only loopback without a password); the lab has no
      // link to any real network.
      '--protected-mode',
      'no',
    ]);
    await until(async () => {
      const r = await lab.exec('db', ['redis-cli', '-h', lab.addr('db'), '-p', String(REDIS_PORT), 'PING']);
      return r.stdout.trim() === 'PONG';
    }, 'redis-server answering PING');
  }

  async function startNode(host: string, id: string): Promise<LabProcess> {
    const p = lab.node(host, CLI, [
      'serve',
      '--json',
      '--redis',
      redisUrl(),
      '--node-id',
      id,
      '--admin',
      ADMIN,
      ...FAST,
    ]);
    await p.next((m) => m.event === 'listening', { timeoutMs: 30_000 });
    nodes.set(host, p);
    return p;
  }

  /** GET on a node's admin endpoint, from inside its namespace (the endpoint listens on that namespace's loopback). */
  async function admin(host: string, path: string): Promise<{ status: number; body: string }> {
    const r = await lab.exec(host, ['curl', '-s', '-m', '5', '-w', '\n%{http_code}', `http://${ADMIN}${path}`]);
    const cut = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(cut + 1)), body: r.stdout.slice(0, cut) };
  }
  const metrics = async (host: string) => parsePrometheus((await admin(host, '/metrics')).body);
  /** The node a name is registered with, as the shared registry says (read through `host`'s admin endpoint). */
  async function nodeOf(host: string, name: string): Promise<string | undefined> {
    const { status, body } = await admin(host, `/api/peers?q=${name}`);
    if (status !== 200) return undefined;
    const peers = (JSON.parse(body) as { peers: Array<{ name: string | null; node: string | null }> }).peers;
    return peers.find((p) => p.name === name)?.node ?? undefined;
  }

  /** `natpunch listen --name NAME --rendezvous LIST --keep-open`, no traversal flags; resolves once listening. */
  async function listener(host: string, name: string, servers: string[]): Promise<LabProcess> {
    const l = lab.node(host, CLI, [
      'listen',
      '--name',
      name,
      '--rendezvous',
      servers.join(','),
      '--allow-any',
      '--keep-open',
      // A connector killed by the test never says goodbye: the listener drops the session after 3 s of silence and
      // is free for the next one (sessions are served one after another, like `nc -lk`).
      '--idle-timeout',
      String(LISTEN_IDLE_MS),
      '--json',
    ]);
    await cliEvent(l, 'listening', 40_000);
    return l;
  }

  /** `natpunch connect NAME --rendezvous LIST`, no traversal flags: lines both ways; returns the path line. */
  async function connectOnce(host: string, name: string, servers: string[], l: LabProcess) {
    // The listener serves the next session once the last one went idle.
    await until(
      async () => {
        const e = l.stderr;
        return e.lastIndexOf('"event":"idle-timeout"') >= e.lastIndexOf('"event":"connected"');
      },
      `the listener free for the next session (${events(l)})`,
    );
    const c = lab.node(host, CLI, ['connect', name, '--rendezvous', servers.join(','), '--json', '--timeout', '30000']);
    try {
      await tokenBothWays(c, l);
      return await cliEvent(c, 'path', 5_000);
    } catch (err) {
      throw new Error(`${(err as Error).message}\nconnector: ${events(c)}\nlistener: ${events(l)}`, {
        cause: err,
      });
    } finally {
      await c.close();
    }
  }

  before(async () => {
    lab = await Lab.up(clusterTopology());
    await startRedis();
    await startNode('s1', 'n1');
    await startNode('s2', 'n2');
  });
  after(async () => {
    await lab?.down(); // kills redis-server, both nodes and every peer by PID, removes the namespaces
  });

  test('a peer on node 1 is reached through node 2; node 1 dies; Redis restarts', { timeout: 300_000 }, async () => {
    // bob (full cone) registers with node 1, node 2 next in his list.
    const bob = await listener('b', 'bob', [rv('s1'), rv('s2')]);
    assert.equal(await until(() => nodeOf('s2', 'bob'), 'bob in the shared registry'), 'n1');

    // 1. alice (port-restricted cone) asks node 2 for bob: the introduction crosses to node 1 over Redis.
    const before2 = await metrics('s2');
    const before1 = await metrics('s1');
    const path = await connectOnce('a', 'bob', [rv('s2')], bob);
    assert.notEqual(path.kind, 'relay', `two cones connect directly: ${JSON.stringify(path)}`);
    const after2 = await metrics('s2');
    const after1 = await metrics('s1');
    const moved = (a: typeof after2, b: typeof after2, name: string, labels: Record<string, string> = {}) =>
      metricValue(a, name, labels) - metricValue(b, name, labels);
    assert.equal(moved(after2, before2, 'natpunch_rendezvous_introductions_total', { result: 'remote' }), 1);
    assert.equal(
      moved(after1, before1, 'natpunch_cluster_pushes_total', { direction: 'delivered' }),
      1,
      'node 1 delivered the introduction, once',
    );
    assert.ok(moved(after2, before2, 'stun_requests_total') >= 1, 'node 2 answered the connector’s STUN');
    // 2. Relay across nodes: rob (symmetric-random, node 1) and a symmetric-random connector through node 2. No
    //    direct path exists; each node's peer relay must accept the introduction made on the other one.
    const rob = await listener('ra', 'rob', [rv('s1'), rv('s2')]);
    assert.equal(await until(() => nodeOf('s2', 'rob'), 'rob in the shared registry'), 'n1');
    const relayed = await connectOnce('rb', 'rob', [rv('s2')], rob);
    assert.equal(relayed.kind, 'relay', `random ↔ random is relayed: ${JSON.stringify(relayed)}`);

    // Outcome reports: each peer reports to its own node (the listeners to node 1, the connectors to node 2). The
    // two reports of a connection meet through Redis, so the cluster counts each connection once — not once per node.
    const both = async (name: string, labels: Record<string, string> = {}) =>
      metricValue(await metrics('s1'), name, labels) + metricValue(await metrics('s2'), name, labels);
    await until(
      async () =>
        (await both('natpunch_punch_reports_total', { result: 'counted' })) >= 4 &&
        (await both('natpunch_punch_outcomes_total')) >= 2,
      'four reports counted, two outcomes',
    );
    // A report whose partner never comes is counted alone after REPORT_MERGE_WAIT_MS: wait that out, then no more.
    await new Promise((r) => setTimeout(r, REPORT_MERGE_WAIT_MS + 1_500));
    assert.equal(await both('natpunch_punch_outcomes_total'), 2, 'one outcome per connection, cluster-wide');

    // Two long-lived Endpoints behind the random NATs, both registered with node 1 (node 2 next): after node 1 dies,
    // a new connection between them needs a relay, and the allocations both held were on node 1.
    const rex = lab.node('ra', ENDPOINT, ['rex', [rv('s1'), rv('s2')].join(',')]);
    const roy = lab.node('rb', ENDPOINT, ['roy', [rv('s1'), rv('s2')].join(',')]);
    await Promise.all([rex, roy].map((p) => p.next((m) => m.ev === 'ready', { timeoutMs: 40_000 })));
    for (const n of ['rex', 'roy']) assert.equal(await until(() => nodeOf('s2', n), `${n} registered`), 'n1');

    // 3. Node 1 dies without draining (SIGKILL): bob's refresh goes unanswered, he moves to node 2 and registers there.
    nodes.get('s1')!.kill('SIGKILL');
    await nodes.get('s1')!.exited;
    assert.equal(
      await until(async () => ((await nodeOf('s2', 'bob')) === 'n2' ? 'n2' : undefined), 'bob on node 2', 60_000),
      'n2',
    );
    await connectOnce('a', 'bob', [rv('s2')], bob);
    // rob's relay allocation died with node 1: the relayed pair still connects through node 2.
    assert.equal(
      await until(async () => ((await nodeOf('s2', 'rob')) === 'n2' ? 'n2' : undefined), 'rob on node 2'),
      'n2',
    );
    const relayedAgain = await connectOnce('rb', 'rob', [rv('s2')], rob);
    assert.equal(relayedAgain.kind, 'relay', JSON.stringify(relayedAgain));
    await rob.close();
    // Both Endpoints moved to node 2 and hold allocations there now: the relayed connection between them works.
    for (const n of ['rex', 'roy'])
      await until(async () => ((await nodeOf('s2', n)) === 'n2' ? 'n2' : undefined), `${n} on node 2`);
    rex.send({ cmd: 'connect', to: 'roy' });
    const up = await rex.next((m) => m.ev === 'connected' || m.ev === 'error', { timeoutMs: 45_000 });
    assert.equal(up.ev, 'connected', `${JSON.stringify(up)} ${rex.stderr.slice(-1000)}`);
    assert.equal(up.kind, 'relay');
    assert.equal((await rex.next((m) => m.ev === 'echo', { timeoutMs: 20_000 })).ok, true, 'data both ways');
    await Promise.all([rex.close(), roy.close()]);

    // 4. Redis dies: node 2 is unhealthy while it cannot reach it, and recovers by itself when it is back (empty).
    redis!.kill('SIGKILL');
    await redis!.exited;
    await until(async () => (await admin('s2', '/healthz')).status === 503, '/healthz failing while Redis is down');
    assert.equal((await admin('s2', '/readyz')).status, 503);
    await startRedis();
    await until(async () => (await admin('s2', '/healthz')).status === 200, '/healthz passing again');
    assert.equal(
      await until(() => nodeOf('s2', 'bob'), 'bob back in the restarted (empty) Redis', 60_000),
      'n2',
      'the peer re-registered without anyone stepping in',
    );
    await connectOnce('a', 'bob', [rv('s2')], bob);
    await bob.close();
  });
});
