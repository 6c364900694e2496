/**
 * `natpunch listen --icmp` and `natpunch connect --icmp SERVER_PUBLIC_IP`: ICMP hole punching (src/traversal/icmp.ts)
 * behind the netcat-style commands. listen.ts / connect.ts hand over here when --icmp is given.
 */
import { once } from 'node:events';
import { isIPv4 } from 'node:net';
import { idToKey, isPeerId, keyToId } from '../session/identity.js';
import type { Session } from '../session/session.js';
import type { MuxStream } from '../session/mux.js';
import { isNatpunchError, NatpunchError } from '../util/errors.js';
import { listenIcmp, DEFAULT_ICMP_PUNCH_PORT } from '../traversal/icmp.js';
import { connectWithoutRendezvous } from '../traversal/no-rendezvous.js';
import { silentLogger } from '../util/log.js';
import { parseHostPort } from './util.js';
import { keyFromOptions, parseAllow, pipeStdio, progressPrinter } from './netcat.js';

export interface IcmpListenCliOptions {
  key?: string;
  bind?: string;
  allow?: string[];
  port?: number;
  icmpProbeAddress?: string;
  icmpInterval?: number;
  keepalive?: number;
  json?: boolean;
}

export interface IcmpConnectCliOptions {
  key?: string;
  bind?: string;
  peerKey?: string;
  port?: number;
  icmpProbeAddress?: string;
  icmpSource?: string;
  timeout?: number;
  keepalive?: number;
  json?: boolean;
}

function port(opts: { port?: number }): number {
  const p = opts.port ?? DEFAULT_ICMP_PUNCH_PORT;
  if (!Number.isInteger(p) || p <= 0 || p > 65535)
    throw new NatpunchError('BAD_ARGUMENT', `--port must be 1-65535 (got ${String(opts.port)})`);
  return p;
}

/** --bind's address (its port, if any, is ignored: --icmp uses the agreed --port). */
function bindAddress(bind: string | undefined): { bindAddress?: string } {
  if (!bind) return {};
  return { bindAddress: parseHostPort(bind, 0).host };
}

function checkAddress(value: string | undefined, flag: string): void {
  if (value !== undefined && !isIPv4(value))
    throw new NatpunchError('BAD_ARGUMENT', `${flag} must be an IPv4 address (got "${value.slice(0, 80)}")`);
}

export async function runListenIcmp(opts: IcmpListenCliOptions): Promise<void> {
  const print = progressPrinter(opts.json);
  const allow = parseAllow(opts.allow);
  for (const k of allow ?? [])
    if (!isPeerId(k))
      throw new NatpunchError('BAD_ARGUMENT', `--allow: "${k.slice(0, 80)}" is not a peer key (64 hex characters)`);
  checkAddress(opts.icmpProbeAddress, '--icmp-probe-address');
  if (opts.icmpInterval !== undefined && !(opts.icmpInterval > 0))
    throw new NatpunchError('BAD_ARGUMENT', '--icmp-interval must be a positive number of ms');
  const keyPair = await keyFromOptions(opts.key, print);
  const listener = await listenIcmp({
    keyPair,
    port: port(opts),
    onProgress: print,
    ...bindAddress(opts.bind),
    ...(allow ? { allow } : {}),
    ...(opts.icmpProbeAddress ? { probeAddress: opts.icmpProbeAddress } : {}),
    ...(opts.icmpInterval ? { intervalMs: opts.icmpInterval } : {}),
    ...(opts.keepalive ? { keepAliveMs: opts.keepalive } : {}),
  });
  const stop = () => void listener.close();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  if (!allow) print({ event: 'warning', message: 'any key may connect: restrict with --allow KEY' });
  print({ event: 'listening', publicKey: keyToId(keyPair.publicKey), icmp: true, allow: allow ?? null });
  listener.on('connection-error', (err: Error, from: string) => {
    print({ event: 'connection-failed', peer: from, error: err.message, code: isNatpunchError(err) ? err.code : null });
  });
  try {
    const closed = once(listener, 'close').then(() => {
      throw new NatpunchError('ABORTED', 'stopped');
    });
    const [session] = (await Promise.race([once(listener, 'session'), closed])) as [Session];
    const [stream] = (await Promise.race([once(session, 'stream'), closed])) as [MuxStream];
    await pipeStdio(stream, session);
    await session.close();
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await listener.close();
  }
}

export async function runConnectIcmp(server: string, opts: IcmpConnectCliOptions): Promise<void> {
  const print = progressPrinter(opts.json);
  checkAddress(server, '--icmp');
  checkAddress(opts.icmpProbeAddress, '--icmp-probe-address');
  checkAddress(opts.icmpSource, '--icmp-source');
  if (opts.peerKey !== undefined && !isPeerId(opts.peerKey))
    throw new NatpunchError(
      'BAD_ARGUMENT',
      `--peer-key: "${opts.peerKey.slice(0, 80)}" is not a peer key (64 hex characters)`,
    );
  const keyPair = await keyFromOptions(opts.key, print);
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once('SIGINT', stop);
  try {
    // The same planner path as connect() whose rendezvous never answered (no-rendezvous.ts): technique-start/-end,
    // one 'path' event and an error that says what was tried.
    const session = await connectWithoutRendezvous({
      keyPair,
      logger: silentLogger,
      onProgress: print,
      signal: ac.signal,
      icmp: {
        server,
        peerKey: opts.peerKey ? idToKey(opts.peerKey) : null,
        port: port(opts),
        ...(opts.bind ? { bindAddress: parseHostPort(opts.bind, 0).host } : {}),
        ...(opts.icmpProbeAddress ? { probeAddress: opts.icmpProbeAddress } : {}),
        ...(opts.icmpSource ? { source: opts.icmpSource } : {}),
        ...(opts.timeout ? { timeoutMs: opts.timeout } : {}),
      },
      ...(opts.keepalive ? { keepAliveMs: opts.keepalive } : {}),
    });
    // Never null here: ICMP is allowed, so the plan has its one step.
    if (!session) throw new NatpunchError('PUNCH_FAILED', 'the planner offered no ICMP attempt');
    if (!opts.peerKey) print({ event: 'unverified-key', key: keyToId(session.remotePublicKey) });
    const stream = session.openStream();
    try {
      await pipeStdio(stream, session);
    } finally {
      await session.close();
    }
  } finally {
    process.off('SIGINT', stop);
  }
}
