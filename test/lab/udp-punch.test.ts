import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type LabProcess, type NatType } from '../../src/lab/index.js';

// UDP hole punching between hosts behind the lab's NATs. The test process plays the rendezvous (direct mode): it
// collects each peer's candidates (host + srflx from a STUN server in the lab, learned on the punching socket) and
// hands each side the other's; then connect()/listen() punch, authenticate and move a few MiB both ways.
const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

const STUN_PORT = 3478;
const SIZE = 2 * 1024 * 1024;
const TRIALS = Number(process.env.NATPUNCH_LAB_TRIALS ?? 2);
const CONES: NatType[] = ['full-cone', 'restricted-cone', 'port-restricted-cone'];

type Msg = Record<string, unknown>;
interface Result {
  type: 'result' | 'error';
  trial: string;
  sentHash?: string;
  gotHash?: string;
  bytes?: number;
  code?: string;
  message?: string;
  path?: { kind: string; remote: { address: string; port: number }; remoteType: string | null; rttMs: number | null };
}

describe('UDP hole punching in the NAT lab', { skip }, () => {
  let lab: Lab;
  const peers: Record<string, LabProcess> = {};
  const keys: Record<string, string> = {};
  let lastCandidates: Record<string, Array<{ type: string; port: number }>> = {};

  before(async () => {
    lab = await Lab.up();
    const stun = lab.node('server', new URL('./fixtures/stun-server.ts', import.meta.url).pathname, [
      String(STUN_PORT),
    ]);
    await stun.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
    for (const host of ['a', 'a2', 'b']) {
      peers[host] = lab.node(host, new URL('./fixtures/punch-peer.ts', import.meta.url).pathname);
    }
    for (const host of ['a', 'a2', 'b']) {
      const ready = (await peers[host]!.next((m) => m.type === 'ready', { timeoutMs: 20_000 })) as Msg;
      keys[host] = ready.publicKey as string;
    }
  });

  after(async () => {
    await lab?.down();
  });

  /** One connection from `from` (connect) to `to` (listen); resolves with both sides' reports. */
  async function trial(
    from: string,
    to: string,
    opts: {
      hostCandidates?: boolean;
      checkTimeoutMs?: number;
      size?: number;
      replySize?: number;
      during?: () => Promise<void>;
    } = {},
  ): Promise<[Result, Result]> {
    const id = randomBytes(4).toString('hex');
    const stun = { host: lab.addr('server'), port: STUN_PORT };
    for (const h of [from, to])
      peers[h]!.send({ cmd: 'prepare', trial: id, stun, hostCandidates: opts.hostCandidates ?? true });
    const cands = await Promise.all(
      [from, to].map(
        (h) => peers[h]!.next((m) => m.type === 'candidates' && m.trial === id, { timeoutMs: 15_000 }) as Promise<Msg>,
      ),
    );
    lastCandidates = {
      [from]: cands[0]!.candidates as Array<{ type: string; port: number }>,
      [to]: cands[1]!.candidates as Array<{ type: string; port: number }>,
    };
    const connectionId = randomBytes(16).toString('hex');
    const common = {
      cmd: 'go',
      trial: id,
      connectionId,
      size: opts.size ?? SIZE,
      ...(opts.replySize !== undefined ? { replySize: opts.replySize } : {}),
      ...(opts.checkTimeoutMs ? { checkTimeoutMs: opts.checkTimeoutMs } : {}),
    };
    peers[to]!.send({ ...common, role: 'listen', peerKey: keys[from], candidates: cands[0]!.candidates });
    peers[from]!.send({ ...common, role: 'connect', peerKey: keys[to], candidates: cands[1]!.candidates });
    const done = (m: Msg) => (m.type === 'result' || m.type === 'error') && m.trial === id;
    const [ra, rb] = await Promise.all([
      peers[from]!.next(done, { timeoutMs: 60_000 }) as unknown as Promise<Result>,
      peers[to]!.next(done, { timeoutMs: 60_000 }) as unknown as Promise<Result>,
      opts.during?.(),
    ]);
    return [ra, rb];
  }

  function assertTransfer([ra, rb]: [Result, Result], size = SIZE, replySize = size): void {
    assert.equal(ra.type, 'result', `connecting side: ${ra.code} ${ra.message}`);
    assert.equal(rb.type, 'result', `listening side: ${rb.code} ${rb.message}`);
    assert.equal(ra.bytes, replySize);
    assert.equal(rb.bytes, size);
    assert.equal(ra.gotHash, rb.sentHash, 'listener → connector data intact');
    assert.equal(rb.gotHash, ra.sentHash, 'connector → listener data intact');
  }

  for (const natA of CONES) {
    for (const natB of CONES) {
      test(`direct path from behind ${natA} to behind ${natB}, data hashed both ways`, async () => {
        await lab.setNat('natA', natA);
        await lab.setNat('natB', natB);
        for (let i = 0; i < TRIALS; i++) {
          const r = await trial('a', 'b');
          assertTransfer(r);
          assert.equal(r[0].path!.kind, 'direct');
          assert.equal(r[0].path!.remote.address, lab.publicAddr('natB'));
        }
      });
    }
  }

  test('cone vs symmetric works when the cone side filters nothing (full cone ← symmetric)', async () => {
    await lab.setNat('natA', 'full-cone');
    await lab.setNat('natB', 'symmetric-random');
    assertTransfer(await trial('b', 'a'));
  });

  test('same-LAN peers use their private addresses', async () => {
    await lab.setNat('natA', 'port-restricted-cone');
    const r = await trial('a', 'a2');
    assertTransfer(r);
    assert.equal(r[0].path!.kind, 'lan');
    assert.equal(r[0].path!.remote.address, lab.addr('a2'));
  });

  test('peers behind the same NAT without host candidates meet through hairpinning', async () => {
    await lab.setNat('natA', { type: 'port-restricted-cone', hairpin: true });
    const r = await trial('a', 'a2', { hostCandidates: false });
    assertTransfer(r);
    assert.equal(r[0].path!.remote.address, lab.publicAddr('natA'));
  });

  test('5% loss on both NAT uplinks: still punched, data intact', async () => {
    await lab.setNat('natA', 'port-restricted-cone');
    await lab.setNat('natB', 'port-restricted-cone');
    await lab.setLink('natA', { lossPct: 5 });
    await lab.setLink('natB', { lossPct: 5 });
    try {
      for (let i = 0; i < Math.max(2, TRIALS); i++) assertTransfer(await trial('a', 'b'));
    } finally {
      await lab.setLink('natA', { lossPct: 0 });
      await lab.setLink('natB', { lossPct: 0 });
    }
  });

  test('NAT rebinding mid-transfer (conntrack flushed on the router): the transfer completes', async () => {
    await lab.setNat('natA', 'port-restricted-cone');
    await lab.setNat('natB', 'port-restricted-cone');
    const size = 8 * 1024 * 1024;
    await lab.setLink('natB', { rateMbit: 40 }); // ~2 s per direction: the flush lands mid-transfer
    try {
      const r = await trial('a', 'b', {
        size,
        during: async () => {
          await new Promise((res) => setTimeout(res, 1000));
          await lab.setNat('natB', 'port-restricted-cone'); // flushes natB's conntrack: every mapping is gone
        },
      });
      assertTransfer(r, size);
    } finally {
      await lab.setLink('natB', { rateMbit: 0 });
    }
  });

  test('NAT rebinding under a one-way transfer: the receiver re-opens its NAT and the transfer completes', async () => {
    await lab.setNat('natA', 'port-restricted-cone');
    await lab.setNat('natB', 'port-restricted-cone');
    const size = 8 * 1024 * 1024;
    await lab.setLink('natB', { rateMbit: 40 });
    try {
      // b only receives: after the flush nothing leaves b's NAT unless the session sends on its own.
      const r = await trial('a', 'b', {
        size,
        replySize: 0,
        during: async () => {
          await new Promise((res) => setTimeout(res, 1000));
          // Cut natB's uplink until nothing is queued or in flight, flush the mappings, restore the link: now only
          // a packet sent by b can re-open its NAT.
          await lab.setLink('natB', { lossPct: 99.99 }); // (the lab's shaper takes at most 99.99)
          await new Promise((res) => setTimeout(res, 1500));
          await lab.setNat('natB', 'port-restricted-cone');
          await lab.setLink('natB', { lossPct: 0 });
        },
      });
      assertTransfer(r, size, 0);
    } finally {
      await lab.setLink('natB', { rateMbit: 0, lossPct: 0 });
    }
  });

  test('NAT rebinding to a new port mid-transfer: the session follows the new mapping and the transfer completes', async () => {
    // natB allocates a fresh external port after the flush (no port preservation); natA filters by address only,
    // so b's next packets (its silence probes) reach a from the new port and a moves the session there.
    await lab.setNat('natA', 'restricted-cone');
    await lab.setNat('natB', { type: 'port-restricted-cone', portPreservation: false });
    const size = 8 * 1024 * 1024;
    await lab.setLink('natB', { rateMbit: 40 });
    try {
      const r = await trial('a', 'b', {
        size,
        during: async () => {
          await new Promise((res) => setTimeout(res, 1000));
          await lab.setLink('natB', { lossPct: 99.99 });
          await new Promise((res) => setTimeout(res, 1000));
          await lab.setNat('natB', { type: 'port-restricted-cone', portPreservation: false });
          await lab.setLink('natB', { lossPct: 0 });
        },
      });
      assertTransfer(r, size);
      const before = lastCandidates.b!.find((c) => c.type === 'srflx')!.port;
      assert.notEqual(r[0].path!.remote.port, before, "the session now uses natB's new port");
    } finally {
      await lab.setLink('natB', { rateMbit: 0, lossPct: 0 });
    }
  });

  test('symmetric on both sides fails fast with PUNCH_FAILED and the candidates tried', async () => {
    await lab.setNat('natA', 'symmetric-random');
    await lab.setNat('natB', 'symmetric-random');
    const [ra, rb] = await trial('a', 'b', { checkTimeoutMs: 3000 });
    assert.equal(ra.type, 'error');
    assert.equal(ra.code, 'PUNCH_FAILED', ra.message);
    assert.match(ra.message!, new RegExp(lab.publicAddr('natB').replace(/\./g, '\\.')));
    assert.equal(rb.type, 'error');
  });
});

describe('connect()/listen() through the real rendezvous in the NAT lab', { skip }, () => {
  let lab: Lab;
  const peers: Record<string, LabProcess> = {};
  const RV_PORT = 3478;

  before(async () => {
    lab = await Lab.up();
    const serve = lab.node('server', new URL('./fixtures/serve-node.ts', import.meta.url).pathname, [String(RV_PORT)]);
    await serve.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
    for (const host of ['a', 'a2', 'b'])
      peers[host] = lab.node(host, new URL('./fixtures/punch-peer.ts', import.meta.url).pathname);
    for (const host of ['a', 'a2', 'b']) await peers[host]!.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  });

  after(async () => {
    await lab?.down();
  });

  async function rvTrial(from: string, to: string): Promise<[Result, Result]> {
    const id = randomBytes(4).toString('hex');
    const name = `peer-${id}`;
    const server = `${lab.addr('server')}:${RV_PORT}`;
    peers[to]!.send({ cmd: 'rv', trial: id, role: 'listen', server, name, size: SIZE });
    await peers[to]!.next((m) => (m.type === 'listening' || m.type === 'error') && m.trial === id, {
      timeoutMs: 15_000,
    });
    peers[from]!.send({ cmd: 'rv', trial: id, role: 'connect', server, name, size: SIZE });
    const done = (m: Msg) => (m.type === 'result' || m.type === 'error') && m.trial === id;
    const [ra, rb] = await Promise.all([
      peers[from]!.next(done, { timeoutMs: 60_000 }) as unknown as Promise<Result>,
      peers[to]!.next(done, { timeoutMs: 60_000 }) as unknown as Promise<Result>,
    ]);
    return [ra, rb];
  }

  function ok([ra, rb]: [Result, Result]): void {
    assert.equal(ra.type, 'result', `connecting side: ${ra.code} ${ra.message}`);
    assert.equal(rb.type, 'result', `listening side: ${rb.code} ${rb.message}`);
    assert.equal(ra.gotHash, rb.sentHash);
    assert.equal(rb.gotHash, ra.sentHash);
  }

  test('by name across two port-restricted cone NATs: direct path, data hashed both ways', async () => {
    await lab.setNat('natA', 'port-restricted-cone');
    await lab.setNat('natB', 'port-restricted-cone');
    const r = await rvTrial('a', 'b');
    ok(r);
    assert.equal(r[0].path!.kind, 'direct');
    assert.equal(r[0].path!.remote.address, lab.publicAddr('natB'));
  });

  test('by name, both directions across full cone ↔ restricted cone', async () => {
    await lab.setNat('natA', 'full-cone');
    await lab.setNat('natB', 'restricted-cone');
    ok(await rvTrial('a', 'b'));
    ok(await rvTrial('b', 'a'));
  });

  test('by name behind the same NAT: the LAN path', async () => {
    await lab.setNat('natA', 'port-restricted-cone');
    const r = await rvTrial('a', 'a2');
    ok(r);
    assert.equal(r[0].path!.kind, 'lan');
    assert.equal(r[0].path!.remote.address, lab.addr('a2'));
  });
});
