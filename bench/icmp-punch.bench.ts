// NAT lab benchmark (root only): time to an authenticated session through ICMP hole punching.
//   server on b behind natB (port-restricted cone) probing 3.3.3.3 (dropped inside the lab) every 1000 ms (the
//   default); client on the public `server` host; links 'natB' and 'server' each with 20 ms one-way delay (80 ms RTT).
//   Measured in the client: from connectIcmp() to the established session (knock → server's checks → client's
//   checks → nomination → Noise XX), then 64 KiB each way.
// Writes bench/results/icmp-punch.{json,md}.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, labUnavailableReason } from '../src/lab/index.js';
import { addonStatus } from '../src/net/native.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixture = join(here, '..', 'test', 'lab', 'fixtures', 'icmp-peer.ts');
const RUNS = 5;
const skip = labUnavailableReason() || (addonStatus().available ? '' : 'native addon unavailable');
if (skip) {
  console.log(`icmp-punch skipped: ${skip}`);
  process.exit(0);
}

type Msg = Record<string, unknown>;
const lab = await Lab.up({
  nat: { natB: 'port-restricted-cone' },
  links: { natB: { delayMs: 20 }, server: { delayMs: 20 } },
});
const sessionMs: number[] = [];
try {
  for (let i = 0; i < RUNS; i++) {
    const server = lab.node('b', fixture, ['server', '2222', '3.3.3.3', '1000']);
    try {
      const ready = (await server.next((m) => m.type === 'ready', { timeoutMs: 30_000 })) as Msg;
      const client = lab.node('server', fixture, [
        'client',
        lab.publicAddr('natB'),
        '2222',
        '3.3.3.3',
        String(ready.publicKey),
        '15000',
      ]);
      try {
        const s = (await client.next((m) => m.type === 'session' || m.type === 'error', { timeoutMs: 45_000 })) as Msg;
        if (s.type !== 'session') throw new Error(`run ${i}: ${JSON.stringify(s)}`);
        sessionMs.push(s.elapsedMs as number);
        await client.next((m) => m.type === 'done', { timeoutMs: 30_000 });
      } finally {
        await client.close();
      }
    } finally {
      await server.close();
    }
  }
} finally {
  await lab.down();
}

const sorted = [...sessionMs].sort((a, b) => a - b);
const median = sorted[Math.floor(sorted.length / 2)]!;
const result = {
  bench: 'icmp-punch',
  date: new Date().toISOString(),
  runs: RUNS,
  rttMs: 80,
  echoIntervalMs: 1000,
  sessionMs,
  medianSessionMs: median,
};
const out = join(here, 'results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'icmp-punch.json'), `${JSON.stringify(result, null, 2)}\n`);
writeFileSync(
  join(out, 'icmp-punch.md'),
  `# icmp-punch\n\nServer behind a port-restricted cone (Linux NAT in the lab), public client, 80 ms RTT, echo interval 1000 ms.\n\n` +
    `| runs | time to authenticated session (median) | all runs |\n|---|---|---|\n| ${RUNS} | ${median} ms | ${sessionMs.join(', ')} ms |\n`,
);
console.log(`icmp-punch: median ${median} ms to the session (${sessionMs.join(', ')})`);
