// Replay protection sized to its window (issue 18): every signed message admitted inside the window is remembered,
// however many arrive (the old cache held 65,536 and could be outrun); a full cache refuses, never forgets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DatagramListener, DatagramTransport } from '../../src/net/datagram.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { RendezvousServer } from '../../src/rendezvous/server.js';
import { ReplayCache } from '../../src/rendezvous/replay.js';
import {
  decodeRendezvous,
  encodeRendezvous,
  MAX_CONNECT_NOTIFY_BYTES,
  type ConnectNotifyMessage,
  type ErrorMessage,
  type RendezvousMessage,
} from '../../src/wire/rendezvous.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { exchange } from './rendezvous-harness.js';

/** An in-process datagram path into the server: delivers synchronously, so a bulk run loses nothing. */
class Direct implements DatagramTransport {
  readonly closed = false;
  listener: DatagramListener | null = null;
  replies: Buffer[] = [];
  send(msg: Uint8Array): void {
    this.replies.push(Buffer.from(msg));
  }
  onMessage(listener: DatagramListener): () => void {
    this.listener = listener;
    return () => (this.listener = null);
  }
  address() {
    return { address: '127.0.0.1', port: 1, family: 'IPv4' };
  }
  deliver(msg: Buffer, port: number): void {
    this.listener!(msg, { address: '10.9.8.7', port, family: 'IPv4' });
  }
}

test('ReplayCache.delete forgets one entry now and leaves its bucket consistent', () => {
  const c = new ReplayCache<number>({ bucketMs: 1000, maxEntries: 2 });
  assert.ok(c.add('a', 1, 10_000));
  assert.ok(c.add('b', 2, 10_000));
  assert.ok(c.full);
  assert.ok(c.delete('a', 10_000));
  assert.ok(!c.delete('a', 10_000));
  assert.equal(c.get('a'), undefined);
  // Re-added with a later expiry: the old bucket no longer lists it, so its sweep does not forget it early.
  assert.ok(c.add('a', 3, 20_000));
  c.sweep(11_000);
  assert.equal(c.get('a'), 3);
  assert.equal(c.get('b'), undefined);
  c.sweep(21_000);
  assert.equal(c.size, 0);
});

test('ReplayCache: remembers until expiry, forgets by bucket, refuses when full instead of evicting', () => {
  const c = new ReplayCache<number>({ bucketMs: 1000, maxEntries: 3 });
  assert.ok(c.add('a', 1, 10_500));
  assert.ok(c.add('b', 2, 12_000));
  assert.ok(!c.add('a', 9, 20_000), 'a known key is not replaced');
  assert.ok(c.add('c', 3, 30_000));
  assert.ok(c.full);
  assert.ok(!c.add('d', 4, 30_000), 'full: refused, nothing evicted');
  assert.equal(c.get('a'), 1);
  c.sweep(10_999);
  assert.equal(c.get('a'), 1, 'not forgotten before its expiry');
  c.sweep(11_000);
  assert.equal(c.get('a'), undefined);
  assert.equal(c.get('b'), 2);
  assert.ok(c.add('d', 4, 30_000));
  c.sweep(31_000);
  assert.equal(c.size, 0);
});

test(
  'more than 65,536 signed messages inside the window, then an early one replayed → refused',
  { timeout: 240_000 },
  async () => {
    const T0 = Date.now();
    let now = T0;
    // Rate limits off: the point is the cache, not the token buckets (which would stop one source far earlier).
    const server = new RendezvousServer({
      now: () => now,
      rateLimit: { perSecond: 1e9, burst: 1e9 },
      sweepIntervalMs: 3_600_000,
    });
    const direct = new Direct();
    server.attach(direct);
    const udp = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    server.attach(udp);
    const attacker = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    try {
      const kp = generateKeyPair();
      const N = 70_000;
      const first = encodeRendezvous(
        { type: 'unregister', requestId: 1, publicKey: kp.publicKey, timestamp: T0 },
        kp.secretKey,
      );
      direct.deliver(first, 1000);
      for (let i = 2; i <= N; i++) {
        // Spread over 25 s of the 30 s window (the sweep runs as time passes, and must not forget them).
        now = T0 + Math.floor((i / N) * 25_000);
        if (i % 5000 === 0) await server.sweep();
        direct.deliver(
          encodeRendezvous({ type: 'unregister', requestId: i, publicKey: kp.publicKey, timestamp: now }, kp.secretKey),
          1000 + (i % 50_000),
        );
      }
      await server.sweep();
      const before = server.stats();
      assert.equal(before.replays, 0);
      assert.equal(before.serverFull, 0);
      assert.equal(before.badSignature + before.stale, 0);
      // The very first message, replayed by someone else 25 s later (still inside its ±30 s window).
      const answer = (await exchange(attacker, udp.address().port, first, 1)) as ErrorMessage;
      assert.equal(answer.type, 'error');
      assert.equal(answer.code, 'REPLAY');
      assert.equal(server.stats().replays, 1);
      // Once its timestamp has left the window it is forgotten, and the window check refuses it instead.
      now = T0 + 31_001 + 5_000;
      await server.sweep();
      const late = (await exchange(attacker, udp.address().port, first, 1)) as ErrorMessage;
      assert.equal(late.code, 'STALE');
    } finally {
      server.close();
      udp.close();
      attacker.close();
    }
  },
);

test('a full replay cache refuses new signed messages with SERVER_FULL (fail closed)', async () => {
  const server = new RendezvousServer({ maxNonces: 2 });
  const direct = new Direct();
  server.attach(direct);
  try {
    const kp = generateKeyPair();
    for (let i = 1; i <= 3; i++)
      direct.deliver(
        encodeRendezvous({ type: 'unregister', requestId: i, publicKey: kp.publicKey }, kp.secretKey),
        5000,
      );
    await new Promise((r) => setImmediate(r));
    assert.equal(server.stats().serverFull, 1);
    const { decodeRendezvous } = await import('../../src/wire/rendezvous.js');
    const errors = direct.replies.map((b) => decodeRendezvous(b)).filter((m) => m.type === 'error') as ErrorMessage[];
    assert.deepEqual(
      errors.map((e) => [e.requestId, e.code]),
      [[3, 'SERVER_FULL']],
    );
    assert.ok(errors[0]!.retryAfterMs >= 1000);
  } finally {
    server.close();
  }
});

/** The messages the server sent through a Direct transport, decoded. */
function sent(d: Direct): RendezvousMessage[] {
  return d.replies.map((b) => decodeRendezvous(b));
}

const settle = () => new Promise((r) => setImmediate(r));

function registerBytes(kp: ReturnType<typeof generateKeyPair>, requestId: number, timestamp: number): Buffer {
  return encodeRendezvous(
    { type: 'register', requestId, publicKey: kp.publicKey, reachable: false, rttMs: 0, candidates: [], timestamp },
    kp.secretKey,
  );
}

test('a registration keeps no replay entry: its record answers a retransmission and refuses the REGISTER from elsewhere', async () => {
  // One replay entry at most: a second registration is only admitted because the first left none behind.
  const server = new RendezvousServer({ sweepIntervalMs: 3_600_000, maxNonces: 1 });
  const direct = new Direct();
  server.attach(direct);
  try {
    const kp = generateKeyPair();
    const t = Date.now();
    const first = registerBytes(kp, 1, t);
    const second = registerBytes(kp, 2, t + 1);
    direct.deliver(first, 1000);
    await settle();
    direct.deliver(second, 1000);
    await settle();
    assert.deepEqual(
      sent(direct)
        .filter((m) => m.type === 'registered')
        .map((m) => m.requestId),
      [1, 2],
    );
    assert.equal(server.stats().serverFull, 0);
    // A retransmission of the live REGISTER from where it came: the same REGISTERED again, and still no entry.
    const answer = direct.replies.find((b) => decodeRendezvous(b).type === 'registered' && b.readUInt32BE(3) === 2);
    direct.replies = [];
    direct.deliver(second, 1000);
    await settle();
    assert.deepEqual(
      direct.replies.filter((b) => decodeRendezvous(b).type === 'registered'),
      [answer],
    );
    assert.equal(server.stats().retransmitsAnswered, 1);
    // From elsewhere: a replay.
    direct.replies = [];
    direct.deliver(second, 2000);
    await settle();
    assert.deepEqual(
      (sent(direct) as ErrorMessage[]).map((m) => [m.requestId, m.code]),
      [[2, 'REPLAY']],
    );
  } finally {
    server.close();
  }
});

test("after an UNREGISTER the key's older REGISTERs stay refused inside the window (their replay entries are gone)", async () => {
  let now = Date.now();
  const server = new RendezvousServer({ now: () => now, sweepIntervalMs: 3_600_000 });
  const direct = new Direct();
  server.attach(direct);
  try {
    const kp = generateKeyPair();
    const t = now;
    const reg = registerBytes(kp, 1, t);
    direct.deliver(reg, 1000);
    await settle();
    direct.deliver(
      encodeRendezvous({ type: 'unregister', requestId: 2, publicKey: kp.publicKey, timestamp: t + 1 }, kp.secretKey),
      1000,
    );
    await settle();
    assert.equal(server.stats().unregistrations, 1);
    direct.replies = [];
    now = t + 20_000; // inside the REGISTER's window
    direct.deliver(reg, 1000);
    await settle();
    assert.deepEqual(
      (sent(direct) as ErrorMessage[]).map((m) => [m.requestId, m.code]),
      [[1, 'STALE']],
    );
    assert.equal(server.stats().registrations, 1);
    // A newer REGISTER registers again.
    direct.replies = [];
    direct.deliver(registerBytes(kp, 3, now), 1000);
    await settle();
    assert.equal(sent(direct)[0]!.type, 'registered');
    // The marker lapses with the withdrawal's window; the window check refuses the old REGISTER from then on.
    now = t + 1 + 31_001 + 5_000;
    await server.sweep();
    direct.replies = [];
    direct.deliver(reg, 1000);
    await settle();
    assert.deepEqual(
      (sent(direct) as ErrorMessage[]).map((m) => m.code),
      ['STALE'],
    );
  } finally {
    server.close();
  }
});

test('a retransmitted CONNECT gets its answer rebuilt (none is kept); the responder is not notified twice', async () => {
  const server = new RendezvousServer({ sweepIntervalMs: 3_600_000 });
  const direct = new Direct();
  server.attach(direct);
  try {
    const responder = generateKeyPair();
    const initiator = generateKeyPair();
    direct.deliver(registerBytes(responder, 1, Date.now()), 1000);
    await settle();
    const connect = encodeRendezvous(
      {
        type: 'connect',
        requestId: 2,
        publicKey: initiator.publicKey,
        reachable: false,
        target: { key: responder.publicKey },
        connectionId: Buffer.alloc(16, 7),
        rttMs: 0,
        candidates: [],
      },
      initiator.secretKey,
      { padTo: MAX_CONNECT_NOTIFY_BYTES },
    );
    direct.replies = [];
    direct.deliver(connect, 3000);
    await settle();
    const answers = () => sent(direct).filter((m) => m.type === 'connect-notify') as ConnectNotifyMessage[];
    const first = answers().find((m) => m.role === 'initiator')!;
    assert.ok(first);
    direct.replies = [];
    direct.deliver(connect, 3000);
    await settle();
    await settle();
    const again = answers();
    assert.equal(again.length, 1, 'only the initiator hears again');
    const { serverTime: _a, ...rebuilt } = again[0]!;
    const { serverTime: _b, ...original } = first;
    assert.deepEqual(rebuilt, original);
    const s = server.stats();
    assert.equal(s.notifySent, 1);
    assert.equal(s.connects, 1);
    assert.equal(s.retransmitsAnswered, 1);
    // The same CONNECT from elsewhere is a replay.
    direct.replies = [];
    direct.deliver(connect, 4000);
    await settle();
    assert.deepEqual(
      (sent(direct) as ErrorMessage[]).map((m) => [m.type, m.code]),
      [['error', 'REPLAY']],
    );
  } finally {
    server.close();
  }
});
