import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { UdxEndpoint } from '../../src/net/udx.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { hardNatKind, predictPorts, predictedCandidates } from '../../src/traversal/predict.js';
import { predictTcpCandidates } from '../../src/traversal/tcp-predict.js';
import {
  BIRTHDAY_PORT_SPACE,
  DEFAULT_BIRTHDAY_PROBES,
  DEFAULT_BIRTHDAY_SOCKETS,
  DEFAULT_DOUBLE_RANDOM_BUDGET,
  HARDNAT_FIRST_BYTE,
  HardPunch,
  birthdayProbesFor,
  birthdaySuccess,
  doubleRandomSuccess,
  planHardPunch,
} from '../../src/traversal/birthday.js';

describe('port prediction arithmetic', () => {
  test('the window follows the delta and stays inside 1..65535', () => {
    assert.deepEqual(predictPorts(4901, 1, 3), [4902, 4903, 4904]);
    assert.deepEqual(predictPorts(1000, -2, 3), [998, 996, 994]);
    assert.deepEqual(predictPorts(65534, 1, 5), [65535]);
    assert.deepEqual(predictPorts(100, 0, 5), []);
    const c = predictedCandidates({ address: '192.0.2.1', port: 20000 }, 1, 'udp', 2);
    assert.deepEqual(
      c.map((x) => [x.type, x.port]),
      [
        ['predicted', 20001],
        ['predicted', 20002],
      ],
    );
    assert.ok(c[0]!.priority > c[1]!.priority);
  });

  test('TCP prediction shares the same window', () => {
    const samples = [20000, 20001, 20002, 20003].map((e, i) => ({ local: 40000 + i, external: e }));
    const { candidates } = predictTcpCandidates(samples, { address: '192.0.2.1', port: 20003 }, 3);
    assert.deepEqual(
      candidates.map((c) => [c.transport, c.port]),
      [
        ['tcp', 20004],
        ['tcp', 20005],
        ['tcp', 20006],
      ],
    );
  });

  test('NAT kind from a netcheck report', () => {
    const udp = (mapping: string, pattern: string, delta: number | null) =>
      ({ udp: { mapping, behindNat: true, allocation: { pattern, delta, samples: [] } } }) as never;
    assert.deepEqual(hardNatKind(udp('endpoint-independent', 'random', null)), { kind: 'cone', delta: null });
    assert.deepEqual(hardNatKind(udp('address-and-port-dependent', 'sequential', 1)), { kind: 'sequential', delta: 1 });
    assert.deepEqual(hardNatKind(udp('address-and-port-dependent', 'random', null)), { kind: 'random', delta: null });
  });
});

describe('birthday arithmetic', () => {
  test('1 − (1 − k/N)^p with the defaults is ≥ 99.9%', () => {
    const p = birthdaySuccess(DEFAULT_BIRTHDAY_SOCKETS, DEFAULT_BIRTHDAY_PROBES);
    assert.ok(p > 0.999 && p < 0.9995, String(p));
    assert.equal(birthdayProbesFor(0.999, 256), 1738);
    assert.equal(birthdaySuccess(0, 100), 0);
    assert.equal(birthdaySuccess(BIRTHDAY_PORT_SPACE, 1), 1);
    const d = doubleRandomSuccess(DEFAULT_DOUBLE_RANDOM_BUDGET.probes, DEFAULT_DOUBLE_RANDOM_BUDGET.probes);
    assert.ok(d > 0.05 && d < 0.15, String(d));
  });

  test('strategy by NAT kinds; double-random is refused without a budget', () => {
    assert.equal(planHardPunch('sequential', 'cone'), 'predict');
    assert.equal(planHardPunch('sequential', 'sequential'), 'predict');
    assert.equal(planHardPunch('random', 'cone'), 'birthday-sockets');
    assert.equal(planHardPunch('cone', 'random'), 'birthday-spray');
    assert.equal(planHardPunch('random', 'random', DEFAULT_DOUBLE_RANDOM_BUDGET), 'double-random');
    for (const [a, b] of [
      ['random', 'random'],
      ['random', 'sequential'],
      ['sequential', 'random'],
    ] as const) {
      assert.throws(
        () => planHardPunch(a, b),
        (e: unknown) => isNatpunchError(e, 'PUNCH_FAILED') && /budget/.test((e as Error).message),
      );
    }
  });
});

describe('HardPunch on loopback', () => {
  const key = randomBytes(32);

  test('prediction mode between two sockets; forged and malformed packets are ignored', async () => {
    const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
    const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
    const attacker = await UdxEndpoint.bind({ address: '127.0.0.1' });
    try {
      const pa = new HardPunch({
        role: 'initiator',
        key,
        endpoint: a,
        local: 'cone',
        remote: { address: '127.0.0.1', kind: 'cone', ports: [b.address().port] },
        timeoutMs: 3000,
      });
      // Garbage first: wrong first byte, right first byte but bad tag, truncated.
      const bad = [
        Buffer.from([0x00, 1, 2]),
        Buffer.concat([Buffer.from([HARDNAT_FIRST_BYTE, 1, 2]), randomBytes(16)]),
        Buffer.from([HARDNAT_FIRST_BYTE]),
      ];
      for (const m of bad) attacker.send(m, a.address().port, '127.0.0.1');
      const pb = new HardPunch({
        role: 'responder',
        key,
        endpoint: b,
        local: 'cone',
        remote: { address: '127.0.0.1', kind: 'cone', ports: [a.address().port] },
        timeoutMs: 3000,
      });
      const [ra, rb] = await Promise.all([pa.run(), pb.run()]);
      assert.equal(ra.strategy, 'predict');
      assert.equal(ra.remote.port, b.address().port);
      assert.equal(rb.remote.port, a.address().port);
      assert.equal(ra.endpoint, a);
      assert.equal(ra.ownsEndpoint, false);
      pa.close();
      pb.close();
    } finally {
      await Promise.all([a.close(), b.close(), attacker.close()]);
    }
  });

  test('birthday sockets: one of them wins and is handed over, the rest are closed', async () => {
    const cone = await UdxEndpoint.bind({ address: '127.0.0.1' });
    const main = await UdxEndpoint.bind({ address: '127.0.0.1' });
    let winner: UdxEndpoint | null = null;
    try {
      // Loopback filters nothing: the random side's OPENs reach the cone, which answers them (no spray: probes 0).
      const pr = new HardPunch({
        role: 'initiator',
        key,
        endpoint: main,
        local: 'random',
        remote: { address: '127.0.0.1', kind: 'cone', ports: [cone.address().port] },
        sockets: 8,
        openTtl: 0,
        bindAddress: '127.0.0.1',
        timeoutMs: 3000,
      });
      const pc = new HardPunch({
        role: 'responder',
        key,
        endpoint: cone,
        local: 'cone',
        remote: { address: '127.0.0.1', kind: 'random', ports: [] },
        probes: 0,
        timeoutMs: 3000,
      });
      const [rr, rc] = await Promise.all([pr.run(), pc.run()]);
      winner = rr.endpoint;
      assert.equal(rr.strategy, 'birthday-sockets');
      assert.equal(rc.strategy, 'birthday-spray');
      assert.equal(rr.ownsEndpoint, true);
      assert.equal(rr.socketsOpened, 8);
      assert.equal(rc.remote.port, winner.address().port);
      assert.equal(rc.probesSent, 0);
      pr.close();
      pc.close();
      assert.equal(winner.closed, false, 'the winner stays open for the session');
    } finally {
      await winner?.close();
      await Promise.all([cone.close(), main.close()]);
    }
  });

  test('no answer: bounded failure with PUNCH_FAILED; abort rejects with ABORTED', async () => {
    const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
    const silent = await UdxEndpoint.bind({ address: '127.0.0.1' });
    try {
      const p = new HardPunch({
        role: 'initiator',
        key,
        endpoint: a,
        local: 'cone',
        remote: { address: '127.0.0.1', kind: 'cone', ports: [silent.address().port] },
        timeoutMs: 300,
      });
      await assert.rejects(p.run(), (e: unknown) => isNatpunchError(e, 'PUNCH_FAILED'));
      assert.ok(p.probesSent > 0 && p.probesSent <= 4);
      const ac = new AbortController();
      const q = new HardPunch({
        role: 'initiator',
        key,
        endpoint: a,
        local: 'cone',
        remote: { address: '127.0.0.1', kind: 'cone', ports: [silent.address().port] },
        signal: ac.signal,
      });
      const run = q.run();
      ac.abort();
      await assert.rejects(run, (e: unknown) => isNatpunchError(e, 'ABORTED'));
    } finally {
      await Promise.all([a.close(), silent.close()]);
    }
  });

  test('mapping cap and budget: a window over the cap is refused before sending; a budget states its estimate', async () => {
    const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
    try {
      const ports = Array.from({ length: 10 }, (_, i) => 40000 + i);
      const p = new HardPunch({
        role: 'initiator',
        key,
        endpoint: a,
        local: 'sequential',
        remote: { address: '127.0.0.1', kind: 'cone', ports },
        maxMappings: 4,
      });
      await assert.rejects(p.run(), (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'));
      assert.equal(p.probesSent, 0);
      const budget = { sockets: 2000, probes: 1e9, seconds: 1 };
      const q = new HardPunch({
        role: 'initiator',
        key,
        endpoint: a,
        local: 'random',
        remote: { address: '127.0.0.1', kind: 'random', ports: [] },
        budget,
      });
      assert.equal(q.strategy, 'double-random');
      // Clamped to the ceilings (1024 sockets, 100000 probes per side) before estimating.
      assert.ok(Math.abs(q.estimate()! - doubleRandomSuccess(100_000, 100_000)) < 1e-12);
      const bad = new HardPunch({
        role: 'initiator',
        key,
        endpoint: a,
        local: 'random',
        remote: { address: '127.0.0.1', kind: 'random', ports: [] },
        budget: { sockets: 0, probes: 10, seconds: 1 },
      });
      await assert.rejects(bad.run(), (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'));
    } finally {
      await a.close();
    }
  });
});
