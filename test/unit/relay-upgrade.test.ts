import assert from 'node:assert/strict';
import { test } from 'node:test';
import { upgradeCandidates } from '../../src/natpunch.js';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';

const c = (
  type: Candidate['type'],
  address: string,
  port: number,
  transport: Candidate['transport'] = 'udp',
): Candidate => ({ type, transport, address, port, priority: candidatePriority(type) });

test("upgrade candidates: the offer's direct UDP candidates plus reflexive address × host port, never relay ones", () => {
  const out = upgradeCandidates([
    c('host', '10.0.1.2', 40000),
    c('srflx', '198.51.100.10', 51234),
    c('relay', '192.0.2.10', 50000),
    c('host', '10.0.1.2', 40001, 'tcp'),
  ]);
  const keys = out.map((x) => `${x.type} ${x.address}:${x.port}`);
  assert.deepEqual(
    keys.sort(),
    ['host 10.0.1.2:40000', 'predicted 198.51.100.10:40000', 'srflx 198.51.100.10:51234'].sort(),
  );
});

test('upgrade candidates are bounded whatever the offer holds', () => {
  const many: Candidate[] = [];
  for (let i = 0; i < 40; i++) many.push(c('host', `10.0.${i}.1`, 1000 + i), c('srflx', `198.51.100.${i}`, 2000 + i));
  assert.ok(upgradeCandidates(many).length <= 16);
  assert.deepEqual(upgradeCandidates([c('relay', '192.0.2.10', 50000)]), []);
});
