// The addon's TURN relay fast path (native/src/addon.cc, "TURN relay fast path"): once a channel is bound on
// `natpunch serve`'s batched socket, its ChannelData and the peer's answers are forwarded without JavaScript. These
// tests check, on real sockets, that what the fast path does is what RFC 8656 says the server does: data both ways,
// byte-exact and in order, counted in the stats; a peer without a channel still gets Data indications; nothing is
// relayed once the allocation is gone. The same tests pass without the addon (NATPUNCH_BATCHED_IO=0), where
// JavaScript relays every packet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { startServer } from '../../src/server/serve.js';
import { BatchedUdpSocket } from '../../src/net/batched.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { TurnClient } from '../../src/relay/client.js';
import { UsersFileStore } from '../../src/relay/auth.js';

async function udpSocket(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

/** Resolves once `check()` holds (polled once per loop turn), or rejects after `ms`. */
async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

test('bound channel relayed both ways byte-exact and in order, counted; other peers get Data indications; nothing after the allocation is gone', async () => {
  const handle = await startServer({
    port: 0,
    addresses: ['127.0.0.1'],
    rendezvous: false,
    relay: {
      peerRelay: false,
      turn: {
        credentials: new UsersFileStore('alice:pw\n'),
        relayAddress: '127.0.0.1',
        allowPeers: ['127.0.0.0/8'],
      },
    },
  });
  const port = handle.udp[0]!.port;
  const turn = handle.relay!.turn;
  const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const peer = await udpSocket();
  const other = await udpSocket();
  const client = new TurnClient({
    server: { address: '127.0.0.1', port },
    username: 'alice',
    password: 'pw',
    transport,
  });
  try {
    const alloc = await client.allocate();
    const relayed = alloc.relayed[0]!;
    const peerAddr = { address: '127.0.0.1', port: peer.address().port };
    const channel = await client.bindChannel(peerAddr);
    await client.createPermission([{ address: '127.0.0.1', port: other.address().port }]);

    const atPeer: Buffer[] = [];
    peer.on('message', (m, r) => {
      atPeer.push(m);
      peer.send(m, r.port, r.address); // echo to the relayed address
    });
    const atClient: Array<{ data: Buffer; port: number }> = [];
    client.onData((data, from) => atClient.push({ data, port: from.port }));

    const sock = handle.sockets[0];
    const routedBefore = sock instanceof BatchedUdpSocket ? sock.stats().routed : 0;
    const N = 300;
    const payload = (i: number) => Buffer.concat([Buffer.from(`msg ${i} `), Buffer.alloc(i % 7 === 0 ? 1200 : 40, i)]);
    for (let i = 0; i < N; i++) {
      client.send(payload(i), peerAddr);
      if (i % 50 === 49) await until(() => atClient.length >= i + 1, `echo ${i}`);
    }
    await until(() => atClient.length >= N, 'all echoes');
    assert.equal(atPeer.length, N);
    for (let i = 0; i < N; i++) {
      assert.deepEqual(atPeer[i], payload(i), `client → peer datagram ${i}`);
      assert.deepEqual(atClient[i]!.data, payload(i), `peer → client datagram ${i}`);
      assert.equal(atClient[i]!.port, peerAddr.port);
    }
    const bytes = Array.from({ length: N }, (_, i) => payload(i).length).reduce((a, b) => a + b, 0);
    const stats = turn.stats;
    assert.equal(stats.packetsToPeer, N);
    assert.equal(stats.packetsToClient, N);
    assert.equal(stats.bytesToPeer, bytes);
    assert.equal(stats.bytesToClient, bytes);
    if (sock instanceof BatchedUdpSocket && sock.canRoute) {
      // The fast path forwarded them: JavaScript saw (almost) none of the ChannelData (the few it may see are
      // datagrams that arrived in one batch behind a request).
      const routed = sock.stats().routed - routedBefore;
      assert.ok(routed >= N - N / 10, `the fast path forwarded ${routed} of ${N}`);
    }

    // RFC 8656 §12.5 on a bound channel: bytes past Length are padding (not relayed); a Length past the end of the
    // datagram drops it.
    const raw = (length: number, body: Buffer) => {
      const h = Buffer.alloc(4);
      h.writeUInt16BE(channel, 0);
      h.writeUInt16BE(length, 2);
      return Buffer.concat([h, body]);
    };
    const peerCount = atPeer.length;
    transport.send(raw(5, Buffer.from('hello...')), port, '127.0.0.1');
    transport.send(raw(50, Buffer.from('too short')), port, '127.0.0.1');
    transport.send(raw(3, Buffer.from('end')), port, '127.0.0.1');
    await until(() => atPeer.length >= peerCount + 2, 'the padded and the last ChannelData');
    await until(() => atClient.length >= N + 2, 'their echoes');
    assert.deepEqual(
      atPeer.slice(peerCount).map((b) => b.toString()),
      ['hello', 'end'],
    );
    atClient.splice(N);

    // Random ChannelData-like datagrams from the client (bound channel or not, Length in or past the datagram): the
    // peer gets exactly the well-formed ones on the bound channel, in order, each with its data.
    const rnd = (n: number) => Math.floor(Math.random() * n);
    const expected: string[] = [];
    const from = atPeer.length;
    for (let i = 0; i < 400; i++) {
      const body = Buffer.from(`r${i}:`.padEnd(4 + rnd(60), '#'));
      const number = rnd(4) === 0 ? 0x4000 + rnd(0x1000) : channel;
      const length = rnd(3) === 0 ? body.length + 1 + rnd(20) : rnd(body.length + 1);
      const h = Buffer.alloc(4);
      h.writeUInt16BE(number, 0);
      h.writeUInt16BE(length, 2);
      transport.send(Buffer.concat([h, body]), port, '127.0.0.1');
      if (number === channel && length <= body.length && length > 0) expected.push(body.subarray(0, length).toString());
      if (number === channel && length === 0) expected.push('');
      if (i % 100 === 99) await until(() => atPeer.length - from >= expected.length, `random batch ${i}`);
    }
    await until(() => atPeer.length - from >= expected.length, 'the well-formed random datagrams');
    await until(() => atClient.length >= N + expected.length, 'their echoes');
    assert.deepEqual(
      atPeer.slice(from).map((b) => b.toString()),
      expected,
    );
    atClient.splice(N);

    // Binding requests (RFC 8489) in the same batch change no TURN state: the ChannelData behind them stays on the
    // fast path.
    if (sock instanceof BatchedUdpSocket && sock.canRoute) {
      const routed0 = sock.stats().routed;
      const peer0 = atPeer.length;
      const stun = await udpSocket();
      for (let i = 0; i < 50; i++) {
        // With a 100-byte SOFTWARE attribute (RFC 8489 §14.14): larger than its answer, so no amplification budget.
        const software = [0x80, 0x22, 0, 100, ...Buffer.alloc(100, 0x61)];
        const request = [0, 1, 0, 104, 0x21, 0x12, 0xa4, 0x42, ...Buffer.alloc(11, 3), i, ...software];
        stun.send(Buffer.from(request), port, '127.0.0.1');
        client.send(Buffer.from(`behind a Binding ${i}`), peerAddr);
      }
      await until(() => atPeer.length >= peer0 + 50, 'the ChannelData sent between Binding requests');
      await until(() => atClient.length >= N + 50, 'their echoes');
      const routed = sock.stats().routed - routed0;
      stun.close();
      assert.ok(routed >= 45, `the fast path forwarded ${routed} of 50`);
      atClient.splice(N);
    }

    // A peer with a permission but no channel: a Data indication (RFC 8656 §11.5), from JavaScript.
    const before = atClient.length;
    other.send(Buffer.from('from the other peer'), relayed.port, relayed.address);
    await until(() => atClient.length > before, 'the Data indication');
    assert.equal(atClient.at(-1)!.data.toString(), 'from the other peer');
    assert.equal(atClient.at(-1)!.port, other.address().port);

    // The allocation is deleted (Refresh with LIFETIME 0): nothing is relayed either way any more.
    await client.close();
    const seenAtClient = atClient.length;
    const seenAtPeer = atPeer.length;
    const got: Buffer[] = [];
    transport.onMessage((m) => got.push(m));
    peer.send(Buffer.from('after close'), relayed.port, relayed.address);
    // ChannelData on the channel the allocation had (RFC 8656 §12.4 header: channel, length).
    const data = Buffer.from('after close');
    const header = Buffer.alloc(4);
    header.writeUInt16BE(channel, 0);
    header.writeUInt16BE(data.length, 2);
    transport.send(Buffer.concat([header, data]), port, '127.0.0.1');
    // A Binding request sent behind them: once it is answered, the server has handled both datagrams.
    const binding = Buffer.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...Buffer.alloc(12, 7)]);
    transport.send(binding, port, '127.0.0.1');
    await until(() => got.some((m) => m[0] === 0x01 && m[1] === 0x01), 'the Binding response');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(atClient.length, seenAtClient);
    assert.equal(atPeer.length, seenAtPeer, 'nothing relayed to the peer after the allocation was deleted');
    assert.deepEqual(
      got.filter((m) => !(m[0] === 0x01 && m[1] === 0x01)),
      [],
      'nothing relayed to the client after the allocation was deleted',
    );
  } finally {
    await client.close();
    transport.close();
    peer.close();
    other.close();
    await handle.close();
  }
});

test('relay to relay between two allocations is forwarded both ways, and ends with the peer allocation: its freed port is not reachable', async () => {
  // No allowPeers: loopback peers are denied, so 127.0.0.1 is reachable only as this server's live allocations.
  const handle = await startServer({
    port: 0,
    addresses: ['127.0.0.1'],
    rendezvous: false,
    relay: {
      peerRelay: false,
      turn: { credentials: new UsersFileStore('alice:pw\nbob:pw\n'), relayAddress: '127.0.0.1' },
    },
  });
  const port = handle.udp[0]!.port;
  const server = { address: '127.0.0.1', port };
  const ta = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const tb = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const a = new TurnClient({ server, username: 'alice', password: 'pw', transport: ta });
  const b = new TurnClient({ server, username: 'bob', password: 'pw', transport: tb });
  let squatter: dgram.Socket | undefined;
  try {
    const ra = (await a.allocate()).relayed[0]!;
    const rb = (await b.allocate()).relayed[0]!;
    const channel = await a.bindChannel(rb);
    await b.bindChannel(ra);
    const atB: Buffer[] = [];
    const atA: Buffer[] = [];
    b.onData((data, from) => {
      assert.equal(from.port, ra.port);
      atB.push(data);
      b.send(data, ra);
    });
    a.onData((data, from) => {
      assert.equal(from.port, rb.port);
      atA.push(data);
    });
    const sock = handle.sockets[0];
    const routedBefore = sock instanceof BatchedUdpSocket ? sock.stats().routed : 0;
    const N = 100;
    for (let i = 0; i < N; i++) {
      a.send(Buffer.from(`relay to relay ${i}`), rb);
      if (i % 25 === 24) await until(() => atA.length >= i + 1, `echo ${i}`);
    }
    await until(() => atA.length >= N, 'all echoes');
    assert.deepEqual(
      atA.map((d) => d.toString()),
      Array.from({ length: N }, (_, i) => `relay to relay ${i}`),
    );
    if (sock instanceof BatchedUdpSocket && sock.canRoute) {
      const routed = sock.stats().routed - routedBefore;
      assert.ok(routed >= 2 * N - N / 5, `the fast path forwarded ${routed} of ${2 * N}`);
    }

    // Bob's allocation goes; something else takes its port. Alice's channel must not reach it.
    await b.close();
    squatter = dgram.createSocket('udp4');
    await new Promise<void>((r) => squatter!.bind(rb.port, '127.0.0.1', r));
    const reached: Buffer[] = [];
    squatter.on('message', (m) => reached.push(m));
    const data = Buffer.from('to whoever has the port now');
    const header = Buffer.alloc(4);
    header.writeUInt16BE(channel, 0);
    header.writeUInt16BE(data.length, 2);
    ta.send(Buffer.concat([header, data]), port, '127.0.0.1');
    const got: Buffer[] = [];
    ta.onMessage((m) => got.push(m));
    ta.send(Buffer.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...Buffer.alloc(12, 9)]), port, '127.0.0.1');
    await until(() => got.some((m) => m[0] === 0x01 && m[1] === 0x01), 'the Binding response');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(reached.length, 0, "nothing reached the freed relay port's new owner");
  } finally {
    squatter?.close();
    await a.close();
    await b.close();
    ta.close();
    tb.close();
    await handle.close();
  }
});
