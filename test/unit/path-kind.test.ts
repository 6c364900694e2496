// pathKindOf (src/traversal/udp-checks.ts): how a session reports its path. A pair the relay technique nominated
// runs through a relay even when the peer was learned peer-reflexively (RFC 8445 §7.3.1.3) — from one of our relay's
// loopback proxies, or from a relayed address the peer never advertised — and even before the peer told us how it
// saw us. It used to be labelled 'direct' there (relay/path.ts creates a proxy for an unannounced peer address; the
// checks see 127.0.0.1:proxy as a prflx candidate).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pathKindOf, pathOf } from '../../src/traversal/udp-checks.js';
import type { CheckResult } from '../../src/traversal/checks.js';
import type { Candidate } from '../../src/traversal/candidate.js';

const cand = (type: Candidate['type'], address: string, port: number): Candidate => ({
  type,
  transport: 'udp',
  address,
  port,
  priority: 1,
});

function result(remote: Candidate, local: Candidate | null): CheckResult {
  return {
    remote: { address: remote.address, port: remote.port },
    remoteCandidate: remote,
    localCandidate: local,
    mapped: local ? { address: local.address, port: local.port } : null,
    kind: remote.type === 'host' ? 'lan' : 'direct',
    rttMs: 5,
    tried: [],
  };
}

test('a peer learned through a relay proxy, before it said how it saw us, is a relayed path', () => {
  // The listener's side of a relayed session: the first check came out of a proxy of our allocation (a new mapping
  // of the peer's random NAT towards our relay), and no response told us our mapped address yet.
  const r = result(cand('prflx', '127.0.0.1', 41926), null);
  assert.equal(pathKindOf(r, true), 'relay');
  assert.equal(pathOf(r, true).kind, 'relay');
});

test('a peer learned at its unadvertised relayed address (our srflx seen by it) is a relayed path', () => {
  // The peer's relay forwarded its check to our socket; the peer saw us at our server-reflexive address.
  const r = result(cand('prflx', '192.0.2.10', 62823), cand('srflx', '198.51.100.70', 40259));
  assert.equal(pathKindOf(r, true), 'relay');
});

test('outside the relay technique a prflx or srflx pair is direct, a host pair lan, a relayed end relay', () => {
  assert.equal(pathKindOf(result(cand('prflx', '203.0.113.70', 5000), null)), 'direct');
  assert.equal(pathKindOf(result(cand('srflx', '203.0.113.70', 5000), cand('srflx', '198.51.100.70', 6000))), 'direct');
  assert.equal(pathKindOf(result(cand('host', '10.1.0.11', 5000), cand('host', '10.1.0.10', 6000))), 'lan');
  assert.equal(pathKindOf(result(cand('relay', '192.0.2.10', 5000), null)), 'relay');
  assert.equal(pathKindOf(result(cand('prflx', '203.0.113.70', 5000), cand('relay', '192.0.2.70', 6000))), 'relay');
});
