import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  DEFAULT_PEER_RELAY_MAX_KEYS,
  MAX_INTRODUCTIONS_PER_KEY,
  MAX_OBSERVED_PER_KEY,
  PeerRelay,
} from '../../src/relay/peer-relay.js';
import { DEFAULT_MAX_PEERS } from '../../src/rendezvous/registry.js';
import { CredentialLimiter } from '../../src/relay/issuer.js';
import { SourceRateLimiter } from '../../src/relay/auth.js';
import type { Endpoint } from '../../src/wire/rendezvous.js';

// The peer relay keeps its per-key state packed (issue 20); these pin the decisions that state drives.

const T0 = 1_000_000_000_000;
const udp = (address: string, port: number): Endpoint => ({ transport: 'udp', address, port });
const tcp = (address: string, port: number): Endpoint => ({ transport: 'tcp', address, port });

function pair(pr: PeerRelay, aSeen: Endpoint[], bSeen: Endpoint[], now = T0) {
  const a = randomBytes(32);
  const b = randomBytes(32);
  pr.introduce(a, aSeen, b, bSeen, now);
  return { a, b, ah: a.toString('hex'), bh: b.toString('hex') };
}

test('observed IPv4, IPv6 and IPv4-mapped addresses scope what an introduced key may reach', () => {
  const pr = new PeerRelay({ port: 3478, now: () => T0 });
  const { ah, bh } = pair(pr, [udp('::ffff:198.51.100.7', 4000)], [udp('2001:db8::9', 5000), tcp('203.0.113.9', 443)]);
  // b as seen by a
  assert.ok(pr.allowsAddress(ah, '2001:db8::9'));
  assert.ok(pr.allowsAddress(ah, '203.0.113.9'));
  assert.ok(pr.allowsEndpoint(ah, '2001:db8::9', 5000));
  assert.ok(pr.allowsEndpoint(ah, '203.0.113.9', 443), 'a TCP registration counts for the address and port');
  assert.equal(pr.allowsEndpoint(ah, '2001:db8::9', 5001), false);
  assert.equal(pr.allowsAddress(ah, '2001:db8::8'), false);
  assert.equal(pr.allowsAddress(ah, '::ffff:203.0.113.9'), true, 'the mapped spelling is the same address');
  // a as seen by b: it registered from a dual-stack socket's mapped spelling
  assert.ok(pr.allowsAddress(bh, '198.51.100.7'));
  assert.ok(pr.allowsEndpoint(bh, '::ffff:198.51.100.7', 4000));
  assert.equal(pr.allowsAddress(bh, '198.51.100.8'), false);
  // Not hex keys, unknown keys: nothing
  assert.equal(pr.allowsAddress(ah.toUpperCase(), '2001:db8::9'), false);
  assert.equal(pr.allowsAddress(`${ah}00`, '2001:db8::9'), false);
  assert.equal(pr.allowsAddress(randomBytes(32).toString('hex'), '2001:db8::9'), false);
  assert.equal(pr.introduced(ah, bh) && pr.introduced(bh, ah), true);
  assert.equal(pr.introduced(ah, ah), false);
});

test('an address with a zone is compared as text', () => {
  const pr = new PeerRelay({ port: 3478, now: () => T0 });
  const { ah } = pair(pr, [udp('198.51.100.7', 4000)], [udp('fe80::1%eth0', 5000)]);
  assert.ok(pr.allowsEndpoint(ah, 'fe80::1%eth0', 5000));
  assert.equal(pr.allowsAddress(ah, 'fe80::1'), false);
  assert.equal(pr.allowsAddress(ah, 'fe80::1%eth1'), false);
});

test(`at most ${MAX_OBSERVED_PER_KEY} observed endpoints per key, the least recently seen forgotten first`, () => {
  const pr = new PeerRelay({ port: 3478, now: () => T0 });
  const { a, ah, b } = pair(pr, [udp('198.51.100.7', 4000)], [udp('203.0.113.1', 5000)]);
  // Seen again (moved to the newest place), then four new ones: 203.0.113.1 stays, the oldest new one goes.
  for (let i = 2; i <= 4; i++) pr.introduce(a, [], b, [udp(`203.0.113.${i}`, 5000)], T0);
  pr.introduce(a, [], b, [udp('203.0.113.1', 5000)], T0);
  pr.introduce(a, [], b, [udp('203.0.113.5', 5000)], T0);
  assert.ok(pr.allowsAddress(ah, '203.0.113.1'));
  assert.equal(pr.allowsAddress(ah, '203.0.113.2'), false);
  for (let i = 3; i <= 5; i++) assert.ok(pr.allowsAddress(ah, `203.0.113.${i}`));
  // The same address and port over another transport is another endpoint.
  pr.introduce(a, [], b, [tcp('203.0.113.5', 5000)], T0);
  assert.equal(pr.allowsAddress(ah, '203.0.113.3'), false);
  assert.ok(pr.allowsAddress(ah, '203.0.113.1') && pr.allowsAddress(ah, '203.0.113.4'));
});

test(`at most ${MAX_INTRODUCTIONS_PER_KEY} introductions per key; the oldest is forgotten first`, () => {
  const pr = new PeerRelay({ port: 3478, now: () => T0 });
  const a = randomBytes(32);
  const ah = a.toString('hex');
  const others = Array.from({ length: MAX_INTRODUCTIONS_PER_KEY + 1 }, () => randomBytes(32));
  for (const [i, o] of others.entries()) pr.introduce(a, [], o, [udp(`198.51.100.${i}`, 1)], T0);
  assert.equal(pr.introduced(ah, others[0]!.toString('hex')), false);
  assert.ok(pr.introduced(ah, others[1]!.toString('hex')));
  assert.ok(pr.introduced(ah, others.at(-1)!.toString('hex')));
  assert.ok(pr.hasIntroductions(ah));
  assert.equal(pr.hasIntroductions(others[0]!.toString('hex')), true, 'the other side still holds its own');
});

test('credentials: new on first sight, on another endpoint or transport, and on a refresh after half their life', () => {
  const pr = new PeerRelay({ port: 3478, ttlSeconds: 600, now: () => T0 });
  const k = randomBytes(32);
  const at = udp('2001:db8::1', 4000);
  assert.ok(pr.issue(k, at, false, T0));
  assert.equal(pr.issue(k, at, true, T0 + 299_999), null, 'a refresh before half the lifetime');
  assert.ok(pr.issue(k, at, false, T0 + 1), 'a new registration always');
  assert.equal(pr.issue(k, at, true, T0 + 2), null);
  assert.ok(pr.issue(k, tcp('2001:db8::1', 4000), true, T0 + 3), 'another transport');
  assert.ok(pr.issue(k, at, true, T0 + 4), 'back on the first endpoint');
  assert.equal(pr.issue(k, at, true, T0 + 300_003), null, 'half the lifetime counts from the last issue');
  assert.ok(pr.issue(k, at, true, T0 + 300_004));
  const m = randomBytes(32);
  assert.ok(pr.issue(m, udp('::ffff:198.51.100.7', 1), false, T0));
  assert.equal(pr.issue(m, udp('::ffff:198.51.100.7', 1), true, T0 + 1), null);
  assert.ok(pr.issue(m, udp('198.51.100.7', 1), true, T0 + 2), 'the other spelling gets new ones, as before');
  assert.equal(pr.issue(m, udp('198.51.100.7', 1), true, T0 + 3), null);
});

test('the least recently seen key is forgotten first, and a flood of new keys is held to the credential rate', () => {
  const pr = new PeerRelay({ port: 3478, maxKeys: 3, now: () => T0 });
  const keys = Array.from({ length: 4 }, () => randomBytes(32));
  const hex = keys.map((k) => k.toString('hex'));
  const { a, ah } = pair(pr, [udp('198.51.100.1', 1)], [udp('198.51.100.2', 2)]);
  pr.issue(keys[0]!, udp('203.0.113.1', 1), false, T0);
  pr.issue(a, udp('198.51.100.1', 1), true, T0); // a seen again: most recent
  pr.issue(keys[1]!, udp('203.0.113.2', 1), false, T0); // evicts b
  assert.equal(pr.size, 3);
  assert.ok(pr.hasIntroductions(ah), 'a still knows it was introduced');
  assert.equal(pr.allowsAddress(ah, '198.51.100.2'), false, "but b's addresses are gone with b");
  assert.equal(pr.introduced(hex[0]!, ah), false);
  // One source, default 30 per minute: the 31st fresh key in the same instant gets nothing and takes no slot.
  const limited = new PeerRelay({ port: 3478, now: () => T0 });
  let got = 0;
  for (let i = 0; i < 40; i++) if (limited.issue(randomBytes(32), udp('192.0.2.1', 1000 + i), false, T0)) got++;
  assert.equal(got, 30);
  assert.equal(limited.size, 30);
});

test('CredentialLimiter decides like SourceRateLimiter (token buckets, sweep, overflow bucket)', () => {
  let seed = 7;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (const [perSecond, burst] of [
    [0.5, 30],
    [2, 1],
    [1 / 120, 1],
    [10, 3.5],
  ] as const) {
    let now = T0;
    const a = new CredentialLimiter(perSecond, burst, 8, now);
    const b = new SourceRateLimiter(perSecond, burst, 8);
    for (let i = 0; i < 20_000; i++) {
      now += rnd(5) === 0 ? rnd(60_000) : rnd(300);
      const source = `198.51.100.${rnd(20)}`;
      assert.equal(a.allow(source, now), b.allow(source, now), `rate ${perSecond}/s burst ${burst}, step ${i}`);
      assert.equal(a.size, b.size);
    }
  }
});

test('by default every peer of a full registry keeps its relay state (no eviction below DEFAULT_MAX_PEERS keys)', () => {
  assert.ok(DEFAULT_PEER_RELAY_MAX_KEYS >= DEFAULT_MAX_PEERS);
  const pr = new PeerRelay({ port: 3478, now: () => T0 });
  const { a, ah, bh } = pair(pr, [udp('198.51.100.1', 1)], [udp('198.51.100.2', 2)]);
  pr.issue(a, udp('198.51.100.1', 1), false, T0);
  // The rest of a full registry, 30 keys per source address (the default credential rate).
  for (let i = 0; pr.size < DEFAULT_MAX_PEERS; i++) {
    const address = `10.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}.${i & 0xff}`;
    for (let j = 0; j < 30; j++) pr.issue(randomBytes(32), udp(address, 1000 + j), false, T0);
  }
  assert.ok(pr.introduced(ah, bh), "the first peer's introduction is still known");
  assert.ok(pr.allowsAddress(ah, '198.51.100.2'), "and so are its introduced peer's addresses");
});
