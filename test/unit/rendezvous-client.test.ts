import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { decodeRendezvous } from '../../src/wire/rendezvous.js';
import { isNatpunchError } from '../../src/util/errors.js';
import type { ConnectOffer } from '../../src/rendezvous/client.js';
import { Bag, once, startServer, waitFor, type TestServer } from './rendezvous-harness.js';

async function deadUdpPort(): Promise<number> {
  const t = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const port = t.address().port;
  t.close();
  return port;
}

test('the server measures RTT to a registered peer (PING/PONG) and the client reports its own', async () => {
  const srv = await startServer();
  const bag = new Bag();
  try {
    const c = await bag.client(srv);
    const reg = await c.register();
    assert.ok(reg.rttMs !== undefined && reg.rttMs >= 0);
    await waitFor(() => srv.server.stats().rttSamples >= 1); // a retransmitted PING under load may add a sample
    assert.ok((await c.ping()) >= 0);
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('after a server restart the client re-registers by itself', async () => {
  let srv: TestServer | undefined = await startServer({ refreshIntervalMs: 200 });
  const port = srv.port;
  const bag = new Bag();
  try {
    const alice = await bag.client(srv, { name: 'alice' });
    await alice.register();
    await srv.close();
    srv = await startServer({ refreshIntervalMs: 200 }, port);
    const fresh = srv;
    assert.equal(fresh.server.stats().registrations, 0);
    const probe = await bag.client(fresh);
    await waitFor(
      async () => {
        try {
          return (await probe.lookup('alice')).name === 'alice';
        } catch (e) {
          if (isNatpunchError(e, 'PEER_NOT_FOUND')) return false;
          throw e;
        }
      },
      5000,
      50,
    );
    assert.equal(fresh.server.stats().registrations, 1);
    assert.equal(alice.via, 'udp');
  } finally {
    await bag.close();
    await srv?.close();
  }
});

test('UDP blocked: the client falls back to TCP, registers, and receives and sends connect requests over it', async () => {
  const srv = await startServer();
  const bag = new Bag();
  try {
    const blocked = await bag.client(
      { port: await deadUdpPort(), tcpPort: srv.tcpPort },
      { name: 'walled', initialRtoMs: 50, maxTransmissions: 3 },
    );
    const reg = await blocked.register();
    assert.equal(reg.via, 'tcp');
    assert.equal(blocked.via, 'tcp');
    assert.equal(reg.reflexive.transport, 'tcp');
    assert.equal(srv.server.stats().tcpAccepted, 1);

    // A UDP peer reaches the TCP-registered one; the notification is pushed down the TCP connection.
    const open = await bag.client(srv, { name: 'open' });
    await open.register();
    const incoming = once<ConnectOffer>(blocked, 'connect-request');
    const offer = await open.requestConnect('walled');
    const notify = await incoming;
    assert.equal(notify.via, 'tcp');
    assert.deepEqual(notify.connectionId, offer.connectionId);
    assert.ok(offer.candidates.some((c) => c.type === 'srflx' && c.transport === 'tcp'));

    // And the other way round, over the same TCP connection (no second UDP timeout).
    const toOpen = once<ConnectOffer>(open, 'connect-request');
    const back = await blocked.requestConnect('open');
    assert.equal(back.via, 'tcp');
    assert.equal((await toOpen).peerName, 'walled');
    assert.equal((await blocked.lookup('open')).name, 'open');
    assert.equal(srv.server.stats().tcpAccepted, 1);
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('UDP silent: TCP starts beside it after two unanswered transmissions, not after the whole UDP schedule', async () => {
  const srv = await startServer();
  const bag = new Bag();
  // A UDP port that swallows requests and counts them (UDP blocked on the way back, as behind a UDP-blocking NAT).
  const sink = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  let udpRequests = 0;
  sink.onMessage(() => udpRequests++);
  try {
    const blocked = await bag.client(
      { port: sink.address().port, tcpPort: srv.tcpPort },
      // Sends at 0, 50, 150, 350, 750, 1550 ms, ... : the whole schedule would take seconds.
      { name: 'walled', initialRtoMs: 50, maxTransmissions: 8 },
    );
    const reg = await blocked.register();
    assert.equal(reg.via, 'tcp');
    assert.equal(blocked.via, 'tcp');
    assert.equal(srv.server.stats().tcpAccepted, 1);
    // The hedge leaves with the third transmission; its answer comes long before the eighth.
    assert.ok(udpRequests >= 3 && udpRequests < 8, `UDP requests before the TCP answer: ${udpRequests}`);
    // Over TCP from now on: the next request goes there at once.
    const before = udpRequests;
    await blocked.lookup('walled');
    assert.equal(udpRequests, before);
  } finally {
    sink.close();
    await bag.close();
    await srv.close();
  }
});

test('UDP answers lost: the TCP hedge is a fresh signed request, registered, not refused as a replay of the UDP copy', async () => {
  const srv = await startServer();
  const bag = new Bag();
  // Passes requests to the server over UDP and drops every answer: the server has the UDP copy when TCP starts.
  const oneWay = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const toServer = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  let forwarded = 0;
  oneWay.onMessage((msg) => {
    forwarded++;
    toServer.send(msg, srv.port, '127.0.0.1');
  });
  try {
    const client = await bag.client(
      { port: oneWay.address().port, tcpPort: srv.tcpPort },
      { name: 'lossy', initialRtoMs: 50, maxTransmissions: 8 },
    );
    const reg = await client.register();
    assert.equal(reg.via, 'tcp');
    assert.ok(forwarded >= 1, 'the server saw the UDP copy first');
    assert.equal(srv.server.stats().replays, 0);
    assert.equal((await client.lookup('lossy')).name, 'lossy');
  } finally {
    oneWay.close();
    toServer.close();
    await bag.close();
    await srv.close();
  }
});

test('once UDP has answered, a silent request is loss: it waits for its UDP schedule before TCP (no hedge)', async () => {
  const srv = await startServer();
  const bag = new Bag();
  // A UDP path through this test: answers pass until dropAnswers is set.
  const front = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const back = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  let client: { port: number; address: string } | undefined;
  let dropAnswers = false;
  let lookups = 0;
  front.onMessage((msg, rinfo) => {
    if (decodeRendezvous(msg).type === 'lookup') lookups++;
    client = { port: rinfo.port, address: rinfo.address };
    back.send(msg, srv.port, '127.0.0.1');
  });
  back.onMessage((msg) => {
    if (!dropAnswers && client) front.send(msg, client.port, client.address);
  });
  try {
    const c = await bag.client(
      { port: front.address().port, tcpPort: srv.tcpPort },
      { name: 'lossy', initialRtoMs: 30, maxTransmissions: 4 },
    );
    assert.equal((await c.register()).via, 'udp');
    dropAnswers = true;
    const found = await c.lookup('lossy');
    assert.equal(found.name, 'lossy');
    // All four UDP transmissions went out before the TCP fallback answered (a hedge would have answered after 3).
    assert.equal(lookups, 4);
  } finally {
    front.close();
    back.close();
    await bag.close();
    await srv.close();
  }
});

test('when the TCP connection drops, a TCP client reconnects and re-registers by itself', async () => {
  const srv = await startServer({ refreshIntervalMs: 60_000 });
  const bag = new Bag();
  const { RendezvousServer } = await import('../../src/rendezvous/server.js');
  const replacement = new RendezvousServer({ refreshIntervalMs: 60_000 });
  try {
    const blocked = await bag.client(
      { port: await deadUdpPort(), tcpPort: srv.tcpPort },
      { name: 'walled', initialRtoMs: 50, maxTransmissions: 2 },
    );
    await blocked.register();
    // A server restart behind the same TCP listener: the old one drops its connections, new ones go to the new one.
    srv.tcp.removeAllListeners('connection');
    srv.tcp.on('connection', (s) => replacement.handleTcp(s));
    srv.server.close();
    await waitFor(() => replacement.stats().registrations === 1, 5000, 50);
    assert.equal(blocked.via, 'tcp');
  } finally {
    replacement.close();
    await bag.close();
    await srv.close();
  }
});

test('bounded failures: TIMEOUT without fallback, RENDEZVOUS when TCP is refused too, ABORTED on abort, closed client', async () => {
  const bag = new Bag();
  try {
    const dead = await deadUdpPort();
    const noFallback = await bag.client(
      { port: dead, tcpPort: dead },
      { initialRtoMs: 20, maxTransmissions: 2, tcpFallback: false },
    );
    await assert.rejects(noFallback.register(), (e: unknown) => isNatpunchError(e, 'TIMEOUT'));
    const refused = await bag.client({ port: dead, tcpPort: dead }, { initialRtoMs: 20, maxTransmissions: 2 });
    await assert.rejects(
      refused.lookup('x'),
      (e: unknown) => isNatpunchError(e, 'RENDEZVOUS') && /TCP/.test(e.message),
    );
    const slow = await bag.client({ port: dead, tcpPort: dead }, { initialRtoMs: 1000, maxTransmissions: 5 });
    await assert.rejects(slow.ping(AbortSignal.timeout(50)), (e: unknown) => isNatpunchError(e, 'ABORTED'));
    const overall = await bag.client(
      { port: dead, tcpPort: dead },
      { initialRtoMs: 1000, maxTransmissions: 5, requestTimeoutMs: 60 },
    );
    await assert.rejects(overall.ping(), (e: unknown) => isNatpunchError(e, 'TIMEOUT'));
    const closing = await bag.client({ port: dead, tcpPort: dead }, { initialRtoMs: 1000, maxTransmissions: 5 });
    const pending = closing.ping();
    closing.close();
    await assert.rejects(pending, (e: unknown) => isNatpunchError(e, 'SOCKET_CLOSED'));
    await assert.rejects(closing.register(), (e: unknown) => isNatpunchError(e, 'SOCKET_CLOSED'));
  } finally {
    await bag.close();
  }
});

test('a client on TCP moves back to UDP at its next refresh once UDP answers', async () => {
  const { RendezvousServer } = await import('../../src/rendezvous/server.js');
  const { createServer } = await import('node:net');
  const udp = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const server = new RendezvousServer({ refreshIntervalMs: 200 });
  const tcp = createServer((s) => server.handleTcp(s));
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', () => resolve()));
  const bag = new Bag();
  try {
    const tcpPort = (tcp.address() as { port: number }).port;
    // The UDP port exists but nobody answers on it yet (as if filtered).
    const c = await bag.client(
      { port: udp.address().port, tcpPort },
      { name: 'mover', initialRtoMs: 50, maxTransmissions: 2 },
    );
    assert.equal((await c.register()).via, 'tcp');
    server.attach(udp);
    await waitFor(() => c.via === 'udp' && c.registration?.via === 'udp', 5000, 50);
    assert.equal(c.registration?.reflexive.transport, 'udp');
    const probe = await bag.client({ port: udp.address().port, tcpPort });
    const found = await probe.lookup('mover');
    assert.ok(found.candidates.some((x) => x.transport === 'udp' && x.port === c.registration?.reflexive.port));
  } finally {
    await bag.close();
    server.close();
    udp.close();
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }
});

test('a live server survives 3000 mutated and random datagrams and still answers', async () => {
  const srv = await startServer({ rateLimit: { perSecond: 100_000, burst: 100_000 } });
  const bag = new Bag();
  try {
    const { encodeRendezvous } = await import('../../src/wire/rendezvous.js');
    const { generateKeyPair } = await import('../../src/session/identity.js');
    const k = generateKeyPair();
    const valid = [
      encodeRendezvous(
        {
          type: 'register',
          requestId: 1,
          publicKey: k.publicKey,
          name: 'fuzz',
          reachable: false,
          rttMs: 1,
          candidates: [{ type: 'host', transport: 'udp', address: '10.0.0.1', port: 9, priority: 1 }],
        },
        k.secretKey,
      ),
      encodeRendezvous(
        {
          type: 'connect',
          requestId: 2,
          publicKey: k.publicKey,
          reachable: false,
          target: { name: 'fuzz' },
          connectionId: Buffer.alloc(16),
          rttMs: 1,
          candidates: [],
        },
        k.secretKey,
      ),
      encodeRendezvous({ type: 'lookup', requestId: 3, target: { name: 'fuzz' } }),
      encodeRendezvous({ type: 'notify-ack', requestId: 4, connectionId: Buffer.alloc(16) }),
      encodeRendezvous({ type: 'pong', requestId: 5, echo: 1, time: 1 }),
    ];
    const t = await bag.transport();
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(valid[rand(valid.length)]!);
      for (let k2 = 0, n = rand(4); k2 < n; k2++) b[1 + rand(b.length - 1)] = rand(256);
      t.send(i % 7 === 0 ? b.subarray(0, rand(b.length)) : b, srv.port, '127.0.0.1');
      if (i % 100 === 99) await new Promise((r) => setImmediate(r));
    }
    // Loopback may drop some of a burst; most arrive.
    let last = -1;
    await waitFor(
      () => {
        const now = srv.server.stats().received;
        const settled = now === last;
        last = now;
        return settled && now > 1000;
      },
      5000,
      100,
    );
    const c = await bag.client(srv);
    assert.ok((await c.ping()) >= 0);
    assert.equal(srv.server.stats().internalErrors, 0);
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('a wildcard-bound server answering from another of its addresses is accepted; strangers cannot push', async () => {
  const { RendezvousServer } = await import('../../src/rendezvous/server.js');
  const { encodeRendezvous } = await import('../../src/wire/rendezvous.js');
  const { generateKeyPair } = await import('../../src/session/identity.js');
  // Bound to 0.0.0.0: a request to 127.0.0.2 is answered from 127.0.0.1 (the kernel picks the source).
  const udp = await NodeDatagramTransport.bind({ address: '0.0.0.0' });
  const server = new RendezvousServer();
  server.attach(udp);
  const bag = new Bag();
  try {
    const port = udp.address().port;
    const { RendezvousClient } = await import('../../src/rendezvous/client.js');
    const mk = async (name?: string) =>
      bag.add(
        new RendezvousClient({
          transport: await bag.transport(),
          server: { host: '127.0.0.2', port },
          keyPair: generateKeyPair(),
          tcpFallback: false,
          initialRtoMs: 100,
          ...(name ? { name } : {}),
        }),
      );
    const b = await mk('carol');
    assert.equal((await b.register()).via, 'udp');
    const a = await mk();
    const incoming = once<import('../../src/rendezvous/client.js').ConnectOffer>(b, 'connect-request');
    await a.requestConnect('carol');
    assert.equal((await incoming).role, 'responder');
    // A notification from another port (not the server) is ignored.
    const stranger = await bag.transport();
    let got = 0;
    b.on('connect-request', () => got++);
    const forged = encodeRendezvous({
      type: 'connect-notify',
      requestId: 9,
      connectionId: Buffer.alloc(16, 9),
      role: 'responder',
      mode: 'connect',
      peerKey: generateKeyPair().publicKey,
      startDelayMs: 0,
      serverTime: 0,
      candidates: [],
    });
    const bAddr = (b as unknown as { registration: { reflexive: { port: number } } }).registration.reflexive.port;
    stranger.send(forged, bAddr, '127.0.0.1');
    assert.ok((await b.ping()) >= 0); // a round trip later, the forged one would have been handled
    assert.equal(got, 0);
  } finally {
    await bag.close();
    server.close();
    udp.close();
  }
});

test('after a UDP hiccup pushes it to TCP, the client tries UDP again within seconds, not a refresh interval', async () => {
  const { RendezvousServer } = await import('../../src/rendezvous/server.js');
  const { createServer } = await import('node:net');
  const udp = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const server = new RendezvousServer({ refreshIntervalMs: 60_000 });
  let detach = server.attach(udp);
  const tcp = createServer((s) => server.handleTcp(s));
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', () => resolve()));
  const bag = new Bag();
  try {
    const tcpPort = (tcp.address() as { port: number }).port;
    const c = await bag.client(
      { port: udp.address().port, tcpPort },
      { name: 'hiccup', initialRtoMs: 50, maxTransmissions: 2 },
    );
    assert.equal((await c.register()).via, 'udp');
    detach(); // UDP goes silent for a moment
    assert.equal((await c.register()).via, 'tcp');
    detach = server.attach(udp);
    await waitFor(() => c.via === 'udp' && c.registration?.via === 'udp', 5000, 50);
    assert.equal(c.registration?.reflexive.transport, 'udp');
  } finally {
    detach();
    await bag.close();
    server.close();
    udp.close();
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }
});
