/**
 * ICMP hole punching (pwnat method) across real Linux NATs. One lab for the file; natB's profile changes at run time.
 * The server (fixtures/icmp-peer.ts server) runs on `b` behind natB and probes 3.3.3.3, which the lab's internet
 * namespace drops and counts (lab.outsideDrops()); the client runs on the public `server` host (or on `a` behind
 * natA) and knows only natB's public address and the server's key.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type NatType } from '../../src/lab/index.js';
import type { LabProcess } from '../../src/lab/proc.js';
import { addonStatus } from '../../src/net/native.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, keyToId, saveKeyPair } from '../../src/session/identity.js';

const FIXTURE = new URL('./fixtures/icmp-peer.ts', import.meta.url).pathname;
const NATPUNCH = new URL('../../bin/natpunch.js', import.meta.url).pathname;
const addon = addonStatus();
const skip = labUnavailableReason() || (addon.available ? false : `native addon unavailable: ${addon.reason}`);
const PROBE = '3.3.3.3';
const PORT = 2222;
const INTERVAL_MS = 200;
const STEP_MS = 30_000;
const OK_TIMEOUT_MS = 15_000;
const FAIL_TIMEOUT_MS = 4_000;

type Msg = Record<string, unknown>;
interface Outcome {
  ok: boolean;
  client: Msg;
  server?: Msg;
  serverEvents: Msg[];
  elapsedMs: number;
}

describe('ICMP hole punching in the NAT lab', { skip }, () => {
  let lab: Lab;
  const matrix: string[] = [];
  const procs = new Set<LabProcess>();

  before(async () => {
    lab = await Lab.up();
  });
  after(async () => {
    await Promise.allSettled([...procs].map((p) => p.close()));
    if (matrix.length)
      console.log(`# ICMP punch results (server on b behind natB)\n${matrix.map((l) => `#   ${l}`).join('\n')}`);
    await lab?.down();
  });

  function start(host: string, args: string[]): LabProcess {
    const p = lab.node(host, FIXTURE, args);
    procs.add(p);
    return p;
  }
  async function stop(p: LabProcess): Promise<void> {
    procs.delete(p);
    await p.close();
  }

  /** Server on b, client on `clientHost`; resolves when the client finished (session + exchange) or failed. */
  async function punch(
    opts: { clientHost?: string; timeoutMs?: number; allow?: string; source?: string; viaConnect?: string } = {},
  ): Promise<Outcome> {
    const server = start('b', [
      'server',
      String(PORT),
      PROBE,
      String(INTERVAL_MS),
      ...(opts.allow ? [opts.allow] : []),
    ]);
    const client: { proc?: LabProcess } = {};
    try {
      const ready = await server.next((m) => m.type === 'ready' || m.type === 'error', { timeoutMs: STEP_MS });
      assert.equal(ready.type, 'ready', JSON.stringify(ready));
      const timeoutMs = opts.timeoutMs ?? OK_TIMEOUT_MS;
      const started = Date.now();
      client.proc = start(
        opts.clientHost ?? 'server',
        opts.viaConnect
          ? ['connect', lab.publicAddr('natB'), String(PORT), PROBE, String(ready.publicKey), opts.viaConnect]
          : [
              'client',
              lab.publicAddr('natB'),
              String(PORT),
              PROBE,
              String(ready.publicKey),
              String(timeoutMs),
              ...(opts.source ? [opts.source] : []),
            ],
      );
      const end = await client.proc.next((m) => m.type === 'done' || m.type === 'error', {
        timeoutMs: timeoutMs + STEP_MS,
      });
      const elapsedMs = Date.now() - started;
      let serverDone: Msg | undefined;
      if (end.type === 'done')
        serverDone = await server.next((m) => m.type === 'done' || m.type === 'error', { timeoutMs: STEP_MS });
      return {
        ok: end.type === 'done',
        client: end,
        ...(serverDone ? { server: serverDone } : {}),
        serverEvents: server.pending(),
        elapsedMs,
      };
    } finally {
      if (client.proc) await stop(client.proc);
      await stop(server);
    }
  }

  async function waitFor(cond: () => boolean, p: LabProcess): Promise<void> {
    const until = Date.now() + STEP_MS;
    while (!cond()) {
      if (!p.running) throw new Error(`${p.host} exited: ${p.stderr}`);
      if (Date.now() > until) throw new Error(`timed out waiting on ${p.host}: ${p.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Adds an nftables table to a router for the duration of `fn` (the lab's own rules live in `ip npnat`). */
  async function withTable(router: string, ruleset: string, fn: () => Promise<void>): Promise<void> {
    const name = /table ip (\w+)/.exec(ruleset)![1]!;
    const r = await lab.exec(router, ['nft', '-f', '-'], { input: ruleset });
    assert.equal(r.code, 0, r.stderr);
    try {
      await fn();
    } finally {
      await lab.exec(router, ['nft', 'delete', 'table', 'ip', name]);
      await lab.exec(router, ['conntrack', '-F']);
    }
  }

  function record(what: string, o: Outcome): void {
    const knocks = o.serverEvents.filter((m) => m.phase === 'icmp-knock').map((m) => m.from);
    matrix.push(
      `${what}: ${o.ok ? `session + 64 KiB both ways in ${o.elapsedMs} ms via ${JSON.stringify(o.client.path)}` : `FAILED in ${o.elapsedMs} ms (${String(o.client.code)}: ${String(o.client.message)})`}` +
        `; server heard Time Exceeded from ${knocks.length ? [...new Set(knocks)].join(', ') : 'nobody'}`,
    );
  }

  function assertExchanged(o: Outcome): void {
    assert.ok(o.ok, `client: ${JSON.stringify(o.client)}`);
    assert.ok(o.server, 'the server reports its side of the exchange');
    assert.equal(o.server.type, 'done', JSON.stringify(o.server));
    assert.equal(o.client.received, o.server.sent, 'the server → client bytes arrive intact');
    assert.equal(o.server.received, o.client.sent, 'the client → server bytes arrive intact');
    assert.equal(o.client.bytes, 64 * 1024);
  }

  const SUCCESS: NatType[] = ['full-cone', 'restricted-cone', 'port-restricted-cone', 'symmetric-sequential'];
  for (const type of SUCCESS) {
    test(`server behind ${type}, public client: session established, data both ways intact, probes dropped inside the lab`, async () => {
      await lab.setNat('natB', type);
      const dropsBefore = await lab.outsideDrops();
      const o = await punch();
      record(`natB ${type}, client public`, o);
      assertExchanged(o);
      assert.ok(
        o.serverEvents.some((m) => m.phase === 'icmp-knock' && m.from === lab.addr('server')),
        'the server learned the client address from the forwarded Time Exceeded',
      );
      const dropsAfter = await lab.outsideDrops();
      assert.ok(
        dropsAfter > dropsBefore,
        `echo requests to ${PROBE} are dropped (and counted) by the lab's internet: ${dropsBefore} → ${dropsAfter}`,
      );
    });
  }

  test("the lab's symmetric-random profile (random UDP ports, ICMP identifiers kept): the session forms via the server's punch", async () => {
    await lab.setNat('natB', 'symmetric-random');
    const o = await punch();
    record('natB symmetric-random (lab profile: fully-random for UDP/TCP only), client public', o);
    assertExchanged(o);
  });

  test('symmetric-random NAT that also rewrites the echo identifier: the client fails with a clear message in bounded time', async () => {
    await lab.setNat('natB', 'symmetric-random');
    // Extends the profile to ICMP: a nat chain ahead of the lab's (priority srcnat - 10) allocates a random query
    // identifier for every new ICMP mapping, as random-symmetric NATs do for ports.
    await withTable(
      'natB',
      'table ip npicmprand {\n chain post {\n type nat hook postrouting priority srcnat - 10; policy accept;\n oifname "wan" meta l4proto icmp masquerade fully-random\n }\n}\n',
      async () => {
        const o = await punch({ timeoutMs: FAIL_TIMEOUT_MS });
        record('natB symmetric-random + random ICMP identifiers, client public', o);
        assert.equal(o.ok, false);
        assert.equal(o.client.code, 'PUNCH_FAILED');
        assert.match(String(o.client.message), /Time Exceeded/);
        assert.ok(o.elapsedMs < FAIL_TIMEOUT_MS + 10_000, `bounded: ${o.elapsedMs} ms`);
        assert.ok(
          !o.serverEvents.some((m) => m.phase === 'icmp-knock'),
          'the forged Time Exceeded matched nothing at natB',
        );
        const echo = (await lab.conntrack('natB')).find((l) => /^icmp/.test(l) && l.includes(`dst=${PROBE}`));
        assert.ok(echo, 'natB tracked the echo requests');
        assert.doesNotMatch(echo, /type=0 code=0 id=0\b/, `natB rewrote the echo identifier: ${echo}`);
      },
    );
  });

  test('server behind a NAT that does not forward ICMP errors: the client fails with a clear message in bounded time', async () => {
    await lab.setNat('natB', { type: 'port-restricted-cone', forwardIcmpErrors: false });
    const o = await punch({ timeoutMs: FAIL_TIMEOUT_MS });
    record('natB port-restricted-cone without ICMP error forwarding, client public', o);
    await lab.setNat('natB', { forwardIcmpErrors: true }, true);
    assert.equal(o.ok, false);
    assert.equal(o.client.code, 'PUNCH_FAILED');
    assert.ok(!o.serverEvents.some((m) => m.phase === 'icmp-knock'), 'nothing reached the server');
  });

  test('connect() falls back to the icmp candidate when the rendezvous cannot be reached', async () => {
    await lab.setNat('natB', 'port-restricted-cone');
    // Nothing listens on this port of the public host: the rendezvous is unreachable.
    const o = await punch({ viaConnect: `${lab.addr('server')}:3999` });
    record('natB port-restricted-cone, connect() with an unreachable rendezvous + icmp', o);
    assertExchanged(o);
    assert.equal(o.client.path && (o.client.path as { address: string }).address, lab.publicAddr('natB'));
  });

  test('the CLI: `listen --icmp` behind natB and `connect --icmp` carry stdin both ways', async () => {
    await lab.setNat('natB', 'port-restricted-cone');
    const dir = mkdtempSync(join(tmpdir(), 'natpunch-icmp-'));
    const serverKey = generateKeyPair();
    const clientKey = generateKeyPair();
    await saveKeyPair(join(dir, 'server.key'), serverKey);
    await saveKeyPair(join(dir, 'client.key'), clientKey);
    const listen = lab.spawn('b', [
      process.execPath,
      NATPUNCH,
      'listen',
      '--icmp',
      '--icmp-probe-address',
      PROBE,
      '--icmp-interval',
      String(INTERVAL_MS),
      '--port',
      String(PORT),
      '--key',
      join(dir, 'server.key'),
      '--allow',
      keyToId(clientKey.publicKey),
    ]);
    procs.add(listen);
    let conn: LabProcess | undefined;
    try {
      listen.child.stdin!.end('from the server\n');
      await waitFor(() => listen.stderr.includes('listening (ICMP)'), listen);
      conn = lab.spawn('server', [
        process.execPath,
        NATPUNCH,
        'connect',
        '--icmp',
        lab.publicAddr('natB'),
        '--port',
        String(PORT),
        '--key',
        join(dir, 'client.key'),
        '--peer-key',
        keyToId(serverKey.publicKey),
        '--timeout',
        String(OK_TIMEOUT_MS),
      ]);
      procs.add(conn);
      conn.child.stdin!.end('from the client\n');
      const bound = (p: LabProcess) =>
        Promise.race([
          p.exited,
          new Promise((_, reject) =>
            setTimeout(() => reject(new Error(`${p.host} did not exit: ${p.stderr}`)), STEP_MS),
          ),
        ]);
      await Promise.all([bound(conn), bound(listen)]);
      matrix.push(
        `CLI listen --icmp (natB port-restricted-cone) / connect --icmp: client got ${JSON.stringify(conn.lines)}, server got ${JSON.stringify(listen.lines)}`,
      );
      assert.deepEqual(conn.lines, ['from the server'], conn.stderr);
      assert.deepEqual(listen.lines, ['from the client'], listen.stderr);
      assert.match(conn.stderr, /connected: authenticated session/);
      // Planned like every other attempt (no-rendezvous.ts): the race's technique events and one chosen path.
      assert.match(conn.stderr, /icmp/);
      assert.match(conn.stderr, /path chosen: direct/, conn.stderr);
    } finally {
      if (conn) await stop(conn);
      await stop(listen);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the server accepts only allowed keys: a client with another key gets no session', async () => {
    await lab.setNat('natB', 'port-restricted-cone');
    const o = await punch({ allow: keyToId(generateKeyPair().publicKey), timeoutMs: FAIL_TIMEOUT_MS });
    record('natB port-restricted-cone, client public, key not allowed', o);
    assert.equal(o.ok, false);
    assert.ok(
      o.serverEvents.some((m) => m.type === 'connection-error'),
      JSON.stringify(o.serverEvents),
    );
  });

  // Client behind natA. Linux conntrack in natA finds no flow for the quoted echo request (it was never natA's), so
  // the forged error is `invalid`: natA forwards it without source NAT (the lab forwards invalid packets) or drops
  // it (when invalid packets are dropped). The server then hears the client's private address, or nothing.
  test('client behind natA, server behind full-cone natB: the server hears the private address; the client reaches the full cone anyway', async () => {
    await lab.setNat('natB', 'full-cone');
    await lab.setNat('natA', 'port-restricted-cone');
    const o = await punch({ clientHost: 'a' });
    record('natB full-cone, client behind natA port-restricted-cone', o);
    assert.ok(
      o.serverEvents.some((m) => m.phase === 'icmp-knock' && m.from === lab.addr('a')),
      'natA forwarded the forged error without source NAT',
    );
    assertExchanged(o);
  });

  test('client behind natA, server behind port-restricted natB: fails with a clear message in bounded time', async () => {
    await lab.setNat('natB', 'port-restricted-cone');
    await lab.setNat('natA', 'port-restricted-cone');
    const o = await punch({ clientHost: 'a', timeoutMs: FAIL_TIMEOUT_MS });
    record('natB port-restricted-cone, client behind natA port-restricted-cone', o);
    assert.equal(o.ok, false);
    assert.equal(o.client.code, 'PUNCH_FAILED');
    assert.ok(
      o.serverEvents.some((m) => m.phase === 'icmp-knock' && m.from === lab.addr('a')),
      'the server only heard the private address',
    );
  });

  test('client behind natA that drops conntrack-invalid packets: the forged error never leaves', async () => {
    await lab.setNat('natB', 'full-cone');
    await lab.setNat('natA', 'port-restricted-cone');
    await withTable(
      'natA',
      'table ip npinvalid {\n chain invalid {\n type filter hook forward priority filter - 10; policy accept;\n ct state invalid counter drop\n }\n}\n',
      async () => {
        const o = await punch({ clientHost: 'a', timeoutMs: FAIL_TIMEOUT_MS });
        record('natB full-cone, client behind natA dropping invalid', o);
        assert.equal(o.ok, false);
        assert.ok(!o.serverEvents.some((m) => m.phase === 'icmp-knock'), 'nothing reached the server');
        const counted = await lab.exec('natA', ['nft', 'list', 'chain', 'ip', 'npinvalid', 'invalid']);
        assert.match(counted.stdout, /packets [1-9]/, 'natA dropped the forged errors as invalid');
      },
    );
  });

  test("client behind natA writing its NAT's public address as the outer source (GNUnet's variant): natA drops it as a martian", async () => {
    await lab.setNat('natB', 'port-restricted-cone');
    await lab.setNat('natA', 'port-restricted-cone');
    const counters =
      'table ip npicmpseen {\n chain pre {\n type filter hook prerouting priority -400; policy accept;\n icmp type time-exceeded counter\n }\n' +
      ' chain forwarded {\n type filter hook forward priority -400; policy accept;\n icmp type time-exceeded counter\n }\n}\n';
    await withTable('natA', counters, async () => {
      const o = await punch({ clientHost: 'a', timeoutMs: FAIL_TIMEOUT_MS, source: lab.publicAddr('natA') });
      record(`natB port-restricted-cone, client behind natA, outer source = natA's public address`, o);
      assert.equal(o.ok, false);
      assert.ok(!o.serverEvents.some((m) => m.phase === 'icmp-knock'), 'nothing reached the server');
      const seen = (await lab.exec('natA', ['nft', 'list', 'table', 'ip', 'npicmpseen'])).stdout;
      const [pre, fwd] = [...seen.matchAll(/packets (\d+)/g)].map((m) => Number(m[1]));
      assert.ok(pre! > 0, `natA received the forged errors: ${seen}`);
      assert.equal(
        fwd,
        0,
        "routing dropped them: a source address of natA's own arriving from the LAN is a martian (accept_local=0)",
      );
    });
  });
});
