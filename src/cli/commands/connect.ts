import { parseRendezvousList } from '../../rendezvous/client.js';
import type { Command } from 'commander';
import { action, parseHostPort } from '../util.js';
import { connect, DEFAULT_RENDEZVOUS_PORT } from '../../natpunch.js';
import { runConnectIcmp } from '../icmp.js';
import { DEFAULT_ICMP_PROBE_ADDRESS, DEFAULT_ICMP_PUNCH_PORT } from '../../traversal/icmp.js';
import { isPeerId } from '../../session/identity.js';
import { NatpunchError } from '../../util/errors.js';
import { parseTcpSequence, parseTransport } from '../transport-flag.js';
import { addNetcatFlags, addRendezvousFlag, num } from '../session-flags.js';
import { keyFromOptions, pipeStdio, progressPrinter } from '../netcat.js';
import { addTechniqueFlags, techniqueOptions, type TechniqueFlags } from '../technique-flags.js';
import { KNOWN_PEERS_FLAG, KNOWN_PEERS_HELP, PEER_KEY_FLAG, PEER_KEY_HELP, pinOptions } from '../known-peers.js';

interface ConnectOpts extends TechniqueFlags {
  rendezvous?: string;
  icmp?: string;
  peerKey?: string;
  port?: number;
  icmpProbeAddress?: string;
  icmpSource?: string;
  key?: string;
  bind?: string;
  timeout?: number;
  keepalive?: number;
  json?: boolean;
  /** false with --no-report */
  report?: boolean;
  transport?: string;
  tcpSeq?: string;
  knownPeers?: string;
  idleTimeout?: number;
}

export function register(program: Command): void {
  const cmd = program
    .command('connect')
    .description(
      'connect to a peer by name or key and pipe stdin/stdout over one stream (netcat style); exits once stdin has ended and the peer has ended its side (nc -N), or after --idle-timeout',
    )
    .argument(
      '[peer]',
      "the peer's registered name (e.g. alice) or its key (64 hex characters); with --icmp, a key here is the server's (as --peer-key)",
    );
  addRendezvousFlag(cmd, false)
    .option(
      '--icmp <server-public-ip>',
      'no rendezvous: ICMP hole punching to a `listen --icmp` server behind this public address (root / CAP_NET_RAW)',
    )
    .option(PEER_KEY_FLAG, PEER_KEY_HELP)
    .option(KNOWN_PEERS_FLAG, KNOWN_PEERS_HELP)
    .option('--port <port>', `--icmp: the agreed UDP port (default ${DEFAULT_ICMP_PUNCH_PORT})`, num)
    .option('--icmp-probe-address <ip>', `--icmp: the server's probe address (default ${DEFAULT_ICMP_PROBE_ADDRESS})`)
    .option(
      '--icmp-source <ip>',
      "--icmp: outer source address of the forged ICMP (e.g. our NAT's public address); default: the kernel's",
    )
    .option('--timeout <ms>', 'give up connecting after this long', num, 30_000);
  addNetcatFlags(
    cmd,
    'end the session after this long without data either way (default: wait for the peer to end its side)',
  );
  addTechniqueFlags(cmd, 'connect').action(
    action(async (peer: string | undefined, opts: ConnectOpts) => {
      if (opts.icmp !== undefined && !opts.rendezvous)
        return runConnectIcmp(opts.icmp, {
          ...opts,
          ...(opts.peerKey === undefined && peer && isPeerId(peer) ? { peerKey: peer } : {}),
        });
      if (!peer || !opts.rendezvous)
        throw new NatpunchError(
          'BAD_ARGUMENT',
          'connect needs <peer> and --rendezvous <host[:port]> (or --icmp SERVER_PUBLIC_IP)',
        );
      const transport = parseTransport(opts.transport);
      const tcpSequence = parseTcpSequence(opts.tcpSeq);
      const print = progressPrinter(opts.json);
      const keyPair = await keyFromOptions(opts.key, print);
      const bind = parseHostPort(opts.bind ?? '0.0.0.0', 0);
      // One or several servers ("a,b"): the client moves to the next when one stops answering.
      const server = parseRendezvousList(opts.rendezvous, DEFAULT_RENDEZVOUS_PORT);
      const ac = new AbortController();
      const stop = () => ac.abort();
      process.once('SIGINT', stop);
      try {
        const session = await connect({
          keyPair,
          ...pinOptions(peer, opts, print),
          rendezvous: server,
          bind: { address: bind.host, port: bind.port },
          onProgress: print,
          signal: ac.signal,
          // With both --rendezvous and --icmp: ICMP hole punching when the rendezvous cannot be reached.
          ...(opts.icmp !== undefined
            ? {
                icmp: {
                  server: opts.icmp,
                  ...(opts.port ? { port: opts.port } : {}),
                  ...(opts.icmpProbeAddress ? { probeAddress: opts.icmpProbeAddress } : {}),
                  ...(opts.icmpSource ? { source: opts.icmpSource } : {}),
                },
              }
            : {}),
          ...(opts.timeout ? { timeoutMs: opts.timeout } : {}),
          ...(opts.keepalive ? { keepAliveMs: opts.keepalive } : {}),
          ...techniqueOptions(opts),
          transport,
          tcpSequence,
          ...(opts.report === false ? { report: false } : {}),
        });
        session.on('path', (p: { kind: string; remote: { address: string; port: number } }) =>
          print({ event: 'path-changed', kind: p.kind, remote: p.remote }),
        );
        const stream = session.openStream();
        try {
          const how = await pipeStdio(stream, session, {
            ...(opts.idleTimeout ? { idleTimeoutMs: opts.idleTimeout } : {}),
          });
          if (how === 'idle') print({ event: 'idle-timeout', ms: opts.idleTimeout });
        } finally {
          await session.close();
        }
      } finally {
        process.off('SIGINT', stop);
      }
    }),
  );
}
