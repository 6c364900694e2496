import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { parseRendezvousList } from '../rendezvous/client.js';
import { isPeerId, keyToId } from '../session/identity.js';
import { NatpunchError } from '../util/errors.js';
import { linkTo } from '../tunnel/index.js';
import { DEFAULT_RENDEZVOUS_PORT } from '../natpunch.js';
import { keyFromOptions } from './netcat.js';
import { parseHostPort } from './util.js';
import { createPrinter, type Emit } from './events.js';
import { KNOWN_PEERS_FLAG, KNOWN_PEERS_HELP, PEER_KEY_FLAG, PEER_KEY_HELP, pinOptions } from './known-peers.js';
import { DEFAULT_SESSION_WAIT_MS } from '../tunnel/link.js';
import {
  addRendezvousFlag,
  addStatusFlags,
  DEFAULT_STATUS_INTERVAL_S,
  KEY_FLAG,
  KEY_HELP,
  num,
} from './session-flags.js';

/** Shared by `expose`, `forward` and `socks`: the one printer (src/cli/events.ts); --json events on stdout. */
export type { Emit } from './events.js';
export { bytes } from './events.js';

export function emitter(json: boolean | undefined): Emit {
  return createPrinter({ json: Boolean(json) });
}

/** --allow values: 64-hex keys, or files holding a key file (JSON with publicKey) or hex keys one per line. */
export async function resolveAllow(values: string[] | undefined): Promise<string[] | undefined> {
  if (!values || values.length === 0) return undefined;
  const out: string[] = [];
  for (const v of values
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean)) {
    if (isPeerId(v)) {
      out.push(v.toLowerCase());
      continue;
    }
    let text: string;
    try {
      text = await readFile(v, 'utf8');
    } catch {
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `--allow ${v.slice(0, 80)}: neither a peer key (64 hex characters) nor a readable file`,
      );
    }
    try {
      const parsed = JSON.parse(text) as { publicKey?: unknown };
      if (typeof parsed.publicKey === 'string' && isPeerId(parsed.publicKey)) {
        out.push(parsed.publicKey.toLowerCase());
        continue;
      }
    } catch {
      // not JSON: a list of keys
    }
    const keys = text
      .split('\n')
      .map((l) => l.replace(/#.*/, '').trim())
      .filter(Boolean);
    if (keys.length === 0 || !keys.every(isPeerId))
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `--allow ${v}: expected a key file (JSON with publicKey) or one 64-hex key per line`,
      );
    out.push(...keys.map((k) => k.toLowerCase()));
  }
  return out;
}

export function every(seconds: number | undefined, fn: () => void): () => void {
  const s = seconds ?? DEFAULT_STATUS_INTERVAL_S;
  if (!s || s <= 0) return () => {};
  const t = setInterval(fn, s * 1000);
  t.unref();
  return () => clearInterval(t);
}

/**
 * forward / socks: every `seconds`, one `status` event with the link's session (peer, path, RTT) and the tunnel's
 * own counters. Returns the function that stops it.
 */
export function statusEvery(
  seconds: number | undefined,
  link: {
    readonly session: {
      remotePublicKey: Uint8Array;
      path: { kind: string; remote: unknown; rttMs: number | null };
    } | null;
  },
  stats: () => Record<string, unknown>,
  emit: Emit,
): () => void {
  return every(seconds, () => {
    const s = link.session;
    const p = s?.path;
    emit({
      event: 'status',
      peer: s ? keyToId(s.remotePublicKey) : null,
      path: p?.kind ?? null,
      remote: p?.remote ?? null,
      rttMs: p?.rttMs ?? null,
      ...stats(),
    });
  });
}

/** Runs until SIGINT/SIGTERM, then calls `close` (a second signal exits at once). */
export function untilSignal(close: () => Promise<void>, extra?: Promise<unknown>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let stopping = false;
    const stop = () => {
      if (stopping) process.exit(130);
      stopping = true;
      process.stderr.write('natpunch: closing…\n');
      const force = setTimeout(() => process.exit(130), 5_000);
      force.unref();
      void close().then(() => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve();
      }, reject);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    extra?.catch((err: unknown) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void close().finally(() => reject(err));
    });
  });
}

export { keyToId };

/** The kept-alive session's flags `forward` and `socks` share (read by linkFromFlags), then --status-interval, --json. */
export function addLinkFlags(cmd: Command): Command {
  return addStatusFlags(
    addRendezvousFlag(cmd, true)
      .option(KEY_FLAG, KEY_HELP)
      .option(PEER_KEY_FLAG, PEER_KEY_HELP)
      .option(KNOWN_PEERS_FLAG, KNOWN_PEERS_HELP)
      .option('--bind <addr[:port]>', 'local UDP address for the session', '0.0.0.0')
      .option('--wait <ms>', 'how long a new connection waits for the session', num, DEFAULT_SESSION_WAIT_MS)
      .option('--timeout <ms>', 'give up one session attempt after this long (then retry)', num, 30_000)
      .option('--keepalive <ms>', 'session keepalive interval in ms', num),
  );
}

/** The values of addLinkFlags' flags. */
export interface LinkFlags {
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

/** One kept-alive session to `to` from the shared flags, its progress and events going to `emit`. */
export async function linkFromFlags(to: string, opts: LinkFlags, emit: Emit): Promise<ReturnType<typeof linkTo>> {
  const keyPair = await keyFromOptions(opts.key, emit);
  const udp = parseHostPort(opts.bind ?? '0.0.0.0', 0);
  const link = linkTo({
    keyPair,
    ...pinOptions(to, opts, emit),
    rendezvous: parseRendezvousList(opts.rendezvous, DEFAULT_RENDEZVOUS_PORT),
    bind: { address: udp.host, port: udp.port },
    ...(opts.timeout ? { timeoutMs: opts.timeout } : {}),
    ...(opts.keepalive ? { keepAliveMs: opts.keepalive } : {}),
    ...(opts.wait ? { waitMs: opts.wait } : {}),
    onProgress: (p) => emit(p as unknown as Record<string, unknown>),
  });
  link.on('event', (e) => emit(e as Record<string, unknown>));
  return link;
}
