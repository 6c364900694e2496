import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  expandTcpPredictions,
  MAX_EXPANDED_PORTS,
  predictTcpCandidates,
  tcpPredictionCandidate,
  tcpPredictionOf,
} from '../../src/traversal/tcp-predict.js';
import { candidatePriority } from '../../src/traversal/candidate.js';

test('a sequential allocator yields the next ports after the last mapping, likeliest first', () => {
  const samples = [
    { local: 40001, external: 20008 },
    { local: 40507, external: 20009 },
    { local: 39012, external: 20010 },
  ];
  const { report, candidates } = predictTcpCandidates(samples, { address: '198.51.100.10', port: 20010 }, 3);
  assert.equal(report.pattern, 'sequential');
  assert.deepEqual(
    candidates.map((c) => c.port),
    [20011, 20012, 20013],
  );
  assert.ok(candidates.every((c) => c.type === 'predicted' && c.transport === 'tcp' && c.address === '198.51.100.10'));
  assert.ok(candidates[0]!.priority > candidates[1]!.priority);
});

test('preserving, random and too few samples predict nothing', () => {
  const last = { address: '198.51.100.10', port: 5000 };
  assert.deepEqual(
    predictTcpCandidates(
      [
        { local: 1, external: 1 },
        { local: 2, external: 2 },
        { local: 3, external: 3 },
      ],
      last,
    ).candidates,
    [],
  );
  assert.deepEqual(
    predictTcpCandidates(
      [
        { local: 1, external: 9000 },
        { local: 2, external: 31000 },
        { local: 3, external: 4000 },
      ],
      last,
    ).candidates,
    [],
  );
  assert.deepEqual(predictTcpCandidates([{ local: 1, external: 2 }], last).candidates, []);
});

test('predictions stop at the end of the port range', () => {
  const samples = [
    { local: 1, external: 65532 },
    { local: 2, external: 65533 },
    { local: 3, external: 65534 },
  ];
  assert.deepEqual(
    predictTcpCandidates(samples, { address: '192.0.2.1', port: 65534 }, 5).candidates.map((c) => c.port),
    [65535],
  );
});

test('a prediction travels as one window candidate and expands back into its ports, likeliest first', () => {
  const window = tcpPredictionCandidate({ address: '198.51.100.10', first: 20011, delta: 1, count: 4 });
  assert.equal(window.type, 'predicted');
  assert.equal(window.transport, 'tcp');
  assert.equal(window.port, 20011);
  assert.ok(window.priority <= 0xffffffff);
  assert.deepEqual(tcpPredictionOf(window), { address: '198.51.100.10', first: 20011, delta: 1, count: 4 });
  const host = { type: 'host' as const, transport: 'tcp' as const, address: '10.0.0.2', port: 40000, priority: 1 };
  const srflx = (address: string) => ({
    type: 'srflx' as const,
    transport: 'tcp' as const,
    address,
    port: 20000,
    priority: 2,
  });
  const expanded = expandTcpPredictions([host, srflx('198.51.100.10'), window]);
  assert.deepEqual(expanded.slice(0, 2), [host, srflx('198.51.100.10')]);
  assert.deepEqual(
    expanded.slice(2).map((c) => c.port),
    [20011, 20012, 20013, 20014],
  );
  assert.ok(
    expanded.slice(2).every((c) => c.type === 'predicted' && c.transport === 'tcp' && tcpPredictionOf(c) === null),
  );
  assert.ok(expanded[2]!.priority > expanded[3]!.priority);
  // Negative steps and the end of the port range.
  const down = tcpPredictionCandidate({ address: '192.0.2.1', first: 3, delta: -2, count: 4 });
  assert.deepEqual(
    expandTcpPredictions([srflx('192.0.2.1'), down])
      .slice(1)
      .map((c) => c.port),
    [3, 1],
  );
});

test("the peer's window is bounded: at most MAX_EXPANDED_PORTS ports, and only at its own server-reflexive address", () => {
  const srflx = {
    type: 'srflx' as const,
    transport: 'udp' as const,
    address: '198.51.100.10',
    port: 5000,
    priority: 2,
  };
  const huge = tcpPredictionCandidate({ address: '198.51.100.10', first: 1000, delta: 1, count: 255 });
  assert.equal(expandTcpPredictions([srflx, huge]).length, 1 + MAX_EXPANDED_PORTS);
  const elsewhere = tcpPredictionCandidate({ address: '192.0.2.99', first: 1000, delta: 1, count: 8 });
  assert.deepEqual(expandTcpPredictions([srflx, elsewhere]), [srflx]);
});

test('ordinary predicted TCP candidates and UDP hard-NAT markers are not taken for a window', () => {
  assert.equal(
    tcpPredictionOf({
      type: 'predicted',
      transport: 'tcp',
      address: '192.0.2.1',
      port: 5,
      priority: candidatePriority('predicted', 65534),
    }),
    null,
  );
  const window = tcpPredictionCandidate({ address: '192.0.2.1', first: 5, delta: 1, count: 8 });
  assert.equal(tcpPredictionOf({ ...window, transport: 'udp' }), null);
  assert.equal(tcpPredictionOf({ ...window, type: 'srflx' }), null);
});
