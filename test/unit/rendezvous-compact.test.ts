// The rendezvous server's compact per-peer state (src/rendezvous/compact.ts): what goes in comes back out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  keyId,
  keyOfId,
  nonceEntryAnswer,
  nonceEntrySignatureIs,
  nonceEntrySource,
  packNonceEntry,
  Scratch,
  sourceId,
  withNonceAnswer,
} from '../../src/rendezvous/compact.js';

test('sourceId: equal for equal sources, different when transport, address or port differ; IPv4, IPv6, text', () => {
  const s = new Scratch();
  const a = sourceId(s, 'udp', '198.51.100.7', 61000);
  assert.equal(a, sourceId(s, 'udp', '198.51.100.7', 61000));
  assert.equal(a.length, 8);
  for (const other of [
    sourceId(s, 'tcp', '198.51.100.7', 61000),
    sourceId(s, 'udp', '198.51.100.8', 61000),
    sourceId(s, 'udp', '198.51.100.7', 61001),
    sourceId(s, 'udp', '::ffff:198.51.100.7', 61000),
  ])
    assert.notEqual(a, other);
  assert.equal(sourceId(s, 'udp', '2001:db8::1', 1), sourceId(s, 'udp', '2001:db8:0::1', 1));
  assert.notEqual(sourceId(s, 'udp', 'not-an-address', 1), sourceId(s, 'udp', 'not-an-addresz', 1));
  assert.notEqual(sourceId(s, 'udp', 'fe80::1%eth0', 1), sourceId(s, 'udp', 'fe80::1%eth1', 1));
});

test('keyId round-trips a public key through its one-byte string', () => {
  const k = randomBytes(32);
  assert.equal(keyId(k).length, 32);
  assert.deepEqual(keyOfId(keyId(k)), k);
  assert.equal(keyId(k.subarray(0, 32)), keyId(Buffer.from(k)));
});

test('a replay-cache entry keeps its source and answer and recognises its signature, not another', () => {
  const s = new Scratch();
  const source = sourceId(s, 'udp', '203.0.113.9', 3478);
  const sig = randomBytes(64);
  const e = packNonceEntry(s, source, sig);
  assert.equal(nonceEntrySource(e), source);
  assert.equal(nonceEntryAnswer(e), undefined);
  assert.ok(nonceEntrySignatureIs(e, sig));
  const other = Buffer.from(sig);
  other[0] ^= 1;
  assert.ok(!nonceEntrySignatureIs(e, other));
  const answer = randomBytes(300);
  const withAnswer = withNonceAnswer(s, e, answer);
  assert.deepEqual(nonceEntryAnswer(withAnswer), answer);
  assert.equal(nonceEntrySource(withAnswer), source);
  assert.ok(nonceEntrySignatureIs(withAnswer, sig));
  // An answer too large for the scratch buffer is not cached (the entry still guards the nonce).
  const huge = withNonceAnswer(s, e, randomBytes(4096));
  assert.equal(nonceEntryAnswer(huge), undefined);
});
