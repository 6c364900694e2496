// TCP hole punching in the NAT lab (root): per NAT pair, how often P2P-NAT connects and how long it takes.
// Both peers start together (as a rendezvous "go" makes them) over 20 ms uplinks (40 ms RTT between the NATs).
// Writes bench/results/tcp-punch.json and .md.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, labUnavailableReason, type NatOptions } from '../src/lab/index.js';
import type { LabProcess } from '../src/lab/proc.js';
import { addonStatus } from '../src/net/native.js';

const here = dirname(fileURLToPath(import.meta.url));
const FIXTURE = join(here, '..', 'test', 'lab', 'fixtures', 'tcp-peer.ts');
const TRIALS = Number(process.env.NATPUNCH_BENCH_TRIALS ?? 5);
const UPLINK_DELAY_MS = 20;

const pairs: Array<{ name: string; natA: NatOptions; natB: NatOptions }> = [
  { name: 'full-cone ↔ full-cone', natA: { type: 'full-cone' }, natB: { type: 'full-cone' } },
  {
    name: 'restricted-cone ↔ port-restricted-cone',
    natA: { type: 'restricted-cone' },
    natB: { type: 'port-restricted-cone' },
  },
  {
    name: 'port-restricted ↔ port-restricted (RST)',
    natA: { type: 'port-restricted-cone' },
    natB: { type: 'port-restricted-cone' },
  },
  {
    name: 'port-restricted ↔ port-restricted (silent drop)',
    natA: { type: 'port-restricted-cone', stealth: true },
    natB: { type: 'port-restricted-cone', stealth: true },
  },
  {
    name: 'symmetric-random ↔ port-restricted-cone',
    natA: { type: 'symmetric-random' },
    natB: { type: 'port-restricted-cone' },
  },
];

const reason =
  labUnavailableReason() ||
  (() => {
    const s = addonStatus();
    return s.available ? '' : s.reason;
  })();
if (reason) {
  console.log(`tcp-punch bench skipped: ${reason}`);
  process.exit(0);
}

function median(xs: number[]): number | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const lab = await Lab.up({ links: { natA: { delayMs: UPLINK_DELAY_MS }, natB: { delayMs: UPLINK_DELAY_MS } } });
const rows: Array<Record<string, unknown>> = [];
try {
  const reflector = lab.node('server', FIXTURE, ['reflect']);
  const reflectPort = Number((await reflector.next((m) => m.type === 'ready')).port);
  const start = async (host: string) => {
    const proc = lab.node(host, FIXTURE, ['peer', host, lab.addr('server'), String(reflectPort)]);
    const m = await proc.next((x) => x.type === 'mapped' || x.type === 'failed', { timeoutMs: 20_000 });
    if (m.type !== 'mapped') throw new Error(JSON.stringify(m));
    return { proc, m };
  };
  for (const pair of pairs) {
    await lab.setNat('natA', pair.natA);
    await lab.setNat('natB', pair.natB);
    const times: number[] = [];
    const syns: number[] = [];
    let ok = 0;
    const failures: string[] = [];
    for (let t = 0; t < TRIALS; t++) {
      const [a, b] = await Promise.all([start('a'), start('b')]);
      const procs: LabProcess[] = [a.proc, b.proc];
      try {
        const cands = (m: Record<string, unknown>) => [
          { address: m.address, port: m.port },
          { address: m.localAddress, port: m.localPort },
        ];
        a.proc.send({ type: 'punch', role: 'controlling', candidates: cands(b.m), timeoutMs: 6000 });
        b.proc.send({ type: 'punch', role: 'controlled', candidates: cands(a.m), timeoutMs: 6000 });
        const done = (p: LabProcess) =>
          p.next((x) => x.type === 'punched' || x.type === 'failed', { timeoutMs: 30_000 });
        const [ra, rb] = await Promise.all([done(a.proc), done(b.proc)]);
        if (ra.type === 'punched' && rb.type === 'punched') {
          ok++;
          times.push(Math.max(Number(ra.elapsedMs), Number(rb.elapsedMs)));
          syns.push(Number(ra.attempts) + Number(rb.attempts));
        } else {
          failures.push(String(ra.type === 'failed' ? ra.message : rb.message));
        }
      } finally {
        await Promise.all(procs.map((p) => p.close()));
      }
    }
    const row = {
      pair: pair.name,
      trials: TRIALS,
      connected: ok,
      medianMs: median(times),
      maxMs: times.length ? Math.max(...times) : null,
      medianSyns: median(syns),
      failure: failures[0],
    };
    console.log(JSON.stringify(row));
    rows.push(row);
  }
} finally {
  await lab.down();
}

mkdirSync(join(here, 'results'), { recursive: true });
const meta = { date: new Date().toISOString(), node: process.version, uplinkDelayMs: UPLINK_DELAY_MS, trials: TRIALS };
writeFileSync(join(here, 'results', 'tcp-punch.json'), `${JSON.stringify({ ...meta, rows }, null, 2)}\n`);
const md = [
  `# TCP hole punching (P2P-NAT) in the NAT lab`,
  ``,
  `${meta.date}, Node ${meta.node}; both peers start together; ${UPLINK_DELAY_MS} ms delay on each NAT uplink; ${TRIALS} trials per pair.`,
  `Time = until both sides hold the agreed connection (the later of the two).`,
  ``,
  `| natA ↔ natB | connected | median ms | max ms | median SYNs (both sides) |`,
  `|---|---|---|---|---|`,
  ...rows.map(
    (r) =>
      `| ${r.pair} | ${r.connected}/${r.trials} | ${r.medianMs ?? '–'} | ${r.maxMs ?? '–'} | ${r.medianSyns ?? '–'} |`,
  ),
  ``,
];
writeFileSync(join(here, 'results', 'tcp-punch.md'), md.join('\n'));
