import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  AllocationQuota,
  longTermKey,
  makeSharedSecretCredentials,
  NonceManager,
  PasswordAlgorithm,
  SecurityFeature,
  sharedSecretPassword,
  SharedSecretStore,
  SourceRateLimiter,
  TokenBucket,
  UsersFileStore,
  CombinedStore,
  candidateKeys,
} from '../../src/relay/auth.js';

test('long-term key is MD5(user:realm:password) and SHA-256 when that algorithm is chosen (RFC 8489 §9.2.2)', () => {
  // RFC 5769 §2.4 credentials.
  const key = longTermKey('\u30de\u30c8\u30ea\u30c3\u30af\u30b9', 'example.org', 'TheMatrIX');
  assert.equal(
    key.toString('hex'),
    createHash('md5').update('\u30de\u30c8\u30ea\u30c3\u30af\u30b9:example.org:TheMatrIX').digest('hex'),
  );
  assert.equal(longTermKey('u', 'r', 'p', PasswordAlgorithm.SHA256).length, 32);
});

test('users file: user:password and user:0xKEY lines, comments and blanks; bad lines rejected', () => {
  const md5 = longTermKey('bob', 'r', 'pw').toString('hex');
  const s = new UsersFileStore(`# comment\n\nalice:secret pass  # trailing\nbob:0x${md5}\n`);
  assert.equal(s.size, 2);
  assert.deepEqual(s.key('alice', 'r', PasswordAlgorithm.MD5), longTermKey('alice', 'r', 'secret pass'));
  assert.deepEqual(s.key('bob', 'r', PasswordAlgorithm.MD5), Buffer.from(md5, 'hex'));
  assert.equal(s.key('bob', 'r', PasswordAlgorithm.SHA256), null);
  assert.equal(s.key('carol', 'r', PasswordAlgorithm.MD5), null);
  assert.throws(() => new UsersFileStore('nocolon\n'), /line 1/);
});

test('shared-secret credentials: base64(HMAC-SHA1(secret, "expiry:user")), expired ones rejected, rotation', () => {
  const now = 1_700_000_000_000;
  const c = makeSharedSecretCredentials('s3cret', 3600, 'alice', now);
  assert.equal(c.username, `${1_700_000_000 + 3600}:alice`);
  assert.equal(c.password, sharedSecretPassword('s3cret', c.username));
  const store = new SharedSecretStore(['old', 's3cret'], () => now);
  const keys = store.keys(c.username, 'r', PasswordAlgorithm.MD5);
  assert.equal(keys.length, 2);
  assert.deepEqual(keys[1], longTermKey(c.username, 'r', c.password));
  const late = new SharedSecretStore(['s3cret'], () => now + 3601_000);
  assert.deepEqual(late.keys(c.username, 'r', PasswordAlgorithm.MD5), []);
  assert.deepEqual(store.keys('alice', 'r', PasswordAlgorithm.MD5), [], 'no timestamp');
  const both = new CombinedStore([new UsersFileStore('alice:x'), store]);
  assert.equal(candidateKeys(both, c.username, 'r', PasswordAlgorithm.MD5).length, 2);
  assert.equal(candidateKeys(both, 'alice', 'r', PasswordAlgorithm.MD5).length, 1);
});

test('nonces carry the security-feature cookie, are bound to the client address and go stale', () => {
  let now = 1000;
  const n = new NonceManager({ lifetimeSeconds: 10, now: () => now });
  const nonce = n.issue('192.0.2.1');
  assert.ok(nonce.startsWith('obMatJos2'));
  assert.equal(NonceManager.featuresOf(nonce), SecurityFeature.PASSWORD_ALGORITHMS);
  assert.equal(n.check(nonce, '192.0.2.1'), 'valid');
  assert.equal(n.check(nonce, '192.0.2.2'), 'invalid');
  assert.equal(n.check(nonce.slice(0, -2) + 'AA', '192.0.2.1'), 'invalid');
  assert.equal(n.check('garbage', '192.0.2.1'), 'invalid');
  now += 10_001;
  assert.equal(n.check(nonce, '192.0.2.1'), 'stale');
});

test('token bucket, per-source rate limiter and allocation quotas', () => {
  const b = new TokenBucket(1000, 1500, 0);
  assert.ok(b.take(1500, 0));
  assert.ok(!b.take(1, 0));
  assert.ok(b.take(500, 500));
  const r = new SourceRateLimiter(1, 3, 2);
  assert.ok(r.allow('a', 0) && r.allow('a', 0) && r.allow('a', 0));
  assert.ok(!r.allow('a', 0));
  assert.ok(r.allow('a', 1000));
  r.allow('b', 0);
  assert.equal(r.size, 2);
  assert.ok(r.allow('c', 0), 'overflow bucket serves new sources when full');
  assert.equal(r.size, 2);
  const q = new AllocationQuota(2, 3);
  assert.equal(q.acquire('u'), 'ok');
  assert.equal(q.acquire('u'), 'ok');
  assert.equal(q.acquire('u'), 'user');
  assert.equal(q.acquire('v'), 'ok');
  assert.equal(q.acquire('w'), 'total');
  q.release('u');
  assert.equal(q.acquire('w'), 'ok');
  assert.equal(q.total, 3);
});
