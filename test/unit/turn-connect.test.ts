import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { connect, listen } from '../../src/natpunch.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { UdxEndpoint } from '../../src/net/udx.js';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';
import type { MuxStream } from '../../src/session/mux.js';
import type { Session } from '../../src/session/session.js';
import { TurnServer } from '../../src/relay/server.js';
import { UsersFileStore } from '../../src/relay/auth.js';
import { RelayPath, parseRelaySpec } from '../../src/relay/path.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function readAll(s: MuxStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

test('parseRelaySpec reads user:password@host[:port]', () => {
  assert.deepEqual(parseRelaySpec('u:p:w@192.0.2.1:5000'), {
    server: { address: '192.0.2.1', port: 5000 },
    username: 'u',
    password: 'p:w',
  });
  assert.deepEqual(parseRelaySpec('u:p@[2001:db8::1]'), {
    server: { address: '2001:db8::1', port: 3478 },
    username: 'u',
    password: 'p',
  });
  assert.throws(() => parseRelaySpec('nope'), /user:password@host/);
  assert.deepEqual(parseRelaySpec('u:p@192.0.2.1?transport=tcp'), {
    server: { address: '192.0.2.1', port: 3478 },
    username: 'u',
    password: 'p',
    tcp: true,
  });
});

test('connect() falls back to the TURN relay when no direct pair answers; the session is encrypted end to end over it', async () => {
  const turn = new TurnServer({
    credentials: new UsersFileStore('peer:secret\n'),
    relayAddress: '127.0.0.1',
    allowPeers: ['127.0.0.0/8'],
  });
  const { port } = await turn.listen({ address: '127.0.0.1', port: 0 });
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const endpoint = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const listener = await listen({ keyPair: kb, bind: { address: '127.0.0.1' }, allow: [ka.publicKey] });
  let session: Session | null = null;
  let accepted: Session | null = null;
  try {
    const relay = await RelayPath.open({
      transport: endpoint,
      server: { address: '127.0.0.1', port },
      username: 'peer',
      password: 'secret',
    });
    const connectionId = randomBytes(16);
    // No usable direct candidate on either side: the listener only knows our relayed address, we only know a port
    // where nobody listens at the listener's IP (so the relay may permit its IP).
    const dead: Candidate = {
      type: 'srflx',
      transport: 'udp',
      address: '127.0.0.1',
      port: 9,
      priority: candidatePriority('srflx'),
    };
    const acceptP = listener.acceptOffer({
      connectionId,
      role: 'responder',
      peerKey: ka.publicKey,
      candidates: [relay.candidate()],
    });
    session = await connect({
      keyPair: ka,
      endpoint,
      connectionId,
      relay,
      relayHoldMs: 200,
      peer: { publicKey: kb.publicKey, candidates: [dead] },
      timeoutMs: 15_000,
    });
    accepted = await acceptP;
    assert.ok(accepted, 'listener accepted');
    assert.equal(session.path.kind, 'relay');
    assert.equal(accepted.path.kind, 'relay');
    assert.deepEqual(accepted.path.remote, relay.relayed, 'the listener talks to our relayed address');
    const payload = randomBytes(200_000);
    const incoming = new Promise<MuxStream>((resolve) => accepted!.once('stream', resolve));
    const s = session.openStream();
    const back = readAll(s);
    s.end(payload);
    const rs = await incoming;
    const got = readAll(rs);
    rs.end(Buffer.from('ack'));
    assert.equal(sha(await got), sha(payload));
    assert.equal(String(await back), 'ack');
    assert.ok(turn.stats.bytesToPeer > 200_000, 'the bytes went through the relay');
    await session.close();
    for (let i = 0; i < 40 && turn.stats.allocations > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(turn.stats.allocations, 0, 'closing the session released the allocation');
  } finally {
    await session?.close().catch(() => {});
    await accepted?.close().catch(() => {});
    await listener.close();
    await endpoint.close();
    turn.close();
  }
});

test('with a relay configured, a working direct path still wins and the allocation is released', async () => {
  const turn = new TurnServer({
    credentials: new UsersFileStore('peer:secret\n'),
    relayAddress: '127.0.0.1',
    allowPeers: ['127.0.0.0/8'],
  });
  const { port } = await turn.listen({ address: '127.0.0.1', port: 0 });
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: { address: '127.0.0.1' }, allow: [ka.publicKey] });
  let session: Session | null = null;
  let accepted: Session | null = null;
  try {
    const connectionId = randomBytes(16);
    const endpoint = await UdxEndpoint.bind({ address: '127.0.0.1' });
    const relay = await RelayPath.open({
      transport: endpoint,
      server: { address: '127.0.0.1', port },
      username: 'peer',
      password: 'secret',
    });
    const hostA: Candidate = {
      type: 'host',
      transport: 'udp',
      address: '127.0.0.1',
      port: endpoint.address().port,
      priority: candidatePriority('host'),
    };
    const acceptP = listener.acceptOffer({
      connectionId,
      role: 'responder',
      peerKey: ka.publicKey,
      candidates: [hostA, relay.candidate()],
    });
    session = await connect({
      keyPair: ka,
      endpoint,
      connectionId,
      relay,
      peer: { publicKey: kb.publicKey, candidates: listener.candidates },
      timeoutMs: 15_000,
    });
    accepted = await acceptP;
    assert.notEqual(session.path.kind, 'relay');
    for (let i = 0; i < 40 && turn.stats.allocations > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(turn.stats.allocations, 0);
    await session.close();
    await endpoint.close();
  } finally {
    await session?.close().catch(() => {});
    await accepted?.close().catch(() => {});
    await listener.close();
    turn.close();
  }
});

test('through serve (rendezvous + TURN on one port): the relay candidate reaches the peer in the offer; direct still wins', async () => {
  const { startServer } = await import('../../src/server/serve.js');
  const { attachTurn } = await import('../../src/relay/attach.js');
  const { turnRegistry } = await import('../../src/wire/turn.js');
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'], stun: { registry: turnRegistry }, relay: false });
  const turn = new TurnServer({ credentials: new UsersFileStore('peer:secret\n'), relayAddress: '127.0.0.1' });
  const detach = attachTurn(h, turn);
  const port = h.udp[0]!.port;
  const rendezvous = `127.0.0.1:${port}`;
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const offers: Candidate[][] = [];
  const listener = await listen({
    keyPair: kb,
    bind: { address: '127.0.0.1' },
    rendezvous,
    name: 'bob',
    allow: [ka.publicKey],
    onProgress: (p) => {
      if (p.phase === 'offer') offers.push(p.candidates);
    },
  });
  let session: Session | null = null;
  try {
    const accepted = new Promise<Session>((resolve) => listener.once('session', resolve));
    session = await connect({
      keyPair: ka,
      bind: { address: '127.0.0.1' },
      rendezvous,
      to: 'bob',
      relay: `peer:secret@127.0.0.1:${port}`,
      timeoutMs: 15_000,
    });
    await accepted;
    assert.ok(
      offers[0]?.some((c) => c.type === 'relay' && c.address === '127.0.0.1'),
      'the offer carried our relayed address',
    );
    assert.notEqual(session.path.kind, 'relay');
    for (let i = 0; i < 40 && turn.stats.allocations > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(turn.stats.allocations, 0, 'direct won: allocation released');
  } finally {
    await session?.close().catch(() => {});
    await listener.close();
    detach();
    turn.close();
    await h.close();
  }
});
