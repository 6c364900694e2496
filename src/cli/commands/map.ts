import { Command, Option } from 'commander';
import { PortMapper } from '../../portmap/mapper.js';
import type { PortMapping } from '../../portmap/common.js';
import { NatpunchError } from '../../util/errors.js';
import { createLogger } from '../../util/log.js';
import { action, intOption, printEvent, progress } from '../util.js';

interface MapOptions {
  udp?: boolean;
  tcp?: boolean;
  lifetime: number;
  protocol?: 'pcp' | 'natpmp' | 'upnp';
  gateway?: string;
  json?: boolean;
}

function describe(m: PortMapping): string {
  const lease = m.lifetime === 0 ? 'permanent lease, renewed by natpunch' : `lifetime ${m.lifetime} s`;
  return `${m.transport} ${m.externalAddress}:${m.externalPort} → ${m.internalAddress}:${m.internalPort} via ${m.protocol} (${lease})`;
}

function asJson(m: PortMapping) {
  return { ...m, expiresAt: Number.isFinite(m.expiresAt) ? new Date(m.expiresAt).toISOString() : null };
}

/** --json output is one JSON object per line (the command runs until Ctrl-C and reports renewals as they happen). */
function emit(event: string, fields: Record<string, unknown>): void {
  printEvent(event, fields);
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
    .option('--json', 'print the mapping and later events (renewed, restart, deleted) as JSON lines')
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
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        let closed = false;
        try {
          progress(
            opts.json,
            `natpunch: mapping ${opts.tcp ? 'tcp' : 'udp'} port ${port} on ${await mapper.gateway()}…`,
          );
          const m = await mapper.map(
            {
              internalPort: port,
              transport: opts.tcp ? 'tcp' : 'udp',
              lifetime: opts.lifetime,
              protocol: opts.protocol,
            },
            stop.signal,
          );
          if (opts.json) emit('mapped', asJson(m));
          else process.stdout.write(`${m.externalAddress}:${m.externalPort}\n`);
          progress(opts.json, `natpunch: mapped ${describe(m)}; renewing until Ctrl-C`);
          mapper.on('renewed', (r: PortMapping) =>
            opts.json ? emit('renewed', asJson(r)) : progress(false, `natpunch: renewed ${describe(r)}`),
          );
          mapper.on('changed', (r: PortMapping) =>
            opts.json ? emit('changed', asJson(r)) : progress(false, `natpunch: mapping changed: ${describe(r)}`),
          );
          mapper.on('restart', (p: string) =>
            opts.json
              ? emit('restart', { protocol: p })
              : progress(false, `natpunch: gateway restarted (${p}); mapping again`),
          );
          mapper.on('lost', (r: PortMapping, err: Error) =>
            opts.json
              ? emit('lost', { ...asJson(r), error: err.message })
              : progress(false, `natpunch: mapping expired (${err.message}); still retrying`),
          );
          if (!stop.signal.aborted)
            await new Promise((resolve) => stop.signal.addEventListener('abort', resolve, { once: true }));
          progress(opts.json, 'natpunch: deleting the mapping…');
          const result = await mapper.close();
          closed = true;
          if (result.failed.length > 0) {
            const f = result.failed[0]!;
            throw new NatpunchError(
              'PORTMAP',
              `could not delete ${f.mapping.transport} ${f.mapping.externalAddress}:${f.mapping.externalPort} on the gateway (${f.error.message}); it expires by itself${f.mapping.lifetime ? ` within ${f.mapping.lifetime} s` : ' only when the gateway restarts'}`,
            );
          }
          if (opts.json) emit('deleted', asJson(m));
          else progress(false, 'natpunch: mapping deleted');
        } finally {
          if (!closed) await mapper.close();
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      }),
    );
}
