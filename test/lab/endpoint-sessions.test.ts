/**
 * One Endpoint holds many sessions over its one UDP socket (issue 16): in the NAT lab, an Endpoint behind natA
 * ("hub", through `natpunch serve` with no flags) accepts 5 sessions from each of 10 peers behind natB (10 keys,
 * each its own Endpoint), all open at once: ≥ 50 live sessions to ≥ 10 different peers, every one on the hub's
 * single UDP socket, data echoed over each.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason } from '../../src/lab/index.js';

const CLI = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
const PEER = fileURLToPath(new URL('./fixtures/many-sessions-peer.ts', import.meta.url));
const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

describe('one Endpoint, many sessions, one socket', { skip }, () => {
  let lab: Lab;
  before(async () => {
    lab = await Lab.up();
    // The 10 peers sit behind one NAT address and open 50 sessions at once: the rendezvous' per-address message
    // limit (20/s, burst 40) would silence some of their CONNECTs, which is rendezvous policy, not what this test is
    // about, so the server allows that address more.
    const serve = lab.node('server', CLI, ['serve', '--json', '--rate-limit', '200', '--rate-burst', '400']);
    await serve.next((m) => m.event === 'listening', { timeoutMs: 30_000 });
  });
  after(async () => {
    await lab?.down();
  });

  test("≥ 50 concurrent sessions to ≥ 10 peers over the hub's one UDP socket, data both ways on each", async () => {
    const rv = `${lab.addr('server')}:3478`;
    const hub = lab.node('a', PEER, ['hub', rv]);
    const ready = await hub.next((m) => m.type === 'ready', { timeoutMs: 30_000 });
    const peers = lab.node('b', PEER, ['peers', rv, '10', '5']);
    const done = await peers.next((m) => m.type === 'connected', { timeoutMs: 240_000 });
    assert.equal(done.sessions, 50, JSON.stringify(done));
    assert.equal(done.echoed, 50, JSON.stringify(done));
    hub.send({ cmd: 'report' });
    const report = await hub.next((m) => m.type === 'report', { timeoutMs: 10_000 });
    assert.ok(Number(report.sessions) >= 50, JSON.stringify(report));
    assert.ok(Number(report.peers) >= 10, JSON.stringify(report));
    assert.deepEqual(report.localPorts, [ready.port], 'every session on the one socket');
    assert.deepEqual(report.transports, ['udp']);
  });
});
