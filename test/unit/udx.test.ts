import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import dgram from 'node:dgram';
import { UdxEndpoint } from '../../src/net/udx.js';
import type { RemoteInfo } from '../../src/net/datagram.js';

function nextMessage(ep: UdxEndpoint, firstByte: number): Promise<[Buffer, RemoteInfo]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error('no datagram within 3 s'));
    }, 3000);
    const off = ep.onMessage((msg, rinfo) => {
      if (msg[0] !== firstByte) return;
      clearTimeout(timer);
      off();
      resolve([msg, rinfo]);
    });
  });
}

test('raw datagrams (with and without a TTL) reach the other endpoint with the sender address', async () => {
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
  try {
    const got = nextMessage(b, 0xf1);
    a.send(Buffer.from([0xf1, 1, 2, 3]), b.address().port, '127.0.0.1', 8);
    const [msg, rinfo] = await got;
    assert.deepEqual([...msg], [0xf1, 1, 2, 3]);
    assert.equal(rinfo.port, a.address().port);
    assert.equal(rinfo.address, '127.0.0.1');
    const got2 = nextMessage(a, 0xf0);
    assert.equal(await b.sendAsync(Buffer.from([0xf0]), a.address().port, '127.0.0.1'), true);
    assert.deepEqual([...(await got2)[0]], [0xf0]);
  } finally {
    await a.close();
    await b.close();
  }
});

test('a UDX stream carries data while raw datagrams still arrive on the same socket', async () => {
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
  try {
    const sa = a.connectStream(11, 22, b.address().port, '127.0.0.1');
    const sb = b.connectStream(22, 11, a.address().port, '127.0.0.1');
    const seenUdx: number[] = [];
    b.onMessage((msg) => seenUdx.push(msg[0]!));
    sa.write(Buffer.from('hello over udx'));
    const [data] = (await once(sb, 'data')) as [Buffer];
    assert.equal(data.toString(), 'hello over udx');
    assert.ok(!seenUdx.includes(0xff), 'stream packets are not surfaced as raw datagrams');
    const got = nextMessage(b, 0xf1);
    a.send(Buffer.from([0xf1]), b.address().port, '127.0.0.1');
    await got;
    assert.throws(() => a.connectStream(11, 5, b.address().port, '127.0.0.1'), /already in use/);
  } finally {
    await a.close();
    await b.close();
  }
});

/** A one-way forwarder standing in for a NAT mapping: what `from` sends to it goes to `to`, and back. */
async function forwarder(toPort: number) {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  let back: { port: number; address: string } | null = null;
  sock.on('message', (msg, rinfo) => {
    if (rinfo.port === toPort) {
      if (back) sock.send(msg, back.port, back.address);
    } else {
      back = { port: rinfo.port, address: rinfo.address };
      sock.send(msg, toPort, '127.0.0.1');
    }
  });
  return { port: sock.address().port, close: () => new Promise<void>((r) => sock.close(() => r())) };
}

test('changeRemote moves a live stream to a new path (a rebound mapping) and data keeps flowing', async () => {
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const n1 = await forwarder(b.address().port);
  const n2 = await forwarder(b.address().port);
  try {
    const sa = a.connectStream(1, 2, n1.port, '127.0.0.1');
    const sb = b.connectStream(2, 1, a.address().port, '127.0.0.1');
    sa.write(Buffer.from('one'));
    assert.equal(((await once(sb, 'data')) as [Buffer])[0].toString(), 'one');
    await n1.close(); // the old mapping is gone
    await a.changeRemote(sa, n2.port, '127.0.0.1');
    sa.write(Buffer.from('two'));
    assert.equal(((await once(sb, 'data')) as [Buffer])[0].toString(), 'two');
    sb.write(Buffer.from('three'));
    assert.equal(((await once(sa, 'data')) as [Buffer])[0].toString(), 'three');
  } finally {
    await n2.close();
    await a.close();
    await b.close();
  }
});
