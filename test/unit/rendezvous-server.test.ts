import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { generateKeyPair, keyToId } from '../../src/session/identity.js';
import { candidatePriority } from '../../src/traversal/candidate.js';
import { isNatpunchError } from '../../src/util/errors.js';
import {
  encodeRendezvous,
  PONG_BYTES,
  type ConnectNotifyMessage,
  type ErrorMessage,
} from '../../src/wire/rendezvous.js';
import type { ConnectOffer } from '../../src/rendezvous/client.js';
import { Bag, exchange, once, startServer, waitFor } from './rendezvous-harness.js';

test('register, then lookup by name and by key returns the host candidates and the srflx the server saw', async () => {
  const srv = await startServer();
  const bag = new Bag();
  try {
    const alice = await bag.client(srv, { name: 'alice' });
    const reg = await alice.register();
    const local = (alice as unknown as { via: string }).via;
    assert.equal(local, 'udp');
    assert.equal(reg.via, 'udp');
    assert.equal(reg.reflexive.address, '127.0.0.1');
    assert.equal(reg.reflexive.transport, 'udp');
    const bob = await bag.client(srv);
    for (const target of ['alice', keyToId(alice.keyPair.publicKey), alice.keyPair.publicKey]) {
      const found = await bob.lookup(target);
      assert.equal(found.name, 'alice');
      assert.deepEqual(found.publicKey, alice.keyPair.publicKey);
      assert.ok(found.candidates.some((c) => c.type === 'host' && c.port === reg.reflexive.port));
      assert.ok(found.expiresInMs > 0);
    }
    await assert.rejects(bob.lookup('nobody'), (e: unknown) => isNatpunchError(e, 'PEER_NOT_FOUND'));
    await assert.rejects(bob.lookup('Not A Name'), (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'));
    assert.equal(srv.server.stats().registrations, 1);
  } finally {
    await bag.close();
    await srv.close();
  }
});

test("connect notify reaches both sides with each other's candidates, srflx and roles", async () => {
  const srv = await startServer();
  const bag = new Bag();
  try {
    // bob advertises a private address that is not its socket, so the srflx (its socket) is a separate candidate.
    const bob = await bag.client(srv, {
      name: 'bob',
      candidates: () => [
        { type: 'host', transport: 'udp', address: '10.9.8.7', port: 4242, priority: candidatePriority('host') },
      ],
    });
    const alice = await bag.client(srv, {
      name: 'alice',
      candidates: () => [
        { type: 'host', transport: 'udp', address: '10.1.1.1', port: 1111, priority: candidatePriority('host') },
      ],
    });
    const bobReg = await bob.register();
    const aliceReg = await alice.register();
    const incoming = once<ConnectOffer>(bob, 'connect-request');
    const offer = await alice.requestConnect('bob');
    const notify = await incoming;

    assert.equal(offer.role, 'initiator');
    assert.equal(notify.role, 'responder');
    assert.deepEqual(offer.connectionId, notify.connectionId);
    assert.equal(offer.mode, 'punch');
    assert.equal(notify.mode, 'punch');
    assert.equal(offer.peerName, 'bob');
    assert.equal(notify.peerName, 'alice');
    assert.deepEqual(offer.peerKey, bob.keyPair.publicKey);
    assert.deepEqual(notify.peerKey, alice.keyPair.publicKey);
    assert.equal(offer.startDelayMs, 0, 'the initiator probes at once');
    // Each side gets the other's own host candidate and the srflx the server observed.
    assert.ok(offer.candidates.some((c) => c.type === 'host' && c.address === '10.9.8.7' && c.port === 4242));
    assert.ok(offer.candidates.some((c) => c.type === 'srflx' && c.port === bobReg.reflexive.port));
    assert.ok(notify.candidates.some((c) => c.type === 'host' && c.address === '10.1.1.1'));
    assert.ok(notify.candidates.some((c) => c.type === 'srflx' && c.port === aliceReg.reflexive.port));
    await waitFor(() => srv.server.stats().notifyAcked === 1);
    assert.equal(srv.server.stats().pendingNotifies, 0);

    await assert.rejects(alice.requestConnect('carol'), (e: unknown) => isNatpunchError(e, 'PEER_NOT_FOUND'));
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('connection reversal: a reachable peer is connected to, the other is told to connect', async () => {
  const srv = await startServer();
  const bag = new Bag();
  try {
    // bob's socket address is one of his host candidates: the server judges him reachable.
    const bob = await bag.client(srv, { name: 'bob' });
    const bobReg = await bob.register();
    assert.equal(bobReg.reachable, true);
    const alice = await bag.client(srv, { candidates: () => [] });
    const incoming = once<ConnectOffer>(bob, 'connect-request');
    const offer = await alice.requestConnect('bob');
    assert.equal(offer.mode, 'connect');
    assert.equal((await incoming).mode, 'await');

    // carol flags herself unreachable-looking (no host candidates) and dave flags reachable: dave is told to await.
    const carol = await bag.client(srv, { name: 'carol', candidates: () => [] });
    await carol.register();
    const dave = await bag.client(srv, { reachable: true, candidates: () => [] });
    const toCarol = once<ConnectOffer>(carol, 'connect-request');
    const daveOffer = await dave.requestConnect('carol');
    assert.equal(daveOffer.mode, 'await');
    assert.equal((await toCarol).mode, 'connect');
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('a registration signed by another key is refused', async () => {
  const srv = await startServer();
  const bag = new Bag();
  try {
    const victim = generateKeyPair();
    const mallory = generateKeyPair();
    const t = await bag.transport();
    const forged = encodeRendezvous(
      {
        type: 'register',
        requestId: 7,
        publicKey: victim.publicKey,
        name: 'victim',
        reachable: false,
        rttMs: 0,
        candidates: [],
      },
      mallory.secretKey,
    );
    const reply = await exchange(t, srv.port, forged, 7);
    assert.equal(reply.type, 'error');
    assert.equal((reply as ErrorMessage).code, 'BAD_SIGNATURE');
    assert.equal(srv.server.stats().badSignature, 1);
    const probe = await bag.client(srv);
    await assert.rejects(probe.lookup('victim'), (e: unknown) => isNatpunchError(e, 'PEER_NOT_FOUND'));
    // A forged CONNECT is refused the same way.
    const forgedConnect = encodeRendezvous(
      {
        type: 'connect',
        requestId: 8,
        publicKey: victim.publicKey,
        reachable: false,
        target: { name: 'x' },
        connectionId: Buffer.alloc(16),
        rttMs: 0,
        candidates: [],
      },
      mallory.secretKey,
    );
    assert.equal(((await exchange(t, srv.port, forgedConnect, 8)) as ErrorMessage).code, 'BAD_SIGNATURE');
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('a replayed registration is refused; a retransmission from the same source gets the same answer; stale is refused', async () => {
  const srv = await startServer();
  const bag = new Bag();
  try {
    const peer = generateKeyPair();
    const original = await bag.transport();
    const attacker = await bag.transport();
    const bytes = encodeRendezvous(
      {
        type: 'register',
        requestId: 11,
        publicKey: peer.publicKey,
        name: 'peer',
        reachable: false,
        rttMs: 0,
        candidates: [],
      },
      peer.secretKey,
    );
    const first = await exchange(original, srv.port, bytes, 11);
    assert.equal(first.type, 'registered');
    const again = await exchange(original, srv.port, bytes, 11);
    assert.deepEqual(again, first, 'a retransmission is answered from the cache');
    const replay = await exchange(attacker, srv.port, bytes, 11);
    assert.equal(replay.type, 'error');
    assert.equal((replay as ErrorMessage).code, 'REPLAY');
    // The registration still points at the original socket.
    const probe = await bag.client(srv);
    const found = await probe.lookup('peer');
    assert.ok(found.candidates.some((c) => c.type === 'srflx' && c.port === original.address().port));
    assert.ok(!found.candidates.some((c) => c.port === attacker.address().port));
    // Outside the window: stale.
    const old = encodeRendezvous(
      {
        type: 'register',
        requestId: 12,
        publicKey: peer.publicKey,
        reachable: false,
        rttMs: 0,
        candidates: [],
        timestamp: Date.now() - 120_000,
      },
      peer.secretKey,
    );
    assert.equal(((await exchange(attacker, srv.port, old, 12)) as ErrorMessage).code, 'STALE');
    const s = srv.server.stats();
    assert.equal(s.replays, 1);
    assert.equal(s.stale, 1);
    assert.equal(s.retransmitsAnswered, 1);
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('a name claimed by another live key is refused; the holder keeps it and may refresh', async () => {
  const srv = await startServer();
  const bag = new Bag();
  try {
    const first = await bag.client(srv, { name: 'alice' });
    await first.register();
    const second = await bag.client(srv, { name: 'alice' });
    await assert.rejects(
      second.register(),
      (e: unknown) => isNatpunchError(e, 'RENDEZVOUS') && e.details?.serverCode === 'NAME_TAKEN',
    );
    await first.register();
    const probe = await bag.client(srv);
    assert.deepEqual((await probe.lookup('alice')).publicKey, first.keyPair.publicKey);
    assert.equal(srv.server.stats().nameTaken, 1);
    // The holder withdraws: the name stays reserved for its key (issue 18: no squatting after unregister), and the
    // refusal says until when; only the holder's signed release frees it early.
    const holder = first.keyPair;
    first.close();
    await waitFor(() => srv.server.stats().unregistrations === 1);
    await assert.rejects(
      second.register(),
      (e: unknown) =>
        isNatpunchError(e, 'RENDEZVOUS') &&
        /reserved for the key that last held it until \d{4}-\d\d-\d\dT/.test(e.message),
    );
    const again = await bag.client(srv, { name: 'alice', keyPair: holder });
    assert.equal(await again.releaseName(), true);
    assert.equal(await again.releaseName(), false, 'nothing left to release');
    await second.register();
    assert.deepEqual((await probe.lookup('alice')).publicKey, second.keyPair.publicKey);
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('registrations expire when not refreshed', async () => {
  const srv = await startServer({ ttlMs: 300, refreshIntervalMs: 60_000, sweepIntervalMs: 50 });
  const bag = new Bag();
  try {
    const alice = await bag.client(srv, { name: 'alice', autoRefresh: false });
    await alice.register();
    const probe = await bag.client(srv);
    assert.equal((await probe.lookup('alice')).name, 'alice');
    await waitFor(() => srv.server.stats().expired === 1);
    await assert.rejects(probe.lookup('alice'), (e: unknown) => isNatpunchError(e, 'PEER_NOT_FOUND'));
    assert.equal(srv.server.stats().peers, 0);
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('malformed datagrams are counted and dropped; other first bytes are ignored; TCP garbage is cut off', async () => {
  const srv = await startServer();
  const bag = new Bag();
  try {
    const t = await bag.transport();
    const junk = [
      Buffer.from([0xf0]),
      Buffer.from([0xf0, 1, 0x01, 0, 0, 0, 1]),
      Buffer.from([0xf0, 1, 0x77, 0, 0, 0, 1, 1, 2, 3]),
      Buffer.concat([Buffer.from([0xf0, 1, 0x01, 0, 0, 0, 2]), Buffer.alloc(200, 0xff)]),
      Buffer.alloc(1500, 0xf0),
    ];
    for (const j of junk) t.send(j, srv.port, '127.0.0.1');
    t.send(Buffer.from([0x00, 0x01, 0x00, 0x00]), srv.port, '127.0.0.1'); // STUN-looking: not ours
    t.send(Buffer.from([0xff, 1, 2]), srv.port, '127.0.0.1'); // UDX-looking: not ours
    // A registered REGISTERED sent *to* the server is a wrong-direction message: dropped, counted.
    t.send(encodeRendezvous({ type: 'pong', requestId: 1, echo: 1, time: 1 }), srv.port, '127.0.0.1');
    t.send(
      encodeRendezvous({
        type: 'registered',
        requestId: 1,
        reflexive: { transport: 'udp', address: '1.2.3.4', port: 1 },
        refreshMs: 1,
        ttlMs: 1,
        serverTime: 1,
        reachable: false,
      }),
      srv.port,
      '127.0.0.1',
    );
    const client = await bag.client(srv);
    assert.ok((await client.ping()) >= 0);
    const s = srv.server.stats();
    assert.equal(s.malformed, junk.length);
    assert.equal(s.unknownType, 1);
    assert.equal(s.received, junk.length + 2 + 1);

    const sock = connect(srv.tcpPort, '127.0.0.1');
    sock.on('error', () => {});
    await once(sock, 'connect');
    sock.write(Buffer.from([0xf0, 0x00, 0x02, 0xf0, 0x01]));
    sock.write('GET / HTTP/1.1\r\n\r\n');
    await once(sock, 'close');
    assert.equal(srv.server.stats().malformed, junk.length + 1);
    assert.ok((await client.ping()) >= 0, 'still serving');
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('the per-source rate limit engages and answers RATE_LIMITED', async () => {
  const srv = await startServer({ rateLimit: { perSecond: 1, burst: 5 } });
  const bag = new Bag();
  try {
    const t = await bag.transport();
    const replies: Array<{ type: string; code?: string }> = [];
    const off = t.onMessage((msg) => {
      if (msg[0] !== 0xf0) return;
      const type = msg[2] === 0x09 ? 'pong' : msg[2] === 0x07 ? 'error' : 'other';
      replies.push({ type });
    });
    for (let i = 0; i < 30; i++) {
      t.send(
        encodeRendezvous({ type: 'ping', requestId: i + 1, time: Date.now() }, undefined, { padTo: PONG_BYTES }),
        srv.port,
        '127.0.0.1',
      );
    }
    await waitFor(() => srv.server.stats().received === 30);
    await waitFor(() => replies.some((r) => r.type === 'error'));
    off();
    const pongs = replies.filter((r) => r.type === 'pong').length;
    assert.ok(pongs >= 5 && pongs <= 10, `pongs ${pongs}`); // burst 5, plus at most a few refilled under load
    assert.ok(srv.server.stats().rateLimited >= 20);
    // Another source is not affected.
    const other = await bag.client(srv);
    assert.ok((await other.ping()) >= 0);
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('responder notifications are retransmitted until acknowledged (to an address that proved itself)', async () => {
  const srv = await startServer({ notifyRtoMs: 50 });
  const bag = new Bag();
  try {
    // A raw "peer" registers, answers the server's PING (which proves its address) and ignores the first
    // notification copies, then acks.
    const key = generateKeyPair();
    const t = await bag.transport();
    const copies: ConnectNotifyMessage[] = [];
    const { decodeRendezvous } = await import('../../src/wire/rendezvous.js');
    t.onMessage((msg) => {
      const m = decodeRendezvous(msg);
      if (m.type === 'ping')
        t.send(
          encodeRendezvous({ type: 'pong', requestId: m.requestId, echo: m.time, time: Date.now() }),
          srv.port,
          '127.0.0.1',
        );
      if (m.type !== 'connect-notify') return;
      copies.push(m);
      if (copies.length === 3)
        t.send(
          encodeRendezvous({ type: 'notify-ack', requestId: m.requestId, connectionId: m.connectionId }),
          srv.port,
          '127.0.0.1',
        );
    });
    const reg = encodeRendezvous(
      {
        type: 'register',
        requestId: 1,
        publicKey: key.publicKey,
        name: 'raw',
        reachable: false,
        rttMs: 0,
        candidates: [],
      },
      key.secretKey,
    );
    assert.equal((await exchange(t, srv.port, reg, 1)).type, 'registered');
    await waitFor(() => srv.server.stats().rttSamples === 1);
    const alice = await bag.client(srv);
    await alice.requestConnect('raw');
    await waitFor(() => srv.server.stats().notifyAcked === 1);
    assert.equal(copies.length, 3);
    assert.ok(copies.every((c) => c.connectionId.equals(copies[0]!.connectionId)));
    assert.equal(srv.server.stats().notifyRetransmits, 2);
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('start times follow the RTTs: initiator at once (default) or both aligned (sync)', async () => {
  for (const schedule of ['initiator-first', 'sync'] as const) {
    const srv = await startServer({ schedule });
    const bag = new Bag();
    try {
      const { decodeRendezvous } = await import('../../src/wire/rendezvous.js');
      // Raw peers report their RTTs and never answer the server's PING, so the reported values are used.
      const responder = generateKeyPair();
      const rt = await bag.transport();
      const notifies: ConnectNotifyMessage[] = [];
      rt.onMessage((msg) => {
        const m = decodeRendezvous(msg);
        if (m.type === 'connect-notify') notifies.push(m);
      });
      const reg = encodeRendezvous(
        {
          type: 'register',
          requestId: 1,
          publicKey: responder.publicKey,
          name: 'far',
          reachable: false,
          rttMs: 100,
          candidates: [],
        },
        responder.secretKey,
      );
      assert.equal((await exchange(rt, srv.port, reg, 1)).type, 'registered');
      const initiator = generateKeyPair();
      const it = await bag.transport();
      const near = encodeRendezvous(
        {
          type: 'connect',
          requestId: 2,
          publicKey: initiator.publicKey,
          reachable: false,
          target: { name: 'far' },
          connectionId: Buffer.alloc(16, 1),
          rttMs: 20,
          candidates: [],
        },
        initiator.secretKey,
      );
      const answer = (await exchange(it, srv.port, near, 2)) as ConnectNotifyMessage;
      await waitFor(() => notifies.length > 0);
      if (schedule === 'initiator-first') {
        assert.equal(answer.startDelayMs, 0);
        assert.equal(notifies[0]!.startDelayMs, 0);
      } else {
        // Both learn of it 50 ms (half the larger RTT) after the server sends.
        assert.equal(answer.startDelayMs, 40);
        assert.equal(notifies[0]!.startDelayMs, 0);
      }
      // The reverse: a far initiator and a near responder; the responder waits in both schedules.
      const nearPeer = generateKeyPair();
      const nt = await bag.transport();
      const nearNotifies: ConnectNotifyMessage[] = [];
      nt.onMessage((msg) => {
        const m = decodeRendezvous(msg);
        if (m.type === 'connect-notify') nearNotifies.push(m);
      });
      const reg2 = encodeRendezvous(
        {
          type: 'register',
          requestId: 3,
          publicKey: nearPeer.publicKey,
          name: 'near',
          reachable: false,
          rttMs: 20,
          candidates: [],
        },
        nearPeer.secretKey,
      );
      assert.equal((await exchange(nt, srv.port, reg2, 3)).type, 'registered');
      const far = encodeRendezvous(
        {
          type: 'connect',
          requestId: 4,
          publicKey: initiator.publicKey,
          reachable: false,
          target: { name: 'near' },
          connectionId: Buffer.alloc(16, 2),
          rttMs: 100,
          candidates: [],
        },
        initiator.secretKey,
      );
      const answer2 = (await exchange(it, srv.port, far, 4)) as ConnectNotifyMessage;
      await waitFor(() => nearNotifies.length > 0);
      assert.equal(answer2.startDelayMs, 0);
      assert.equal(nearNotifies[0]!.startDelayMs, 40);
    } finally {
      await bag.close();
      await srv.close();
    }
  }
});

test('memory bounds: a full registry and too many TCP connections are refused', async () => {
  const srv = await startServer({ maxPeers: 2, maxTcpConnections: 1 });
  const bag = new Bag();
  try {
    await (await bag.client(srv)).register();
    await (await bag.client(srv)).register();
    const third = await bag.client(srv);
    await assert.rejects(
      third.register(),
      (e: unknown) => isNatpunchError(e, 'RENDEZVOUS') && e.details?.serverCode === 'SERVER_FULL',
    );
    assert.equal(srv.server.stats().serverFull, 1);
    const a = connect(srv.tcpPort, '127.0.0.1');
    a.on('error', () => {});
    await once(a, 'connect');
    await waitFor(() => srv.server.stats().tcpAccepted === 1);
    const b = connect(srv.tcpPort, '127.0.0.1');
    b.on('error', () => {});
    await once(b, 'close');
    assert.equal(srv.server.stats().tcpRejected, 1);
    a.destroy();
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('a responder cannot be flooded with notifications by many initiators', async () => {
  const srv = await startServer({ rateLimit: { perSecond: 0.01, burst: 6 } });
  const bag = new Bag();
  try {
    const { NodeDatagramTransport } = await import('../../src/net/datagram.js');
    const bind = async (address: string) => bag.add(await NodeDatagramTransport.bind({ address }));
    const target = await bag.client(srv, { name: 'target', transport: await bind('127.0.0.2') });
    await target.register();
    const results: string[] = [];
    for (let i = 3; i < 10; i++) {
      const initiator = await bag.client(srv, { transport: await bind(`127.0.0.${i}`) });
      try {
        await initiator.requestConnect('target');
        results.push('ok');
      } catch (e) {
        results.push(isNatpunchError(e, 'RENDEZVOUS') ? String(e.details?.serverCode) : String(e));
      }
    }
    // Each initiator has a fresh bucket; the target's bucket (register, pong, acks and notifications) runs dry.
    assert.ok(results.includes('ok'));
    assert.ok(results.includes('RATE_LIMITED'), results.join(','));
    assert.ok(
      results.every((r) => r === 'ok' || r === 'RATE_LIMITED'),
      results.join(','),
    );
  } finally {
    await bag.close();
    await srv.close();
  }
});

test("attachRendezvous shares a host's UDP socket and TCP port with another protocol (first-byte dispatch)", async () => {
  const { attachRendezvous } = await import('../../src/rendezvous/server.js');
  const { NodeDatagramTransport } = await import('../../src/net/datagram.js');
  const { createServer } = await import('node:net');
  const udp = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  // Another service on the same socket: echoes STUN-range datagrams and answers STUN-range TCP with "stun".
  udp.onMessage((msg, rinfo) => {
    if (msg[0]! <= 3) udp.send(msg, rinfo.port, rinfo.address);
  });
  const handlers: Array<{
    match: (b: number) => boolean;
    handler: (s: import('node:net').Socket, head: Buffer) => void;
  }> = [{ match: (b) => b <= 3, handler: (s) => s.end('stun') }];
  const tcp = createServer((sock) => {
    sock.on('error', () => {});
    sock.once('data', (head: Buffer) => {
      for (let i = handlers.length - 1; i >= 0; i--)
        if (handlers[i]!.match(head[0]!)) return handlers[i]!.handler(sock, head);
      sock.destroy();
    });
  });
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()));
  const host = {
    sockets: [udp],
    registerTcpHandler(match: (b: number) => boolean, handler: (s: import('node:net').Socket, head: Buffer) => void) {
      const e = { match, handler };
      handlers.push(e);
      return () => handlers.splice(handlers.indexOf(e), 1);
    },
  };
  const rdv = attachRendezvous(host);
  const bag = new Bag();
  try {
    const port = udp.address().port;
    const tcpPort = (tcp.address() as { port: number }).port;
    const alice = await bag.client({ port, tcpPort }, { name: 'alice' });
    assert.equal((await alice.register()).via, 'udp');
    // The other service still gets its datagrams.
    const t = await bag.transport();
    const echoed = new Promise<Buffer>((r) => t.onMessage((m) => r(m)));
    t.send(Buffer.from([0x00, 0x01, 0xaa]), port, '127.0.0.1');
    assert.deepEqual(await echoed, Buffer.from([0x00, 0x01, 0xaa]));
    // TCP: a rendezvous client whose UDP is blocked is dispatched to the rendezvous by its first byte 0xF0.
    const walled = await bag.client(
      {
        port: await (async () => {
          const d = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
          const p = d.address().port;
          d.close();
          return p;
        })(),
        tcpPort,
      },
      { initialRtoMs: 30, maxTransmissions: 2 },
    );
    assert.equal((await walled.lookup('alice')).name, 'alice');
    assert.equal(walled.via, 'tcp');
    assert.equal(rdv.server.stats().tcpAccepted, 1);
    rdv.close();
    assert.equal(handlers.length, 1);
    const after = await bag.client({ port, tcpPort }, { initialRtoMs: 30, maxTransmissions: 2, tcpFallback: false });
    await assert.rejects(after.ping(), (e: unknown) => isNatpunchError(e, 'TIMEOUT'));
  } finally {
    rdv.close();
    await bag.close();
    udp.close();
    await new Promise<void>((r) => tcp.close(() => r()));
  }
});

test('an old registration replayed inside the window is refused (STALE: the live record is newer); an older withdrawal is ignored (timestamps only move forward)', async () => {
  const srv = await startServer();
  const bag = new Bag();
  try {
    const peer = generateKeyPair();
    const owner = await bag.transport();
    const attacker = await bag.transport();
    const t = Date.now();
    const first = encodeRendezvous(
      {
        type: 'register',
        requestId: 1,
        publicKey: peer.publicKey,
        reachable: false,
        rttMs: 0,
        candidates: [],
        timestamp: t,
      },
      peer.secretKey,
    );
    const second = encodeRendezvous(
      {
        type: 'register',
        requestId: 2,
        publicKey: peer.publicKey,
        reachable: false,
        rttMs: 0,
        candidates: [],
        timestamp: t + 1,
      },
      peer.secretKey,
    );
    assert.equal((await exchange(owner, srv.port, first, 1)).type, 'registered');
    assert.equal((await exchange(owner, srv.port, second, 2)).type, 'registered');
    // Its replay entry is gone (the record holds the newer timestamp instead): refused as older than the record.
    const replay = (await exchange(attacker, srv.port, first, 1)) as ErrorMessage;
    assert.equal(replay.code, 'STALE');
    // The live registration's own REGISTER from elsewhere: a replay.
    assert.equal(((await exchange(attacker, srv.port, second, 2)) as ErrorMessage).code, 'REPLAY');
    // A replayed withdrawal from before the live registration is ignored too.
    const bye = encodeRendezvous(
      { type: 'unregister', requestId: 3, publicKey: peer.publicKey, timestamp: t },
      peer.secretKey,
    );
    attacker.send(bye, srv.port, '127.0.0.1');
    const probe = await bag.client(srv);
    await waitFor(() => srv.server.stats().stale === 1);
    assert.deepEqual((await probe.lookup(peer.publicKey)).publicKey, peer.publicKey);
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('a client whose clock is off learns the server clock and registers anyway', async () => {
  const srv = await startServer({ now: () => Date.now() + 120_000 });
  const bag = new Bag();
  try {
    const c = await bag.client(srv, { name: 'skewed' });
    const reg = await c.register();
    assert.ok(Math.abs(reg.serverTime - Date.now() - 120_000) < 5000);
    assert.equal(srv.server.stats().stale, 1);
    const other = await bag.client(srv);
    const found = await other.lookup('skewed');
    const offer = once<import('../../src/rendezvous/client.js').ConnectOffer>(c, 'connect-request');
    await other.requestConnect(found.publicKey);
    assert.equal((await offer).role, 'responder');
    // Later signed messages use the learned offset: no further stale answers for the skewed client.
    await c.register();
    assert.equal(srv.server.stats().stale, 2, 'the other client (same clock) needed one correction too');
  } finally {
    await bag.close();
    await srv.close();
  }
});
