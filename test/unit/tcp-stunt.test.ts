import { test } from 'node:test';
import assert from 'node:assert/strict';
import { discoverNatHops, NatHopCache, type NatHops } from '../../src/traversal/tcp-stunt.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { addonStatus } from '../../src/net/native.js';

const addon = addonStatus();
const skip = addon.available ? false : addon.reason;

test('a public address that is our own means no NAT: zero hops, no probe sent', { skip }, async () => {
  const r = await discoverNatHops({ publicAddress: '127.0.0.1' });
  assert.equal(r.natHops, 0);
  assert.deepEqual(r.hops, []);
});

test('TTL discovery refuses a non-IPv4 public address', { skip }, async () => {
  await assert.rejects(discoverNatHops({ publicAddress: 'example.org' }), (e: unknown) =>
    isNatpunchError(e, 'BAD_ARGUMENT'),
  );
});

test('the hop cache answers per network until its entries age out', async () => {
  const cache = new NatHopCache(1000);
  const value: NatHops = { natHops: 2, lowTtl: 3, hops: [], viaIcmp: true };
  const key = NatHopCache.networkKey('10.0.0.2', '198.51.100.7');
  cache.set(key, value, 0);
  assert.deepEqual(cache.get(key, 500), value);
  assert.equal(cache.get(NatHopCache.networkKey('10.0.0.3', '198.51.100.7'), 500), undefined);
  assert.equal(cache.get(key, 1501), undefined);
});

test('the cache runs discovery once per network', { skip }, async () => {
  const cache = new NatHopCache();
  const first = await cache.discover({ publicAddress: '127.0.0.1' });
  const second = await cache.discover({ publicAddress: '127.0.0.1' });
  assert.equal(first.cached, false);
  assert.equal(second.cached, true);
  assert.equal(second.natHops, first.natHops);
});
