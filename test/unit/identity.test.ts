import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  generateKeyPair,
  sign,
  verify,
  keyToId,
  idToKey,
  saveKeyPair,
  loadKeyPair,
} from '../../src/session/identity.js';
import { isNatpunchError } from '../../src/util/errors.js';

test('a signature verifies with its key and fails with another key or message', () => {
  const a = generateKeyPair();
  const b = generateKeyPair();
  const msg = Buffer.from('register alice');
  const sig = sign(msg, a.secretKey);
  assert.ok(verify(sig, msg, a.publicKey));
  assert.ok(!verify(sig, msg, b.publicKey));
  assert.ok(!verify(sig, Buffer.from('register mallory'), a.publicKey));
  assert.ok(!verify(sig.subarray(1), msg, a.publicKey));
});

test('seeded key pairs are deterministic and ids round-trip', () => {
  const seed = Buffer.alloc(32, 7);
  assert.deepEqual(generateKeyPair(seed).publicKey, generateKeyPair(seed).publicKey);
  const kp = generateKeyPair();
  assert.deepEqual(idToKey(keyToId(kp.publicKey)), kp.publicKey);
  assert.throws(
    () => idToKey('alice'),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
});

test('key files save with mode 0600, load back, refuse overwrite; env var works', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'natpunch-key-'));
  try {
    const file = join(dir, 'id.json');
    const kp = generateKeyPair();
    await saveKeyPair(file, kp);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const loaded = await loadKeyPair(file);
    assert.deepEqual(loaded.publicKey, kp.publicKey);
    await assert.rejects(saveKeyPair(file, kp), (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'));
    const fromEnv = await loadKeyPair(undefined, { NATPUNCH_KEY: kp.secretKey.toString('hex') });
    assert.deepEqual(fromEnv.publicKey, kp.publicKey);
    await assert.rejects(loadKeyPair(undefined, {}), /natpunch keygen/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
