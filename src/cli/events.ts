/**
 * The CLI's one event schema and its one printer. Every command reports what happens as events:
 * `{ time, event, ...fields }` (docs/cli.md lists them). With --json each event is one JSON line on the command's
 * event stream (`eventStream`: stdout, unless stdout carries the command's data); without it the same events become
 * human lines on stderr through FORMATS below. An event without a format still prints a readable `event: key value`
 * line, never raw JSON, so new events (e.g. per-technique progress) need no change here to be shown. The library's
 * `onProgress` objects name the event `phase`; the printer renames that to `event` (JSON lines carry no `phase`).
 */
import { isNatpunchError } from '../util/errors.js';
import { replyName } from '../tunnel/socks5.js';
import { eventStream } from './event-stream.js';

export interface CliEvent {
  time: string;
  event: string;
  [field: string]: unknown;
}

/** What commands hand the printer: a library progress object ({ phase }) or an event ({ event }). */
export type EventInput = { event: string; [field: string]: unknown } | { phase: string; [field: string]: unknown };

export type Emit = (e: EventInput | Record<string, unknown>) => void;

type Addr = { address: string; port: number };
const isAddr = (v: unknown): v is Addr => typeof v === 'object' && v !== null && 'address' in v && 'port' in v;
const ep = (a: Addr) => (a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);
const short = (peer: unknown) =>
  typeof peer === 'string' && peer.length > 16 ? `${peer.slice(0, 16)}…` : String(peer);
const rtt = (ms: unknown) => (typeof ms === 'number' ? `, rtt ${ms} ms` : '');
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
const TECHNIQUE_NAMES: Record<string, string> = { p2pnat: 'P2P-NAT', natblaster: 'NATBlaster', stunt1: 'STUNT #1' };

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

/** A readable value for the generic line: addresses as host:port, keys shortened, lists joined. */
function text(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (isAddr(v)) return ep(v);
  if (Array.isArray(v)) return v.map(text).join(', ');
  if (typeof v === 'object') {
    return Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${k} ${text(x)}`)
      .join(', ');
  }
  if (typeof v === 'string' && /^[0-9a-f]{64}$/.test(v)) return short(v);
  return String(v);
}

/** Any event as one readable line: `event: key value, key value`. */
export function genericLine(e: CliEvent): string {
  const fields = Object.entries(e).filter(([k, v]) => k !== 'time' && k !== 'event' && v !== undefined);
  return fields.length ? `${e.event}: ${fields.map(([k, v]) => `${k} ${text(v)}`).join(', ')}` : e.event;
}

type Format = (e: CliEvent & Record<string, any>) => string | null; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A port mapping (map's events) in one phrase. */
function mappingText(m: Parameters<Format>[0]): string {
  const lease = m.lifetime === 0 ? 'permanent lease, renewed by natpunch' : `lifetime ${m.lifetime} s`;
  return `${m.transport} ${m.externalAddress}:${m.externalPort} → ${m.internalAddress}:${m.internalPort} via ${m.protocol} (${lease})`;
}

/** Human lines per event name; null hides an event in human mode (it still goes to --json). */
const FORMATS: Record<string, Format> = {
  gathering: (e) => `gathering: local socket ${ep(e.local)}`,
  registered: (e) => `registered: the rendezvous sees us at ${ep(e.reflexive)}`,
  listening: (e) =>
    isAddr(e)
      ? `listening on ${ep(e)}`
      : `listening${e.icmp ? ' (ICMP)' : ''} as ${e.name ? `${e.name} ` : ''}${e.publicKey}`,
  offer: (e) =>
    `peer ${e.peerName ? `${e.peerName} ` : ''}${short(e.peer)}: ${plural(e.candidates.length, 'candidate')} (${(e.candidates as Array<Addr & { type: string }>).map((c) => `${c.type} ${ep(c)}`).join(', ')})`,
  punching: (e) => `punching: checking ${plural(e.pairs, 'candidate pair')}`,
  // The library's path choice ({ type }) and a tunnel's path change ({ path }) share the name.
  path: (e) =>
    e.type !== undefined
      ? `path chosen: ${e.kind} via ${e.type} ${ep(e.remote)}${rtt(e.rttMs)}${e.technique && e.technique !== 'p2pnat' ? ` (${TECHNIQUE_NAMES[e.technique] ?? e.technique}${e.reason ? `: ${e.reason}` : ''})` : ''}`
      : `path changed: ${e.path ?? e.kind} to ${ep(e.remote)}${rtt(e.rttMs)}`,
  'path-changed': (e) => `path changed: ${e.kind} to ${ep(e.remote)}`,
  'port-mapping': (e) =>
    e.ok
      ? `port mapping: ${e.protocol} on ${e.gateway} maps ${e.external ? ep(e.external) : '?'} to us`
      : `port mapping: none (${e.error}); going on without`,
  connected: (e) => `connected: authenticated session with ${e.peer}${rtt(e.rttMs)}`,
  transport: (e) => `transport: ${e.transport} (${e.reason})`,
  'hard-nat': (e) =>
    `hard NAT: ours is ${e.kind}${e.delta !== null ? `, port delta ${e.delta}` : ''}${e.ports?.length ? ` (ports ${e.ports.join(', ')})` : ''}`,
  'hard-punch': (e) =>
    e.fallback
      ? `hard punch (${e.strategy}) failed after ${e.probesSent} probes${e.error ? `: ${e.error}` : ''}; trying the relay`
      : `hard punch: ${e.strategy} between ${e.local} and ${e.peer} found the path after ${e.probesSent} probes`,
  'idle-timeout': (e) => `idle for ${e.ms} ms: closing the session`,
  'connection-failed': (e) => `connection from ${short(e.peer)} failed: ${e.error}`,
  connecting: (e) =>
    e.attempt === 1 ? 'connecting to the peer…' : `re-establishing the session (attempt ${e.attempt})…`,
  session: (e) => `session up with ${short(e.peer)}: ${e.path} path to ${ep(e.remote)}${rtt(e.rttMs)}`,
  'session-lost': (e) => `session with ${short(e.peer)} ended${e.error ? `: ${e.error}` : ''}; re-establishing`,
  'connect-failed': (e) => `no session: ${e.error}; retrying in ${(e.retryInMs / 1000).toFixed(1)} s`,
  'session-closed': (e) => `session with ${short(e.peer)} closed${e.error ? `: ${e.error}` : ''}`,
  'session-failed': (e) => `session from ${short(e.peer)} failed: ${e.error}`,
  accepted: () => null,
  status: (e) => {
    const sessions: Array<{ peer: string; path: string; rttMs: number | null }> =
      e.sessions ?? (e.peer ? [{ peer: e.peer, path: e.path ?? '?', rttMs: e.rttMs ?? null }] : []);
    const where = sessions.length
      ? sessions.map((x) => `${short(x.peer)} ${x.path}${x.rttMs !== null ? ` rtt ${x.rttMs} ms` : ''}`).join(', ')
      : 'no session';
    const dirs =
      e.bytesUp !== undefined
        ? `${bytes(e.bytesUp)} up, ${bytes(e.bytesDown ?? 0)} down`
        : `${bytes(e.bytesIn ?? 0)} in, ${bytes(e.bytesOut ?? 0)} out`;
    return `status: ${where}; ${plural(e.connections, 'open connection')}; ${dirs}`;
  },
  open: (e) => `[#${e.conn}] open → ${e.target}${e.peer ? ` for ${short(e.peer)}` : ''}`,
  failed: (e) => `[#${e.conn}] failed${e.target ? ` (${e.target})` : ''}: ${e.error}`,
  refused: (e) => `[#${e.conn}] refused ${short(e.peer)}: ${e.reason} (${replyName(e.status)})`,
  close: (e) => {
    const up = e.bytesUp ?? e.bytesIn ?? 0;
    const down = e.bytesDown ?? e.bytesOut ?? 0;
    const dirs =
      e.bytesUp !== undefined ? `${bytes(up)} up, ${bytes(down)} down` : `${bytes(up)} in, ${bytes(down)} out`;
    return `[#${e.conn}] closed: ${dirs}${e.error ? ` (${e.error})` : ''}`;
  },
  exposing: (e) => {
    const what = [
      ...(e.targets as Array<{ host: string; port: number }>).map((t) => `${t.host}:${t.port}`),
      ...(e.allowDest.length ? [`SOCKS exits to ${e.allowDest.join(' ')}`] : []),
    ];
    const who = e.allow ? `allowed peers: ${e.allow.length}` : 'any key may connect (--allow-any)';
    return `exposing ${what.join(', ')} as ${e.name ? `${e.name} ` : ''}${e.publicKey}; ${who}`;
  },
  forwarding: (e) => `forwarding ${ep(e.listen)} → ${e.peer}:${e.remotePort}`,
  'socks-listening': (e) =>
    `SOCKS5 on ${ep(e.listen)}${e.auth ? ' (username/password required)' : ''}, exiting via ${e.via}`,
  // map: a port mapping's life (stun's `mapped` result has no externalAddress and is not printed by this printer).
  mapping: (e) => `natpunch: mapping ${e.transport} port ${e.port} on ${e.gateway}…`,
  mapped: (e) =>
    e.externalAddress === undefined ? genericLine(e) : `natpunch: mapped ${mappingText(e)}; renewing until Ctrl-C`,
  renewed: (e) => `natpunch: renewed ${mappingText(e)}`,
  changed: (e) => `natpunch: mapping changed: ${mappingText(e)}`,
  restart: (e) => `natpunch: gateway restarted (${e.protocol}); mapping again`,
  lost: (e) => `natpunch: mapping expired (${e.error}); still retrying`,
  deleting: () => 'natpunch: deleting the mapping…',
  deleted: () => 'natpunch: mapping deleted',
  probe: (e) => `netcheck: ${e.probe} ${e.state === 'start' ? '…' : 'done'}${e.detail ? ` (${e.detail})` : ''}`,
  'icmp-listening': (e) => `icmp: echo requests to ${e.probeAddress} every ${e.intervalMs} ms; UDP port ${e.port}`,
  'icmp-knock': (e) => `icmp: Time Exceeded quoting our echo request from ${e.from}; punching UDP to it`,
  'icmp-knocking': (e) => `icmp: sending forged Time Exceeded to ${e.server}; UDP port ${e.port}`,
  'temporary-key': (e) =>
    `natpunch: no --key or NATPUNCH_KEY; using a temporary key ${e.publicKey} (create one with \`natpunch keygen\`)`,
  pinned: (e) =>
    `natpunch: pinned "${e.name}" to key ${e.key} in ${e.file} (first connection by this name; later ones must present this key)`,
  'unverified-key': (e) => `natpunch: no --peer-key: the server's key is ${e.key} (unverified)`,
  error: (e) => `natpunch: ${e.message} [${e.code}]`,
  warning: (e) => `natpunch: warning: ${e.message}`,
};

/** The event an input stands for: `{ phase }` objects become `{ event }`; `time` is added. */
export function toEvent(input: EventInput | Record<string, unknown>, now = new Date()): CliEvent {
  const { phase, event, time, ...fields } = input as { phase?: string; event?: string; time?: string };
  return { time: time ?? now.toISOString(), event: String(event ?? phase ?? 'message'), ...fields };
}

/** The human line for an event (null: not shown in human mode). */
export function humanLine(e: CliEvent): string | null {
  const format = FORMATS[e.event];
  if (!format) return genericLine(e);
  try {
    return format(e);
  } catch {
    return genericLine(e); // a field missing or shaped otherwise: still readable
  }
}

export interface PrinterOptions {
  json?: boolean;
  /** No human lines (--quiet); --json output is unaffected. */
  quiet?: boolean;
  /** The command's stdout carries its data: JSON lines go to stderr (see eventStream). */
  stdoutIsData?: boolean;
  /** Where JSON lines go (default: eventStream(stdoutIsData)); tests pass their own. */
  jsonOut?: NodeJS.WritableStream;
  humanOut?: NodeJS.WritableStream;
}

/** Repeats of an identical event (same name and fields) within this window are printed once. */
const DUPLICATE_WINDOW_MS = 1000;

/**
 * The one printer. Each event is printed once: the library may report the same fact on two paths (the UDP result
 * and the auto-transport result both announce the chosen path), the printer drops the repeat.
 */
export function createPrinter(options: PrinterOptions = {}): Emit {
  const jsonOut = options.jsonOut ?? eventStream(options.stdoutIsData);
  const humanOut = options.humanOut ?? process.stderr;
  const recent = new Map<string, number>();
  return (input) => {
    const e = toEvent(input);
    const { time: _time, ...identity } = e;
    const key = JSON.stringify(identity);
    const now = Date.now();
    const seen = recent.get(key);
    for (const [k, t] of recent) if (now - t > DUPLICATE_WINDOW_MS) recent.delete(k);
    if (seen !== undefined && now - seen <= DUPLICATE_WINDOW_MS) return;
    recent.set(key, now);
    if (options.json) {
      jsonOut.write(`${JSON.stringify(e)}\n`);
      return;
    }
    if (options.quiet) return;
    const line = humanLine(e);
    if (line !== null) humanOut.write(`${line}\n`);
  };
}

/** A failure as an event: `{ event: 'error', code, message }` (the code as printError's [CODE]). */
export function errorEvent(err: unknown, code: string): EventInput {
  const message = err instanceof Error ? err.message.split('\n')[0]! : String(err);
  return { event: 'error', code: isNatpunchError(err) ? err.code : code, message };
}
