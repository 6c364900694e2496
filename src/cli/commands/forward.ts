import type { Command } from 'commander';
import { action, checkPort } from '../util.js';
import { DEFAULT_RENDEZVOUS_PORT } from '../../natpunch.js';
import { NatpunchError } from '../../util/errors.js';
import { TcpForwarder } from '../../tunnel/forward.js';
import { DEFAULT_SESSION_WAIT_MS } from '../../tunnel/link.js';
import { emitter, linkFromFlags, statusEvery, untilSignal, DEFAULT_STATUS_INTERVAL_S } from '../tunnel-output.js';
import { KNOWN_PEERS_FLAG, KNOWN_PEERS_HELP, PEER_KEY_FLAG, PEER_KEY_HELP } from '../known-peers.js';

interface ForwardOpts {
  rendezvous: string;
  key?: string;
  bind?: string;
  wait?: number;
  timeout?: number;
  keepalive?: number;
  statusInterval?: number;
  json?: boolean;
  peerKey?: string;
  knownPeers?: string;
}

/** "[BIND:]LOCALPORT:PEER:REMOTEPORT" (ssh -L style); PEER is a registered name or a 64-hex key. */
export function parseForwardSpec(spec: string): { bind: string; localPort: number; peer: string; remotePort: number } {
  const parts = spec.split(':');
  if (parts.length !== 3 && parts.length !== 4) {
    throw new NatpunchError(
      'BAD_ARGUMENT',
      `bad forward "${spec.slice(0, 80)}": expected LOCALPORT:PEER:REMOTEPORT (e.g. 2222:homebox:22)`,
    );
  }
  const [bind, local, peer, remote] = parts.length === 4 ? parts : ['127.0.0.1', ...parts];
  const remotePort = checkPort(remote!, spec);
  if (remotePort === 0 || !peer)
    throw new NatpunchError('BAD_ARGUMENT', `bad forward "${spec.slice(0, 80)}": expected LOCALPORT:PEER:REMOTEPORT`);
  return { bind: bind!, localPort: checkPort(local!, spec), peer, remotePort };
}

export function register(program: Command): void {
  program
    .command('forward')
    .description('listen on a local TCP port; each connection goes through ONE session to a peer running `expose`')
    .argument(
      '<spec>',
      '[BIND:]LOCALPORT:PEER:REMOTEPORT, e.g. 2222:homebox:22 (PEER: name or 64-hex key; BIND default 127.0.0.1)',
    )
    .requiredOption(
      '--rendezvous <host[:port],...>',
      `rendezvous server (default port ${DEFAULT_RENDEZVOUS_PORT}); several, comma-separated, are tried in order when one stops answering`,
    )
    .option('--key <file>', 'key file (default: NATPUNCH_KEY, else a temporary key)')
    .option(PEER_KEY_FLAG, PEER_KEY_HELP)
    .option(KNOWN_PEERS_FLAG, KNOWN_PEERS_HELP)
    .option('--bind <addr[:port]>', 'local UDP address for the session', '0.0.0.0')
    .option(
      '--wait <ms>',
      'how long a new connection waits for the session before it is dropped',
      (v) => Number(v),
      DEFAULT_SESSION_WAIT_MS,
    )
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
      action(async (specText: string, opts: ForwardOpts) => {
        const spec = parseForwardSpec(specText);
        const emit = emitter(opts.json);
        const link = await linkFromFlags(spec.peer, opts, emit);
        const fwd = new TcpForwarder({
          link,
          remotePort: spec.remotePort,
          peerLabel: spec.peer.length > 20 ? `${spec.peer.slice(0, 16)}…` : spec.peer,
          listen: { host: spec.bind, port: spec.localPort },
        });
        fwd.on('event', (e) => emit(e as Record<string, unknown>));
        await fwd.listen().catch(async (err: Error) => {
          await link.close();
          throw new NatpunchError('BAD_ARGUMENT', `cannot listen on ${spec.bind}:${spec.localPort}: ${err.message}`);
        });
        emit({
          event: 'forwarding',
          listen: { address: spec.bind, port: fwd.address.port },
          peer: spec.peer,
          remotePort: spec.remotePort,
        });
        link.start();
        const stopStatus = statusEvery(opts.statusInterval, link, () => ({ ...fwd.stats() }), emit);
        await untilSignal(async () => {
          stopStatus();
          await fwd.close();
          await link.close();
        });
      }),
    );
}
