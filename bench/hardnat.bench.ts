// Hard-NAT benchmark (root only): time to a direct session and probes sent per NAT pair, through the lab's
// symmetric NATs, every link 10 ms one-way (a ↔ natA ↔ internet ↔ natB ↔ b: 80 ms RTT end to end).
//   time-to-direct = from the start of the hard punch to an authenticated session (punch + checks + handshake);
//   the NAT measurement and re-observation before it (done once per trial) are reported apart as prepareMs.
//   probes = PROBE packets the spraying / predicting side sent; sockets = birthday sockets the random side opened.
// Pairs: symmetric-sequential vs the 3 cones and vs itself (10 trials), symmetric-random vs the 3 cones (20 trials),
// symmetric-random vs symmetric-random in the opt-in budget mode (default budget, 10 trials).
// NATPUNCH_BENCH_QUICK=1 runs 3 trials per pair. Writes bench/results/hardnat.{json,md}.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { Lab, labUnavailableReason, type NatType } from '../src/lab/index.js';
import { DEFAULT_PREDICTION_WINDOW } from '../src/traversal/predict.js';
import {
  BIRTHDAY_PORT_SPACE,
  DEFAULT_BIRTHDAY_PROBES,
  DEFAULT_BIRTHDAY_SOCKETS,
  DEFAULT_DOUBLE_RANDOM_BUDGET,
  DEFAULT_OPEN_TTL,
  DEFAULT_PROBE_RATE,
  birthdaySuccess,
  doubleRandomSuccess,
} from '../src/traversal/birthday.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = join(here, '..', 'test', 'lab', 'fixtures');
const QUICK = process.env.NATPUNCH_BENCH_QUICK === '1';
const skip = labUnavailableReason();
if (skip) {
  console.log(`hardnat skipped: ${skip}`);
  process.exit(0);
}

type Msg = Record<string, unknown>;
const pct = (xs: number[], p: number) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!);
};

const lab = await Lab.up();
const rows: Array<Record<string, unknown>> = [];
try {
  for (const port of [3478, 3479]) {
    const stun = lab.node('server', join(fixtures, 'stun-server.ts'), [String(port)]);
    await stun.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  }
  const pa = lab.node('a', join(fixtures, 'hardnat-peer.ts'));
  const pb = lab.node('b', join(fixtures, 'hardnat-peer.ts'));
  const ka = ((await pa.next((m) => m.type === 'ready', { timeoutMs: 20_000 })) as Msg).publicKey as string;
  const kb = ((await pb.next((m) => m.type === 'ready', { timeoutMs: 20_000 })) as Msg).publicKey as string;
  for (const link of ['a', 'natA', 'natB', 'b']) await lab.setLink(link, { delayMs: 10 });

  async function trial(extra: Msg): Promise<{ ra: Msg; rb: Msg; prepareMs: number }> {
    const id = randomBytes(4).toString('hex');
    const stun = [3478, 3479].map((port) => ({ host: lab.addr('server'), port }));
    const t0 = performance.now();
    pa.send({ cmd: 'prepare', trial: id, stun });
    pb.send({ cmd: 'prepare', trial: id, stun });
    const [aa, ab] = (await Promise.all(
      [pa, pb].map((p) =>
        p.next((m) => (m.type === 'advert' || m.type === 'error') && m.trial === id, { timeoutMs: 20_000 }),
      ),
    )) as Msg[];
    const prepareMs = performance.now() - t0;
    if (aa!.type !== 'advert' || ab!.type !== 'advert') return { ra: aa!, rb: ab!, prepareMs };
    const common = { cmd: 'go', trial: id, connectionId: randomBytes(16).toString('hex'), size: 1024, ...extra };
    pb.send({ ...common, role: 'listen', peerKey: ka, local: ab!.advert, peer: aa!.advert });
    pa.send({ ...common, role: 'connect', peerKey: kb, local: aa!.advert, peer: ab!.advert });
    const done = (m: Msg) => (m.type === 'result' || m.type === 'error') && m.trial === id;
    const [ra, rb] = (await Promise.all([
      pa.next(done, { timeoutMs: 120_000 }),
      pb.next(done, { timeoutMs: 120_000 }),
    ])) as Msg[];
    return { ra: ra!, rb: rb!, prepareMs };
  }

  const seqTrials = QUICK ? 3 : 10;
  const randTrials = QUICK ? 3 : 20;
  const budgetTrials = QUICK ? 2 : 10;
  const plan: Array<{ natA: NatType; natB: NatType; trials: number; extra?: Msg; note: string }> = [
    ...(['full-cone', 'restricted-cone', 'port-restricted-cone', 'symmetric-sequential'] as NatType[]).map((natB) => ({
      natA: 'symmetric-sequential' as NatType,
      natB,
      trials: seqTrials,
      note: `prediction window ${DEFAULT_PREDICTION_WINDOW}`,
    })),
    ...(['full-cone', 'restricted-cone', 'port-restricted-cone'] as NatType[]).map((natB) => ({
      natA: 'symmetric-random' as NatType,
      natB,
      trials: randTrials,
      note: `k=${DEFAULT_BIRTHDAY_SOCKETS} sockets, p=${DEFAULT_BIRTHDAY_PROBES} probes at ${DEFAULT_PROBE_RATE}/s, open TTL ${DEFAULT_OPEN_TTL}`,
    })),
    {
      natA: 'symmetric-random',
      natB: 'symmetric-random',
      trials: budgetTrials,
      extra: { budget: DEFAULT_DOUBLE_RANDOM_BUDGET },
      note: `budget ${DEFAULT_DOUBLE_RANDOM_BUDGET.sockets} sockets, ${DEFAULT_DOUBLE_RANDOM_BUDGET.probes} probes, ${DEFAULT_DOUBLE_RANDOM_BUDGET.seconds} s each side`,
    },
  ];
  for (const p of plan) {
    await new Promise((r) => setTimeout(r, 800));
    await lab.setNat('natA', p.natA);
    await lab.setNat('natB', p.natB);
    const times: number[] = [];
    const probes: number[] = [];
    const sockets: number[] = [];
    const prepares: number[] = [];
    let direct = 0;
    let estimate: number | null = null;
    const failures: string[] = [];
    for (let i = 0; i < p.trials; i++) {
      const { ra, rb, prepareMs } = await trial(p.extra ?? {});
      prepares.push(prepareMs);
      const est = pa.drain((m) => m.type === 'estimate');
      if (est.length) estimate = (est[0] as Msg).success as number;
      pb.drain((m) => m.type === 'estimate');
      const sent = Number(ra.probesSent ?? 0) + Number(rb.probesSent ?? 0);
      probes.push(sent);
      sockets.push(Number(ra.socketsOpened ?? 0) + Number(rb.socketsOpened ?? 0));
      if (
        ra.type === 'result' &&
        rb.type === 'result' &&
        (ra.path as Msg).kind === 'direct' &&
        ra.gotHash === rb.sentHash
      ) {
        direct++;
        times.push(ra.connectMs as number);
      } else failures.push(String(ra.message ?? rb.message ?? 'no direct path'));
    }
    const row = {
      pair: `${p.natA} ↔ ${p.natB}`,
      trials: p.trials,
      direct,
      successRate: direct / p.trials,
      timeToDirectMs: { median: pct(times, 50), p90: pct(times, 90) },
      probesSent: { median: pct(probes, 50), p90: pct(probes, 90) },
      socketsOpened: { median: pct(sockets, 50) },
      prepareMs: { median: pct(prepares, 50) },
      estimate,
      parameters: p.note,
      failures: [...new Set(failures)].slice(0, 3),
    };
    console.log(JSON.stringify(row));
    rows.push(row);
  }
} finally {
  await lab.down();
}

const parameters = {
  predictionWindow: DEFAULT_PREDICTION_WINDOW,
  birthday: {
    sockets: DEFAULT_BIRTHDAY_SOCKETS,
    probes: DEFAULT_BIRTHDAY_PROBES,
    portSpace: BIRTHDAY_PORT_SPACE,
    rate: DEFAULT_PROBE_RATE,
    openTtl: DEFAULT_OPEN_TTL,
    success: birthdaySuccess(DEFAULT_BIRTHDAY_SOCKETS, DEFAULT_BIRTHDAY_PROBES),
  },
  doubleRandomBudget: {
    ...DEFAULT_DOUBLE_RANDOM_BUDGET,
    success: doubleRandomSuccess(DEFAULT_DOUBLE_RANDOM_BUDGET.probes, DEFAULT_DOUBLE_RANDOM_BUDGET.probes),
  },
  links: '10 ms one-way on each of a, natA, natB, b',
};
mkdirSync(join(here, 'results'), { recursive: true });
writeFileSync(
  join(here, 'results', 'hardnat.json'),
  `${JSON.stringify({ date: new Date().toISOString(), quick: QUICK, parameters, rows }, null, 2)}\n`,
);
const md = [
  '# hardnat: time to a direct session through hard NATs (NAT lab, 10 ms per link)',
  '',
  `Prediction window ${parameters.predictionWindow}; birthday k=${parameters.birthday.sockets}, p=${parameters.birthday.probes}, N=${BIRTHDAY_PORT_SPACE}, ${DEFAULT_PROBE_RATE} probes/s, open TTL ${DEFAULT_OPEN_TTL} (P = ${parameters.birthday.success.toFixed(5)}); double-random budget ${DEFAULT_DOUBLE_RANDOM_BUDGET.sockets} sockets / ${DEFAULT_DOUBLE_RANDOM_BUDGET.probes} probes / ${DEFAULT_DOUBLE_RANDOM_BUDGET.seconds} s (estimate ${(parameters.doubleRandomBudget.success * 100).toFixed(1)}%).`,
  '',
  '| pair | direct | time to direct median / p90 (ms) | probes sent median / p90 | sockets | prepare median (ms) |',
  '|---|---|---|---|---|---|',
  ...rows.map((r) => {
    const t = r.timeToDirectMs as { median: number | null; p90: number | null };
    const pr = r.probesSent as { median: number | null; p90: number | null };
    return `| ${String(r.pair)} | ${String(r.direct)}/${String(r.trials)} | ${t.median ?? '-'} / ${t.p90 ?? '-'} | ${pr.median ?? '-'} / ${pr.p90 ?? '-'} | ${(r.socketsOpened as { median: number | null }).median ?? '-'} | ${(r.prepareMs as { median: number | null }).median ?? '-'} |`;
  }),
  '',
  'time to direct: hard punch + authenticated checks + Noise handshake (the connecting side); prepare: NAT measurement (2 + 5 STUN Bindings) and re-observation, once per trial.',
  '',
];
writeFileSync(join(here, 'results', 'hardnat.md'), md.join('\n'));
console.log(md.join('\n'));
