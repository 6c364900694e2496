// The planner (src/traversal/planner.ts) is a pure function of both NAT views: the table in its header, proven.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  plan,
  advice,
  ALL_ON,
  BIRTHDAY_HOLD_MS,
  RELAY_HOLD_MS,
  RELAY_HOLD_HARD_MS,
  TCP_AFTER_PREDICT_MS,
} from '../../src/traversal/planner.js';
import type { NatView } from '../../src/traversal/technique.js';

let n = 0;
function view(kind: NatView['kind'], extra: Partial<NatView> = {}): NatView {
  n++;
  return {
    kind,
    delta: kind === 'sequential' ? 1 : null,
    publicAddress: `203.0.113.${n}`,
    udp: true,
    mapped: false,
    relay: true,
    tcp: true,
    candidates: {},
    ...extra,
  };
}
const steps = (local: NatView, remote: NatView, sw = ALL_ON) =>
  plan(local, remote, sw).steps.map((s) => `${s.technique}@${s.holdMs}`);

test('two cones: plain checks, TCP beside them, the relay held back', () => {
  assert.deepEqual(steps(view('cone'), view('cone')), ['udp-checks@0', 'tcp@0', `relay@${RELAY_HOLD_MS}`]);
});

test('sequential with a cone or sequential: prediction replaces the checks; TCP (one cone side) waits for it', () => {
  assert.deepEqual(steps(view('sequential'), view('cone')), [
    'predict@0',
    `tcp@${TCP_AFTER_PREDICT_MS}`,
    `relay@${RELAY_HOLD_HARD_MS}`,
  ]);
  assert.deepEqual(steps(view('cone'), view('sequential')), [
    'predict@0',
    `tcp@${TCP_AFTER_PREDICT_MS}`,
    `relay@${RELAY_HOLD_HARD_MS}`,
  ]);
  // Two per-destination NATs leave TCP no port to aim at (tcp-technique.ts tcpApplies).
  assert.deepEqual(steps(view('sequential'), view('sequential')), ['predict@0', `relay@${RELAY_HOLD_HARD_MS}`]);
});

test('random with a cone: the checks and the birthday at once', () => {
  assert.equal(BIRTHDAY_HOLD_MS, 0);
  assert.deepEqual(steps(view('random'), view('cone')), [
    'udp-checks@0',
    `birthday@${BIRTHDAY_HOLD_MS}`,
    'tcp@0',
    `relay@${RELAY_HOLD_HARD_MS}`,
  ]);
});

test('a random listener with an unmeasured connector (a cold one): the birthday aims at its reflexive address', () => {
  const expected = ['udp-checks@0', `birthday@${BIRTHDAY_HOLD_MS}`, `relay@${RELAY_HOLD_HARD_MS}`];
  const listener = { ...ALL_ON, initiator: 'remote' as const };
  const connector = { ...ALL_ON, initiator: 'local' as const };
  assert.deepEqual(steps(view('random'), view('unknown', { tcp: false }), listener), expected);
  assert.deepEqual(steps(view('unknown', { tcp: false }), view('random'), connector), expected, 'the same plan');
  // An unmeasured listener never measured (it would not spray): a random connector does not count on it.
  const plain = ['udp-checks@0', `relay@${RELAY_HOLD_MS}`];
  assert.deepEqual(steps(view('random'), view('unknown', { tcp: false }), connector), plain);
  assert.deepEqual(steps(view('unknown', { tcp: false }), view('random'), listener), plain, 'the same plan');
  // Not without UDP on both sides, not with the hard punch off, and never for two unmeasured sides.
  assert.deepEqual(steps(view('random'), view('unknown', { tcp: false, udp: false }), listener), [
    'udp-checks@0',
    'relay@0',
  ]);
  assert.ok(!steps(view('random'), view('unknown'), { ...listener, hardNat: false }).some((s) => s.startsWith('bi')));
  assert.ok(!steps(view('unknown'), view('unknown'), listener).some((s) => s.startsWith('birthday')));
  assert.ok(!steps(view('unknown'), view('cone'), connector).some((s) => s.startsWith('birthday')));
});

test('random with random or sequential: the relay at once; a budget makes double-random a direct technique', () => {
  for (const [a, b] of [
    ['random', 'random'],
    ['random', 'sequential'],
    ['sequential', 'random'],
  ] as const) {
    assert.deepEqual(steps(view(a), view(b)), ['relay@0']);
  }
  assert.deepEqual(steps(view('random'), view('random'), { ...ALL_ON, budget: true }), [
    'double-random@0',
    `relay@${RELAY_HOLD_HARD_MS}`,
  ]);
});

test('same public address: the LAN path by plain checks, never a hard punch', () => {
  const a = view('sequential', { publicAddress: '198.51.100.7' });
  const b = view('random', { publicAddress: '198.51.100.7' });
  assert.deepEqual(steps(a, b), ['udp-checks@0', `relay@${RELAY_HOLD_MS}`]);
});

test('a gateway mapping on either side: mapped checks, no hard punch', () => {
  assert.deepEqual(steps(view('random', { mapped: true }), view('cone')), [
    'mapped@0',
    'tcp@0',
    `relay@${RELAY_HOLD_MS}`,
  ]);
});

test('UDP blocked on a side: the relay at once', () => {
  assert.deepEqual(steps(view('unknown', { udp: false }), view('cone')), ['udp-checks@0', 'tcp@0', 'relay@0']);
});

test('switches: --no-relay, --no-hard-nat and --transport udp leave their technique out and say why', () => {
  const p = plan(view('sequential'), view('cone'), { hardNat: false, budget: false, relay: false, transport: 'udp' });
  assert.deepEqual(
    p.steps.map((s) => s.technique),
    ['udp-checks'],
  );
  const why = Object.fromEntries(p.skipped.map((s) => [s.technique, s.why]));
  assert.match(why.predict ?? why['predict'] ?? '', /--no-hard-nat/);
  assert.match(why.relay ?? '', /--no-relay/);
  assert.match(why.tcp ?? '', /--transport udp/);
});

test('nothing works for random ↔ random without a relay: the advice names the relay and the budget', () => {
  const sw = { ...ALL_ON, relay: false };
  const a = view('random', { relay: false });
  const b = view('random', { relay: false });
  const p = plan(a, b, sw);
  assert.deepEqual(
    p.steps.map((s) => s.technique),
    [],
  );
  const tips = advice(a, b, p, sw).join(' ');
  assert.match(tips, /drop --no-relay/);
  assert.match(tips, /--budget/);
});

test('a connector whose NAT measurement gave nothing (introduced unmeasured again): both sides plan alike, relay at 1.5 s', () => {
  // The connector cannot spray without a measurement (its hard-NAT switch is off); the listener, told the connector
  // measured nothing (src/endpoint/endpoint.ts peerMeasuredNothing: no `initiator`), does not count on it either.
  const connector = steps(view('unknown'), view('random'), { ...ALL_ON, hardNat: false, initiator: 'local' });
  const listener = steps(view('random'), view('unknown'), { ...ALL_ON });
  assert.deepEqual(connector, ['udp-checks@0', 'tcp@0', `relay@${RELAY_HOLD_MS}`]);
  assert.deepEqual(listener, connector);
  // Before (the listener still counting on a spray), the listener held the relay back 4 s.
  const before = steps(view('random'), view('unknown'), { ...ALL_ON, initiator: 'remote' });
  assert.deepEqual(before, ['udp-checks@0', 'birthday@0', 'tcp@0', `relay@${RELAY_HOLD_HARD_MS}`]);
});
