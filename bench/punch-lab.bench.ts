// NAT lab benchmark (root only): a punched session over shaped links vs plain TCP over the same links.
//   path: a (behind natA, port-restricted cone) ↔ server (public); links 'natA' and 'server' each 100 Mbit/s with
//   10 ms one-way delay, so the path has 40 ms RTT. Both the session and TCP cross exactly these two links.
// Writes bench/results/punch-lab.{json,md}.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { Lab, labUnavailableReason } from '../src/lab/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = join(here, '..', 'test', 'lab', 'fixtures');
const BYTES = 32 * 1024 * 1024;
const RUNS = 3;
const skip = labUnavailableReason();
if (skip) {
  console.log(`punch-lab skipped: ${skip}`);
  process.exit(0);
}

type Msg = Record<string, unknown>;
const lab = await Lab.up({
  nat: { natA: 'port-restricted-cone' },
  links: { natA: { rateMbit: 100, delayMs: 10 }, server: { rateMbit: 100, delayMs: 10 } },
});
try {
  const stun = lab.node('server', join(fixtures, 'stun-server.ts'), ['3478']);
  await stun.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  const pa = lab.node('a', join(fixtures, 'punch-peer.ts'));
  const ps = lab.node('server', join(fixtures, 'punch-peer.ts'));
  const ka = ((await pa.next((m) => m.type === 'ready', { timeoutMs: 20_000 })) as Msg).publicKey as string;
  const ks = ((await ps.next((m) => m.type === 'ready', { timeoutMs: 20_000 })) as Msg).publicKey as string;

  async function session(size: number, replySize: number): Promise<Msg> {
    const id = randomBytes(4).toString('hex');
    const stunAt = { host: lab.addr('server'), port: 3478 };
    pa.send({ cmd: 'prepare', trial: id, stun: stunAt });
    ps.send({ cmd: 'prepare', trial: id, stun: stunAt });
    const [ca, cs] = await Promise.all(
      [pa, ps].map(
        (p) => p.next((m) => m.type === 'candidates' && m.trial === id, { timeoutMs: 15_000 }) as Promise<Msg>,
      ),
    );
    const connectionId = randomBytes(16).toString('hex');
    ps.send({
      cmd: 'go',
      trial: id,
      role: 'listen',
      connectionId,
      peerKey: ka,
      candidates: ca!.candidates,
      size,
      replySize,
    });
    pa.send({
      cmd: 'go',
      trial: id,
      role: 'connect',
      connectionId,
      peerKey: ks,
      candidates: cs!.candidates,
      size,
      replySize,
    });
    const done = (m: Msg) => (m.type === 'result' || m.type === 'error') && m.trial === id;
    const [ra] = await Promise.all([pa.next(done, { timeoutMs: 120_000 }), ps.next(done, { timeoutMs: 120_000 })]);
    if ((ra as Msg).type !== 'result') throw new Error(`session failed: ${JSON.stringify(ra)}`);
    return ra as Msg;
  }

  const connectMs: number[] = [];
  const phases: Array<Record<string, number>> = [];
  const sessionMbps: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const small = await session(1, 1);
    connectMs.push(small.connectMs as number);
    phases.push(
      Object.fromEntries(
        Object.entries(small)
          .filter(([k]) => k.endsWith('Ms'))
          .map(([k, v]) => [k, Math.round(v as number)]),
      ),
    );
    const big = await session(BYTES, 0);
    sessionMbps.push((BYTES * 8) / ((big.transferMs as number) / 1000) / 1e6);
  }
  const sink = lab.node('server', join(fixtures, 'tcp-bulk.ts'), ['serve', '5001']);
  await sink.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  const tcpMbps: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const src = lab.node('a', join(fixtures, 'tcp-bulk.ts'), ['send', lab.addr('server'), '5001', String(BYTES)]);
    const r = (await src.next((m) => m.type === 'result' || m.type === 'error', { timeoutMs: 120_000 })) as Msg;
    if (r.type !== 'result') throw new Error(`tcp failed: ${JSON.stringify(r)}`);
    tcpMbps.push((BYTES * 8) / ((r.transferMs as number) / 1000) / 1e6);
    await src.close();
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const result = {
    name: 'punch-lab',
    date: new Date().toISOString(),
    links: '2 links (natA uplink, server uplink), each 100 Mbit/s, 10 ms one-way: 40 ms RTT',
    bytes: BYTES,
    runs: RUNS,
    connectMsMedian: Number(median(connectMs).toFixed(1)),
    floorMs: 40,
    sessionMbpsMedian: Number(median(sessionMbps).toFixed(1)),
    tcpMbpsMedian: Number(median(tcpMbps).toFixed(1)),
    ratio: Number((median(sessionMbps) / median(tcpMbps)).toFixed(3)),
    raw: { connectMs, phases, sessionMbps, tcpMbps },
  };
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'punch-lab.json'), `${JSON.stringify(result, null, 2)}\n`);
  const md = [
    '# punch-lab',
    '',
    `NAT lab, ${result.links}; a behind a port-restricted cone NAT, the peer public. ${BYTES / 1024 / 1024} MiB one way, median of ${RUNS}. ${result.date}.`,
    '',
    '| measure | value |',
    '|---|---|',
    `| connect() in direct mode (checks + Noise XX + HELLO), no rendezvous | ${result.connectMsMedian} ms (one RTT = 40 ms) |`,
    `| session goodput (one stream, punched path) | ${result.sessionMbpsMedian} Mbit/s |`,
    `| plain TCP goodput, same links | ${result.tcpMbpsMedian} Mbit/s |`,
    `| session / TCP | ${(result.ratio * 100).toFixed(0)} % (goal ≥ 90 %) |`,
    '',
  ].join('\n');
  writeFileSync(join(here, 'results', 'punch-lab.md'), md);
  console.log(md);
} finally {
  await lab.down();
}
