#!/usr/bin/env node
// Runs the suites with node's own test runner (through tsx) in ONE invocation, so the closing summary counts all.
// Usage: node scripts/test.mjs [unit|lab|interop ...] [-- extra node --test args]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const suites = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const wanted = suites.length ? suites : ['unit', 'interop', 'lab'];

function collect(dir) {
  let out = [];
  let entries = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries.sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(collect(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const files = wanted.flatMap((s) => collect(join('test', s)));
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}
const concurrency = process.env.NATPUNCH_TEST_CONCURRENCY ?? '2';
const args = [
  '--import',
  'tsx',
  '--test',
  `--test-concurrency=${concurrency}`,
  '--test-timeout=300000',
  // A file whose tests all finished but that still holds a handle must not keep the run waiting forever.
  '--test-force-exit',
  '--test-reporter=spec',
  ...files,
];
// Tests connect to names like "alice" with fresh keys on every run: they must never read or write the user's own
// ~/.natpunch/known_peers (src/identity/home.ts honours NATPUNCH_HOME).
const home = process.env.NATPUNCH_HOME ?? mkdtempSync(join(tmpdir(), 'natpunch-test-home-'));
// Network safety: port mapping is on by default for users, but a test must never ask the machine's real gateway
// (PCP, NAT-PMP, SSDP). Everything the runner starts inherits NATPUNCH_PORT_MAPPING=0, which turns the library's
// default off (src/endpoint/defaults.ts); lab processes set it back to 1 inside their own namespaces, whose only
// gateway is a lab router (src/lab/index.ts spawn()).
const res = spawnSync(process.execPath, args, {
  stdio: 'inherit',
  env: { ...process.env, NATPUNCH_HOME: home, NATPUNCH_PORT_MAPPING: '0' },
});
if (!process.env.NATPUNCH_HOME) rmSync(home, { recursive: true, force: true });
process.exit(res.status ?? 1);
