import type { Command } from 'commander';
import { parseRendezvousList } from '../../rendezvous/client.js';
import { action, parseHostPort } from '../util.js';
import { DEFAULT_RENDEZVOUS_PORT } from '../../natpunch.js';
import { addRendezvousFlag, addStatusFlags, KEY_FLAG, KEY_HELP, num } from '../session-flags.js';
import { isPeerId, keyToId } from '../../session/identity.js';
import { NatpunchError } from '../../util/errors.js';
import { expose } from '../../tunnel/index.js';
import { DestinationPolicy } from '../../tunnel/policy.js';
import type { ExposeTarget } from '../../tunnel/exit.js';
import type { Session } from '../../session/session.js';
import { keyFromOptions } from '../netcat.js';
import { emitter, every, resolveAllow, untilSignal } from '../tunnel-output.js';

interface ExposeOpts {
  name?: string;
  rendezvous: string;
  key?: string;
  allow?: string[];
  allowFile?: string[];
  allowAny?: boolean;
  allowDest?: string[];
  bind?: string;
  keepalive?: number;
  statusInterval?: number;
  json?: boolean;
}

/** "22" → localhost:22; "HOST:PORT" and "[v6]:PORT" as given. */
export function parseTarget(text: string): ExposeTarget {
  if (/^\d+$/.test(text)) {
    const port = Number(text);
    if (port < 1 || port > 65535) throw new NatpunchError('BAD_ARGUMENT', `bad port "${text}"`);
    return { host: 'localhost', port };
  }
  const t = parseHostPort(text, 0);
  if (!t.host || t.port < 1)
    throw new NatpunchError('BAD_ARGUMENT', `bad target "${text.slice(0, 80)}": expected PORT or HOST:PORT`);
  return { host: t.host, port: t.port };
}

/**
 * Who may use the exposed services: expose admits no one by default (issue 18: whoever learns the name must not
 * reach the services), so one of --allow, --allow-file, --allow-any is required. undefined: --allow-any.
 */
export async function exposeAllow(opts: {
  allow?: string[];
  allowFile?: string[];
  allowAny?: boolean;
}): Promise<string[] | undefined> {
  const listed = [...(opts.allow ?? []), ...(opts.allowFile ?? [])];
  if (opts.allowAny) {
    if (listed.length > 0)
      throw new NatpunchError(
        'BAD_ARGUMENT',
        '--allow-any contradicts --allow/--allow-file: give either the keys or --allow-any',
      );
    return undefined;
  }
  if (listed.length === 0) {
    throw new NatpunchError(
      'BAD_ARGUMENT',
      'expose admits no one by default: give --allow KEY (repeatable), --allow-file FILE, or --allow-any to let any key connect',
    );
  }
  for (const f of opts.allowFile ?? [])
    if (isPeerId(f))
      throw new NatpunchError('BAD_ARGUMENT', `--allow-file ${f.slice(0, 16)}…: that is a key; use --allow KEY`);
  return (await resolveAllow(listed)) ?? [];
}

export function register(program: Command): void {
  const cmd = program
    .command('expose')
    .description(
      'serve tunnels: peers that connect (see `forward`, `socks`) reach the given PORT or HOST:PORT through this machine',
    )
    .argument(
      '[targets...]',
      'what `forward` may reach: PORT (on localhost) or HOST:PORT, one per port; put them before the options',
    )
    .option('--name <name>', 'name to register on the rendezvous (e.g. homebox)')
    .option(KEY_FLAG, KEY_HELP)
    .option(
      '--allow <key...>',
      'a peer that may connect (64-hex key; repeatable); one of --allow, --allow-file, --allow-any is required',
    )
    .option(
      '--allow-file <file...>',
      'peers that may connect, from a file: a key file (JSON with publicKey) or one 64-hex key per line',
    )
    .option(
      '--allow-any',
      'let ANY key connect (whoever learns the name reaches the exposed services); not the default',
    )
    .option(
      '--allow-dest <rule...>',
      'where `socks` clients may go: CIDR:PORTS or HOST:PORTS (e.g. 10.0.0.0/24:80,443, db.lan:5432, 0.0.0.0/0:*); default: nowhere',
    )
    .option('--bind <addr[:port]>', 'local UDP address to bind', '0.0.0.0')
    .option('--keepalive <ms>', 'session keepalive interval in ms', num);
  addStatusFlags(addRendezvousFlag(cmd, true)).action(
    action(async (targetArgs: string[], opts: ExposeOpts) => {
      const emit = emitter(opts.json);
      const targets = targetArgs.map(parseTarget);
      const destinations = DestinationPolicy.parse(opts.allowDest ?? []);
      if (targets.length === 0 && destinations.empty) {
        throw new NatpunchError(
          'BAD_ARGUMENT',
          'nothing to expose: give a PORT or HOST:PORT, and/or --allow-dest rules for SOCKS clients',
        );
      }
      const allow = await exposeAllow(opts);
      const keyPair = await keyFromOptions(opts.key, emit);
      const bind = parseHostPort(opts.bind ?? '0.0.0.0', 0);
      const server = parseRendezvousList(opts.rendezvous, DEFAULT_RENDEZVOUS_PORT);
      const handle = await expose({
        keyPair,
        rendezvous: server,
        ...(opts.name ? { name: opts.name } : {}),
        allow: allow ?? (() => true),
        bind: { address: bind.host, port: bind.port },
        onProgress: (p) => emit(p as unknown as Record<string, unknown>),
        ...(opts.keepalive ? { keepAliveMs: opts.keepalive } : {}),
        exit: { targets, destinations },
      });
      handle.exit.on('event', (e) => emit(e as unknown as Record<string, unknown>));
      handle.listener.on('connection-error', (err: Error, peer: string) =>
        emit({ event: 'session-failed', peer, error: err.message, code: (err as NatpunchError).code ?? null }),
      );
      handle.listener.on('session', (s: Session) => {
        const peer = keyToId(s.remotePublicKey);
        const p = s.path;
        emit({ event: 'session', peer, path: p.kind, remote: p.remote, rttMs: p.rttMs });
        s.on('path', (np: Session['path']) =>
          emit({ event: 'path', peer, path: np.kind, remote: np.remote, rttMs: np.rttMs }),
        );
        s.once('close', (err: Error | null) =>
          emit({ event: 'session-closed', peer, error: err ? err.message : null }),
        );
      });
      const id = keyToId(keyPair.publicKey);
      emit({
        event: 'exposing',
        publicKey: id,
        name: opts.name ?? null,
        targets,
        allowDest: destinations.rules.map((r) => r.text),
        allow: allow ?? null,
      });
      const stopStatus = every(opts.statusInterval, () => {
        const sessions = [...handle.listener.sessions].map((s) => ({
          peer: keyToId(s.remotePublicKey),
          path: s.path.kind,
          remote: s.path.remote,
          rttMs: s.path.rttMs,
        }));
        emit({ event: 'status', sessions, ...handle.exit.stats() });
      });
      await untilSignal(async () => {
        stopStatus();
        await handle.close();
      });
    }),
  );
}
