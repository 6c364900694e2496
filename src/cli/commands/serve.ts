import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import type { RelayServiceOptions } from '../../relay/service.js';
import { listenTurnTls, type TurnTlsHandle } from '../../relay/tls.js';
import { startServer } from '../../server/serve.js';
import {
  defaultWorkerCount,
  effectiveWorkerCount,
  startWorkerPool,
  steerToMain,
  type WorkerPool,
} from '../../server/workers.js';
import { PooledStunCounters } from '../../server/stun-counters.js';
import type { ServeWorkerData } from '../serve-worker.js';
import { createReservationTable, SharedReservations } from '../../server/reservations.js';
import type { SpoofService } from '../../server/spoof.js';
import { ServeOperations } from '../../server/operations.js';
import { NatpunchError } from '../../util/errors.js';
import {
  readConfigFile,
  renderConfigJson,
  renderConfigToml,
  resolveConfig,
  type ResolvedConfig,
} from '../../server/config.js';
import { camelName, SERVE_OPTIONS, TURN_OPTION_NAMES, type ServeSettings } from '../../server/options.js';
import { addOptionTable, flagValues } from '../option-table.js';
import { turnOptionsFromFlags, type TurnFlags } from '../turn-options.js';
import { createLogger } from '../../util/log.js';
import { action, printEvent } from '../util.js';

/** The TURN flags a worker needs (plain data: they are structured-cloned into the worker thread): the TURN rows of
 *  the option table, the one list of them (src/server/options.ts). */
function pick(opts: TurnFlags): TurnFlags {
  const flags = opts as Record<string, unknown>;
  return Object.fromEntries(TURN_OPTION_NAMES.map(camelName).map((k) => [k, flags[k]])) as TurnFlags;
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
      'run the natpunch server on UDP and TCP: STUN (RFC 8489, RFC 5780 with --alt-address), the rendezvous, and the relay for registered peers ' +
        '(peer-relay mode: only between introduced peers); --turn adds the full TURN service for configured users. ' +
        'Every option can also be set in a TOML file (--config) or a NATPUNCH_* environment variable; precedence flag > env > file > default.',
    )
    .option('--config <file>', 'read options from this TOML file (see deploy/natpunch.toml); env NATPUNCH_CONFIG')
    .option('--print-config', 'print the effective configuration (secrets masked) and exit; with --json as JSON');
  addOptionTable(serve, SERVE_OPTIONS).action(
    action(async (_opts: unknown, cmd: Command) => {
      const resolved = serveSettings(cmd);
      const opts = resolved.values;
      if (cmd.opts().printConfig) {
        if (opts.json) printEvent('config', renderConfigJson(resolved));
        else process.stdout.write(renderConfigToml(resolved));
        return;
      }
      const debug = Boolean(cmd.optsWithGlobals().debug);
      // Servers log JSON lines (pino) on stderr; stdout carries only the "listening" line.
      const logger = createLogger(debug ? 'debug' : 'info');
      const relayOn = opts.relay || Boolean(opts.turn);
      if ((opts.tlsCert || opts.tlsKey) && !(relayOn && opts.tlsCert && opts.tlsKey)) {
        throw new NatpunchError(
          'BAD_ARGUMENT',
          '--tls-cert and --tls-key go together, and need the relay (not --no-relay without --turn)',
        );
      }
      // The relay's flags are checked before any socket is bound (bad flags: one error line, nothing started).
      const relay = relayOn ? relayOptions(opts) : undefined;
      if (opts.spoof && process.getuid?.() !== 0) {
        throw new NatpunchError(
          'NOT_ROOT',
          '--spoof sends spoofed packets on a raw socket: run as root (lab/research networks only)',
        );
      }
      // One raw socket serves both the --spoof-port service and the rendezvous (SEQ_OFFER pairs); the service
      // closes it when it stops (or fails to start).
      // (Loaded only then: the raw-socket and TCP-sequence modules are not part of a plain serve.)
      let spoof: SpoofService | undefined;
      let spoofer: import('../../traversal/tcp-stunt1.js').SynAckSpoofer | undefined;
      if (opts.spoof) {
        const [{ SynAckSpoofer }, { SpoofService }] = await Promise.all([
          import('../../traversal/tcp-stunt1.js'),
          import('../../server/spoof.js'),
        ]);
        spoofer = SynAckSpoofer.open();
        spoof = await SpoofService.start({
          port: opts.spoofPort ?? (opts.port === 0 ? 0 : opts.port + 2),
          logger,
          spoofer,
        });
      }
      // The peer relay's scopes come from the rendezvous' introductions (main thread): with it on, TURN stays in the
      // main thread and the workers answer STUN Binding requests only.
      const turnInMain = Boolean(relay?.peerRelay);
      const workers = effectiveWorkerCount(opts.workers ?? defaultWorkerCount(), {
        altAddress: opts.altAddress,
        udp: opts.udp,
        turnInMain,
      });
      if (workers.reason && opts.workers !== undefined)
        logger.warn({ reason: workers.reason }, 'serve: running one worker');
      // With several workers, TURN's RESERVATION-TOKEN ports are held in a table every worker thread sees.
      const reservationTable = workers.count > 1 && relay && !turnInMain ? createReservationTable() : undefined;
      if (relay && reservationTable)
        relay.turn = { ...relay.turn, reservations: new SharedReservations(reservationTable, 1) };
      let handle: Awaited<ReturnType<typeof startServer>>;
      // Registry backend (memory, or Redis + cluster bus), metrics, dashboard state; the admin endpoint later.
      let ops: ServeOperations;
      try {
        ops = await ServeOperations.prepare(opts, logger);
      } catch (err) {
        await spoof?.close();
        throw err;
      }
      try {
        handle = await startServer({
          reusePort: workers.count > 1,
          port: opts.port,
          addresses: opts.address,
          altAddress: opts.altAddress,
          altPort: opts.altPort,
          udp: opts.udp,
          logger,
          relay: relay ?? false,
          ...(opts.rendezvous
            ? { rendezvous: { ...ops.rendezvousOptions(), ...(spoofer ? { spoofer } : {}) } }
            : { rendezvous: false as const }),
        });
      } catch (err) {
        await spoof?.close();
        await ops.close();
        throw err;
      }
      const turn = handle.relay?.turn;
      let turnTls: TurnTlsHandle | undefined;
      if (turn) {
        try {
          if (opts.tlsCert && opts.tlsKey) {
            turnTls = await listenTurnTls(turn, {
              addresses: handle.tcp.map((e) => e.address),
              port: opts.tlsPort,
              certFile: opts.tlsCert,
              keyFile: opts.tlsKey,
            });
            // Peers whose UDP and plain TCP are blocked learn where TLS is with their credentials.
            if (handle.relay?.peerRelay && turnTls.endpoints[0])
              handle.relay.peerRelay.tlsPort = turnTls.endpoints[0].port;
          }
        } catch (err) {
          await handle.close();
          await spoof?.close();
          throw err;
        }
      }
      if (!opts.turn && (opts.users || opts.authSecret || opts.turnAllow || opts.turnAllowFile)) {
        logger.warn('--users/--auth-secret/--turn-allow given without --turn: the full TURN service is not running');
      }
      let pool: WorkerPool | undefined;
      const stunCounters = new PooledStunCounters(handle.stun);
      if (workers.count > 1) {
        try {
          if (handle.rendezvous || turnInMain) steerToMain(handle.sockets, turnInMain);
          const entry = new URL(`../serve-worker.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url);
          const addresses = handle.udp.map((e) => e.address);
          const data = (index: number): ServeWorkerData => ({
            index: index + 2,
            port: handle.udp[0]!.port,
            addresses: opts.address?.length ? opts.address : addresses,
            debug,
            ...(turn && opts.turn && !turnInMain
              ? {
                  turn: {
                    ...pick(opts),
                    relayAddress: turn.relayAddress,
                    ownAddresses: (opts.address ?? []).filter((a) => a !== '0.0.0.0' && a !== '::'),
                  },
                }
              : {}),
            ...(reservationTable ? { reservationTable } : {}),
          });
          pool = await startWorkerPool({
            count: workers.count - 1,
            entry,
            data,
            logger,
            onCounters: (worker, snapshot) => stunCounters.update(worker, snapshot),
          });
        } catch (err) {
          await turnTls?.close();
          await handle.close();
          await spoof?.close();
          throw err;
        }
      }
      let admin: Awaited<ReturnType<ServeOperations['attach']>>;
      try {
        admin = await ops.attach(handle, turn, stunCounters);
      } catch (err) {
        await pool?.close();
        await turnTls?.close();
        await handle.close();
        await spoof?.close();
        await ops.close();
        throw err;
      }
      if (opts.json) {
        printEvent('listening', {
          udp: handle.udp,
          tcp: handle.tcp,
          rfc5780: handle.rfc5780 ?? null,
          rendezvous: Boolean(handle.rendezvous),
          udpImplementation: handle.udpImplementation,
          workers: workers.count,
          relay: turn
            ? {
                peerRelay: Boolean(handle.relay?.peerRelay),
                fullTurn: Boolean(opts.turn),
                relayAddress: turn.relayAddress,
                relayAddress6: turn.relayAddress6 ?? null,
                tls: turnTls?.endpoints ?? [],
              }
            : null,
          turn:
            turn && opts.turn
              ? {
                  realm: turn.realm,
                  relayAddress: turn.relayAddress,
                  relayAddress6: turn.relayAddress6 ?? null,
                  tls: turnTls?.endpoints ?? [],
                }
              : null,
          spoof: spoof?.address() ?? null,
          rendezvousSpoof: Boolean(spoof && handle.rendezvous),
          admin: admin?.url ?? null,
          redis: ops.redis ? { nodeId: ops.nodeId } : null,
        });
      } else {
        const lines = [
          `natpunch serve: STUN on udp ${handle.udp.map(show).join(', ')}`,
          handle.tcp.length
            ? `${' '.repeat('natpunch serve: STUN on '.length)}tcp ${handle.tcp.map(show).join(', ')}`
            : '',
          handle.rfc5780
            ? `  RFC 5780 mode: primary ${show(handle.rfc5780.primary)}, alternate ${show(handle.rfc5780.altBoth)}`
            : '',
          workers.count > 1
            ? `  ${workers.count} workers share the UDP port (SO_REUSEPORT); TCP, the rendezvous${turnInMain ? ' and the relay' : ''} run in the first`
            : '',
          handle.rendezvous
            ? `  rendezvous on the same port (UDP, TCP fallback)${ops.redis ? `, registry in Redis as node ${ops.nodeId}` : ''}`
            : '  rendezvous off',
          admin ? `  admin: ${admin.url} (metrics, health, dashboard)` : '',
          handle.relay?.peerRelay
            ? `  relay for registered peers on the same port (udp+tcp), only between introduced peers, relaying from ${turn!.relayAddress}${handle.rendezvous ? '' : ' (no rendezvous: nobody gets credentials)'}`
            : '  relay for registered peers off',
          turn && opts.turn
            ? `  full TURN service on the same port (udp+tcp), relaying from ${turn.relayAddress}${turn.relayAddress6 ? ` and ${turn.relayAddress6}` : ''}, realm "${turn.realm}"`
            : '',
          turnTls ? `  relay over TLS on ${turnTls.endpoints.map(show).join(', ')}` : '',
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
          // Bounded: whatever hangs, the process exits (0: stopping was asked for) after drain-timeout + 1 s.
          const deadline = setTimeout(() => {
            logger.warn({ drainTimeoutMs: opts.drainTimeout }, 'serve: shutdown did not finish in time; exiting');
            process.exit(0);
          }, opts.drainTimeout + 1000);
          deadline.unref();
          void (async () => {
            // Stop accepting and tell registered peers to move to another node (MOVE), then release allocations.
            await ops.drain().catch(() => {});
            void turnTls?.close();
            if (turn) logger.info({ turn: { ...turn.stats } }, 'turn: stopped');
            await Promise.allSettled([pool?.close(), handle.close(), spoof?.close()]);
            await ops.close();
          })().then(
            () => resolve(),
            () => resolve(),
          );
        };
        const onInt = () => stop('SIGINT');
        const onTerm = () => stop('SIGTERM');
        process.on('SIGINT', onInt);
        process.on('SIGTERM', onTerm);
      });
    }),
  );
}

/** The relay's options from serve's flags: peer-relay mode unless --no-relay; the full TURN service with --turn. */
function relayOptions(opts: ServeSettings): RelayServiceOptions {
  const allow = [...(opts.turnAllow ?? []), ...(opts.turnAllowFile ? readKeyFile(opts.turnAllowFile) : [])].map((k) =>
    k.toLowerCase(),
  );
  for (const k of allow)
    if (!/^[0-9a-f]{64}$/.test(k))
      throw new NatpunchError('BAD_ARGUMENT', `--turn-allow: "${k}" is not a 64-hex-character key`);
  if (allow.length && !(opts.turn && opts.authSecret?.length))
    throw new NatpunchError(
      'BAD_ARGUMENT',
      '--turn-allow needs --turn and --auth-secret (the credentials it hands out)',
    );
  const turn = turnOptionsFromFlags(opts, Boolean(opts.turn));
  const ownAddresses = (opts.address ?? []).filter((a) => a !== '0.0.0.0' && a !== '::');
  const rate = opts.credentialRate !== undefined ? { credentialRatePerMinute: opts.credentialRate } : {};
  return {
    // A configured secret: credentials one node issues are accepted by every node holding the same secret (and by
    // this one after a restart); without it each process draws its own.
    peerRelay: opts.relay ? { ...rate, ...(opts.relaySecret ? { secret: opts.relaySecret } : {}) } : false,
    turn: { ...turn, ...(ownAddresses.length ? { ownAddresses } : {}) },
    ...(allow.length
      ? {
          turnCredentials: {
            secret: opts.authSecret![0]!,
            allow,
            ...(opts.credentialRate !== undefined ? { ratePerMinute: opts.credentialRate } : {}),
          },
        }
      : {}),
  };
}

function readKeyFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new NatpunchError('BAD_ARGUMENT', `cannot read --turn-allow-file ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter(Boolean);
}
