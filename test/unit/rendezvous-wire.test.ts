import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { generateKeyPair } from '../../src/session/identity.js';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';
import {
  decodeRendezvous,
  encodeRendezvous,
  verifyRendezvous,
  frameTcp,
  TcpFrameDecoder,
  MAX_CANDIDATES,
  type EncodableMessage,
  type RendezvousMessage,
  type SeqOfferMessage,
  type SignedMessage,
} from '../../src/wire/rendezvous.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { encodeSeqOffer, SEQ_OFFER_BYTES } from '../../src/wire/seq-offer.js';

const alice = generateKeyPair();
const bob = generateKeyPair();

const seqOffer = encodeSeqOffer({
  private: { address: '10.0.0.2', port: 40001 },
  public: { address: '203.0.113.9', port: 61001 },
  isn: 0xdeadbeef,
  window: 64240,
  options: { mss: 1460, windowScale: 7, sackPermitted: true, timestamps: { value: 1, echo: 0 } },
});

const candidates: Candidate[] = [
  { type: 'host', transport: 'udp', address: '192.168.1.10', port: 40000, priority: candidatePriority('host') },
  { type: 'host', transport: 'udp', address: 'fe80::1:2', port: 40000, priority: candidatePriority('host', 100) },
  { type: 'srflx', transport: 'udp', address: '203.0.113.7', port: 61000, priority: candidatePriority('srflx') },
  { type: 'predicted', transport: 'udp', address: '2001:db8::', port: 61002, priority: candidatePriority('predicted') },
  { type: 'mapped', transport: 'tcp', address: '::ffff:198.51.100.1', port: 1, priority: 0 },
  { type: 'relay', transport: 'udp', address: '::', port: 65535, priority: 0xffffffff },
];

function samples(): Array<{ msg: EncodableMessage; key?: Buffer }> {
  return [
    {
      msg: {
        type: 'register',
        requestId: 1,
        publicKey: alice.publicKey,
        name: 'alice',
        reachable: false,
        rttMs: 12,
        candidates,
      },
      key: alice.secretKey,
    },
    {
      msg: {
        type: 'register',
        requestId: 0xffffffff,
        publicKey: bob.publicKey,
        reachable: true,
        rttMs: 0,
        candidates: [],
      },
      key: bob.secretKey,
    },
    {
      msg: {
        type: 'registered',
        requestId: 2,
        reflexive: { transport: 'udp', address: '203.0.113.7', port: 61000 },
        refreshMs: 25000,
        ttlMs: 90000,
        serverTime: Date.now(),
        reachable: false,
      },
    },
    { msg: { type: 'lookup', requestId: 3, target: { name: 'bob.home-1_x' } } },
    { msg: { type: 'lookup', requestId: 4, target: { key: bob.publicKey } } },
    {
      msg: {
        type: 'lookup-result',
        requestId: 5,
        publicKey: bob.publicKey,
        name: 'bob',
        reachable: true,
        expiresInMs: 1234,
        candidates,
      },
    },
    {
      msg: {
        type: 'connect',
        requestId: 6,
        publicKey: alice.publicKey,
        reachable: false,
        target: { name: 'bob' },
        connectionId: randomBytes(16),
        rttMs: 40,
        candidates,
      },
      key: alice.secretKey,
    },
    {
      msg: {
        type: 'connect-notify',
        requestId: 7,
        connectionId: randomBytes(16),
        role: 'responder',
        mode: 'connect',
        peerKey: alice.publicKey,
        peerName: 'alice',
        startDelayMs: 15,
        serverTime: 1,
        candidates,
      },
    },
    {
      msg: {
        type: 'connect-notify',
        requestId: 8,
        connectionId: randomBytes(16),
        role: 'initiator',
        mode: 'punch',
        peerKey: bob.publicKey,
        startDelayMs: 0,
        serverTime: 0,
        candidates: [],
      },
    },
    {
      msg: {
        type: 'error',
        requestId: 9,
        code: 'NAME_TAKEN',
        inResponseTo: 1,
        retryAfterMs: 0,
        message: 'name "alice" is registered by another key',
      },
    },
    { msg: { type: 'error', requestId: 10, code: 'RATE_LIMITED', inResponseTo: 3, retryAfterMs: 500, message: '' } },
    { msg: { type: 'ping', requestId: 11, time: 123456789 } },
    { msg: { type: 'pong', requestId: 12, echo: 123456789, time: Number.MAX_SAFE_INTEGER } },
    { msg: { type: 'notify-ack', requestId: 13, connectionId: randomBytes(16) } },
    { msg: { type: 'unregister', requestId: 14, publicKey: bob.publicKey }, key: bob.secretKey },
    {
      msg: {
        type: 'seq-offer',
        requestId: 15,
        publicKey: alice.publicKey,
        connectionId: randomBytes(16),
        peerKey: bob.publicKey,
        offer: seqOffer,
      },
      key: alice.secretKey,
    },
    {
      msg: {
        type: 'seq-offer',
        requestId: 16,
        publicKey: bob.publicKey,
        connectionId: randomBytes(16),
        peerKey: alice.publicKey,
        decline: 'no raw sockets here (not root) — ünïcode',
      },
      key: bob.secretKey,
    },
    {
      msg: {
        type: 'seq-offer',
        requestId: 17,
        publicKey: bob.publicKey,
        connectionId: randomBytes(16),
        peerKey: alice.publicKey,
        decline: 'x'.repeat(200),
      },
      key: bob.secretKey,
    },
    { msg: { type: 'seq-offer-result', requestId: 18, connectionId: randomBytes(16), spoofing: true } },
    { msg: { type: 'seq-offer-result', requestId: 19, connectionId: randomBytes(16), spoofing: false } },
  ];
}

function strip(m: RendezvousMessage): Record<string, unknown> {
  const {
    signature: _s,
    signedPart: _p,
    timestamp: _t,
    nonce: _n,
    ...rest
  } = m as RendezvousMessage & Record<string, unknown>;
  return rest;
}

test('every message type round-trips and starts with 0xF0, version 1', () => {
  for (const { msg, key } of samples()) {
    const bytes = encodeRendezvous(msg, key);
    assert.equal(bytes[0], 0xf0);
    assert.equal(bytes[1], 1);
    assert.ok(bytes.length <= 1200);
    const back = decodeRendezvous(bytes);
    assert.deepEqual(strip(back), strip(msg as RendezvousMessage), msg.type);
    // Re-encoding the decoded message gives the same bytes (signed ones keep timestamp and nonce).
    if (key) {
      const again = encodeRendezvous(back as EncodableMessage, key);
      assert.deepEqual(again, bytes);
    } else {
      assert.deepEqual(encodeRendezvous(back as EncodableMessage), bytes);
    }
  }
});

test('signatures verify, and fail for another key or any altered byte', () => {
  const reg = encodeRendezvous(
    {
      type: 'register',
      requestId: 1,
      publicKey: alice.publicKey,
      name: 'alice',
      reachable: false,
      rttMs: 0,
      candidates,
    },
    alice.secretKey,
  );
  const m = decodeRendezvous(reg) as SignedMessage;
  assert.ok(verifyRendezvous(m));
  // Signed by bob while claiming alice's key.
  const forged = encodeRendezvous(
    { type: 'register', requestId: 1, publicKey: alice.publicKey, reachable: false, rttMs: 0, candidates },
    bob.secretKey,
  );
  assert.equal(verifyRendezvous(decodeRendezvous(forged) as SignedMessage), false);
  // Every single-byte change that still decodes must fail verification.
  let decodable = 0;
  for (let i = 3; i < reg.length; i++) {
    const copy = Buffer.from(reg);
    copy[i] = copy[i]! ^ 0x01;
    let d: RendezvousMessage;
    try {
      d = decodeRendezvous(copy);
    } catch {
      continue;
    }
    decodable++;
    assert.equal(verifyRendezvous(d as SignedMessage), false, `byte ${i}`);
  }
  assert.ok(decodable > 100);
  assert.throws(
    () =>
      encodeRendezvous({
        type: 'register',
        requestId: 1,
        publicKey: alice.publicKey,
        reachable: false,
        rttMs: 0,
        candidates: [],
      }),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
});

test('bounds are enforced when encoding: names, candidates, addresses', () => {
  const base = {
    type: 'register' as const,
    requestId: 1,
    publicKey: alice.publicKey,
    reachable: false,
    rttMs: 0,
    candidates: [] as Candidate[],
  };
  for (const name of ['Alice', 'a'.repeat(64), 'al ice', 'ålice']) {
    assert.throws(
      () => encodeRendezvous({ ...base, name }, alice.secretKey),
      (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
      name,
    );
  }
  const many = Array.from({ length: MAX_CANDIDATES + 1 }, (_, i) => ({ ...candidates[0]!, port: 1000 + i }));
  assert.throws(
    () => encodeRendezvous({ ...base, candidates: many }, alice.secretKey),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
  assert.throws(
    () => encodeRendezvous({ ...base, candidates: [{ ...candidates[0]!, address: 'example.com' }] }, alice.secretKey),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
  // Sixteen IPv6 candidates still fit a 1200-byte datagram.
  const full = Array.from({ length: MAX_CANDIDATES }, (_, i) => ({
    ...candidates[1]!,
    address: `2001:db8:1:2:3:4:5:${i}`,
  }));
  assert.ok(encodeRendezvous({ ...base, name: 'a'.repeat(63), candidates: full }, alice.secretKey).length <= 1200);
});

test('truncated, extended and mutated input only ever throws RENDEZVOUS_DECODE (50k mutations)', () => {
  const encoded = samples().map(({ msg, key }) => encodeRendezvous(msg, key));
  const expectDecodeError = (b: Buffer) => {
    try {
      decodeRendezvous(b);
    } catch (e) {
      if (!isNatpunchError(e, 'RENDEZVOUS_DECODE')) throw e;
    }
  };
  for (const bytes of encoded) {
    for (let n = 0; n < bytes.length; n++) {
      assert.throws(
        () => decodeRendezvous(bytes.subarray(0, n)),
        (e: unknown) => isNatpunchError(e, 'RENDEZVOUS_DECODE'),
      );
    }
    // Requests may end in zero padding (anti-amplification); any other trailing byte is malformed.
    assert.throws(
      () => decodeRendezvous(Buffer.concat([bytes, Buffer.from([1])])),
      (e: unknown) => isNatpunchError(e, 'RENDEZVOUS_DECODE'),
    );
  }
  // A deterministic pseudo-random generator keeps failures reproducible.
  let seed = 0x9e3779b9;
  const rand = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  for (let i = 0; i < 50_000; i++) {
    const src = encoded[rand(encoded.length)]!;
    const b = Buffer.from(src);
    const kind = rand(4);
    if (kind === 0) {
      for (let k = 0, n = 1 + rand(4); k < n; k++) b[rand(b.length)] = rand(256);
      expectDecodeError(b);
    } else if (kind === 1) {
      expectDecodeError(b.subarray(0, rand(b.length)));
    } else if (kind === 2) {
      const pos = 3 + rand(b.length - 3);
      expectDecodeError(Buffer.concat([b.subarray(0, pos), randomBytes(1 + rand(8)), b.subarray(pos)]));
    } else {
      const r = randomBytes(rand(1300));
      if (r.length) r[0] = 0xf0;
      if (r.length > 1) r[1] = 1;
      expectDecodeError(r);
    }
  }
});

test('TCP framing: first byte is 0xF0, frames split across chunks reassemble, garbage throws', () => {
  const a = encodeRendezvous({ type: 'ping', requestId: 1, time: 5 });
  const b = encodeRendezvous({ type: 'lookup', requestId: 2, target: { name: 'bob' } });
  const stream = Buffer.concat([frameTcp(a), frameTcp(b)]);
  assert.equal(stream[0], 0xf0);
  const dec = new TcpFrameDecoder();
  const out: Buffer[] = [];
  for (const byte of stream) out.push(...dec.push(Buffer.from([byte])));
  assert.deepEqual(out, [a, b]);
  assert.throws(
    () => new TcpFrameDecoder().push(Buffer.from('GET / HTTP/1.1\r\n')),
    (e: unknown) => isNatpunchError(e, 'RENDEZVOUS_DECODE'),
  );
  assert.throws(
    () => new TcpFrameDecoder().push(Buffer.from([0xf0, 0xff, 0xff])),
    (e: unknown) => isNatpunchError(e, 'RENDEZVOUS_DECODE'),
  );
});

test('SEQ_OFFER: signed like CONNECT, exactly one of offer (32 bytes) or decline (1..200 bytes UTF-8), strict decoding', () => {
  const connectionId = randomBytes(16);
  const base = {
    type: 'seq-offer' as const,
    requestId: 21,
    publicKey: alice.publicKey,
    connectionId,
    peerKey: bob.publicKey,
  };
  const bytes = encodeRendezvous({ ...base, offer: seqOffer }, alice.secretKey);
  const m = decodeRendezvous(bytes) as SeqOfferMessage;
  assert.equal(m.type, 'seq-offer');
  assert.ok(m.offer?.equals(seqOffer));
  assert.equal(m.decline, undefined);
  assert.ok(
    m.connectionId.equals(connectionId) && m.peerKey.equals(bob.publicKey) && m.publicKey.equals(alice.publicKey),
  );
  assert.ok(verifyRendezvous(m));
  // The signed part plus the signature are the whole message (what the server forwards verbatim).
  assert.deepEqual(Buffer.concat([m.signedPart!, m.signature!]), bytes);
  // Signed by bob while claiming alice's key: does not verify.
  assert.equal(
    verifyRendezvous(decodeRendezvous(encodeRendezvous({ ...base, offer: seqOffer }, bob.secretKey)) as SignedMessage),
    false,
  );
  // Any altered byte that still decodes fails verification (the offer, the peer key, the connection id...).
  for (let i = 3; i < bytes.length; i++) {
    const copy = Buffer.from(bytes);
    copy[i] = copy[i]! ^ 0x40;
    let d: RendezvousMessage;
    try {
      d = decodeRendezvous(copy);
    } catch (e) {
      assert.ok(isNatpunchError(e, 'RENDEZVOUS_DECODE'));
      continue;
    }
    assert.equal(verifyRendezvous(d as SignedMessage), false, `byte ${i}`);
  }
  // Unsigned, both, neither, wrong sizes: BAD_ARGUMENT when encoding.
  const bad = (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT');
  assert.throws(() => encodeRendezvous({ ...base, offer: seqOffer }), bad);
  assert.throws(() => encodeRendezvous({ ...base, offer: seqOffer, decline: 'x' }, alice.secretKey), bad);
  assert.throws(() => encodeRendezvous({ ...base }, alice.secretKey), bad);
  assert.throws(
    () => encodeRendezvous({ ...base, offer: seqOffer.subarray(0, SEQ_OFFER_BYTES - 1) }, alice.secretKey),
    bad,
  );
  assert.throws(
    () => encodeRendezvous({ ...base, offer: Buffer.concat([seqOffer, Buffer.alloc(1)]) }, alice.secretKey),
    bad,
  );
  assert.throws(() => encodeRendezvous({ ...base, decline: '' }, alice.secretKey), bad);
  assert.throws(() => encodeRendezvous({ ...base, decline: 'x'.repeat(201) }, alice.secretKey), bad);
  assert.throws(() => encodeRendezvous({ ...base, decline: 'é'.repeat(101) }, alice.secretKey), bad);
  assert.throws(
    () => encodeRendezvous({ ...base, peerKey: bob.publicKey.subarray(1), offer: seqOffer }, alice.secretKey),
    bad,
  );

  // Malformed on the wire: unknown kind, zero-length or overlong decline, invalid UTF-8, trailing bytes, truncation.
  const decl = encodeRendezvous({ ...base, decline: 'abc' }, alice.secretKey);
  const kindAt = 7 + 32 + 16 + 32 + 8 + 16;
  assert.equal(decl[kindAt], 2);
  assert.equal(bytes[kindAt], 1);
  const dec = (e: unknown) => isNatpunchError(e, 'RENDEZVOUS_DECODE');
  for (const k of [0, 3, 255]) {
    const c = Buffer.from(decl);
    c[kindAt] = k;
    assert.throws(() => decodeRendezvous(c), dec, `kind ${k}`);
  }
  const zero = Buffer.from(decl);
  zero[kindAt + 1] = 0;
  assert.throws(() => decodeRendezvous(zero), dec);
  const long = Buffer.concat([
    decl.subarray(0, kindAt + 1),
    Buffer.from([201]),
    Buffer.alloc(201, 0x61),
    Buffer.alloc(64),
  ]);
  assert.throws(() => decodeRendezvous(long), dec);
  const notUtf8 = Buffer.from(decl);
  notUtf8[kindAt + 2] = 0xff;
  assert.throws(() => decodeRendezvous(notUtf8), dec);
  for (const b of [bytes, decl]) {
    assert.throws(() => decodeRendezvous(Buffer.concat([b, Buffer.from([1])])), dec); // only zero padding may follow
    for (let n = 0; n < b.length; n++) assert.throws(() => decodeRendezvous(b.subarray(0, n)), dec);
  }
  // SEQ_OFFER_RESULT: unknown flags and trailing bytes are refused.
  const res = encodeRendezvous({ type: 'seq-offer-result', requestId: 21, connectionId, spoofing: true });
  assert.equal(res.length, 7 + 16 + 1);
  const flags = Buffer.from(res);
  flags[res.length - 1] = 3;
  assert.throws(() => decodeRendezvous(flags), dec);
  assert.throws(() => decodeRendezvous(Buffer.concat([res, Buffer.from([0])])), dec);
});
