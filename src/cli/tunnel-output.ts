import { readFile } from 'node:fs/promises';
import { parseRendezvousList } from '../rendezvous/client.js';
import { isPeerId, keyToId } from '../session/identity.js';
import { NatpunchError } from '../util/errors.js';
import type { Progress } from '../natpunch.js';
import type { LinkEvent } from '../tunnel/link.js';
import { linkTo } from '../tunnel/index.js';
import { DEFAULT_RENDEZVOUS_PORT } from '../natpunch.js';
import { keyFromOptions } from './netcat.js';
import { parseHostPort } from './util.js';
import { pinOptions } from './known-peers.js';
import type { ConnectionEvent } from '../tunnel/forward.js';
import type { TunnelEvent } from '../tunnel/exit.js';
import { replyName } from '../tunnel/socks5.js';

/** Shared by `expose`, `forward` and `socks`: status lines on stderr, or (--json) one JSON event per line on stdout. */
export type Emit = (e: Record<string, unknown>) => void;

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

const short = (peer: string) => `${peer.slice(0, 16)}…`;
const ep = (a: { address: string; port: number }) => (a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);

function human(e: Record<string, unknown>): string | null {
  const ev = e as (Progress & { event?: undefined }) | ((LinkEvent | ConnectionEvent | TunnelEvent) & { phase?: undefined }) | Record<string, unknown>;
  switch ((ev as { event?: string }).event ?? `phase:${(ev as { phase?: string }).phase}`) {
    case 'phase:registered': {
      const p = ev as Extract<Progress, { phase: 'registered' }>;
      return `registered: the rendezvous sees us at ${ep(p.reflexive)}`;
    }
    case 'phase:offer': {
      const p = ev as Extract<Progress, { phase: 'offer' }>;
      return `peer ${p.peerName ? `${p.peerName} ` : ''}${short(p.peer)}: punching (${p.candidates.length} candidates)`;
    }
    case 'phase:path': {
      const p = ev as Extract<Progress, { phase: 'path' }>;
      return `path: ${p.kind} via ${p.type} ${ep(p.remote)}${p.rttMs !== null ? `, rtt ${p.rttMs} ms` : ''}`;
    }
    case 'phase:gathering':
    case 'phase:punching':
    case 'phase:connected':
      return null;
    case 'connecting': {
      const l = ev as Extract<LinkEvent, { event: 'connecting' }>;
      return l.attempt === 1 ? 'connecting to the peer…' : `re-establishing the session (attempt ${l.attempt})…`;
    }
    case 'session': {
      const l = ev as Extract<LinkEvent, { event: 'session' }>;
      return `session up with ${short(l.peer)}: ${l.path} path to ${ep(l.remote)}${l.rttMs !== null ? `, rtt ${l.rttMs} ms` : ''}`;
    }
    case 'path': {
      const l = ev as Extract<LinkEvent, { event: 'path' }>;
      return `path changed: ${l.path} to ${ep(l.remote)}${l.rttMs !== null ? `, rtt ${l.rttMs} ms` : ''}`;
    }
    case 'session-lost': {
      const l = ev as Extract<LinkEvent, { event: 'session-lost' }>;
      return `session with ${short(l.peer)} ended${l.error ? `: ${l.error}` : ''}; re-establishing`;
    }
    case 'connect-failed': {
      const l = ev as Extract<LinkEvent, { event: 'connect-failed' }>;
      return `no session: ${l.error}; retrying in ${(l.retryInMs / 1000).toFixed(1)} s`;
    }
    case 'listening': {
      const c = ev as Extract<ConnectionEvent, { event: 'listening' }>;
      return `listening on ${ep(c)}`;
    }
    case 'accepted':
      return null;
    case 'status': {
      const st = ev as { sessions?: Array<{ peer: string; path: string; rttMs: number | null }>; peer?: string | null; path?: string | null; rttMs?: number | null; connections: number; bytesUp?: number; bytesDown?: number; bytesIn?: number; bytesOut?: number };
      const sessions = st.sessions ?? (st.peer ? [{ peer: st.peer, path: st.path ?? '?', rttMs: st.rttMs ?? null }] : []);
      const where = sessions.length
        ? sessions.map((x) => `${short(x.peer)} ${x.path}${x.rttMs !== null ? ` rtt ${x.rttMs} ms` : ''}`).join(', ')
        : 'no session';
      const dirs = st.bytesUp !== undefined ? `${bytes(st.bytesUp)} up, ${bytes(st.bytesDown ?? 0)} down` : `${bytes(st.bytesIn ?? 0)} in, ${bytes(st.bytesOut ?? 0)} out`;
      return `status: ${where}; ${st.connections} open connection${st.connections === 1 ? '' : 's'}; ${dirs}`;
    }
    case 'session-closed': {
      const c = ev as { peer: string; error: string | null };
      return `session with ${short(c.peer)} closed${c.error ? `: ${c.error}` : ''}`;
    }
    case 'session-failed': {
      const c = ev as { peer: string; error: string };
      return `session from ${short(c.peer)} failed: ${c.error}`;
    }
    case 'open': {
      const c = ev as { conn: number; target: string; peer?: string };
      return `[#${c.conn}] open → ${c.target}${c.peer ? ` for ${short(c.peer)}` : ''}`;
    }
    case 'failed': {
      const c = ev as Extract<ConnectionEvent, { event: 'failed' }>;
      return `[#${c.conn}] failed${c.target ? ` (${c.target})` : ''}: ${c.error}`;
    }
    case 'refused': {
      const t = ev as Extract<TunnelEvent, { event: 'refused' }>;
      return `[#${t.conn}] refused ${short(t.peer)}: ${t.reason} (${replyName(t.status)})`;
    }
    case 'close': {
      const c = ev as { conn: number; bytesUp?: number; bytesDown?: number; bytesIn?: number; bytesOut?: number; error: string | null };
      const up = c.bytesUp ?? c.bytesIn ?? 0;
      const down = c.bytesDown ?? c.bytesOut ?? 0;
      const dirs = c.bytesUp !== undefined ? `${bytes(up)} up, ${bytes(down)} down` : `${bytes(up)} in, ${bytes(down)} out`;
      return `[#${c.conn}] closed: ${dirs}${c.error ? ` (${c.error})` : ''}`;
    }
    default:
      return JSON.stringify(e);
  }
}

export function emitter(json: boolean | undefined): Emit {
  return (e) => {
    if (json) {
      process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...e })}\n`);
      return;
    }
    const line = human(e);
    if (line) process.stderr.write(`${line}\n`);
  };
}

/** --allow values: 64-hex keys, or files holding a key file (JSON with publicKey) or hex keys one per line. */
export async function resolveAllow(values: string[] | undefined): Promise<string[] | undefined> {
  if (!values || values.length === 0) return undefined;
  const out: string[] = [];
  for (const v of values.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean)) {
    if (isPeerId(v)) {
      out.push(v.toLowerCase());
      continue;
    }
    let text: string;
    try {
      text = await readFile(v, 'utf8');
    } catch {
      throw new NatpunchError('BAD_ARGUMENT', `--allow ${v.slice(0, 80)}: neither a peer key (64 hex characters) nor a readable file`);
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
    const keys = text.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
    if (keys.length === 0 || !keys.every(isPeerId)) throw new NatpunchError('BAD_ARGUMENT', `--allow ${v}: expected a key file (JSON with publicKey) or one 64-hex key per line`);
    out.push(...keys.map((k) => k.toLowerCase()));
  }
  return out;
}

/** How often the commands print a status line (peer, path, RTT, connections, bytes); --status-interval overrides. */
export const DEFAULT_STATUS_INTERVAL_S = 60;

export function every(seconds: number | undefined, fn: () => void): () => void {
  const s = seconds ?? DEFAULT_STATUS_INTERVAL_S;
  if (!s || s <= 0) return () => {};
  const t = setInterval(fn, s * 1000);
  t.unref();
  return () => clearInterval(t);
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

/** The session flags `forward` and `socks` share. */
export interface LinkFlags {
  rendezvous: string;
  key?: string;
  bind?: string;
  wait?: number;
  timeout?: number;
  keepalive?: number;
  json?: boolean;
  peerKey?: string;
  knownPeers?: string;
}

/** One kept-alive session to `to` from the shared flags, its progress and events going to `emit`. */
export async function linkFromFlags(to: string, opts: LinkFlags, emit: Emit): Promise<ReturnType<typeof linkTo>> {
  const keyPair = await keyFromOptions(opts.key, Boolean(opts.json));
  const udp = parseHostPort(opts.bind ?? '0.0.0.0', 0);
  const link = linkTo({
    keyPair, ...pinOptions(to, opts), rendezvous: parseRendezvousList(opts.rendezvous, DEFAULT_RENDEZVOUS_PORT), bind: { address: udp.host, port: udp.port },
    ...(opts.timeout ? { timeoutMs: opts.timeout } : {}), ...(opts.keepalive ? { keepAliveMs: opts.keepalive } : {}),
    ...(opts.wait ? { waitMs: opts.wait } : {}),
    onProgress: (p) => emit(p as unknown as Record<string, unknown>),
  });
  link.on('event', (e) => emit(e as Record<string, unknown>));
  return link;
}
