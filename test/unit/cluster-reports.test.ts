// Outcome reports across nodes (src/server/metrics.ts + ReportMeeting on Redis, src/rendezvous/redis.ts): the two
// peers of a connection report to the nodes they registered with, often two different ones. The cluster counts the
// connection once, with both sides' own NAT types — not once per node, each with half the labels. Real redis-server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { ServeMetrics, REPORT_MERGE_WAIT_MS } from '../../src/server/metrics.js';
import { RedisBackend } from '../../src/rendezvous/redis.js';
import { connectionOutcome } from '../../src/rendezvous/outcome.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { decodeRendezvous, encodeRendezvous, type ReportMessage } from '../../src/wire/rendezvous.js';
import { startRedis } from '../helpers/redis.js';

const haveRedis = spawnSync('sh', ['-c', 'command -v redis-server']).status === 0;

/** A signed REPORT as the rendezvous hands it to its observers (decoded from the wire: signedPart and signature). */
function report(cid: Buffer, role: 'initiator' | 'responder', localNat: string, peerNat = 'unknown'): ReportMessage {
  const kp = generateKeyPair();
  const outcome = connectionOutcome({
    connectionId: cid,
    role,
    startedAt: 0,
    now: 250,
    path: { kind: 'direct', transport: 'udp' },
    tried: ['udp'],
    localNat,
    peerNat,
  });
  return decodeRendezvous(
    encodeRendezvous({ ...outcome, type: 'report', requestId: 1, publicKey: kp.publicKey }, kp.secretKey),
  ) as ReportMessage;
}

async function outcomes(m: ServeMetrics, pair?: string): Promise<number> {
  const metric = m.registry.getSingleMetric('natpunch_punch_outcomes_total');
  const { values } = await metric!.get();
  return values.filter((v) => !pair || v.labels.nat_pair === pair).reduce((sum, v) => sum + v.value, 0);
}

async function until(cond: () => Promise<boolean>, what: string, ms = REPORT_MERGE_WAIT_MS + 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test(
  'two nodes, one report each: one outcome for the cluster, labelled with both NAT types; a lone report counts once',
  { skip: haveRedis ? false : 'redis-server not installed', timeout: 60_000 },
  async () => {
    const redis = await startRedis();
    const b1 = await RedisBackend.connect({ url: redis.url, nodeId: 'n1' });
    const b2 = await RedisBackend.connect({ url: redis.url, nodeId: 'n2' });
    const m1 = new ServeMetrics({ reports: b1.reports });
    const m2 = new ServeMetrics({ reports: b2.reports });
    try {
      // The initiator (symmetric) reports to node 1, the responder (full cone) to node 2, a moment later.
      const cid = randomBytes(16);
      m1.onEvent({ type: 'report', report: report(cid, 'initiator', 'symmetric') });
      await new Promise((r) => setTimeout(r, 200));
      m2.onEvent({ type: 'report', report: report(cid, 'responder', 'full-cone') });
      const pair = 'full-cone/symmetric';
      await until(async () => (await outcomes(m2, pair)) === 1, 'node 2 counting the merged outcome');
      // After node 1's merge wait: it counted nothing (node 2 took its report), so the cluster's sum is 1.
      await new Promise((r) => setTimeout(r, REPORT_MERGE_WAIT_MS + 1_500));
      assert.equal((await outcomes(m1)) + (await outcomes(m2)), 1, 'one outcome across both nodes');

      // A report whose partner never comes is counted alone, once; a late partner on the other node is not counted.
      const lone = randomBytes(16);
      m1.onEvent({ type: 'report', report: report(lone, 'initiator', 'symmetric', 'restricted-cone') });
      await until(async () => (await outcomes(m1)) === 1, 'node 1 counting the lone report');
      m2.onEvent({ type: 'report', report: report(lone, 'responder', 'restricted-cone') });
      await new Promise((r) => setTimeout(r, REPORT_MERGE_WAIT_MS + 1_500));
      assert.equal((await outcomes(m1)) + (await outcomes(m2)), 2, 'the late partner was not counted again');
    } finally {
      m1.close();
      m2.close();
      await b1.close();
      await b2.close();
      await redis.stop();
    }
  },
);
