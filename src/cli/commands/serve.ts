import { Option, type Command } from 'commander';
import { readFileSync } from 'node:fs';
import { DEFAULT_CREDENTIAL_RATE_PER_MINUTE } from '../../relay/issuer.js';
import type { RelayServiceOptions } from '../../relay/service.js';
import { DEFAULT_TURNS_PORT, listenTurnTls, type TurnTlsHandle } from '../../relay/tls.js';
import { startServer } from '../../server/serve.js';
import { SpoofService } from '../../server/spoof.js';
import { SynAckSpoofer } from '../../traversal/tcp-stunt1.js';
import { NatpunchError } from '../../util/errors.js';
import { addTurnServerOptions, turnOptionsFromFlags, type TurnFlags } from '../turn-options.js';
import { createLogger } from '../../util/log.js';
import { DEFAULT_STUN_PORT } from '../../wire/stun/index.js';
import { action, intOption } from '../util.js';

interface ServeOptions extends TurnFlags {
  turn?: boolean;
  /** false with --no-relay */
  relay: boolean;
  turnAllow?: string[];
  turnAllowFile?: string;
  credentialRate?: number;
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
    .description(
      'run the natpunch server on UDP and TCP: STUN (RFC 8489, RFC 5780 with --alt-address), the rendezvous, and the relay for registered peers (peer-relay mode: only between introduced peers); --turn adds the full TURN service for configured users',
    )
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
    .option('--no-relay', 'do not relay for registered peers (the default peer-relay mode; see docs/peer-relay.md)')
    .option(
      '--credential-rate <n>',
      `relay credentials the rendezvous issues per client IPv4 address or IPv6 /64 per minute (default ${DEFAULT_CREDENTIAL_RATE_PER_MINUTE})`,
      intOption('--credential-rate', 1, 1_000_000),
    )
    .option('--turn', 'also run the full TURN service (RFC 8656 + RFC 6062) for any peer address, for --users and/or --auth-secret credentials')
    .option('--turn-allow <key>', 'hand this key (64 hex) unscoped --auth-secret credentials through the rendezvous; repeatable', collect)
    .option('--turn-allow-file <file>', 'keys to hand unscoped --auth-secret credentials, one 64-hex key per line (# comments)')
    .option('--tls-cert <file>', 'relay over TLS ("turns:"): certificate chain (PEM); needs --tls-key')
    .option('--tls-key <file>', 'TURN over TLS: private key (PEM)')
    .option('--tls-port <port>', 'TURN over TLS port', intOption('--tls-port', 0, 65535), DEFAULT_TURNS_PORT);
  addTurnServerOptions(serve)
    .action(
      action(async (opts: ServeOptions, cmd: Command) => {
        const debug = Boolean(cmd.optsWithGlobals().debug);
        // Servers log JSON lines (pino) on stderr; stdout carries only the "listening" line.
        const logger = createLogger(debug ? 'debug' : 'info');
        const relayOn = opts.relay || Boolean(opts.turn);
        if ((opts.tlsCert || opts.tlsKey) && !(relayOn && opts.tlsCert && opts.tlsKey)) {
          throw new NatpunchError('BAD_ARGUMENT', '--tls-cert and --tls-key go together, and need the relay (not --no-relay without --turn)');
        }
        // The relay's flags are checked before any socket is bound (bad flags: one error line, nothing started).
        const relay = relayOn ? relayOptions(opts) : undefined;
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
            relay: relay ?? false,
            ...(opts.rendezvous ? (spoofer ? { rendezvous: { spoofer } } : {}) : { rendezvous: false as const }),
          });
        } catch (err) {
          await spoof?.close();
          throw err;
        }
        const turn = handle.relay?.turn;
        let turnTls: TurnTlsHandle | undefined;
        if (turn) {
          try {
            if (opts.tlsCert && opts.tlsKey) {
              turnTls = await listenTurnTls(turn, {
                addresses: handle.tcp.map((e) => e.address),
                port: opts.tlsPort ?? DEFAULT_TURNS_PORT,
                certFile: opts.tlsCert,
                keyFile: opts.tlsKey,
              });
              // Peers whose UDP and plain TCP are blocked learn where TLS is with their credentials.
              if (handle.relay?.peerRelay && turnTls.endpoints[0]) handle.relay.peerRelay.tlsPort = turnTls.endpoints[0].port;
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
        if (opts.json) {
          process.stdout.write(
            `${JSON.stringify({
              event: 'listening',
              udp: handle.udp,
              tcp: handle.tcp,
              rfc5780: handle.rfc5780 ?? null,
              rendezvous: Boolean(handle.rendezvous),
              udpImplementation: handle.udpImplementation,
              relay: turn
                ? { peerRelay: Boolean(handle.relay?.peerRelay), fullTurn: Boolean(opts.turn), relayAddress: turn.relayAddress, relayAddress6: turn.relayAddress6 ?? null, tls: turnTls?.endpoints ?? [] }
                : null,
              turn: turn && opts.turn
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
            handle.rendezvous ? '  rendezvous on the same port (UDP, TCP fallback)' : '  rendezvous off',
            handle.relay?.peerRelay
              ? `  relay for registered peers on the same port (udp+tcp), only between introduced peers, relaying from ${turn!.relayAddress}${handle.rendezvous ? '' : ' (no rendezvous: nobody gets credentials)'}`
              : '  relay for registered peers off',
            turn && opts.turn ? `  full TURN service on the same port (udp+tcp), relaying from ${turn.relayAddress}${turn.relayAddress6 ? ` and ${turn.relayAddress6}` : ''}, realm "${turn.realm}"` : '',
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
            void turnTls?.close();
            if (turn) logger.info({ turn: { ...turn.stats } }, 'turn: stopped');
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

/** The relay's options from serve's flags: peer-relay mode unless --no-relay; the full TURN service with --turn. */
function relayOptions(opts: ServeOptions): RelayServiceOptions {
  const allow = [...(opts.turnAllow ?? []), ...(opts.turnAllowFile ? readKeyFile(opts.turnAllowFile) : [])].map((k) => k.toLowerCase());
  for (const k of allow) if (!/^[0-9a-f]{64}$/.test(k)) throw new NatpunchError('BAD_ARGUMENT', `--turn-allow: "${k}" is not a 64-hex-character key`);
  if (allow.length && !(opts.turn && opts.authSecret?.length)) throw new NatpunchError('BAD_ARGUMENT', '--turn-allow needs --turn and --auth-secret (the credentials it hands out)');
  const turn = turnOptionsFromFlags(opts, Boolean(opts.turn));
  const ownAddresses = (opts.address ?? []).filter((a) => a !== '0.0.0.0' && a !== '::');
  const rate = opts.credentialRate !== undefined ? { credentialRatePerMinute: opts.credentialRate } : {};
  return {
    peerRelay: opts.relay ? rate : false,
    turn: { ...turn, ...(ownAddresses.length ? { ownAddresses } : {}) },
    ...(allow.length
      ? { turnCredentials: { secret: opts.authSecret![0]!, allow, ...(opts.credentialRate !== undefined ? { ratePerMinute: opts.credentialRate } : {}) } }
      : {}),
  };
}

function readKeyFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new NatpunchError('BAD_ARGUMENT', `cannot read --turn-allow-file ${path}: ${(err as Error).message}`, { cause: err });
  }
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter(Boolean);
}
