// Session stream throughput between two processes on loopback: natpunch (listen/connect, one MuxStream over Noise
// over UDX) against hyperdht's stack (secret-stream over a udx-native stream: the same libraries underneath) and
// plain TCP, interleaved in one invocation (tcp, secretstream, natpunch, ... BENCH_STREAM_RUNS each), each run in a private
// network namespace, receiver and sender pinned to different cores. Loopback has no delay or loss: this measures the
// CPU cost per byte of each stack. Writes bench/results/stream.{json,md}. (The lab link comparison, 100 Mbit/s with
// 40 ms RTT, is bench/stream-lab.bench.ts.)
import { join } from 'node:path';
import { BENCH_DIR, CORES, Netns, NATPUNCH_BIN, stopPid, waitFor } from './lib/harness.js';
import { ensureBuilt } from './lib/build.js';
import { machine, median, ratios, writeResults } from './lib/report.js';
import { socketBufferCaps } from './lib/socket-caps.js';
import { SOCKET_BUFFER_BYTES } from '../src/net/udx.js';

/**
 * 256 MiB per transfer (2–3 s on loopback) and 9 interleaved runs: with 128 MiB and 5 runs the pairwise ratios
 * spread 0.78–1.17 on a quiet machine (one loss burst in a run moves its rate by a fifth), so one median said little.
 * 27 transfers stay under 5 minutes.
 */
const BYTES = Number(process.env.BENCH_STREAM_BYTES ?? 256 * 1024 * 1024);
const RUNS = Number(process.env.BENCH_STREAM_RUNS ?? process.env.BENCH_RUNS ?? 9);
const PORT = 4000;
const RDV_PORT = 3478;
/**
 * secretstream: hyperdht's stack as hyperdht configures it (the kernel's default socket buffers); secretstream-buf:
 * the same with natpunch's 4 MiB socket buffers, so the table shows what of natpunch's lead is its buffers.
 */
const ALL_KINDS = ['tcp', 'secretstream', 'secretstream-buf', 'natpunch'] as const;
type Kind = (typeof ALL_KINDS)[number];
/** BENCH_STREAM_KINDS=natpunch,secretstream runs a subset (profiling); the default is all four, interleaved. */
const KINDS: readonly Kind[] = process.env.BENCH_STREAM_KINDS
  ? (process.env.BENCH_STREAM_KINDS.split(',') as Kind[])
  : ALL_KINDS;

interface Run {
  kind: Kind;
  run: number;
  mbitPerSecond: number;
  seconds: number;
  receiverCpuSeconds: number;
  senderCpuSeconds: number;
  /** UDX stacks: the sender's UDX stream counters (MTU reached, packets, retransmits, RTOs); null for TCP. */
  senderUdx: Record<string, number> | null;
  /** natpunch: the path the session took ('direct' expected on loopback). */
  path: string | null;
}

/** The JSON event lines a stream-peer printed so far. */
function events(out: string): Array<Record<string, unknown>> {
  return out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
const find = (out: string, event: string) => events(out).find((e) => e.event === event);

async function oneRun(kind: Kind, run: number): Promise<Run> {
  const ns = new Netns('strm');
  const peer = join(BENCH_DIR, 'lib', 'stream-peer.ts');
  const rdv =
    kind === 'natpunch'
      ? ns.spawn(process.execPath, [
          NATPUNCH_BIN,
          'serve',
          '--port',
          String(RDV_PORT),
          '--address',
          '127.0.0.1',
          '--workers',
          '1',
          '--json',
        ])
      : undefined;
  let rdvOut = '';
  rdv?.stdout!.on('data', (d: Buffer) => (rdvOut += d.toString()));
  const procs = rdv ? [rdv] : [];
  try {
    if (rdv) await waitFor(async () => rdvOut.includes('"listening"'), 'rendezvous');
    const recv = ns.spawn(
      process.execPath,
      ['--import', 'tsx', peer, 'recv', kind, String(PORT), String(BYTES), String(RDV_PORT)],
      CORES.server1,
    );
    procs.push(recv);
    let out = '';
    recv.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(async () => find(out, 'ready') !== undefined, `${kind} receiver`, 30_000);
    const sender = ns.spawn(
      process.execPath,
      ['--import', 'tsx', peer, 'send', kind, String(PORT), String(BYTES), String(RDV_PORT)],
      CORES.load,
    );
    procs.push(sender);
    let sentOut = '';
    sender.stdout!.on('data', (d: Buffer) => (sentOut += d.toString()));
    await waitFor(async () => find(out, 'result') !== undefined, `${kind} transfer`, 300_000);
    const r = find(out, 'result') as { mbitPerSecond: number; seconds: number; cpuSeconds: number };
    // The sender reports once its last write was accepted, then its UDX counters once everything was acknowledged;
    // it keeps its socket open (stopped below by PID).
    await waitFor(
      async () => find(sentOut, kind === 'tcp' ? 'sent' : 'sender-udx') !== undefined,
      `${kind} sender report`,
      10_000,
    ).catch(() => undefined);
    const sent = find(sentOut, 'sent') as { senderCpuSeconds: number } | undefined;
    const udx = find(sentOut, 'sender-udx') as { udx: Record<string, number> | null } | undefined;
    const path = find(sentOut, 'path') as { kind: string } | undefined;
    return {
      kind,
      run,
      mbitPerSecond: r.mbitPerSecond,
      seconds: r.seconds,
      receiverCpuSeconds: r.cpuSeconds,
      senderCpuSeconds: sent?.senderCpuSeconds ?? NaN,
      senderUdx: udx?.udx ?? null,
      path: path?.kind ?? null,
    };
  } finally {
    for (const p of procs.reverse()) await stopPid(p);
    ns.close();
  }
}

async function main(): Promise<void> {
  if (KINDS.includes('natpunch')) ensureBuilt(); // the rendezvous the natpunch peers meet at runs compiled
  const start = machine();
  const runs: Run[] = [];
  for (let i = 0; i < RUNS; i++) {
    for (const kind of KINDS) {
      const r = await oneRun(kind, i);
      runs.push(r);
      console.log(JSON.stringify(r));
    }
  }
  const of = (k: Kind) => runs.filter((r) => r.kind === k).map((r) => r.mbitPerSecond);
  /** CPU seconds per GiB moved: what the stack costs, independent of how busy the machine was. */
  const cpuPerGiB = (k: Kind, side: 'receiverCpuSeconds' | 'senderCpuSeconds') =>
    median(runs.filter((r) => r.kind === k).map((r) => (r[side] * 1024 ** 3) / BYTES));
  const summary = {
    mbitPerSecond: Object.fromEntries(KINDS.map((k) => [k, median(of(k))])),
    receiverCpuSecondsPerGiB: Object.fromEntries(KINDS.map((k) => [k, cpuPerGiB(k, 'receiverCpuSeconds')])),
    senderCpuSecondsPerGiB: Object.fromEntries(KINDS.map((k) => [k, cpuPerGiB(k, 'senderCpuSeconds')])),
    natpunchVsSecretstream: ratios(of('natpunch'), of('secretstream')),
    natpunchVsSecretstreamBuf: ratios(of('natpunch'), of('secretstream-buf')),
    natpunchVsTcp: ratios(of('natpunch'), of('tcp')),
    /** Retransmitted UDX packets per run (loss in the receiver's socket buffer): what makes single runs jump. */
    senderRetransmits: Object.fromEntries(
      KINDS.filter((k) => k !== 'tcp').map((k) => [
        k,
        runs.filter((r) => r.kind === k).map((r) => r.senderUdx?.retransmits ?? null),
      ]),
    ),
  };
  const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  const ratioRow = (name: string, r: ReturnType<typeof ratios>) => [
    name,
    `${f(r.median)} (${f(r.min)}–${f(r.max)})`,
    r.pairs.map((x) => f(x)).join(', '),
    '',
    '',
  ];
  writeResults('stream', {
    title: 'Stream throughput on loopback, two processes: natpunch vs secret-stream over UDX vs TCP (interleaved)',
    start,
    config: { bytes: BYTES, runs: RUNS, cores: CORES, kinds: KINDS, socketBufferCaps: socketBufferCaps() },
    summary,
    runs,
    table: [
      ['stack', 'Mbit/s (median)', 'runs', 'receiver / sender CPU s per GiB (median)', 'UDX retransmits per run'],
      ...KINDS.map((k) => [
        k,
        f(summary.mbitPerSecond[k]!, 0),
        of(k)
          .map((x) => x.toFixed(0))
          .join(', '),
        `${f(summary.receiverCpuSecondsPerGiB[k]!)} / ${f(summary.senderCpuSecondsPerGiB[k]!)}`,
        (summary.senderRetransmits[k] ?? []).map((x) => (x === null ? '—' : String(x))).join(', '),
      ]),
      ratioRow('natpunch / secretstream', summary.natpunchVsSecretstream),
      ratioRow('natpunch / secretstream-buf', summary.natpunchVsSecretstreamBuf),
      ratioRow('natpunch / tcp', summary.natpunchVsTcp),
    ],
    notes: [
      `${BYTES / 1024 / 1024} MiB per run in 64 KiB writes; Mbit/s from the receiver's first to last byte; receiver on core ${CORES.server1}, sender on core ${CORES.load}.`,
      'Ratios are pairwise (run i of each stack), median and min–max.',
      `secretstream runs with the kernel's default socket buffers (as hyperdht leaves them); secretstream-buf with natpunch's (${SOCKET_BUFFER_BYTES / 1024 / 1024} MiB requested, capped by net.core.rmem_max/wmem_max): natpunch / secretstream-buf is the comparison of the stacks alone.`,
      "CPU per GiB: the receiver's process CPU from its first to last byte; the sender's from its first write until its last write was accepted (what it still retransmits after that is not counted). Both include every thread of the process (garbage collection helpers too).",
    ],
  });
}

await main();
