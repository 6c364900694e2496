import type { Command } from 'commander';
import { action, checkPort } from '../util.js';
import { NatpunchError } from '../../util/errors.js';
import { TcpForwarder } from '../../tunnel/forward.js';
import { addLinkFlags, emitter, linkFromFlags, statusEvery, untilSignal, type LinkFlags } from '../tunnel-output.js';

type ForwardOpts = LinkFlags;

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
  addLinkFlags(
    program
      .command('forward')
      .description('listen on a local TCP port; each connection goes through ONE session to a peer running `expose`')
      .argument(
        '<spec>',
        '[BIND:]LOCALPORT:PEER:REMOTEPORT, e.g. 2222:homebox:22 (PEER: name or 64-hex key; BIND default 127.0.0.1)',
      ),
  ).action(
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
