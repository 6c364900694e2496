// Replay protection sized to its window (issue 18): every signed message admitted inside the window is remembered,
// however many arrive (the old cache held 65,536 and could be outrun); a full cache refuses, never forgets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DatagramListener, DatagramTransport } from '../../src/net/datagram.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { RendezvousServer } from '../../src/rendezvous/server.js';
import { ReplayCache } from '../../src/rendezvous/replay.js';
import { encodeRendezvous, type ErrorMessage } from '../../src/wire/rendezvous.js';
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
