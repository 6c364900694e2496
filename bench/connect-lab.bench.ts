// NAT lab benchmark (root only): time from connect() (by name, through the real rendezvous) to the first
// authenticated byte at the listener, per cone NAT pair, with 20 ms one-way delay on every link; against the floor
// computed from the same links: one trip A→server→B plus one trip B→A. Writes bench/results/connect-lab.{json,md}.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { Lab, labUnavailableReason, type NatType } from '../src/lab/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = join(here, '..', 'test', 'lab', 'fixtures');
const DELAY = Number(process.env.DELAY ?? 20);
const RUNS = 3;
const PAIRS: Array<[NatType, NatType]> = process.env.ONLY_PRC
  ? [['port-restricted-cone', 'port-restricted-cone']]
  : [
      ['full-cone', 'full-cone'],
      ['restricted-cone', 'restricted-cone'],
      ['port-restricted-cone', 'port-restricted-cone'],
      ['full-cone', 'port-restricted-cone'],
      ['port-restricted-cone', 'full-cone'],
    ];
const skip = labUnavailableReason();
if (skip) {
  console.log(`connect-lab skipped: ${skip}`);
  process.exit(0);
}

type Msg = Record<string, unknown>;
const links = Object.fromEntries(['a', 'natA', 'b', 'natB', 'server'].map((l) => [l, { delayMs: DELAY }]));
const lab = await Lab.up({ links });
try {
  const serve = lab.node('server', join(fixtures, 'serve-node.ts'), ['3478']);
  await serve.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  const pa = lab.node('a', join(fixtures, 'punch-peer.ts'));
  const pb = lab.node('b', join(fixtures, 'punch-peer.ts'));
  await pa.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  await pb.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  const server = `${lab.addr('server')}:3478`;
  // a→natA→server, server→natB→b, then b→natB→natA→a: 3 + 3 + 4 links.
  const floorMs = (3 + 3 + 4) * DELAY;
  const rows: Array<{ natA: string; natB: string; firstByteMs: number[]; phases: Msg }> = [];
  for (const [natA, natB] of PAIRS) {
    await lab.setNat('natA', natA);
    await lab.setNat('natB', natB);
    const firstByteMs: number[] = [];
    let phases: Msg = {};
    for (let i = 0; i < RUNS; i++) {
      const id = randomBytes(4).toString('hex');
      pb.send({ cmd: 'rv', trial: id, role: 'listen', server, name: `b-${id}`, size: 1 });
      const lm = (await pb.next((m) => (m.type === 'listening' || m.type === 'error') && m.trial === id, {
        timeoutMs: 15_000,
      })) as Msg;
      if (lm.type !== 'listening') throw new Error(`listen failed: ${JSON.stringify(lm)}`);
      await new Promise((r) => setTimeout(r, 200));
      pa.send({ cmd: 'rv', trial: id, role: 'connect', server, name: `b-${id}`, size: 1 });
      const done = (m: Msg) => (m.type === 'result' || m.type === 'error') && m.trial === id;
      const ra = (await pa.next(done, { timeoutMs: 60_000 })) as Msg;
      if (ra.type !== 'result') throw new Error(`connect failed: ${JSON.stringify(ra)}`);
      const rb = (await pb.next(done, { timeoutMs: 60_000 })) as Msg;
      if (ra.type !== 'result' || rb.type !== 'result') throw new Error(`connect failed: ${JSON.stringify([ra, rb])}`);
      firstByteMs.push((rb.firstByteAt as number) - (ra.startedAt as number));
      phases = Object.fromEntries(
        Object.entries(ra)
          .filter(([k]) => k.endsWith('Ms'))
          .map(([k, v]) => [k, Math.round(v as number)]),
      );
    }
    rows.push({ natA, natB, firstByteMs, phases });
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const result = {
    name: 'connect-lab',
    date: new Date().toISOString(),
    delayPerLinkMs: DELAY,
    floorMs,
    runs: RUNS,
    pairs: rows.map((r) => ({
      natA: r.natA,
      natB: r.natB,
      firstByteMsMedian: median(r.firstByteMs),
      ratio: Number((median(r.firstByteMs) / floorMs).toFixed(2)),
      raw: r.firstByteMs,
      lastPhasesMs: r.phases,
    })),
  };
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'connect-lab.json'), `${JSON.stringify(result, null, 2)}\n`);
  const md = [
    '# connect-lab',
    '',
    `connect() by name through the rendezvous to the first authenticated byte at the listener; NAT lab, ${DELAY} ms one-way on every link; floor = one trip A→server→B plus one trip B→A = ${floorMs} ms. Median of ${RUNS}. ${result.date}.`,
    '',
    '| A behind | B behind | first byte (ms) | × floor (goal ≤ 1.2) |',
    '|---|---|---|---|',
    ...result.pairs.map((p) => `| ${p.natA} | ${p.natB} | ${p.firstByteMsMedian} | ${p.ratio} |`),
    '',
    'Where the time goes (connecting side, last run, ms since connect()): ' +
      JSON.stringify(result.pairs[0]?.lastPhasesMs),
    '',
  ].join('\n');
  writeFileSync(join(here, 'results', 'connect-lab.md'), md);
  console.log(md);
} finally {
  await lab.down();
}
