// Property test for the server's request path: hostile datagrams never escape as exceptions, and every reply to a
// UDP request decodes and respects the amplification bound (no larger than the request, except the RFC-required
// minimum answer, which exceeds it by at most STUN_RFC5780_EXTRA_BYTES in this RFC 5780 server and is counted).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import type { DatagramListener, DatagramTransport } from '../../src/net/datagram.js';
import {
  StunServer,
  STUN_MAX_AMPLIFICATION,
  STUN_OVERSIZED_BURST,
  STUN_OVERSIZED_PER_SECOND,
  STUN_REQUIRED_EXTRA_BYTES,
  STUN_RFC5780_EXTRA_BYTES,
} from '../../src/stun/server.js';
import {
  attr,
  ChangeRequest,
  decodeStun,
  encodeStun,
  Padding,
  ResponsePort,
  shortTermKey,
  Software,
  StunClass,
  StunMethod,
  Username,
} from '../../src/wire/stun/index.js';

/** An in-memory DatagramTransport: records what is sent, delivers what the test injects. */
class MemoryTransport implements DatagramTransport {
  readonly sent: Array<{ msg: Uint8Array; port: number; address: string }> = [];
  #listeners = new Set<DatagramListener>();
  constructor(readonly local: { address: string; port: number; family: string }) {}
  readonly closed = false;
  send(msg: Uint8Array, port: number, address: string): void {
    this.sent.push({ msg, port, address });
  }
  onMessage(listener: DatagramListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  address() {
    return this.local;
  }
  deliver(msg: Buffer, address: string, port: number): void {
    for (const l of this.#listeners) l(msg, { address, port, family: address.includes(':') ? 'IPv6' : 'IPv4' });
  }
}

function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('server: 30k hostile datagrams, no handler failure, every reply decodes and is within the amplification bound', () => {
  const seed = Number(process.env.STUN_FUZZ_SEED ?? Date.now() % 1e9);
  const rand = rng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const warnings: string[] = [];
  const logger = pino(
    { level: 'warn' },
    new Writable({
      write(chunk, _enc, cb) {
        warnings.push(String(chunk));
        cb();
      },
    }),
  );
  const group = [
    new MemoryTransport({ address: '127.0.0.1', port: 3478, family: 'IPv4' }),
    new MemoryTransport({ address: '127.0.0.1', port: 3479, family: 'IPv4' }),
    new MemoryTransport({ address: '127.0.0.2', port: 3478, family: 'IPv4' }),
    new MemoryTransport({ address: '127.0.0.2', port: 3479, family: 'IPv4' }),
  ];
  const plain = new MemoryTransport({ address: '::1', port: 3478, family: 'IPv6' });
  // The clock moves a second per datagram so the oversized-answer budget (tested below) does not silence the fuzz.
  let clock = 0;
  const server = new StunServer({ logger, now: () => (clock += 1000) });
  server.attachRfc5780({ primary: group[0]!, altPort: group[1]!, altIp: group[2]!, altBoth: group[3]! });
  server.attachUdp(plain);
  const all = [...group, plain];

  const tid = () => Uint8Array.from({ length: 12 }, () => int(256));
  const seeds: Buffer[] = [
    encodeStun({ cls: StunClass.Request, method: StunMethod.Binding, transactionId: tid() }),
    encodeStun({ cls: StunClass.Request, method: StunMethod.Binding, transactionId: tid() }, { fingerprint: true }),
    encodeStun({
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: tid(),
      attributes: [attr(ChangeRequest, { changeIp: true, changePort: true })],
    }),
    encodeStun({
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: tid(),
      attributes: [attr(ResponsePort, 40000)],
    }),
    encodeStun({
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: tid(),
      attributes: [attr(Padding, new Uint8Array(64))],
    }),
    encodeStun(
      { cls: StunClass.Request, method: StunMethod.Binding, transactionId: tid(), attributes: [attr(Username, 'u')] },
      { integrity: shortTermKey('p') },
    ),
    encodeStun({
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: Uint8Array.from({ length: 16 }, () => int(256)),
    }),
    encodeStun({
      cls: StunClass.Request,
      method: 0x123,
      transactionId: tid(),
      attributes: [{ type: 0x0042, value: new Uint8Array(3) }],
    }),
  ];
  let replies = 0;
  try {
    for (let n = 0; n < 30_000; n++) {
      let buf = Buffer.from(seeds[int(seeds.length)]!);
      switch (n % 4) {
        case 0:
          break; // well-formed
        case 1:
          for (let k = 1 + int(3); k > 0; k--) buf[int(buf.length)] ^= 1 << int(8);
          break;
        case 2:
          buf = buf.subarray(0, int(buf.length + 1));
          break;
        default: {
          const extra = Buffer.from(Uint8Array.from({ length: 4 * int(6) }, () => int(256)));
          buf = Buffer.concat([buf, extra]);
          if (rand() < 0.7) buf.writeUInt16BE((buf.length - 20) & 0xffff, 2);
        }
      }
      const t = all[int(all.length)]!;
      const oversizedBefore = server.counters.oversized;
      t.deliver(buf, t === plain ? '::1' : '127.0.0.1', 1000 + int(60000));
      const oversized = server.counters.oversized - oversizedBefore;
      for (const x of all) {
        for (const s of x.sent.splice(0)) {
          replies++;
          const bound = STUN_MAX_AMPLIFICATION * buf.length + (oversized > 0 ? STUN_RFC5780_EXTRA_BYTES : 0);
          assert.ok(s.msg.length <= bound, `reply ${s.msg.length} B to a ${buf.length} B request`);
          const r = decodeStun(s.msg, { allowLegacy: true });
          assert.ok(r.cls === StunClass.SuccessResponse || r.cls === StunClass.ErrorResponse);
        }
      }
    }
  } catch (err) {
    assert.fail(`seed ${seed}: ${(err as Error).stack}`);
  }
  assert.deepEqual(warnings, [], `seed ${seed}`);
  assert.ok(replies > 5000, `only ${replies} replies`);
  const c = server.counters;
  assert.equal(c.responses + c.errors, replies);
  server.close();
});

test('RFC-required answers larger than their request go out only within the per-source budget', () => {
  const t = new MemoryTransport({ address: '127.0.0.1', port: 3478, family: 'IPv4' });
  let clock = 1_000_000;
  const server = new StunServer({ now: () => clock });
  server.attachUdp(t);
  const bare = () =>
    encodeStun({
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: Uint8Array.from({ length: 12 }, (_, i) => i),
    });
  for (let i = 0; i < 20; i++) t.deliver(bare(), '192.0.2.7', 5000);
  assert.equal(t.sent.length, STUN_OVERSIZED_BURST, 'a burst, then silence');
  assert.ok(t.sent.every((s) => s.msg.length <= 20 + STUN_REQUIRED_EXTRA_BYTES));
  // Another source has its own budget; the first gets STUN_OVERSIZED_PER_SECOND more each second.
  t.deliver(bare(), '192.0.2.8', 5000);
  assert.equal(t.sent.length, STUN_OVERSIZED_BURST + 1);
  clock += 1000;
  for (let i = 0; i < 5; i++) t.deliver(bare(), '192.0.2.7', 5000);
  assert.equal(t.sent.length, STUN_OVERSIZED_BURST + 1 + STUN_OVERSIZED_PER_SECOND);
  // A request with room for its answer is never limited.
  const roomy = encodeStun({
    cls: StunClass.Request,
    method: StunMethod.Binding,
    transactionId: new Uint8Array(12),
    attributes: [attr(Software, 'x'.repeat(64))],
  });
  for (let i = 0; i < 10; i++) t.deliver(roomy, '192.0.2.7', 5000);
  assert.equal(t.sent.length, STUN_OVERSIZED_BURST + 1 + STUN_OVERSIZED_PER_SECOND + 10);
  assert.equal(server.counters.amplificationDropped, 20 - STUN_OVERSIZED_BURST + 5 - STUN_OVERSIZED_PER_SECOND);
  server.close();
});
