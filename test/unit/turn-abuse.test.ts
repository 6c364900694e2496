// Issue 18's TURN holes, tested as an attacker would try them:
//  3. the relay-to-relay exception reaches exactly the server's live allocations, never a UDP or TCP service on
//     the relay host;
//  4. a thousand self-made keys cannot exhaust allocations (per-source credential rate and allocation quota), and
//     the unscoped --auth-secret service gives credentials only to the keys the operator allows.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { TurnServer, DEFAULT_MAX_ALLOCATIONS_PER_SOURCE } from '../../src/relay/server.js';
import { TurnClient } from '../../src/relay/client.js';
import { SharedSecretStore, UsersFileStore } from '../../src/relay/auth.js';
import { DEFAULT_CREDENTIAL_RATE_PER_MINUTE } from '../../src/relay/issuer.js';
import { startServer } from '../../src/server/serve.js';
import { RendezvousClient, type TurnCredentials } from '../../src/rendezvous/client.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { decodeRendezvous, encodeRendezvous, PONG_BYTES, REGISTER_PAD_BYTES } from '../../src/wire/rendezvous.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const forbidden = (e: unknown) => isNatpunchError(e, 'TURN_FORBIDDEN_PEER');

/** A port in the relay range (49152..60999: also in Linux's ephemeral range, so free ports are likely) bound by `bind`. */
async function bindInRelayRange<T>(bind: (port: number) => Promise<T | null>): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const r = await bind(49152 + Math.floor(Math.random() * (60999 - 49152)));
    if (r) return r;
  }
  throw new Error('no free port in the relay range');
}

test('relay to relay reaches live allocations only: a UDP and a TCP service on the relay address are unreachable', async () => {
  // Relay address 127.0.0.1 and no allow list: the relay address is the server's own, so the only way to it is
  // the relay-to-relay exception — exactly what an attacker on a public relay address would try.
  const server = new TurnServer({ credentials: new UsersFileStore('mallory:pw\nbob:pw\n'), relayAddress: '127.0.0.1' });
  cleanups.push(() => server.close());
  const { port } = await server.listen({ port: 0, address: '127.0.0.1' });

  // A UDP and a TCP service on the relay host, on ports inside the relay range.
  const udpService = await bindInRelayRange(
    (p) =>
      new Promise<dgram.Socket | null>((resolve) => {
        const s = dgram.createSocket('udp4');
        s.once('error', () => {
          s.close();
          resolve(null);
        });
        s.bind(p, '127.0.0.1', () => resolve(s));
      }),
  );
  cleanups.push(() => udpService.close());
  const udpHeard: Buffer[] = [];
  udpService.on('message', (m) => udpHeard.push(m));
  const tcpService = await bindInRelayRange(
    (p) =>
      new Promise<net.Server | null>((resolve) => {
        const s = net.createServer((c) => c.end('secret service\n'));
        s.once('error', () => resolve(null));
        s.listen(p, '127.0.0.1', () => resolve(s));
      }),
  );
  cleanups.push(() => tcpService.close());
  let tcpAccepted = 0;
  tcpService.on('connection', () => tcpAccepted++);
  const udpPort = (udpService.address() as net.AddressInfo).port;
  const tcpPort = (tcpService.address() as net.AddressInfo).port;

  // UDP allocation: the relay address may be permitted (for relay to relay), but the service's port is refused.
  const tm = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  cleanups.push(() => tm.close());
  const mallory = new TurnClient({
    transport: tm,
    server: { address: '127.0.0.1', port },
    username: 'mallory',
    password: 'pw',
  });
  cleanups.push(() => mallory.close());
  await mallory.allocate();
  await mallory.createPermission(['127.0.0.1']);
  await assert.rejects(
    mallory.bindChannel({ address: '127.0.0.1', port: udpService.address().port }),
    forbidden,
    'ChannelBind to the UDP service',
  );
  await assert.rejects(
    mallory.bindChannel({ address: '127.0.0.1', port }),
    forbidden,
    "ChannelBind to the TURN server's own port",
  );
  const denied = server.stats.deniedPeers;
  mallory.send(Buffer.from('probe'), { address: '127.0.0.1', port: udpPort }); // a Send indication: dropped
  // Positive control on the same path: another user's live allocation is reachable relay to relay.
  const tb = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  cleanups.push(() => tb.close());
  const bob = new TurnClient({
    transport: tb,
    server: { address: '127.0.0.1', port },
    username: 'bob',
    password: 'pw',
  });
  cleanups.push(() => bob.close());
  const bobAlloc = await bob.allocate();
  await bob.createPermission(['127.0.0.1']);
  const arrived = new Promise<string>((resolve) => {
    const off = bob.onData((d) => {
      off();
      resolve(d.toString());
    });
  });
  mallory.send(Buffer.from('to bob'), bobAlloc.relayed[0]!);
  assert.equal(await arrived, 'to bob');
  assert.equal(udpHeard.length, 0, 'the UDP service heard nothing (the probe was sent before the message bob got)');
  assert.ok(server.stats.deniedPeers > denied, 'the Send indication to the service was refused');

  // RFC 6062 TCP allocation: Connect to the TCP service on the relay address is refused; to a live TCP allocation
  // (relay to relay) it works.
  const tcpMallory = await TurnClient.connectTcp({
    server: { address: '127.0.0.1', port },
    username: 'mallory',
    password: 'pw',
    timeoutMs: 3000,
  });
  cleanups.push(() => tcpMallory.close());
  await tcpMallory.allocate({ transport: 'tcp' });
  await assert.rejects(
    tcpMallory.connectPeer({ address: '127.0.0.1', port: tcpPort }),
    forbidden,
    'Connect to the TCP service',
  );
  await assert.rejects(
    tcpMallory.connectPeer({ address: '127.0.0.1', port }),
    forbidden,
    "Connect to the TURN server's own TCP port",
  );
  assert.equal(tcpAccepted, 0, 'the TCP service accepted no connection');
  const tcpBob = await TurnClient.connectTcp({
    server: { address: '127.0.0.1', port },
    username: 'bob',
    password: 'pw',
    timeoutMs: 3000,
  });
  cleanups.push(() => tcpBob.close());
  const bobTcp = await tcpBob.allocate({ transport: 'tcp' });
  await tcpBob.createPermission(['127.0.0.1']);
  const stream = await tcpMallory.connectPeer(bobTcp.relayed[0]!);
  stream.destroy();
});

/** Sends a signed REGISTER for each key from one socket; resolves with the decoded answers once all are in. */
async function registerMany(
  port: number,
  count: number,
): Promise<{ registered: number; credentials: Array<{ username: string; password: string }> }> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  let registered = 0;
  let pongs = 0;
  const credentials: Array<{ username: string; password: string }> = [];
  let wake = () => {};
  sock.on('message', (m) => {
    let msg;
    try {
      msg = decodeRendezvous(m);
    } catch {
      return;
    }
    if (msg.type === 'turn-credentials') credentials.push({ username: msg.username, password: msg.password });
    if (msg.type === 'registered') registered++;
    if (msg.type === 'pong') pongs++;
    if (msg.type === 'registered' || msg.type === 'pong') wake();
  });
  const until = (cond: () => boolean) =>
    new Promise<void>((resolve) => {
      wake = () => cond() && resolve();
      wake();
    });
  // In batches, each awaited: the answers (REGISTERED, a PING, maybe credentials) must not overflow our socket.
  const BATCH = 50;
  for (let i = 0; i < count; i++) {
    const kp = generateKeyPair();
    const reg = encodeRendezvous(
      {
        type: 'register',
        requestId: i + 1,
        publicKey: Buffer.from(kp.publicKey),
        timestamp: Date.now(),
        nonce: randomBytes(16),
        reachable: false,
        rttMs: 0,
        candidates: [],
      },
      kp.secretKey,
      { padTo: REGISTER_PAD_BYTES }, // as the client pads it (the server's anti-amplification)
    );
    sock.send(reg, port, '127.0.0.1');
    if ((i + 1) % BATCH === 0 || i === count - 1) await until(() => registered === i + 1);
  }
  // Credentials follow REGISTERED at once; one more round trip (PING → PONG) makes sure all are in.
  const pong = until(() => pongs > 0);
  sock.send(
    encodeRendezvous({ type: 'ping', requestId: 0xffff_0000, time: Date.now() }, undefined, { padTo: PONG_BYTES }),
    port,
    '127.0.0.1',
  );
  await pong;
  sock.close();
  return { registered, credentials };
}

test(
  '1,000 self-made keys from one host cannot exhaust allocations; a configured user still gets one',
  { timeout: 120_000 },
  async () => {
    // serve --turn --users (configured users) with the default peer-relay mode; the rendezvous' own per-IP message
    // rate is lifted here so the relay's limits are what is measured.
    const handle = await startServer({
      port: 0,
      addresses: ['127.0.0.1'],
      rendezvous: { rateLimit: { perSecond: 100_000, burst: 100_000 } },
      relay: { turn: { credentials: new UsersFileStore('alice:wonderland\n') } },
    });
    cleanups.push(() => handle.close());
    const port = handle.udp[0]!.port;
    const { registered, credentials } = await registerMany(port, 1000);
    assert.equal(registered, 1000);
    assert.ok(
      credentials.length <= DEFAULT_CREDENTIAL_RATE_PER_MINUTE,
      `credentials issued to one host: ${credentials.length}`,
    );
    assert.ok(credentials.length >= 2);

    // Every credential tries two allocations (each from its own socket, so each is a new 5-tuple).
    let ok = 0;
    let quota = 0;
    const attempts = credentials
      .flatMap((c) => [c, c])
      .map(async (c) => {
        const t = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
        cleanups.push(() => t.close());
        const client = new TurnClient({
          transport: t,
          server: { address: '127.0.0.1', port },
          username: c.username,
          password: c.password,
          timeoutMs: 5000,
        });
        cleanups.push(() => client.close());
        try {
          await client.allocate();
          ok++;
        } catch (err) {
          if (/486/.test((err as Error).message)) quota++;
          else throw err;
        }
      });
    await Promise.all(attempts);
    assert.equal(
      ok,
      Math.min(DEFAULT_MAX_ALLOCATIONS_PER_SOURCE, credentials.length * 2),
      'allocations from one host stop at the per-source quota',
    );
    assert.equal(ok + quota, credentials.length * 2);

    // A configured user on another host still gets an allocation.
    const t = await NodeDatagramTransport.bind({ address: '127.0.0.2' });
    cleanups.push(() => t.close());
    const alice = new TurnClient({
      transport: t,
      server: { address: '127.0.0.1', port },
      username: 'alice',
      password: 'wonderland',
    });
    cleanups.push(() => alice.close());
    const a = await alice.allocate();
    assert.ok(a.relayed[0]!.port > 0);
    // So does a registered peer on another host.
    const tp = await NodeDatagramTransport.bind({ address: '127.0.0.3' });
    cleanups.push(() => tp.close());
    const rv = new RendezvousClient({
      transport: tp,
      server: { host: '127.0.0.1', port },
      keyPair: generateKeyPair(),
      tcpFallback: false,
      autoRefresh: false,
    });
    cleanups.push(() => rv.close());
    await rv.register();
    const creds = rv.turnCredentials ?? (await new Promise<TurnCredentials>((r) => rv.once('turn-credentials', r)));
    const tpc = await NodeDatagramTransport.bind({ address: '127.0.0.3' });
    cleanups.push(() => tpc.close());
    const peer = new TurnClient({
      transport: tpc,
      server: { address: '127.0.0.1', port },
      username: creds.username,
      password: creds.password,
    });
    cleanups.push(() => peer.close());
    await peer.allocate();
  },
);

test('--auth-secret credentials go only to allowed keys; others get scoped ones that cannot reach arbitrary hosts', async () => {
  const SECRET = 'operator-secret';
  const allowed = generateKeyPair();
  const handle = await startServer({
    port: 0,
    addresses: ['127.0.0.1'],
    relay: {
      turn: { credentials: new SharedSecretStore([SECRET]) },
      turnCredentials: { secret: SECRET, allow: [Buffer.from(allowed.publicKey).toString('hex')] },
    },
  });
  cleanups.push(() => handle.close());
  const port = handle.udp[0]!.port;
  const open = async (keyPair = generateKeyPair()) => {
    const t = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    cleanups.push(() => t.close());
    const rv = new RendezvousClient({
      transport: t,
      server: { host: '127.0.0.1', port },
      keyPair,
      tcpFallback: false,
      autoRefresh: false,
    });
    cleanups.push(() => rv.close());
    await rv.register();
    const c = rv.turnCredentials ?? (await new Promise<TurnCredentials>((r) => rv.once('turn-credentials', r)));
    const tc = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    cleanups.push(() => tc.close());
    const client = new TurnClient({
      transport: tc,
      server: { address: '127.0.0.1', port },
      username: c.username,
      password: c.password,
    });
    cleanups.push(() => client.close());
    await client.allocate();
    return { c, client };
  };
  const op = await open(allowed);
  assert.match(op.c.username, /^\d+:[0-9a-f]{16}$/, "the allowed key got the operator's shared-secret credentials");
  await op.client.createPermission(['198.51.100.7']); // full TURN: any public address
  const stranger = await open();
  assert.match(stranger.c.username, /^\d+:[0-9a-f]{64}$/, 'an unknown key got scoped credentials only');
  await assert.rejects(stranger.client.createPermission(['198.51.100.7']), forbidden);
});
