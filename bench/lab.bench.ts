// NAT lab numbers: set-up / tear-down time of the default topology, agent start-up, and how closely the userspace
// delayer holds a configured delay (round trips a → server with delay on natA's link). Root only; skips otherwise.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Lab, labUnavailableReason } from '../src/lab/index.js';

const reason = labUnavailableReason();
if (reason) {
  console.log(`lab bench skipped: ${reason}`);
  process.exit(0);
}

const ROUNDS = 5;
const RTT_SAMPLES = 30;
const DELAYS_MS = [0, 10, 50];

const ups: number[] = [];
const downs: number[] = [];
for (let i = 0; i < ROUNDS; i++) {
  const t0 = performance.now();
  const lab = await Lab.up({ doubleNat: i % 2 === 1 });
  ups.push(performance.now() - t0);
  const t1 = performance.now();
  await lab.down();
  downs.push(performance.now() - t1);
}

const lab = await Lab.up();
const rtt: Record<string, { min: number; median: number; p90: number; expected: number }> = {};
let agentStart = 0;
try {
  const t0 = performance.now();
  const server = await lab.agent('server');
  agentStart = performance.now() - t0;
  const a = await lab.agent('a');
  const reflector = await server.udpBind({ reflect: true });
  const { sock } = await a.udpBind();
  for (const d of DELAYS_MS) {
    await lab.setLink('natA', { delayMs: d });
    const samples: number[] = [];
    for (let i = 0; i < RTT_SAMPLES; i++) {
      const s = performance.now();
      const r = await a.udpExchange(sock, lab.addr('server'), reflector.port, { tries: 1, intervalMs: 2000 });
      if (r) samples.push(performance.now() - s);
    }
    samples.sort((x, y) => x - y);
    rtt[`${d}`] = {
      min: samples[0] ?? NaN,
      median: samples[Math.floor(samples.length / 2)] ?? NaN,
      p90: samples[Math.floor(samples.length * 0.9)] ?? NaN,
      expected: 2 * d,
    };
  }
} finally {
  await lab.down();
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const result = {
  date: new Date().toISOString(),
  setupMs: { median: median(ups), max: Math.max(...ups) },
  teardownMs: { median: median(downs), max: Math.max(...downs) },
  agentStartMs: agentStart,
  rttByOneWayDelayMs: rtt,
  note: 'RTT measured from the test process through the probe agents (JSON over pipes adds a few ms).',
};
const here = dirname(fileURLToPath(import.meta.url));
mkdirSync(join(here, 'results'), { recursive: true });
writeFileSync(join(here, 'results', 'lab.json'), `${JSON.stringify(result, null, 2)}\n`);
const md = [
  '# NAT lab',
  '',
  `Default topology set-up: median ${result.setupMs.median.toFixed(0)} ms (max ${result.setupMs.max.toFixed(0)}), ` +
    `tear-down median ${result.teardownMs.median.toFixed(0)} ms; probe agent start ${agentStart.toFixed(0)} ms.`,
  '',
  '| one-way delay on natA link | expected extra RTT | min RTT | median | p90 |',
  '|---|---|---|---|---|',
  ...Object.entries(rtt).map(
    ([d, r]) =>
      `| ${d} ms | ${r.expected} ms | ${r.min.toFixed(1)} ms | ${r.median.toFixed(1)} ms | ${r.p90.toFixed(1)} ms |`,
  ),
  '',
  result.note,
  '',
].join('\n');
writeFileSync(join(here, 'results', 'lab.md'), md);
console.log(md);
