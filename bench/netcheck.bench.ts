/**
 * netcheck wall time per lab NAT profile at 20 ms RTT (10 ms each way on natA's uplink), against
 * `natpunch serve` in RFC 5780 mode: the library call (3 runs, from one process) and the whole CLI
 * (`node bin/natpunch.js netcheck --json`, Node start-up included). Needs root (the NAT lab).
 * Writes bench/results/netcheck.json and netcheck.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, labUnavailableReason, NAT_TYPES } from '../src/lab/index.js';
import type { NatReport } from '../src/discovery/netcheck.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const RUNS = 3;
const PORT = 3478;

const reason = labUnavailableReason();
if (reason) {
  console.log(`netcheck bench skipped: ${reason}`);
  process.exit(0);
}

const lab = await Lab.up({ links: { natA: { delayMs: 10 } } });
const rows: Array<{ profile: string; verdict: string; libraryMs: number[]; cliMs: number; cliNetcheckMs: number }> = [];
try {
  const [ip1, ip2] = lab.addrs('server');
  const server = `${ip1}:${PORT}`;
  const srv = lab.spawn('server', [
    process.execPath,
    join(root, 'bin/natpunch.js'),
    'serve',
    '--address',
    ip1!,
    '--alt-address',
    ip2!,
    '--port',
    String(PORT),
    '--json',
  ]);
  await srv.next((m) => m.event === 'listening', { timeoutMs: 20_000 });
  const runner = lab.node('a', join(root, 'test/lab/fixtures/netcheck-runner.ts'));
  let id = 0;
  for (const type of NAT_TYPES) {
    await lab.setNat('natA', { type, hairpin: true });
    const rid = ++id;
    runner.send({ id: rid, servers: [server], runs: RUNS });
    const res = await runner.next((m) => m.id === rid, { timeoutMs: 120_000 });
    const reports = res.reports as NatReport[];
    const t0 = performance.now();
    const cli = await lab.exec(
      'a',
      [process.execPath, join(root, 'bin/natpunch.js'), 'netcheck', '--server', server, '--json', '-q'],
      {
        timeoutMs: 30_000,
      },
    );
    const cliMs = Math.round(performance.now() - t0);
    if (cli.code !== 0) throw new Error(`CLI failed: ${cli.stderr}`);
    // The report is the last event line (probe events come before it).
    const cliNetcheckMs = (JSON.parse(cli.stdout.trim().split('\n').at(-1)!) as NatReport).durationMs;
    rows.push({
      profile: type,
      verdict: reports[0]!.verdict,
      libraryMs: reports.map((r) => r.durationMs),
      cliMs,
      cliNetcheckMs,
    });
    console.log(
      `${type.padEnd(22)} library ${reports.map((r) => r.durationMs).join('/')} ms, CLI ${cliMs} ms (netcheck ${cliNetcheckMs} ms) — ${reports[0]!.verdict}`,
    );
  }
  runner.child.stdin?.end();
} finally {
  await lab.down();
}

const out = join(here, 'results');
mkdirSync(out, { recursive: true });
writeFileSync(
  join(out, 'netcheck.json'),
  `${JSON.stringify({ rttMs: 20, runs: RUNS, date: new Date().toISOString(), loadavg: loadavg(), rows }, null, 2)}\n`,
);
const md = [
  '# netcheck wall time per NAT profile (lab, 20 ms RTT, natpunch serve in RFC 5780 mode)',
  '',
  `Machine load average while measuring: ${loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')} (2 cores). The CLI column includes Node`,
  'start-up, tsx transpiling the sources and loading every command module.',
  '',
  '| profile | library (ms, 3 runs) | CLI total (ms) | of which netcheck (ms) | verdict |',
  '|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.profile} | ${r.libraryMs.join(' / ')} | ${r.cliMs} | ${r.cliNetcheckMs} | ${r.verdict} |`),
  '',
];
writeFileSync(join(out, 'netcheck.md'), md.join('\n'));
