import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { TurnServer, type TurnServerOptions } from '../../src/relay/server.js';
import { TurnClient } from '../../src/relay/client.js';
import { UsersFileStore } from '../../src/relay/auth.js';

const users = new UsersFileStore('alice:pw\nbob:pw\n');
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server(extra: Partial<TurnServerOptions> = {}) {
  const s = new TurnServer({
    credentials: users,
    relayAddress: '127.0.0.1',
    allowPeers: ['127.0.0.0/8', '::1/128'],
    ...extra,
  });
  const { port } = await s.listen({ address: '127.0.0.1', port: 0 });
  cleanups.push(() => s.close());
  return { s, port };
}

async function client(port: number, username = 'alice') {
  const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const c = new TurnClient({
    server: { address: '127.0.0.1', port },
    username,
    password: 'pw',
    transport,
    timeoutMs: 3000,
  });
  cleanups.push(async () => {
    await c.close();
    transport.close();
  });
  return { c, transport };
}

async function udpPeer(type: 'udp4' | 'udp6' = 'udp4') {
  const sock = dgram.createSocket(type);
  await new Promise<void>((r) => sock.bind(0, type === 'udp4' ? '127.0.0.1' : '::1', r));
  cleanups.push(() => sock.close());
  return sock;
}

const ipv6 = await (async () => {
  const s = dgram.createSocket('udp6');
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(0, '::1', resolve);
    });
    return true;
  } catch {
    return false;
  } finally {
    s.close();
  }
})();

test('EVEN-PORT with the R bit reserves the next port; RESERVATION-TOKEN claims it (RFC 8656 §7.2)', async () => {
  const { port } = await server({ minPort: 40000, maxPort: 48999 });
  const a = await client(port);
  const alloc = await a.c.allocate({ evenPort: 'reserve' });
  const p = alloc.relayed[0]!.port;
  assert.equal(p % 2, 0);
  assert.ok(alloc.reservationToken && alloc.reservationToken.length === 8);
  const b = await client(port, 'bob');
  const second = await b.c.allocate({ reservationToken: alloc.reservationToken });
  assert.equal(second.relayed[0]!.port, p + 1);
  const c = await client(port, 'bob');
  await assert.rejects(c.c.allocate({ reservationToken: alloc.reservationToken }), /508/, 'a token works once');
});

test(
  'REQUESTED-ADDRESS-FAMILY IPv6 and ADDITIONAL-ADDRESS-FAMILY dual allocations (RFC 8656 §7.2, §18.11)',
  { skip: ipv6 ? false : 'no IPv6 loopback' },
  async () => {
    const { port } = await server({ relayAddress6: '::1' });
    const dual = await client(port);
    const alloc = await dual.c.allocate({ dual: true });
    assert.deepEqual(
      alloc.relayed.map((r) => r.address),
      ['127.0.0.1', '::1'],
    );
    const peer6 = await udpPeer('udp6');
    const got = new Promise<string>((resolve) =>
      peer6.once('message', (m, r) => resolve(`${m}|${r.address}|${r.port}`)),
    );
    dual.c.send(Buffer.from('over v6'), { address: '::1', port: peer6.address().port });
    assert.equal(
      await got,
      `over v6|::1|${alloc.relayed[1]!.port}`,
      'an IPv6 peer is served from the IPv6 relayed address',
    );
    const only6 = await client(port, 'bob');
    const a6 = await only6.c.allocate({ family: 'IPv6' });
    assert.deepEqual(
      a6.relayed.map((r) => r.address),
      ['::1'],
    );
    await assert.rejects(only6.c.createPermission(['127.0.0.1']), /443/, 'peer address family mismatch');
    const noV6 = await server();
    const c = await client(noV6.port);
    await assert.rejects(c.c.allocate({ family: 'IPv6' }), /440/);
  },
);

test('a stale nonce (438) is renewed transparently by the client', async () => {
  const { port } = await server({ nonceLifetime: 1 });
  const a = await client(port);
  await a.c.allocate();
  await new Promise((r) => setTimeout(r, 1100));
  await a.c.createPermission(['127.0.0.1']);
});

test('lifetimes: the client refreshes before expiry; an allocation nobody refreshes expires and frees its quota', async () => {
  // 4 s lifetimes: the client refreshes at 2 s, leaving slack for a loaded machine; expiry is polled, not timed.
  const { s, port } = await server({ defaultLifetime: 4, maxLifetime: 4, maxAllocationsPerUser: 1 });
  const kept = await client(port);
  await kept.c.allocate();
  const dropped = await client(port, 'bob');
  await dropped.c.allocate();
  assert.equal(s.stats.allocations, 2);
  dropped.transport.close(); // bob goes silent: no more refreshes reach the server
  for (let i = 0; i < 150 && s.stats.allocations > 1; i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(s.stats.allocations, 1, 'bob expired');
  await new Promise((r) => setTimeout(r, 2500)); // past alice's first lifetime: only her refreshes keep her
  assert.equal(s.stats.allocations, 1, 'alice refreshed');
  const again = await client(port, 'bob');
  await again.c.allocate(); // bob's quota was released
});

test('per-allocation bandwidth cap drops what exceeds the token bucket', async () => {
  const { s, port } = await server({ bandwidth: 1000 });
  const a = await client(port);
  await a.c.allocate();
  const peer = await udpPeer();
  let received = 0;
  peer.on('message', () => received++);
  const to = { address: '127.0.0.1', port: peer.address().port };
  await a.c.bindChannel(to);
  for (let i = 0; i < 20; i++) a.c.send(Buffer.alloc(400), to);
  // Wait (bounded) until the server has handled all 20 and the forwarded ones have arrived.
  for (let i = 0; i < 100 && s.stats.packetsToPeer + s.stats.droppedBandwidth < 20; i++)
    await new Promise((r) => setTimeout(r, 50));
  for (let i = 0; i < 60 && received < s.stats.packetsToPeer; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(s.stats.packetsToPeer + s.stats.droppedBandwidth, 20);
  assert.ok(s.stats.packetsToPeer >= 1 && s.stats.packetsToPeer <= 4, `forwarded ${s.stats.packetsToPeer}`);
  assert.equal(received, s.stats.packetsToPeer);
});

test('behind a 1:1 NAT the relayed address announced is the external one; wildcard relay addresses are refused', async () => {
  const { port } = await server({ externalAddress: '203.0.113.9' });
  const a = await client(port);
  const alloc = await a.c.allocate();
  assert.equal(alloc.relayed[0]!.address, '203.0.113.9');
  assert.throws(() => new TurnServer({ credentials: users, relayAddress: '0.0.0.0' }), /one specific IP address/);
  assert.throws(
    () => new TurnServer({ credentials: users, relayAddress: '127.0.0.1', externalAddress: 'example.com' }),
    /one specific IP address/,
  );
});
