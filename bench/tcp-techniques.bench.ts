// Which TCP traversal technique connects across which lab NAT (root): P2P-NAT, STUNT #2, NATBlaster, STUNT #1.
// Both NATs of a row behave alike; 20 ms delay on each NAT uplink (40 ms RTT between the NATs). One attempt per cell
// (NATPUNCH_BENCH_TRIALS to repeat); a cell is "ok" only when the connection carried data both ways intact.
// Two more columns run the whole connect({ transport: 'tcp' }) between the peers (Noise session, 64 KiB hashed both
// ways) through the SeqDriver's `natpunch serve --spoof` and through a plain `natpunch serve`, and name the technique
// connect() ended up using (P2P-NAT, with STUNT #1 / NATBlaster beside it on their own port 1 s later when both
// peers may use raw sockets; src/traversal/tcp-path.ts).
// Writes bench/results/tcp-techniques.json and .md.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, labUnavailableReason, NAT_TYPES, type NatOptions } from '../src/lab/index.js';
import { addonStatus } from '../src/net/native.js';
import { SeqDriver, TECHNIQUES, TECHNIQUE_NAMES, type Technique } from '../test/lab/fixtures/tcp-seq-driver.js';
import { intactBothWays, tcpSessionTrial } from '../test/lab/fixtures/tcp-session-trial.js';

const here = dirname(fileURLToPath(import.meta.url));
const TRIALS = Number(process.env.NATPUNCH_BENCH_TRIALS ?? 1);
const UPLINK_DELAY_MS = 20;
const ATTEMPT_TIMEOUT_MS = 5_000;
/** The driver's `natpunch serve --spoof` runs on 3478 (tcp-seq-driver.ts); a plain serve beside it. */
const SPOOF_RV_PORT = 3478;
const PLAIN_RV_PORT = 3490;
const CONNECT_COLUMNS = [
  { key: 'spoof', title: 'connect() via serve --spoof', port: SPOOF_RV_PORT },
  { key: 'plain', title: 'connect() via plain serve', port: PLAIN_RV_PORT },
] as const;
type ConnectCell = { ok: number; trials: number; techniques: string[]; ms: number[]; errors: string[] };

const rows: Array<{ name: string; nat: NatOptions }> = [
  ...NAT_TYPES.map((type) => ({ name: type, nat: { type } as NatOptions })),
  { name: 'port-restricted-cone, silent drop', nat: { type: 'port-restricted-cone', stealth: true } },
  {
    name: 'port-restricted-cone, drops SYN after SYN',
    nat: { type: 'port-restricted-cone', stealth: true, dropSynAfterSyn: true },
  },
  {
    name: 'port-restricted-cone, drops SYN after SYN, translates outbound SYN-ACK',
    nat: { type: 'port-restricted-cone', stealth: true, dropSynAfterSyn: true, translateOutboundSynAck: true },
  },
  {
    name: 'port-restricted-cone, drops every inbound SYN after tracking it',
    nat: { type: 'port-restricted-cone', stealth: true, dropInboundSyn: true },
  },
  { name: 'full-cone, translates outbound SYN-ACK', nat: { type: 'full-cone', translateOutboundSynAck: true } },
  {
    name: 'port-restricted-cone, rewrites sequence numbers',
    nat: { type: 'port-restricted-cone', translateOutboundSynAck: true, rewriteTcpSequence: true },
  },
];

/** NATPUNCH_BENCH_ROWS=substring: only the rows whose name contains it (re-measuring one row). */
const onlyRows = process.env.NATPUNCH_BENCH_ROWS;
if (onlyRows) rows.splice(0, rows.length, ...rows.filter((r) => r.name.includes(onlyRows)));

const reason =
  labUnavailableReason() ||
  (() => {
    const s = addonStatus();
    return s.available ? '' : s.reason;
  })();
if (reason) {
  console.log(`tcp-techniques bench skipped: ${reason}`);
  process.exit(0);
}

type Cell = { ok: number; trials: number; ms: number[]; reasons: string[] };
const results: Array<{
  row: string;
  nat: NatOptions;
  cells: Record<Technique, Cell>;
  connect: Record<string, ConnectCell>;
}> = [];
const lab = await Lab.up({ links: { natA: { delayMs: UPLINK_DELAY_MS }, natB: { delayMs: UPLINK_DELAY_MS } } });
try {
  const driver = new SeqDriver(lab);
  await driver.start();
  const plain = lab.node('server', fileURLToPath(new URL('../test/lab/fixtures/serve-node.ts', import.meta.url)), [
    String(PLAIN_RV_PORT),
  ]);
  await plain.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  for (const row of rows) {
    await lab.setNat('natA', row.nat);
    await lab.setNat('natB', row.nat);
    const cells = {} as Record<Technique, Cell>;
    for (const t of TECHNIQUES) {
      const cell: Cell = { ok: 0, trials: 0, ms: [], reasons: [] };
      for (let i = 0; i < TRIALS; i++) {
        const o = await driver
          .attempt(t, ATTEMPT_TIMEOUT_MS)
          .catch((e) => ({ ok: false, reasons: [String((e as Error).message).slice(0, 80)], elapsedMs: undefined }));
        cell.trials++;
        if (o.ok) {
          cell.ok++;
          if (o.elapsedMs !== undefined) cell.ms.push(o.elapsedMs);
        } else cell.reasons.push(...o.reasons);
      }
      cells[t] = cell;
      console.log(
        `${row.name} / ${TECHNIQUE_NAMES[t]}: ${cell.ok}/${cell.trials}${cell.reasons.length ? ` (${[...new Set(cell.reasons)].join(', ')})` : ''}`,
      );
    }
    const connect: Record<string, ConnectCell> = {};
    for (const col of CONNECT_COLUMNS) {
      const cell: ConnectCell = { ok: 0, trials: 0, techniques: [], ms: [], errors: [] };
      for (let i = 0; i < TRIALS; i++) {
        const t = await tcpSessionTrial(lab, col.port);
        cell.trials++;
        if (intactBothWays(t)) {
          cell.ok++;
          cell.ms.push(t.elapsedMs);
          cell.techniques.push(String((t.c.path as { tcpTechnique?: string }).tcpTechnique));
        } else cell.errors.push(String(t.c.message ?? t.c.code).slice(0, 160));
      }
      connect[col.key] = cell;
      console.log(
        `${row.name} / ${col.title}: ${cell.ok}/${cell.trials} ${[...new Set(cell.techniques)].join(', ')}${cell.errors.length ? ` (${cell.errors[0]})` : ''}`,
      );
    }
    results.push({ row: row.name, nat: row.nat, cells, connect });
  }
} finally {
  await lab.down();
}

const outDir = join(here, 'results');
mkdirSync(outDir, { recursive: true });
// The machine's load when the run ended: numbers from a loaded machine are not quotable.
const meta = {
  date: new Date().toISOString(),
  node: process.version,
  loadavg: os.loadavg(),
  cpus: os.cpus().length,
  uplinkDelayMs: UPLINK_DELAY_MS,
  trials: TRIALS,
  attemptTimeoutMs: ATTEMPT_TIMEOUT_MS,
};
writeFileSync(join(outDir, 'tcp-techniques.json'), `${JSON.stringify({ ...meta, results }, null, 2)}\n`);
const cellText = (c: Cell) => {
  if (c.ok === c.trials) return `✅ ${c.ok}/${c.trials}${c.ms.length ? ` (${Math.max(...c.ms)} ms)` : ''}`;
  return `❌ ${c.ok}/${c.trials} ${[...new Set(c.reasons)].join(', ')}`;
};
const NAMES: Record<string, string> = { ...TECHNIQUE_NAMES };
const connectText = (c: ConnectCell) => {
  const used = [...new Set(c.techniques)].map((t) => NAMES[t] ?? t).join(' / ');
  if (c.ok === c.trials) return `✅ ${c.ok}/${c.trials} ${used} (${Math.max(...c.ms)} ms)`;
  return `❌ ${c.ok}/${c.trials}${used ? ` ${used}` : ''}`;
};
const md = [
  '# TCP traversal techniques across the lab NATs',
  '',
  `${meta.date}, Node ${meta.node}, load average ${meta.loadavg.map((l) => l.toFixed(2)).join(' ')} on ${meta.cpus} CPUs; both NATs of a row alike; ${UPLINK_DELAY_MS} ms delay on each NAT uplink; ${TRIALS} attempt(s) per cell, ${ATTEMPT_TIMEOUT_MS} ms each.`,
  'A cell is ✅ only when one connection carried data both ways intact; ms = time to ESTABLISHED (the later side).',
  'Failure reasons: PUNCH_FAILED (P2P-NAT / STUNT #2 found no path), no-syn-ack, sequence-rewritten, mapping-mismatch.',
  "connect() columns: the technique connect({ transport: 'tcp' }) used and the time from starting the connector to its",
  'session carrying data (process start, rendezvous, P2P-NAT — with the sequence techniques beside it on their own port',
  'from 1 s when both peers may use raw sockets — and Noise).',
  '',
  `| NAT (both sides) | ${TECHNIQUES.map((t) => TECHNIQUE_NAMES[t]).join(' | ')} | ${CONNECT_COLUMNS.map((c) => c.title).join(' | ')} |`,
  `|---|${TECHNIQUES.map(() => '---').join('|')}|${CONNECT_COLUMNS.map(() => '---').join('|')}|`,
  ...results.map(
    (r) =>
      `| ${r.row} | ${TECHNIQUES.map((t) => cellText(r.cells[t])).join(' | ')} | ${CONNECT_COLUMNS.map((c) => connectText(r.connect[c.key]!)).join(' | ')} |`,
  ),
  '',
];
writeFileSync(join(outDir, 'tcp-techniques.md'), md.join('\n'));
console.log(md.join('\n'));
