// Proves each NAT behaviour of the lab from the outside, with plain UDP/TCP probes (the probe agent), no natpunch
// logic: mapping, allocation, filtering, hairpinning, mapping lifetime, udp-blocked, stealth, ICMP errors, double NAT.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  Lab,
  labUnavailableReason,
  PORT_PRESERVATION_OFF_RANGE,
  SEQUENTIAL_BASE_PORT,
  type Agent,
  type NatOptions,
} from '../../src/lab/index.js';

const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

/** How long a probe that must NOT arrive is waited for (it is sent twice). */
const SILENCE_MS = 700;
/** How long an ICMP error (surfacing as a socket error) is waited for. */
const ERROR_WAIT_MS = 1200;
/** How long a probe that must arrive is waited for. */
const POSITIVE_WAIT_MS = 3000;

interface Endpoint {
  sock: number;
  addr: string;
  port: number;
}

describe('NAT behaviours', { skip }, () => {
  let lab: Lab;
  let server: Agent;
  let a: Agent;
  let a2: Agent;
  let b: Agent;
  let c: Agent;
  // The server's reflecting sockets: two addresses × two ports (RFC 5780 style).
  const S: Record<'11' | '12' | '21' | '22', Endpoint> = {} as never;

  before(async () => {
    lab = await Lab.up({ doubleNat: true });
    [server, a, a2, b, c] = await Promise.all(['server', 'a', 'a2', 'b', 'c'].map((h) => lab.agent(h)));
    const [addr1, addr2] = lab.addrs('server') as [string, string];
    const p1 = await server.udpBind({ reflect: true, address: addr1 });
    const p2 = await server.udpBind({ reflect: true, address: addr1 });
    S['11'] = { sock: p1.sock, addr: addr1, port: p1.port };
    S['12'] = { sock: p2.sock, addr: addr1, port: p2.port };
    const q1 = await server.udpBind({ reflect: true, address: addr2, port: p1.port });
    const q2 = await server.udpBind({ reflect: true, address: addr2, port: p2.port });
    S['21'] = { sock: q1.sock, addr: addr2, port: q1.port };
    S['22'] = { sock: q2.sock, addr: addr2, port: q2.port };
  });
  after(async () => {
    await lab?.down();
  });

  /** Switches natA and returns a fresh socket on `a` with its local port. */
  async function fresh(opts: NatOptions, agent: Agent = a, router = 'natA'): Promise<{ sock: number; port: number }> {
    await lab.setNat(router, opts);
    return agent.udpBind();
  }

  async function mapped(agent: Agent, sock: number, to: Endpoint): Promise<number> {
    const r = await agent.udpReflect(sock, to.addr, to.port, { tries: 6, intervalMs: 500 });
    assert.ok(r, `no reflection from ${to.addr}:${to.port}`);
    return r.port;
  }

  /**
   * Sends the tagged probes (twice) and returns which tags arrived on (agent, sock): waits up to POSITIVE_WAIT_MS for
   * the `expected` ones, then SILENCE_MS more for any others.
   */
  async function arrived(
    agent: Agent,
    sock: number,
    send: Array<() => Promise<void>>,
    expected: string[] = [],
  ): Promise<Set<string>> {
    for (let i = 0; i < 2; i++) for (const s of send) await s();
    const got = new Set<string>();
    const deadline = Date.now() + POSITIVE_WAIT_MS;
    while (expected.some((t) => !got.has(t)) && Date.now() < deadline) {
      const d = await agent
        .nextUdp(sock, () => true, { timeoutMs: Math.max(1, deadline - Date.now()) })
        .catch(() => undefined);
      if (d) got.add(d.data);
    }
    await new Promise((r) => setTimeout(r, SILENCE_MS));
    for (const d of agent.drainUdp(sock)) got.add(d.data);
    return got;
  }

  test('mapping: cone types reuse one external port for every destination (endpoint-independent)', async () => {
    for (const type of ['full-cone', 'restricted-cone', 'port-restricted-cone'] as const) {
      const { sock } = await fresh({ type });
      const ports = [await mapped(a, sock, S['11']), await mapped(a, sock, S['21']), await mapped(a, sock, S['12'])];
      assert.equal(new Set(ports).size, 1, `${type}: ${ports.join(', ')}`);
    }
  });

  test('mapping: symmetric types use a new external port per destination', async () => {
    for (const type of ['symmetric-sequential', 'symmetric-random'] as const) {
      const { sock } = await fresh({ type });
      const ports = [await mapped(a, sock, S['11']), await mapped(a, sock, S['21']), await mapped(a, sock, S['12'])];
      assert.equal(new Set(ports).size, 3, `${type}: ${ports.join(', ')}`);
      // the mapping is stable for one destination
      assert.equal(await mapped(a, sock, S['11']), ports[0]);
    }
  });

  test('mapping: TCP connections are mapped like UDP (preserved port for cone, a new port per destination for symmetric)', async () => {
    const l1 = await server.tcpListen({ address: S['11'].addr });
    const l2 = await server.tcpListen({ address: S['21'].addr });
    for (const type of ['port-restricted-cone', 'symmetric-random'] as const) {
      await lab.setNat('natA', { type });
      const localPort = 40000 + Math.floor(Math.random() * 10000);
      const seen: number[] = [];
      for (const [addr, l] of [
        [S['11'].addr, l1],
        [S['21'].addr, l2],
      ] as const) {
        const c = await a.tcpConnect(addr, l.port, { localPort });
        assert.ok(c.ok, `${type}: connect to ${addr}`);
        const acc = await server.proc.next((m) => m.ev === 'tcp.accept' && m.sock === l.sock);
        assert.equal(acc.from, lab.publicAddr('natA'));
        seen.push(Number(acc.port));
        await a.closeSocket(c.conn);
      }
      if (type === 'port-restricted-cone') assert.deepEqual(seen, [localPort, localPort]);
      else assert.notEqual(seen[0], seen[1], `${type}: ${seen.join(', ')}`);
    }
  });

  test('allocation: port preservation keeps the local port; without it ports come from the NAT pool', async () => {
    const on = await fresh({ type: 'port-restricted-cone', portPreservation: true });
    assert.equal(await mapped(a, on.sock, S['11']), on.port);
    const off = await fresh({ type: 'port-restricted-cone', portPreservation: false });
    const ext = await mapped(a, off.sock, S['11']);
    const [lo, hi] = PORT_PRESERVATION_OFF_RANGE.split('-').map(Number) as [number, number];
    assert.notEqual(ext, off.port);
    assert.ok(ext >= lo && ext <= hi, `port ${ext} outside ${PORT_PRESERVATION_OFF_RANGE}`);
    // still endpoint-independent
    assert.equal(await mapped(a, off.sock, S['21']), ext);
  });

  test('allocation: symmetric-sequential hands out consecutive ports (delta 1)', async () => {
    const { sock } = await fresh({ type: 'symmetric-sequential' });
    const ports: number[] = [];
    for (const k of ['11', '12', '21', '22'] as const) ports.push(await mapped(a, sock, S[k]));
    assert.ok(ports[0]! >= SEQUENTIAL_BASE_PORT, `ports ${ports.join(', ')}`);
    assert.deepEqual(
      ports.slice(1).map((p, i) => p - ports[i]!),
      [1, 1, 1],
      `ports ${ports.join(', ')}`,
    );
  });

  test('allocation: symmetric-random ports are distinct and not sequential', async () => {
    const { sock, port } = await fresh({ type: 'symmetric-random' });
    const ports: number[] = [];
    for (const k of ['11', '12', '21', '22'] as const) ports.push(await mapped(a, sock, S[k]));
    assert.equal(new Set(ports).size, 4);
    const deltas = ports.slice(1).map((p, i) => p - ports[i]!);
    assert.ok(!deltas.every((d) => d === deltas[0]), `ports ${ports.join(', ')} look sequential`);
    assert.ok(!ports.every((p) => p === port), 'port preserved');
  });

  test('filtering: full-cone admits anyone, restricted-cone known addresses, port-restricted the exact endpoint', async () => {
    const expect: Record<string, string[]> = {
      'full-cone': ['same-addr-other-port', 'other-addr', 'other-host'],
      'restricted-cone': ['same-addr-other-port'],
      'port-restricted-cone': [],
      'symmetric-sequential': [],
      'symmetric-random': [],
    };
    const bSock = await b.udpBind();
    for (const [type, allowed] of Object.entries(expect)) {
      const { sock } = await fresh({ type: type as NatOptions['type'] });
      const ext = await mapped(a, sock, S['11']);
      const pub = lab.publicAddr('natA');
      const got = await arrived(
        a,
        sock,
        [
          () => server.udpSend(S['12'].sock, pub, ext, 'same-addr-other-port'),
          () => server.udpSend(S['21'].sock, pub, ext, 'other-addr'),
          () => b.udpSend(bSock.sock, pub, ext, 'other-host'),
          () => server.udpSend(S['11'].sock, pub, ext, 'same-endpoint'),
        ],
        [...allowed, 'same-endpoint'],
      );
      assert.deepEqual([...got].filter((t) => t !== 'same-endpoint').sort(), [...allowed].sort(), type);
      assert.ok(got.has('same-endpoint'), `${type}: replies from the mapped destination must pass`);
    }
  });

  test("hairpin: a reaches a2 through natA's public address only when hairpinning is on", async () => {
    for (const hairpin of [true, false]) {
      await lab.setNat('natA', { type: 'port-restricted-cone', hairpin });
      const s2 = await a2.udpBind();
      const ext2 = await mapped(a2, s2.sock, S['11']);
      const s1 = await a.udpBind();
      const ext1 = await mapped(a, s1.sock, S['11']);
      const got = await arrived(
        a2,
        s2.sock,
        [() => a.udpSend(s1.sock, lab.publicAddr('natA'), ext2, 'hairpin')],
        hairpin ? ['hairpin'] : [],
      );
      assert.equal(got.has('hairpin'), hairpin, `hairpin ${hairpin}`);
      if (hairpin) {
        // the hairpinned datagram carries a's public mapping as its source
        await a.udpSend(s1.sock, lab.publicAddr('natA'), ext2, 'hairpin-src');
        const seen = await a2.nextUdp(s2.sock, (x) => x.data === 'hairpin-src', { timeoutMs: 2000 });
        assert.equal(seen.from, lab.publicAddr('natA'));
        assert.equal(seen.port, ext1);
      }
    }
  });

  test('mapping timeout: a mapping idle longer than mappingTimeoutSec is gone, a longer-lived one stays', async () => {
    // natA expires after 2 s, natB keeps the default (120 s): same idle time, opposite outcomes.
    const sa = await fresh({ type: 'port-restricted-cone', mappingTimeoutSec: 2 });
    const sb = await fresh({ type: 'port-restricted-cone' }, b, 'natB');
    const extA = await mapped(a, sa.sock, S['11']);
    const extB = await mapped(b, sb.sock, S['11']);
    await new Promise((r) => setTimeout(r, 3500));
    await server.udpSend(S['11'].sock, lab.publicAddr('natA'), extA, 'late');
    await server.udpSend(S['11'].sock, lab.publicAddr('natB'), extB, 'late');
    const gotB = await b.nextUdp(sb.sock, (d) => d.data === 'late', { timeoutMs: 2000 }).catch(() => undefined);
    assert.ok(gotB, 'natB (120 s) must still hold its mapping');
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(!a.drainUdp(sa.sock).some((d) => d.data === 'late'), 'natA (2 s) must have dropped its mapping');
  });

  test('udp-blocked: no UDP gets through, TCP does; rejection is visible unless stealth', async () => {
    const listener = await server.tcpListen();
    for (const stealth of [false, true]) {
      const { sock } = await fresh({ type: 'udp-blocked', stealth });
      assert.equal(await a.udpReflect(sock, S['11'].addr, S['11'].port, { tries: 2, intervalMs: 300 }), undefined);
      const tcp = await a.tcpConnect(lab.addr('server'), listener.port);
      assert.ok(tcp.ok, `TCP must pass a udp-blocked NAT (stealth ${stealth})`);
      await a.closeSocket(tcp.conn);
      // a connected socket sees the router's ICMP admin-prohibited only when not stealth
      await a.udpConnect(sock, S['11'].addr, S['11'].port);
      const err = await a.udpProbeError(sock, { waitMs: ERROR_WAIT_MS });
      assert.equal(err, stealth ? undefined : 'EHOSTUNREACH', `stealth ${stealth}`);
    }
  });

  test('stealth: unsolicited TCP and UDP to the router are refused (RST / port unreachable) normally, ignored when stealth', async () => {
    const { sock } = await server.udpBind();
    await server.udpConnect(sock, lab.publicAddr('natA'), 4444);
    for (const stealth of [false, true]) {
      await lab.setNat('natA', { type: 'port-restricted-cone', stealth });
      const tcp = await b.tcpConnect(lab.publicAddr('natA'), 4444, { timeoutMs: stealth ? 1000 : 2000 });
      assert.deepEqual(tcp, { ok: false, code: stealth ? 'ETIMEDOUT' : 'ECONNREFUSED' }, `TCP, stealth ${stealth}`);
      const udpErr = await server.udpProbeError(sock, { waitMs: ERROR_WAIT_MS });
      assert.equal(udpErr, stealth ? undefined : 'ECONNREFUSED', `UDP, stealth ${stealth}`);
    }
  });

  test('ICMP errors: a port unreachable from the server reaches a only when forwarding is on', async () => {
    for (const forwardIcmpErrors of [true, false]) {
      const { sock } = await fresh({ type: 'port-restricted-cone', forwardIcmpErrors });
      await a.udpConnect(sock, lab.addr('server'), 9); // nothing listens on port 9
      const err = await a.udpProbeError(sock, { waitMs: ERROR_WAIT_MS });
      assert.equal(err, forwardIcmpErrors ? 'ECONNREFUSED' : undefined, `forwardIcmpErrors ${forwardIcmpErrors}`);
    }
  });

  test("double NAT: c appears as the carrier-grade NAT's public address; its home router sits in 100.64.0.0/10", async () => {
    const { sock } = await c.udpBind();
    const r = await c.udpReflect(sock, S['11'].addr, S['11'].port);
    assert.equal(r?.from, lab.publicAddr('cgn'));
    assert.equal(lab.externalAddr('c'), lab.publicAddr('cgn'));
    const wan = lab.publicAddr('natC').split('.').map(Number);
    assert.ok(wan[0] === 100 && wan[1]! >= 64 && wan[1]! < 128, `natC WAN ${lab.publicAddr('natC')}`);
    // the shared address space is not routed on the internet: the server cannot reach natC directly
    const before = await lab.outsideDrops();
    await server.udpSend(S['11'].sock, lab.publicAddr('natC'), 4000, 'direct');
    let drops = before;
    for (let i = 0; i < 20 && drops === before; i++) {
      await new Promise((res) => setTimeout(res, 50));
      drops = await lab.outsideDrops();
    }
    assert.ok(drops > before);
  });
});
