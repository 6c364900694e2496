import type { Command } from 'commander';
import { attachTurn } from '../../relay/attach.js';
import { defaultRelayAddress } from '../../relay/server.js';
import { listenTurnTls, type TurnTlsHandle } from '../../relay/tls.js';
import { startServer } from '../../server/serve.js';
import { defaultWorkerCount, effectiveWorkerCount, startWorkerPool, steerRendezvousToMain, type WorkerPool } from '../../server/workers.js';
import type { ServeWorkerData } from '../serve-worker.js';
import { SpoofService } from '../../server/spoof.js';
import { SynAckSpoofer } from '../../traversal/tcp-stunt1.js';
import { NatpunchError } from '../../util/errors.js';
import { turnRegistry } from '../../wire/turn.js';
import { readConfigFile, renderConfigJson, renderConfigToml, resolveConfig, type ResolvedConfig } from '../../server/config.js';
import { SERVE_OPTIONS } from '../../server/options.js';
import { addOptionTable, flagValues } from '../option-table.js';
import { turnServerFromFlags, type TurnFlags } from '../turn-options.js';
import { createLogger } from '../../util/log.js';
import { action, printJson } from '../util.js';

/** The TURN flags a worker needs (plain data: they are structured-cloned into the worker thread). */
function pick(opts: TurnFlags): TurnFlags {
  const { realm, users, authSecret, relayAddress6, externalIp, allowPeer, denyPeer, maxAllocations, userQuota, maxBps, minPort, maxPort } = opts;
  return { realm, users, authSecret, relayAddress6, externalIp, allowPeer, denyPeer, maxAllocations, userQuota, maxBps, minPort, maxPort };
}

function show(e: { address: string; port: number }): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

/**
 * The effective settings: flags > NATPUNCH_* environment > --config file (or NATPUNCH_CONFIG) > defaults, every
 * value checked against its definition in src/server/options.ts.
 */
export function serveSettings(cmd: Command, env: NodeJS.ProcessEnv = process.env): ResolvedConfig {
  const path = (cmd.opts().config as string | undefined) ?? (env.NATPUNCH_CONFIG || undefined);
  const file = path ? readConfigFile(path) : undefined;
  return resolveConfig({ flags: flagValues(cmd, SERVE_OPTIONS), env, ...(file ? { file } : {}) });
}

export function register(program: Command): void {
  const serve = program
    .command('serve')
    .description(
      'run the natpunch server: STUN (RFC 8489, RFC 5780 with --alt-address), the rendezvous and, with --turn, the TURN relay, on UDP and TCP. ' +
        'Every option can also be set in a TOML file (--config) or a NATPUNCH_* environment variable; precedence flag > env > file > default.',
    )
    .option('--config <file>', 'read options from this TOML file (see deploy/natpunch.toml); env NATPUNCH_CONFIG')
    .option('--print-config', 'print the effective configuration (secrets masked) and exit; with --json as JSON');
  addOptionTable(serve, SERVE_OPTIONS)
    .action(
      action(async (_opts: unknown, cmd: Command) => {
        const resolved = serveSettings(cmd);
        const opts = resolved.values;
        if (cmd.opts().printConfig) {
          if (opts.json) printJson(renderConfigJson(resolved));
          else process.stdout.write(renderConfigToml(resolved));
          return;
        }
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
        const workers = effectiveWorkerCount(opts.workers ?? defaultWorkerCount(), { altAddress: opts.altAddress, udp: opts.udp });
        if (workers.reason && opts.workers !== undefined) logger.warn({ reason: workers.reason }, 'serve: running one worker');
        let handle: Awaited<ReturnType<typeof startServer>>;
        try {
          handle = await startServer({
            reusePort: workers.count > 1,
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
                port: opts.tlsPort,
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
        let pool: WorkerPool | undefined;
        if (workers.count > 1) {
          try {
            if (handle.rendezvous) steerRendezvousToMain(handle.sockets);
            const entry = new URL(`../serve-worker.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url);
            const addresses = handle.udp.map((e) => e.address);
            const data = (index: number): ServeWorkerData => ({
              index: index + 2,
              port: handle.udp[0]!.port,
              addresses: opts.address?.length ? opts.address : addresses,
              debug,
              ...(turn ? { turn: { ...pick(opts), relayAddress: turn.relayAddress, ownAddresses: (opts.address ?? []).filter((a) => a !== '0.0.0.0' && a !== '::') } } : {}),
            });
            pool = await startWorkerPool({ count: workers.count - 1, entry, data, logger });
          } catch (err) {
            detachTurn?.();
            turn?.close();
            await turnTls?.close();
            await handle.close();
            await spoof?.close();
            throw err;
          }
        }
        if (opts.json) {
          process.stdout.write(
            `${JSON.stringify({
              event: 'listening',
              udp: handle.udp,
              tcp: handle.tcp,
              rfc5780: handle.rfc5780 ?? null,
              rendezvous: Boolean(handle.rendezvous),
              udpImplementation: handle.udpImplementation,
              workers: workers.count,
              turn: turn
                ? { realm: turn.realm, relayAddress: turn.relayAddress, relayAddress6: turn.relayAddress6 ?? null, tls: turnTls?.endpoints ?? [] }
                : null,
              spoof: spoof?.address() ?? null,
              rendezvousSpoof: Boolean(spoof && handle.rendezvous),
            })}\n`,
          );
        } else {
          const lines = [
            `natpunch serve: STUN on udp ${handle.udp.map(show).join(', ')}`,
            handle.tcp.length ? `${' '.repeat('natpunch serve: STUN on '.length)}tcp ${handle.tcp.map(show).join(', ')}` : '',
            handle.rfc5780
              ? `  RFC 5780 mode: primary ${show(handle.rfc5780.primary)}, alternate ${show(handle.rfc5780.altBoth)}`
              : '',
            workers.count > 1 ? `  ${workers.count} workers share the UDP port (SO_REUSEPORT); TCP and the rendezvous run in the first` : '',
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
            void Promise.all([pool?.close(), handle.close(), spoof?.close()]).then(() => resolve(), () => resolve());
          };
          const onInt = () => stop('SIGINT');
          const onTerm = () => stop('SIGTERM');
          process.on('SIGINT', onInt);
          process.on('SIGTERM', onTerm);
        });
      }),
    );
}
