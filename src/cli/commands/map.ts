import { Command, Option } from 'commander';
import { PortMapper } from '../../portmap/mapper.js';
import type { PortMapping } from '../../portmap/common.js';
import { NatpunchError } from '../../util/errors.js';
import { createLogger } from '../../util/log.js';
import { action, intOption } from '../util.js';
import { createPrinter } from '../events.js';

interface MapOptions {
  udp?: boolean;
  tcp?: boolean;
  lifetime: number;
  protocol?: 'pcp' | 'natpmp' | 'upnp';
  gateway?: string;
  json?: boolean;
}

function asJson(m: PortMapping) {
  return { ...m, expiresAt: Number.isFinite(m.expiresAt) ? new Date(m.expiresAt).toISOString() : null };
}

export function register(program: Command): void {
  program
    .command('map')
    .description(
      'open a port mapping on the gateway (PCP, NAT-PMP or UPnP IGD), keep it renewed until Ctrl-C, then delete it',
    )
    .argument('<PORT>', 'local port to map', intOption('PORT', 1, 65535))
    .option('--udp', 'map a UDP port (default)')
    .option('--tcp', 'map a TCP port')
    .option('--lifetime <S>', 'requested lease in seconds', intOption('--lifetime', 1, 604800), 7200)
    .addOption(new Option('--protocol <P>', 'use only this protocol').choices(['pcp', 'natpmp', 'upnp']))
    .option('--gateway <IP>', 'gateway address (default: the default route’s gateway)')
    .option('--json', 'the mapping and later events (renewed, restart, deleted) as JSON lines on stdout')
    .action(
      action(async (port: number, opts: MapOptions, cmd: Command) => {
        if (opts.udp && opts.tcp) throw new NatpunchError('BAD_ARGUMENT', 'choose one of --udp and --tcp');
        const debug = Boolean(cmd.optsWithGlobals().debug);
        const mapper = new PortMapper({
          gateway: opts.gateway,
          protocols: opts.protocol ? [opts.protocol] : undefined,
          listenAnnounce: true,
          logger: debug ? createLogger('debug') : undefined,
        });
        const print = createPrinter({ json: Boolean(opts.json) });
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        let closed = false;
        try {
          print({ event: 'mapping', transport: opts.tcp ? 'tcp' : 'udp', port, gateway: await mapper.gateway() });
          const m = await mapper.map(
            {
              internalPort: port,
              transport: opts.tcp ? 'tcp' : 'udp',
              lifetime: opts.lifetime,
              protocol: opts.protocol,
            },
            stop.signal,
          );
          // The result a script reads: the external address on stdout (with --json, the mapped event).
          if (!opts.json) process.stdout.write(`${m.externalAddress}:${m.externalPort}\n`);
          print({ event: 'mapped', ...asJson(m) });
          mapper.on('renewed', (r: PortMapping) => print({ event: 'renewed', ...asJson(r) }));
          mapper.on('changed', (r: PortMapping) => print({ event: 'changed', ...asJson(r) }));
          mapper.on('restart', (p: string) => print({ event: 'restart', protocol: p }));
          mapper.on('lost', (r: PortMapping, err: Error) => print({ event: 'lost', ...asJson(r), error: err.message }));
          if (!stop.signal.aborted)
            await new Promise((resolve) => stop.signal.addEventListener('abort', resolve, { once: true }));
          print({ event: 'deleting', ...asJson(m) });
          const result = await mapper.close();
          closed = true;
          if (result.failed.length > 0) {
            const f = result.failed[0]!;
            throw new NatpunchError(
              'PORTMAP',
              `could not delete ${f.mapping.transport} ${f.mapping.externalAddress}:${f.mapping.externalPort} on the gateway (${f.error.message}); it expires by itself${f.mapping.lifetime ? ` within ${f.mapping.lifetime} s` : ' only when the gateway restarts'}`,
            );
          }
          print({ event: 'deleted', ...asJson(m) });
        } finally {
          if (!closed) await mapper.close();
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      }),
    );
}
