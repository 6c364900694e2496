// Session stream throughput over the NAT lab's shaped link (root only; issue 20): natpunch (listen/connect, one
// MuxStream over Noise over UDX) against plain TCP and against secret-stream over UDX (hyperdht's stack, the same
// libraries under natpunch), interleaved in one invocation (tcp, secretstream, natpunch, ... BENCH_STREAM_LAB_RUNS
// each, default 5).
//   path: a (behind natA, port-restricted cone) → natA → internet → server (public). The link natA↔internet is
//   shaped: BENCH_LINK_MBIT (default 100) Mbit/s each way (tc tbf on its two egress devices) and half of
//   BENCH_LINK_RTT_MS (default 40) one-way delay each way (the lab's NFQUEUE delayer; this kernel has no netem).
//   The sender runs on a, the receiver on server: every stack crosses exactly that link, the same way.
// The receiver measures from its first to its last byte (BENCH_STREAM_LAB_BYTES, default 64 MiB: ~5.4 s at
// 100 Mbit/s, so the ramp-up of every stack is a small share). Writes bench/results/stream-lab.{json,md}.
import { join } from 'node:path';
import { Lab, labUnavailableReason } from '../src/lab/index.js';
import type { LabProcess } from '../src/lab/proc.js';
import { BENCH_DIR, NATPUNCH_BIN } from './lib/harness.js';
import { ensureBuilt } from './lib/build.js';
import { machine, median, ratios, writeResults } from './lib/report.js';
import { socketBufferCaps } from './lib/socket-caps.js';

const skip = labUnavailableReason();
if (skip) {
  console.log(`stream-lab skipped: ${skip}`);
  process.exit(0);
}

const MBIT = Number(process.env.BENCH_LINK_MBIT ?? 100);
const RTT_MS = Number(process.env.BENCH_LINK_RTT_MS ?? 40);
const BYTES = Number(process.env.BENCH_STREAM_LAB_BYTES ?? 64 * 1024 * 1024);
const RUNS = Number(process.env.BENCH_STREAM_LAB_RUNS ?? process.env.BENCH_RUNS ?? 5);
const RDV_PORT = 3478;
/** secretstream-buf: secret-stream with natpunch's socket buffers (see bench/stream.bench.ts). */
const ALL_KINDS = ['tcp', 'secretstream', 'secretstream-buf', 'natpunch'] as const;
type Kind = (typeof ALL_KINDS)[number];
const KINDS: readonly Kind[] = process.env.BENCH_STREAM_LAB_KINDS
  ? (process.env.BENCH_STREAM_LAB_KINDS.split(',') as Kind[])
  : ALL_KINDS;
/** One port per stack, so nothing of one run (a TIME_WAIT, a NAT mapping) can touch the next stack's run. */
const PORT: Record<Kind, number> = { tcp: 4001, secretstream: 4002, 'secretstream-buf': 4004, natpunch: 4003 };
/** A transfer at a tenth of the link rate still finishes within this. */
const TRANSFER_TIMEOUT_MS = Math.max(60_000, ((BYTES * 8) / (MBIT * 1e6)) * 10 * 1000);

type Msg = Record<string, unknown>;
interface Run {
  kind: Kind;
  run: number;
  mbitPerSecond: number;
  seconds: number;
  receiverCpuSeconds: number;
  senderCpuSeconds: number | null;
  /** UDX stacks: the sender's UDX counters once everything was acknowledged (MTU, smoothed RTT, retransmits). */
  senderUdx: Record<string, number> | null;
  /** natpunch: the session's path kind ('direct' expected: a relayed start would measure the relay). */
  path: string | null;
  /** TCP: connect() time, one round trip: shows the link's delay held for this run. */
  connectMs: number | null;
}

const lab = await Lab.up({
  nat: { natA: 'port-restricted-cone' },
  links: { natA: { rateMbit: MBIT, delayMs: RTT_MS / 2 } },
});
const procs = new Set<LabProcess>();
const start = (node: string, script: string, args: string[]) => {
  const p = lab.node(node, script, args);
  procs.add(p);
  return p;
};
const stop = async (p: LabProcess) => {
  procs.delete(p);
  await p.close();
};
try {
  const t0 = machine();
  const server = lab.addr('server');
  let rdv: LabProcess | null = null;
  if (KINDS.includes('natpunch')) {
    ensureBuilt(); // the rendezvous the natpunch peers meet at runs compiled
    rdv = start('server', NATPUNCH_BIN, ['serve', '--port', String(RDV_PORT), '--address', server, '--json']);
    await rdv.next((m) => m.event === 'listening', { timeoutMs: 30_000 });
  }
  const peer = join(BENCH_DIR, 'lib', 'stream-peer.ts');
  const oneRun = async (kind: Kind, run: number): Promise<Run> => {
    const args = (role: string) => [role, kind, String(PORT[kind]), String(BYTES), String(RDV_PORT), server, server];
    const recv = start('server', peer, args('recv'));
    try {
      await recv.next((m) => m.event === 'ready', { timeoutMs: 30_000 });
      const send = start('a', peer, args('send'));
      try {
        const r = (await recv.next((m) => m.event === 'result', { timeoutMs: TRANSFER_TIMEOUT_MS })) as Msg;
        const sent = (await send
          .next((m) => m.event === 'sent', { timeoutMs: 10_000 })
          .catch(() => null)) as Msg | null;
        const udx =
          kind === 'tcp'
            ? null
            : ((await send
                .next((m) => m.event === 'sender-udx', { timeoutMs: 10_000 })
                .catch(() => null)) as Msg | null);
        const path =
          kind === 'secretstream' || kind === 'secretstream-buf'
            ? null
            : ((await send.next((m) => m.event === 'path', { timeoutMs: 1_000 }).catch(() => null)) as Msg | null);
        return {
          kind,
          run,
          mbitPerSecond: r.mbitPerSecond as number,
          seconds: r.seconds as number,
          receiverCpuSeconds: r.cpuSeconds as number,
          senderCpuSeconds: (sent?.senderCpuSeconds as number | undefined) ?? null,
          senderUdx: (udx?.udx as Record<string, number> | undefined) ?? null,
          path: kind === 'natpunch' ? ((path?.kind as string | undefined) ?? null) : null,
          connectMs: kind === 'tcp' ? ((path?.connectMs as number | undefined) ?? null) : null,
        };
      } finally {
        await stop(send);
      }
    } finally {
      await stop(recv);
    }
  };

  const runs: Run[] = [];
  for (let i = 0; i < RUNS; i++) {
    for (const kind of KINDS) {
      const r = await oneRun(kind, i);
      runs.push(r);
      console.log(JSON.stringify(r));
    }
  }
  if (rdv) await stop(rdv);

  const of = (k: Kind) => runs.filter((r) => r.kind === k).map((r) => r.mbitPerSecond);
  const summary = {
    mbitPerSecond: Object.fromEntries(KINDS.map((k) => [k, median(of(k))])),
    natpunchVsTcp: ratios(of('natpunch'), of('tcp')),
    natpunchVsSecretstream: ratios(of('natpunch'), of('secretstream')),
    natpunchVsSecretstreamBuf: ratios(of('natpunch'), of('secretstream-buf')),
    secretstreamVsTcp: ratios(of('secretstream'), of('tcp')),
    /** The link as each run saw it: TCP's connect time (one RTT), UDX's smoothed RTT and MTU, retransmits. */
    tcpConnectMs: runs.filter((r) => r.kind === 'tcp').map((r) => r.connectMs),
    senderUdx: Object.fromEntries(
      KINDS.filter((k) => k !== 'tcp').map((k) => [k, runs.filter((r) => r.kind === k).map((r) => r.senderUdx)]),
    ),
    natpunchPaths: runs.filter((r) => r.kind === 'natpunch').map((r) => r.path),
  };
  const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  const ratioRow = (name: string, r: ReturnType<typeof ratios>) => [
    name,
    `${f(r.median)} (${f(r.min)}–${f(r.max)})`,
    r.pairs.map((x) => f(x)).join(', '),
    '',
  ];
  const linkNote = (k: Kind) =>
    k === 'tcp'
      ? `connect ${summary.tcpConnectMs.map((x) => (x === null ? '—' : x.toFixed(0))).join(', ')} ms`
      : `srtt ${summary.senderUdx[k]!.map((u) => u?.rttMs ?? '—').join(', ')} ms; MTU ${[...new Set(summary.senderUdx[k]!.map((u) => u?.mtu ?? '—'))].join('/')}; retransmits ${summary.senderUdx[k]!.map((u) => u?.retransmits ?? '—').join(', ')}`;
  writeResults('stream-lab', {
    title: `Stream throughput over the NAT lab's ${MBIT} Mbit/s, ${RTT_MS} ms RTT link: natpunch vs TCP vs secret-stream over UDX (interleaved)`,
    start: t0,
    config: { bytes: BYTES, runs: RUNS, mbit: MBIT, rttMs: RTT_MS, kinds: KINDS, socketBufferCaps: socketBufferCaps() },
    summary,
    runs,
    table: [
      ['stack', 'Mbit/s (median)', 'runs', 'the link as the runs saw it'],
      ...KINDS.map((k) => [
        k,
        f(summary.mbitPerSecond[k]!, 1),
        of(k)
          .map((x) => x.toFixed(1))
          .join(', '),
        linkNote(k),
      ]),
      ratioRow('natpunch / tcp', summary.natpunchVsTcp),
      ratioRow('natpunch / secretstream', summary.natpunchVsSecretstream),
      ratioRow('natpunch / secretstream-buf', summary.natpunchVsSecretstreamBuf),
      ratioRow('secretstream / tcp', summary.secretstreamVsTcp),
    ],
    notes: [
      `Path a (behind natA, port-restricted cone) → natA → internet → server; the natA↔internet link shaped to ${MBIT} Mbit/s each way (tc tbf, burst 15kb, latency 200ms) with ${RTT_MS / 2} ms one-way delay each way (NFQUEUE delayer): ${RTT_MS} ms RTT. Every stack crosses exactly that link.`,
      `${BYTES / 1024 / 1024} MiB one way per run in 64 KiB writes; Mbit/s from the receiver's first to last byte (goodput: payload bytes only).`,
      'Ratios are pairwise (run i of each stack), median and min–max. natpunch paths: ' +
        summary.natpunchPaths.map((p) => p ?? '—').join(', ') +
        ' (anything but direct/lan measures a relay).',
      "Processes are not pinned (the lab shares the machine's cores); the delayer runs in userspace, so a loaded machine also delays packets more than the configured delay.",
    ],
  });
} finally {
  for (const p of procs) await p.close().catch(() => undefined);
  await lab.down();
}
