/**
 * The operator dashboard with a connection through real NATs: `natpunch serve --admin` in the lab's server
 * namespace, headless chromium (playwright-core) started inside that namespace through `ip netns exec`, peers behind
 * natA (port-restricted cone) and natB (full cone). The browser sees the listener appear in the peer list after it
 * registers, and the full-cone/port-restricted-cone cell of the success matrix appear after the connection (both
 * sides' outcome reports). Screenshot: test/output/dashboard-lab.png.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason } from '../../src/lab/index.js';
import { metricValue, parsePrometheus } from '../helpers/prom.js';

const CLI = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
const PEER = fileURLToPath(new URL('./fixtures/rendezvous-session-peer.ts', import.meta.url));
// Screenshots go to test/output/ (git-ignored), so a test run never rewrites a committed file;
// NATPUNCH_SCREENSHOT_DIR=bench/results refreshes the committed examples.
const SCREENSHOT_DIR = process.env.NATPUNCH_SCREENSHOT_DIR ?? fileURLToPath(new URL('../output/', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const RV_PORT = 3478;
const ADMIN = '127.0.0.1:9478';
let playwright: typeof import('playwright-core') | null = null;
try {
  playwright = await import('playwright-core');
} catch {
  playwright = null;
}
const skip =
  labUnavailableReason() ??
  (!existsSync(CHROMIUM) ? 'chromium is not installed' : !playwright ? 'playwright-core is not installed' : false);
if (skip) console.log(`# lab dashboard test skipped: ${skip}`);

describe('dashboard in the NAT lab', { skip }, () => {
  let lab: Lab;
  const dir = mkdtempSync(join(tmpdir(), 'natpunch-dash-lab-'));

  before(async () => {
    lab = await Lab.up({ nat: { natA: 'port-restricted-cone', natB: 'full-cone' } });
    const serve = lab.node('server', CLI, [
      'serve',
      '--port',
      String(RV_PORT),
      '--address',
      '0.0.0.0',
      '--admin',
      ADMIN,
      '--json',
    ]);
    await serve.next((m) => m.event === 'listening', { timeoutMs: 30_000 });
  });
  after(async () => {
    await lab?.down(); // kills every process it spawned (serve, peers, the browser in the namespace)
    rmSync(dir, { recursive: true, force: true });
  });

  test('a peer appears after registering; the NAT-pair cell appears after a connection through the NATs', async () => {
    // Chromium runs in the server namespace (where the admin endpoint listens on loopback), driven over its pipe.
    const wrapper = join(dir, 'chromium-in-lab');
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${lab.ns('server')} ${CHROMIUM} "$@"\n`);
    chmodSync(wrapper, 0o755);
    const context = await playwright!.chromium.launchPersistentContext(join(dir, 'profile'), {
      executablePath: wrapper,
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
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      await page.goto(`http://${ADMIN}/`, { waitUntil: 'domcontentloaded' });
      await page.locator('#updated', { hasText: /^updated/ }).waitFor({ timeout: 30_000 });

      const rendezvous = `${lab.addr('server')}:${RV_PORT}`;
      const listener = lab.node('b', PEER, [
        'listen',
        '--rendezvous',
        rendezvous,
        '--name',
        'lab-bob',
        '--nat-type',
        'full-cone',
      ]);
      const ready = await listener.next((m) => m.ev === 'listening' || m.ev === 'fatal', { timeoutMs: 30_000 });
      assert.equal(ready.ev, 'listening', JSON.stringify(ready));
      await page.locator('tr[data-name="lab-bob"]').waitFor({ timeout: 30_000 });

      const pair = 'full-cone/port-restricted-cone';
      assert.equal(await page.locator(`td[data-pair="${pair}"][data-attempts]`).count(), 0);
      // /metrics, read from inside the namespace by the page itself (same origin), parses as Prometheus text.
      const scrape = async () => parsePrometheus(await page.evaluate(async () => (await fetch('/metrics')).text()));
      const before = await scrape();
      const connector = lab.node('a', PEER, [
        'connect',
        '--rendezvous',
        rendezvous,
        '--nat-type',
        'port-restricted-cone',
      ]);
      await connector.next((m) => m.ev === 'ready', { timeoutMs: 30_000 });
      connector.send({ cmd: 'connect', to: 'lab-bob' });
      const done = await connector.next((m) => m.ev === 'connected' || m.ev === 'error', { timeoutMs: 40_000 });
      assert.equal(done.ev, 'connected', JSON.stringify(done));
      connector.send({ cmd: 'send', size: 32 * 1024 });
      const echo = await connector.next((m) => m.ev === 'echo' || m.ev === 'error', { timeoutMs: 20_000 });
      assert.equal(echo.ok, true, 'data both ways through the NATs');

      const cell = page.locator(`td[data-pair="${pair}"][data-attempts="1"]`).first();
      await cell.waitFor({ timeout: 30_000 });
      assert.match(await cell.innerText(), /100% connected/);
      // The counters moved with the connection through the NATs; the outcome is labelled with both sides' NAT types
      // once the second report is in (or the first alone after REPORT_MERGE_WAIT_MS).
      let after = await scrape();
      const moved = (name: string, labels: Record<string, string> = {}) =>
        metricValue(after, name, labels) - metricValue(before, name, labels);
      for (let i = 0; i < 100 && moved('natpunch_punch_outcomes_total') < 1; i++) {
        await new Promise((r) => setTimeout(r, 100));
        after = await scrape();
      }
      assert.equal(moved('natpunch_rendezvous_introductions_total', { result: 'local' }), 1);
      assert.equal(
        moved('natpunch_punch_outcomes_total', { nat_pair: pair, result: 'connected' }),
        1,
        'one outcome per connection, both NAT types',
      );
      assert.equal(moved('natpunch_punch_time_to_connect_seconds_count'), 1);
      assert.ok(moved('natpunch_punch_reports_total', { result: 'counted' }) >= 1);
      mkdirSync(SCREENSHOT_DIR, { recursive: true });
      await page.screenshot({ path: join(SCREENSHOT_DIR, 'dashboard-lab.png'), fullPage: true });
    } finally {
      await context.close();
    }
  });
});
