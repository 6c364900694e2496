import type { Command } from 'commander';
import { NodeDatagramTransport } from '../../net/datagram.js';
import { makeSharedSecretCredentials } from '../../relay/auth.js';
import { TurnClient } from '../../relay/client.js';
import { NatpunchError } from '../../util/errors.js';
import { createLogger } from '../../util/log.js';
import { addTurnServerOptions, turnServerFromFlags, type TurnFlags } from '../turn-options.js';
import { action, intOption, parseHostPort, printEvent, progress } from '../util.js';

interface AllocateFlags {
  user?: string;
  password?: string;
  authSecret?: string;
  tcp?: boolean;
  tcpRelay?: boolean;
  peer?: string[];
  json?: boolean;
  quiet?: boolean;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function register(program: Command): void {
  const turn = program
    .command('turn')
    .description('TURN relay (RFC 8656): a standalone server and a client for manual checks');

  addTurnServerOptions(
    turn
      .command('serve')
      .description('run only a TURN server (`natpunch serve --turn` runs it beside STUN and rendezvous)')
      .option('--port <port>', 'UDP and TCP port', intOption('--port', 0, 65535), 3478)
      .option('--address <ip>', 'listening address', '0.0.0.0')
      .option('--json', 'the listening event as a JSON line on stdout'),
  ).action(
    action(async (opts: TurnFlags & { port: number; address: string; json?: boolean }, cmd: Command) => {
      const logger = createLogger(cmd.optsWithGlobals().debug ? 'debug' : 'info');
      const server = turnServerFromFlags(opts, logger);
      const where = await server.listen({ port: opts.port, address: opts.address });
      if (opts.json) printEvent('listening', { ...where, relayAddress: server.relayAddress, realm: server.realm });
      else
        process.stderr.write(
          `natpunch turn: listening on ${where.address}:${where.port} (udp+tcp), relaying from ${server.relayAddress}, realm "${server.realm}"\n`,
        );
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      server.close();
    }),
  );

  turn
    .command('allocate')
    .description('allocate a relayed address on a TURN server, print it, optionally permit peers, then release it')
    .argument('<server>', 'TURN server host:port (IP literal)')
    .option('--user <name>', 'username')
    .option('--password <password>', 'password')
    .option('--auth-secret <secret>', 'make time-limited credentials from this shared secret instead of --password')
    .option('--tcp', 'talk to the server over TCP')
    .option('--tcp-relay', 'ask for a TCP relayed address (RFC 6062; implies --tcp)')
    .option('--peer <ip>', 'create a permission for this peer IP; repeatable', collect)
    .option('--json', 'print JSON')
    .option('-q, --quiet', 'no progress lines')
    .action(
      action(async (serverText: string, opts: AllocateFlags) => {
        const { host, port } = parseHostPort(serverText, 3478);
        let username = opts.user;
        let password = opts.password;
        if (opts.authSecret) {
          const c = makeSharedSecretCredentials(opts.authSecret, 3600, opts.user);
          username = c.username;
          password = c.password;
        }
        if (!username || password === undefined)
          throw new NatpunchError('BAD_ARGUMENT', 'give --user and --password (or --auth-secret)');
        const ac = new AbortController();
        const timer = setTimeout(() => ac.abort(), 15_000);
        const base = { server: { address: host, port }, username, password, software: 'natpunch' };
        const overTcp = opts.tcp || opts.tcpRelay;
        const transport = overTcp
          ? null
          : await NodeDatagramTransport.bind({ type: host.includes(':') ? 'udp6' : 'udp4' });
        const client = overTcp
          ? await TurnClient.connectTcp({ ...base, signal: ac.signal })
          : new TurnClient({ ...base, transport: transport! });
        try {
          progress(
            opts.quiet || opts.json,
            `allocating on ${host}:${port} over ${overTcp ? 'TCP' : 'UDP'} as ${username}...`,
          );
          const alloc = await client.allocate({ signal: ac.signal, transport: opts.tcpRelay ? 'tcp' : 'udp' });
          const permitted: string[] = [];
          if (opts.peer?.length) {
            await client.createPermission(opts.peer, ac.signal);
            permitted.push(...opts.peer);
          }
          const out = {
            server: `${host}:${port}`,
            transport: overTcp ? 'tcp' : 'udp',
            relayTransport: opts.tcpRelay ? 'tcp' : 'udp',
            relayed: alloc.relayed.map((r) => `${fmt(r.address)}:${r.port}`),
            mapped: alloc.mapped ? `${fmt(alloc.mapped.address)}:${alloc.mapped.port}` : null,
            lifetime: alloc.lifetime,
            permissions: permitted,
          };
          if (opts.json) printEvent('allocation', out);
          else {
            process.stdout.write(
              `relayed  ${out.relayed.join(', ')}\nmapped   ${out.mapped ?? '-'}\nlifetime ${out.lifetime} s\n`,
            );
            if (permitted.length) process.stdout.write(`permitted ${permitted.join(', ')}\n`);
          }
        } finally {
          clearTimeout(timer);
          await client.close();
          transport?.close();
        }
      }),
    );

  turn
    .command('credentials')
    .description('print time-limited TURN credentials for a shared secret (what WebRTC apps hand to browsers)')
    .requiredOption('--auth-secret <secret>', "the server's --auth-secret")
    .option('--user <name>', 'user name to embed (username becomes "expiry:user")')
    .option('--ttl <seconds>', 'validity', intOption('--ttl', 1, 7 * 86400), 86400)
    .option('--json', 'print JSON')
    .action(
      action((opts: { authSecret: string; user?: string; ttl: number; json?: boolean }) => {
        const c = makeSharedSecretCredentials(opts.authSecret, opts.ttl, opts.user);
        if (opts.json) printEvent('credentials', c);
        else
          process.stdout.write(
            `username ${c.username}\npassword ${c.password}\nexpires  ${new Date(c.expires * 1000).toISOString()}\n`,
          );
      }),
    );
}

function fmt(address: string): string {
  return address.includes(':') ? `[${address}]` : address;
}
