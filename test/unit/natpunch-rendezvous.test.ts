import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import {
  connect,
  listen,
  type ConnectOfferLike,
  type RendezvousFactory,
  type RendezvousLike,
} from '../../src/natpunch.js';
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
  /** Where the listener appears to be (a NAT mapping stand-in); default: its own socket. When set, the listener is
   *  told no candidates of the connecting side (it learns them from the checks: peer-reflexive through the mapping). */
  advertise: ((c: FakeClient) => number) | null = null;
  factory: RendezvousFactory = (init) => new FakeClient(this, init);
}

class FakeClient extends EventEmitter implements RendezvousLike {
  constructor(
    private hub: Hub,
    readonly init: Parameters<RendezvousFactory>[0],
  ) {
    super();
  }
  srflx(): Candidate {
    const a = this.init.transport.address();
    const port = this.hub.advertise && this.init.name ? this.hub.advertise(this) : a.port;
    return { type: 'srflx', transport: 'udp', address: '127.0.0.1', port, priority: candidatePriority('srflx') };
  }
  async register() {
    this.hub.peers.set(this.init.name ?? keyToId(this.init.keyPair.publicKey), {
      client: this,
      key: this.init.keyPair.publicKey,
      ...(this.init.name ? { name: this.init.name } : {}),
    });
    this.hub.peers.set(keyToId(this.init.keyPair.publicKey), { client: this, key: this.init.keyPair.publicKey });
    const a = this.init.transport.address();
    return { reflexive: { address: '127.0.0.1', port: a.port } };
  }
  async requestConnect(to: string | Uint8Array, options: { candidates?: Candidate[] }): Promise<ConnectOfferLike> {
    this.hub.requests++;
    const target = this.hub.peers.get(typeof to === 'string' ? to : keyToId(to));
    if (!target) throw Object.assign(new Error('not found'), { code: 'PEER_NOT_FOUND' });
    const connectionId = randomBytes(16);
    const mine = this.hub.advertise ? [] : [...(options.candidates ?? []), this.srflx()];
    target.client.emit('connect-request', {
      connectionId,
      role: 'responder',
      peerKey: this.init.keyPair.publicKey,
      candidates: mine,
      startAt: Date.now(),
    });
    return {
      connectionId,
      role: 'initiator',
      mode: 'punch',
      peerKey: this.hub.lie ?? target.key,
      ...(target.name ? { peerName: target.name } : {}),
      candidates: [target.client.srflx()],
      startAt: Date.now(),
    };
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
    const session = await connect({
      keyPair: kb,
      to: 'alice',
      rendezvous: hub.factory,
      bind: LOOPBACK,
      onProgress: (p) => phases.push(p.phase),
    });
    // technique-start / technique-end come from the race between 'punching' and 'path' (checked elsewhere).
    assert.deepEqual(
      phases.filter((p) => !p.startsWith('technique-')),
      ['gathering', 'offer', 'punching', 'path', 'connected'],
    );
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
    const err = await connect({
      keyPair: generateKeyPair(),
      to: keyToId(ka.publicKey),
      rendezvous: hub.factory,
      bind: LOOPBACK,
    }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isNatpunchError(err, 'PEER_KEY_MISMATCH'), String(err));
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
    const err = await connect({
      keyPair: generateKeyPair(),
      to: 'alice',
      rendezvous: hub.factory,
      bind: LOOPBACK,
      checkTimeoutMs: 800,
    }).then(
      () => null,
      (e: unknown) => e,
    );
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
    const clients = await Promise.all(
      [0, 1, 2].map(() =>
        connect({ keyPair: generateKeyPair(), to: 'alice', rendezvous: hub.factory, bind: LOOPBACK }),
      ),
    );
    while (listener.sessions.size < 3) await new Promise((r) => setTimeout(r, 10));
    const closed = clients.map((c) => once(c, 'close'));
    await listener.close();
    const reasons = (await Promise.all(closed)).map(([e]) => e as Error);
    for (const e of reasons) assert.ok(isNatpunchError(e, 'SESSION_CLOSED'), String(e));
  } finally {
    await listener.close();
  }
});

/** A two-sided UDP forwarder standing in for a NAT mapping between `inner` and `outer` (loopback ports). */
async function mapping(inner: number, outer: number) {
  const dgram = await import('node:dgram');
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  sock.on('message', (msg, rinfo) => {
    if (rinfo.port === inner) sock.send(msg, outer, '127.0.0.1');
    else if (rinfo.port === outer) sock.send(msg, inner, '127.0.0.1');
  });
  return { port: sock.address().port, close: () => new Promise<void>((r) => sock.close(() => r())) };
}

test('the path dies mid-transfer: the connecting side re-punches through the rendezvous and the transfer completes', async () => {
  const hub = new Hub();
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const { UdxEndpoint } = await import('../../src/net/udx.js');
  const epB = await UdxEndpoint.bind(LOOPBACK);
  const listener = await alice(hub, ka);
  const n1 = await mapping(listener.endpoint.address().port, epB.address().port);
  const n2 = await mapping(listener.endpoint.address().port, epB.address().port);
  let current = n1.port;
  hub.advertise = () => current;
  try {
    const gotSession = once(listener, 'session') as Promise<[Session]>;
    const session = await connect({
      keyPair: kb,
      to: 'alice',
      rendezvous: hub.factory,
      endpoint: epB,
      keepAliveMs: 300,
      idleTimeoutMs: 1500,
    });
    assert.equal(session.path.remote.port, n1.port);
    const [remote] = await gotSession;
    const received = new Promise<Buffer>((resolve) =>
      remote.once('stream', (st: MuxStream) => void readAll(st).then(resolve)),
    );
    const data = randomBytes(4 * 1024 * 1024);
    const st = session.openStream();
    const requestsBefore = hub.requests;
    const moved = once(session, 'path') as Promise<[{ remote: { port: number } }]>;
    const writer = (async () => {
      for (let off = 0; off < data.length; off += 64 * 1024) {
        if (off === 1024 * 1024) {
          current = n2.port; // the rendezvous will now see alice behind the new mapping
          await n1.close(); // the old mapping dies with data in flight
        }
        if (!st.write(data.subarray(off, off + 64 * 1024))) await once(st, 'drain');
      }
      st.end();
    })();
    const [path] = await moved;
    assert.equal(path.remote.port, n2.port);
    assert.ok(hub.requests > requestsBefore, 'it went back to the rendezvous');
    await writer;
    assert.equal(
      createHash('sha256')
        .update(await received)
        .digest('hex'),
      createHash('sha256').update(data).digest('hex'),
    );
    await session.close();
  } finally {
    await listener.close();
    await epB.close();
    await n1.close().catch(() => {});
    await n2.close();
  }
});
