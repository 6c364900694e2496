// Session stream throughput between two processes on loopback: natpunch (listen/connect, one MuxStream over Noise
// over UDX) against hyperdht's stack (secret-stream over a udx-native stream: the same libraries underneath) and
// plain TCP, interleaved in one invocation (tcp, secretstream, natpunch, ... BENCH_RUNS each), each run in a private
// network namespace, receiver and sender pinned to different cores. Loopback has no delay or loss: this measures the
// CPU cost per byte of each stack. Writes bench/results/stream.{json,md}. (The lab link comparison, 100 Mbit/s with
// 40 ms, is bench/tunnel.bench.ts's job.)
import { join } from 'node:path';
import { BENCH_DIR, CORES, Netns, NATPUNCH_BIN, RUNS, stopPid, waitFor } from './lib/harness.js';
import { ensureBuilt } from './lib/build.js';
import { machine, median, ratios, writeResults } from './lib/report.js';

/** 128 MiB per transfer: 15 transfers (5 interleaved runs of 3 stacks) stay under 5 minutes on loopback. */
const BYTES = Number(process.env.BENCH_STREAM_BYTES ?? 128 * 1024 * 1024);
const PORT = 4000;
const RDV_PORT = 3478;
const ALL_KINDS = ['tcp', 'secretstream', 'natpunch'] as const;
type Kind = (typeof ALL_KINDS)[number];
/** BENCH_STREAM_KINDS=natpunch,secretstream runs a subset (profiling); the default is all three, interleaved. */
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
}

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
    await waitFor(async () => out.includes('READY'), `${kind} receiver`, 30_000);
    const sender = ns.spawn(
      process.execPath,
      ['--import', 'tsx', peer, 'send', kind, String(PORT), String(BYTES), String(RDV_PORT)],
      CORES.load,
    );
    procs.push(sender);
    let sentOut = '';
    sender.stdout!.on('data', (d: Buffer) => (sentOut += d.toString()));
    await waitFor(async () => out.split('\n').some((l) => l.startsWith('{')), `${kind} transfer`, 300_000);
    const r = JSON.parse(out.split('\n').find((l) => l.startsWith('{'))!) as {
      mbitPerSecond: number;
      seconds: number;
      cpuSeconds: number;
    };
    // The sender reports once its last write was accepted; it keeps its socket open (stopped below by PID).
    await waitFor(async () => sentOut.includes('{'), `${kind} sender report`, 10_000).catch(() => undefined);
    const senderCpu = JSON.parse(sentOut.split('\n').find((l) => l.startsWith('{')) ?? '{"senderCpuSeconds":null}') as {
      senderCpuSeconds: number;
    };
    return {
      kind,
      run,
      mbitPerSecond: r.mbitPerSecond,
      seconds: r.seconds,
      receiverCpuSeconds: r.cpuSeconds,
      senderCpuSeconds: senderCpu.senderCpuSeconds,
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
    natpunchVsTcp: ratios(of('natpunch'), of('tcp')),
  };
  const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  writeResults('stream', {
    title: 'Stream throughput on loopback, two processes: natpunch vs secret-stream over UDX vs TCP (interleaved)',
    start,
    config: { bytes: BYTES, runs: RUNS, cores: CORES },
    summary,
    runs,
    table: [
      ['stack', 'Mbit/s (median)', 'runs', 'receiver / sender CPU s per GiB (median)'],
      ...KINDS.map((k) => [
        k,
        f(summary.mbitPerSecond[k]!, 0),
        of(k)
          .map((x) => x.toFixed(0))
          .join(', '),
        `${f(summary.receiverCpuSecondsPerGiB[k]!)} / ${f(summary.senderCpuSecondsPerGiB[k]!)}`,
      ]),
      [
        'natpunch / secretstream',
        `${f(summary.natpunchVsSecretstream.median)} (${f(summary.natpunchVsSecretstream.min)}–${f(summary.natpunchVsSecretstream.max)})`,
        summary.natpunchVsSecretstream.pairs.map((x) => f(x)).join(', '),
        '',
      ],
      [
        'natpunch / tcp',
        `${f(summary.natpunchVsTcp.median)} (${f(summary.natpunchVsTcp.min)}–${f(summary.natpunchVsTcp.max)})`,
        summary.natpunchVsTcp.pairs.map((x) => f(x)).join(', '),
        '',
      ],
    ],
    notes: [
      `${BYTES / 1024 / 1024} MiB per run in 64 KiB writes; Mbit/s from the receiver's first to last byte; receiver on core ${CORES.server1}, sender on core ${CORES.load}.`,
      'Ratios are pairwise (run i of each stack), median and min–max.',
      "CPU per GiB: the receiver's process CPU from its first to last byte; the sender's from its first write until its last write was accepted (what it still retransmits after that is not counted). Both include every thread of the process (garbage collection helpers too).",
    ],
  });
}

await main();
