// BatchedUdpSocket (recvmmsg/sendmmsg through the native addon) on loopback: nothing lost, reordered or overwritten.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { BatchedUdpSocket, batchedUnavailableReason } from '../../src/net/batched.js';
import { hasIPv6Loopback } from '../helpers/net.js';

const skip = batchedUnavailableReason();

async function client(type: 'udp4' | 'udp6', host: string): Promise<dgram.Socket> {
  const c = dgram.createSocket(type);
  c.bind(0, host);
  await once(c, 'listening');
  c.setRecvBufferSize(8 * 1024 * 1024);
  return c;
}

test(
  'a burst of datagrams arrives in order, in batches, each a distinct buffer that later batches do not overwrite',
  { skip },
  async () => {
    const s = BatchedUdpSocket.bind('127.0.0.1', 0, { bufferBytes: 4 * 1024 * 1024 });
    const c = await client('udp4', '127.0.0.1');
    const kept: Buffer[] = [];
    const N = 2000;
    const done = new Promise<void>((resolve) =>
      s.onMessage((msg, rinfo) => {
        assert.equal(rinfo.address, '127.0.0.1');
        assert.equal(rinfo.port, c.address().port);
        assert.equal(rinfo.family, 'IPv4');
        kept.push(msg);
        if (kept.length === N) resolve();
      }),
    );
    try {
      assert.ok(s.buffers.recv >= 4 * 1024 * 1024, `SO_RCVBUF granted ${s.buffers.recv}`);
      // Sizes vary so offsets in the slab do not line up; 8 per event-loop turn keeps the client's own buffers happy.
      for (let i = 0; i < N; i++) {
        const b = Buffer.alloc(20 + (i % 300), i & 0xff);
        b.writeUInt32BE(i, 0);
        c.send(b, s.address().port, '127.0.0.1');
        if (i % 8 === 7) await new Promise((r) => setImmediate(r));
      }
      await done;
      kept.forEach((b, i) => {
        assert.equal(b.readUInt32BE(0), i, 'order');
        assert.equal(b.length, 20 + (i % 300), 'length');
        assert.ok(
          b.subarray(4).every((x) => x === (i & 0xff)),
          `datagram ${i} intact`,
        );
      });
      const st = s.stats();
      assert.equal(st.received, N);
      assert.ok(st.batches <= N);
    } finally {
      c.close();
      s.close();
    }
  },
);

test('replies sent inside a batch and sends from timers both arrive', { skip }, async () => {
  const s = BatchedUdpSocket.bind('127.0.0.1', 0);
  const c = await client('udp4', '127.0.0.1');
  s.onMessage((msg, rinfo) => {
    s.send(msg, rinfo.port, rinfo.address); // inside the batch: leaves with sendmmsg after it
    setTimeout(() => s.send(Buffer.from([0xaa, msg[1]!]), rinfo.port, rinfo.address), 1); // outside: flushed next turn
  });
  const got: Buffer[] = [];
  const all = new Promise<void>((resolve) =>
    c.on('message', (m) => {
      got.push(m);
      if (got.length === 6) resolve();
    }),
  );
  try {
    for (const [a, b] of [
      [1, 1],
      [0xee, 2],
      [1, 3],
    ])
      c.send(Buffer.from([a!, b!]), s.address().port, '127.0.0.1');
    await all;
    const echoes = got.filter((m) => m[0] !== 0xaa).map((m) => m[1]);
    const later = got.filter((m) => m[0] === 0xaa).map((m) => m[1]);
    assert.deepEqual(echoes.sort(), [1, 2, 3]);
    assert.deepEqual(later.sort(), [1, 2, 3]);
  } finally {
    c.close();
    s.close();
  }
});

test(
  'IPv6 and dual-stack: the sender address is reported like node:dgram does, and replies reach IPv4-mapped peers',
  { skip },
  async (t) => {
    if (!(await hasIPv6Loopback())) return t.skip('no IPv6 loopback');
    for (const [bindAt, ipv6Only, clientType, clientHost, expected] of [
      ['::1', true, 'udp6', '::1', '::1'],
      ['::', false, 'udp4', '127.0.0.1', '::ffff:127.0.0.1'],
    ] as const) {
      const s = BatchedUdpSocket.bind(bindAt, 0, { ipv6Only });
      const c = await client(clientType, clientHost);
      try {
        s.onMessage((msg, rinfo) => {
          assert.equal(rinfo.address, expected);
          assert.equal(rinfo.family, 'IPv6');
          s.send(msg, rinfo.port, rinfo.address);
        });
        const reply = once(c, 'message');
        c.send(Buffer.from('ping'), s.address().port, clientHost);
        const [m] = (await reply) as [Buffer];
        assert.equal(m.toString(), 'ping');
      } finally {
        c.close();
        s.close();
      }
    }
  },
);

test('sendParts sends a header and a payload as one datagram', { skip }, async () => {
  const s = BatchedUdpSocket.bind('127.0.0.1', 0);
  const c = await client('udp4', '127.0.0.1');
  try {
    const reply = once(c, 'message');
    s.sendParts(Buffer.from([0x40, 0x00, 0x00, 0x03]), Buffer.from('abc'), c.address().port, '127.0.0.1');
    const [m] = (await reply) as [Buffer];
    assert.deepEqual([...m], [0x40, 0x00, 0x00, 0x03, 0x61, 0x62, 0x63]);
  } finally {
    c.close();
    s.close();
  }
});

test('a closed socket drops sends silently and frees its port', { skip }, async () => {
  const s = BatchedUdpSocket.bind('127.0.0.1', 0);
  const port = s.address().port;
  s.close();
  s.send(Buffer.from('x'), 9, '127.0.0.1');
  assert.equal(s.closed, true);
  const again = BatchedUdpSocket.bind('127.0.0.1', port);
  again.close();
});

test(
  'sockets sized for relaying (small batch, slab and send arena, one shared receive scratch) keep every datagram intact both ways',
  { skip },
  async () => {
    // Two small sockets and one default one in the same thread share the receive scratch; 1000-byte datagrams fill
    // a 4 KiB slab every few datagrams and a 64 KiB send arena every 65, so both roll over many times.
    const small = { batchSize: 4, slabBytes: 4096, arenaBytes: 65536 };
    const a = BatchedUdpSocket.bind('127.0.0.1', 0, small);
    const b = BatchedUdpSocket.bind('127.0.0.1', 0, small);
    const big = BatchedUdpSocket.bind('127.0.0.1', 0, { bufferBytes: 4 * 1024 * 1024 });
    const N = 600;
    const atB: Buffer[] = [];
    const atBig: Buffer[] = [];
    const doneB = new Promise<void>((resolve) =>
      b.onMessage((msg, rinfo) => {
        atB.push(msg);
        // Echo through the other small socket's queue, as a relay forwards a peer's datagram.
        a.send(msg, big.address().port, '127.0.0.1');
        assert.equal(rinfo.port, a.address().port);
        if (atB.length === N) resolve();
      }),
    );
    const doneBig = new Promise<void>((resolve) =>
      big.onMessage((msg) => {
        atBig.push(msg);
        if (atBig.length === N) resolve();
      }),
    );
    try {
      for (let i = 0; i < N; i++) {
        const d = Buffer.alloc(1000, i & 0xff);
        d.writeUInt32BE(i, 0);
        a.send(d, b.address().port, '127.0.0.1');
        if (i % 16 === 15) await new Promise((r) => setImmediate(r));
      }
      await Promise.all([doneB, doneBig]);
      for (const got of [atB, atBig]) {
        got.forEach((d, i) => {
          assert.equal(d.readUInt32BE(0), i, 'order');
          assert.equal(d.length, 1000, 'length');
          assert.ok(
            d.subarray(4).every((x) => x === (i & 0xff)),
            `datagram ${i} intact`,
          );
        });
      }
    } finally {
      a.close();
      b.close();
      big.close();
    }
  },
);

test('a batched socket refuses slab and arena sizes outside their bounds', { skip }, () => {
  assert.throws(() => BatchedUdpSocket.bind('127.0.0.1', 0, { slabBytes: 100 }), /slabBytes/);
  assert.throws(() => BatchedUdpSocket.bind('127.0.0.1', 0, { arenaBytes: 1024 }), /arenaBytes/);
});
