import type { Command } from 'commander';
import { action, checkPort, parseHostPort } from '../util.js';
import { NatpunchError } from '../../util/errors.js';
import { SocksServer } from '../../tunnel/socks.js';
import { addLinkFlags, emitter, linkFromFlags, statusEvery, untilSignal, type LinkFlags } from '../tunnel-output.js';

interface SocksOpts extends LinkFlags {
  listen: string;
  via: string;
  user?: string;
  password?: string;
}

export function register(program: Command): void {
  addLinkFlags(
    program
      .command('socks')
      .description(
        'a local SOCKS5 server (RFC 1928 CONNECT) whose connections exit on a peer running `expose --allow-dest`',
      )
      .requiredOption('--via <peer>', 'the exit peer: registered name or 64-hex key')
      .option('--listen <[host:]port>', 'where the SOCKS server listens', '127.0.0.1:1080')
      .option('--user <name>', 'require RFC 1929 username/password authentication with this user name')
      .option('--password <password>', 'the password for --user (or NATPUNCH_SOCKS_PASSWORD)'),
  ).action(
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
