import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyseAllocation } from '../../src/discovery/allocation.js';
import {
  classicName,
  classifyFiltering,
  classifyMapping,
  type FilteringBehaviour,
  type MappingBehaviour,
} from '../../src/discovery/classify.js';

const e = (port: number, address = '203.0.113.5') => ({ address, port });

test('mapping: RFC 5780 §4.3 outcomes', () => {
  assert.equal(classifyMapping(e(1000), e(1000), e(1000)), 'endpoint-independent');
  assert.equal(classifyMapping(e(1000), e(1001), e(1001)), 'address-dependent');
  assert.equal(classifyMapping(e(1000), e(1001), e(1002)), 'address-and-port-dependent');
  assert.equal(classifyMapping(e(1000), undefined, undefined), 'unknown');
});

test('filtering: RFC 5780 §4.4 outcomes', () => {
  assert.equal(classifyFiltering(true, undefined), 'endpoint-independent');
  assert.equal(classifyFiltering(false, true), 'address-dependent');
  assert.equal(classifyFiltering(false, false), 'address-and-port-dependent');
  assert.equal(classifyFiltering(undefined, undefined), 'unknown');
});

test('classic RFC 3489 names follow mapping and filtering', () => {
  const name = (mapping: MappingBehaviour, filtering: FilteringBehaviour, behindNat = true, udpBlocked = false) =>
    classicName({ udpBlocked, behindNat, mapping, filtering });
  assert.equal(name('endpoint-independent', 'endpoint-independent'), 'full-cone');
  assert.equal(name('endpoint-independent', 'address-dependent'), 'restricted-cone');
  assert.equal(name('endpoint-independent', 'address-and-port-dependent'), 'port-restricted-cone');
  assert.equal(name('address-and-port-dependent', 'address-and-port-dependent'), 'symmetric');
  assert.equal(name('endpoint-independent', 'endpoint-independent', false), 'open-internet');
  assert.equal(name('endpoint-independent', 'address-and-port-dependent', false), 'symmetric-udp-firewall');
  assert.equal(name('unknown', 'unknown', undefined, true), 'udp-blocked');
});

test('allocation: preserving, sequential with delta, random, too few samples', () => {
  assert.equal(
    analyseAllocation([
      { local: 5000, external: 5000 },
      { local: 5001, external: 5001 },
      { local: 7000, external: 7000 },
    ]).pattern,
    'preserving',
  );
  const seq = analyseAllocation(
    [40000, 40001, 40002, 40004, 40005].map((p, i) => ({ local: 5000 + i * 17, external: p })),
  );
  assert.equal(seq.pattern, 'sequential');
  assert.equal(seq.delta, 1);
  const seq2 = analyseAllocation([30000, 30002, 30004, 30006].map((p, i) => ({ local: 6000 + i, external: p })));
  assert.deepEqual([seq2.pattern, seq2.delta], ['sequential', 2]);
  const rnd = analyseAllocation([41234, 18022, 60111, 2331, 33333].map((p, i) => ({ local: 7000 + i, external: p })));
  assert.equal(rnd.pattern, 'random');
  assert.equal(analyseAllocation([{ local: 1, external: 2 }]).pattern, 'unknown');
});

test('allocation: a sequential NAT seen through loss (one allocation out of order, another flow in between)', () => {
  const at = (ports: number[]) => ports.map((p, i) => ({ local: 40000 + i * 7, external: p }));
  // Sample 2's first packet was lost; its retransmission was allocated after the others.
  const reordered = analyseAllocation(at([20001, 20005, 20002, 20003, 20004]));
  assert.deepEqual([reordered.pattern, reordered.delta], ['sequential', 1]);
  // Another flow took a port in between twice.
  const gaps = analyseAllocation(at([20010, 20012, 20013, 20015, 20016]));
  assert.equal(gaps.pattern, 'sequential');
  assert.equal(gaps.delta, 1);
  // A downward-counting allocator keeps its sign.
  assert.deepEqual(
    [
      analyseAllocation(at([30010, 30009, 30008, 30006])).pattern,
      analyseAllocation(at([30010, 30009, 30008, 30006])).delta,
    ],
    ['sequential', -1],
  );
  // Random ports stay random even when two happen to be close.
  assert.equal(analyseAllocation(at([41234, 41236, 60111, 2331, 33333])).pattern, 'random');
});
