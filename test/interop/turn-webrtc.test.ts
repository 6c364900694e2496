// Headless Chromium (Debian's chromium, driven by playwright-core; no browser download) uses natpunch's TURN server
// as its only ICE server with iceTransportPolicy 'relay': two RTCPeerConnections in one page open a DataChannel and
// exchange messages, and the selected candidate pair is a relay candidate from our server. Both ends are relayed
// through the same server, so this also proves relay-to-relay between two allocations works with the safe defaults.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../../src/server/serve.js';
import { attachTurn } from '../../src/relay/attach.js';
import { TurnServer } from '../../src/relay/server.js';
import { UsersFileStore } from '../../src/relay/auth.js';
import { turnRegistry } from '../../src/wire/turn.js';

const CHROMIUM = '/usr/bin/chromium';
let playwright: typeof import('playwright-core') | null = null;
try {
  playwright = await import('playwright-core');
} catch {
  playwright = null;
}
const skip = !existsSync(CHROMIUM)
  ? 'chromium is not installed (apt-get install chromium)'
  : !playwright
    ? 'playwright-core is not installed'
    : false;

/** Runs in the page: two peer connections, relay-only, one DataChannel ping/pong, then the selected pair. */
const PAGE_SCRIPT = `async ({ url, username, credential }) => {
  const withTimeout = (p, what) => Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error('timed out: ' + what)), 30000))]);
  const cfg = { iceServers: [{ urls: url, username, credential }], iceTransportPolicy: 'relay' };
  const a = new RTCPeerConnection(cfg);
  const b = new RTCPeerConnection(cfg);
  a.onicecandidate = (e) => { if (e.candidate) b.addIceCandidate(e.candidate); };
  b.onicecandidate = (e) => { if (e.candidate) a.addIceCandidate(e.candidate); };
  b.ondatachannel = (ev) => { ev.channel.onmessage = (m) => ev.channel.send('pong:' + m.data); };
  const dc = a.createDataChannel('natpunch');
  const open = new Promise((resolve) => { dc.onopen = () => resolve(); });
  const reply = new Promise((resolve) => { dc.onmessage = (m) => resolve(String(m.data)); });
  await a.setLocalDescription();
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription();
  await a.setRemoteDescription(b.localDescription);
  await withTimeout(open, 'DataChannel open');
  dc.send('ping');
  const got = await withTimeout(reply, 'DataChannel reply');
  const stats = await a.getStats();
  let pairId;
  stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
  const pair = pairId ? stats.get(pairId) : undefined;
  const cand = (id) => {
    const c = id ? stats.get(id) : undefined;
    return c ? { candidateType: c.candidateType, address: c.address || c.ip, port: c.port, relayProtocol: c.relayProtocol } : null;
  };
  const out = { reply: got, local: cand(pair && pair.localCandidateId), remote: cand(pair && pair.remoteCandidateId) };
  a.close();
  b.close();
  return out;
}`;

interface PageResult {
  reply: string;
  local: { candidateType: string; address: string; port: number; relayProtocol?: string } | null;
  remote: { candidateType: string; address: string; port: number } | null;
}

test(
  'Chromium WebRTC DataChannel through natpunch TURN only (iceTransportPolicy relay)',
  { skip, timeout: 120_000 },
  async () => {
    const handle = await startServer({
      port: 0,
      addresses: ['127.0.0.1'],
      stun: { registry: turnRegistry },
      relay: false,
    });
    // Safe defaults: no --allow-peer. The two browsers' allocations reach each other as relay-to-relay traffic.
    const turn = new TurnServer({
      credentials: new UsersFileStore('webrtc:s3cret\n'),
      relayAddress: '127.0.0.1',
      realm: 'natpunch.test',
    });
    const detach = attachTurn(handle, turn);
    const port = handle.udp[0]!.port;
    const profile = mkdtempSync(join(tmpdir(), 'natpunch-chromium-'));
    const context = await playwright!.chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      timeout: 60_000,
    });
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      const args = { url: `turn:127.0.0.1:${port}?transport=udp`, username: 'webrtc', credential: 's3cret' };
      // Plain JS in a string: the browser runs it as written (no transpiler helpers, no DOM types needed here).
      const result = (await page.evaluate(`(${PAGE_SCRIPT})(${JSON.stringify(args)})`)) as PageResult;
      assert.equal(result.reply, 'pong:ping');
      assert.ok(result.local, 'a selected candidate pair');
      assert.equal(result.local.candidateType, 'relay');
      assert.equal(result.local.address, '127.0.0.1');
      assert.ok(result.local.port >= 49152, 'a port from our relay range');
      assert.equal(result.remote?.candidateType, 'relay');
      assert.ok(turn.stats.allocationsTotal >= 2);
      assert.ok(turn.stats.packetsToPeer > 0 && turn.stats.packetsToClient > 0, 'traffic went through natpunch');
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
      detach();
      turn.close();
      await handle.close();
    }
  },
);
