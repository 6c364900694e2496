// Port-mapping numbers against miniupnpd 2.3.1 on a lab router: how long a presence probe takes, and per protocol
// (PCP, NAT-PMP, UPnP IGD) how long opening, renewing and deleting a mapping takes, measured inside host `a` with
// the library (no CLI start-up). Root only; skips otherwise. Writes bench/results/portmap.json and portmap.md.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab, labUnavailableReason } from '../src/lab/index.js';
import { Miniupnpd } from '../test/lab/fixtures/miniupnpd.js';

const reason = labUnavailableReason() ?? (existsSync('/usr/sbin/miniupnpd') ? undefined : 'miniupnpd is not installed');
if (reason) {
  console.log(`portmap bench skipped: ${reason}`);
  process.exit(0);
}

const here = dirname(fileURLToPath(import.meta.url));
const ROUNDS = 10;

const lab = await Lab.up();
const gw = new Miniupnpd(lab, 'natA', {
  stunHost: lab.addr('server'),
  lanPrefix: `${lab.addr('a').split('.').slice(0, 3).join('.')}.0/24`,
});
let results: Record<string, unknown>;
try {
  const stun = lab.node('server', join(here, '../test/lab/fixtures/stun-responder.ts'), [lab.addr('server'), '3478']);
  await stun.next((m) => m.type === 'ready');
  await gw.start();
  const p = lab.nodeCode(
    'a',
    `import { performance } from 'node:perf_hooks';
     const { PortMapper, probePortMapping } = await import(process.argv[2]);
     const gateway = process.argv[3];
     const rounds = Number(process.argv[4]);
     const t0 = performance.now();
     const probe = await probePortMapping({ gateway });
     const out = { probeMs: performance.now() - t0, probe: { pcp: probe.pcp.answered, natpmp: probe.natpmp.answered, upnp: probe.upnp.answered }, protocols: {} };
     for (const [k, protocol] of ['pcp', 'natpmp', 'upnp'].entries()) {
       const pm = new PortMapper({ gateway, protocols: [protocol], renew: false });
       const map = [], renew = [], unmap = [];
       const ms = [];
       for (let i = 0; i < rounds; i++) {
         const t = performance.now();
         ms.push(await pm.map({ internalPort: 42000 + k * 100 + i, lifetime: 600, protocol }));
         map.push(performance.now() - t);
       }
       for (const m of ms) { const t = performance.now(); await pm.renew(m); renew.push(performance.now() - t); }
       for (const m of ms) { const t = performance.now(); await pm.unmap(m); unmap.push(performance.now() - t); }
       await pm.close();
       out.protocols[protocol] = { map, renew, unmap };
     }
     console.log(JSON.stringify({ type: 'result', ...out }));`,
    [new URL('../src/portmap/mapper.ts', import.meta.url).href, lab.lanAddr('natA'), String(ROUNDS)],
  );
  results = await p.next((m) => m.type === 'result', { timeoutMs: 120_000 });
} finally {
  await gw.dispose();
  await lab.down();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const max = (xs: number[]) => Math.max(...xs);
const r = results as {
  probeMs: number;
  probe: Record<string, boolean>;
  protocols: Record<string, { map: number[]; renew: number[]; unmap: number[] }>;
};
const rows = Object.entries(r.protocols).map(([p, v]) => ({
  protocol: p,
  firstMapMs: v.map[0]!,
  mapMedianMs: median(v.map.slice(1)),
  renewMedianMs: median(v.renew),
  unmapMedianMs: median(v.unmap),
  maxMs: max([...v.map.slice(1), ...v.renew, ...v.unmap]),
}));
const summary = { rounds: ROUNDS, probeMs: r.probeMs, probe: r.probe, rows, raw: r.protocols };
mkdirSync(join(here, 'results'), { recursive: true });
writeFileSync(join(here, 'results', 'portmap.json'), `${JSON.stringify(summary, null, 2)}\n`);
const f = (x: number) => `${x.toFixed(1)} ms`;
const md = [
  '# Port mapping (miniupnpd 2.3.1 on a lab router)',
  '',
  `probePortMapping (PCP ANNOUNCE + NAT-PMP + SSDP/description/GetExternalIPAddress, in parallel): ${f(r.probeMs)}; ` +
    `answered: ${Object.entries(r.probe)
      .filter(([, v]) => v)
      .map(([k]) => k)
      .join(', ')}.`,
  '',
  `| protocol | first map (cold) | map (median of ${ROUNDS - 1}) | renew (median) | delete (median) | max |`,
  '|---|---|---|---|---|---|',
  ...rows.map(
    (x) =>
      `| ${x.protocol} | ${f(x.firstMapMs)} | ${f(x.mapMedianMs)} | ${f(x.renewMedianMs)} | ${f(x.unmapMedianMs)} | ${f(x.maxMs)} |`,
  ),
  '',
  'Measured in host `a` with the library (no CLI start-up); the UPnP cold map includes SSDP discovery and the',
  'device description. NAT-PMP map includes the external-address request.',
  '',
].join('\n');
writeFileSync(join(here, 'results', 'portmap.md'), md);
console.log(md);
