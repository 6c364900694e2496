import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NatpunchError, isNatpunchError } from '../../src/util/errors.js';
import { sleep, timeoutSignal } from '../../src/util/abort.js';

test('NatpunchError carries a stable code and is recognised', () => {
  const err = new NatpunchError('STUN_TIMEOUT', 'no answer from 192.0.2.1:3478');
  assert.equal(err.code, 'STUN_TIMEOUT');
  assert.ok(isNatpunchError(err, 'STUN_TIMEOUT'));
  assert.ok(!isNatpunchError(err, 'TIMEOUT'));
  assert.ok(!isNatpunchError(new Error('x')));
});

test('sleep rejects with ABORTED when its signal fires', async () => {
  const ac = new AbortController();
  const p = sleep(10_000, ac.signal);
  ac.abort();
  await assert.rejects(p, (e: unknown) => isNatpunchError(e, 'ABORTED'));
});

test('timeoutSignal aborts with TIMEOUT after its delay', async () => {
  const { signal, dispose } = timeoutSignal(20);
  await new Promise((r) => signal.addEventListener('abort', r));
  assert.ok(isNatpunchError(signal.reason, 'TIMEOUT'));
  dispose();
});
