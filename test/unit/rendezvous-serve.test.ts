// The rendezvous inside `serve` (startServer and the CLI): shared UDP port with STUN, TCP dispatch by first byte,
// --no-rendezvous, and natpunch.listen()/connect() through it end to end on loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { startServer } from '../../src/server/serve.js';
import { stunBinding } from '../../src/stun/client.js';
import { connect, listen } from '../../src/natpunch.js';
import type { Session } from '../../src/session/session.js';
import type { MuxStream } from '../../src/session/mux.js';
import { generateKeyPair, keyToId } from '../../src/session/identity.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { NATPUNCH, startUntilLine, stop } from '../helpers/proc.js';
import { Bag, once } from './rendezvous-harness.js';

async function deadUdpPort(bag: Bag): Promise<number> {
  const t = await bag.transport();
  const port = t.address().port;
  t.close();
  return port;
}

test('serve runs the rendezvous beside STUN on one port: UDP registrations, TCP fallback by first byte', async () => {
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'] });
  const bag = new Bag();
  try {
    assert.ok(h.rendezvous);
    const port = h.udp[0]!.port;
    const alice = await bag.client({ port, tcpPort: port }, { name: 'alice' });
    const reg = await alice.register();
    assert.equal(reg.via, 'udp');
    // STUN on the same UDP socket and TCP port still answers.
    const u = await stunBinding({ host: '127.0.0.1', port }, { timeoutMs: 3000 });
    assert.equal(u.mapped.address, '127.0.0.1');
    const t = await stunBinding({ host: '127.0.0.1', port }, { tcp: true, timeoutMs: 3000 });
    assert.equal(t.mapped.address, '127.0.0.1');
    // A peer whose UDP is blocked reaches the rendezvous over serve's TCP port and gets a connect request through it.
    const walled = await bag.client(
      { port: await deadUdpPort(bag), tcpPort: port },
      { name: 'walled', initialRtoMs: 50, maxTransmissions: 2 },
    );
    assert.equal((await walled.register()).via, 'tcp');
    const incoming = once<import('../../src/rendezvous/client.js').ConnectOffer>(walled, 'connect-request');
    await alice.requestConnect('walled');
    assert.equal((await incoming).via, 'tcp');
    const s = h.rendezvous.stats();
    assert.equal(s.registrations, 2);
    assert.equal(s.tcpAccepted, 1);
    assert.equal(s.malformed, 0);
  } finally {
    await bag.close();
    await h.close();
  }
});

test('serve with rendezvous: false answers no rendezvous datagram and closes 0xF0 TCP connections', async () => {
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'], rendezvous: false });
  const bag = new Bag();
  try {
    assert.equal(h.rendezvous, undefined);
    const port = h.udp[0]!.port;
    const c = await bag.client({ port, tcpPort: port }, { initialRtoMs: 30, maxTransmissions: 2, tcpFallback: false });
    await assert.rejects(c.register(), (e: unknown) => isNatpunchError(e, 'TIMEOUT'));
    const sock = net.connect(port, '127.0.0.1');
    sock.on('error', () => {});
    sock.write(Buffer.from([0xf0, 0, 7, 0xf0, 1, 8, 0, 0, 0, 1]));
    await once(sock, 'close');
  } finally {
    await bag.close();
    await h.close();
  }
});

test("listen() and connect() through serve's rendezvous: introduced by name, authenticated, data both ways", async () => {
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'] });
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const rendezvous = `127.0.0.1:${h.udp[0]!.port}`;
  const listener = await listen({
    keyPair: kb,
    bind: { address: '127.0.0.1' },
    rendezvous,
    name: 'bob',
    allow: [ka.publicKey],
  });
  let sa: Session | undefined;
  try {
    const accepted = new Promise<Session>((resolve) => listener.once('session', resolve));
    sa = await connect({ keyPair: ka, bind: { address: '127.0.0.1' }, rendezvous, to: 'bob', timeoutMs: 15_000 });
    const sb = await accepted;
    assert.equal(keyToId(sa.remotePublicKey), keyToId(kb.publicKey));
    assert.equal(keyToId(sb.remotePublicKey), keyToId(ka.publicKey));
    const payload = randomBytes(256 * 1024);
    const echoed = new Promise<Buffer>((resolve) => {
      sb.on('stream', (s: MuxStream) => {
        const chunks: Buffer[] = [];
        s.on('data', (c: Buffer) => chunks.push(c));
        s.once('end', () => s.end(createHash('sha256').update(Buffer.concat(chunks)).digest()));
      });
      const st = sa!.openStream();
      const back: Buffer[] = [];
      st.on('data', (c: Buffer) => back.push(c));
      st.once('end', () => resolve(Buffer.concat(back)));
      st.end(payload);
    });
    assert.deepEqual(await echoed, createHash('sha256').update(payload).digest());
    const s = h.rendezvous!.stats();
    assert.equal(s.connects, 1);
    assert.equal(s.notifyAcked, 1);
  } finally {
    await sa?.close();
    await listener.close();
    await h.close();
  }
});

test('`natpunch serve --json` reports the rendezvous; --no-rendezvous turns it off', async () => {
  for (const off of [false, true]) {
    const args = ['serve', '--port', '0', '--address', '127.0.0.1', '--json', ...(off ? ['--no-rendezvous'] : [])];
    const { child, line } = await startUntilLine(NATPUNCH, args, (l) => l.startsWith('{'));
    const bag = new Bag();
    try {
      const info = JSON.parse(line);
      assert.equal(info.rendezvous, !off);
      const port = info.udp[0].port;
      const c = await bag.client(
        { port, tcpPort: port },
        { initialRtoMs: 50, maxTransmissions: 3, tcpFallback: false },
      );
      if (off) await assert.rejects(c.ping(), (e: unknown) => isNatpunchError(e, 'TIMEOUT'));
      else assert.ok((await c.ping()) >= 0);
    } finally {
      await bag.close();
      const exit = await stop(child, 'SIGTERM');
      assert.equal(exit.code, 0);
    }
  }
});

test('on a dual-stack serve socket, IPv4 peers are told plain IPv4 addresses (not ::ffff:), over UDP and TCP', async () => {
  const h = await startServer({ port: 0, addresses: ['::'] });
  const bag = new Bag();
  try {
    const port = h.udp[0]!.port;
    const c = await bag.client({ port, tcpPort: port }, { name: 'v4' });
    const reg = await c.register();
    assert.equal(reg.reflexive.address, '127.0.0.1');
    const walled = await bag.client(
      { port: await deadUdpPort(bag), tcpPort: port },
      { initialRtoMs: 30, maxTransmissions: 2 },
    );
    const found = await walled.lookup('v4');
    assert.ok(found.candidates.every((x) => !x.address.startsWith('::ffff:')));
    assert.equal(walled.via, 'tcp');
    const incoming = once<import('../../src/rendezvous/client.js').ConnectOffer>(c, 'connect-request');
    await walled.requestConnect('v4');
    const notify = await incoming;
    assert.ok(notify.candidates.some((x) => x.type === 'srflx' && x.transport === 'tcp' && x.address === '127.0.0.1'));
  } finally {
    await bag.close();
    await h.close();
  }
});
