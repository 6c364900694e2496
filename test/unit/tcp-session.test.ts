/** Session over a TCP socket (Session.establishTcp): Noise XX, key checks, allow list, streams, datagrams. Loopback. */
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Session, type Allow } from '../../src/session/session.js';
import { generateKeyPair } from '../../src/session/identity.js';
import type { MuxStream } from '../../src/session/mux.js';

async function socketPair(): Promise<{ client: net.Socket; server: net.Socket; close: () => void }> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const client = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((r, j) => client.once('connect', r).once('error', j));
  const server = await accepted;
  return { client, server, close: () => srv.close() };
}

async function pair(opts: { expected?: Uint8Array; allow?: Allow } = {}) {
  const a = generateKeyPair();
  const b = generateKeyPair();
  const { client, server, close } = await socketPair();
  const results = await Promise.allSettled([
    Session.establishTcp({
      socket: client,
      isInitiator: true,
      keyPair: a,
      expectedRemoteKey: opts.expected ?? b.publicKey,
      handshakeTimeoutMs: 5_000,
    }),
    Session.establishTcp({
      socket: server,
      isInitiator: false,
      keyPair: b,
      ...(opts.allow ? { allow: opts.allow } : {}),
      handshakeTimeoutMs: 5_000,
    }),
  ]);
  close();
  return { a, b, results };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
function readAll(s: MuxStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

test('a TCP session authenticates both keys and carries streams both ways, data hashed', async () => {
  const { a, b, results } = await pair();
  assert.equal(results[0].status, 'fulfilled');
  assert.equal(results[1].status, 'fulfilled');
  const [ia, rb] = results.map((r) => (r as PromiseFulfilledResult<Session>).value) as [Session, Session];
  try {
    assert.deepEqual(ia.remotePublicKey, b.publicKey);
    assert.deepEqual(rb.remotePublicKey, a.publicKey);
    assert.equal(ia.transport, 'tcp');
    assert.equal(ia.path.transport, 'tcp');
    assert.equal(ia.path.remote.address, '127.0.0.1');
    // Both sides open a stream; the other echoes its hash.
    for (const [opener, acceptor] of [
      [ia, rb],
      [rb, ia],
    ] as const) {
      acceptor.once('stream', (st: MuxStream) => void readAll(st).then((got) => st.end(sha(got))));
      const payload = randomBytes(300_000);
      const st = opener.openStream();
      const back = readAll(st);
      st.end(payload);
      assert.equal((await back).toString(), sha(payload));
    }
    // Datagrams ride as frames on the stream.
    const got = new Promise<Buffer>((r) => rb.once('datagram', r));
    ia.sendDatagram(Buffer.from('hello datagram'));
    assert.equal((await got).toString(), 'hello datagram');
    assert.ok((await ia.ping()) >= 0);
    await assert.rejects(ia.migrate({ address: '127.0.0.1', port: 1 }), { code: 'BAD_ARGUMENT' });
    const closed = new Promise<unknown>((r) => rb.once('close', r));
    await ia.close();
    assert.equal(((await closed) as { code?: string } | null)?.code ?? null, 'SESSION_CLOSED');
  } finally {
    await ia.close();
    await rb.close();
  }
});

test('a TCP session refuses a responder with another key (HANDSHAKE_FAILED)', async () => {
  const { results } = await pair({ expected: generateKeyPair().publicKey });
  assert.equal(results[0].status, 'rejected');
  assert.equal((results[0] as PromiseRejectedResult).reason.code, 'HANDSHAKE_FAILED');
  if (results[1].status === 'fulfilled') await results[1].value.close();
});

test('the allow list refuses an initiator over TCP (NOT_ALLOWED on both ends)', async () => {
  const { results } = await pair({ allow: [] });
  assert.equal(results[0].status, 'rejected');
  assert.equal((results[0] as PromiseRejectedResult).reason.code, 'NOT_ALLOWED');
  assert.equal(results[1].status, 'rejected');
  assert.equal((results[1] as PromiseRejectedResult).reason.code, 'NOT_ALLOWED');
});

test('garbage instead of a handshake fails the TCP session setup with a typed error', async () => {
  const { client, server, close } = await socketPair();
  const s = Session.establishTcp({
    socket: server,
    isInitiator: false,
    keyPair: generateKeyPair(),
    handshakeTimeoutMs: 2_000,
  });
  client.end(randomBytes(64));
  await assert.rejects(s, (e: { code?: string }) => e.code === 'HANDSHAKE_FAILED');
  client.destroy();
  close();
});
