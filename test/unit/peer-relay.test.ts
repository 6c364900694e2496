import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { spawnSync } from 'node:child_process';
import { startServer } from '../../src/server/serve.js';
import { TurnClient } from '../../src/relay/client.js';
import { TurnServer } from '../../src/relay/server.js';
import { PeerRelay } from '../../src/relay/peer-relay.js';
import { makeSharedSecretCredentials, SharedSecretStore } from '../../src/relay/auth.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { RendezvousClient, type TurnCredentials } from '../../src/rendezvous/client.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { RedisBackend } from '../../src/rendezvous/redis.js';
import { startRedis } from '../helpers/redis.js';
import { NATPUNCH, startUntilLine, stop } from '../helpers/proc.js';

// Peer-relay mode, as `npm start` (natpunch serve, no flags) runs it: registered peers get scoped relay
// credentials; an allocation reaches the peers introduced to its key and nothing else (issue 16, issue 18).

async function creds(c: RendezvousClient): Promise<TurnCredentials> {
  if (c.turnCredentials) return c.turnCredentials;
  return new Promise((resolve) => c.once('turn-credentials', resolve));
}

function nextMessage(t: NodeDatagramTransport | dgram.Socket, match: (b: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve) => {
    if (t instanceof dgram.Socket) {
      const on = (m: Buffer) => {
        if (!match(m)) return;
        t.off('message', on);
        resolve(m);
      };
      t.on('message', on);
      return;
    }
    const off = t.onMessage((m) => {
      if (!match(m)) return;
      off();
      resolve(Buffer.from(m));
    });
  });
}

const forbidden = (e: unknown) => isNatpunchError(e, 'TURN_FORBIDDEN_PEER');

/**
 * What a registered peer can do with its default relay on `port`: relay to its introduced peer (exactly where it
 * was seen: loopback) and to that peer's allocation; never to a third host, another port or the relay host.
 */
async function scopeChecks(port: number): Promise<void> {
  const ta = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const tb = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const third = dgram.createSocket('udp4');
  await new Promise<void>((r) => third.bind(0, '127.0.0.2', r));
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const a = new RendezvousClient({
    transport: ta,
    server: { host: '127.0.0.1', port },
    keyPair: ka,
    tcpFallback: false,
    autoRefresh: false,
  });
  const b = new RendezvousClient({
    transport: tb,
    server: { host: '127.0.0.1', port },
    keyPair: kb,
    tcpFallback: false,
    autoRefresh: false,
  });
  const turnA = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const turnB = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  let ca: TurnClient | undefined;
  let cb: TurnClient | undefined;
  try {
    await a.register();
    await b.register();
    const credA = await creds(a);
    const credB = await creds(b);
    assert.match(
      credA.username,
      new RegExp(`^\\d+:${Buffer.from(ka.publicKey).toString('hex')}$`),
      'scoped to the key',
    );
    ca = new TurnClient({
      transport: turnA,
      server: { address: '127.0.0.1', port },
      username: credA.username,
      password: credA.password,
    });
    cb = new TurnClient({
      transport: turnB,
      server: { address: '127.0.0.1', port },
      username: credB.username,
      password: credB.password,
    });
    const allocA = await ca.allocate();
    const allocB = await cb.allocate();
    const bAt = { address: '127.0.0.1', port: tb.address().port };

    // Before any introduction, B is nobody to A's allocation.
    await assert.rejects(ca.createPermission([bAt]), forbidden, 'not yet introduced');
    // An introduction in either direction scopes both keys to each other.
    await b.requestConnect(ka.publicKey);

    // The introduced peer, exactly where the rendezvous saw it (127.0.0.1 is denied by default: exact port only).
    const ch = await ca.bindChannel(bAt);
    assert.ok(ch >= 0x4000);
    const got = nextMessage(tb, (m) => m.toString() === 'hello b');
    ca.send(Buffer.from('hello b'), bAt);
    assert.equal((await got).toString(), 'hello b');

    // A third host, and other ports of the introduced peer's (loopback) address: refused.
    const thirdAt = { address: '127.0.0.2', port: (third.address() as { port: number }).port };
    await assert.rejects(ca.createPermission([thirdAt]), forbidden, 'third host');
    await assert.rejects(
      ca.bindChannel({ address: '127.0.0.1', port: thirdAt.port }),
      forbidden,
      'another port on the peer address',
    );
    // The relay host's own services (its STUN/rendezvous port on the relay address): refused.
    await assert.rejects(
      ca.bindChannel({ address: allocA.relayed[0]!.address, port }),
      forbidden,
      'a service on the relay host',
    );
    // The introduced peer's own allocation (relay to relay): allowed, and data arrives.
    const relayB = allocB.relayed[0]!;
    await ca.bindChannel(relayB);
    await cb.createPermission([allocA.relayed[0]!]);
    const viaRelay = new Promise<string>((resolve) => {
      const off = cb!.onData((data) => {
        off();
        resolve(data.toString());
      });
    });
    ca.send(Buffer.from('relay to relay'), relayB);
    assert.equal(await viaRelay, 'relay to relay');
  } finally {
    await ca?.close().catch(() => {});
    await cb?.close().catch(() => {});
    a.close();
    b.close();
    for (const t of [ta, tb, turnA, turnB]) t.close();
    third.close();
  }
}

test('default serve (no options): a registered peer relays to its introduced peer and its relay, never to a third host or the relay host', async () => {
  const server = await startServer({ port: 0 });
  try {
    assert.ok(server.relay?.peerRelay, 'the relay runs by default, in peer-relay mode');
    await scopeChecks(server.udp[0]!.port);
    assert.ok(server.relay!.turn.stats.deniedPeers >= 4);
  } finally {
    await server.close();
  }
});

test('`natpunch serve` as npm start runs it (no relay flags): the same scope holds', async () => {
  const { child, line } = await startUntilLine(NATPUNCH, ['serve', '--port', '0', '--json'], (l) => l.startsWith('{'));
  try {
    const listening = JSON.parse(line) as {
      udp: Array<{ port: number }>;
      relay: { peerRelay: boolean; fullTurn: boolean } | null;
    };
    assert.equal(listening.relay?.peerRelay, true);
    assert.equal(listening.relay?.fullTurn, false);
    await scopeChecks(listening.udp[0]!.port);
  } finally {
    await stop(child);
  }
});

test('`natpunch serve --no-relay` runs no relay', async () => {
  const { child, line } = await startUntilLine(
    NATPUNCH,
    ['serve', '--port', '0', '--address', '127.0.0.1', '--no-relay', '--json'],
    (l) => l.startsWith('{'),
  );
  try {
    const listening = JSON.parse(line) as { relay: unknown; turn: unknown };
    assert.equal(listening.relay, null);
    assert.equal(listening.turn, null);
  } finally {
    await stop(child);
  }
});

test('serve with relay: false hands out no relay credentials and answers no TURN request', async () => {
  const server = await startServer({ port: 0, addresses: ['127.0.0.1'], relay: false });
  const t = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const c = new RendezvousClient({
    transport: t,
    server: { host: '127.0.0.1', port: server.udp[0]!.port },
    keyPair: generateKeyPair(),
    tcpFallback: false,
    autoRefresh: false,
  });
  try {
    assert.equal(server.relay, undefined);
    await c.register();
    // Credentials would follow REGISTERED at once; a round trip after it proves none came.
    await c.ping();
    assert.equal(c.turnCredentials, undefined);
  } finally {
    c.close();
    t.close();
    await server.close();
  }
});

const haveRedis = spawnSync('sh', ['-c', 'command -v redis-server']).status === 0;

test(
  'two nodes sharing Redis: an introduction made on one node scopes the responder’s allocation on the other',
  { skip: haveRedis ? false : 'redis-server not installed', timeout: 60_000 },
  async () => {
    const redis = await startRedis();
    const b1 = await RedisBackend.connect({ url: redis.url, nodeId: 'n1' });
    const b2 = await RedisBackend.connect({ url: redis.url, nodeId: 'n2' });
    const x = await startServer({
      port: 0,
      addresses: ['127.0.0.1'],
      rendezvous: { registry: b1.registry, cluster: b1.cluster },
    });
    const y = await startServer({
      port: 0,
      addresses: ['127.0.0.1'],
      rendezvous: { registry: b2.registry, cluster: b2.cluster },
    });
    const ti = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    const tr = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    const tt = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    const ki = generateKeyPair();
    const kr = generateKeyPair();
    const i = new RendezvousClient({
      transport: ti,
      server: { host: '127.0.0.1', port: x.udp[0]!.port },
      keyPair: ki,
      tcpFallback: false,
      autoRefresh: false,
    });
    const r = new RendezvousClient({
      transport: tr,
      server: { host: '127.0.0.1', port: y.udp[0]!.port },
      keyPair: kr,
      tcpFallback: false,
      autoRefresh: false,
    });
    let turn: TurnClient | undefined;
    try {
      await i.register();
      await r.register();
      const cr = await creds(r);
      turn = new TurnClient({
        transport: tt,
        server: { address: '127.0.0.1', port: y.udp[0]!.port },
        username: cr.username,
        password: cr.password,
      });
      await turn.allocate();
      const iAt = { address: '127.0.0.1', port: ti.address().port };
      await assert.rejects(turn.bindChannel(iAt), forbidden, 'not introduced yet');
      // I asks node X for R, held by node Y: Y pushes the introduction to R and its relay learns it.
      const notified = new Promise((resolve) => r.once('connect-request', resolve));
      await i.requestConnect(kr.publicKey);
      await notified;
      await turn.bindChannel(iAt);
      const got = nextMessage(ti, (m) => m.toString() === 'across nodes');
      turn.send(Buffer.from('across nodes'), iAt);
      assert.equal((await got).toString(), 'across nodes');
    } finally {
      await turn?.close().catch(() => {});
      i.close();
      r.close();
      for (const t of [ti, tr, tt]) t.close();
      await x.close();
      await y.close();
      await b1.close();
      await b2.close();
      await redis.stop();
    }
  },
);

test('PeerRelay: scoped credentials, introductions that last while used and lapse when not, bounded state', () => {
  let now = 1_000_000_000_000;
  const pr = new PeerRelay({ port: 3478, ttlSeconds: 600, maxKeys: 3, now: () => now });
  const a = generateKeyPair().publicKey;
  const b = generateKeyPair().publicKey;
  const ah = Buffer.from(a).toString('hex');
  const bh = Buffer.from(b).toString('hex');
  const seenA = { transport: 'udp' as const, address: '198.51.100.7', port: 4000 };
  const seenB = { transport: 'udp' as const, address: '203.0.113.9', port: 5000 };
  const c = pr.issue(a, seenA, false, now)!;
  assert.equal(pr.keyOf(c.username), ah);
  assert.ok(pr.credentials.key(c.username, 'natpunch', 1), 'its own credentials validate');
  assert.equal(
    pr.credentials.key(`${Math.floor(now / 1000) - 1}:${ah}`, 'natpunch', 1),
    null,
    'expired usernames are unknown',
  );
  assert.equal(pr.issue(a, seenA, true, now + 1000), null, 'a refresh soon after gets none');
  assert.ok(pr.issue(a, seenA, true, now + 301_000), 'after half the lifetime it gets new ones');
  assert.equal(pr.allowsAddress(ah, seenB.address), false, 'not introduced');
  pr.introduce(a, [seenA], b, [seenB], now);
  assert.ok(pr.allowsAddress(ah, seenB.address) && pr.allowsAddress(bh, seenA.address), 'both ways');
  assert.ok(pr.allowsEndpoint(ah, seenB.address, 5000) && !pr.allowsEndpoint(ah, seenB.address, 5001));
  assert.equal(pr.allowsAddress(ah, '192.0.2.99'), false, 'a third host');
  // Used within each lifetime, the introduction stays; unused for a lifetime, it lapses.
  for (let i = 0; i < 5; i++) {
    now += 500_000;
    assert.ok(pr.allowsAddress(ah, seenB.address), `still in use after ${i + 1} × 500 s`);
  }
  now += 601_000;
  assert.equal(pr.allowsAddress(ah, seenB.address), false, 'lapsed after a lifetime unused');
  // At most maxKeys keys are remembered.
  for (let i = 0; i < 5; i++) pr.issue(generateKeyPair().publicKey, seenA, false, now);
  assert.equal(pr.size, 3);
});

test('requests on an allocation keep working after its time-limited credentials expire; a new allocation needs valid ones', async () => {
  let now = Date.now();
  const store = new SharedSecretStore(['s'], () => now);
  const server = new TurnServer({ credentials: store, relayAddress: '127.0.0.1' });
  const { port } = await server.listen({ port: 0, address: '127.0.0.1' });
  const c = makeSharedSecretCredentials('s', 60, 'u', now);
  const t1 = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const t2 = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const first = new TurnClient({
    transport: t1,
    server: { address: '127.0.0.1', port },
    username: c.username,
    password: c.password,
  });
  const second = new TurnClient({
    transport: t2,
    server: { address: '127.0.0.1', port },
    username: c.username,
    password: c.password,
  });
  try {
    await first.allocate();
    now += 3_600_000; // the credentials expired an hour ago
    assert.ok((await first.refresh(600)) > 0, 'the allocation is refreshed with the key that created it');
    await first.createPermission(['198.51.100.1']);
    await assert.rejects(second.allocate(), /401/, 'a new allocation with expired credentials is refused');
  } finally {
    await first.close().catch(() => {});
    await second.close().catch(() => {});
    t1.close();
    t2.close();
    server.close();
  }
});
