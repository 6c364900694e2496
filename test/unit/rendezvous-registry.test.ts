import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryRegistry, type PeerRecord, type Registry } from '../../src/rendezvous/registry.js';
import { RedisBackend } from '../../src/rendezvous/redis.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { which } from '../helpers/proc.js';
import { startRedis } from '../helpers/redis.js';

function rec(name: string | undefined, expiresAt: number): PeerRecord {
  const r: PeerRecord = {
    publicKey: generateKeyPair().publicKey,
    candidates: [{ type: 'host', transport: 'udp', address: '10.0.0.1', port: 4000, priority: 1 }],
    reflexive: { transport: 'udp', address: '127.0.0.1', port: 1 },
    reachable: false,
    registeredAt: 0,
    expiresAt,
    lastTimestamp: 0,
  };
  if (name !== undefined) r.name = name;
  return r;
}

/** The same behaviour, checked against every backend. Times are absolute ms (Redis keys expire in real time). */
async function conformance(reg: Registry, maxPeers: number, hold: number): Promise<void> {
  const t0 = Date.now();
  const a = rec('alice', t0 + 60_000);
  assert.equal(await reg.put(a, t0), 'ok');
  const b = rec('alice', t0 + 60_000);
  assert.equal(await reg.put(b, t0), 'name-taken');
  assert.deepEqual((await reg.getByName('alice', t0))?.publicKey, a.publicKey);
  assert.deepEqual((await reg.get(a.publicKey, t0))?.candidates, a.candidates);
  const res = await reg.reservation('alice', t0);
  assert.ok(
    res?.live && res.publicKey.equals(a.publicKey) && res.until >= t0 + 60_000 + hold - 1000,
    JSON.stringify(res),
  );
  // alice renames herself: the old name stays reserved for her key, nobody else gets it.
  assert.equal(await reg.put({ ...a, name: 'alice2' }, t0 + 1), 'ok');
  assert.equal(await reg.getByName('alice', t0 + 1), undefined, 'not live under the old name');
  assert.equal(await reg.put(b, t0 + 1), 'name-taken', 'reserved for the last holder');
  const held = await reg.reservation('alice', t0 + 1);
  assert.ok(held && !held.live && held.publicKey.equals(a.publicKey));
  // Only the holder can release it; then it is free at once.
  assert.equal(await reg.release('alice', b.publicKey, t0 + 2), false);
  assert.equal(await reg.release('alice', a.publicKey, t0 + 2), true);
  assert.equal(await reg.put(b, t0 + 2), 'ok');
  // Unregister keeps the name reserved for the key.
  assert.equal(await reg.delete(b.publicKey, t0 + 3), true);
  assert.equal(await reg.delete(b.publicKey, t0 + 3), false);
  const c = rec('alice', t0 + 60_000);
  assert.equal(await reg.put(c, t0 + 3), 'name-taken', 'squatting after unregister');
  assert.equal(await reg.put({ ...b, expiresAt: t0 + 60_000 }, t0 + 4), 'ok', 'the holder comes back');
  // Releasing a live name drops it from the record, the registration stays.
  assert.equal(await reg.release('alice', b.publicKey, t0 + 5), true);
  assert.equal((await reg.get(b.publicKey, t0 + 5))?.name, undefined);
  assert.equal(await reg.put(c, t0 + 5), 'ok');
  // Capacity: a new key is refused when full, a refresh of a known key is not.
  const live = await reg.size(t0 + 5);
  for (let i = live; i < maxPeers; i++) assert.equal(await reg.put(rec(undefined, t0 + 60_000), t0 + 5), 'ok');
  assert.equal(await reg.put(rec('carol', t0 + 60_000), t0 + 5), 'full');
  assert.equal(await reg.put({ ...c, expiresAt: t0 + 61_000 }, t0 + 5), 'ok');
  // Listing and search.
  const found = await reg.list(t0 + 5, { query: 'alice' });
  assert.deepEqual(found.map((r) => r.name).sort(), ['alice', 'alice2']);
  await reg.noteNatType(c.publicKey, 'port-restricted', t0 + 5);
  assert.equal(
    (await reg.list(t0 + 5, { query: c.publicKey.toString('hex').slice(0, 20) }))[0]?.natType,
    'port-restricted',
  );
  // Expiry: records vanish and are reported; names stay reserved for their keys.
  const gone = await reg.expire(t0 + 120_000);
  assert.ok(gone.some((k) => k.equals(c.publicKey)));
  assert.equal(await reg.get(c.publicKey, t0 + 120_000), undefined);
  if (hold > 120_000) assert.ok((await reg.reservation('alice', t0 + 120_000))?.publicKey.equals(c.publicKey));
}

test('MemoryRegistry: names bound to keys (held after rename, unregister and expiry), release by the holder, capacity, list', async () => {
  await conformance(new MemoryRegistry({ maxPeers: 4, nameHoldMs: 30 * 86_400_000 }), 4, 30 * 86_400_000);
});

test('MemoryRegistry: with nameHoldMs 0 a name is free once its holder is gone', async () => {
  const reg = new MemoryRegistry({ nameHoldMs: 0 });
  const a = rec('bob', 1000);
  assert.equal(await reg.put(a, 0), 'ok');
  await reg.delete(a.publicKey, 10);
  assert.equal(await reg.put(rec('bob', 1000), 10), 'ok');
});

test(
  'RedisRegistry (real redis-server): the same behaviour',
  { skip: which('redis-server') ? false : 'redis-server not installed' },
  async () => {
    const redis = await startRedis();
    const backend = await RedisBackend.connect({
      url: redis.url,
      maxPeers: 4,
      nameHoldMs: 30 * 86_400_000,
      nodeId: 'n1',
    });
    try {
      await conformance(backend.registry, 4, 30 * 86_400_000);
    } finally {
      await backend.close();
      await redis.stop();
    }
  },
);
