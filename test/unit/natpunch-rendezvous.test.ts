import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { connect, listen, type ConnectOfferLike, type RendezvousFactory, type RendezvousLike } from '../../src/natpunch.js';
import { generateKeyPair, keyToId, type KeyPair } from '../../src/session/identity.js';
import type { Session } from '../../src/session/session.js';
import type { MuxStream } from '../../src/session/mux.js';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';
import { isNatpunchError } from '../../src/util/errors.js';

const LOOPBACK = { address: '127.0.0.1' };

/**
 * An in-process stand-in for the rendezvous (what src/rendezvous provides over the network): it introduces peers
 * by name or key, handing each the other's candidates plus the address it "saw" (here: the socket's own address).
 * `lie` lets a test make it swap the introduced key.
 */
class Hub {
  peers = new Map<string, { client: FakeClient; key: Buffer; name?: string }>();
  lie: Buffer | null = null;
  requests = 0;
  factory: RendezvousFactory = (init) => new FakeClient(this, init);
}

class FakeClient extends EventEmitter implements RendezvousLike {
  constructor(private hub: Hub, private init: Parameters<RendezvousFactory>[0]) {
    super();
  }
  srflx(): Candidate {
    const a = this.init.transport.address();
    return { type: 'srflx', transport: 'udp', address: '127.0.0.1', port: a.port, priority: candidatePriority('srflx') };
  }
  async register() {
    this.hub.peers.set(this.init.name ?? keyToId(this.init.keyPair.publicKey), { client: this, key: this.init.keyPair.publicKey, ...(this.init.name ? { name: this.init.name } : {}) });
    this.hub.peers.set(keyToId(this.init.keyPair.publicKey), { client: this, key: this.init.keyPair.publicKey });
    const a = this.init.transport.address();
    return { reflexive: { address: '127.0.0.1', port: a.port } };
  }
  async requestConnect(to: string | Uint8Array, options: { candidates?: Candidate[] }): Promise<ConnectOfferLike> {
    this.hub.requests++;
    const target = this.hub.peers.get(typeof to === 'string' ? to : keyToId(to));
    if (!target) throw Object.assign(new Error('not found'), { code: 'PEER_NOT_FOUND' });
    const connectionId = randomBytes(16);
    const mine = [...(options.candidates ?? []), this.srflx()];
    target.client.emit('connect-request', { connectionId, role: 'responder', peerKey: this.init.keyPair.publicKey, candidates: mine, startAt: Date.now() });
    return { connectionId, role: 'initiator', mode: 'punch', peerKey: this.hub.lie ?? target.key, ...(target.name ? { peerName: target.name } : {}), candidates: [target.client.srflx()], startAt: Date.now() };
  }
  close() {}
}

function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

async function alice(hub: Hub, kp: KeyPair, allow?: Uint8Array[]) {
  return listen({ keyPair: kp, name: 'alice', rendezvous: hub.factory, bind: LOOPBACK, ...(allow ? { allow } : {}) });
}

test('connect by name through a rendezvous: progress in order, authenticated, echo works', async () => {
  const hub = new Hub();
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await alice(hub, ka, [kb.publicKey]);
  const phases: string[] = [];
  try {
    listener.on('session', (s: Session) => s.on('stream', (st: MuxStream) => st.pipe(st)));
    assert.deepEqual(listener.reflexive, { address: '127.0.0.1', port: listener.endpoint.address().port });
    const session = await connect({ keyPair: kb, to: 'alice', rendezvous: hub.factory, bind: LOOPBACK, onProgress: (p) => phases.push(p.phase) });
    assert.deepEqual(phases, ['gathering', 'offer', 'punching', 'path', 'connected']);
    assert.equal(keyToId(session.remotePublicKey), keyToId(ka.publicKey));
    const st = session.openStream();
    const echoed = readAll(st);
    st.end(Buffer.from('hello alice'));
    assert.equal((await echoed).toString(), 'hello alice');
    await session.close();
  } finally {
    await listener.close();
  }
});

test('connect by key refuses a rendezvous that introduces another key', async () => {
  const hub = new Hub();
  const ka = generateKeyPair();
  const listener = await alice(hub, ka);
  try {
    hub.lie = generateKeyPair().publicKey;
    const err = await connect({ keyPair: generateKeyPair(), to: keyToId(ka.publicKey), rendezvous: hub.factory, bind: LOOPBACK }).then(() => null, (e: unknown) => e);
    assert.ok(isNatpunchError(err, 'HANDSHAKE_FAILED'), String(err));
  } finally {
    await listener.close();
  }
});

test('connect by name to a rendezvous that lies about the key: the punch fails, nothing connects', async () => {
  const hub = new Hub();
  const ka = generateKeyPair();
  const listener = await alice(hub, ka);
  const sessions: Session[] = [];
  listener.on('session', (s: Session) => sessions.push(s));
  try {
    hub.lie = generateKeyPair().publicKey;
    const err = await connect({ keyPair: generateKeyPair(), to: 'alice', rendezvous: hub.factory, bind: LOOPBACK, checkTimeoutMs: 800 }).then(() => null, (e: unknown) => e);
    assert.ok(isNatpunchError(err, 'PUNCH_FAILED') || isNatpunchError(err, 'HANDSHAKE_FAILED'), String(err));
    assert.equal(sessions.length, 0);
  } finally {
    await listener.close();
  }
});

test('a listener serves several sessions on its one socket; closing it closes them', async () => {
  const hub = new Hub();
  const ka = generateKeyPair();
  const listener = await alice(hub, ka);
  try {
    const clients = await Promise.all([0, 1, 2].map(() => connect({ keyPair: generateKeyPair(), to: 'alice', rendezvous: hub.factory, bind: LOOPBACK })));
    while (listener.sessions.size < 3) await new Promise((r) => setTimeout(r, 10));
    const closed = clients.map((c) => once(c, 'close'));
    await listener.close();
    const reasons = (await Promise.all(closed)).map(([e]) => e as Error);
    for (const e of reasons) assert.ok(isNatpunchError(e, 'SESSION_CLOSED'), String(e));
  } finally {
    await listener.close();
  }
});
