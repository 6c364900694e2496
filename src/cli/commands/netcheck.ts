import type { Command } from 'commander';
import {
  netcheck,
  NETCHECK_DEFAULT_TIMEOUT_MS,
  type NatReport,
  type NetcheckProgress,
} from '../../discovery/netcheck.js';
import type { Endpoint } from '../../discovery/classify.js';
import { createLogger } from '../../util/log.js';
import { NatpunchError } from '../../util/errors.js';
import { action, intOption } from '../util.js';
import { createPrinter } from '../events.js';

interface Opts {
  server: string[];
  lifetime?: boolean;
  lifetimeMax?: number;
  json?: boolean;
  timeout?: number;
  portMapping?: boolean;
  tcp?: boolean;
  quiet?: boolean;
}

export function register(program: Command): void {
  program
    .command('netcheck')
    .description(
      'discover what the NAT in front of this host does (mapping, filtering, ports, hairpin, TCP, port mapping)',
    )
    .requiredOption(
      '-s, --server <host[:port]>',
      'STUN server: one in RFC 5780 mode, or two or more plain ones (repeat)',
      collect,
    )
    .option('--lifetime', 'also measure the mapping lifetime (takes minutes)')
    .option('--lifetime-max <seconds>', 'upper bound of the lifetime search', intOption('--lifetime-max', 3, 3600))
    .option('--json', 'print the report as JSON')
    .option(
      '--timeout <ms>',
      `bound on the run without --lifetime (default ${NETCHECK_DEFAULT_TIMEOUT_MS})`,
      intOption('--timeout', 100, 600_000),
    )
    .option('--no-port-mapping', 'do not probe the gateway for NAT-PMP/PCP/UPnP')
    .option('--no-tcp', 'do not probe STUN over TCP')
    .option('-q, --quiet', 'no progress lines on stderr (--json output is unaffected)')
    .action(
      action(async (opts: Opts, cmd: Command) => {
        const debug = Boolean(cmd.optsWithGlobals().debug);
        const print = createPrinter({ json: Boolean(opts.json), quiet: Boolean(opts.quiet) });
        const ac = new AbortController();
        const onSignal = () => ac.abort(new Error('interrupted'));
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          const report = await netcheck({
            servers: opts.server,
            lifetime: opts.lifetime,
            lifetimeMaxMs: opts.lifetimeMax ? opts.lifetimeMax * 1000 : undefined,
            timeoutMs: opts.timeout,
            portMapping: opts.portMapping,
            tcp: opts.tcp,
            signal: ac.signal,
            ...(debug ? { logger: createLogger('debug') } : {}),
            // Each probe's start and end once, as `probe` events (human: `netcheck: udp …`).
            onProgress: (e: NetcheckProgress) => print({ event: 'probe', ...e }),
          });
          if (opts.json) print({ event: 'report', ...report });
          else process.stdout.write(formatReport(report));
          // A server that never answered is a failed check, not a report of a blocked network: exit 1.
          if (!report.servers.some((s) => s.reachable)) {
            throw new NatpunchError(
              'STUN_TIMEOUT',
              `no STUN server answered (${opts.server.join(', ')}); check the address and that UDP ${report.servers[0]?.port ?? 3478} reaches it`,
            );
          }
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      }),
    );
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

const ep = (e: Endpoint | null | undefined) =>
  e ? (e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`) : '-';
const yn = (v: boolean | null) => (v === null ? 'unknown' : v ? 'yes' : 'no');

/** The human report: a two-column table, the verdict, then what could not be determined. */
export function formatReport(r: NatReport): string {
  const rows: Array<[string, string]> = [];
  for (const s of r.servers) {
    rows.push([
      `server ${s.host}:${s.port}`,
      s.reachable
        ? `${s.rfc5780 ? `RFC 5780 (other ${ep(s.otherAddress)})` : 'plain STUN'}${s.software ? `, ${s.software}` : ''}${s.rttMs !== null ? `, ${s.rttMs} ms` : ''}`
        : 'no answer',
    ]);
  }
  const u = r.udp;
  rows.push(['UDP', u.blocked === null ? 'unknown' : u.blocked ? 'blocked' : 'ok']);
  rows.push([
    'public address (UDP)',
    ep(u.publicAddress) + (u.publicAddresses.length > 1 ? ` (+${u.publicAddresses.length - 1} more)` : ''),
  ]);
  rows.push(['behind NAT', yn(u.behindNat)]);
  rows.push(['mapping', u.mapping]);
  rows.push(['filtering', u.filtering]);
  rows.push(['NAT type (RFC 3489)', u.classic]);
  rows.push([
    'port allocation',
    u.allocation.pattern === 'sequential'
      ? `sequential, delta ${u.allocation.delta}`
      : u.allocation.pattern +
        (u.allocation.samples.length ? ` (${u.allocation.samples.map((s) => s.external).join(', ')})` : ''),
  ]);
  rows.push(['hairpinning', yn(u.hairpinning)]);
  rows.push(['ALG rewriting addresses', yn(u.alg)]);
  if (u.lifetime) {
    rows.push([
      'mapping lifetime',
      u.lifetime.expiredByS === null
        ? `> ${u.lifetime.aliveAtS} s`
        : `${u.lifetime.aliveAtS}-${u.lifetime.expiredByS} s`,
    ]);
  }
  rows.push(['public address (TCP)', ep(r.tcp.publicAddress)]);
  rows.push(['TCP mapping', r.tcp.mapping]);
  rows.push(['public address (IPv6)', ep(r.ipv6.publicAddress)]);
  const pm = r.portMapping;
  rows.push([
    'port mapping',
    pm.gateway
      ? `gateway ${pm.gateway}: NAT-PMP ${yn(pm.natPmp)}, PCP ${yn(pm.pcp)}, UPnP IGD ${yn(pm.upnp)}`
      : 'not probed',
  ]);
  rows.push(['took', `${r.durationMs} ms`]);
  const width = Math.max(...rows.map(([k]) => k.length));
  let out = rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
  out += `\n\n${r.verdict}\n`;
  if (r.undetermined.length) {
    out += '\nundetermined:\n' + r.undetermined.map((u) => `  ${u.what}: ${u.why}`).join('\n') + '\n';
  }
  return out;
}
