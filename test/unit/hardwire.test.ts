import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { advertFromCandidates, advertToCandidates, needsHardPunch } from '../../src/traversal/hardwire.js';
import type { HardNatAdvert } from '../../src/traversal/predict.js';
import {
  decodeRendezvous,
  encodeRendezvous,
  verifyRendezvous,
  type ConnectMessage,
} from '../../src/wire/rendezvous.js';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';
import { generateKeyPair } from '../../src/session/identity.js';

const host: Candidate = {
  type: 'host',
  transport: 'udp',
  address: '10.0.1.2',
  port: 4000,
  priority: candidatePriority('host'),
};
const srflx = { address: '203.0.113.7', port: 40001 };

test('hardNat adverts survive a signed CONNECT and come back out of the candidates', () => {
  const k = generateKeyPair();
  const adverts: HardNatAdvert[] = [
    { kind: 'cone', delta: null, address: srflx.address, ports: [srflx.port] },
    {
      kind: 'sequential',
      delta: 2,
      address: srflx.address,
      ports: [40010, 40012, 40014, 40016, 40018, 40020, 40022, 40024],
    },
    { kind: 'sequential', delta: -1, address: srflx.address, ports: [39990, 39989] },
    { kind: 'random', delta: null, address: srflx.address, ports: [] },
    { kind: 'unknown', delta: null, address: srflx.address, ports: [srflx.port] },
  ];
  for (const a of adverts) {
    const candidates = [host, ...advertToCandidates(a, srflx)];
    const wire = encodeRendezvous(
      {
        type: 'connect',
        requestId: 1,
        publicKey: k.publicKey,
        reachable: false,
        target: { name: 'x' },
        connectionId: randomBytes(16),
        rttMs: 1,
        candidates,
      },
      k.secretKey,
    );
    const back = decodeRendezvous(wire) as ConnectMessage;
    assert.ok(verifyRendezvous(back), 'signed like the rest');
    const { advert, rest } = advertFromCandidates(back.candidates.reverse());
    assert.deepEqual(advert, a);
    // Normal checks get the host candidate and the srflx the marker stands for, never the predicted window.
    assert.deepEqual(rest.map((c) => `${c.type} ${c.address}:${c.port}`).sort(), [
      `host 10.0.1.2:4000`,
      `srflx ${srflx.address}:${srflx.port}`,
    ]);
  }
});

test('candidates without a marker carry no advert and pass unchanged', () => {
  const plain: Candidate[] = [
    host,
    {
      type: 'predicted',
      transport: 'udp',
      address: srflx.address,
      port: 5,
      priority: candidatePriority('predicted', 65535),
    },
  ];
  const r = advertFromCandidates(plain);
  assert.equal(r.advert, null);
  assert.deepEqual(r.rest, plain);
});

test('the hard punch runs only when a side is symmetric', () => {
  const a = (kind: HardNatAdvert['kind']): HardNatAdvert => ({ kind, delta: null, address: srflx.address, ports: [] });
  assert.equal(needsHardPunch(a('cone'), a('cone')), false);
  assert.equal(needsHardPunch(a('cone'), a('unknown')), false);
  assert.equal(needsHardPunch(a('cone'), a('random')), true);
  assert.equal(needsHardPunch(a('sequential'), a('cone')), true);
});
