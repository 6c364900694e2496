import { parseRendezvousList } from '../../rendezvous/client.js';
import type { Command } from 'commander';
import { on, once } from 'node:events';
import { action, parseHostPort } from '../util.js';
import { listen, DEFAULT_RENDEZVOUS_PORT } from '../../natpunch.js';
import { isPeerId, keyToId } from '../../session/identity.js';
import { isNatpunchError, NatpunchError } from '../../util/errors.js';
import { parseTcpSequence, parseTransport } from '../transport-flag.js';
import type { Session } from '../../session/session.js';
import type { MuxStream } from '../../session/mux.js';
import { runListenIcmp } from '../icmp.js';
import {
  DEFAULT_ICMP_INTERVAL_MS,
  DEFAULT_ICMP_PROBE_ADDRESS,
  DEFAULT_ICMP_PUNCH_PORT,
  MIN_ICMP_INTERVAL_MS,
} from '../../traversal/icmp.js';
import { addNetcatFlags, addRendezvousFlag, num } from '../session-flags.js';
import { keyFromOptions, parseAllow, pipeStdio, progressPrinter } from '../netcat.js';
import { addTechniqueFlags, techniqueOptions, type TechniqueFlags } from '../technique-flags.js';

interface ListenOpts extends TechniqueFlags {
  name?: string;
  rendezvous?: string;
  icmp?: boolean;
  icmpProbeAddress?: string;
  icmpInterval?: number;
  port?: number;
  key?: string;
  allow?: string[];
  allowAny?: boolean;
  bind?: string;
  keepalive?: number;
  json?: boolean;
  /** false with --no-report */
  report?: boolean;
  transport?: string;
  tcpSeq?: string;
  keepOpen?: boolean;
  idleTimeout?: number;
}

export function register(program: Command): void {
  const cmd = program
    .command('listen')
    .description(
      'wait for a peer to connect and pipe stdin/stdout over the stream it opens (netcat style); serves one session and exits unless --keep-open',
    );
  addRendezvousFlag(cmd, false)
    .option(
      '--icmp',
      'no rendezvous: ICMP hole punching (needs root / CAP_NET_RAW); clients run `connect --icmp OUR_PUBLIC_IP`',
    )
    .option(
      '--icmp-probe-address <ip>',
      `--icmp: unreachable address the echo requests go to (default ${DEFAULT_ICMP_PROBE_ADDRESS})`,
    )
    .option(
      '--icmp-interval <ms>',
      `--icmp: echo request interval (default ${DEFAULT_ICMP_INTERVAL_MS}, at least ${MIN_ICMP_INTERVAL_MS})`,
      num,
    )
    .option('--port <port>', `--icmp: the agreed UDP port (default ${DEFAULT_ICMP_PUNCH_PORT})`, num)
    .option('--name <name>', 'name to register on the rendezvous (e.g. alice)')
    .option(
      '--allow <key...>',
      'peer keys (64 hex characters) that may connect; without it (or --allow-any) any key may, with a warning',
    )
    .option('--allow-any', 'let any key connect, on purpose (no warning)')
    .option('--keep-open', 'after a session ends, wait for the next one (nc -k); default: serve one session and exit');
  addNetcatFlags(cmd, 'end a session after this long without data either way');
  addTechniqueFlags(cmd, 'listen').action(
    action(async (opts: ListenOpts) => {
      if (opts.icmp) return runListenIcmp(opts);
      if (!opts.rendezvous)
        throw new NatpunchError('BAD_ARGUMENT', 'listen needs --rendezvous <host[:port]> (or --icmp)');
      const transport = parseTransport(opts.transport);
      const tcpSequence = parseTcpSequence(opts.tcpSeq);
      const print = progressPrinter(opts.json);
      const allow = parseAllow(opts.allow);
      for (const k of allow ?? [])
        if (!isPeerId(k))
          throw new NatpunchError('BAD_ARGUMENT', `--allow: "${k.slice(0, 80)}" is not a peer key (64 hex characters)`);
      if (allow && opts.allowAny)
        throw new NatpunchError('BAD_ARGUMENT', '--allow-any contradicts --allow: give either the keys or --allow-any');
      // Before anything else is printed, so it is never lost among progress lines.
      if (!allow && !opts.allowAny) {
        const warning = 'any key may connect: restrict with --allow KEY, or pass --allow-any to mean it';
        print({ event: 'warning', message: warning });
      }
      const keyPair = await keyFromOptions(opts.key, print);
      const bind = parseHostPort(opts.bind ?? '0.0.0.0', 0);
      // One or several servers ("a,b"): the client moves to the next when one stops answering.
      const server = parseRendezvousList(opts.rendezvous, DEFAULT_RENDEZVOUS_PORT);
      const listener = await listen({
        keyPair,
        rendezvous: server,
        ...(opts.name ? { name: opts.name } : {}),
        ...(allow ? { allow } : {}),
        bind: { address: bind.host, port: bind.port },
        onProgress: print,
        ...(opts.keepalive ? { keepAliveMs: opts.keepalive } : {}),
        ...techniqueOptions(opts),
        transport,
        tcpSequence,
        ...(opts.report === false ? { report: false } : {}),
      });
      const stop = () => void listener.close();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      print({
        event: 'listening',
        publicKey: keyToId(keyPair.publicKey),
        name: opts.name ?? null,
        allow: allow ?? null,
      });
      listener.on('connection-error', (err: Error, peer: string) => {
        print({ event: 'connection-failed', peer, error: err.message, code: isNatpunchError(err) ? err.code : null });
      });
      // Sessions queue up while one is being served (`on` buffers them); the listener's close ends the loop.
      // A queued session's first stream can open before the loop reaches it (e.g. while the previous session is
      // still saying goodbye): take it when the session arrives, or it is missed and the peer waits forever.
      const firstStream = new WeakMap<Session, Promise<unknown[]>>();
      listener.on('session', (s: Session) => {
        const first = once(s, 'stream');
        first.catch(() => {});
        firstStream.set(s, first);
      });
      const stopped = new AbortController();
      listener.once('close', () => stopped.abort());
      try {
        const closed = once(listener, 'close').then(() => {
          throw new NatpunchError('ABORTED', 'stopped');
        });
        closed.catch(() => {});
        // One session, one stream: like `nc -l`; with --keep-open the next session after it (`nc -k`).
        const pipe = opts.idleTimeout ? { idleTimeoutMs: opts.idleTimeout } : {};
        for await (const [session] of on(listener, 'session', { signal: stopped.signal }) as AsyncIterable<[Session]>) {
          const [stream] = (await Promise.race([firstStream.get(session) ?? once(session, 'stream'), closed])) as [
            MuxStream,
          ];
          if ((await pipeStdio(stream, session, pipe)) === 'idle')
            print({ event: 'idle-timeout', ms: opts.idleTimeout });
          await session.close();
          if (!opts.keepOpen) break;
        }
      } catch (err) {
        // Ctrl-C / SIGTERM while waiting: a clean stop, not an error.
        if (!stopped.signal.aborted) throw err;
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        await listener.close();
      }
    }),
  );
}
