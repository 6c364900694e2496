/**
 * netcheck, run from host `a` behind natA, reports the behaviour natA was configured with — for every lab NAT type,
 * hairpinning on and off, three runs each; with 10% loss on every link of the path; and against coturn's turnserver
 * in RFC 5780 mode as well as against `natpunch serve`; with two plain servers; the lifetime search; port-mapping
 * presence with miniupnpd on natA; ALG detection; open internet and a UDP firewall (host pub); double NAT (host c);
 * and the CLI itself in the namespace. One lab for the whole file; natA switches at run time.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  defaultTopology,
  Lab,
  labUnavailableReason,
  NAT_TYPES,
  type LabProcess,
  type NatType,
} from '../../src/lab/index.js';
import type { NatReport } from '../../src/discovery/netcheck.js';
import { netcheckReport } from '../helpers/netcheck-json.js';

const STUN_PORT = 3478; // natpunch serve: primary port (alternate = +1)
const COTURN_PORT = 4478; // coturn: primary port (alternate = +1)
const RUNS = 3;

interface Expect {
  mapping: string;
  filtering: string;
  classic: string;
  allocation: string;
}

const EXPECT: Record<Exclude<NatType, 'udp-blocked'>, Expect> = {
  'full-cone': {
    mapping: 'endpoint-independent',
    filtering: 'endpoint-independent',
    classic: 'full-cone',
    allocation: 'preserving',
  },
  'restricted-cone': {
    mapping: 'endpoint-independent',
    filtering: 'address-dependent',
    classic: 'restricted-cone',
    allocation: 'preserving',
  },
  'port-restricted-cone': {
    mapping: 'endpoint-independent',
    filtering: 'address-and-port-dependent',
    classic: 'port-restricted-cone',
    allocation: 'preserving',
  },
  'symmetric-sequential': {
    mapping: 'address-and-port-dependent',
    filtering: 'address-and-port-dependent',
    classic: 'symmetric',
    allocation: 'sequential',
  },
  'symmetric-random': {
    mapping: 'address-and-port-dependent',
    filtering: 'address-and-port-dependent',
    classic: 'symmetric',
    allocation: 'random',
  },
};

const skip = labUnavailableReason();

describe('netcheck in the NAT lab', { skip }, () => {
  let lab: Lab;
  let runner: LabProcess;
  let natpunchServer: string;
  let coturnServer: string;
  let nextId = 1;
  let tmp: string | undefined;

  /** Runs netcheck `runs` times in a row from host a (one process, see fixtures/netcheck-runner.ts). */
  async function netcheckFromA(
    server: string,
    runs: number,
    extra: Record<string, unknown> = {},
  ): Promise<NatReport[]> {
    const id = nextId++;
    runner.send({ id, servers: [server], runs, ...extra });
    const res = await runner.next((m) => m.id === id, { timeoutMs: 15_000 * runs + 60_000 });
    if (typeof res.error === 'string') throw new Error(`netcheck in the lab failed: ${res.error}`);
    return res.reports as NatReport[];
  }

  /** Waits (bounded) until a STUN server in the server namespace answers netcheck from a. */
  async function waitForServer(server: string): Promise<void> {
    for (let i = 0; i < 20; i++) {
      const [r] = await netcheckFromA(server, 1);
      if (r!.servers[0]!.reachable) return;
      await new Promise((res) => setTimeout(res, 250));
    }
    throw new Error(`STUN server ${server} never answered in the lab`);
  }

  function assertReport(r: NatReport, type: NatType, hairpin: boolean, opts: { loss?: boolean } = {}): void {
    const ctx = `${type}, hairpin ${hairpin ? 'on' : 'off'}: ${r.verdict} ${JSON.stringify(r.undetermined)}`;
    const natA = lab.publicAddr('natA');
    if (type === 'udp-blocked') {
      assert.equal(r.udp.blocked, true, ctx);
      assert.equal(r.udp.classic, 'udp-blocked', ctx);
      assert.equal(r.difficulty, 'blocked', ctx);
      assert.equal(r.udp.hairpinning, null, ctx);
      if (opts.loss) return;
      // TCP still gets out: the report says so, and which address it leaves with.
      assert.equal(r.tcp.publicAddress?.address, natA, ctx);
      assert.match(r.verdict, /^UDP blocked: only TCP/, ctx);
      return;
    }
    const e = EXPECT[type];
    assert.equal(r.udp.blocked, false, ctx);
    assert.equal(r.udp.behindNat, true, ctx);
    assert.equal(r.udp.publicAddress?.address, natA, ctx);
    assert.equal(r.udp.mapping, e.mapping, ctx);
    assert.equal(r.udp.filtering, e.filtering, ctx);
    assert.equal(r.udp.classic, e.classic, ctx);
    assert.equal(r.udp.allocation.pattern, e.allocation, ctx);
    if (e.allocation === 'sequential') {
      // The lab's sequential NAT steps by one; under loss a retransmitted first packet can let another flow in between.
      if (opts.loss) assert.ok((r.udp.allocation.delta ?? 0) > 0, ctx);
      else assert.equal(r.udp.allocation.delta, 1, ctx);
    }
    assert.equal(r.udp.hairpinning, hairpin, ctx);
    assert.equal(r.udp.alg, false, ctx);
    assert.equal(r.difficulty, e.classic === 'symmetric' ? 'hard' : 'easy', ctx);
    // TCP's own retransmission (1 s SYN timer) can outlast the probe budget under loss: UDP verdicts only there.
    if (opts.loss) return;
    // The lab's TCP NAT follows the same mapping rule as its UDP NAT.
    assert.equal(r.tcp.publicAddress?.address, natA, ctx);
    assert.equal(r.tcp.mapping, e.mapping, ctx);
    // Nothing in the lab speaks NAT-PMP, PCP or UPnP: the probe asks natA and gets no for each.
    assert.deepEqual(r.portMapping, { gateway: lab.lanAddr('natA'), natPmp: false, pcp: false, upnp: false }, ctx);
  }

  before(async () => {
    // The default topology with double NAT (c behind natC behind cgn) plus `pub`, a host with a public address and no
    // NAT (open internet / firewall cases).
    const topology = defaultTopology({ doubleNat: true });
    // natB keeps the lower half of its /24 so pub gets a documentation prefix of its own (RFC 5737).
    topology.routers.natB!.wan = '203.0.113.10/25';
    topology.hosts.pub = { on: 'internet', addrs: ['203.0.113.200/25'] };
    lab = await Lab.up({ topology, nat: { natA: 'port-restricted-cone' } });
    const [ip1, ip2] = lab.addrs('server');
    tmp = mkdtempSync(join(tmpdir(), 'natpunch-netcheck-'));
    natpunchServer = `${ip1}:${STUN_PORT}`;
    coturnServer = `${ip1}:${COTURN_PORT}`;
    // coturn in RFC 5780 mode: two listening IPs, explicit flags, no config file; lab.down() kills it by PID.
    lab.spawn('server', [
      'turnserver',
      '-n',
      '--no-cli',
      '--stun-only',
      '--no-tls',
      '--no-dtls',
      '--no-auth',
      '-L',
      ip1!,
      '-L',
      ip2!,
      '-p',
      String(COTURN_PORT),
      '--alt-listening-port',
      String(COTURN_PORT + 1),
      '--log-file',
      'stdout',
      '--simple-log',
      '--pidfile',
      join(tmp, 'turnserver.pid'),
    ]);
    // `natpunch serve` in RFC 5780 mode on the same two addresses (lab.down() kills it by PID).
    const ours = lab.spawn('server', [
      process.execPath,
      fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url)),
      'serve',
      '--address',
      ip1!,
      '--alt-address',
      ip2!,
      '--port',
      String(STUN_PORT),
      '--json',
    ]);
    await ours.next((m) => m.event === 'listening', { timeoutMs: 20_000 });
    runner = lab.node('a', fileURLToPath(new URL('./fixtures/netcheck-runner.ts', import.meta.url)));
    await waitForServer(natpunchServer);
    await waitForServer(coturnServer);
  });

  after(async () => {
    runner?.child.stdin?.end();
    await lab?.down();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  for (const type of NAT_TYPES) {
    for (const hairpin of [true, false]) {
      test(`${type}, hairpinning ${hairpin ? 'on' : 'off'}: ${RUNS} runs report it`, async () => {
        await lab.setNat('natA', { type, hairpin });
        const reports = await netcheckFromA(natpunchServer, RUNS);
        assert.equal(reports.length, RUNS);
        for (const r of reports) assertReport(r, type, hairpin);
      });
    }
  }

  test('coturn in RFC 5780 mode gives the same verdicts as natpunch serve', async () => {
    for (const type of NAT_TYPES) {
      await lab.setNat('natA', { type, hairpin: true });
      const [ours] = await netcheckFromA(natpunchServer, 1);
      const [theirs] = await netcheckFromA(coturnServer, 1);
      assertReport(theirs!, type, true);
      // With UDP blocked, TCP mapping needs OTHER-ADDRESS over TCP: coturn sends it there, natpunch serve only over
      // UDP, so that one field may differ (netcheck then reports it undetermined, with the reason).
      const pick = (r: NatReport) => [
        r.udp.mapping,
        r.udp.filtering,
        r.udp.classic,
        r.udp.allocation.pattern,
        r.udp.hairpinning,
        r.difficulty,
        type === 'udp-blocked' ? '-' : r.tcp.mapping,
      ];
      assert.deepEqual(pick(theirs!), pick(ours!), type);
    }
  });

  test('with 10% loss on every link of the path the verdicts still hold', async () => {
    const links = ['a', 'natA', 'server'];
    try {
      for (const l of links) await lab.setLink(l, { lossPct: 10 });
      for (const type of NAT_TYPES) {
        await lab.setNat('natA', { type, hairpin: true });
        const reports = await netcheckFromA(natpunchServer, 2);
        for (const r of reports) assertReport(r, type, true, { loss: true });
      }
    } finally {
      for (const l of links) await lab.setLink(l, { lossPct: 0 });
    }
  });

  test('mapping lifetime: the bounded search brackets the NAT timeout', async () => {
    await lab.setNat('natA', { type: 'port-restricted-cone', mappingTimeoutSec: 6 });
    const [r] = await netcheckFromA(natpunchServer, 1, { lifetime: true, lifetimeMaxMs: 15_000 });
    const lt = r!.udp.lifetime;
    assert.ok(lt, JSON.stringify(r!.undetermined));
    assert.ok(lt.aliveAtS < 6 + 1, JSON.stringify(lt));
    assert.ok(lt.expiredByS !== null && lt.expiredByS >= 6, JSON.stringify(lt));
  });

  test('port-mapping presence: with miniupnpd on natA the gateway answers NAT-PMP, PCP and UPnP IGD', async () => {
    await lab.setNat('natA', { type: 'port-restricted-cone' });
    const conf = join(tmp!, 'miniupnpd.conf');
    writeFileSync(
      conf,
      [
        'ext_ifname=wan',
        'listening_ip=lan',
        'port=0',
        'enable_natpmp=yes',
        'enable_upnp=yes',
        'secure_mode=no',
        'uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b',
        'allow 1024-65535 10.0.0.0/8 1024-65535',
        'deny 0-65535 0.0.0.0/0 0-65535',
        '',
      ].join('\n'),
    );
    // Inside natA's namespace only; stopped by PID below (and by lab.down() if the test fails first).
    const mu = lab.spawn('natA', ['miniupnpd', '-d', '-f', conf, '-P', join(tmp!, 'miniupnpd.pid')]);
    try {
      let pm: NatReport['portMapping'] | undefined;
      for (let i = 0; i < 10; i++) {
        const [r] = await netcheckFromA(natpunchServer, 1);
        pm = r!.portMapping;
        if (pm.natPmp && pm.pcp && pm.upnp) break;
        await new Promise((res) => setTimeout(res, 300));
      }
      assert.deepEqual(
        pm,
        { gateway: lab.lanAddr('natA'), natPmp: true, pcp: true, upnp: true },
        mu.stderr.slice(-500),
      );
    } finally {
      await mu.close();
    }
  });

  test('the CLI in the namespace: natpunch netcheck --json prints the same kind of report', async () => {
    await lab.setNat('natA', { type: 'symmetric-sequential', hairpin: true });
    const bin = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
    const res = await lab.exec('a', [process.execPath, bin, 'netcheck', '--server', natpunchServer, '--json'], {
      timeoutMs: 30_000,
    });
    assert.equal(res.code, 0, res.stderr);
    assertReport(netcheckReport(res.stdout), 'symmetric-sequential', true);
  });

  test('two plain STUN servers (no RFC 5780): mapping by comparison, filtering undetermined with the reason', async () => {
    const [ip1, ip2] = lab.addrs('server');
    const bin = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
    const plain = [ip1!, ip2!].map((ip) =>
      lab.spawn('server', [process.execPath, bin, 'serve', '--address', ip, '--port', '5478', '--json']),
    );
    try {
      for (const p of plain) await p.next((m) => m.event === 'listening', { timeoutMs: 20_000 });
      for (const [type, mapping] of [
        ['port-restricted-cone', 'endpoint-independent'],
        ['symmetric-random', 'address-and-port-dependent'],
      ] as const) {
        await lab.setNat('natA', { type });
        const id = nextId++;
        runner.send({ id, servers: [`${ip1}:5478`, `${ip2}:5478`], runs: 1 });
        const res = await runner.next((m) => m.id === id, { timeoutMs: 60_000 });
        const r = (res.reports as NatReport[])[0]!;
        const ctx = `${type}: ${JSON.stringify(r.undetermined)}`;
        assert.deepEqual(
          r.servers.map((s) => [s.reachable, s.rfc5780]),
          [
            [true, false],
            [true, false],
          ],
          ctx,
        );
        assert.equal(r.udp.mapping, mapping, ctx);
        assert.equal(r.udp.filtering, 'unknown', ctx);
        assert.match(r.undetermined.find((u) => u.what === 'udp.filtering')?.why ?? '', /not in RFC 5780 mode/, ctx);
        assert.equal(r.difficulty, type === 'symmetric-random' ? 'hard' : 'easy', ctx);
      }
    } finally {
      for (const p of plain) await p.close();
    }
  });

  test('an ALG rewriting addresses in payloads is detected (MAPPED-ADDRESS and XOR-MAPPED-ADDRESS disagree)', async () => {
    await lab.setNat('natA', { type: 'port-restricted-cone' });
    // A crude ALG on natA: in answers to RFC 3489 requests (no magic cookie at payload byte 4) from the STUN port,
    // overwrite MAPPED-ADDRESS's IPv4 address (payload bytes 28-31) with a's private address, as address-translating
    // ALGs do. The UDP checksum is zeroed (allowed over IPv4, RFC 768) since the payload changed.
    const rules = [
      'table ip npalg {',
      '  chain alg { type filter hook forward priority filter - 10; policy accept;',
      `    iifname "wan" udp sport ${STUN_PORT} @th,96,32 != 0x2112a442 @th,288,32 set 0x0a01000a udp checksum set 0`,
      '  }',
      '}',
      '',
    ].join('\n');
    const add = await lab.exec('natA', ['nft', '-f', '-'], { input: rules });
    assert.equal(add.code, 0, add.stderr);
    try {
      const [r] = await netcheckFromA(natpunchServer, 1);
      assert.equal(r!.udp.alg, true, JSON.stringify(r!.undetermined));
      assert.match(r!.verdict, /ALG/);
      // The XOR'd copy survives, so the public address is still right.
      assert.equal(r!.udp.publicAddress?.address, lab.publicAddr('natA'));
    } finally {
      await lab.exec('natA', ['nft', 'delete', 'table', 'ip', 'npalg']);
    }
  });

  test('no NAT: open internet; behind a stateful firewall that drops new inbound UDP: symmetric UDP firewall', async () => {
    const pub = lab.node('pub', fileURLToPath(new URL('./fixtures/netcheck-runner.ts', import.meta.url)));
    const once = async (): Promise<NatReport> => {
      const id = nextId++;
      pub.send({ id, servers: [natpunchServer], runs: 1 });
      const res = await pub.next((m) => m.id === id, { timeoutMs: 60_000 });
      if (typeof res.error === 'string') throw new Error(res.error);
      return (res.reports as NatReport[])[0]!;
    };
    try {
      const open = await once();
      const ctx = (r: NatReport) => `${r.verdict} ${JSON.stringify(r.undetermined)}`;
      assert.equal(open.udp.behindNat, false, ctx(open));
      assert.equal(open.udp.publicAddress?.address, lab.addr('pub'), ctx(open));
      assert.equal(open.udp.classic, 'open-internet', ctx(open));
      assert.equal(open.difficulty, 'none', ctx(open));
      assert.equal(open.udp.hairpinning, null, ctx(open));
      const fw = [
        'table ip npfw {',
        '  chain input { type filter hook input priority filter; policy accept;',
        '    meta l4proto udp ct state new drop',
        '  }',
        '}',
        '',
      ].join('\n');
      const add = await lab.exec('pub', ['nft', '-f', '-'], { input: fw });
      assert.equal(add.code, 0, add.stderr);
      const walled = await once();
      assert.equal(walled.udp.behindNat, false, ctx(walled));
      assert.equal(walled.udp.mapping, 'endpoint-independent', ctx(walled));
      assert.equal(walled.udp.filtering, 'address-and-port-dependent', ctx(walled));
      assert.equal(walled.udp.classic, 'symmetric-udp-firewall', ctx(walled));
    } finally {
      pub.child.stdin?.end();
      await pub.close();
    }
  });

  test('double NAT (carrier-grade style): the outermost public address, the combined behaviour', async () => {
    const c = lab.node('c', fileURLToPath(new URL('./fixtures/netcheck-runner.ts', import.meta.url)));
    try {
      const id = nextId++;
      c.send({ id, servers: [natpunchServer], runs: 1 });
      const res = await c.next((m) => m.id === id, { timeoutMs: 60_000 });
      if (typeof res.error === 'string') throw new Error(res.error);
      const r = (res.reports as NatReport[])[0]!;
      const ctx = `${r.verdict} ${JSON.stringify(r.undetermined)}`;
      assert.equal(r.udp.behindNat, true, ctx);
      assert.equal(r.udp.publicAddress?.address, lab.externalAddr('c'), ctx);
      // Two port-restricted cones in a row behave as one.
      assert.equal(r.udp.classic, 'port-restricted-cone', ctx);
      // The probe asks natC, the first gateway; nothing answers there.
      assert.equal(r.portMapping.gateway, lab.lanAddr('natC'), ctx);
    } finally {
      c.child.stdin?.end();
      await c.close();
    }
  });
});
