import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryRegistry, type PeerRecord } from '../../src/rendezvous/registry.js';
import { generateKeyPair } from '../../src/session/identity.js';

function rec(name: string | undefined, expiresAt: number): PeerRecord {
  const r: PeerRecord = {
    publicKey: generateKeyPair().publicKey,
    candidates: [],
    reflexive: { transport: 'udp', address: '127.0.0.1', port: 1 },
    reachable: false,
    registeredAt: 0,
    expiresAt,
    lastTimestamp: 0,
  };
  if (name !== undefined) r.name = name;
  return r;
}

test('MemoryRegistry: first-come names, release on rename and delete, reclaim after expiry, capacity', async () => {
  const reg = new MemoryRegistry({ maxPeers: 2 });
  const a = rec('alice', 100);
  assert.equal(await reg.put(a, 0), 'ok');
  const b = rec('alice', 100);
  assert.equal(await reg.put(b, 0), 'name-taken');
  assert.equal((await reg.getByName('alice', 0))?.publicKey, a.publicKey);
  // alice renames herself: the old name is free.
  assert.equal(await reg.put({ ...a, name: 'alice2' }, 1), 'ok');
  assert.equal(await reg.getByName('alice', 1), undefined);
  assert.equal(await reg.put(b, 1), 'ok');
  // Full: a third key is refused, a refresh of a known key is not.
  assert.equal(await reg.put(rec('carol', 100), 2), 'full');
  assert.equal(await reg.put({ ...b, expiresAt: 50 }, 2), 'ok');
  // Expired records are invisible, their names can be claimed, and expire() reports them.
  assert.equal(await reg.get(b.publicKey, 60), undefined);
  const c = rec('alice', 200);
  assert.equal(await reg.put(c, 60), 'ok', 'an expired holder loses its name (and its slot)');
  assert.deepEqual((await reg.expire(150)).map((k) => k.toString('hex')), [a.publicKey.toString('hex')]);
  assert.equal(await reg.size(), 1);
  assert.equal(await reg.delete(c.publicKey), true);
  assert.equal(await reg.getByName('alice', 0), undefined);
  assert.equal(await reg.delete(c.publicKey), false);
});
