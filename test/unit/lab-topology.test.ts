// Lab pieces that need no root: topology resolution, NAT option checking, link shape checking.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  defaultTopology,
  natRuleset,
  resolveNat,
  resolveTopology,
  NAT_DEFAULTS,
  type TopologySpec,
} from '../../src/lab/index.js';
import { resolveShape, planNamespace, NO_SHAPE } from '../../src/lab/shape.js';
import { isNatpunchError } from '../../src/util/errors.js';

test('default topology: stable names and documented addresses', () => {
  const t = resolveTopology(defaultTopology({ doubleNat: true }));
  const addr = (n: string) => t.nodes[n]!.addrs;
  assert.deepEqual(addr('server'), ['192.0.2.10', '192.0.2.11']);
  assert.deepEqual(addr('natA'), ['198.51.100.10']);
  assert.deepEqual(addr('a'), ['10.1.0.10']);
  assert.deepEqual(addr('a2'), ['10.1.0.11']);
  assert.deepEqual(addr('b'), ['10.2.0.10']);
  assert.deepEqual(addr('natC'), ['100.64.0.10']);
  assert.deepEqual(addr('c'), ['10.3.0.10']);
  assert.equal(t.nodes.natA!.lanAddr, '10.1.0.1');
  assert.equal(t.nodes.a!.gateway, '10.1.0.1');
  assert.equal(t.nodes.server!.gateway, '192.0.2.1');
  assert.equal(t.links.c!.parent, 'natC');
  assert.equal(t.links.natC!.parent, 'cgn');
  // parents are configured before children
  assert.ok(t.order.indexOf('cgn') < t.order.indexOf('natC') && t.order.indexOf('natC') < t.order.indexOf('c'));
  // private and shared address space is never routed on the internet
  assert.ok(!t.publicPrefixes.some((p) => p.startsWith('10.') || p.startsWith('100.64.')));
});

test('topology errors are typed: unknown parent, duplicate names, missing public address', () => {
  const bad: TopologySpec[] = [
    { routers: {}, hosts: { x: { on: 'nowhere' } } },
    {
      routers: { r: { on: 'internet', wan: '192.0.2.5/24', lan: '10.9.0.0/24' } },
      hosts: { r: { on: 'internet', addrs: ['198.51.100.5/24'] } },
    },
    { routers: {}, hosts: { x: { on: 'internet' } } },
    { routers: {}, hosts: { 'bad name': { on: 'internet', addrs: ['192.0.2.5/24'] } } },
  ];
  for (const spec of bad) {
    assert.throws(
      () => resolveTopology(spec),
      (err: unknown) => isNatpunchError(err, 'BAD_ARGUMENT'),
    );
  }
});

test('NAT options: defaults, merging and validation', () => {
  assert.deepEqual(resolveNat(undefined), NAT_DEFAULTS);
  assert.equal(resolveNat('full-cone').type, 'full-cone');
  const merged = resolveNat({ stealth: true }, resolveNat({ type: 'symmetric-random', hairpin: false }));
  assert.deepEqual([merged.type, merged.hairpin, merged.stealth], ['symmetric-random', false, true]);
  assert.throws(
    () => resolveNat({ type: 'cone' as never }),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
  assert.throws(
    () => resolveNat({ mappingTimeoutSec: 0 }),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
});

test('NAT rulesets differ where the behaviours differ', () => {
  const rs = (o: Parameters<typeof resolveNat>[0]) => natRuleset(resolveNat(o), '198.51.100.10');
  assert.match(rs('full-cone'), /iifname "wan" .* dnat ip to .* map @eim/);
  assert.match(rs('restricted-cone'), /@adf dnat/);
  assert.doesNotMatch(rs('port-restricted-cone'), /iifname "wan"[^\n]*dnat ip to/);
  assert.match(rs('symmetric-sequential'), /numgen inc mod 1000 map @seq/);
  assert.match(rs('symmetric-random'), /masquerade fully-random/);
  assert.match(rs('udp-blocked'), /meta l4proto udp reject/);
  assert.match(rs({ type: 'udp-blocked', stealth: true }), /meta l4proto udp drop/);
  assert.doesNotMatch(rs({ hairpin: false }), /iifname "lan" ip daddr/);
  assert.match(rs({ forwardIcmpErrors: false }), /destination-unreachable/);
  assert.match(rs({ mappingTimeoutSec: 7 }), /timeout 7s/);
  // only LAN-initiated flows teach the endpoint-independent map (not replies of flows let in from outside)
  for (const line of rs('restricted-cone')
    .split('\n')
    .filter((l) => l.includes('update @'))) {
    assert.match(line, /iifname "lan" oifname "wan" ct direction original/);
  }
});

test('link shapes: validation and the per-namespace plan', () => {
  assert.deepEqual(resolveShape({}), NO_SHAPE);
  assert.equal(resolveShape({ lossPct: 5 }, resolveShape({ delayMs: 3 })).delayMs, 3);
  for (const bad of [{ lossPct: 101 }, { delayMs: -1 }, { rateMbit: Number.NaN }]) {
    assert.throws(
      () => resolveShape(bad),
      (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
    );
  }
  const t = resolveTopology(defaultTopology());
  const shapes = { natA: resolveShape({ delayMs: 10, lossPct: 100 }), a: resolveShape({ rateMbit: 5 }) };
  const inet = planNamespace(t, shapes, 'internet');
  assert.equal(inet.delayerArgs.length, 1); // natA→internet direction is received in the internet namespace
  assert.match(inet.script, /counter drop/);
  const natA = planNamespace(t, shapes, 'natA');
  assert.match(natA.script, /tbf rate 5mbit/); // natA → a direction leaves natA's bridge port
  const b = planNamespace(t, shapes, 'b');
  assert.equal(b.delayerArgs.length, 0);
});
