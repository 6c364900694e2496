import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { connect as tcpConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { UdxEndpoint } from '../../src/net/udx.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { Session, streamIdsFor } from '../../src/session/session.js';
import { TunnelExit, type TunnelEvent } from '../../src/tunnel/exit.js';
import { PeerLink } from '../../src/tunnel/link.js';
import { TcpForwarder } from '../../src/tunnel/forward.js';
import { SocksServer } from '../../src/tunnel/socks.js';
import { DestinationPolicy } from '../../src/tunnel/policy.js';
import {
  decodeReply,
  encodeAuthRequest,
  encodeGreeting,
  encodeRequest,
  SocksCommand,
  SocksReply,
} from '../../src/tunnel/socks5.js';

// Tunnels over sessions connected directly on loopback (no NATs, no rendezvous): the PeerLink's connect function
// builds a fresh session pair each time and attaches the exit to the responder side.

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface Rig {
  link: PeerLink;
  exit: TunnelExit;
  responders: Session[];
  events: TunnelEvent[];
  close(): Promise<void>;
}

async function rig(
  exitOptions: ConstructorParameters<typeof TunnelExit>[0],
  opts: { waitMs?: number; failFirst?: number } = {},
): Promise<Rig> {
  let failures = opts.failFirst ?? 0;
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const exit = new TunnelExit(exitOptions);
  const events: TunnelEvent[] = [];
  exit.on('event', (e: TunnelEvent) => events.push(e));
  const responders: Session[] = [];
  const endpoints: UdxEndpoint[] = [];
  const link = new PeerLink({
    ...(opts.waitMs ? { waitMs: opts.waitMs } : {}),
    connect: async () => {
      if (failures-- > 0) throw new Error('peer not reachable (simulated)');
      const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
      const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
      endpoints.push(a, b);
      const ids = streamIdsFor(randomBytes(16));
      const [sa, sb] = await Promise.all([
        Session.establish({
          endpoint: a,
          isInitiator: true,
          keyPair: ka,
          remote: { address: '127.0.0.1', port: b.address().port },
          localStreamId: ids.initiator,
          remoteStreamId: ids.responder,
          expectedRemoteKey: kb.publicKey,
          handshakeTimeoutMs: 5000,
        }),
        Session.establish({
          endpoint: b,
          isInitiator: false,
          keyPair: kb,
          remote: { address: '127.0.0.1', port: a.address().port },
          localStreamId: ids.responder,
          remoteStreamId: ids.initiator,
          handshakeTimeoutMs: 5000,
        }),
      ]);
      exit.attach(sb);
      responders.push(sb);
      return sa;
    },
  });
  const r: Rig = {
    link,
    exit,
    responders,
    events,
    async close() {
      exit.close();
      await link.close();
      await Promise.all(responders.map((s) => s.close()));
      await Promise.all(endpoints.map((e) => e.close().catch(() => {})));
    },
  };
  cleanups.push(() => r.close());
  return r;
}

/** A TCP server: per connection, runs `fn`. */
async function tcpServer(fn: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    fn(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return { server, port: (server.address() as AddressInfo).port };
}

function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

/** Hash service: sends `size` random bytes, reads everything, then answers with "hash(received) hash(sent)" and ends. */
function hashService(size: number) {
  return (s: Socket) => {
    const mine = randomBytes(size);
    s.write(mine);
    void readAll(s).then(
      (got) => s.end(`\n${sha(got)} ${sha(mine)}`),
      () => s.destroy(),
    );
  };
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(s));
    s.once('error', reject);
  });
}

async function forwarder(r: Rig, remotePort: number): Promise<{ fwd: TcpForwarder; port: number }> {
  const fwd = new TcpForwarder({ link: r.link, remotePort, listen: { port: 0 } });
  const { port } = await fwd.listen();
  cleanups.push(() => fwd.close());
  r.link.start();
  return { fwd, port };
}

async function hashedRoundTrip(port: number, size: number, serverSize: number): Promise<void> {
  const s = await dial(port);
  const payload = randomBytes(size);
  const back = readAll(s);
  s.end(payload);
  const got = await back;
  const body = got.subarray(0, serverSize);
  const [theirsOfMine, theirsOfTheirs] = got
    .subarray(serverSize + 1)
    .toString()
    .split(' ');
  assert.equal(theirsOfMine, sha(payload), 'client → server bytes intact');
  assert.equal(theirsOfTheirs, sha(body), 'server → client bytes intact');
}

test(
  'forward: bytes hashed both ways through one session; 40 parallel connections share it',
  { timeout: 60_000 },
  async () => {
    const SERVER_SIZE = 200 * 1024;
    const target = await tcpServer(hashService(SERVER_SIZE));
    const r = await rig({ targets: [{ host: '127.0.0.1', port: target.port }] });
    const { port } = await forwarder(r, target.port);
    await hashedRoundTrip(port, 3 * 1024 * 1024, SERVER_SIZE);
    await Promise.all(Array.from({ length: 40 }, (_, i) => hashedRoundTrip(port, 64 * 1024 + i, SERVER_SIZE)));
    assert.equal(r.responders.length, 1, 'one session (one punch) for every connection');
    assert.equal(r.events.filter((e) => e.event === 'open').length, 41);
  },
);

test(
  'forward: half-close propagates both ways (server FIN first, client keeps writing, then client FIN)',
  { timeout: 60_000 },
  async () => {
    const serverSaw = { afterOwnFin: '' };
    const target = await tcpServer((s) => {
      s.end('server done'); // FIN from the server first
      void readAll(s).then((b) => {
        serverSaw.afterOwnFin = b.toString();
      });
    });
    const r = await rig({ targets: [{ host: '127.0.0.1', port: target.port }] });
    const { port } = await forwarder(r, target.port);
    const s = await dial(port);
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    await once(s, 'end'); // the server's FIN reached us, our side is still writable
    assert.equal(Buffer.concat(chunks).toString(), 'server done');
    assert.equal(s.writable, true);
    s.end('client still talking');
    await once(s, 'close');
    for (let i = 0; i < 100 && serverSaw.afterOwnFin === ''; i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(serverSaw.afterOwnFin, 'client still talking');
  },
);

test(
  'forward: the exit only forwards to what it exposes; a refused port resets only that connection',
  { timeout: 60_000 },
  async () => {
    const target = await tcpServer(hashService(10));
    const r = await rig({ targets: [{ host: '127.0.0.1', port: target.port }] });
    const bad = await forwarder(r, target.port === 65535 ? 65534 : target.port + 1);
    const s = await dial(bad.port);
    const res = await new Promise<string>((resolve) => {
      s.on('data', () => resolve('data'));
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      s.once('end', () => resolve('end'));
    });
    assert.notEqual(res, 'data');
    const refused = r.events.find((e) => e.event === 'refused');
    assert.ok(refused && refused.event === 'refused' && refused.status === SocksReply.NOT_ALLOWED);
    // The session survives: the exposed port still works over it.
    const good = await forwarder(r, target.port);
    await hashedRoundTrip(good.port, 1000, 10);
    assert.equal(r.responders.length, 1);
  },
);

test(
  'forward: a target resetting one connection closes only that one; the others complete',
  { timeout: 60_000 },
  async () => {
    let n = 0;
    const target = await tcpServer((s) => {
      if (n++ === 0) {
        s.once('data', () => s.resetAndDestroy());
        return;
      }
      hashService(50_000)(s);
    });
    const r = await rig({ targets: [{ host: '127.0.0.1', port: target.port }] });
    const { port } = await forwarder(r, target.port);
    const victim = await dial(port);
    const victimDone = new Promise<string>((resolve) => {
      victim.on('data', () => {});
      victim.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      victim.once('close', () => resolve('closed'));
    });
    victim.write('hello');
    assert.ok(['ECONNRESET', 'closed', 'EPIPE'].includes(await victimDone));
    await Promise.all(Array.from({ length: 5 }, () => hashedRoundTrip(port, 100_000, 50_000)));
    assert.equal(r.responders.length, 1);
  },
);

test(
  'forward: a lost session is re-established and a new connection waits for it instead of failing',
  { timeout: 60_000 },
  async () => {
    const target = await tcpServer(hashService(1000));
    const r = await rig({ targets: [{ host: '127.0.0.1', port: target.port }] });
    const { port } = await forwarder(r, target.port);
    await hashedRoundTrip(port, 1000, 1000);
    const first = r.link.session!;
    const lost = once(first, 'close');
    await r.responders[0]!.close(); // the peer goes away
    await lost;
    await hashedRoundTrip(port, 5000, 1000);
    assert.equal(r.responders.length, 2, 'a second session was made');
    assert.notEqual(r.link.session, first);
  },
);

test(
  'forward: connections made while the session cannot be established wait for it, then flow',
  { timeout: 60_000 },
  async () => {
    const target = await tcpServer(hashService(2000));
    const r = await rig({ targets: [{ host: '127.0.0.1', port: target.port }] }, { failFirst: 2, waitMs: 15_000 });
    const { port } = await forwarder(r, target.port);
    const events: string[] = [];
    r.link.on('event', (e: { event: string }) => events.push(e.event));
    await Promise.all([hashedRoundTrip(port, 1000, 2000), hashedRoundTrip(port, 2000, 2000)]);
    assert.ok(events.filter((e) => e === 'connect-failed').length >= 1, events.join(','));
    assert.equal(r.responders.length, 1);
  },
);

test(
  'forward: with no session within --wait the connection is dropped (bounded), not hung',
  { timeout: 60_000 },
  async () => {
    const target = await tcpServer(hashService(10));
    const r = await rig({ targets: [{ host: '127.0.0.1', port: target.port }] }, { failFirst: 1000, waitMs: 800 });
    const { fwd, port } = await forwarder(r, target.port);
    const failed = once(fwd, 'event').then(async function next(e): Promise<{ event: string; error?: string }> {
      const ev = e[0] as { event: string; error?: string };
      return ev.event === 'failed' ? ev : next(await once(fwd, 'event'));
    });
    const s = await dial(port);
    s.on('data', () => {});
    s.on('error', () => {});
    await new Promise((res) => s.once('close', res));
    const ev = await failed;
    assert.match(String(ev.error), /no session with the peer within 800 ms: peer not reachable/);
  },
);

test(
  'forward: when the session dies, open connections are closed, never left hanging',
  { timeout: 60_000 },
  async () => {
    const target = await tcpServer((s) => s.write('hello')); // holds the connection open
    const r = await rig({ targets: [{ host: '127.0.0.1', port: target.port }] });
    const { port } = await forwarder(r, target.port);
    const s = await dial(port);
    s.on('error', () => {});
    await once(s, 'data');
    await r.responders[0]!.close();
    await new Promise((res) => s.once('close', res)); // reset or closed: bounded by the test timeout, never hangs
  },
);

test(
  'forward: a slow reader holds the writer back (memory bounded by windows, not by the transfer)',
  { timeout: 60_000 },
  async () => {
    const TOTAL = 32 * 1024 * 1024;
    let accepted = 0;
    const target = await tcpServer((s) => {
      // Writes as fast as the tunnel takes it, counting what was accepted into buffers.
      const chunk = randomBytes(256 * 1024);
      const pump = () => {
        while (accepted < TOTAL) {
          accepted += chunk.length;
          if (!s.write(chunk)) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
      s.resume();
    });
    const r = await rig({ targets: [{ host: '127.0.0.1', port: target.port }] });
    const { port } = await forwarder(r, target.port);
    const s = await dial(port);
    s.pause(); // the application does not read
    await new Promise((res) => setTimeout(res, 1500));
    console.log(`# slow reader: target buffered ${accepted} bytes of ${TOTAL}`);
    assert.ok(accepted < 16 * 1024 * 1024, `the target got ${accepted} bytes into buffers while nobody read`);
    let got = 0;
    s.on('data', (c: Buffer) => {
      got += c.length;
    });
    s.resume();
    await once(s, 'end');
    assert.equal(got, TOTAL);
    s.destroy();
  },
);

/** A SOCKS5 client speaking raw bytes; `recv(n)` waits for exactly n bytes. */
async function socksClient(port: number) {
  const s = await dial(port);
  let buf = Buffer.alloc(0);
  let ended = false;
  const waiters: Array<() => void> = [];
  s.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    waiters.splice(0).forEach((w) => w());
  });
  s.on('end', () => {
    ended = true;
    waiters.splice(0).forEach((w) => w());
  });
  s.on('error', () => {
    ended = true;
    waiters.splice(0).forEach((w) => w());
  });
  const recv = async (n: number): Promise<Buffer> => {
    const deadline = Date.now() + 15_000;
    while (buf.length < n) {
      if (ended) throw new Error(`connection ended after ${buf.length}/${n} bytes`);
      if (Date.now() > deadline) throw new Error('timeout');
      await new Promise<void>((res) => {
        waiters.push(res);
        setTimeout(res, 200);
      });
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  const recvReply = async () => {
    const head = await recv(5);
    const len = head[3] === 1 ? 4 : head[3] === 4 ? 16 : head[4]! + 1;
    const rest = await recv(len - 1 + 2);
    return decodeReply(Buffer.concat([head, rest]))!.value;
  };
  return { s, recv, recvReply, isEnded: () => ended };
}

async function socksRig(allowDest: string[], auth?: { username: string; password: string }) {
  const r = await rig({ destinations: DestinationPolicy.parse(allowDest) });
  const socks = new SocksServer({ link: r.link, listen: { port: 0 }, ...(auth ? { auth } : {}) });
  const { port } = await socks.listen();
  cleanups.push(() => socks.close());
  r.link.start();
  return { r, port };
}

test('socks: CONNECT (no auth) reaches an allowed destination; bytes flow both ways', { timeout: 60_000 }, async () => {
  const target = await tcpServer(hashService(4096));
  const { port } = await socksRig([`127.0.0.0/8:${target.port}`]);
  const c = await socksClient(port);
  c.s.write(encodeGreeting([0x00]));
  assert.deepEqual([...(await c.recv(2))], [5, 0]);
  c.s.write(encodeRequest(SocksCommand.CONNECT, { host: '127.0.0.1', port: target.port }));
  const rep = await c.recvReply();
  assert.equal(rep.reply, SocksReply.SUCCEEDED);
  assert.equal(rep.bound.host, '127.0.0.1');
  const body = await c.recv(4096);
  const payload = randomBytes(10_000);
  c.s.end(payload);
  const hashes = (await c.recv(1 + 64 + 1 + 64)).toString().trim().split(' ');
  assert.deepEqual(hashes, [sha(payload), sha(body)]);
});

test(
  'socks: a domain name is resolved on the exit side and checked against its CIDR rules',
  { timeout: 60_000 },
  async () => {
    const target = await tcpServer((s) => s.end('hi'));
    const { port } = await socksRig([`127.0.0.0/8:${target.port}`]);
    const c = await socksClient(port);
    c.s.write(
      Buffer.concat([
        encodeGreeting([0x00]),
        encodeRequest(SocksCommand.CONNECT, { host: 'localhost', port: target.port }),
      ]),
    );
    await c.recv(2);
    assert.equal((await c.recvReply()).reply, SocksReply.SUCCEEDED);
    assert.equal((await c.recv(2)).toString(), 'hi');
  },
);

test(
  'socks: denied destination → 0x02, refused port → 0x05, BIND / UDP ASSOCIATE → 0x07, bad ATYP → 0x08',
  { timeout: 60_000 },
  async () => {
    const target = await tcpServer((s) => s.end());
    const closed = await tcpServer(() => {});
    const closedPort = closed.port;
    await new Promise<void>((res) => closed.server.close(() => res()));
    const { port } = await socksRig([`127.0.0.1:${target.port},${closedPort}`]);
    const attempt = async (request: Buffer) => {
      const c = await socksClient(port);
      c.s.write(encodeGreeting([0x00]));
      await c.recv(2);
      c.s.write(request);
      const rep = await c.recvReply();
      c.s.destroy();
      return rep.reply;
    };
    assert.equal(
      await attempt(encodeRequest(SocksCommand.CONNECT, { host: '127.0.0.2', port: target.port })),
      SocksReply.NOT_ALLOWED,
    );
    assert.equal(
      await attempt(
        encodeRequest(SocksCommand.CONNECT, {
          host: '127.0.0.1',
          port: target.port + 1 === closedPort ? target.port + 2 : target.port + 1,
        }),
      ),
      SocksReply.NOT_ALLOWED,
    );
    assert.equal(
      await attempt(encodeRequest(SocksCommand.CONNECT, { host: '127.0.0.1', port: closedPort })),
      SocksReply.CONNECTION_REFUSED,
    );
    assert.equal(
      await attempt(encodeRequest(SocksCommand.BIND, { host: '127.0.0.1', port: target.port })),
      SocksReply.COMMAND_NOT_SUPPORTED,
    );
    assert.equal(
      await attempt(encodeRequest(SocksCommand.UDP_ASSOCIATE, { host: '0.0.0.0', port: 0 })),
      SocksReply.COMMAND_NOT_SUPPORTED,
    );
    assert.equal(await attempt(Buffer.from([5, 1, 0, 7, 1, 2, 3, 4, 0, 80])), SocksReply.ADDRESS_TYPE_NOT_SUPPORTED);
  },
);

test('socks: with --user/--password, RFC 1929 auth is required and checked', { timeout: 60_000 }, async () => {
  const target = await tcpServer((s) => s.end('secret stuff'));
  const { port } = await socksRig([`127.0.0.1:${target.port}`], { username: 'alice', password: 'wonderland' });
  // Offering only "no auth": no acceptable method.
  const c1 = await socksClient(port);
  c1.s.write(encodeGreeting([0x00]));
  assert.deepEqual([...(await c1.recv(2))], [5, 0xff]);
  // Wrong password: status 0x01 and the connection closes.
  const c2 = await socksClient(port);
  c2.s.write(encodeGreeting([0x00, 0x02]));
  assert.deepEqual([...(await c2.recv(2))], [5, 2]);
  c2.s.write(encodeAuthRequest('alice', 'wrong'));
  assert.deepEqual([...(await c2.recv(2))], [1, 1]);
  // Right password: CONNECT works.
  const c3 = await socksClient(port);
  c3.s.write(encodeGreeting([0x02]));
  assert.deepEqual([...(await c3.recv(2))], [5, 2]);
  c3.s.write(encodeAuthRequest('alice', 'wonderland'));
  assert.deepEqual([...(await c3.recv(2))], [1, 0]);
  c3.s.write(encodeRequest(SocksCommand.CONNECT, { host: '127.0.0.1', port: target.port }));
  assert.equal((await c3.recvReply()).reply, SocksReply.SUCCEEDED);
  assert.equal((await c3.recv(12)).toString(), 'secret stuff');
});

test('socks: garbage from a client closes that connection only', { timeout: 60_000 }, async () => {
  const target = await tcpServer((s) => s.end('ok'));
  const { port } = await socksRig([`127.0.0.1:${target.port}`]);
  const junk = await socksClient(port);
  junk.s.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  await assert.rejects(junk.recv(1));
  const c = await socksClient(port);
  c.s.write(
    Buffer.concat([encodeGreeting([0]), encodeRequest(SocksCommand.CONNECT, { host: '127.0.0.1', port: target.port })]),
  );
  await c.recv(2);
  assert.equal((await c.recvReply()).reply, SocksReply.SUCCEEDED);
});

test(
  'exit: garbage or a header that never completes gets a failure status; the session carries on',
  { timeout: 60_000 },
  async () => {
    const target = await tcpServer((s) => s.end('fine'));
    const r = await rig({ targets: [{ host: '127.0.0.1', port: target.port }], headerTimeoutMs: 300 });
    r.link.start();
    const session = await r.link.getSession();
    const statusOf = async (bytes: Buffer) => {
      const s = session.openStream();
      s.on('error', () => {});
      s.write(bytes);
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      await new Promise((res) => {
        s.once('end', res);
        s.once('close', res);
      });
      s.destroy();
      return Buffer.concat(chunks);
    };
    const garbage = await statusOf(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    assert.equal(garbage[0], 1, 'tunnel reply version');
    assert.equal(garbage[1], SocksReply.GENERAL_FAILURE);
    const partial = await statusOf(Buffer.from([1, 2, 3])); // CONNECT with a domain name that never arrives
    assert.equal(partial[1], SocksReply.GENERAL_FAILURE);
    const refusedConnect = await statusOf(Buffer.from([1, 2, 1, 127, 0, 0, 1, 0, 22])); // SOCKS exit: no --allow-dest
    assert.equal(refusedConnect[1], SocksReply.NOT_ALLOWED);
    // Still one healthy session: a forward works over it.
    const { port } = await forwarder(r, target.port);
    const s = await dial(port);
    assert.equal((await readAll(s)).toString(), 'fine');
    assert.equal(r.responders.length, 1);
    assert.equal(r.events.filter((e) => e.event === 'refused').length, 3);
  },
);

test(
  'socks: a client that never finishes its greeting is dropped after the handshake timeout',
  { timeout: 60_000 },
  async () => {
    const r = await rig({});
    const socks = new SocksServer({ link: r.link, listen: { port: 0 }, handshakeTimeoutMs: 300 });
    const { port } = await socks.listen();
    cleanups.push(() => socks.close());
    const s = await dial(port);
    s.on('error', () => {});
    s.write(Buffer.from([5])); // half a greeting
    await new Promise((res) => s.once('close', res));
    for (let i = 0; i < 100 && socks.connectionCount > 0; i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(socks.connectionCount, 0);
  },
);
