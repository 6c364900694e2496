import { test } from 'node:test';
import assert from 'node:assert/strict';
import { race } from '../../src/traversal/race.js';
import type { Plan, PlanStep } from '../../src/traversal/planner.js';
import {
  unknownNat,
  type PathResult,
  type Technique,
  type TechniqueContext,
  type TechniqueName,
} from '../../src/traversal/technique.js';
import { isNatpunchError } from '../../src/util/errors.js';

function step(technique: TechniqueName): PlanStep {
  return { technique, holdMs: 0, preference: 0, graceMs: 0, why: 'test' };
}

function result(technique: TechniqueName): PathResult {
  return {
    technique,
    session: { close: async () => {} } as unknown as PathResult['session'],
    kind: 'direct',
    transport: 'udp',
    local: { address: '127.0.0.1', port: 1 },
    remote: { address: '127.0.0.1', port: 2 },
  };
}

const ctx = {
  role: 'initiator',
  local: { nat: unknownNat() },
  remote: { nat: unknownNat() },
  progress: () => {},
} as unknown as Omit<TechniqueContext, 'claim' | 'unclaim'>;

test('a step whose Noise IK message 2 came back takes the claim from a step still in its XX handshake (the peer chose its path)', async () => {
  const events: string[] = [];
  let xxAborted: unknown = null;
  // Plain checks: found a path first, claimed, and its XX handshake never completes (the responder moved on).
  const plain: Technique = {
    name: 'udp-checks',
    applies: () => true,
    run: async (c, signal) => {
      assert.equal(await c.claim(), true);
      events.push('plain claimed');
      await new Promise((_, reject) =>
        signal.addEventListener('abort', () => {
          xxAborted = signal.reason;
          reject(signal.reason);
        }),
      );
      throw new Error('unreachable');
    },
  };
  // Birthday: its checks carried IK and message 2 came back 30 ms later.
  const birthday: Technique = {
    name: 'birthday',
    applies: () => true,
    run: async (c) => {
      await new Promise((r) => setTimeout(r, 30));
      assert.equal(await c.claim(true), true, 'the decided claim is taken at once');
      events.push('birthday claimed');
      return result('birthday');
    },
  };
  const plan: Plan = { steps: [step('udp-checks'), step('birthday')], skipped: [] };
  const claims: TechniqueName[] = [];
  const won = await race({
    plan,
    techniques: new Map<TechniqueName, Technique>([
      ['udp-checks', plain],
      ['birthday', birthday],
    ]),
    ctx,
    signal: new AbortController().signal,
    onClaim: (t) => claims.push(t),
  });
  assert.equal(won.technique, 'birthday');
  assert.deepEqual(events, ['plain claimed', 'birthday claimed']);
  assert.deepEqual(claims, ['udp-checks', 'birthday']);
  assert.ok(isNatpunchError(xxAborted, 'ABORTED'), String(xxAborted));
  assert.match((xxAborted as Error).message, /peer chose/);
});

test('without a decision the second claimer waits for the holder, as before', async () => {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const first: Technique = {
    name: 'udp-checks',
    applies: () => true,
    run: async (c) => {
      assert.equal(await c.claim(), true);
      await held;
      c.unclaim(); // its handshake failed
      throw new Error('handshake failed');
    },
  };
  const second: Technique = {
    name: 'birthday',
    applies: () => true,
    run: async (c) => {
      await new Promise((r) => setTimeout(r, 10));
      const claimed = c.claim();
      setTimeout(release, 30);
      assert.equal(await claimed, true);
      return result('birthday');
    },
  };
  const won = await race({
    plan: { steps: [step('udp-checks'), step('birthday')], skipped: [] },
    techniques: new Map<TechniqueName, Technique>([
      ['udp-checks', first],
      ['birthday', second],
    ]),
    ctx,
    signal: new AbortController().signal,
  });
  assert.equal(won.technique, 'birthday');
});
