// Packed registration records (src/rendezvous/record.ts): what the memory registry stores must come back unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PackedRecordMap, packRecord, unpackRecord, type PackableRecord } from '../../src/rendezvous/record.js';

const base = (): PackableRecord => ({
  publicKey: randomBytes(32),
  candidates: [
    { type: 'host', transport: 'udp', address: '192.168.1.20', port: 40000, priority: 2130706431 },
    { type: 'srflx', transport: 'tcp', address: '2001:db8::1', port: 443, priority: 1694498815 },
    { type: 'relay', transport: 'udp', address: '203.0.113.9', port: 3478, priority: 0 },
  ],
  reflexive: { transport: 'udp', address: '198.51.100.7', port: 61000 },
  reachable: false,
  registeredAt: 1_796_000_000_000,
  expiresAt: 1_796_000_600_000,
  lastTimestamp: 1_796_000_000_123,
});

test('a record round-trips through its packed form, optional fields included or not', () => {
  const plain = base();
  assert.deepEqual(unpackRecord(packRecord(plain)!), plain);
  const full: PackableRecord = {
    ...base(),
    name: 'ålice-01',
    reachable: true,
    rttMs: 42,
    natType: 'port-restricted',
    node: 'eu-1',
  };
  assert.deepEqual(unpackRecord(packRecord(full)!), full);
});

test('the packed record owns its bytes: changing the source buffer afterwards changes nothing', () => {
  const packet = randomBytes(64);
  const r = { ...base(), publicKey: packet.subarray(0, 32) };
  const want = Buffer.from(r.publicKey);
  const m = new PackedRecordMap();
  m.set('k', r);
  packet.fill(0);
  assert.deepEqual(m.get('k')!.publicKey, want);
});

test('records the layout cannot hold are kept as they are', () => {
  const odd = { ...base(), reflexive: { transport: 'udp' as const, address: 'not-an-ip', port: 1 } };
  assert.equal(packRecord(odd), undefined);
  const m = new PackedRecordMap();
  m.set('x', odd);
  assert.deepEqual(m.get('x'), odd);
  assert.deepEqual([...m.summaries()], [['x', odd.expiresAt]]);
});

test('expiry and name are read from a packed record without unpacking it', () => {
  const m = new PackedRecordMap();
  const named = { ...base(), name: 'alice.example', natType: 'symmetric', node: 'n1' };
  m.set('k', named);
  assert.deepEqual(m.summary('k'), { expiresAt: named.expiresAt, name: 'alice.example' });
  assert.deepEqual([...m.summaries()], [['k', named.expiresAt]]);
  m.set('k', base());
  assert.deepEqual(m.summary('k'), { expiresAt: base().expiresAt, name: undefined });
});

test('a record stored under its own key does not repeat the key, and comes back with it', () => {
  const r = { ...base(), name: 'bob' };
  const id = r.publicKey.toString('latin1');
  const m = new PackedRecordMap();
  m.set(id, r);
  assert.deepEqual(m.get(id), r);
  assert.deepEqual([...m.values()], [r]);
  assert.deepEqual(m.summary(id), { expiresAt: r.expiresAt, name: 'bob' });
  assert.equal(packRecord(r, true)!.length, packRecord(r)!.length - 32);
  assert.deepEqual(unpackRecord(packRecord(r, true)!, id), r);
});

test('many records across slab chunks survive refreshes in place, moves to another size, deletes and reuse', () => {
  const m = new PackedRecordMap();
  const want = new Map<string, PackableRecord>();
  const put = (r: PackableRecord) => {
    const id = r.publicKey.toString('latin1');
    m.set(id, r);
    want.set(id, r);
  };
  // ~100 B each: 15,000 fill more than one 1 MiB chunk.
  for (let i = 0; i < 15_000; i++) put({ ...base(), name: `peer-${i % 10}`, expiresAt: 1_796_000_600_000 + i });
  const ids = [...want.keys()];
  for (let i = 0; i < ids.length; i += 3) {
    const r = want.get(ids[i]!)!;
    if (i % 2)
      put({ ...r, expiresAt: r.expiresAt + 1 }); // same length: written over
    else put({ ...r, name: `a-longer-name-${i}`, candidates: r.candidates.slice(0, 1) }); // another length: moved
  }
  for (let i = 1; i < ids.length; i += 7) {
    m.delete(ids[i]!);
    want.delete(ids[i]!);
  }
  // Fresh records take the freed regions of their length.
  for (let i = 0; i < 2_000; i++) put({ ...base(), name: `peer-${i % 10}` });
  assert.equal(m.size, want.size);
  for (const [id, r] of want) {
    assert.deepEqual(m.get(id), r);
    assert.deepEqual(m.summary(id), { expiresAt: r.expiresAt, name: r.name });
  }
  assert.deepEqual(new Map(m.summaries()), new Map([...want].map(([id, r]) => [id, r.expiresAt])));
  // A record that stops packing leaves the slab, and one that packs again returns to it.
  const id = ids[0]!;
  const odd = { ...want.get(id)!, reflexive: { transport: 'udp' as const, address: 'not-an-ip', port: 1 } };
  m.set(id, odd);
  assert.deepEqual(m.get(id), odd);
  m.set(id, want.get(id)!);
  assert.deepEqual(m.get(id), want.get(id));
});
