// CLI start-up: how long `natpunch` takes before it does anything, against `node -e 0` (Node's own start) in the same
// run, interleaved, 10 runs each (CLI_START_RUNS), median and p90. Targets (issue 17): `natpunch --help` ≤ 0.25 s and
// `connect` to its first progress line ≤ 0.35 s. Everything on loopback: a `natpunch serve` child is the STUN server
// and the rendezvous; `connect` asks it for a name nobody registered and is stopped at its first progress line.
// Rows run from dist/ (built first when missing or stale), plus `--help` through tsx (the development fallback).
// Writes bench/results/cli-start.json and .md with os.loadavg() before and after: numbers from a loaded machine are
// not claims.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startUntilLine, stop } from '../test/helpers/proc.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const BIN = join(root, 'bin', 'natpunch.js');
const RUNS = Number(process.env.CLI_START_RUNS ?? 10);
const TARGETS_MS: Record<string, number> = { 'natpunch --help': 250, 'natpunch connect → first progress line': 350 };

/** Wall time of a process from spawn until `done` sees its output (or it exits), in ms. */
function timeRun(args: string[], env: NodeJS.ProcessEnv, untilStderrLine = false): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    let settled = false;
    const finish = (ok: boolean) => {
      if (settled) return;
      settled = true;
      const ms = performance.now() - t0;
      if (untilStderrLine) child.kill('SIGKILL');
      if (ok) resolve(ms);
      else reject(new Error(`${args.join(' ')} failed: ${err}`));
    };
    child.stderr!.on('data', (d) => {
      err += d;
      if (untilStderrLine && err.includes('\n')) finish(true);
    });
    child.once('exit', (code) => finish(code === 0 || (untilStderrLine && err.includes('\n'))));
  });
}

function stats(samples: number[]) {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { medianMs: Math.round(at(0.5) * 10) / 10, p90Ms: Math.round(at(0.9) * 10) / 10, runs: s.length };
}

async function main(): Promise<void> {
  // From dist/: build when it is missing or stale (bin/natpunch.js would fall back to tsx otherwise).
  const build = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) throw new Error('build failed');
  const dist = { ...process.env, NATPUNCH_FROM_SOURCE: '0' };
  const source = { ...process.env, NATPUNCH_FROM_SOURCE: '1' };

  const keyDir = mkdtempSync(join(os.tmpdir(), 'natpunch-bench-'));
  const keyFile = join(keyDir, 'key');
  spawnSync(process.execPath, [BIN, 'keygen', '--out', keyFile], { env: dist });

  const serve = await startUntilLine(
    process.execPath,
    [BIN, 'serve', '--port', '0', '--address', '127.0.0.1', '--json'],
    (l) => l.includes('"listening"'),
  );
  const port = (JSON.parse(serve.line) as { udp: { port: number }[] }).udp[0]!.port;
  const server = `127.0.0.1:${port}`;

  const cases: { name: string; run: () => Promise<number> }[] = [
    { name: 'node -e 0', run: () => timeRun(['-e', '0'], dist) },
    { name: 'natpunch --help', run: () => timeRun([BIN, '--help'], dist) },
    { name: 'natpunch --help (tsx, from src/)', run: () => timeRun([BIN, '--help'], source) },
    { name: 'natpunch stun', run: () => timeRun([BIN, 'stun', server], dist) },
    {
      name: 'natpunch connect → first progress line',
      run: () =>
        timeRun(
          [BIN, 'connect', 'nobody-here', '--rendezvous', server, '--key', keyFile, '--transport', 'udp'],
          dist,
          true,
        ),
    },
  ];
  const loadBefore = os.loadavg();
  const samples = new Map<string, number[]>(cases.map((c) => [c.name, []]));
  try {
    for (let i = 0; i < RUNS; i++) for (const c of cases) samples.get(c.name)!.push(await c.run());
  } finally {
    await stop(serve.child);
    rmSync(keyDir, { recursive: true, force: true });
  }
  const loadAfter = os.loadavg();

  const baseline = stats(samples.get('node -e 0')!).medianMs;
  const rows = cases.map((c) => {
    const s = stats(samples.get(c.name)!);
    return {
      name: c.name,
      ...s,
      overNodeMs: Math.round((s.medianMs - baseline) * 10) / 10,
      targetMs: TARGETS_MS[c.name] ?? null,
    };
  });
  const result = {
    bench: 'cli-start',
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    loadavgBefore: loadBefore,
    loadavgAfter: loadAfter,
    rows,
  };
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'cli-start.json'), `${JSON.stringify(result, null, 2)}\n`);
  const md = [
    '# CLI start-up',
    '',
    `${result.date}, Node ${result.node}, ${result.cpus} CPUs, load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before, ${loadAfter.map((l) => l.toFixed(2)).join(' ')} after; ${RUNS} runs each, interleaved.`,
    '',
    '| what | median ms | p90 ms | median − `node -e 0` ms | target ms |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.name} | ${r.medianMs} | ${r.p90Ms} | ${r.overNodeMs} | ${r.targetMs ?? ''} |`),
    '',
  ].join('\n');
  writeFileSync(join(here, 'results', 'cli-start.md'), md);
  process.stdout.write(md);
}

await main();
