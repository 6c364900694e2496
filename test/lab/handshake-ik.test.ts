// Noise IK folded into the checks, across real NATs (docs/handshake.md): connect() by name through the real
// rendezvous; the first check that gets through carries message 1 with early data, delivered to the listener with the
// session message 1 opened. The peers are the set-up bench's (bench/setup-peer.ts), so the bench and this test
// drive the same code.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { Lab, labUnavailableReason, type LabProcess } from '../../src/lab/index.js';

const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

const PEER = new URL('../../bench/setup-peer.ts', import.meta.url).pathname;
const SERVE = new URL('./fixtures/serve-node.ts', import.meta.url).pathname;
const PORT = 3478;

type Json = Record<string, unknown>;

describe('Noise IK in the checks, in the NAT lab', { skip }, () => {
  let lab: Lab;
  let pa: LabProcess;
  let pb: LabProcess;
  before(async () => {
    lab = await Lab.up({ nat: { natA: 'port-restricted-cone', natB: 'port-restricted-cone' } });
    // serve: STUN + rendezvous on PORT, STUN on PORT + 1 (hardNat's measurement).
    await lab.node('server', SERVE, [String(PORT)]).next((m) => m.type === 'ready', { timeoutMs: 20_000 });
    pa = lab.node('a', PEER);
    pb = lab.node('b', PEER);
    await pa.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
    await pb.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  });
  after(async () => {
    await lab?.down();
  });

  async function trial(hardNat: boolean): Promise<{ c: Json; r: Json }> {
    const id = randomBytes(4).toString('hex');
    const server = `${lab.addr('server')}:${PORT}`;
    const mine = (type: string) => (m: Json) => m.trial === id && (m.type === type || m.type === 'error');
    pb.send({ cmd: 'np-listen', trial: id, server, name: `b-${id}`, hardNat });
    const l = await pb.next(mine('listening'), { timeoutMs: 20_000 });
    assert.equal(l.type, 'listening', JSON.stringify(l));
    pa.send({ cmd: 'np-connect', trial: id, server, name: `b-${id}`, hardNat });
    const [c, r] = await Promise.all([
      pa.next(mine('connect-result'), { timeoutMs: 40_000 }),
      pb.next(mine('listener-result'), { timeoutMs: 40_000 }),
    ]);
    assert.equal(c.type, 'connect-result', JSON.stringify(c));
    assert.equal(r.type, 'listener-result', JSON.stringify(r));
    return { c, r };
  }

  test("port-restricted ↔ port-restricted: IK on both sides, direct, the listener's first byte is the early data of message 1", async () => {
    const { c, r } = await trial(false);
    assert.equal(c.pattern, 'IK');
    assert.equal(r.pattern, 'IK');
    assert.equal(c.path, 'direct');
    // The listener's first byte was the early data of message 1 (timings belong to bench/setup.bench.ts).
    assert.equal(r.early, true);
  });

  // Port prediction runs alone at the start of its plan, so its checks carry IK; the birthday punch (random NATs)
  // races the plain checks and uses XX there (src/traversal/hard-punch.ts).
  test('port-restricted ↔ symmetric-sequential (hardNat, port prediction): the session over the predicted path runs IK, with early data', async () => {
    await lab.setNat('natB', 'symmetric-sequential');
    try {
      const { c, r } = await trial(true);
      assert.equal(c.pattern, 'IK');
      assert.equal(r.early, true);
      assert.equal(c.path, 'direct');
    } finally {
      await lab.setNat('natB', 'port-restricted-cone');
    }
  });
});
