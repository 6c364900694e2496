import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type LabProcess } from '../../src/lab/index.js';

// TURN fallback in the NAT lab: peers behind NATs that defeat hole punching (symmetric-random on both sides)
// connect through natpunch's TURN server (STUN + TURN on one port, in the lab's "server" namespace, 192.0.2.10),
// still authenticated and encrypted end to end; with cone NATs the direct path wins and the relay is released.
const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

const PORT = 3478;
const SIZE = 1024 * 1024;
type Msg = Record<string, unknown>;
interface Result {
  type: 'result' | 'error';
  sentHash?: string;
  gotHash?: string;
  bytes?: number;
  code?: string;
  message?: string;
  path?: { kind: string; remote: { address: string; port: number }; remoteType: string | null };
}

describe('TURN relay fallback in the NAT lab', { skip }, () => {
  let lab: Lab;
  let server: LabProcess;
  const peers: Record<string, LabProcess> = {};
  const keys: Record<string, string> = {};

  before(async () => {
    lab = await Lab.up();
    server = lab.node('server', new URL('./fixtures/turn-server.ts', import.meta.url).pathname, [
      lab.addr('server'),
      String(PORT),
      'peer:secret',
    ]);
    await server.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
    for (const host of ['a', 'b'])
      peers[host] = lab.node(host, new URL('./fixtures/relay-peer.ts', import.meta.url).pathname);
    for (const host of ['a', 'b']) {
      const ready = (await peers[host]!.next((m) => m.type === 'ready', { timeoutMs: 20_000 })) as Msg;
      keys[host] = ready.publicKey as string;
    }
  });

  after(async () => {
    await lab?.down();
  });

  /** `relayB`: the listener relays too; `tcp`: both reach the TURN server over TCP (their UDP is blocked). */
  async function trial(opts: { relayB?: boolean; tcp?: boolean } = {}): Promise<[Result, Result]> {
    const id = randomBytes(4).toString('hex');
    const stun = { host: lab.addr('server'), port: PORT };
    const relay = {
      server: { address: lab.addr('server'), port: PORT },
      username: 'peer',
      password: 'secret',
      ...(opts.tcp ? { tcp: true } : {}),
    };
    peers.a!.send({ cmd: 'prepare', trial: id, stun, relay });
    peers.b!.send({ cmd: 'prepare', trial: id, stun, ...(opts.relayB ? { relay } : {}) });
    const [ca, cb] = await Promise.all(
      ['a', 'b'].map(
        (h) => peers[h]!.next((m) => m.type === 'candidates' && m.trial === id, { timeoutMs: 15_000 }) as Promise<Msg>,
      ),
    );
    const connectionId = randomBytes(16).toString('hex');
    const common = { cmd: 'go', trial: id, connectionId, size: SIZE };
    peers.b!.send({ ...common, role: 'listen', peerKey: keys.a, candidates: ca!.candidates });
    peers.a!.send({ ...common, role: 'connect', peerKey: keys.b, candidates: cb!.candidates });
    const done = (m: Msg) => (m.type === 'result' || m.type === 'error') && m.trial === id;
    return (await Promise.all([
      peers.a!.next(done, { timeoutMs: 60_000 }),
      peers.b!.next(done, { timeoutMs: 60_000 }),
    ])) as unknown as [Result, Result];
  }

  function assertTransfer([ra, rb]: [Result, Result]): void {
    assert.equal(ra.type, 'result', `connecting side: ${ra.code} ${ra.message}`);
    assert.equal(rb.type, 'result', `listening side: ${rb.code} ${rb.message}`);
    assert.equal(ra.bytes, SIZE);
    assert.equal(ra.gotHash, rb.sentHash, 'listener → connector data intact');
    assert.equal(rb.gotHash, ra.sentHash, 'connector → listener data intact');
  }

  test('symmetric-random NATs on both sides: the session runs through the relay, data hashed both ways', async () => {
    await lab.setNat('natA', 'symmetric-random');
    await lab.setNat('natB', 'symmetric-random');
    const r = await trial();
    assertTransfer(r);
    assert.equal(r[0].path!.kind, 'relay');
    assert.equal(r[1].path!.kind, 'relay');
    assert.equal(r[1].path!.remote.address, lab.addr('server'), 'the listener talks to the relayed address');
  });

  test('UDP blocked on both sides: both relay over TCP to the TURN server, relay to relay, data hashed both ways', async () => {
    await lab.setNat('natA', 'udp-blocked');
    await lab.setNat('natB', 'udp-blocked');
    const r = await trial({ relayB: true, tcp: true });
    assertTransfer(r);
    assert.equal(r[0].path!.kind, 'relay');
    assert.equal(r[1].path!.kind, 'relay');
  });

  test('relayed session upgrades to direct when the NATs become port-restricted cones at run time; transfer goes on', async () => {
    await lab.setNat('natA', 'symmetric-random');
    await lab.setNat('natB', 'symmetric-random');
    const id = randomBytes(4).toString('hex');
    const stun = { host: lab.addr('server'), port: PORT };
    peers.a!.send({
      cmd: 'prepare',
      trial: id,
      stun,
      relay: { server: { address: lab.addr('server'), port: PORT }, username: 'peer', password: 'secret' },
    });
    peers.b!.send({ cmd: 'prepare', trial: id, stun });
    const [ca, cb] = await Promise.all(
      ['a', 'b'].map(
        (h) => peers[h]!.next((m) => m.type === 'candidates' && m.trial === id, { timeoutMs: 15_000 }) as Promise<Msg>,
      ),
    );
    const connectionId = randomBytes(16).toString('hex');
    const common = { cmd: 'go', trial: id, connectionId, size: 0, upgrade: true };
    peers.b!.send({ ...common, role: 'listen', peerKey: keys.a, candidates: ca!.candidates });
    peers.a!.send({ ...common, role: 'connect', peerKey: keys.b, candidates: cb!.candidates });
    const ended = (m: Msg) => (m.type === 'connected' || m.type === 'error') && m.trial === id;
    const up = (await Promise.all([
      peers.a!.next(ended, { timeoutMs: 40_000 }),
      peers.b!.next(ended, { timeoutMs: 40_000 }),
    ])) as Msg[];
    assert.deepEqual(
      up.map((m) => [m.type, m.kind]),
      [
        ['connected', 'relay'],
        ['connected', 'relay'],
      ],
      JSON.stringify(up),
    );
    // The direct path opens while data flows over the relay (setNat flushes the routers' conntrack tables).
    await new Promise((r) => setTimeout(r, 1_500));
    await lab.setNat('natA', 'port-restricted-cone');
    await lab.setNat('natB', 'port-restricted-cone');
    const done = (m: Msg) => (m.type === 'result' || m.type === 'error') && m.trial === id;
    const [ra, rb] = (await Promise.all([
      peers.a!.next(done, { timeoutMs: 70_000 }),
      peers.b!.next(done, { timeoutMs: 70_000 }),
    ])) as unknown as [Result & Msg, Result & Msg];
    assert.equal(ra.type, 'result', `connecting side: ${ra.code} ${ra.message}`);
    assert.equal(rb.type, 'result', `listening side: ${rb.code} ${rb.message}`);
    assert.equal(ra.gotHash, rb.sentHash, 'listener → connector data intact');
    assert.equal(rb.gotHash, ra.sentHash, 'connector → listener data intact');
    assert.ok(
      (ra.gotBeforeDirect as number) > 0 && (rb.gotBeforeDirect as number) > 0,
      'data flowed over the relay first',
    );
    assert.ok(
      (ra.bytes as number) > (ra.gotBeforeDirect as number) && (rb.bytes as number) > (rb.gotBeforeDirect as number),
      'and went on over the direct path',
    );
    assert.equal(ra.path!.kind, 'direct', 'the connector moved to a direct path');
    assert.equal(rb.path!.kind, 'direct', 'the listener moved to a direct path');
    assert.equal(ra.path!.remote.address, lab.publicAddr('natB'));
    assert.equal(rb.path!.remote.address, lab.publicAddr('natA'));
    assert.equal(ra.relayReleased, true, 'the relay allocation is released after the idle period');
  });

  test('port-restricted cones on both sides: the direct path wins over the configured relay', async () => {
    await lab.setNat('natA', 'port-restricted-cone');
    await lab.setNat('natB', 'port-restricted-cone');
    const r = await trial();
    assertTransfer(r);
    assert.equal(r[0].path!.kind, 'direct');
    assert.equal(r[0].path!.remote.address, lab.publicAddr('natB'));
  });
});
