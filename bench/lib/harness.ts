// The pieces the server benchmarks share: a private network namespace per run (removed by name), processes pinned
// with taskset inside it (both `ip netns exec` and taskset exec in place, so the child's PID is the server's and
// /proc/PID/stat gives its CPU), the C load generators built with gcc, and coturn's command lines.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
export const ROOT = join(BENCH_DIR, '..');
/** The natpunch under test; BENCH_NATPUNCH_BIN points at another checkout's bin/natpunch.js to compare two builds. */
export const NATPUNCH_BIN = process.env.BENCH_NATPUNCH_BIN ?? join(ROOT, 'bin', 'natpunch.js');

/** Cores: the server's (one-core and two-core configurations) and the load generator's, overridable per machine. */
export const CORES = {
  server1: process.env.BENCH_SERVER_CORES_1 ?? '1',
  server2: process.env.BENCH_SERVER_CORES_2 ?? '0-1',
  load: process.env.BENCH_LOAD_CORE ?? '0',
};
export const RUNS = Number(process.env.BENCH_RUNS ?? 5);

/**
 * Compiles bench/loadgen/<name>.c once per invocation into a temporary directory; returns the binary's path. `libs`
 * are linker flags (turn-load needs -lcrypto: MD5 and HMAC-SHA1 from OpenSSL, package libssl-dev).
 */
export function buildLoadgen(name: string, libs: string[] = []): string {
  const outDir = join(tmpdir(), `natpunch-bench-${process.pid}`);
  mkdirSync(outDir, { recursive: true });
  const out = join(outDir, name);
  const r = spawnSync('gcc', ['-O2', '-Wall', '-o', out, join(BENCH_DIR, 'loadgen', `${name}.c`), ...libs], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`gcc failed for ${name}.c: ${r.stderr}`);
  return out;
}

/** A network namespace with only loopback up; `close()` deletes it by name (and so every socket bound in it). */
export class Netns {
  readonly name: string;
  /** Deletes the namespace even when the bench dies on an exception. */
  readonly #onExit = () => this.close();
  readonly #onSignal = () => {
    this.close();
    process.exit(130);
  };
  constructor(label: string) {
    this.name = `np${randomBytes(3).toString('hex')}-${label}`.slice(0, 15);
    run('ip', ['netns', 'add', this.name]);
    process.on('exit', this.#onExit);
    process.on('SIGINT', this.#onSignal);
    process.on('SIGTERM', this.#onSignal);
    run('ip', ['-n', this.name, 'link', 'set', 'lo', 'up']);
  }
  /** argv to run `cmd` inside the namespace, pinned to `cores` when given. */
  argv(cmd: string, args: string[], cores?: string): [string, string[]] {
    const inner = cores ? ['taskset', '-c', cores, cmd, ...args] : [cmd, ...args];
    return ['ip', ['netns', 'exec', this.name, ...inner]];
  }
  spawn(cmd: string, args: string[], cores?: string, options: { stdin?: boolean } = {}): ChildProcess {
    const [c, a] = this.argv(cmd, args, cores);
    return spawn(c, a, { stdio: [options.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], cwd: ROOT });
  }
  close(): void {
    process.off('exit', this.#onExit);
    process.off('SIGINT', this.#onSignal);
    process.off('SIGTERM', this.#onSignal);
    spawnSync('ip', ['netns', 'del', this.name]);
  }
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/** Runs a process to completion (bounded), returning its stdout. */
export async function runToEnd(
  child: ChildProcess,
  timeoutMs: number,
): Promise<{ stdout: string; stderr: string; code: number | null }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.pid && process.kill(child.pid, 'SIGKILL'), timeoutMs);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { stdout, stderr, code };
}

/** SIGTERM by PID, SIGKILL after 3 s; resolves when it exited. */
export async function stopPid(child: ChildProcess): Promise<void> {
  if (!child.pid || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  process.kill(child.pid, 'SIGTERM');
  const t = setTimeout(() => child.pid && child.exitCode === null && process.kill(child.pid, 'SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

/** Waits (bounded) until `ready()` resolves true, polling. */
export async function waitFor(ready: () => Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await ready()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} not ready within ${ms} ms`);
}

/** coturn's turnserver in the foreground, loopback of its namespace only, no TLS/DTLS/CLI, logging to a file. */
export function coturnArgs(
  port: number,
  o: { stunOnly?: boolean; threads: number; user?: string; logDir: string; relayPorts?: [number, number] },
): string[] {
  const args = [
    '-n',
    '--listening-ip',
    '127.0.0.1',
    '--listening-port',
    String(port),
    '--no-cli',
    '--no-tls',
    '--no-dtls',
    '--no-stdout-log',
    '--simple-log',
    '--log-file',
    join(o.logDir, 'turnserver.log'),
    '--pidfile',
    join(o.logDir, 'turnserver.pid'),
    '--userdb',
    join(o.logDir, 'turndb'),
    '--relay-threads',
    String(o.threads),
  ];
  if (o.stunOnly) args.push('--stun-only');
  if (o.user)
    args.push(
      '--lt-cred-mech',
      '--user',
      o.user,
      '--realm',
      'natpunch',
      '--relay-ip',
      '127.0.0.1',
      '--allow-loopback-peers',
    );
  if (o.relayPorts) args.push('--min-port', String(o.relayPorts[0]), '--max-port', String(o.relayPorts[1]));
  return args;
}

/** Cores in a taskset list such as "1" or "0-1" or "1,3". */
export function coreCount(list: string): number {
  return list.split(',').reduce((n, part) => {
    const [a, b] = part.split('-').map(Number);
    return n + (b === undefined ? 1 : b - a! + 1);
  }, 0);
}
