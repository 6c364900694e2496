// Connect matrix (root only; issue 16): every ordered pair of full-cone, restricted-cone, port-restricted-cone,
// symmetric-sequential and symmetric-random, plus udp-blocked ↔ udp-blocked and port-restricted ↔ udp-blocked,
// through `natpunch serve` with no flags and `natpunch listen` / `natpunch connect` with no traversal flags
// (test/lab/fixtures/connect-matrix.ts, the same trial the lab test runs). Two variants in one run: clean links, and
// 5 % random loss on every link (src/lab/shape.ts). Per pair: success rate, how it ended (direct / relay, the
// technique that won), median and p90 time from starting `natpunch connect` to a line echoed both ways — which
// includes the CLI's own start-up, so compare pairs with each other, not with the set-up bench.
//   NATPUNCH_BENCH_TRIALS (default 5) trials per pair and variant; NATPUNCH_MATRIX_PAIRS=fc-prc,... only those pairs;
//   NATPUNCH_MATRIX_CONCURRENCY (default 3) pairs at once inside a round (their routers always differ);
//   NATPUNCH_BENCH_LOSS=0 skips the loss variant, NATPUNCH_BENCH_CLEAN=0 the clean one; NATPUNCH_MATRIX_DUMP=DIR
//   keeps both sides' whole stderr of every failed trial there. Node process warnings either
//   side printed (a MaxListenersExceededWarning is a leak even when the trial passed) are counted per pair.
// Writes bench/results/connect-matrix.{json,md} with os.loadavg() before and after: numbers from a loaded machine
// are not quotable.
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, labUnavailableReason } from '../src/lab/index.js';
import {
  expectsRelay,
  matrixTopology,
  pairName,
  runMatrix,
  startServe,
  type TrialResult,
} from '../test/lab/fixtures/connect-matrix.js';

const here = dirname(fileURLToPath(import.meta.url));
const skip = labUnavailableReason();
if (skip) {
  console.log(`connect-matrix skipped: ${skip}`);
  process.exit(0);
}
const TRIALS = Number(process.env.NATPUNCH_BENCH_TRIALS ?? 5);
const ONLY = process.env.NATPUNCH_MATRIX_PAIRS?.split(',').filter(Boolean);
const CONCURRENCY = Number(process.env.NATPUNCH_MATRIX_CONCURRENCY ?? 3);
const WITH_LOSS = process.env.NATPUNCH_BENCH_LOSS !== '0';
const WITH_CLEAN = process.env.NATPUNCH_BENCH_CLEAN !== '0';

const pct = (xs: number[], p: number) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!);
};
const mode = (xs: string[]) => {
  const n = new Map<string, number>();
  for (const x of xs) n.set(x, (n.get(x) ?? 0) + 1);
  return [...n.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k}×${v}`)
    .join(' ');
};

interface Row {
  variant: string;
  pair: string;
  trials: number;
  ok: number;
  direct: number;
  relay: number;
  expected: 'direct' | 'relay' | 'any';
  techniques: string;
  transports: string;
  medianMs: number | null;
  p90Ms: number | null;
  errors: string[];
  /** Trials in which either side printed a Node process warning, by warning name. */
  warnings: Record<string, number>;
}

function summarise(variant: string, results: TrialResult[]): Row[] {
  const byPair = new Map<string, TrialResult[]>();
  for (const r of results) byPair.set(pairName(r.pair), [...(byPair.get(pairName(r.pair)) ?? []), r]);
  return [...byPair.entries()].map(([pair, rs]) => {
    const ok = rs.filter((r) => r.ok);
    const p = rs[0]!.pair;
    const blocked = p.connector === 'udp-blocked' || p.listener === 'udp-blocked';
    return {
      variant,
      pair,
      trials: rs.length,
      ok: ok.length,
      direct: ok.filter((r) => r.kind !== 'relay').length,
      relay: ok.filter((r) => r.kind === 'relay').length,
      expected: blocked ? 'any' : expectsRelay(p.connector, p.listener) ? 'relay' : 'direct',
      techniques: mode(ok.map((r) => r.traversal ?? '?')),
      transports: mode(ok.map((r) => r.transport ?? '?')),
      medianMs: pct(
        ok.map((r) => r.connectMs!),
        50,
      ),
      p90Ms: pct(
        ok.map((r) => r.connectMs!),
        90,
      ),
      errors: rs.filter((r) => !r.ok).map((r) => (r.error ?? '').slice(0, 300)),
      warnings: rs
        .flatMap((r) => r.warnings ?? [])
        .reduce<Record<string, number>>((n, w) => ({ ...n, [w]: (n[w] ?? 0) + 1 }), {}),
    };
  });
}

const loadBefore = loadavg();
const cpuBefore = process.cpuUsage();
const started = Date.now();
const lab = await Lab.up(matrixTopology());
const rows: Row[] = [];
try {
  await startServe(lab);
  const variants: Array<{ name: string; lossPct: number }> = [
    ...(WITH_CLEAN ? [{ name: 'clean', lossPct: 0 }] : []),
    ...(WITH_LOSS ? [{ name: 'loss-5pct', lossPct: 5 }] : []),
  ];
  const links = Object.keys(lab.topology.nodes ?? {}).filter((n) => n !== 'internet');
  for (const v of variants) {
    if (v.lossPct > 0) for (const link of links) await lab.setLink(link, { lossPct: v.lossPct });
    const results = await runMatrix(lab, {
      trials: TRIALS,
      concurrency: CONCURRENCY,
      ...(ONLY ? { only: ONLY } : {}),
      onResult: (r) =>
        console.log(
          `${v.name} ${pairName(r.pair)}: ${r.ok ? `${r.kind} ${r.transport} ${r.traversal} ${r.connectMs} ms` : `FAILED ${r.error?.slice(0, 160)}`}${r.warnings ? ` [${r.warnings.join(', ')}]` : ''}`,
        ),
    });
    rows.push(...summarise(v.name, results));
  }
} finally {
  await lab.down();
}
const loadAfter = loadavg();
const cpu = process.cpuUsage(cpuBefore);

const meta = {
  date: new Date().toISOString(),
  trialsPerPair: TRIALS,
  concurrency: CONCURRENCY,
  cores: cpus().length,
  loadavgBefore: loadBefore,
  loadavgAfter: loadAfter,
  // No load generator runs in this bench; the machine's own load is what loadavg shows.
  loadGeneratorCpuMs: 0,
  benchProcessCpuMs: Math.round((cpu.user + cpu.system) / 1000),
  wallMs: Date.now() - started,
  quotable: loadBefore[0]! < 0.5 * cpus().length,
};
mkdirSync(join(here, 'results'), { recursive: true });
writeFileSync(join(here, 'results', 'connect-matrix.json'), `${JSON.stringify({ meta, rows }, null, 2)}\n`);
const md = [
  '# Connect matrix (`natpunch serve` / `listen` / `connect`, no traversal flags)',
  '',
  `${meta.date}; ${TRIALS} trial(s) per pair and variant; ${meta.cores} cores; loadavg before ${loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${loadAfter.map((x) => x.toFixed(2)).join(' ')}` +
    `${meta.quotable ? '' : ' — **loaded machine: times are not quotable**'}.`,
  'Time: from starting `natpunch connect` (CLI start-up included) to a line echoed both ways.',
  '',
  '| variant | pair (connector-listener) | ok | direct | relay | expected | technique | transport | median ms | p90 ms | warnings |',
  '|---|---|---|---|---|---|---|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| ${r.variant} | ${r.pair} | ${r.ok}/${r.trials} | ${r.direct} | ${r.relay} | ${r.expected} | ${r.techniques} | ${r.transports} | ${r.medianMs ?? '–'} | ${r.p90Ms ?? '–'} | ${mode(Object.entries(r.warnings).flatMap(([w, n]) => Array<string>(n).fill(w))) || '–'} |`,
  ),
  '',
  'Pair names: fc full-cone, rc restricted-cone, prc port-restricted-cone, seq symmetric-sequential, rnd symmetric-random, blk udp-blocked.',
  '',
].join('\n');
writeFileSync(join(here, 'results', 'connect-matrix.md'), md);
console.log(md);
