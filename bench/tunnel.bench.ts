// Tunnel numbers in the NAT lab: goodput and connection set-up latency through `natpunch forward` (a behind natA →
// session → `natpunch expose` on b behind natB → HTTP service on b) against a direct TCP connection over the same
// links (a → natA → internet → natB, where a port forward (DNAT) in natB reaches the same service). One run per
// link condition. Root only; skips otherwise.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, labUnavailableReason, type LabProcess, type LinkShape } from '../src/lab/index.js';
import { generateKeyPair, keyToId, saveKeyPair } from '../src/session/identity.js';

const reason = labUnavailableReason();
if (reason) {
  console.log(`tunnel bench skipped: ${reason}`);
  process.exit(0);
}

const here = dirname(fileURLToPath(import.meta.url));
const BIN = join(here, '..', 'bin', 'natpunch.js');
const FIX = (f: string) => join(here, '..', 'test', 'lab', 'fixtures', f);
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const LATENCY_SAMPLES = 20;
const SERVICE_PORT = 8080;
const FORWARD_PORT = 18080;

const CONDITIONS: Array<{ name: string; natA: LinkShape; natB: LinkShape }> = [
  { name: 'unshaped', natA: {}, natB: {} },
  { name: '20 ms RTT, 100 Mbit/s', natA: { delayMs: 10 }, natB: { rateMbit: 100 } },
];

type Msg = Record<string, unknown>;
const lab = await Lab.up({ nat: { natA: 'port-restricted-cone', natB: 'port-restricted-cone' } });
const dir = mkdtempSync(join(tmpdir(), 'np-tunnel-bench-'));
const procs: LabProcess[] = [];
const start = (node: string, script: string, args: string[]) => {
  const p = lab.node(node, script, args);
  procs.push(p);
  return p;
};
const rows: Array<Record<string, unknown>> = [];
try {
  const home = generateKeyPair();
  const laptop = generateKeyPair();
  await saveKeyPair(join(dir, 'home.json'), home);
  await saveKeyPair(join(dir, 'laptop.json'), laptop);
  const rv = `${lab.addr('server')}:3478`;
  const server = start('server', BIN, ['serve', '--port', '3478', '--address', lab.addr('server'), '--json']);
  await server.next((m) => m.event === 'listening', { timeoutMs: 30_000 });
  // The service listens on b's LAN address: the tunnel exit and the port forward reach the same socket.
  const web = start('b', FIX('tunnel-service.ts'), [lab.addr('b'), String(SERVICE_PORT)]);
  await web.next((m) => m.ev === 'ready', { timeoutMs: 20_000 });
  // A port forward on natB for the direct baseline, in its own nftables table (the lab's is `ip npnat`).
  const nft = await lab.exec('natB', ['nft', '-f', '-'], {
    input: `table ip npbench {\n chain pre { type nat hook prerouting priority dstnat - 10; policy accept;\n  iifname "wan" tcp dport ${SERVICE_PORT} dnat to ${lab.addr('b')}:${SERVICE_PORT}\n }\n}\n`,
  });
  if (nft.code !== 0) throw new Error(`nft: ${nft.stderr}`);
  const expose = start('b', BIN, [
    'expose',
    `${lab.addr('b')}:${SERVICE_PORT}`,
    '--name',
    'homebox',
    '--rendezvous',
    rv,
    '--key',
    join(dir, 'home.json'),
    '--allow',
    keyToId(laptop.publicKey),
    '--json',
  ]);
  await expose.next((m) => m.event === 'exposing', { timeoutMs: 30_000 });
  const forward = start('a', BIN, [
    'forward',
    `${FORWARD_PORT}:homebox:${SERVICE_PORT}`,
    '--rendezvous',
    rv,
    '--key',
    join(dir, 'laptop.json'),
    '--json',
  ]);
  const up = await forward.next((m) => m.event === 'session', { timeoutMs: 45_000 });
  const client = start('a', FIX('tunnel-client.ts'), []);
  await client.next((m) => m.ev === 'ready', { timeoutMs: 20_000 });
  let seq = 0;
  const run = async (cmd: Msg): Promise<Msg> => {
    const id = String(++seq);
    client.send({ ...cmd, id });
    const r = await client.next((m) => m.ev === 'done' && m.id === id, { timeoutMs: 170_000 });
    if (r.ok !== true) throw new Error(`${cmd.cmd} failed: ${JSON.stringify(r)}`);
    return r;
  };
  const direct = { host: lab.publicAddr('natB'), port: SERVICE_PORT };
  const tunnel = { host: '127.0.0.1', port: FORWARD_PORT };
  for (const c of CONDITIONS) {
    await lab.setLink('natA', c.natA);
    await lab.setLink('natB', c.natB);
    for (const [via, target] of [
      ['direct TCP', direct],
      ['natpunch forward', tunnel],
    ] as const) {
      await run({ cmd: 'latency', n: 3, ...target }); // warm-up
      const lat = await run({ cmd: 'latency', n: LATENCY_SAMPLES, ...target });
      const dl = await run({ cmd: 'download', size: SIZE, ...target });
      const mbit = (SIZE * 8) / (dl.ms as number) / 1000;
      rows.push({
        condition: c.name,
        via,
        goodputMbit: Number(mbit.toFixed(1)),
        setupMedianMs: Number((lat.median as number).toFixed(2)),
        setupP90Ms: Number((lat.p90 as number).toFixed(2)),
      });
      console.log(
        `${c.name} / ${via}: ${mbit.toFixed(1)} Mbit/s, connection + first response median ${(lat.median as number).toFixed(2)} ms`,
      );
    }
  }
  const result = {
    date: new Date().toISOString(),
    node: process.version,
    transferBytes: SIZE,
    latencySamples: LATENCY_SAMPLES,
    sessionPath: { kind: up.path, remote: up.remote },
    rows,
    note:
      'One run per condition on a shared 2-core machine (other jobs running): compare the rows with each other, not with other machines. ' +
      'Set-up latency = new TCP connection + GET of a 1-byte body, measured by the client on a. Through forward the TCP connection is local ' +
      'and the stream opens inside the already-established session (no punch per connection).',
  };
  mkdirSync(join(here, 'results'), { recursive: true });
  writeFileSync(join(here, 'results', 'tunnel.json'), `${JSON.stringify(result, null, 2)}\n`);
  const md = [
    '# tunnel',
    '',
    `NAT lab (natA, natB port-restricted cone), ${SIZE / MiB} MiB download per row, ${LATENCY_SAMPLES} connections for set-up latency, ${process.version}, ${result.date}.`,
    `Session path: ${String(up.path)} to ${JSON.stringify(up.remote)}.`,
    '',
    '| link condition | via | goodput | connection set-up + first response (median) | p90 |',
    '|---|---|---|---|---|',
    ...rows.map(
      (r) => `| ${r.condition} | ${r.via} | ${r.goodputMbit} Mbit/s | ${r.setupMedianMs} ms | ${r.setupP90Ms} ms |`,
    ),
    '',
    result.note,
    '',
  ].join('\n');
  writeFileSync(join(here, 'results', 'tunnel.md'), md);
  console.log(md);
} finally {
  await Promise.all(procs.map((p) => p.close().catch(() => {})));
  await lab.down();
  rmSync(dir, { recursive: true, force: true });
}
