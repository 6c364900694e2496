/**
 * A failed hard punch falls back to the TURN relay. `natpunch serve --turn --auth-secret` in the lab's server
 * namespace (rendezvous + STUN + TURN on one port, handing registered peers TURN credentials; a STUN server on port
 * + 1 for the NAT measurement). Both peers behind symmetric-random NATs with `hardNat: true` and no double-random
 * budget: the hard punch is refused at once (random ↔ random). With `relay: 'auto'` both sides go on with the
 * normal checks and the session runs through the relay, data hashed both ways; the same when a small budget lets
 * the punch run and find nothing (relay on the connecting side only: both decide from its candidate); the CLI too.
 * Without a relay connect() fails PUNCH_FAILED and says how a relay would have helped.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason } from '../../src/lab/index.js';
import { cliEvent, tokenBothWays } from './fixtures/cli-event.js';

const CLI = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
const FIXTURE = new URL('./fixtures/hardnat-rv-peer.ts', import.meta.url).pathname;
const RV_PORT = 3478;
const SIZE = 64 * 1024;
const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

type Msg = Record<string, unknown>;

describe('hard punch → TURN relay fallback in the NAT lab (hardNat + relay auto)', { skip }, () => {
  let lab: Lab;

  before(async () => {
    lab = await Lab.up();
    const serve = lab.node('server', CLI, [
      'serve',
      '--port',
      String(RV_PORT),
      '--address',
      lab.addr('server'),
      '--turn',
      '--auth-secret',
      `lab-${randomBytes(8).toString('hex')}`,
      '--json',
    ]);
    const ready = await serve.next((m) => m.event === 'listening', { timeoutMs: 20_000 });
    assert.ok(ready.turn, `serve runs TURN: ${JSON.stringify(ready)}`);
    // serve answers STUN on its port + 1 itself (the NAT measurement's second destination).
    await lab.setNat('natA', 'symmetric-random');
    await lab.setNat('natB', 'symmetric-random');
  });
  after(async () => {
    await lab?.down(); // kills every process it spawned
  });

  /** One listener (b) and one connector (a), both hardNat, with `extra` flags (the listener's: `listenerExtra`). */
  async function trial(
    extra: string[],
    listenerExtra = extra,
  ): Promise<{ cr: Msg; lr: Msg | null; cp: Msg[]; lp: Msg[]; why: string }> {
    const name = `hrel-${randomBytes(4).toString('hex')}`;
    const common = [
      '--rendezvous',
      `${lab.addr('server')}:${RV_PORT}`,
      '--name',
      name,
      '--size',
      String(SIZE),
      ...extra,
    ];
    const l = lab.node('b', FIXTURE, [
      'listen',
      '--rendezvous',
      `${lab.addr('server')}:${RV_PORT}`,
      '--name',
      name,
      '--size',
      String(SIZE),
      ...listenerExtra,
    ]);
    let c: ReturnType<typeof lab.node> | null = null;
    try {
      const ready = await l.next((m) => m.type === 'listening' || m.type === 'error', { timeoutMs: 20_000 });
      assert.equal(ready.type, 'listening', `listener: ${JSON.stringify(ready)}`);
      c = lab.node('a', FIXTURE, ['connect', ...common]);
      const cr = await c.next((m) => m.type === 'result' || m.type === 'error', { timeoutMs: 40_000 });
      const why = `connector: ${JSON.stringify(cr)} ${JSON.stringify(c.pending())}; listener: ${JSON.stringify(l.pending())}`;
      const lr = await l.next((m) => m.type === 'result' || m.type === 'connection-error', { timeoutMs: 20_000 });
      const cp = c.drain((x) => x.type === 'progress') as Msg[];
      const lp = l.drain((x) => x.type === 'progress') as Msg[];
      return { cr, lr, cp, lp, why };
    } finally {
      await Promise.all([c?.close(), l.close()]);
    }
  }

  test('symmetric-random ↔ symmetric-random, no budget, relay auto on both: the refused hard punch falls back, relayed, data hashed both ways', async () => {
    const { cr, lr, cp, lp, why } = await trial(['--relay', 'auto']);
    assert.equal(cr.type, 'result', why);
    assert.equal(lr?.type, 'result', why);
    // Both measured random NATs, and both reported the fallback (no probes: refused up front).
    assert.equal(cp.find((p) => p.phase === 'hard-nat')?.kind, 'random', why);
    assert.equal(lp.find((p) => p.phase === 'hard-nat')?.kind, 'random', why);
    // No direct technique applies (random ↔ random, no budget): the plan starts the relay at once, no hard punch.
    // The connector, cold, was introduced before it measured its NAT; facing a random listener it sends nothing
    // until the measurement is in, then is introduced again with its advert (docs/connecting.md). The listener
    // plans each introduction: the first (connector not measured, perhaps a cone) races the plain checks and the
    // birthday toward the connector's reflexive address, and is stopped when the connector comes back measured;
    // the last runs the relay alone.
    for (const [side, ps] of [
      ['connector', cp],
      ['listener', lp],
    ] as const) {
      const plan = ps.findLast((p) => p.phase === 'punching')?.plan as
        Array<{ technique: string; holdMs: number }> | undefined;
      assert.deepEqual(
        plan?.map((s) => [s.technique, s.holdMs]),
        [['relay', 0]],
        `${side}: ${why}`,
      );
      assert.equal(
        ps.filter(
          (p) =>
            p.phase === 'technique-start' &&
            p.technique !== 'relay' &&
            (side === 'connector' || (p.technique !== 'udp-checks' && p.technique !== 'birthday')),
        ).length,
        0,
        `${side}: ${why}`,
      );
    }
    // The listener's attempt for the unmeasured introduction did not win: it was stopped (superseded).
    for (const t of ['udp-checks', 'birthday'])
      for (const end of lp.filter((p) => p.phase === 'technique-end' && p.technique === t))
        assert.equal(end.ok, false, `listener ${t}: ${why}`);
    assert.equal((cr.path as { kind: string }).kind, 'relay', why);
    assert.equal(lr!.gotHash, cr.sentHash, 'listener got what the connector sent');
    assert.equal(cr.gotHash, lr!.sentHash, 'connector got what the listener sent');
  });

  test('a small double-random budget, relay on the connecting side only: the punch runs, finds nothing, falls back: relayed', async () => {
    // 8 sockets × 200 probes each way: P(hit) ≈ 1 − exp(−200² / 64512²) ≈ 1e-5 (birthday.ts doubleRandomSuccess).
    // The listener has no relay of its own: it decides from the connector's relay candidate and checks through it.
    const budget = ['--budget', '8,200,2'];
    const { cr, lr, cp, lp, why } = await trial(['--relay', 'auto', ...budget], budget);
    assert.equal(cr.type, 'result', why);
    assert.equal(lr?.type, 'result', why);
    // The budget makes double-random a direct technique: it races first and gives up; the relay, held back, wins.
    for (const [side, ps] of [
      ['connector', cp],
      ['listener', lp],
    ] as const) {
      const end = ps.find((p) => p.phase === 'technique-end' && p.technique === 'double-random');
      assert.equal(end?.ok, false, `${side}: ${why}`);
      assert.match(String(end?.error), /no hard-NAT path within 2000 ms/, side);
      assert.ok(
        ps.some((p) => p.phase === 'technique-start' && p.technique === 'relay'),
        `${side}: ${why}`,
      );
    }
    assert.equal((cr.path as { kind: string }).kind, 'relay', why);
    assert.equal(lr!.gotHash, cr.sentHash);
    assert.equal(cr.gotHash, lr!.sentHash);
  });

  test('`natpunch listen --hard-nat --relay auto` ← `natpunch connect --hard-nat --relay auto`: relayed, lines both ways', async () => {
    const name = `hrcli-${randomBytes(4).toString('hex')}`;
    const rv = `${lab.addr('server')}:${RV_PORT}`;
    const flags = ['--rendezvous', rv, '--hard-nat', '--relay', 'auto', '--transport', 'udp', '--json'];
    const l = lab.node('b', CLI, ['listen', '--name', name, ...flags]);
    let c: ReturnType<typeof lab.node> | null = null;
    try {
      await cliEvent(l, 'listening');
      c = lab.node('a', CLI, ['connect', name, ...flags]);
      await tokenBothWays(c, l);
      const path = await cliEvent(c, 'path');
      assert.deepEqual([path.kind, path.traversal], ['relay', 'relay'], c.stderr);
    } finally {
      await Promise.all([c?.close(), l.close()]);
    }
  });

  test('random ↔ random with the relay turned off: PUNCH_FAILED, and the message says what was tried and what would help', async () => {
    const { cr, lr, cp, why } = await trial(['--no-relay']);
    assert.equal(cr.type, 'error', why);
    assert.equal(cr.code, 'PUNCH_FAILED', why);
    assert.match(String(cr.message), /our NAT: random; the peer's: random/, why);
    assert.match(String(cr.message), /double-random probe budget/, why);
    assert.match(String(cr.message), /drop --no-relay/, why);
    assert.equal(cp.filter((p) => p.phase === 'technique-start').length, 0, 'nothing could run');
    assert.equal(lr?.type, 'connection-error', why);
    assert.equal(lr?.code, 'PUNCH_FAILED', why);
  });
});
