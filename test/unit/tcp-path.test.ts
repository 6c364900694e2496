/** The TCP path's decisions that need no network: who opens with STUNT #2, which candidates P2P-NAT punches. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';
import { stuntOpening, tcpCandidatesOf } from '../../src/traversal/tcp-path.js';
import { isSeqPortCandidate, seqPortCandidate, seqPortOf } from '../../src/traversal/tcp-local.js';
import { tcpPredictionCandidate } from '../../src/traversal/tcp-predict.js';

test('STUNT #2: the cone side opens toward a sequential peer, the responder between cones, nobody between two sequential NATs', () => {
  for (const role of ['initiator', 'responder'] as const) {
    assert.equal(stuntOpening({ role, weSequential: false, peerSequential: true }), 'we-open');
    assert.equal(stuntOpening({ role, weSequential: true, peerSequential: false }), 'peer-opens');
    assert.equal(stuntOpening({ role, weSequential: true, peerSequential: true }), 'none');
  }
  assert.equal(stuntOpening({ role: 'responder', weSequential: false, peerSequential: false }), 'we-open');
  assert.equal(stuntOpening({ role: 'initiator', weSequential: false, peerSequential: false }), 'peer-opens');
});

test('port Q travels as a tagged srflx candidate that P2P-NAT leaves alone; the predicted window is expanded', () => {
  const q = seqPortCandidate({ address: '203.0.113.10', port: 41000 });
  assert.ok(isSeqPortCandidate(q));
  const srflx: Candidate = {
    type: 'srflx',
    transport: 'tcp',
    address: '203.0.113.10',
    port: 40000,
    priority: candidatePriority('srflx', 32_000),
  };
  assert.ok(!isSeqPortCandidate(srflx));
  const window = tcpPredictionCandidate({ address: '203.0.113.10', first: 20004, delta: 1, count: 3 });
  const udp: Candidate = {
    type: 'srflx',
    transport: 'udp',
    address: '203.0.113.10',
    port: 5000,
    priority: candidatePriority('srflx'),
  };
  const remote = [srflx, q, window, udp];
  assert.deepEqual(seqPortOf(remote), { address: '203.0.113.10', port: 41000 });
  assert.equal(seqPortOf([srflx, udp]), null);
  const punched = tcpCandidatesOf(remote);
  assert.deepEqual(
    punched.map((c) => `${c.type}:${c.port}`),
    ['srflx:40000', 'predicted:20004', 'predicted:20005', 'predicted:20006'],
  );
});
