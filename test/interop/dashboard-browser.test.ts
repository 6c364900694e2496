// The operator dashboard in a real browser: headless Debian chromium driven by playwright-core loads the page from
// `natpunch serve --admin`, sees a peer appear after it registers (live, over SSE, no reload), finds it with the
// search box, and sees the success-matrix cell for the two peers' NAT pair change after they connect through the
// server (loopback). A screenshot goes to test/output/dashboard.png.
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, listen } from '../../src/natpunch.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { RendezvousClient } from '../../src/rendezvous/client.js';
import type { MuxStream } from '../../src/session/mux.js';
import type { Session } from '../../src/session/session.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { startServeNode, type ServeNode } from '../helpers/serve-node.js';

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
// Screenshots go to test/output/ (git-ignored), so a test run never rewrites a committed file;
// NATPUNCH_SCREENSHOT_DIR=bench/results refreshes the committed examples.
const SCREENSHOT_DIR = process.env.NATPUNCH_SCREENSHOT_DIR ?? fileURLToPath(new URL('../output/', import.meta.url));

test(
  'dashboard: a peer appears after it registers, search finds it, a matrix cell changes after a connection',
  { skip, timeout: 180_000 },
  async () => {
    let node: ServeNode | undefined;
    const profile = mkdtempSync(join(tmpdir(), 'natpunch-chromium-'));
    const closers: Array<() => unknown> = [];
    try {
      node = await startServeNode([
        '--admin',
        '0',
        '--turn',
        '--auth-secret',
        'dash-secret',
        '--relay-address',
        '127.0.0.1',
      ]);
      const rendezvous = `127.0.0.1:${node.port}`;
      const context = await playwright!.chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
          '--no-first-run',
        ],
        viewport: { width: 1366, height: 900 },
        timeout: 60_000,
      });
      closers.push(() => context.close());
      const page = context.pages()[0] ?? (await context.newPage());
      const pageErrors: string[] = [];
      page.on('pageerror', (e) => pageErrors.push(e.message));
      await page.goto(node.admin, { waitUntil: 'domcontentloaded' });
      // The live connection is up when the first state arrived.
      await page.locator('#updated', { hasText: /^updated/ }).waitFor({ timeout: 30_000 });
      assert.equal(await page.locator('tr[data-name="dash-peer"]').count(), 0);

      // A peer registers: its row appears without a reload.
      const transport = await NodeDatagramTransport.bind({ type: 'udp4', address: '127.0.0.1' });
      closers.push(() => transport.close());
      const peer = new RendezvousClient({
        transport,
        server: { host: '127.0.0.1', port: node.port },
        keyPair: generateKeyPair(),
        name: 'dash-peer',
      });
      closers.push(() => peer.close());
      await peer.register();
      await page.locator('tr[data-name="dash-peer"]').waitFor({ timeout: 30_000 });
      const row = await page.locator('tr[data-name="dash-peer"]').innerText();
      assert.match(row, /dash-peer/);
      assert.match(row, /behind NAT|public/, 'reachability in words');

      // The search box filters by name.
      await page.fill('#peer-search', 'no-such-peer');
      await page.locator('#peers tbody', { hasText: 'no peer matches' }).waitFor({ timeout: 10_000 });
      assert.equal(await page.locator('#peers tbody tr[data-name]').count(), 0);
      await page.fill('#peer-search', 'dash');
      await page.locator('tr[data-name="dash-peer"]').waitFor({ timeout: 10_000 });

      // Two peers connect through the server and report; their NAT pair's cell appears with one connected attempt.
      const pair = 'full-cone/port-restricted-cone';
      assert.equal(await page.locator(`td[data-pair="${pair}"][data-attempts]`).count(), 0, 'no data for the pair yet');
      const alice = generateKeyPair();
      const bob = generateKeyPair();
      const l = await listen({
        keyPair: alice,
        name: 'dash-alice',
        rendezvous,
        bind: { address: '127.0.0.1' },
        allow: [bob.publicKey],
        transport: 'udp',
        natType: 'full-cone',
      });
      closers.push(() => l.close());
      l.on('session', (s: Session) => s.on('stream', (st: MuxStream) => st.pipe(st)));
      const session = await connect({
        keyPair: bob,
        to: 'dash-alice',
        rendezvous,
        bind: { address: '127.0.0.1' },
        transport: 'udp',
        natType: 'port-restricted-cone',
      });
      closers.push(() => session.close());
      const cell = page.locator(`td[data-pair="${pair}"][data-attempts="1"]`).first();
      await cell.waitFor({ timeout: 30_000 });
      const text = await cell.innerText();
      assert.match(text, /100% connected/, 'success rate in words, not only colour');
      assert.match(text, /100% direct/);
      assert.match(text, /median \d+ ms/);
      // Relay and introductions sections are filled in.
      assert.match(await page.locator('#relay').innerText(), /Allocations now/);
      assert.match(await page.locator('[data-tile="intros"]').innerText(), /[1-9]/);
      mkdirSync(SCREENSHOT_DIR, { recursive: true });
      await page.screenshot({ path: join(SCREENSHOT_DIR, 'dashboard.png'), fullPage: true });
      assert.deepEqual(pageErrors, [], 'no script errors on the page');
    } finally {
      for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => {});
      await node?.stop('SIGTERM');
      rmSync(profile, { recursive: true, force: true });
    }
  },
);
