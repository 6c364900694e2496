// A cold connect() (issue 17): the CONNECT is the first datagram it sends. Registration (relay credentials) and the
// NAT measurement's STUN Bindings go out behind it, on the same socket, through serve's real rendezvous on loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../../src/server/serve.js';
import { connect, listen } from '../../src/natpunch.js';
import { UdxEndpoint } from '../../src/net/udx.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { MessageType } from '../../src/wire/rendezvous.js';
import { ikTechnique, needsNewIntroduction } from '../../src/endpoint/attempt.js';
import type { Plan, PlanStep } from '../../src/traversal/planner.js';
import { candidatePriority } from '../../src/traversal/candidate.js';
import { advertToCandidates } from '../../src/traversal/hardwire.js';
import { randomBytes } from 'node:crypto';

const LOOP = { address: '127.0.0.1' };

/** What a datagram is, by its first bytes: a rendezvous message type (RFC 7983-style first byte 0xF0), or STUN. */
function kindOf(buf: Uint8Array): string {
  if (buf[0] === 0xf0) {
    const name = Object.entries(MessageType).find(([, v]) => v === buf[2])?.[0];
    return `rendezvous ${name ?? buf[2]}`;
  }
  if (buf[0]! < 4 && buf.length >= 20) return 'stun'; // RFC 8489 §5: the two top bits are zero
  return 'other';
}

test('a cold connect() sends its CONNECT first; registration and STUN follow on the same socket', async () => {
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'] });
  const rendezvous = `127.0.0.1:${h.udp[0]!.port}`;
  const listener = await listen({ keyPair: generateKeyPair(), name: 'cold-bob', rendezvous, bind: LOOP });
  const socket = await UdxEndpoint.bind(LOOP);
  const sent: string[] = [];
  const send = socket.send.bind(socket);
  socket.send = (msg, port, address, ttl) => {
    sent.push(kindOf(msg));
    send(msg, port, address, ttl);
  };
  try {
    const session = await connect({
      keyPair: generateKeyPair(),
      rendezvous,
      to: 'cold-bob',
      endpoint: socket,
      transport: 'udp',
      timeoutMs: 10_000,
    });
    await session.close();
    assert.equal(sent[0], 'rendezvous CONNECT', `first datagram: ${sent.join(', ')}`);
    // Relay 'auto' registers for credentials, and the default NAT measurement asks STUN: both after the CONNECT.
    assert.ok(sent.indexOf('rendezvous REGISTER') > 0, `a registration behind it: ${sent.join(', ')}`);
    assert.ok(sent.indexOf('stun') > 0, `STUN behind it: ${sent.join(', ')}`);
  } finally {
    await listener.close();
    await socket.close();
    await h.close();
  }
});

const step = (technique: PlanStep['technique']): PlanStep => ({
  technique,
  holdMs: 0,
  preference: 0,
  graceMs: 0,
  why: '',
});
const plan = (...t: Array<PlanStep['technique']>): Plan => ({ steps: t.map(step), skipped: [] });

test('introduced again only for a hard punch the first plan lacks, or for any change once the first attempt failed', () => {
  assert.equal(needsNewIntroduction(plan('udp-checks'), plan('udp-checks'), false), false);
  assert.equal(needsNewIntroduction(plan('udp-checks', 'relay'), plan('udp-checks', 'birthday', 'relay'), false), true);
  assert.equal(needsNewIntroduction(plan('udp-checks'), plan('predict'), false), true);
  assert.equal(needsNewIntroduction(plan('udp-checks'), plan('udp-checks', 'tcp'), false), false, 'TCP alone: no');
  assert.equal(needsNewIntroduction(plan('udp-checks'), plan('udp-checks', 'tcp'), true), true);
  assert.equal(needsNewIntroduction(plan(), plan('relay'), true), true);
  const relayAt = (holdMs: number): Plan => ({ steps: [{ ...step('relay'), holdMs }], skipped: [] });
  const checksThenRelay: Plan = { steps: [step('udp-checks'), { ...step('relay'), holdMs: 1500 }], skipped: [] };
  assert.equal(needsNewIntroduction(checksThenRelay, relayAt(0), false), true, 'no direct path: relay at once');
  assert.equal(needsNewIntroduction(relayAt(0), relayAt(0), false), false);
});

test('the initiator carries Noise IK on one technique: the birthday when it starts at once, else the one at 0', () => {
  const at = (technique: PlanStep['technique'], holdMs: number): PlanStep => ({ ...step(technique), holdMs });
  const p = (...steps: PlanStep[]): Plan => ({ steps, skipped: [] });
  assert.equal(ikTechnique(p(at('udp-checks', 0), at('birthday', 0), at('relay', 4000))), 'birthday');
  assert.equal(ikTechnique(p(at('udp-checks', 0), at('birthday', 300))), 'udp-checks');
  assert.equal(ikTechnique(p(at('predict', 0), at('tcp', 2500))), 'predict');
  assert.equal(ikTechnique(p(at('mapped', 0))), 'mapped');
  assert.equal(ikTechnique(p(at('relay', 0))), null);
});

test("a connector introduced again with its NAT measured stops the listener's attempt for its unmeasured introduction", async () => {
  const connector = generateKeyPair();
  // Nothing answers at the connector's address: each attempt's checks would run until their timeout.
  const silent = await UdxEndpoint.bind(LOOP);
  const at = { address: '127.0.0.1', port: silent.address().port };
  const listener = await listen({ keyPair: generateKeyPair(), bind: LOOP, checkTimeoutMs: 3_000 });
  const errors: string[] = [];
  listener.on('connection-error', (err: Error) => errors.push(err.message));
  try {
    const srflx = { type: 'srflx' as const, transport: 'udp' as const, ...at, priority: candidatePriority('srflx') };
    const order: string[] = [];
    // A cold connector's first CONNECT: no advert (not measured yet).
    const first = listener
      .acceptOffer({
        connectionId: randomBytes(16),
        role: 'responder',
        peerKey: connector.publicKey,
        candidates: [srflx],
      })
      .then((s) => order.push(`first ${s === null ? 'ended' : 'won'}`));
    // Its second, from the same address, with the advert its measurement produced.
    const advert = advertToCandidates({ kind: 'cone', delta: null, address: at.address, ports: [at.port] }, at);
    const second = listener
      .acceptOffer({
        connectionId: randomBytes(16),
        role: 'responder',
        peerKey: connector.publicKey,
        candidates: advert,
      })
      .then((s) => order.push(`second ${s === null ? 'ended' : 'won'}`));
    await Promise.all([first, second]);
    assert.deepEqual(order, ['first ended', 'second ended'], 'the first stopped at once, the second ran its course');
    assert.equal(errors.length, 1, `only the second attempt is reported: ${errors.join(' | ')}`);
  } finally {
    await listener.close();
    await silent.close();
  }
});
