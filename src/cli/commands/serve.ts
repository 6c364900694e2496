import { Option, type Command } from 'commander';
import { attachTurn } from '../../relay/attach.js';
import { defaultRelayAddress } from '../../relay/server.js';
import { DEFAULT_TURNS_PORT, listenTurnTls, type TurnTlsHandle } from '../../relay/tls.js';
import { startServer } from '../../server/serve.js';
import { SpoofService } from '../../server/spoof.js';
import { SynAckSpoofer } from '../../traversal/tcp-stunt1.js';
import { NatpunchError } from '../../util/errors.js';
import { turnRegistry } from '../../wire/turn.js';
import { addTurnServerOptions, turnServerFromFlags, type TurnFlags } from '../turn-options.js';
import { createLogger } from '../../util/log.js';
import { DEFAULT_STUN_PORT } from '../../wire/stun/index.js';
import { action, intOption, printEvent } from '../util.js';

interface ServeOptions extends TurnFlags {
  turn?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  tlsPort?: number;
  port: number;
  address?: string[];
  altAddress?: string;
  altPort?: number;
  json?: boolean;
  /** false with --no-rendezvous */
  rendezvous: boolean;
  udp: 'auto' | 'udx' | 'dgram';
  spoof?: boolean;
  spoofPort?: number;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

function show(e: { address: string; port: number }): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

export function register(program: Command): void {
  const serve = program
    .command('serve')
    .description('run the natpunch server: STUN (RFC 8489, RFC 5780 with --alt-address), the rendezvous and, with --turn, the TURN relay, on UDP and TCP')
    .option('--port <port>', 'UDP and TCP port', intOption('--port', 0, 65535), DEFAULT_STUN_PORT)
    .option('--address <ip>', 'address to listen on (repeatable; default 0.0.0.0 and ::)', collect)
    .option('--alt-address <ip>', 'second IP address of this host: enables RFC 5780 NAT behaviour discovery')
    .option('--alt-port <port>', 'RFC 5780 alternate port (default --port + 1)', intOption('--alt-port', 0, 65535))
    .option('--no-rendezvous', 'do not run the rendezvous server (peer registration and introductions) on the port')
    .option(
      '--spoof',
      'lab/research only, root: STUNT #1 spoofed SYN-ACKs (TCP service on --spoof-port; the rendezvous then also spoofs them for connecting peers that exchange sequence offers; see README, BCP 38)',
    )
    .option('--spoof-port <port>', 'TCP port of the --spoof service (default --port + 2)', intOption('--spoof-port', 0, 65535))
    .option('--json', 'print where it listens as one JSON line')
    .addOption(
      new Option('--udp <impl>', 'UDP sockets: udx (libudx, fewer cycles per packet), dgram (node:dgram), auto')
        .choices(['auto', 'udx', 'dgram'])
        .default('auto'),
    )
    .option('--turn', 'also run the TURN relay (RFC 8656 + RFC 6062) on the same port; needs --users and/or --auth-secret')
    .option('--tls-cert <file>', 'TURN over TLS ("turns:"): certificate chain (PEM); needs --tls-key')
    .option('--tls-key <file>', 'TURN over TLS: private key (PEM)')
    .option('--tls-port <port>', 'TURN over TLS port', intOption('--tls-port', 0, 65535), DEFAULT_TURNS_PORT);
  addTurnServerOptions(serve)
    .action(
      action(async (opts: ServeOptions, cmd: Command) => {
        const debug = Boolean(cmd.optsWithGlobals().debug);
        // Servers log JSON lines (pino) on stderr; stdout carries only the "listening" line.
        const logger = createLogger(debug ? 'debug' : 'info');
        if ((opts.tlsCert || opts.tlsKey) && !(opts.turn && opts.tlsCert && opts.tlsKey)) {
          throw new NatpunchError('BAD_ARGUMENT', '--tls-cert and --tls-key go together, with --turn');
        }
        // TURN's flags are checked before any socket is bound (bad flags: one error line, nothing started).
        let turn: ReturnType<typeof turnServerFromFlags> | undefined;
        if (opts.turn) {
          // Relay from the listening address when it is one specific IPv4 address, else the host's first one.
          const specific = (opts.address ?? []).filter((a) => !a.includes(':') && a !== '0.0.0.0');
          const relayAddress = opts.relayAddress ?? (specific.length === 1 ? specific[0]! : defaultRelayAddress());
          turn = turnServerFromFlags({ ...opts, relayAddress }, logger, {
            ownAddresses: (opts.address ?? []).filter((a) => a !== '0.0.0.0' && a !== '::'),
          });
        }
        if (opts.spoof && process.getuid?.() !== 0) {
          throw new NatpunchError('NOT_ROOT', '--spoof sends spoofed packets on a raw socket: run as root (lab/research networks only)');
        }
        // One raw socket serves both the --spoof-port service and the rendezvous (SEQ_OFFER pairs); the service
        // closes it when it stops (or fails to start).
        const spoofer = opts.spoof ? SynAckSpoofer.open() : undefined;
        const spoof = spoofer ? await SpoofService.start({ port: opts.spoofPort ?? (opts.port === 0 ? 0 : opts.port + 2), logger, spoofer }) : undefined;
        let handle: Awaited<ReturnType<typeof startServer>>;
        try {
          handle = await startServer({
            port: opts.port,
            addresses: opts.address,
            altAddress: opts.altAddress,
            altPort: opts.altPort,
            udp: opts.udp,
            logger,
            // TURN's attributes are known to the STUN server's 420 check when TURN shares the port.
            ...(opts.turn ? { stun: { registry: turnRegistry } } : {}),
            ...(opts.rendezvous ? (spoofer ? { rendezvous: { spoofer } } : {}) : { rendezvous: false as const }),
          });
        } catch (err) {
          turn?.close();
          await spoof?.close();
          throw err;
        }
        let detachTurn: (() => void) | undefined;
        let turnTls: TurnTlsHandle | undefined;
        if (turn) {
          try {
            detachTurn = attachTurn(handle, turn);
            // Registered peers get short-lived TURN credentials for this server (shared-secret scheme, first secret).
            if (opts.authSecret?.length && handle.rendezvous) {
              handle.rendezvous.setTurnCredentials({ secret: opts.authSecret[0]!, port: handle.udp[0]!.port });
            }
            if (opts.tlsCert && opts.tlsKey) {
              turnTls = await listenTurnTls(turn, {
                addresses: handle.tcp.map((e) => e.address),
                port: opts.tlsPort ?? DEFAULT_TURNS_PORT,
                certFile: opts.tlsCert,
                keyFile: opts.tlsKey,
              });
            }
          } catch (err) {
            detachTurn?.();
            turn.close();
            await handle.close();
            await spoof?.close();
            throw err;
          }
        } else if (opts.users || opts.authSecret) {
          logger.warn('--users/--auth-secret given without --turn: TURN is not running');
        }
        if (opts.json) {
          printEvent('listening', {
            udp: handle.udp,
            tcp: handle.tcp,
            rfc5780: handle.rfc5780 ?? null,
            rendezvous: Boolean(handle.rendezvous),
            udpImplementation: handle.udpImplementation,
            turn: turn
              ? { realm: turn.realm, relayAddress: turn.relayAddress, relayAddress6: turn.relayAddress6 ?? null, tls: turnTls?.endpoints ?? [] }
              : null,
            spoof: spoof?.address() ?? null,
            rendezvousSpoof: Boolean(spoof && handle.rendezvous),
          });
        } else {
          const lines = [
            `natpunch serve: STUN on udp ${handle.udp.map(show).join(', ')}`,
            handle.tcp.length ? `${' '.repeat('natpunch serve: STUN on '.length)}tcp ${handle.tcp.map(show).join(', ')}` : '',
            handle.rfc5780
              ? `  RFC 5780 mode: primary ${show(handle.rfc5780.primary)}, alternate ${show(handle.rfc5780.altBoth)}`
              : '',
            handle.rendezvous ? '  rendezvous on the same port (UDP, TCP fallback)' : '  rendezvous off',
            turn ? `  TURN relay on the same port (udp+tcp), relaying from ${turn.relayAddress}${turn.relayAddress6 ? ` and ${turn.relayAddress6}` : ''}, realm "${turn.realm}"` : '',
            turnTls ? `  TURN over TLS on ${turnTls.endpoints.map(show).join(', ')}` : '',
            spoof
              ? `  STUNT #1 spoofing service on tcp ${show(spoof.address())}${handle.rendezvous ? ', and by the rendezvous for peers exchanging sequence offers' : ''} (lab/research only)`
              : '',
          ].filter(Boolean);
          process.stdout.write(`${lines.join('\n')}\n`);
        }
        await new Promise<void>((resolve) => {
          const stop = (signal: string) => {
            process.off('SIGINT', onInt);
            process.off('SIGTERM', onTerm);
            logger.info({ signal }, 'serve: shutting down');
            detachTurn?.();
            void turnTls?.close();
            if (turn) logger.info({ turn: { ...turn.stats } }, 'turn: stopped');
            turn?.close();
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
