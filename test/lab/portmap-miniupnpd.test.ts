/**
 * Port mapping against a real gateway daemon: miniupnpd 2.3.1 (nftables) on the lab router natA, speaking PCP,
 * NAT-PMP and UPnP IGD. The client is the `natpunch map` CLI on host `a` behind natA; the `server` host on the
 * lab's internet checks that the mapped service is reachable. Rules are checked in the router's nft table.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Lab, labUnavailableReason, type Agent, type LabProcess } from '../../src/lab/index.js';
import { Miniupnpd } from './fixtures/miniupnpd.js';

const skip = labUnavailableReason() ?? (await hasMiniupnpd());
if (skip) console.log(`# port-mapping lab tests skipped: ${skip}`);

async function hasMiniupnpd(): Promise<string | undefined> {
  const { existsSync } = await import('node:fs');
  return existsSync('/usr/sbin/miniupnpd')
    ? undefined
    : 'miniupnpd is not installed (apt-get install miniupnpd-nftables)';
}

const CLI = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
const STUN = fileURLToPath(new URL('./fixtures/stun-responder.ts', import.meta.url));
const MAPPER = new URL('../../src/portmap/mapper.ts', import.meta.url).href;

type Json = Record<string, unknown>;

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

describe('port mapping with miniupnpd on a lab router', { skip }, () => {
  let lab: Lab;
  let gw: Miniupnpd;
  let server: Agent;
  let a: Agent;
  let aAddr: string;
  let publicAddr: string;
  const clis: LabProcess[] = [];

  /** `natpunch map` on host a, --json: one JSON object per line. */
  function mapCli(port: number, args: string[]): LabProcess {
    const p = lab.node('a', CLI, ['map', String(port), '--json', ...args]);
    clis.push(p);
    return p;
  }

  async function mapped(p: LabProcess): Promise<Json> {
    try {
      return await p.next((m) => m.event === 'mapped', { timeoutMs: 20_000 });
    } catch (err) {
      throw new Error(
        `${(err as Error).message}\nCLI stderr: ${p.stderr}\nminiupnpd: ${gw.proc?.stderr.slice(-1500)}`,
        { cause: err },
      );
    }
  }

  /** The server sends to the mapped public address:port and the reflecting socket on a answers. */
  async function reachable(externalPort: number): Promise<boolean> {
    const { sock } = await server.udpBind();
    try {
      const r = await server.udpReflect(sock, publicAddr, externalPort, { tries: 3, intervalMs: 400 });
      return r?.from === lab.addr('server');
    } finally {
      await server.closeSocket(sock);
    }
  }

  before(async () => {
    lab = await Lab.up();
    aAddr = lab.addr('a');
    publicAddr = lab.publicAddr('natA');
    const stun = lab.node('server', STUN, [lab.addr('server'), '3478']);
    await stun.next((m) => m.type === 'ready');
    gw = new Miniupnpd(lab, 'natA', {
      stunHost: lab.addr('server'),
      lanPrefix: `${aAddr.split('.').slice(0, 3).join('.')}.0/24`,
    });
    await gw.start();
    server = await lab.agent('server');
    a = await lab.agent('a');
  });

  after(async () => {
    for (const p of clis) await p.close().catch(() => {});
    await gw?.dispose().catch(() => {});
    await lab?.down();
  });

  test('probePortMapping finds PCP, NAT-PMP and UPnP on the gateway', async () => {
    const p = lab.nodeCode(
      'a',
      `const { probePortMapping } = await import(process.argv[2]);
       const r = await probePortMapping({ gateway: process.argv[3] });
       console.log(JSON.stringify({ type: 'probe', ...r }));`,
      [MAPPER, lab.lanAddr('natA')],
    );
    const r = await p.next<Json & Record<'pcp' | 'natpmp' | 'upnp', Json>>((m) => m.type === 'probe', {
      timeoutMs: 20_000,
    });
    assert.equal(r.pcp.answered, true, JSON.stringify(r));
    assert.equal(r.natpmp.answered, true);
    assert.equal(r.natpmp.externalAddress, publicAddr);
    assert.equal(r.upnp.answered, true);
    assert.equal(r.upnp.externalAddress, publicAddr);
  });

  for (const [i, protocol] of (['pcp', 'natpmp', 'upnp'] as const).entries()) {
    test(`${protocol}: maps a UDP port, the internet reaches it, renewal extends the lease, exit deletes it`, async () => {
      const port = 41000 + i;
      await a.udpBind({ port, reflect: true });
      // PCP is what the default order picks first; the others are forced.
      const cli = mapCli(port, ['--lifetime', '4', ...(protocol === 'pcp' ? [] : ['--protocol', protocol])]);
      const m = await mapped(cli);
      assert.equal(m.protocol, protocol);
      assert.equal(m.externalAddress, publicAddr);
      assert.equal(m.internalAddress, aAddr);
      const ext = m.externalPort as number;
      assert.ok(await gw.hasDnat(aAddr, port), `no DNAT rule for ${aAddr}:${port}:\n${await gw.rules()}`);
      assert.ok(await reachable(ext), 'the server could not reach the mapped port');

      // Renewal at half-life: miniupnpd's lease expiry moves forward.
      const first = gw.lease(port);
      assert.ok(first, `no lease for port ${port}: ${JSON.stringify(gw.leases())}`);
      await cli.next((e) => e.event === 'renewed', { timeoutMs: 10_000 });
      await until('a later lease expiry', () => (gw.lease(port)?.expires ?? 0) > first.expires, 8000);

      // Ctrl-C (SIGTERM for UPnP): the CLI deletes the mapping and exits 0.
      cli.kill(protocol === 'upnp' ? 'SIGTERM' : 'SIGINT');
      await cli.next((e) => e.event === 'deleted', { timeoutMs: 10_000 });
      const exit = await cli.exited;
      assert.equal(exit.code, 0, cli.stderr);
      assert.equal(await gw.hasDnat(aAddr, port), false, `rule left behind:\n${await gw.rules()}`);
      assert.equal(gw.lease(port), undefined);
      assert.equal(await reachable(ext), false, 'still reachable after delete');
    });
  }

  test('natpmp: a TCP mapping uses the TCP opcode and a TCP connection from the internet gets through', async () => {
    const { port } = await a.tcpListen({ port: 41010 });
    const cli = mapCli(port, ['--tcp', '--protocol', 'natpmp', '--lifetime', '30']);
    const m = await mapped(cli);
    assert.equal(m.transport, 'tcp');
    assert.equal(gw.lease(port)?.proto, 'TCP');
    const c = await server.tcpConnect(publicAddr, m.externalPort as number);
    assert.equal(c.ok, true, JSON.stringify(c));
    cli.kill('SIGINT');
    assert.equal((await cli.exited).code, 0, cli.stderr);
    assert.equal(gw.lease(port), undefined);
  });

  for (const [i, protocol] of (['pcp', 'natpmp', 'upnp'] as const).entries()) {
    test(`${protocol}: a gateway restart (state and epoch lost) is detected and the mapping is made again`, async () => {
      const port = 41020 + i;
      await a.udpBind({ port, reflect: true });
      const cli = mapCli(port, ['--lifetime', '4', '--protocol', protocol, '--debug']);
      const m = await mapped(cli);
      assert.ok(await gw.hasDnat(aAddr, port));
      // Like a real gateway, the daemon has been up a while: then the epoch alone (RFC 6887 §8.5) reveals the
      // reboot even if the multicast ANNOUNCE is missed (a reboot within ~2 s of a start is within its slack).
      await until('miniupnpd to be up for 6 s', () => Date.now() - gw.startedAt > 6000, 10_000);
      // A reboot: the daemon stops, its rules and leases are gone, it starts again with a new epoch.
      await gw.stop();
      assert.equal(await gw.hasDnat(aAddr, port), false);
      gw.forgetLeases();
      await gw.start();
      if (protocol !== 'upnp') {
        // PCP ANNOUNCE / NAT-PMP announcement on restart, or the next renewal's epoch, reveals the reboot.
        const ev = await cli
          .next((e) => e.event === 'restart', { timeoutMs: 15_000 })
          .catch((err: Error) => {
            throw new Error(
              `${err.message}; CLI said: ${cli.stderr
                .split('\n')
                .filter((l) => /epoch|announce|restart/i.test(l))
                .join('\n')}`,
            );
          });
        assert.equal(ev.protocol, protocol);
      }
      await until('the mapping to be back on the router', () => gw.hasDnat(aAddr, port), 15_000);
      assert.ok(await reachable(m.externalPort as number));
      cli.kill('SIGINT');
      assert.equal((await cli.exited).code, 0, cli.stderr);
      assert.equal(await gw.hasDnat(aAddr, port), false);
    });
  }

  test('without the announcement listener, the epoch in a renewal answer alone reveals the reboot (NAT-PMP and PCP)', async () => {
    const p = lab.nodeCode(
      'a',
      `const { PortMapper } = await import(process.argv[2]);
       const pm = new PortMapper({ gateway: process.argv[3], listenAnnounce: false });
       pm.on('restart', (protocol) => console.log(JSON.stringify({ event: 'restart', protocol })));
       pm.on('renewed', (m) => console.log(JSON.stringify({ event: 'renewed', protocol: m.protocol })));
       for (const [i, protocol] of ['natpmp', 'pcp'].entries()) {
         await pm.map({ internalPort: 41050 + i, lifetime: 4, protocol });
       }
       console.log(JSON.stringify({ event: 'mapped' }));
       process.stdin.on('data', async () => { await pm.close(); console.log(JSON.stringify({ event: 'closed' })); process.exit(0); });`,
      [MAPPER, lab.lanAddr('natA')],
    );
    clis.push(p);
    await p.next((m) => m.event === 'mapped', { timeoutMs: 20_000 });
    await until('miniupnpd to be up for 6 s', () => Date.now() - gw.startedAt > 6000, 10_000);
    await gw.stop();
    gw.forgetLeases();
    await gw.start();
    const seen = new Set<unknown>();
    for (let i = 0; i < 2; i++) seen.add((await p.next((m) => m.event === 'restart', { timeoutMs: 15_000 })).protocol);
    assert.deepEqual([...seen].sort(), ['natpmp', 'pcp']);
    await until(
      'both mappings back',
      async () => (await gw.hasDnat(aAddr, 41050)) && (await gw.hasDnat(aAddr, 41051)),
      15_000,
    );
    p.send({ close: true });
    await p.next((m) => m.event === 'closed', { timeoutMs: 10_000 });
    assert.equal(await gw.hasDnat(aAddr, 41050), false);
    assert.equal(await gw.hasDnat(aAddr, 41051), false);
  });

  test('a peer behind a symmetric-random NAT reaches a mapped peer behind another symmetric-random NAT directly', async () => {
    // miniupnpd checked its address with STUN at start, while natA was a cone NAT (its own STUN traffic would be
    // port-randomised too); now both LANs get symmetric-random NATs: no hole punching could pair them.
    await lab.setNat('natA', 'symmetric-random');
    await lab.setNat('natB', 'symmetric-random');
    try {
      const port = 41040;
      await a.udpBind({ port, reflect: true });
      const cli = mapCli(port, ['--lifetime', '30']);
      const m = await mapped(cli);
      const b = await lab.agent('b');
      const { sock } = await b.udpBind();
      const seen = await b.udpReflect(sock, publicAddr, m.externalPort as number, { tries: 3, intervalMs: 500 });
      assert.ok(seen, 'b got no answer through the mapping');
      assert.equal(seen.from, lab.publicAddr('natB'), 'a saw b through its NAT, directly (no relay)');
      cli.kill('SIGINT');
      assert.equal((await cli.exited).code, 0, cli.stderr);
    } finally {
      await lab.setNat('natA', 'port-restricted-cone');
      await lab.setNat('natB', 'port-restricted-cone');
    }
  });

  test('upnp against an IGDv1 description: WANIPConnection:1 with AddPortMapping', async () => {
    await gw.stop();
    await gw.start({ igdV1: true });
    try {
      const port = 41060;
      await a.udpBind({ port, reflect: true });
      const cli = mapCli(port, ['--protocol', 'upnp', '--lifetime', '30']);
      const m = await mapped(cli);
      assert.ok(await reachable(m.externalPort as number));
      const log = gw.proc!.stderr;
      assert.match(log, /WANIPConnection:1#AddPortMapping/);
      assert.doesNotMatch(log, /AddAnyPortMapping/);
      cli.kill('SIGINT');
      assert.equal((await cli.exited).code, 0, cli.stderr);
      assert.equal(await gw.hasDnat(aAddr, port), false);
    } finally {
      await gw.stop();
      await gw.start();
    }
  });

  test('a second LAN host asking for a taken external port gets another one (PCP, NAT-PMP, UPnP IGDv2)', async () => {
    const a2 = await lab.agent('a2');
    for (const [i, protocol] of (['pcp', 'natpmp', 'upnp'] as const).entries()) {
      const port = 41070 + i;
      await a.udpBind({ port, reflect: true });
      await a2.udpBind({ port, reflect: true });
      const first = mapCli(port, ['--protocol', protocol, '--lifetime', '30']);
      const m1 = await mapped(first);
      const second = lab.node('a2', CLI, ['map', String(port), '--json', '--protocol', protocol, '--lifetime', '30']);
      clis.push(second);
      const m2 = await mapped(second);
      assert.equal(m1.externalPort, port);
      assert.notEqual(m2.externalPort, m1.externalPort, `${protocol}: both hosts got external port ${m1.externalPort}`);
      assert.equal(m2.internalAddress, lab.addr('a2'));
      assert.ok(await gw.hasDnat(lab.addr('a2'), port));
      assert.ok(await reachable(m2.externalPort as number), `${protocol}: a2 not reachable`);
      for (const c of [first, second]) {
        c.kill('SIGINT');
        assert.equal((await c.exited).code, 0, c.stderr);
      }
      assert.equal(await gw.hasDnat(aAddr, port), false);
      assert.equal(await gw.hasDnat(lab.addr('a2'), port), false);
    }
  });

  test("a gateway whose WAN address is in a reserved range refuses: each protocol's refusal is named clearly", async () => {
    await gw.stop();
    await gw.start({ stun: false });
    try {
      for (const [protocol, re] of [
        ['pcp', /NO_RESOURCES/],
        ['natpmp', /NETWORK_FAILURE/],
        ['upnp', /UPnP error 501/],
      ] as const) {
        const cli = lab.node('a', CLI, ['map', '41080', '--protocol', protocol]);
        clis.push(cli);
        const exit = await Promise.race([
          cli.exited,
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error(`${protocol}: no exit: ${cli.stderr}`)), 30_000),
          ),
        ]);
        assert.equal(exit.code, 1, `${protocol}: ${cli.stderr}`);
        assert.match(cli.stderr, re, protocol);
        assert.match(cli.stderr, /\[PORTMAP\]/);
      }
    } finally {
      await gw.stop();
      await gw.start();
    }
  });

  test('behind a router without any port-mapping daemon, `natpunch map` fails with one clear line', async () => {
    const cli = lab.node('b', CLI, ['map', '5000']);
    clis.push(cli);
    const exit = await Promise.race([
      cli.exited,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`map did not give up: ${cli.stderr}`)), 20_000),
      ),
    ]);
    assert.equal(exit.code, 1);
    assert.match(cli.stderr, /natpunch: the gateway \S+ answers none of pcp, natpmp, upnp .*\[PORTMAP\]/);
    assert.equal(
      cli.stderr
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('natpunch: the gateway')).length,
      1,
    );
  });

  test('stopping miniupnpd leaves its rules behind; the fixture removes them', async () => {
    await a.udpBind({ port: 41030, reflect: true });
    const cli = mapCli(41030, ['--protocol', 'natpmp', '--lifetime', '60']);
    await mapped(cli);
    await gw.proc!.close(); // SIGTERM
    const r = await lab.exec('natA', ['nft', 'list', 'table', 'inet', 'natpunch_upnp']);
    assert.ok(r.stdout.includes(`dnat ip to ${aAddr}:41030`), 'miniupnpd 2.3.1 keeps its rules after SIGTERM');
    await gw.stop();
    assert.equal((await lab.exec('natA', ['nft', 'list', 'table', 'inet', 'natpunch_upnp'])).code, 1);
    // The client cannot delete now: it says so and exits non-zero, within its close bound.
    cli.kill('SIGINT');
    const exit = await cli.exited;
    assert.equal(exit.code, 1);
    // With --json the error is the one event schema's error event on stdout (docs/cli.md).
    const failure = await cli.next((m) => m.event === 'error', { timeoutMs: 5_000 });
    assert.equal(failure.code, 'PORTMAP');
    assert.match(String(failure.message), /could not delete/);
    await gw.start();
  });
});
