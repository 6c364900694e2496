import type { Command } from 'commander';
import { action, checkPort, parseHostPort } from '../util.js';
import { DEFAULT_RENDEZVOUS_PORT } from '../../natpunch.js';
import { NatpunchError } from '../../util/errors.js';
import { SocksServer } from '../../tunnel/socks.js';
import { DEFAULT_SESSION_WAIT_MS } from '../../tunnel/link.js';
import { emitter, linkFromFlags, statusEvery, untilSignal, DEFAULT_STATUS_INTERVAL_S } from '../tunnel-output.js';
import { KNOWN_PEERS_FLAG, KNOWN_PEERS_HELP, PEER_KEY_FLAG, PEER_KEY_HELP } from '../known-peers.js';

interface SocksOpts {
  listen: string;
  via: string;
  rendezvous: string;
  key?: string;
  user?: string;
  password?: string;
  bind?: string;
  wait?: number;
  timeout?: number;
  keepalive?: number;
  statusInterval?: number;
  json?: boolean;
  peerKey?: string;
  knownPeers?: string;
}

export function register(program: Command): void {
  program
    .command('socks')
    .description(
      'a local SOCKS5 server (RFC 1928 CONNECT) whose connections exit on a peer running `expose --allow-dest`',
    )
    .requiredOption('--via <peer>', 'the exit peer: registered name or 64-hex key')
    .requiredOption(
      '--rendezvous <host[:port],...>',
      `rendezvous server (default port ${DEFAULT_RENDEZVOUS_PORT}); several, comma-separated, are tried in order when one stops answering`,
    )
    .option('--listen <[host:]port>', 'where the SOCKS server listens', '127.0.0.1:1080')
    .option('--user <name>', 'require RFC 1929 username/password authentication with this user name')
    .option('--password <password>', 'the password for --user (or NATPUNCH_SOCKS_PASSWORD)')
    .option('--key <file>', 'key file (default: NATPUNCH_KEY, else a temporary key)')
    .option(PEER_KEY_FLAG, PEER_KEY_HELP)
    .option(KNOWN_PEERS_FLAG, KNOWN_PEERS_HELP)
    .option('--bind <addr[:port]>', 'local UDP address for the session', '0.0.0.0')
    .option('--wait <ms>', 'how long a new connection waits for the session', (v) => Number(v), DEFAULT_SESSION_WAIT_MS)
    .option('--timeout <ms>', 'give up one session attempt after this long (then retry)', (v) => Number(v), 30_000)
    .option('--keepalive <ms>', 'session keepalive interval in ms', (v) => Number(v))
    .option(
      '--status-interval <s>',
      'print a status line every this many seconds (0: never)',
      (v) => Number(v),
      DEFAULT_STATUS_INTERVAL_S,
    )
    .option('--json', 'events as JSON lines on stdout')
    .action(
      action(async (opts: SocksOpts) => {
        const listen = /^\d+$/.test(opts.listen)
          ? { host: '127.0.0.1', port: checkPort(opts.listen, `--listen ${opts.listen}`) }
          : parseHostPort(opts.listen, 1080);
        const password = opts.password ?? process.env.NATPUNCH_SOCKS_PASSWORD;
        if (Boolean(opts.user) !== Boolean(password))
          throw new NatpunchError('BAD_ARGUMENT', '--user and --password go together');
        for (const v of [opts.user, password]) {
          if (v !== undefined && (Buffer.byteLength(v) < 1 || Buffer.byteLength(v) > 255))
            throw new NatpunchError('BAD_ARGUMENT', 'SOCKS user name and password must be 1 to 255 bytes (RFC 1929)');
        }
        const emit = emitter(opts.json);
        const link = await linkFromFlags(opts.via, opts, emit);
        const server = new SocksServer({
          link,
          listen: { host: listen.host, port: listen.port },
          ...(opts.user && password ? { auth: { username: opts.user, password } } : {}),
        });
        server.on('event', (e) => emit(e as Record<string, unknown>));
        await server.listen().catch(async (err: Error) => {
          await link.close();
          throw new NatpunchError('BAD_ARGUMENT', `cannot listen on ${listen.host}:${listen.port}: ${err.message}`);
        });
        emit({
          event: 'socks-listening',
          listen: { address: listen.host, port: server.address.port },
          auth: Boolean(opts.user),
          via: opts.via,
        });
        link.start();
        const stopStatus = statusEvery(opts.statusInterval, link, () => ({ ...server.stats() }), emit);
        await untilSignal(async () => {
          stopStatus();
          await server.close();
          await link.close();
        });
      }),
    );
}
