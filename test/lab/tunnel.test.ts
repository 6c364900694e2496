import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type LabProcess } from '../../src/lab/index.js';
import { generateKeyPair, keyToId, saveKeyPair } from '../../src/session/identity.js';

// Tunnels across two NATs, with the real CLI: `natpunch serve` (STUN + rendezvous) on the lab's public server, `natpunch expose` on b
// (behind natB) in front of an HTTP service, `natpunch forward` and `natpunch socks` on a (behind natA), and an
// application on a that only ever talks to 127.0.0.1. A second HTTP service runs on natB's LAN address: the SOCKS
// exit reaches it because expose's --allow-dest names it, and nothing else.
const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

const BIN = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
const FIX = (f: string) => fileURLToPath(new URL(`./fixtures/${f}`, import.meta.url));
const RV_PORT = 3478;
const SERVICE_PORT = 8080;
const FORWARD_PORT = 18080;
const SOCKS_PORT = 11080;
const MiB = 1024 * 1024;
/** The issue's 100 MiB down (3–13 s in the lab on a loaded 2-core machine), and a third of it up. */
const BIG = Number(process.env.NATPUNCH_TUNNEL_BIG_MIB ?? 100) * MiB;
const UP = Math.ceil(BIG / 3 / MiB) * MiB;
/** The slow-reader transfer (the issue's 1 GiB, scaled): the reader stops for SLOW_STALL_MS after the first chunk,
 *  then reads at SLOW_RATE MiB/s, while the service sends as fast as the tunnel takes it (~50 MiB/s here).
 *  The bound the test asserts, half the transfer, must sit above what a process with working backpressure may still
 *  show in RSS: a stream's grown window (≤ 16 MiB, src/session/mux.ts) plus Buffer garbage V8 has not collected yet
 *  (it forces a GC for external memory only after ~64 MiB more of it, V8's external allocation soft limit). At 64 MiB
 *  the bound left no room for that (a CI run measured 32.9 MiB against 32); at 256 MiB an unbounded tunnel still
 *  fails it during the stall alone (3 s at the link's rate is more than 128 MiB). */
const SLOW = Number(process.env.NATPUNCH_TUNNEL_SLOW_MIB ?? 256) * MiB;
const SLOW_RATE = 32;
const SLOW_STALL_MS = 3000;

type Msg = Record<string, unknown>;

function rssBytes(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

describe('tunnels across two NATs (expose / forward / socks CLI)', { skip }, () => {
  let lab: Lab;
  let dir: string;
  const procs: LabProcess[] = [];
  let expose: LabProcess;
  let forward: LabProcess;
  let socks: LabProcess;
  let client: LabProcess;
  let seq = 0;

  const run = async (cmd: Msg, timeoutMs = 120_000): Promise<Msg> => {
    const id = String(++seq);
    client.send({ ...cmd, id });
    return client.next((m) => m.ev === 'done' && m.id === id, { timeoutMs });
  };
  const start = (node: string, script: string, args: string[]) => {
    const p = lab.node(node, script, args);
    procs.push(p);
    return p;
  };

  before(async () => {
    lab = await Lab.up({ nat: { natA: 'port-restricted-cone', natB: 'restricted-cone' } });
    dir = mkdtempSync(join(tmpdir(), 'np-tunnel-'));
    const home = generateKeyPair();
    const laptop = generateKeyPair();
    await saveKeyPair(join(dir, 'home.json'), home);
    await saveKeyPair(join(dir, 'laptop.json'), laptop);
    const rv = `${lab.addr('server')}:${RV_PORT}`;

    // The rendezvous is `natpunch serve` itself (STUN + rendezvous), as in the README walk-through.
    const server = start('server', BIN, [
      'serve',
      '--port',
      String(RV_PORT),
      '--address',
      lab.addr('server'),
      '--json',
    ]);
    const web = start('b', FIX('tunnel-service.ts'), ['127.0.0.1', String(SERVICE_PORT)]);
    const lanWeb = start('natB', FIX('tunnel-service.ts'), [lab.lanAddr('natB'), String(SERVICE_PORT)]);
    const listening = await server.next((m) => m.event === 'listening', { timeoutMs: 30_000 });
    assert.equal(listening.rendezvous, true, 'serve runs the rendezvous');
    for (const p of [web, lanWeb]) await p.next((m) => m.ev === 'ready', { timeoutMs: 20_000 });

    expose = start('b', BIN, [
      'expose',
      String(SERVICE_PORT),
      '--name',
      'homebox',
      '--rendezvous',
      rv,
      '--key',
      join(dir, 'home.json'),
      '--allow',
      keyToId(laptop.publicKey),
      '--allow-dest',
      `${lab.lanAddr('natB')}/32:${SERVICE_PORT}`,
      '--json',
    ]);
    const exposing = await expose.next((m) => m.event === 'exposing', { timeoutMs: 30_000 });
    assert.equal(exposing.publicKey, keyToId(home.publicKey));

    forward = start('a', BIN, [
      'forward',
      `${FORWARD_PORT}:homebox:${SERVICE_PORT}`,
      '--rendezvous',
      rv,
      '--key',
      join(dir, 'laptop.json'),
      '--known-peers',
      join(dir, 'known_peers'),
      '--json',
    ]);
    socks = start('a', BIN, [
      'socks',
      '--listen',
      String(SOCKS_PORT),
      '--via',
      'homebox',
      '--rendezvous',
      rv,
      '--key',
      join(dir, 'laptop.json'),
      '--known-peers',
      join(dir, 'known_peers'),
      '--json',
    ]);
    client = start('a', FIX('tunnel-client.ts'), []);
    for (const p of [forward, socks]) {
      const up = await p.next((m) => m.event === 'session', { timeoutMs: 45_000 });
      assert.equal(up.peer, keyToId(home.publicKey));
      assert.equal((up.remote as Msg).address, lab.publicAddr('natB'), 'a direct path through natB');
    }
    await client.next((m) => m.ev === 'ready', { timeoutMs: 20_000 });
  });

  after(async () => {
    await Promise.all(procs.map((p) => p.close().catch(() => {})));
    await lab?.down();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('50 parallel HTTP requests through forward, bodies verified, all in ONE session', async () => {
    const r = await run({ cmd: 'parallel', port: FORWARD_PORT, n: 50, size: 100_000 });
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.good, 50);
    // Every connection rode the session made at start: no second punch.
    const sessions = forward
      .next((m) => m.event === 'session', { timeoutMs: 200 })
      .then(
        () => true,
        () => false,
      );
    assert.equal(await sessions, false, 'forward made only one session');
  });

  test(`large transfer with checksum both ways (${BIG / MiB} MiB down, ${UP / MiB} MiB up)`, async () => {
    const down = await run({ cmd: 'download', port: FORWARD_PORT, size: BIG }, 170_000);
    assert.equal(down.ok, true, JSON.stringify(down));
    console.log(
      `# download ${BIG / MiB} MiB through forward: ${down.ms} ms (${((BIG * 8) / (down.ms as number) / 1000).toFixed(1)} Mbit/s)`,
    );
    const up = await run({ cmd: 'upload', port: FORWARD_PORT, size: UP }, 170_000);
    assert.equal(up.ok, true, JSON.stringify(up));
    console.log(`# upload ${UP / MiB} MiB through forward: ${up.ms} ms`);
  });

  test('SOCKS5 CONNECT reaches the server on natB\'s LAN; other destinations get "not allowed by ruleset" (0x02)', async () => {
    const ok = await run({
      cmd: 'socks',
      port: SOCKS_PORT,
      host: lab.lanAddr('natB'),
      targetPort: SERVICE_PORT,
      path: '/body/5000',
    });
    assert.equal(ok.reply, 0, JSON.stringify(ok));
    assert.equal(ok.status, 200);
    assert.equal(ok.bodyOk, true);
    // b's own address, same port: not in --allow-dest.
    const denied = await run({
      cmd: 'socks',
      port: SOCKS_PORT,
      host: lab.addr('b'),
      targetPort: SERVICE_PORT,
      path: '/',
    });
    assert.equal(denied.reply, 2, JSON.stringify(denied));
    // The allowed host on another port: also refused by the ruleset (before any connection attempt).
    const port = await run({ cmd: 'socks', port: SOCKS_PORT, host: lab.lanAddr('natB'), targetPort: 22, path: '/' });
    assert.equal(port.reply, 2, JSON.stringify(port));
    const refused = await expose.next((m) => m.event === 'refused' && m.status === 2, { timeoutMs: 5000 });
    assert.match(String(refused.reason), /not allowed/);
  });

  test(`memory stays bounded while ${SLOW / MiB} MiB go to a slow reader (stalls ${SLOW_STALL_MS / 1000} s, then ${SLOW_RATE} MiB/s)`, async () => {
    const base = { forward: rssBytes(forward.pid), expose: rssBytes(expose.pid) };
    const peak = { ...base };
    const sampler = setInterval(() => {
      peak.forward = Math.max(peak.forward, rssBytes(forward.pid));
      peak.expose = Math.max(peak.expose, rssBytes(expose.pid));
    }, 100);
    try {
      const r = await run(
        { cmd: 'download', port: FORWARD_PORT, size: SLOW, rateMBps: SLOW_RATE, stallMs: SLOW_STALL_MS },
        170_000,
      );
      assert.equal(r.ok, true, JSON.stringify(r));
    } finally {
      clearInterval(sampler);
    }
    const mb = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
    console.log(
      `# slow reader: forward RSS ${mb(base.forward)} → peak ${mb(peak.forward)}; expose RSS ${mb(base.expose)} → peak ${mb(peak.expose)} (transfer ${mb(SLOW)})`,
    );
    // Without backpressure the sender's side would buffer most of the transfer; allow generous slack for GC.
    assert.ok(peak.expose - base.expose < SLOW / 2, `expose grew by ${mb(peak.expose - base.expose)}`);
    assert.ok(peak.forward - base.forward < SLOW / 2, `forward grew by ${mb(peak.forward - base.forward)}`);
  });

  test('natA rebinds mid-transfer: the open connection completes or fails cleanly; new connections work after recovery', async () => {
    const transfer = run({ cmd: 'download', port: FORWARD_PORT, size: 32 * MiB, rateMBps: 8 }, 170_000);
    await new Promise((res) => setTimeout(res, 1500));
    // Flush natA's conntrack and stop preserving ports: a's next packet leaves from a NEW public port.
    await lab.setNat('natA', { type: 'port-restricted-cone', portPreservation: false });
    const r = await transfer; // bounded: either the sha matches, or an error (never a silent truncation)
    if (r.ok !== true) assert.ok(r.error || r.sha !== r.expected, JSON.stringify(r));
    // Recovery: the session migrates to a's new address (expose reports the new path), or, if the session was lost,
    // forward re-establishes a new one.
    const migrated = expose
      .next((m) => m.event === 'path', { timeoutMs: 60_000 })
      .then(
        (m) => `expose migrated the session to ${JSON.stringify(m.remote)}`,
        () => null,
      );
    const relinked = forward
      .next((m) => m.event === 'session', { timeoutMs: 60_000 })
      .then(
        () => 'forward re-established the session',
        () => null,
      );
    const how = await Promise.race([migrated, relinked]);
    console.log(
      `# transfer across the rebinding: ${r.ok === true ? 'completed intact' : `failed cleanly (${String(r.error)})`}; ${how ?? 'no recovery seen within 60 s'}`,
    );
    const again = await run({ cmd: 'parallel', port: FORWARD_PORT, n: 5, size: 10_000 }, 120_000);
    assert.equal(again.ok, true, JSON.stringify(again));
  });

  test('SIGINT closes forward, socks and expose cleanly (exit code 0)', async () => {
    for (const p of [forward, socks, expose]) {
      p.child.kill('SIGINT');
      const exit = await Promise.race([p.exited, new Promise<null>((res) => setTimeout(() => res(null), 10_000))]);
      assert.ok(exit, 'exited within 10 s');
      assert.equal(exit.code, 0, p.stderr);
    }
  });
});
