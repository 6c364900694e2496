import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { startServer } from '../../src/server/serve.js';
import { TurnClient } from '../../src/relay/client.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { RendezvousClient, type TurnCredentials } from '../../src/rendezvous/client.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { isNatpunchError } from '../../src/util/errors.js';

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

test('default serve (no options): a registered peer relays to its introduced peer and its relay, never to a third host or the relay host', async () => {
  const server = await startServer({ port: 0 });
  assert.ok(server.relay?.peerRelay, 'the relay runs by default, in peer-relay mode');
  const port = server.udp[0]!.port;
  const ta = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const tb = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const third = dgram.createSocket('udp4');
  await new Promise<void>((r) => third.bind(0, '127.0.0.2', r));
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const a = new RendezvousClient({ transport: ta, server: { host: '127.0.0.1', port }, keyPair: ka, tcpFallback: false, autoRefresh: false });
  const b = new RendezvousClient({ transport: tb, server: { host: '127.0.0.1', port }, keyPair: kb, tcpFallback: false, autoRefresh: false });
  const turnA = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const turnB = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  let ca: TurnClient | undefined;
  let cb: TurnClient | undefined;
  try {
    await a.register();
    await b.register();
    const credA = await creds(a);
    const credB = await creds(b);
    assert.match(credA.username, new RegExp(`^\\d+:${Buffer.from(ka.publicKey).toString('hex')}$`), 'scoped to the key');
    ca = new TurnClient({ transport: turnA, server: { address: '127.0.0.1', port }, username: credA.username, password: credA.password });
    cb = new TurnClient({ transport: turnB, server: { address: '127.0.0.1', port }, username: credB.username, password: credB.password });
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
    await assert.rejects(ca.bindChannel({ address: '127.0.0.1', port: thirdAt.port }), forbidden, 'another port on the peer address');
    // The relay host's own services (its STUN/rendezvous port on the relay address): refused.
    await assert.rejects(ca.bindChannel({ address: allocA.relayed[0]!.address, port }), forbidden, 'a service on the relay host');
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
    assert.ok(server.relay!.turn.stats.deniedPeers >= 4);
  } finally {
    await ca?.close().catch(() => {});
    await cb?.close().catch(() => {});
    a.close();
    b.close();
    for (const t of [ta, tb, turnA, turnB]) t.close();
    third.close();
    await server.close();
  }
});

test('serve with relay: false hands out no relay credentials and answers no TURN request', async () => {
  const server = await startServer({ port: 0, addresses: ['127.0.0.1'], relay: false });
  const t = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const c = new RendezvousClient({ transport: t, server: { host: '127.0.0.1', port: server.udp[0]!.port }, keyPair: generateKeyPair(), tcpFallback: false, autoRefresh: false });
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
