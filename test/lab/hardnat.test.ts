import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type LabProcess, type NatType } from '../../src/lab/index.js';

// Hard NATs in the lab: port prediction through sequential symmetric NATs and birthday punching through random ones.
// Peers run test/lab/fixtures/hardnat-peer.ts; the test process does the signalling (adverts, connection id). Each
// trial: measure the NAT against two STUN ports, re-observe, exchange adverts, hard punch, then the normal
// authenticated checks + Noise session over the winning socket, 64 KiB hashed each way.
// NATPUNCH_HARDNAT_TRIALS (default 3) sets the trials per pair; the bench (bench/hardnat.bench.ts) runs 20.
const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

const STUN_PORTS = [3478, 3479];
const SIZE = 64 * 1024;
const TRIALS = Number(process.env.NATPUNCH_HARDNAT_TRIALS ?? 3);
const CONES: NatType[] = ['full-cone', 'restricted-cone', 'port-restricted-cone'];

type Msg = Record<string, unknown>;
interface Advert {
  kind: string;
  delta: number | null;
  address: string;
  ports: number[];
}

describe('hard NATs in the lab (prediction, birthday)', { skip }, () => {
  let lab: Lab;
  const peers: Record<string, LabProcess> = {};
  const keys: Record<string, string> = {};

  before(async () => {
    lab = await Lab.up();
    for (const port of STUN_PORTS) {
      const stun = lab.node('server', new URL('./fixtures/stun-server.ts', import.meta.url).pathname, [String(port)]);
      await stun.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
    }
    for (const host of ['a', 'b'])
      peers[host] = lab.node(host, new URL('./fixtures/hardnat-peer.ts', import.meta.url).pathname);
    for (const host of ['a', 'b'])
      keys[host] = ((await peers[host]!.next((m) => m.type === 'ready', { timeoutMs: 20_000 })) as Msg)
        .publicKey as string;
    for (const link of ['a', 'natA', 'natB', 'b']) await lab.setLink(link, { delayMs: 10 });
  });

  after(async () => {
    await lab?.down();
  });

  async function adverts(id: string): Promise<Record<string, Advert>> {
    const stun = STUN_PORTS.map((port) => ({ host: lab.addr('server'), port }));
    for (const h of ['a', 'b']) peers[h]!.send({ cmd: 'prepare', trial: id, stun });
    const got = await Promise.all(
      ['a', 'b'].map(
        (h) =>
          peers[h]!.next((m) => (m.type === 'advert' || m.type === 'error') && m.trial === id, {
            timeoutMs: 20_000,
          }) as Promise<Msg>,
      ),
    );
    for (const g of got) assert.equal(g.type, 'advert', `prepare failed: ${String(g.message)}`);
    return { a: got[0]!.advert as Advert, b: got[1]!.advert as Advert };
  }

  /** Switches the NATs, then lets the previous trial's sessions finish closing: after the conntrack flush their last
   *  packets would open new flows, and every new flow takes a port of a sequential NAT (shifting the prediction). */
  async function setNats(natA: NatType, natB: NatType): Promise<void> {
    await new Promise((r) => setTimeout(r, 800));
    await lab.setNat('natA', natA);
    await lab.setNat('natB', natB);
  }

  /** One hard-punched session: a connects, b listens. */
  async function trial(extra: Msg = {}): Promise<{ ra: Msg; rb: Msg; ads: Record<string, Advert> }> {
    const id = randomBytes(4).toString('hex');
    const ads = await adverts(id);
    const common = { cmd: 'go', trial: id, connectionId: randomBytes(16).toString('hex'), size: SIZE, ...extra };
    peers.b!.send({ ...common, role: 'listen', peerKey: keys.a, local: ads.b, peer: ads.a });
    peers.a!.send({ ...common, role: 'connect', peerKey: keys.b, local: ads.a, peer: ads.b });
    const done = (m: Msg) => (m.type === 'result' || m.type === 'error') && m.trial === id;
    const [ra, rb] = await Promise.all([
      peers.a!.next(done, { timeoutMs: 60_000 }),
      peers.b!.next(done, { timeoutMs: 60_000 }),
    ]);
    return { ra: ra as Msg, rb: rb as Msg, ads };
  }

  function ok(r: { ra: Msg; rb: Msg }): boolean {
    const { ra, rb } = r;
    return (
      ra.type === 'result' &&
      rb.type === 'result' &&
      ra.gotHash === rb.sentHash &&
      rb.gotHash === ra.sentHash &&
      (ra.path as Msg).kind === 'direct'
    );
  }

  function assertDirect(r: { ra: Msg; rb: Msg }): void {
    const why = `${JSON.stringify(r.ra)} / ${JSON.stringify(r.rb)}`;
    assert.equal(r.ra.type, 'result', `connecting side: ${why}`);
    assert.equal(r.rb.type, 'result', `listening side: ${why}`);
    assert.ok(ok(r), 'direct path, data intact both ways');
  }

  const pairs: Array<[NatType, NatType]> = [
    ...CONES.map((c) => ['symmetric-sequential', c] as [NatType, NatType]),
    ['symmetric-sequential', 'symmetric-sequential'],
  ];
  for (const [natA, natB] of pairs) {
    test(`${natA} → ${natB}: port prediction gives a direct path (${TRIALS} trials)`, async () => {
      await setNats(natA, natB);
      for (let i = 0; i < TRIALS; i++) {
        const r = await trial();
        if (!ok(r)) console.log(`# adverts ${JSON.stringify(r.ads)}`);
        assert.equal(r.ads.a!.kind, 'sequential');
        assert.equal(r.ads.a!.delta, 1);
        assert.equal(r.ads.b!.kind, natB === 'symmetric-sequential' ? 'sequential' : 'cone');
        assertDirect(r);
        assert.equal(r.ra.strategy, 'predict');
        // The path runs to the peer's NAT: its srflx port (cone) or one of its predicted ports (sequential).
        const remote = (r.ra.path as Msg).remote as { address: string; port: number };
        assert.equal(remote.address, lab.publicAddr('natB'));
        assert.ok(r.ads.b!.ports.includes(remote.port), `remote port ${remote.port} in ${r.ads.b!.ports.join(',')}`);
      }
    });
  }

  for (const cone of CONES) {
    test(`symmetric-random ↔ ${cone}: birthday punching, direct in all but 1 of 20 (scaled: ${TRIALS} trials)`, async () => {
      await setNats('symmetric-random', cone);
      let good = 0;
      const times: number[] = [];
      for (let i = 0; i < TRIALS; i++) {
        const r = await trial();
        if (ok(r)) {
          good++;
          times.push(Math.round(r.ra.punchMs as number));
          assert.equal(r.ads.a!.kind, 'random');
          assert.equal(r.ra.strategy, 'birthday-sockets');
          assert.equal(r.rb.strategy, 'birthday-spray');
          assert.equal(r.ra.winnerIsMain, false, 'a birthday socket carries the session');
          assert.equal(((r.rb.path as Msg).remote as Msg).address, lab.publicAddr('natA'));
        } else console.log(`# trial failed: ${JSON.stringify(r.ra)} ${JSON.stringify(r.rb)}`);
      }
      console.log(`# ${cone}: ${good}/${TRIALS} direct; punch ms ${times.join(' ')}`);
      assert.ok(good >= TRIALS - Math.floor(TRIALS / 20), `${good} of ${TRIALS} direct`);
    });
  }

  test('port-restricted cone → symmetric-random: the random side listening works too', async () => {
    await setNats('port-restricted-cone', 'symmetric-random');
    for (let i = 0; i < Math.min(2, TRIALS); i++) {
      const r = await trial();
      assertDirect(r);
      assert.equal(r.ra.strategy, 'birthday-spray');
      assert.equal(r.rb.strategy, 'birthday-sockets');
      assert.equal(r.rb.winnerIsMain, false);
      assert.equal(((r.ra.path as Msg).remote as Msg).address, lab.publicAddr('natB'));
    }
  });

  test('symmetric-random ↔ symmetric-random without a budget: refused at once with a clear error', async () => {
    await setNats('symmetric-random', 'symmetric-random');
    const r = await trial();
    for (const x of [r.ra, r.rb]) {
      assert.equal(x.type, 'error');
      assert.equal(x.code, 'PUNCH_FAILED');
      assert.match(String(x.message), /opt-in double-random budget/);
      assert.equal(x.probesSent, 0, 'nothing was sent');
    }
  });
});
