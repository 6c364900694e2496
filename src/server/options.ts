/**
 * The one table of `natpunch serve` options. Each entry is the single source for the command-line flag
 * (`--name`), the config-file key (`name = ...` in TOML), the environment variable (`NATPUNCH_NAME`), the
 * `--print-config` line and the row of the generated docs table (docs/operator.md).
 *
 * Adding an option is one entry in SERVE_OPTIONS below; its value then appears in `ServeSettings` under the
 * camelCase of its name (`alt-address` → `altAddress`), already validated and with precedence applied
 * (flag > environment > file > default, src/server/config.ts).
 */
import { DEFAULT_TURNS_PORT } from '../relay/tls.js';
import { DEFAULT_NAME_HOLD_MS } from '../rendezvous/registry.js';
import { DEFAULT_RATE_BURST, DEFAULT_RATE_PER_SECOND } from '../rendezvous/server.js';
import { DEFAULT_STUN_PORT } from '../wire/stun/index.js';

export type OptionKind = 'int' | 'string' | 'bool' | 'list' | 'enum' | 'duration' | 'map';

/** Groups order the docs table and `--print-config`. */
export type OptionGroup = 'network' | 'rendezvous' | 'names' | 'turn' | 'cluster' | 'admin' | 'operations' | 'output';

export interface OptionDef<N extends string = string, T = unknown, D = T | undefined> {
  /** kebab-case: flag `--name`, file key `name`, env `NATPUNCH_NAME`. */
  readonly name: N;
  readonly kind: OptionKind;
  readonly group: OptionGroup;
  readonly help: string;
  readonly default: D;
  /** Placeholder in --help (`--port <port>`). */
  readonly arg?: string;
  /** Masked by --print-config. 'url' masks only the password of a URL's userinfo. */
  readonly secret?: boolean | 'url';
  readonly min?: number;
  readonly max?: number;
  readonly choices?: readonly string[];
  /** Extra check of a parsed value; returns what is wrong, for a person. */
  validate?(value: T): string | undefined;
  /** Only on the command line (e.g. --config itself): no file key, no env name. */
  readonly flagOnly?: boolean;
  /** Type carrier only. */
  readonly __type?: T;
}

type Spec<T> = {
  group: OptionGroup;
  help: string;
  arg?: string;
  secret?: boolean | 'url';
  validate?: (value: T) => string | undefined;
  flagOnly?: boolean;
};

function def<N extends string, T, D extends T | undefined>(
  name: N,
  kind: OptionKind,
  spec: Spec<T> & { default?: D; min?: number; max?: number; choices?: readonly string[] },
): OptionDef<N, T, D> {
  return { ...spec, name, kind, default: spec.default as D };
}

const int = <N extends string, D extends number | undefined = undefined>(
  name: N,
  spec: Spec<number> & { default?: D; min: number; max: number },
) => def<N, number, D>(name, 'int', spec);
const str = <N extends string, D extends string | undefined = undefined>(
  name: N,
  spec: Spec<string> & { default?: D },
) => def<N, string, D>(name, 'string', spec);
const bool = <N extends string>(name: N, spec: Spec<boolean> & { default: boolean }) =>
  def<N, boolean, boolean>(name, 'bool', spec);
const list = <N extends string>(name: N, spec: Spec<string[]>) => def<N, string[], undefined>(name, 'list', spec);
const choice = <N extends string, C extends string>(name: N, spec: Spec<C> & { choices: readonly C[]; default: C }) =>
  def<N, C, C>(name, 'enum', spec);
/** Durations are written with a unit ("30d", "12h", "15m", "90s", "500ms") and held in milliseconds. */
const duration = <N extends string, D extends number | undefined = undefined>(
  name: N,
  spec: Spec<number> & { default?: D; min?: number; max?: number },
) => def<N, number, D>(name, 'duration', spec);
/** NAME=VALUE pairs: repeatable flag, a TOML table, or a comma-separated env value. */
const map = <N extends string>(name: N, spec: Spec<Record<string, string>>) =>
  def<N, Record<string, string>, undefined>(name, 'map', spec);

const isIp = (v: string) => (/^[\d.]+$/.test(v) || v.includes(':') ? undefined : `not an IP address: ${v}`);
const allIps = (v: string[]) => v.map(isIp).find(Boolean);

/** Default time a name stays reserved for its last key after it unregisters or expires (issue 18): the registry's. */
export { DEFAULT_NAME_HOLD_MS };
/** SIGTERM: how long serve waits for peers to move and allocations to be released before it exits anyway. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;

export const SERVE_OPTIONS = [
  // ── where serve listens ────────────────────────────────────────────────────────────────────────────────────
  int('port', {
    group: 'network',
    arg: 'port',
    default: DEFAULT_STUN_PORT,
    min: 0,
    max: 65535,
    help: 'UDP and TCP port (RFC 8489 §6.2: 3478)',
  }),
  list('address', {
    group: 'network',
    arg: 'ip',
    validate: allIps,
    help: 'address to listen on (repeatable; default 0.0.0.0 and ::)',
  }),
  str('alt-address', {
    group: 'network',
    arg: 'ip',
    validate: isIp,
    help: 'second IP address of this host: enables RFC 5780 NAT behaviour discovery',
  }),
  int('alt-port', {
    group: 'network',
    arg: 'port',
    min: 0,
    max: 65535,
    help: 'RFC 5780 alternate port (default --port + 1)',
  }),
  choice('udp', {
    group: 'network',
    arg: 'impl',
    choices: ['auto', 'batched', 'udx', 'dgram'] as const,
    default: 'auto',
    help: 'UDP sockets: batched (recvmmsg/sendmmsg, native addon), udx (libudx), dgram (node:dgram), auto (the first that loads)',
  }),
  int('workers', {
    group: 'network',
    arg: 'n',
    min: 1,
    max: 1024,
    help: 'event loops on the UDP port (SO_REUSEPORT; TURN allocations stay in one); default: one per core',
  }),
  // ── rendezvous ─────────────────────────────────────────────────────────────────────────────────────────────
  bool('rendezvous', {
    group: 'rendezvous',
    default: true,
    help: 'run the rendezvous server (peer registration and introductions) on the port',
  }),
  bool('spoof', {
    group: 'rendezvous',
    default: false,
    help: 'lab/research only, root: STUNT #1 spoofed SYN-ACKs (TCP service on --spoof-port; the rendezvous then also spoofs them for connecting peers that exchange sequence offers; see BCP 38)',
  }),
  int('spoof-port', {
    group: 'rendezvous',
    arg: 'port',
    min: 0,
    max: 65535,
    help: 'TCP port of the --spoof service (default --port + 2)',
  }),
  duration('registration-refresh', {
    group: 'rendezvous',
    arg: 'duration',
    default: 25_000,
    min: 1000,
    max: 3_600_000,
    help: 'how often peers re-register (doubles as their NAT keepalive; RFC 8445 §11 suggests ≤ 25 s)',
  }),
  duration('registration-ttl', {
    group: 'rendezvous',
    arg: 'duration',
    default: 90_000,
    min: 2000,
    max: 86_400_000,
    help: 'a registration lives this long without a refresh',
  }),
  int('rate-limit', {
    group: 'rendezvous',
    arg: 'n',
    default: DEFAULT_RATE_PER_SECOND,
    min: 1,
    max: 1_000_000,
    help: 'rendezvous messages per second per source address (token bucket; also bounds what is pushed to one address)',
  }),
  int('rate-burst', {
    group: 'rendezvous',
    arg: 'n',
    default: DEFAULT_RATE_BURST,
    min: 1,
    max: 1_000_000,
    help: 'rendezvous token-bucket burst per address',
  }),
  bool('reports', {
    group: 'rendezvous',
    default: true,
    help: "count peers' signed outcome reports (NAT pair, technique, result) into metrics and the dashboard",
  }),
  // ── names (issue 18: names bound to keys on the server) ─────────────────────────────────────────────────────
  duration('name-hold', {
    group: 'names',
    arg: 'duration',
    default: DEFAULT_NAME_HOLD_MS,
    min: 0,
    help: 'how long a name stays reserved for the key that last held it after it unregisters or expires (0: not at all)',
  }),
  map('reserve-name', {
    group: 'names',
    arg: 'name=key',
    help: 'pre-assign a name to a public key (64 hex); repeatable, or a [reserve-name] table in the file',
  }),
  // ── TURN (RFC 8656, RFC 6062) ──────────────────────────────────────────────────────────────────────────────
  bool('relay', {
    group: 'turn',
    default: true,
    help: 'relay for registered peers (peer-relay mode: a peer may relay only to peers it was introduced to; see docs/peer-relay.md)',
  }),
  int('credential-rate', {
    group: 'turn',
    arg: 'n',
    min: 1,
    max: 1_000_000,
    help: 'relay credentials the rendezvous issues per client IPv4 address or IPv6 /64 per minute',
  }),
  bool('turn', {
    group: 'turn',
    default: false,
    help: 'also run the full TURN service (RFC 8656 + RFC 6062) for any peer address, for users and/or auth-secret credentials',
  }),
  list('turn-allow', {
    group: 'turn',
    arg: 'key',
    help: 'hand this key (64 hex) unscoped auth-secret credentials through the rendezvous; repeatable',
  }),
  str('turn-allow-file', {
    group: 'turn',
    arg: 'file',
    help: 'keys to hand unscoped auth-secret credentials, one 64-hex key per line (# comments)',
  }),
  str('tls-cert', {
    group: 'turn',
    arg: 'file',
    help: 'TURN over TLS ("turns:"): certificate chain (PEM); needs tls-key',
  }),
  str('tls-key', { group: 'turn', arg: 'file', help: 'TURN over TLS: private key (PEM)' }),
  int('tls-port', {
    group: 'turn',
    arg: 'port',
    default: DEFAULT_TURNS_PORT,
    min: 0,
    max: 65535,
    help: 'TURN over TLS port',
  }),
  str('realm', { group: 'turn', arg: 'realm', default: 'natpunch', help: 'TURN realm (RFC 8489 §9.2)' }),
  str('users', {
    group: 'turn',
    arg: 'file',
    help: 'long-term credentials file: one "user:password" or "user:0x<md5 key>" per line',
  }),
  list('auth-secret', {
    group: 'turn',
    arg: 'secret',
    secret: true,
    help: 'shared secret for time-limited credentials (coturn use-auth-secret); repeat to rotate; the same on every node lets credentials work on all',
  }),
  str('relay-address', {
    group: 'turn',
    arg: 'ip',
    validate: isIp,
    help: 'IPv4 address relayed allocations use (default: first non-loopback IPv4)',
  }),
  str('relay-address6', {
    group: 'turn',
    arg: 'ip',
    validate: isIp,
    help: 'IPv6 relay address (enables IPv6 and dual allocations)',
  }),
  str('external-ip', {
    group: 'turn',
    arg: 'ip',
    validate: isIp,
    help: 'public IPv4 address of relay-address behind a 1:1 NAT (cloud VMs); announced to clients',
  }),
  list('allow-peer', {
    group: 'turn',
    arg: 'cidr',
    help: 'allow relaying to this block although denied by default (e.g. 10.0.0.0/8); repeatable',
  }),
  list('deny-peer', { group: 'turn', arg: 'cidr', help: 'never relay to this block; repeatable' }),
  int('max-allocations', { group: 'turn', arg: 'n', min: 1, max: 1_000_000, help: 'total allocations' }),
  int('user-quota', { group: 'turn', arg: 'n', min: 1, max: 1_000_000, help: 'allocations per user' }),
  int('max-allocations-per-ip', {
    group: 'turn',
    arg: 'n',
    min: 1,
    max: 1_000_000,
    help: 'allocations per client IPv4 address or IPv6 /64',
  }),
  int('max-bps', {
    group: 'turn',
    arg: 'bytes',
    min: 0,
    max: 2 ** 40,
    help: 'per-allocation relay bandwidth cap in bytes/s (0 = none)',
  }),
  int('min-port', { group: 'turn', arg: 'port', min: 1024, max: 65535, help: 'lowest relay port' }),
  int('max-port', { group: 'turn', arg: 'port', min: 1024, max: 65535, help: 'highest relay port' }),
  // ── several nodes ──────────────────────────────────────────────────────────────────────────────────────────
  str('redis', {
    group: 'cluster',
    arg: 'url',
    secret: 'url',
    validate: (v) => (/^rediss?:\/\//.test(v) ? undefined : `not a redis:// or rediss:// URL: ${v}`),
    help: 'keep registrations and name reservations in Redis (redis://HOST:PORT) and hand introductions between nodes through it, so several nodes serve one set of peers',
  }),
  str('relay-secret', {
    group: 'cluster',
    arg: 'secret',
    secret: true,
    validate: (v) =>
      v.length >= 16
        ? undefined
        : 'at least 16 characters are needed (a random string, e.g. from openssl rand -base64 32)',
    help: "HMAC secret of the peer relay's scoped credentials (default: random per process); the same on every node makes a peer's relay credentials valid on every node and across restarts",
  }),
  str('node-id', {
    group: 'cluster',
    arg: 'id',
    help: "this node's name in Redis and metrics (default: hostname:port)",
  }),
  // ── admin HTTP ─────────────────────────────────────────────────────────────────────────────────────────────
  str('admin', {
    group: 'admin',
    arg: 'addr:port',
    help: 'serve /metrics, /healthz, /readyz and the dashboard over HTTP here (off by default; a bare port listens on 127.0.0.1 only)',
  }),
  str('admin-token', {
    group: 'admin',
    arg: 'token',
    secret: true,
    help: 'require "Authorization: Bearer TOKEN" on the admin endpoint (health checks excepted)',
  }),
  // ── operations ─────────────────────────────────────────────────────────────────────────────────────────────
  duration('drain-timeout', {
    group: 'operations',
    arg: 'duration',
    default: DEFAULT_DRAIN_TIMEOUT_MS,
    min: 0,
    max: 600_000,
    help: 'on SIGTERM: how long to wait for peers to move and allocations to close before exiting',
  }),
  // ── output ─────────────────────────────────────────────────────────────────────────────────────────────────
  bool('json', { group: 'output', default: false, help: 'print where it listens as one JSON line' }),
] as const;

/** The TURN subset, shared with `natpunch turn serve`. */
export const TURN_OPTION_NAMES = [
  'realm',
  'users',
  'auth-secret',
  'relay-address',
  'relay-address6',
  'external-ip',
  'allow-peer',
  'deny-peer',
  'max-allocations',
  'user-quota',
  'max-allocations-per-ip',
  'max-bps',
  'min-port',
  'max-port',
] as const;

type Camel<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;
type ValueOf<O> = O extends OptionDef<string, infer T, infer D> ? (D extends undefined ? T | undefined : T) : never;
type SettingsOf<Table extends readonly OptionDef<string, unknown, unknown>[]> = {
  -readonly [O in Table[number] as Camel<O['name']>]: ValueOf<O>;
};

/** The effective serve configuration, one field per SERVE_OPTIONS entry. */
export type ServeSettings = SettingsOf<typeof SERVE_OPTIONS>;
export type ServeOptionName = (typeof SERVE_OPTIONS)[number]['name'];

export function camelName(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

export function envName(name: string): string {
  return `NATPUNCH_${name.replace(/-/g, '_').toUpperCase()}`;
}

export function optionByName(name: string, table: readonly OptionDef[] = SERVE_OPTIONS): OptionDef | undefined {
  return table.find((o) => o.name === name);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "30d", "12h", "15m", "90s", "500ms", "1h30m"; "0" alone is zero. Returns ms, or undefined. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (t === '0') return 0;
  if (!/^(\d+(ms|s|m|h|d))+$/.test(t)) return undefined;
  let total = 0;
  for (const [, n, unit] of t.matchAll(/(\d+)(ms|s|m|h|d)/g)) total += Number(n) * DURATION_UNITS[unit!]!;
  return total;
}

export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** How a value is written in docs and --print-config. */
export function formatValue(o: OptionDef, value: unknown): string {
  if (value === undefined) return '';
  if (o.kind === 'duration') return formatDuration(value as number);
  if (o.kind === 'list') return (value as string[]).join(', ');
  if (o.kind === 'map')
    return Object.entries(value as Record<string, string>)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ');
  return String(value);
}

/** The command-line spelling: `--port <port>`, `--no-rendezvous` for options on by default. */
export function flagSpelling(o: OptionDef): string {
  if (o.kind === 'bool') return o.default === true ? `--no-${o.name}` : `--${o.name}`;
  return `--${o.name} <${o.arg ?? 'value'}>`;
}

const KIND_DOC: Record<OptionKind, string> = {
  int: 'integer',
  string: 'string',
  bool: 'boolean',
  list: 'list',
  enum: 'one of',
  duration: 'duration',
  map: 'table',
};

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** The docs table (Markdown), generated from the definitions: docs/operator.md embeds it between markers. */
export function optionsMarkdownTable(table: readonly OptionDef[] = SERVE_OPTIONS): string {
  const rows = ['| flag | config key | environment | type | default | description |', '|---|---|---|---|---|---|'];
  for (const o of table) {
    if (o.flagOnly) continue;
    const type =
      o.kind === 'enum'
        ? `${KIND_DOC.enum} ${o.choices!.join(', ')}`
        : o.kind === 'int'
          ? `${KIND_DOC.int} ${o.min}..${o.max}`
          : KIND_DOC[o.kind];
    const dflt = o.default === undefined ? '' : `\`${formatValue(o, o.default)}\``;
    const help = `${o.help}${o.secret ? ' (secret: masked by --print-config)' : ''}`;
    rows.push(
      `| \`${flagSpelling(o)}\` | \`${o.name}\` | \`${envName(o.name)}\` | ${cell(type)} | ${dflt} | ${cell(help)} |`,
    );
  }
  return rows.join('\n');
}
