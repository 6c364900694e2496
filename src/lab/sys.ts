import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NatpunchError } from '../util/errors.js';

/** Default bound for one system command (ip, nft, tc, conntrack, ...). */
export const SYS_TIMEOUT_MS = 15_000;
/** Lab namespaces are named `np<id>-<node>`; ids are 5 lowercase letters/digits. */
export const LAB_NS_RE = /^np([a-z0-9]{5})-([A-Za-z0-9]+)$/;

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs a command (no shell), never throws on a non-zero exit; rejects only on timeout/abort or spawn failure. */
export function run(
  cmd: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      {
        timeout: opts.timeoutMs ?? SYS_TIMEOUT_MS,
        killSignal: 'SIGKILL',
        maxBuffer: 16 * 1024 * 1024,
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
      (err, stdout, stderr) => {
        if (err && (err as NodeJS.ErrnoException).code === 'ABORT_ERR') {
          return reject(new NatpunchError('ABORTED', 'operation aborted', { cause: err }));
        }
        if (err && (err as { killed?: boolean }).killed) {
          return reject(new NatpunchError('TIMEOUT', `${cmd} ${args.join(' ')} timed out`, { cause: err }));
        }
        if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
          return reject(new NatpunchError('LAB', `cannot run ${cmd}: ${err.message}`, { cause: err }));
        }
        const code = err ? Number((err as { code?: unknown }).code ?? 1) : 0;
        resolve({ stdout: String(stdout), stderr: String(stderr), code });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Like run() but throws NatpunchError('LAB') with stderr when the exit code is not 0. */
export async function mustRun(
  cmd: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new NatpunchError(
      'LAB',
      `${cmd} ${args.slice(0, 6).join(' ')} failed (${r.code}): ${r.stderr.trim().slice(0, 800)}`,
    );
  }
  return r.stdout;
}

/** Whether the lab can run here: root and a working `ip netns`. Returns the reason when it cannot. */
export function labUnavailableReason(): string | undefined {
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    return 'the NAT lab needs root (network namespaces)';
  const r = spawnSync('ip', ['netns', 'list'], { timeout: 5000, encoding: 'utf8' });
  if (r.error || r.status !== 0) return `\`ip netns\` is not available (${r.error?.message ?? r.stderr.trim()})`;
  const n = spawnSync('nft', ['--version'], { timeout: 5000, encoding: 'utf8' });
  if (n.error || n.status !== 0) return '`nft` (nftables) is not installed';
  return undefined;
}

/** Where lab state files live: $NATPUNCH_LAB_DIR, else /run/natpunch/labs, else $TMPDIR/natpunch-labs. */
export function stateDir(): string {
  const candidates = process.env.NATPUNCH_LAB_DIR
    ? [process.env.NATPUNCH_LAB_DIR]
    : ['/run/natpunch/labs', join(tmpdir(), 'natpunch-labs')];
  for (const dir of candidates) {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      return dir;
    } catch {
      /* try the next */
    }
  }
  throw new NatpunchError('LAB', `cannot create a lab state directory (tried ${candidates.join(', ')})`);
}

export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

export function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export function removeFile(path: string): void {
  rmSync(path, { force: true, recursive: true });
}

/** Process start time (clock ticks since boot, /proc/PID/stat field 22): identifies a PID across PID reuse. */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[19]);
  } catch {
    return undefined;
  }
}

export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kills a recorded process only if it is still the same process (same start time). */
export function killRecorded(rec: { pid: number; start?: number }, signal: NodeJS.Signals = 'SIGKILL'): void {
  const start = processStartTime(rec.pid);
  if (start === undefined) return;
  if (rec.start !== undefined && rec.start !== start) return;
  try {
    process.kill(rec.pid, signal);
  } catch {
    /* gone */
  }
}

/** Names of all namespaces, from `ip netns list`. */
export async function listNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

/** Kills every process inside a namespace, then deletes it. Silent when it is already gone. */
export async function destroyNamespace(ns: string): Promise<void> {
  for (let round = 0; round < 3; round++) {
    const r = await run('ip', ['netns', 'pids', ns]);
    const pids = r.stdout
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
      .filter((p) => p > 1 && p !== process.pid);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await new Promise((r2) => setTimeout(r2, 20));
  }
  await run('ip', ['netns', 'del', ns]);
}
