import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { UdxEndpoint } from '../../src/net/udx.js';
import { generateKeyPair, keyToId, type KeyPair } from '../../src/session/identity.js';
import { Session, streamIdsFor, type Allow, type SessionOptions } from '../../src/session/session.js';
import type { MuxStream } from '../../src/session/mux.js';
import { DEFAULT_STREAM_WINDOW } from '../../src/session/mux.js';
import { isNatpunchError } from '../../src/util/errors.js';

interface Pair {
  a: UdxEndpoint;
  b: UdxEndpoint;
  close: () => Promise<void>;
}

async function endpoints(): Promise<Pair> {
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
  return { a, b, close: async () => void (await Promise.all([a.close(), b.close()])) };
}

function setup(
  p: Pair,
  ka: KeyPair,
  kb: KeyPair,
  opts: { expected?: Uint8Array; allow?: Allow; extra?: Partial<SessionOptions> } = {},
) {
  const ids = streamIdsFor(randomBytes(16));
  const initiator = Session.establish({
    endpoint: p.a,
    isInitiator: true,
    keyPair: ka,
    remote: { address: '127.0.0.1', port: p.b.address().port },
    localStreamId: ids.initiator,
    remoteStreamId: ids.responder,
    expectedRemoteKey: opts.expected ?? kb.publicKey,
    handshakeTimeoutMs: 5000,
    ...opts.extra,
  });
  const responder = Session.establish({
    endpoint: p.b,
    isInitiator: false,
    keyPair: kb,
    remote: { address: '127.0.0.1', port: p.a.address().port },
    localStreamId: ids.responder,
    remoteStreamId: ids.initiator,
    allow: opts.allow,
    handshakeTimeoutMs: 5000,
    ...opts.extra,
  });
  return { initiator, responder };
}

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Reads to 'end' without destroying the stream (a for-await loop would destroy the writable half too). */
function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

test('both ends authenticate each other and learn the remote static key', async () => {
  const p = await endpoints();
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  try {
    const { initiator, responder } = setup(p, ka, kb);
    const [sa, sb] = await Promise.all([initiator, responder]);
    assert.ok(sa.remotePublicKey.equals(kb.publicKey));
    assert.ok(sb.remotePublicKey.equals(ka.publicKey));
    assert.equal(sa.path.remote.port, p.b.address().port);
    const rtt = await sa.ping();
    assert.ok(rtt >= 0);
    assert.equal(typeof sa.path.rttMs, 'number');
    await Promise.all([sa.close(), sb.close()]);
  } finally {
    await p.close();
  }
});

test('the initiator refuses a responder that proves another key (HANDSHAKE_FAILED)', async () => {
  const p = await endpoints();
  try {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const meant = generateKeyPair();
    const { initiator, responder } = setup(p, ka, kb, { expected: meant.publicKey });
    const [ra, rb] = await Promise.allSettled([initiator, responder]);
    assert.equal(ra.status, 'rejected');
    assert.ok(
      isNatpunchError((ra as PromiseRejectedResult).reason, 'HANDSHAKE_FAILED'),
      String((ra as PromiseRejectedResult).reason),
    );
    // The responder never gets a usable session: either it fails, or the session closes at once.
    if (rb.status === 'fulfilled') {
      const [err] = (await once(rb.value, 'close')) as [Error];
      assert.ok(err);
    }
  } finally {
    await p.close();
  }
});

test('the responder refuses keys outside its allow list, and the initiator learns NOT_ALLOWED', async () => {
  const p = await endpoints();
  try {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const other = generateKeyPair();
    const { initiator, responder } = setup(p, ka, kb, { allow: [keyToId(other.publicKey)] });
    const [ra, rb] = await Promise.allSettled([initiator, responder]);
    assert.equal(ra.status, 'rejected');
    assert.ok(
      isNatpunchError((ra as PromiseRejectedResult).reason, 'NOT_ALLOWED'),
      String((ra as PromiseRejectedResult).reason),
    );
    assert.equal(rb.status, 'rejected');
    assert.ok(isNatpunchError((rb as PromiseRejectedResult).reason, 'NOT_ALLOWED'));
  } finally {
    await p.close();
  }
});

test('an allow function admits the listed key', async () => {
  const p = await endpoints();
  try {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const { initiator, responder } = setup(p, ka, kb, { allow: async (k) => k.equals(ka.publicKey) });
    const [sa, sb] = await Promise.all([initiator, responder]);
    await Promise.all([sa.close(), sb.close()]);
  } finally {
    await p.close();
  }
});

test('many parallel streams carry a few MiB both ways intact', async () => {
  const p = await endpoints();
  try {
    const { initiator, responder } = setup(p, generateKeyPair(), generateKeyPair());
    const [sa, sb] = await Promise.all([initiator, responder]);
    const STREAMS = 8;
    const SIZE = 512 * 1024; // 8 × 512 KiB = 4 MiB each way
    // Responder echoes a hash of what it got and sends its own payload back.
    sb.on('stream', (s: MuxStream) => {
      void (async () => {
        const payload = randomBytes(SIZE);
        s.write(payload);
        const got = await readAll(s);
        s.end(Buffer.from(`${sha(got)} ${sha(payload)}`));
      })();
    });
    const results = await Promise.all(
      Array.from({ length: STREAMS }, async () => {
        const s = sa.openStream();
        const payload = randomBytes(SIZE);
        s.end(payload);
        const back = await readAll(s);
        const fromPeer = back.subarray(0, SIZE);
        const [theirHashOfMine, theirHashOfTheirs] = back.subarray(SIZE).toString().split(' ');
        return { ok: theirHashOfMine === sha(payload) && theirHashOfTheirs === sha(fromPeer), len: back.length };
      }),
    );
    for (const r of results) assert.ok(r.ok, 'hashes match both ways');
    await Promise.all([sa.close(), sb.close()]);
  } finally {
    await p.close();
  }
});

test('a paused reader bounds the memory the writer can fill (credit flow control)', async () => {
  const p = await endpoints();
  try {
    const { initiator, responder } = setup(p, generateKeyPair(), generateKeyPair());
    const [sa, sb] = await Promise.all([initiator, responder]);
    const incoming = once(sb, 'stream') as Promise<[MuxStream]>;
    const s = sa.openStream();
    const total = 8 * 1024 * 1024;
    const data = randomBytes(total);
    // Write in chunks respecting backpressure; the reader stays paused.
    let written = 0;
    const writer = (async () => {
      while (written < total) {
        const chunk = data.subarray(written, written + 64 * 1024);
        written += chunk.length;
        if (!s.write(chunk)) await once(s, 'drain');
      }
      s.end();
    })();
    const [r] = await incoming;
    r.pause();
    await new Promise((res) => setTimeout(res, 500));
    assert.ok(r.bytesReceived <= DEFAULT_STREAM_WINDOW, `receiver holds ${r.bytesReceived} bytes > window`);
    assert.ok(s.bytesSent <= DEFAULT_STREAM_WINDOW, `sender sent ${s.bytesSent} bytes with no credit`);
    assert.ok(written < total, 'the writer is held back');
    // Other streams are not blocked by the paused one.
    const s2 = sa.openStream();
    const inc2 = once(sb, 'stream') as Promise<[MuxStream]>;
    s2.end(Buffer.from('still flowing'));
    const [r2] = await inc2;
    assert.equal((await readAll(r2)).toString(), 'still flowing');
    r.resume();
    const got = await readAll(r);
    await writer;
    assert.equal(sha(got), sha(data));
    await Promise.all([sa.close(), sb.close()]);
  } finally {
    await p.close();
  }
});

test('datagrams arrive encrypted and intact; oversize ones are refused', async () => {
  const p = await endpoints();
  try {
    const { initiator, responder } = setup(p, generateKeyPair(), generateKeyPair());
    const [sa, sb] = await Promise.all([initiator, responder]);
    const got = new Set<string>();
    sb.on('datagram', (d: Buffer) => got.add(d.toString()));
    for (let i = 0; i < 20 && got.size === 0; i++) {
      sa.sendDatagram(Buffer.from('dgram-hello'));
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(got.has('dgram-hello'));
    assert.throws(
      () => sa.sendDatagram(Buffer.alloc(5000)),
      (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
    );
    await Promise.all([sa.close(), sb.close()]);
  } finally {
    await p.close();
  }
});

test('a stream reset closes only that stream; half-close works both ways', async () => {
  const p = await endpoints();
  try {
    const { initiator, responder } = setup(p, generateKeyPair(), generateKeyPair());
    const [sa, sb] = await Promise.all([initiator, responder]);
    const incoming: MuxStream[] = [];
    sb.on('stream', (s: MuxStream) => incoming.push(s));
    const doomed = sa.openStream();
    const keeper = sa.openStream();
    doomed.write('x');
    keeper.write('y');
    while (incoming.length < 2) await new Promise((r) => setTimeout(r, 10));
    const [rDoomed, rKeeper] = incoming as [MuxStream, MuxStream];
    const err = once(rDoomed, 'error');
    doomed.on('error', () => {});
    doomed.destroy(new Error('boom'));
    const [e] = (await err) as [Error];
    assert.ok(isNatpunchError(e, 'STREAM_RESET'));
    // Half-close: initiator ends its side, still reads what the responder sends afterwards.
    keeper.end();
    rKeeper.resume();
    await once(rKeeper, 'end');
    rKeeper.end(Buffer.from('after your end'));
    const rest = await readAll(keeper);
    assert.equal(rest.toString(), 'after your end');
    await Promise.all([sa.close(), sb.close()]);
  } finally {
    await p.close();
  }
});

test("closing a session errors the peer's open streams and closes the peer session", async () => {
  const p = await endpoints();
  try {
    const { initiator, responder } = setup(p, generateKeyPair(), generateKeyPair());
    const [sa, sb] = await Promise.all([initiator, responder]);
    const incoming = once(sb, 'stream') as Promise<[MuxStream]>;
    const s = sa.openStream();
    s.write('hi');
    const [r] = await incoming;
    const rErr = once(r, 'error');
    const bClosed = once(sb, 'close');
    await sa.close();
    const [e] = (await rErr) as [Error];
    assert.ok(isNatpunchError(e, 'SESSION_CLOSED'), String(e));
    const [closeErr] = (await bClosed) as [Error];
    assert.ok(isNatpunchError(closeErr, 'SESSION_CLOSED'));
    assert.throws(
      () => sb.openStream(),
      (x: unknown) => isNatpunchError(x, 'SESSION_CLOSED'),
    );
  } finally {
    await p.close();
  }
});

test('close() right after end() still delivers everything the stream held back for credit', async () => {
  const p = await endpoints();
  try {
    const { initiator, responder } = setup(p, generateKeyPair(), generateKeyPair());
    const [sa, sb] = await Promise.all([initiator, responder]);
    const incoming = once(sb, 'stream') as Promise<[MuxStream]>;
    // Three windows: most of it is still queued behind flow control when close() is called.
    const payload = randomBytes(3 * DEFAULT_STREAM_WINDOW);
    const s = sa.openStream();
    s.end(payload);
    const closing = sa.close();
    const [r] = await incoming;
    const got = await readAll(r);
    await closing;
    assert.equal(sha(got), sha(payload));
    await sb.close();
  } finally {
    await p.close();
  }
});

test('a silent peer ends the session with SESSION_LOST on open streams (no hang)', async () => {
  const p = await endpoints();
  try {
    const extra = { keepAliveMs: 100, idleTimeoutMs: 600 };
    const { initiator, responder } = setup(p, generateKeyPair(), generateKeyPair(), { extra });
    const [sa, sb] = await Promise.all([initiator, responder]);
    const s = sa.openStream();
    s.write('x');
    const sErr = once(s, 'error');
    // The peer vanishes without a word: its socket is closed under it.
    await p.b.close();
    const [e] = (await sErr) as [Error];
    assert.ok(isNatpunchError(e, 'SESSION_LOST'), String(e));
    void sb;
  } finally {
    await p.close();
  }
});

/** A two-sided UDP forwarder standing in for a NAT mapping between `inner` and `outer` (both loopback ports). */
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

test('a rebound mapping between writes: the peer follows an authenticated path probe and the stream carries on', async () => {
  const p = await endpoints();
  const n1 = await mapping(p.b.address().port, p.a.address().port);
  const n2 = await mapping(p.b.address().port, p.a.address().port);
  try {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const ids = streamIdsFor(randomBytes(16));
    // No keepalive in flight when the mapping changes: libudx resends packets in flight to their old address.
    const common = { keepAliveMs: 60_000, idleTimeoutMs: 120_000, handshakeTimeoutMs: 5000 };
    const [sa, sb] = await Promise.all([
      Session.establish({
        endpoint: p.a,
        isInitiator: true,
        keyPair: ka,
        remote: { address: '127.0.0.1', port: n1.port },
        localStreamId: ids.initiator,
        remoteStreamId: ids.responder,
        expectedRemoteKey: kb.publicKey,
        ...common,
      }),
      Session.establish({
        endpoint: p.b,
        isInitiator: false,
        keyPair: kb,
        remote: { address: '127.0.0.1', port: n1.port },
        localStreamId: ids.responder,
        remoteStreamId: ids.initiator,
        ...common,
      }),
    ]);
    // A forged probe from elsewhere (wrong key) must not move the session.
    const forger = await UdxEndpoint.bind({ address: '127.0.0.1' });
    const forged = Buffer.alloc(38, 7);
    forged[0] = 0xf1;
    forged[1] = 0x10;
    forger.send(forged, p.a.address().port, '127.0.0.1');
    await forger.close();

    const incoming = once(sb, 'stream') as Promise<[MuxStream]>;
    const s = sa.openStream();
    const data = randomBytes(2 * 1024 * 1024);
    s.write(data.subarray(0, 1024 * 1024));
    const [r] = await incoming;
    const got = readAll(r);
    while (r.bytesReceived < 1024 * 1024) await new Promise((res) => setTimeout(res, 20));
    await new Promise((res) => setTimeout(res, 200)); // let the acks come back
    const moved = once(sa, 'path') as Promise<[{ remote: { port: number } }]>;
    await n1.close(); // the old mapping is gone; B's traffic now leaves through n2
    await sb.migrate({ address: '127.0.0.1', port: n2.port });
    const [path] = await moved;
    assert.equal(path.remote.port, n2.port);
    s.end(data.subarray(1024 * 1024));
    assert.equal(sha(await got), sha(data));
    await Promise.all([sa.close(), sb.close()]);
  } finally {
    // Sockets first: a UDX stream's close handshake needs its path (libudx retries it for seconds otherwise).
    await p.close();
    await n1.close().catch(() => {});
    await n2.close();
  }
});

for (const mover of ['responder', 'initiator'] as const)
  test(`a rebound mapping mid-transfer (data in flight both ways, the ${mover} moves): a new transport, nothing lost`, async () => {
    const p = await endpoints();
    const n1 = await mapping(p.b.address().port, p.a.address().port);
    const n2 = await mapping(p.b.address().port, p.a.address().port);
    try {
      const ka = generateKeyPair();
      const kb = generateKeyPair();
      const ids = streamIdsFor(randomBytes(16));
      const common = { keepAliveMs: 60_000, idleTimeoutMs: 120_000, handshakeTimeoutMs: 5000 };
      const [sa, sb] = await Promise.all([
        Session.establish({
          endpoint: p.a,
          isInitiator: true,
          keyPair: ka,
          remote: { address: '127.0.0.1', port: n1.port },
          localStreamId: ids.initiator,
          remoteStreamId: ids.responder,
          expectedRemoteKey: kb.publicKey,
          ...common,
        }),
        Session.establish({
          endpoint: p.b,
          isInitiator: false,
          keyPair: kb,
          remote: { address: '127.0.0.1', port: n1.port },
          localStreamId: ids.responder,
          remoteStreamId: ids.initiator,
          ...common,
        }),
      ]);
      const incoming = once(sb, 'stream') as Promise<[MuxStream]>;
      const s = sa.openStream();
      const up = randomBytes(6 * 1024 * 1024);
      const down = randomBytes(2 * 1024 * 1024);
      const aGot = readAll(s);
      const writer = (async () => {
        for (let off = 0; off < up.length; off += 64 * 1024) {
          if (!s.write(up.subarray(off, off + 64 * 1024))) await once(s, 'drain');
        }
        s.end();
      })();
      const [r] = await incoming;
      const bGot = readAll(r);
      r.end(down);
      while (r.bytesReceived < 1024 * 1024) await new Promise((res) => setTimeout(res, 5));
      const follower = mover === 'responder' ? sa : sb;
      const moved = once(follower, 'path') as Promise<[{ remote: { port: number } }]>;
      await n1.close(); // the old mapping dies with data in flight
      void (mover === 'responder' ? sb : sa).migrate({ address: '127.0.0.1', port: n2.port });
      const [path] = await moved;
      assert.equal(path.remote.port, n2.port);
      await writer;
      assert.equal(sha(await bGot), sha(up), 'initiator → responder intact');
      assert.equal(sha(await aGot), sha(down), 'responder → initiator intact');
      await Promise.all([sa.close(), sb.close()]);
    } finally {
      await p.close();
      await n1.close().catch(() => {});
      await n2.close();
    }
  });
