/**
 * Issue 16's acceptance matrix in the NAT lab: `natpunch serve` with NO flags, `natpunch listen` / `natpunch connect`
 * with NO traversal flags, all 25 ordered pairs of full-cone, restricted-cone, port-restricted-cone,
 * symmetric-sequential and symmetric-random, plus udp-blocked ↔ udp-blocked and port-restricted ↔ udp-blocked.
 * Every pair connects with lines carried both ways; every pair with a direct path (all but random ↔ random and
 * random ↔ sequential) ends direct. One topology for all (fixtures/connect-matrix.ts); pairs whose routers differ
 * run side by side. Trials per pair: NATPUNCH_MATRIX_TRIALS (default 1; the bench runs ≥ 5).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason } from '../../src/lab/index.js';
import {
  expectsRelay,
  matrixTopology,
  pairName,
  runMatrix,
  startServe,
  type TrialResult,
} from './fixtures/connect-matrix.js';

const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

describe('connect matrix: every NAT pair connects with no flags (serve, listen, connect)', { skip }, () => {
  let lab: Lab;
  before(async () => {
    lab = await Lab.up(matrixTopology());
    await startServe(lab);
  });
  after(async () => {
    await lab?.down();
  });

  test('25 ordered pairs + udp-blocked pairs: connected, data both ways, direct wherever a direct path exists', async () => {
    const results = await runMatrix(lab, {
      concurrency: Number(process.env.NATPUNCH_MATRIX_CONCURRENCY ?? 3),
      trials: Number(process.env.NATPUNCH_MATRIX_TRIALS ?? 1),
      // NATPUNCH_MATRIX_PAIRS=fc-prc,seq-rnd runs only those pairs (while debugging one).
      ...(process.env.NATPUNCH_MATRIX_PAIRS ? { only: process.env.NATPUNCH_MATRIX_PAIRS.split(',') } : {}),
      onResult: (r: TrialResult) =>
        console.log(
          `# ${pairName(r.pair)}: ${r.ok ? `${r.kind} ${r.transport} via ${r.traversal} in ${r.connectMs} ms [${r.techniques.join(',')}]` : `FAILED ${r.error?.slice(0, 300)}`}`,
        ),
    });
    const failed = results.filter((r) => !r.ok);
    assert.deepEqual(
      failed.map((r) => `${pairName(r.pair)}: ${r.error}`),
      [],
      'every pair connects',
    );
    for (const r of results) {
      const blocked = r.pair.connector === 'udp-blocked' || r.pair.listener === 'udp-blocked';
      if (blocked) continue;
      if (expectsRelay(r.pair.connector, r.pair.listener))
        assert.equal(r.kind, 'relay', `${pairName(r.pair)} has no direct path: relayed`);
      else assert.notEqual(r.kind, 'relay', `${pairName(r.pair)} has a direct path: ${JSON.stringify(r)}`);
    }
    // Two cones: the plain checks win, and no hard punch or relay ever starts.
    for (const r of results.filter(
      (x) =>
        !x.pair.connector.startsWith('symmetric') &&
        !x.pair.listener.startsWith('symmetric') &&
        x.pair.connector !== 'udp-blocked' &&
        x.pair.listener !== 'udp-blocked',
    )) {
      assert.equal(r.traversal, 'udp-checks', `${pairName(r.pair)}: ${JSON.stringify(r)}`);
      assert.deepEqual(
        r.techniques.filter((t) => t !== 'udp-checks' && t !== 'tcp'),
        [],
        `${pairName(r.pair)}: no hard punch, no relay`,
      );
    }
  });
});
