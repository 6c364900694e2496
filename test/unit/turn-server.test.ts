import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { TurnServer } from '../../src/relay/server.js';
import { TurnClient } from '../../src/relay/client.js';
import { UsersFileStore, SharedSecretStore, makeSharedSecretCredentials, CombinedStore } from '../../src/relay/auth.js';
import { A, Cls, Method, StunBuilder, parseStun, attrText, errorInfo, attrValue } from '../../src/relay/message.js';

const users = new UsersFileStore('alice:wonderland\nbob:builder\n');
const cleanups: Array<() => unknown> = [];
after(async () => {
  // Each clean-up is bounded: one that cannot finish must not hold the whole file open.
  for (const c of cleanups.reverse()) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.resolve().then(c), new Promise((r) => (timer = setTimeout(r, 5000)))]).catch(() => {});
    clearTimeout(timer);
  }
});

async function startServer(extra: Partial<ConstructorParameters<typeof TurnServer>[0]> = {}) {
  const server = new TurnServer({ credentials: users, relayAddress: '127.0.0.1', realm: 'test', ...extra });
  const { port } = await server.listen({ address: '127.0.0.1', port: 0 });
  cleanups.push(() => server.close());
  return { server, port };
}

async function udpClient(port: number, username = 'alice', password = 'wonderland') {
  const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const client = new TurnClient({
    server: { address: '127.0.0.1', port },
    username,
    password,
    transport,
    timeoutMs: 3000,
  });
  cleanups.push(async () => {
    await client.close();
    transport.close();
  });
  return { client, transport };
}

async function udpPeer() {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  cleanups.push(() => sock.close());
  return { sock, addr: { address: '127.0.0.1', port: sock.address().port } };
}

function nextMessage<T>(subscribe: (cb: (v: T) => void) => () => void, ms = 3000): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error('timed out waiting for a message'));
    }, ms);
    const off = subscribe((v) => {
      clearTimeout(t);
      off();
      resolve(v);
    });
  });
}

function peerMessage(sock: dgram.Socket, ms = 3000): Promise<{ msg: Buffer; rinfo: dgram.RemoteInfo }> {
  return nextMessage((cb) => {
    const l = (msg: Buffer, rinfo: dgram.RemoteInfo) => cb({ msg, rinfo });
    sock.on('message', l);
    return () => sock.off('message', l);
  }, ms);
}

test('UDP allocation: permission, Send/Data indications, then ChannelData both ways (RFC 8656 §7, §9, §11, §12)', async () => {
  const { server, port } = await startServer({ allowPeers: ['127.0.0.0/8'] });
  const { client } = await udpClient(port);
  const alloc = await client.allocate();
  assert.equal(alloc.relayed[0]!.address, '127.0.0.1');
  assert.ok(alloc.mapped && alloc.mapped.address === '127.0.0.1');
  assert.equal(alloc.lifetime, 600);
  const peer = await udpPeer();

  await client.createPermission([peer.addr]);
  const got1 = peerMessage(peer.sock);
  client.send(Buffer.from('via send indication'), peer.addr);
  // The first send() to a peer sets up a channel and queues; it arrives either way.
  const m1 = await got1;
  assert.equal(m1.msg.toString(), 'via send indication');
  assert.equal(m1.rinfo.port, alloc.relayed[0]!.port, 'peer sees the relayed address');

  const fromPeer = nextMessage<[Buffer, { address: string; port: number }]>((cb) =>
    client.onData((d, p) => cb([d, p])),
  );
  peer.sock.send(Buffer.from('hello client'), alloc.relayed[0]!.port, '127.0.0.1');
  const [data, from] = await fromPeer;
  assert.equal(data.toString(), 'hello client');
  assert.deepEqual(from, peer.addr);

  const ch = await client.bindChannel(peer.addr);
  assert.ok(ch >= 0x4000 && ch <= 0x4fff);
  const got2 = peerMessage(peer.sock);
  client.send(Buffer.from('via channel'), peer.addr);
  assert.equal((await got2).msg.toString(), 'via channel');
  const fromPeer2 = nextMessage<Buffer>((cb) => client.onData((d) => cb(d)));
  peer.sock.send(Buffer.from('back on channel'), alloc.relayed[0]!.port, '127.0.0.1');
  assert.equal((await fromPeer2).toString(), 'back on channel');
  assert.equal(server.stats.channels, 1);
  assert.ok(server.stats.packetsToPeer >= 2 && server.stats.packetsToClient >= 2);

  // Refresh with LIFETIME 0 deletes the allocation (RFC 8656 §8).
  assert.equal(await client.refresh(0), 0);
  assert.equal(server.stats.allocations, 0);
});

test('unauthenticated Allocate gets 401 with REALM and a NONCE carrying the security-feature cookie', async () => {
  const { port } = await startServer();
  const sock = dgram.createSocket('udp4');
  cleanups.push(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const req = new StunBuilder(Method.Allocate, Cls.Request, randomBytes(12))
    .add(A.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]))
    .finish();
  const res = peerMessage(sock);
  sock.send(req, port, '127.0.0.1');
  const m = parseStun((await res).msg)!;
  assert.equal(m.cls, Cls.Error);
  assert.equal(errorInfo(m)?.code, 401);
  assert.equal(attrText(m, A.REALM), 'test');
  assert.match(attrText(m, A.NONCE)!, /^obMatJos2/);
  assert.ok(attrValue(m, A.PASSWORD_ALGORITHMS));
});

test('wrong password is refused with 401; an unknown user too', async () => {
  const { server, port } = await startServer();
  const { client } = await udpClient(port, 'alice', 'not the password');
  await assert.rejects(
    client.allocate(),
    (e: unknown) => isNatpunchError(e, 'STUN_ERROR_RESPONSE') && /401/.test((e as Error).message),
  );
  const { client: c2 } = await udpClient(port, 'mallory', 'x');
  await assert.rejects(c2.allocate(), /401/);
  assert.equal(server.stats.allocations, 0);
  assert.ok(server.stats.authFailures >= 2);
});

test('permissions towards loopback and private addresses are refused by default (403)', async () => {
  const { server, port } = await startServer();
  const { client } = await udpClient(port);
  await client.allocate();
  for (const address of ['127.0.0.2', '10.0.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1']) {
    await assert.rejects(
      client.createPermission([{ address, port: 1 }]),
      (e: unknown) => isNatpunchError(e, 'TURN_FORBIDDEN_PEER'),
      address,
    );
  }
  await assert.rejects(client.bindChannel({ address: '127.0.0.1', port: 9 }), (e: unknown) =>
    isNatpunchError(e, 'TURN_FORBIDDEN_PEER'),
  );
  assert.equal(server.stats.deniedPeers, 6);
  // A public address is fine (no packet is sent: only the permission is installed).
  await client.createPermission([{ address: '198.51.100.1', port: 0 }]);
});

test('allocation quotas: per user (486) and in total', async () => {
  const { port } = await startServer({ maxAllocationsPerUser: 1, maxAllocations: 2 });
  const a = await udpClient(port);
  await a.client.allocate();
  const b = await udpClient(port);
  await assert.rejects(b.client.allocate(), /486/);
  const c = await udpClient(port, 'bob', 'builder');
  await c.client.allocate();
  const d = await udpClient(port, 'carol', 'x');
  await assert.rejects(d.client.allocate(), /401|486/);
  await a.client.close();
  const e = await udpClient(port);
  await e.client.allocate();
});

test('shared-secret (use-auth-secret) credentials are accepted until they expire', async () => {
  const { port } = await startServer({ credentials: new CombinedStore([users, new SharedSecretStore(['s3cret'])]) });
  const creds = makeSharedSecretCredentials('s3cret', 60, 'peer1');
  const { client } = await udpClient(port, creds.username, creds.password);
  await client.allocate();
  const old = makeSharedSecretCredentials('s3cret', 60, 'peer2', Date.now() - 3_600_000);
  const { client: c2 } = await udpClient(port, old.username, old.password);
  await assert.rejects(c2.allocate(), /401/);
});

test('TURN over TCP: UDP allocation with padded ChannelData, and the relay DatagramTransport', async () => {
  const { port } = await startServer({ allowPeers: ['127.0.0.0/8'] });
  const client = await TurnClient.connectTcp({
    server: { address: '127.0.0.1', port },
    username: 'bob',
    password: 'builder',
    timeoutMs: 3000,
  });
  cleanups.push(() => client.close());
  const alloc = await client.allocate();
  const peer = await udpPeer();
  const relay = client.relayTransport();
  assert.equal(relay.address().port, alloc.relayed[0]!.port);
  const got = peerMessage(peer.sock);
  relay.send(Buffer.from('odd-length!'), peer.addr.port, peer.addr.address);
  assert.equal((await got).msg.toString(), 'odd-length!');
  const back = nextMessage<[Buffer, string]>((cb) => relay.onMessage((m, r) => cb([m, `${r.address}:${r.port}`])));
  peer.sock.send(Buffer.from('x'), alloc.relayed[0]!.port, '127.0.0.1');
  const [m, from] = await back;
  assert.equal(m.toString(), 'x');
  assert.equal(from, `127.0.0.1:${peer.addr.port}`);
});

test('RFC 6062 TCP allocation: Connect + ConnectionBind, and an incoming peer via ConnectionAttempt', async () => {
  const { server, port } = await startServer({ allowPeers: ['127.0.0.0/8'] });
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  cleanups.push(() => echo.close());
  const client = await TurnClient.connectTcp({
    server: { address: '127.0.0.1', port },
    username: 'alice',
    password: 'wonderland',
    timeoutMs: 3000,
  });
  cleanups.push(() => client.close());
  const alloc = await client.allocate({ transport: 'tcp' });
  assert.equal(server.stats.tcpAllocations, 1);
  const stream = await client.connectPeer({ address: '127.0.0.1', port: (echo.address() as net.AddressInfo).port });
  cleanups.push(() => stream.destroy());
  stream.write('ping over tcp relay');
  const [echoed] = await Promise.race([
    once(stream, 'data'),
    new Promise<never>((_, j) => setTimeout(() => j(new Error('no echo')), 3000)),
  ]);
  assert.equal(String(echoed), 'ping over tcp relay');

  // Incoming: a peer connects to the relayed address after the client permitted its IP.
  await client.createPermission(['127.0.0.1']);
  const attempt = nextMessage<[number, { address: string; port: number }]>((cb) =>
    client.onConnectionAttempt((id, p) => cb([id, p])),
  );
  const peerSock = net.connect({ host: '127.0.0.1', port: alloc.relayed[0]!.port });
  cleanups.push(() => peerSock.destroy());
  peerSock.on('error', () => {});
  const [id, p] = await attempt;
  assert.equal(p.port, peerSock.localPort);
  const data = await client.bindConnection(id);
  cleanups.push(() => data.destroy());
  peerSock.write('from the peer');
  const [fromPeer] = await Promise.race([
    once(data, 'data'),
    new Promise<never>((_, j) => setTimeout(() => j(new Error('no data')), 3000)),
  ]);
  assert.equal(String(fromPeer), 'from the peer');
});

test('100k fuzzed TURN messages and ChannelData do not crash the server, which still serves afterwards', async () => {
  const server = new TurnServer({
    credentials: users,
    relayAddress: '127.0.0.1',
    realm: 'test',
    unauthRate: 1e9,
    unauthBurst: 1e9,
  });
  cleanups.push(() => server.close());
  const sent: Buffer[] = [];
  const fake = {
    send: (m: Uint8Array) => void sent.push(Buffer.from(m)),
    onMessage: () => () => {},
    address: () => ({ address: '127.0.0.1', port: 3478, family: 'IPv4' }),
    closed: false,
  };
  const seeds = [
    new StunBuilder(Method.Allocate, Cls.Request, randomBytes(12))
      .add(A.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]))
      .text(A.USERNAME, 'alice')
      .text(A.REALM, 'test')
      .text(A.NONCE, 'obMatJos2AAAAxxxx')
      .finish({ key: Buffer.alloc(16), fingerprint: true }),
    new StunBuilder(Method.ChannelBind, Cls.Request, randomBytes(12))
      .add(A.CHANNEL_NUMBER, Buffer.from([0x40, 0, 0, 0]))
      .xorAddress(A.XOR_PEER_ADDRESS, { address: '::1', port: 5 })
      .finish(),
    new StunBuilder(Method.Send, Cls.Indication, randomBytes(12))
      .xorAddress(A.XOR_PEER_ADDRESS, { address: '1.2.3.4', port: 5 })
      .add(A.DATA, Buffer.alloc(33))
      .finish(),
    new StunBuilder(Method.CreatePermission, Cls.Request, randomBytes(12))
      .xorAddress(A.XOR_PEER_ADDRESS, { address: '1.2.3.4', port: 5 })
      .add(A.PASSWORD_ALGORITHMS, Buffer.from([0, 1, 0, 0]))
      .finish({ fingerprint: true }),
    Buffer.from([0x40, 0x01, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]),
  ];
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let i = 0; i < 100_000; i++) {
    const base = seeds[i % seeds.length]!;
    let msg: Buffer;
    switch (i % 4) {
      case 0: {
        msg = Buffer.from(base);
        for (let k = 0, n = 1 + rnd(4); k < n; k++) msg[rnd(msg.length)]! ^= 1 << rnd(8);
        break;
      }
      case 1:
        msg = base.subarray(0, rnd(base.length + 1));
        break;
      case 2: {
        msg = Buffer.from(base);
        msg.writeUInt16BE(rnd(0x10000), 2 + (rnd(2) ? 0 : rnd(Math.max(1, msg.length - 3))));
        break;
      }
      default: {
        msg = randomBytes(rnd(120));
        if (msg.length) msg[0] = rnd(2) ? rnd(4) : 0x40 + rnd(16);
      }
    }
    server.handleUdp(fake, msg, { address: `127.0.0.${1 + rnd(3)}`, port: 1000 + rnd(5), family: 'IPv4' });
  }
  for (const s of sent) assert.ok(s.length < 600, 'responses stay small');
  // Still answers properly.
  const before = sent.length;
  server.handleUdp(
    fake,
    new StunBuilder(Method.Allocate, Cls.Request, randomBytes(12))
      .add(A.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]))
      .finish(),
    { address: '127.0.0.9', port: 1, family: 'IPv4' },
  );
  assert.equal(sent.length, before + 1);
  assert.equal(errorInfo(parseStun(sent[before]!)!)?.code, 401);
});

test('close() releases every relay socket (the relayed port can be bound again)', async () => {
  const server = new TurnServer({ credentials: users, relayAddress: '127.0.0.1', realm: 'test' });
  const { port } = await server.listen({ address: '127.0.0.1', port: 0 });
  const { client } = await udpClient(port);
  const alloc = await client.allocate();
  server.close();
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(alloc.relayed[0]!.port, '127.0.0.1', () => resolve());
  });
  s.close();
});

test('two clients relay to each other through their relayed addresses by default, but only within the relay port range', async () => {
  // No allowPeers: 127.0.0.1 is both loopback and the server's own relay address.
  const { server, port } = await startServer();
  const a = await udpClient(port);
  const b = await udpClient(port, 'bob', 'builder');
  const ra = (await a.client.allocate()).relayed[0]!;
  const rb = (await b.client.allocate()).relayed[0]!;
  await b.client.createPermission([ra]);
  await a.client.bindChannel(rb);
  const got = nextMessage<[Buffer, { address: string; port: number }]>((cb) => b.client.onData((d, p) => cb([d, p])));
  a.client.send(Buffer.from('relay to relay'), rb);
  const [d, from] = await got;
  assert.equal(d.toString(), 'relay to relay');
  assert.deepEqual(from, ra);
  // Another loopback address is still refused, and the relay's own IP outside the relay range is unreachable.
  await assert.rejects(a.client.createPermission(['127.0.0.2']), (e: unknown) =>
    isNatpunchError(e, 'TURN_FORBIDDEN_PEER'),
  );
  await assert.rejects(a.client.bindChannel({ address: '127.0.0.1', port: 22 }), (e: unknown) =>
    isNatpunchError(e, 'TURN_FORBIDDEN_PEER'),
  );
  const local = dgram.createSocket('udp4');
  cleanups.push(() => local.close());
  let bound = false;
  for (let i = 0; i < 20 && !bound; i++) {
    bound = await new Promise<boolean>((resolve) => {
      local.once('error', () => resolve(false));
      local.bind(40000 + Math.floor(Math.random() * 9000), '127.0.0.1', () => resolve(true));
    });
  }
  assert.ok(bound);
  let leaked = false;
  local.on('message', () => (leaked = true));
  const before = server.stats.deniedPeers;
  const tr = (
    a.client as unknown as { sendIndication(d: Uint8Array, p: { address: string; port: number }): Buffer }
  ).sendIndication(Buffer.from('ssrf?'), { address: '127.0.0.1', port: local.address().port });
  a.transport.send(tr, port, '127.0.0.1');
  for (let i = 0; i < 60 && server.stats.deniedPeers === before; i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(leaked, false);
  assert.equal(server.stats.deniedPeers, before + 1);
});

test('two Allocates racing on one 5-tuple create one allocation (the second is dropped or 437)', async () => {
  const { server, port } = await startServer();
  const sock = dgram.createSocket('udp4');
  cleanups.push(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const first = peerMessage(sock);
  sock.send(
    new StunBuilder(Method.Allocate, Cls.Request, randomBytes(12))
      .add(A.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]))
      .finish(),
    port,
    '127.0.0.1',
  );
  const challenge = parseStun((await first).msg)!;
  const nonce = attrText(challenge, A.NONCE)!;
  const { longTermKey } = await import('../../src/relay/auth.js');
  const key = longTermKey('alice', 'test', 'wonderland');
  const signed = () =>
    new StunBuilder(Method.Allocate, Cls.Request, randomBytes(12))
      .add(A.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]))
      .text(A.USERNAME, 'alice')
      .text(A.REALM, 'test')
      .text(A.NONCE, nonce)
      .finish({ key });
  const replies: Buffer[] = [];
  sock.on('message', (m) => replies.push(m));
  sock.send(signed(), port, '127.0.0.1');
  sock.send(signed(), port, '127.0.0.1');
  for (let i = 0; i < 100 && !replies.some((r) => parseStun(r)!.cls === Cls.Success); i++)
    await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 200)); // a second answer, if any, would be right behind
  assert.equal(server.stats.allocations, 1);
  const classes = replies.map((r) => parseStun(r)!.cls);
  assert.equal(classes.filter((c) => c === Cls.Success).length, 1);
  for (const r of replies) if (parseStun(r)!.cls === Cls.Error) assert.equal(errorInfo(parseStun(r)!)?.code, 437);
});

test('garbage on a TURN TCP connection closes it; the server keeps serving', async () => {
  const { port } = await startServer();
  for (const bytes of [
    Buffer.from([0x80, 1, 2, 3]),
    Buffer.from([0x00, 0x03, 0xff, 0xff, ...randomBytes(16)]),
    Buffer.from([0x4f, 0xff, 0xff, 0xff]),
  ]) {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    await once(s, 'connect');
    s.write(bytes);
    s.write(randomBytes(70_000));
    const closed = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 15_000);
      s.once('close', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    s.destroy();
    assert.ok(closed, `connection starting ${bytes.subarray(0, 4).toString('hex')} was closed`);
  }
  const { client } = await udpClient(port);
  await client.allocate();
});
