#!/usr/bin/env node
// Runs the suites with node's own test runner (through tsx) in ONE invocation, so the closing summary counts all.
// Usage: node scripts/test.mjs [unit|lab|interop ...] [-- extra node --test args]
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

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
const ownHome = pathToFileURL(
  join(dirname(fileURLToPath(import.meta.url)), '..', 'test', 'helpers', 'own-home.mjs'),
).href;
const args = [
  '--import',
  'tsx',
  // Every test process gets its own NATPUNCH_HOME (known_peers): see that module.
  '--import',
  ownHome,
  '--test',
  `--test-concurrency=${concurrency}`,
  '--test-timeout=300000',
  // A file whose tests all finished but that still holds a handle must not keep the run waiting forever.
  '--test-force-exit',
  '--test-reporter=spec',
  ...files,
];
// Network safety: port mapping is on by default for users, but a test must never ask the machine's real gateway
// (PCP, NAT-PMP, SSDP). Everything the runner starts inherits NATPUNCH_PORT_MAPPING=0, which turns the library's
// default off (src/endpoint/defaults.ts); lab processes set it back to 1 inside their own namespaces, whose only
// gateway is a lab router (src/lab/index.ts spawn()).
const res = spawnSync(process.execPath, args, {
  stdio: 'inherit',
  env: { ...process.env, NATPUNCH_PORT_MAPPING: '0' },
});
process.exit(res.status ?? 1);
