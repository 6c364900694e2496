import type { Command } from 'commander';
import { startServer } from '../../server/serve.js';
import { SpoofService } from '../../server/spoof.js';
import { NatpunchError } from '../../util/errors.js';
import { createLogger } from '../../util/log.js';
import { DEFAULT_STUN_PORT } from '../../wire/stun/index.js';
import { action, intOption } from '../util.js';

interface ServeOptions {
  port: number;
  address?: string[];
  altAddress?: string;
  altPort?: number;
  json?: boolean;
  /** false with --no-rendezvous */
  rendezvous: boolean;
  spoof?: boolean;
  spoofPort?: number;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

function show(e: { address: string; port: number }): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('run the natpunch server: STUN (RFC 8489, RFC 5780 with --alt-address) and the rendezvous, on UDP and TCP')
    .option('--port <port>', 'UDP and TCP port', intOption('--port', 0, 65535), DEFAULT_STUN_PORT)
    .option('--address <ip>', 'address to listen on (repeatable; default 0.0.0.0 and ::)', collect)
    .option('--alt-address <ip>', 'second IP address of this host: enables RFC 5780 NAT behaviour discovery')
    .option('--alt-port <port>', 'RFC 5780 alternate port (default --port + 1)', intOption('--alt-port', 0, 65535))
    .option('--no-rendezvous', 'do not run the rendezvous server (peer registration and introductions) on the port')
    .option('--spoof', 'lab/research only, root: STUNT #1 spoofed SYN-ACKs (TCP service on --spoof-port; see README, BCP 38)')
    .option('--spoof-port <port>', 'TCP port of the --spoof service (default --port + 2)', intOption('--spoof-port', 0, 65535))
    .option('--json', 'print where it listens as one JSON line')
    .action(
      action(async (opts: ServeOptions, cmd: Command) => {
        const debug = Boolean(cmd.optsWithGlobals().debug);
        // Servers log JSON lines (pino) on stderr; stdout carries only the "listening" line.
        const logger = createLogger(debug ? 'debug' : 'info');
        if (opts.spoof && process.getuid?.() !== 0) {
          throw new NatpunchError('NOT_ROOT', '--spoof sends spoofed packets on a raw socket: run as root (lab/research networks only)');
        }
        const spoof = opts.spoof ? await SpoofService.start({ port: opts.spoofPort ?? (opts.port === 0 ? 0 : opts.port + 2), logger }) : undefined;
        let handle: Awaited<ReturnType<typeof startServer>>;
        try {
          handle = await startServer({
            port: opts.port,
            addresses: opts.address,
            altAddress: opts.altAddress,
            altPort: opts.altPort,
            logger,
            ...(opts.rendezvous ? {} : { rendezvous: false as const }),
          });
        } catch (err) {
          await spoof?.close();
          throw err;
        }
        if (opts.json) {
          process.stdout.write(
            `${JSON.stringify({ event: 'listening', udp: handle.udp, tcp: handle.tcp, rfc5780: handle.rfc5780 ?? null, rendezvous: Boolean(handle.rendezvous), spoof: spoof?.address() ?? null })}\n`,
          );
        } else {
          const lines = [
            `natpunch serve: STUN on udp ${handle.udp.map(show).join(', ')}`,
            handle.tcp.length ? `                     tcp ${handle.tcp.map(show).join(', ')}` : '',
            handle.rfc5780
              ? `  RFC 5780 mode: primary ${show(handle.rfc5780.primary)}, alternate ${show(handle.rfc5780.altBoth)}`
              : '',
            handle.rendezvous ? '  rendezvous on the same port (UDP, TCP fallback)' : '  rendezvous off',
            spoof ? `  STUNT #1 spoofing service on tcp ${show(spoof.address())} (lab/research only)` : '',
          ].filter(Boolean);
          process.stdout.write(`${lines.join('\n')}\n`);
        }
        await new Promise<void>((resolve) => {
          const stop = (signal: string) => {
            process.off('SIGINT', onInt);
            process.off('SIGTERM', onTerm);
            logger.info({ signal }, 'serve: shutting down');
            void Promise.all([handle.close(), spoof?.close()]).then(() => resolve(), () => resolve());
          };
          const onInt = () => stop('SIGINT');
          const onTerm = () => stop('SIGTERM');
          process.on('SIGINT', onInt);
          process.on('SIGTERM', onTerm);
        });
      }),
    );
}
