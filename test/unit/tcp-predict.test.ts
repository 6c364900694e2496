import { test } from 'node:test';
import assert from 'node:assert/strict';
import { predictTcpCandidates } from '../../src/traversal/tcp-predict.js';

test('a sequential allocator yields the next ports after the last mapping, likeliest first', () => {
  const samples = [
    { local: 40001, external: 20008 },
    { local: 40507, external: 20009 },
    { local: 39012, external: 20010 },
  ];
  const { report, candidates } = predictTcpCandidates(samples, { address: '198.51.100.10', port: 20010 }, 3);
  assert.equal(report.pattern, 'sequential');
  assert.deepEqual(candidates.map((c) => c.port), [20011, 20012, 20013]);
  assert.ok(candidates.every((c) => c.type === 'predicted' && c.transport === 'tcp' && c.address === '198.51.100.10'));
  assert.ok(candidates[0]!.priority > candidates[1]!.priority);
});

test('preserving, random and too few samples predict nothing', () => {
  const last = { address: '198.51.100.10', port: 5000 };
  assert.deepEqual(predictTcpCandidates([{ local: 1, external: 1 }, { local: 2, external: 2 }, { local: 3, external: 3 }], last).candidates, []);
  assert.deepEqual(predictTcpCandidates([{ local: 1, external: 9000 }, { local: 2, external: 31000 }, { local: 3, external: 4000 }], last).candidates, []);
  assert.deepEqual(predictTcpCandidates([{ local: 1, external: 2 }], last).candidates, []);
});

test('predictions stop at the end of the port range', () => {
  const samples = [
    { local: 1, external: 65532 },
    { local: 2, external: 65533 },
    { local: 3, external: 65534 },
  ];
  assert.deepEqual(predictTcpCandidates(samples, { address: '192.0.2.1', port: 65534 }, 5).candidates.map((c) => c.port), [65535]);
});
