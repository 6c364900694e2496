/**
 * TCP hole punching across real Linux NATs (the lab: src/lab). Each peer is a child process in its namespace
 * (fixtures/tcp-peer.ts). There is no rendezvous server here: a reflector on the lab's server tells each peer the
 * public endpoint of its TCP connection (as the rendezvous server would), and the test hands each side the other's
 * endpoints.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type NatType } from '../../src/lab/index.js';
import type { LabProcess } from '../../src/lab/proc.js';
import { addonStatus } from '../../src/net/native.js';
import { predictTcpCandidates } from '../../src/traversal/tcp-predict.js';

const FIXTURE = new URL('./fixtures/tcp-peer.ts', import.meta.url).pathname;
const addon = addonStatus();
const skip = labUnavailableReason() || (addon.available ? false : `native addon unavailable: ${addon.reason}`);
const CONES: NatType[] = ['full-cone', 'restricted-cone', 'port-restricted-cone'];
const STEP_MS = 20_000;

interface Mapped {
  localAddress: string;
  localPort: number;
  address: string;
  port: number;
  samples: Array<{ local: number; external: number }>;
}
interface Outcome {
  ok: boolean;
  a: Record<string, unknown>;
  b: Record<string, unknown>;
  aData?: string;
  bData?: string;
}

describe('TCP hole punching in the NAT lab', { skip }, () => {
  let lab: Lab;
  let reflectPort: number;
  const matrix: string[] = [];
  const record = (what: string, o: Outcome) =>
    matrix.push(
      `${what}: ${o.ok ? `ok (${o.a.direction}/${o.b.direction}, ${o.a.attempts}+${o.b.attempts} SYNs, ${o.a.elapsedMs}/${o.b.elapsedMs} ms)` : `FAILED (${String(o.a.message ?? o.b.message)})`}`,
    );

  before(async () => {
    lab = await Lab.up({ doubleNat: true });
    const reflector = lab.node('server', FIXTURE, ['reflect']);
    reflectPort = Number((await reflector.next((m) => m.type === 'ready', { timeoutMs: STEP_MS })).port);
  });
  after(async () => {
    if (matrix.length)
      console.log(`# TCP punch results (a behind natA, b behind natB)\n${matrix.map((l) => `#   ${l}`).join('\n')}`);
    await lab?.down();
  });

  async function startPeer(host: string, samples = 1): Promise<{ proc: LabProcess; mapped: Mapped }> {
    const proc = lab.node(host, FIXTURE, ['peer', host, lab.addr('server'), String(reflectPort), String(samples)]);
    const msg = await proc.next((m) => m.type === 'mapped' || m.type === 'failed', { timeoutMs: STEP_MS });
    if (msg.type !== 'mapped') throw new Error(`${host}: ${JSON.stringify(msg)}`);
    return { proc, mapped: msg as unknown as Mapped };
  }

  /** One punch between hosts `ha` (controlling) and `hb`; `first` starts `gapMs` before the other. */
  async function punch(
    ha: string,
    hb: string,
    opts: {
      first?: 'a' | 'b';
      gapMs?: number;
      listen?: boolean;
      lowTtlA?: number;
      timeoutMs?: number;
      predictA?: boolean;
    } = {},
  ): Promise<Outcome> {
    const [pa, pb] = await Promise.all([startPeer(ha, opts.predictA ? 3 : 1), startPeer(hb)]);
    try {
      // What the rendezvous would hand out: server-reflexive endpoint first, then the host endpoint, then (port
      // prediction) the ports a sequential NAT will give the next flows.
      const candidatesFor = (m: Mapped, predict = false) => [
        { type: 'srflx', address: m.address, port: m.port },
        { type: 'host', address: m.localAddress, port: m.localPort },
        ...(predict ? predictTcpCandidates(m.samples, m).candidates : []),
      ];
      const timeoutMs = opts.timeoutMs ?? 12_000;
      const cmdA = {
        type: 'punch',
        role: 'controlling',
        candidates: candidatesFor(pb.mapped),
        listen: opts.listen,
        lowTtl: opts.lowTtlA,
        timeoutMs,
      };
      const cmdB = {
        type: 'punch',
        role: 'controlled',
        candidates: candidatesFor(pa.mapped, opts.predictA),
        listen: opts.listen,
        timeoutMs,
      };
      const [first, second] =
        opts.first === 'b'
          ? [() => pb.proc.send(cmdB), () => pa.proc.send(cmdA)]
          : [() => pa.proc.send(cmdA), () => pb.proc.send(cmdB)];
      first();
      if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      second();
      const done = (p: LabProcess) =>
        p.next((m) => m.type === 'punched' || m.type === 'failed', { timeoutMs: timeoutMs + STEP_MS });
      const [ra, rb] = await Promise.all([done(pa.proc), done(pb.proc)]);
      if (ra.type !== 'punched' || rb.type !== 'punched') return { ok: false, a: ra, b: rb };
      const data = (p: LabProcess) => p.next((m) => m.type === 'data' || m.type === 'failed', { timeoutMs: STEP_MS });
      const [da, db] = await Promise.all([data(pa.proc), data(pb.proc)]);
      return { ok: true, a: ra, b: rb, aData: String(da.got), bData: String(db.got) };
    } finally {
      await Promise.all([pa.proc.close(), pb.proc.close()]);
    }
  }

  function assertConnected(o: Outcome, ha: string, hb: string): void {
    assert.ok(o.ok, `no connection: ${JSON.stringify(o)}`);
    const la = o.a.local as { port: number };
    const rb = o.b.remote as { address: string; port: number };
    // One TCP connection: B sees A's public endpoint (A's NAT preserved or mapped the port), data both ways.
    assert.equal(rb.address, lab.externalAddr(ha));
    assert.equal(o.aData, `hello from ${hb}`);
    assert.equal(o.bData, `hello from ${ha}`);
    assert.ok(la.port > 0);
  }

  // With a port-restricted cone on one side only, the other side's endpoint-independent filtering (full or
  // restricted cone: its DNAT map) lets the first SYN in; the lab NATs answer unsolicited SYNs with RST.
  for (const ta of CONES) {
    for (const tb of CONES) {
      if (CONES.indexOf(tb) < CONES.indexOf(ta)) continue;
      if (ta === 'port-restricted-cone' && tb === 'port-restricted-cone') continue;
      test(`P2P-NAT: ${ta} ↔ ${tb}, both directions, 2 trials each`, async () => {
        await lab.setNat('natA', ta);
        await lab.setNat('natB', tb);
        for (const first of ['a', 'b'] as const) {
          for (let trial = 0; trial < 2; trial++) {
            const o = await punch('a', 'b', { first, gapMs: 300 });
            record(`${ta} ↔ ${tb}, ${first} first, trial ${trial + 1}`, o);
            assertConnected(o, 'a', 'b');
          }
        }
      });
    }
  }

  test('P2P-NAT: port-restricted ↔ port-restricted that drop unsolicited SYNs silently, both directions', async () => {
    await lab.setNat('natA', { type: 'port-restricted-cone', stealth: true });
    await lab.setNat('natB', { type: 'port-restricted-cone', stealth: true });
    for (const first of ['a', 'b'] as const) {
      for (let trial = 0; trial < 2; trial++) {
        const o = await punch('a', 'b', { first, gapMs: 300 });
        record(`port-restricted (stealth) ↔ port-restricted (stealth), ${first} first, trial ${trial + 1}`, o);
        assertConnected(o, 'a', 'b');
        // The first SYN was dropped, its socket stayed in SYN_SENT and met the other SYN: simultaneous open.
        assert.equal(o.a.direction, 'connect');
        assert.equal(o.b.direction, 'connect');
      }
    }
  });

  test('P2P-NAT: port-restricted ↔ port-restricted answering RST fail when one side starts 300 ms early', async () => {
    // The early SYN meets the other NAT without a mapping; its RST closes the conntrack entry in the sender's own
    // NAT, and the later SYN from the other side is then invalid there and answered with RST in turn.
    await lab.setNat('natA', 'port-restricted-cone');
    await lab.setNat('natB', 'port-restricted-cone');
    const o = await punch('a', 'b', { first: 'a', gapMs: 300, timeoutMs: 4000 });
    record('port-restricted (RST) ↔ port-restricted (RST), a first by 300 ms', o);
    assert.equal(o.ok, false);
    assert.equal(o.a.code, 'PUNCH_FAILED');
    assert.match(String(o.b.message), /ECONNREFUSED/);
  });

  test('simultaneous open: SYNs cross between port-restricted cones answering RST (no listeners); data both ways', async () => {
    await lab.setNat('natA', 'port-restricted-cone');
    await lab.setNat('natB', 'port-restricted-cone');
    // 60 ms each way on both uplinks and both sides starting together (as a rendezvous server's "go" makes them):
    // both SYNs are in flight at once and each meets a NAT the other's SYN already opened, so each arrives at a
    // socket in SYN_SENT (RFC 9293 §3.5 figure 7).
    await lab.setLink('natA', { delayMs: 60 });
    await lab.setLink('natB', { delayMs: 60 });
    try {
      for (let trial = 0; trial < 2; trial++) {
        const o = await punch('a', 'b', { listen: false, gapMs: 0 });
        record(
          `simultaneous open, port-restricted (RST) ↔ port-restricted (RST), 60 ms uplinks, trial ${trial + 1}`,
          o,
        );
        assertConnected(o, 'a', 'b');
        // With no listener anywhere, both sides' connect() completing on the same connection IS simultaneous open.
        assert.equal(o.a.direction, 'connect');
        assert.equal(o.b.direction, 'connect');
        assert.equal((o.b.remote as { port: number }).port, (o.a.local as { port: number }).port);
      }
    } finally {
      await lab.setLink('natA', {});
      await lab.setLink('natB', {});
    }
  });

  test('port prediction: symmetric-sequential ↔ port-restricted (RST), started together over 20 ms uplinks', async () => {
    await lab.setNat('natA', 'symmetric-sequential');
    await lab.setNat('natB', 'port-restricted-cone');
    await lab.setLink('natA', { delayMs: 20 });
    await lab.setLink('natB', { delayMs: 20 });
    try {
      for (let trial = 0; trial < 2; trial++) {
        const o = await punch('a', 'b', { predictA: true, gapMs: 0 });
        record(`symmetric-sequential ↔ port-restricted (RST) with prediction, together, trial ${trial + 1}`, o);
        assertConnected(o, 'a', 'b');
        // b reached a through a port a's NAT had not allocated when the candidates were handed out.
        assert.equal((o.b.candidate as { type: string }).type, 'predicted');
      }
    } finally {
      await lab.setLink('natA', {});
      await lab.setLink('natB', {});
    }
  });

  test('port prediction: symmetric-sequential ↔ full-cone and ↔ silent port-restricted, a first by 300 ms', async () => {
    await lab.setNat('natA', 'symmetric-sequential');
    for (const natB of [{ type: 'full-cone' as const }, { type: 'port-restricted-cone' as const, stealth: true }]) {
      await lab.setNat('natB', natB);
      const o = await punch('a', 'b', { predictA: true, first: 'a', gapMs: 300 });
      record(`symmetric-sequential ↔ ${natB.type}${'stealth' in natB ? ' (silent)' : ''} with prediction, a first`, o);
      assertConnected(o, 'a', 'b');
    }
  });

  test("symmetric-random ↔ full-cone: the full cone lets the symmetric side's fresh mapping in, both directions", async () => {
    await lab.setNat('natA', 'symmetric-random');
    await lab.setNat('natB', 'full-cone');
    for (const first of ['a', 'b'] as const) {
      const o = await punch('a', 'b', { first, gapMs: 300 });
      record(`symmetric-random ↔ full-cone, ${first} first`, o);
      assert.ok(o.ok, JSON.stringify(o));
      assert.equal(o.aData, 'hello from b');
      assert.equal(o.bData, 'hello from a');
      // a's SYN left natA from a port nobody had seen: b accepted it as a peer-reflexive candidate.
      assert.equal(o.b.direction, 'accept');
      assert.equal((o.b.candidate as { type: string }).type, 'prflx');
    }
  });

  test('TTL discovery: one hop behind one NAT, two behind NAT + CGN', async () => {
    const one = lab.node('a', FIXTURE, ['ttl', lab.externalAddr('a')]);
    const r1 = await one.next((m) => m.type === 'ttl' || m.type === 'failed', { timeoutMs: STEP_MS });
    assert.equal(r1.type, 'ttl', JSON.stringify(r1));
    assert.equal(r1.natHops, 1);
    assert.equal(r1.lowTtl, 2);

    const two = lab.node('c', FIXTURE, ['ttl', lab.externalAddr('c')]);
    const r2 = await two.next((m) => m.type === 'ttl' || m.type === 'failed', { timeoutMs: STEP_MS });
    assert.equal(r2.type, 'ttl', JSON.stringify(r2));
    assert.equal(r2.natHops, 2);
    assert.equal(r2.lowTtl, 3);
    const hops = r2.hops as Array<{ ttl: number; outcome: string; router?: string }>;
    assert.equal(hops[0]?.outcome, 'time-exceeded');
    assert.equal(r2.viaIcmp, true);
    // hop 1 is natC's LAN side, read from the raw ICMP socket
    assert.equal(hops[0]?.router, lab.lanAddr('natC'));
    // Without the raw socket (an unprivileged process): the kernel's EHOSTUNREACH tells the same story.
    const plain = lab.node('c', FIXTURE, ['ttl', lab.externalAddr('c'), 'noraw']);
    const r3 = await plain.next((m) => m.type === 'ttl' || m.type === 'failed', { timeoutMs: STEP_MS });
    assert.equal(r3.type, 'ttl', JSON.stringify(r3));
    assert.equal(r3.natHops, 2);
    assert.equal(r3.viaIcmp, false);
    matrix.push(
      `TTL discovery: a ${r1.natHops} hop(s), c ${r2.natHops} hop(s) (${hops.map((h) => `${h.ttl}:${h.outcome}${h.router ? `@${h.router}` : ''}`).join(' ')})`,
    );
  });

  test("STUNT #2: low-TTL SYN (TTL from discovery) opens natA; b's SYN meets it in SYN_SENT (natA drops ICMP errors)", async () => {
    await lab.setNat('natA', { type: 'port-restricted-cone', forwardIcmpErrors: false });
    await lab.setNat('natB', 'port-restricted-cone');
    const d = lab.node('a', FIXTURE, ['ttl', lab.externalAddr('a')]);
    const r = await d.next((m) => m.type === 'ttl' || m.type === 'failed', { timeoutMs: STEP_MS });
    assert.equal(r.type, 'ttl', JSON.stringify(r));
    for (let trial = 0; trial < 2; trial++) {
      const o = await punch('a', 'b', { lowTtlA: Number(r.lowTtl), first: 'a', gapMs: 300 });
      record(
        `STUNT #2 (TTL ${r.lowTtl}), port-restricted without ICMP errors ↔ port-restricted (RST), trial ${trial + 1}`,
        o,
      );
      assertConnected(o, 'a', 'b');
      // a's SYN never reached natB (no RST); b's SYN found a's socket still connecting: simultaneous open.
      assert.equal(o.a.direction, 'connect');
      assert.equal(o.b.direction, 'connect');
    }
  });

  test("STUNT #2 fails when natA forwards Time Exceeded: the listener's SYN-ACK is conntrack-invalid", async () => {
    // Time Exceeded aborts a's connect (EHOSTUNREACH); b's SYN then reaches a's listener, whose SYN-ACK carries a
    // new initial sequence number that natA's connection tracking rejects, so it leaves un-NATed and is lost.
    await lab.setNat('natA', 'port-restricted-cone');
    await lab.setNat('natB', 'port-restricted-cone');
    const o = await punch('a', 'b', { lowTtlA: 2, first: 'a', gapMs: 300, timeoutMs: 4000 });
    record('STUNT #2, port-restricted forwarding ICMP errors ↔ port-restricted (RST)', o);
    assert.equal(o.ok, false);
    assert.equal(o.b.code, 'PUNCH_FAILED');
  });
});
