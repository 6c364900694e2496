/**
 * `natpunch serve` configuration: values from the command line, the environment (`NATPUNCH_*`), a TOML file
 * (`--config FILE`, parsed by smol-toml) and the defaults of SERVE_OPTIONS, in that order of precedence.
 * Every value is validated against its definition; an error names where it came from (flag, variable, or the
 * file's key and line) and what is allowed.
 */
import { readFileSync } from 'node:fs';
import { parse as parseToml, TomlError } from 'smol-toml';
import { NatpunchError } from '../util/errors.js';
import {
  camelName,
  envName,
  flagSpelling,
  formatValue,
  parseDuration,
  SERVE_OPTIONS,
  type OptionDef,
  type ServeSettings,
} from './options.js';

export type ValueSource = 'flag' | 'env' | 'file' | 'default';

export interface ResolvedConfig<S = ServeSettings> {
  values: S;
  /** Where each option's value came from, by option name (kebab-case). */
  sources: Record<string, ValueSource>;
  /** The config file read, if any. */
  file?: string;
}

export interface ConfigFile {
  path: string;
  values: Record<string, unknown>;
  /** 1-based line of a top-level key or table header, when it can be found. */
  lineOf(key: string): number | undefined;
}

/** Public keys are 32-byte Ed25519 keys, written as 64 hex digits. */
const KEY_HEX = /^[0-9a-f]{64}$/;
const NAME = /^[a-z0-9._-]{1,63}$/;

function bad(where: string, message: string): NatpunchError {
  return new NatpunchError('BAD_ARGUMENT', `${where}: ${message}`);
}

function checkInt(o: OptionDef, n: number, where: string): number {
  if (!Number.isInteger(n) || n < (o.min ?? -Infinity) || n > (o.max ?? Infinity)) {
    throw bad(where, `must be an integer from ${o.min} to ${o.max}`);
  }
  return n;
}

function checkDuration(o: OptionDef, text: string, where: string): number {
  const ms = parseDuration(text);
  if (ms === undefined)
    throw bad(where, `"${text}" is not a duration; write it with a unit, e.g. 30d, 12h, 15m, 90s, 500ms`);
  if (ms < (o.min ?? 0) || ms > (o.max ?? Number.MAX_SAFE_INTEGER))
    throw bad(where, `out of range (${o.min ?? 0}..${o.max ?? '∞'} ms)`);
  return ms;
}

function checkMapEntry(o: OptionDef, name: string, value: string, where: string): void {
  if (o.name === 'reserve-name') {
    if (!NAME.test(name)) throw bad(where, `"${name}" is not a valid peer name (1-63 of a-z 0-9 . _ -)`);
    if (!KEY_HEX.test(value))
      throw bad(where, `the key for "${name}" must be 64 lowercase hex digits (an Ed25519 public key)`);
  }
}

function finish<T>(o: OptionDef, value: T, where: string): T {
  const problem = (o.validate as ((v: T) => string | undefined) | undefined)?.(value);
  if (problem) throw bad(where, problem);
  return value;
}

function parseBool(text: string, where: string): boolean {
  const t = text.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(t)) return true;
  if (['0', 'false', 'no', 'off'].includes(t)) return false;
  throw bad(where, `"${text}" is not a boolean (true/false, 1/0, yes/no, on/off)`);
}

function splitList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function parseMap(o: OptionDef, entries: string[], where: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of entries) {
    const eq = e.indexOf('=');
    if (eq <= 0) throw bad(where, `"${e}" is not NAME=VALUE`);
    const k = e.slice(0, eq).trim();
    const v = e.slice(eq + 1).trim();
    checkMapEntry(o, k, v, where);
    out[k] = v;
  }
  return out;
}

/**
 * Parses one value written as text: an environment variable, or one occurrence of a flag (lists and maps are
 * comma-separated in the environment; flags repeat instead, and `previous` carries what came before).
 */
export function parseTextValue(o: OptionDef, text: string, where: string, previous?: unknown): unknown {
  switch (o.kind) {
    case 'int': {
      if (!/^-?\d+$/.test(text.trim())) throw bad(where, `must be an integer from ${o.min} to ${o.max}`);
      return finish(o, checkInt(o, Number(text), where), where);
    }
    case 'string':
      return finish(o, text, where);
    case 'bool':
      return parseBool(text, where);
    case 'enum':
      if (!o.choices!.includes(text)) throw bad(where, `must be one of ${o.choices!.join(', ')}`);
      return text;
    case 'duration':
      return finish(o, checkDuration(o, text, where), where);
    case 'list': {
      const items = previous === undefined ? splitList(text) : [...(previous as string[]), text];
      return finish(o, items, where);
    }
    case 'map': {
      const more = parseMap(o, previous === undefined ? splitList(text) : [text], where);
      return finish(o, { ...((previous as Record<string, string>) ?? {}), ...more }, where);
    }
  }
}

/** Checks one value from the TOML file. */
export function checkFileValue(o: OptionDef, raw: unknown, where: string): unknown {
  switch (o.kind) {
    case 'int':
      if (typeof raw !== 'number' && typeof raw !== 'bigint')
        throw bad(where, `must be an integer from ${o.min} to ${o.max}, not ${describe(raw)}`);
      return finish(o, checkInt(o, Number(raw), where), where);
    case 'string':
      if (typeof raw !== 'string') throw bad(where, `must be a string, not ${describe(raw)}`);
      return finish(o, raw, where);
    case 'bool':
      if (typeof raw !== 'boolean') throw bad(where, `must be true or false, not ${describe(raw)}`);
      return raw;
    case 'enum':
      if (typeof raw !== 'string' || !o.choices!.includes(raw))
        throw bad(where, `must be one of ${o.choices!.map((c) => `"${c}"`).join(', ')}`);
      return raw;
    case 'duration':
      if (typeof raw !== 'string')
        throw bad(where, `must be a duration string with a unit, e.g. "30d" or "90s", not ${describe(raw)}`);
      return finish(o, checkDuration(o, raw, where), where);
    case 'list': {
      const items = typeof raw === 'string' ? [raw] : raw;
      if (!Array.isArray(items) || !items.every((i) => typeof i === 'string'))
        throw bad(where, 'must be a string or an array of strings');
      return finish(o, items as string[], where);
    }
    case 'map': {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
        throw bad(where, 'must be a table of NAME = "VALUE"');
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== 'string') throw bad(where, `${k} must be a string`);
        checkMapEntry(o, k, v, where);
        out[k] = v;
      }
      return finish(o, out, where);
    }
  }
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v === null || v === undefined) return 'nothing';
  if (typeof v === 'object') return 'a table';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function closest(name: string, table: readonly OptionDef[]): string | undefined {
  let best: { name: string; d: number } | undefined;
  for (const o of table) {
    const d = editDistance(name, o.name);
    if (d <= 3 && (!best || d < best.d)) best = { name: o.name, d };
  }
  return best?.name;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

/** Reads and parses a TOML config file. Syntax errors name the file, line and column. */
export function readConfigFile(path: string, text?: string): ConfigFile {
  let source: string;
  try {
    source = text ?? readFileSync(path, 'utf8');
  } catch (err) {
    throw new NatpunchError('BAD_ARGUMENT', `cannot read config file ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  let values: Record<string, unknown>;
  try {
    values = parseToml(source) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `config file ${path} line ${err.line} column ${err.column}: ${err.message.split('\n')[0]}`,
        { cause: err },
      );
    }
    throw err;
  }
  const lines = source.split('\n');
  return {
    path,
    values,
    lineOf(key: string) {
      const esc = key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const re = new RegExp(`^\\s*(?:(["']?)${esc}\\1\\s*=|\\[\\s*(["']?)${esc}\\2\\s*\\])`);
      const i = lines.findIndex((l) => re.test(l));
      return i >= 0 ? i + 1 : undefined;
    },
  };
}

export interface ResolveInput {
  /** Values given on the command line, by option name (already parsed by parseTextValue). */
  flags?: ReadonlyMap<string, unknown>;
  /** Usually process.env. */
  env?: NodeJS.ProcessEnv;
  file?: ConfigFile;
}

/** Applies precedence flag > environment > file > default to every option of `table`. */
export function resolveConfig<S = ServeSettings>(
  input: ResolveInput,
  table: readonly OptionDef[] = SERVE_OPTIONS,
): ResolvedConfig<S> {
  const values: Record<string, unknown> = {};
  const sources: Record<string, ValueSource> = {};
  const file = input.file;
  if (file) {
    const known = new Set(table.filter((o) => !o.flagOnly).map((o) => o.name));
    for (const key of Object.keys(file.values)) {
      if (known.has(key)) continue;
      const line = file.lineOf(key);
      const hint = closest(key, table);
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `config file ${file.path}${line ? ` line ${line}` : ''}: unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}`,
      );
    }
  }
  for (const o of table) {
    const key = camelName(o.name);
    let value: unknown;
    let source: ValueSource = 'default';
    const env = o.flagOnly ? undefined : input.env?.[envName(o.name)];
    if (input.flags?.has(o.name)) {
      value = input.flags.get(o.name);
      source = 'flag';
    } else if (env !== undefined && env !== '') {
      value = parseTextValue(o, env, `environment ${envName(o.name)}`);
      source = 'env';
    } else if (file && !o.flagOnly && Object.hasOwn(file.values, o.name)) {
      const line = file.lineOf(o.name);
      value = checkFileValue(
        o,
        file.values[o.name],
        `config file ${file.path}${line ? ` line ${line}` : ''}: ${o.name}`,
      );
      source = 'file';
    } else {
      value = o.default;
    }
    values[key] = value;
    sources[o.name] = source;
  }
  return { values: values as S, sources, ...(file ? { file: file.path } : {}) };
}

const MASK = '********';

/** A value as --print-config shows it: secrets masked (a URL keeps everything but its password). */
export function maskedValue(o: OptionDef, value: unknown): unknown {
  if (value === undefined || !o.secret) return value;
  if (o.secret === 'url' && typeof value === 'string') {
    try {
      const u = new URL(value);
      if (u.password) u.password = MASK;
      return u.toString();
    } catch {
      return MASK;
    }
  }
  if (Array.isArray(value)) return value.map(() => MASK);
  return MASK;
}

function tomlValue(o: OptionDef, value: unknown): string {
  if (o.kind === 'duration') return JSON.stringify(formatValue(o, value));
  if (o.kind === 'map') {
    return `{ ${Object.entries(value as Record<string, string>)
      .map(([k, v]) => `${JSON.stringify(k)} = ${JSON.stringify(v)}`)
      .join(', ')} }`;
  }
  return JSON.stringify(value);
}

/**
 * The effective configuration as a TOML document a person can read and paste back into a config file: one line per
 * option with a value, a comment saying where it came from; secrets masked.
 */
export function renderConfigToml(
  resolved: ResolvedConfig<unknown>,
  table: readonly OptionDef[] = SERVE_OPTIONS,
): string {
  const values = resolved.values as Record<string, unknown>;
  const out = [
    `# natpunch serve: effective configuration${resolved.file ? ` (config file ${resolved.file})` : ''}`,
    '# precedence: flag > environment > file > default',
  ];
  for (const o of table) {
    if (o.flagOnly) continue;
    const v = maskedValue(o, values[camelName(o.name)]);
    const src = resolved.sources[o.name] ?? 'default';
    const from =
      src === 'flag' ? `flag ${flagSpelling(o).split(' ')[0]}` : src === 'env' ? `env ${envName(o.name)}` : src;
    if (v === undefined) out.push(`# ${o.name} = (unset)`);
    else out.push(`${o.name} = ${tomlValue(o, v)}  # ${from}`);
  }
  return `${out.join('\n')}\n`;
}

/** The same, as one JSON object: { values, sources } with secrets masked. */
export function renderConfigJson(
  resolved: ResolvedConfig<unknown>,
  table: readonly OptionDef[] = SERVE_OPTIONS,
): Record<string, unknown> {
  const values = resolved.values as Record<string, unknown>;
  const shown: Record<string, unknown> = {};
  for (const o of table) {
    if (o.flagOnly) continue;
    const v = maskedValue(o, values[camelName(o.name)]);
    shown[o.name] = v === undefined ? null : v;
  }
  return { file: resolved.file ?? null, values: shown, sources: resolved.sources };
}
