// `natpunch serve` as a child process (the real CLI, as an operator runs it): started with --json, ready when it
// prints its listening line (bounded wait), stopped by PID. For cluster, admin and drain tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { NATPUNCH } from './proc.js';

export interface ServeNode {
  child: ChildProcess;
  pid: number;
  port: number;
  /** http://127.0.0.1:PORT/ of --admin, when given. */
  admin: string;
  stderr(): string;
  /** Resolves with the exit code (null when killed by a signal) and signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL (a crash) unless another signal is given; waits for the exit. Safe to call twice. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function startServeNode(args: string[], ms = 30_000): Promise<ServeNode> {
  const child = spawn(
    process.execPath,
    [NATPUNCH, 'serve', '--port', '0', '--address', '127.0.0.1', '--json', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => (err = (err + d).slice(-20_000)));
  const exited = once(child, 'exit').then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
  }));
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`serve not ready within ${ms} ms: ${err.slice(-2000)}`));
    }, ms);
    child.stdout!.on('data', (d) => {
      out += d;
      const l = out.split('\n').find((x) => x.startsWith('{'));
      if (l) {
        clearTimeout(timer);
        resolve(l);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`serve exited before listening: ${err.slice(-2000)}`));
    });
  });
  const info = JSON.parse(line) as { udp: Array<{ port: number }>; admin: string | null };
  return {
    child,
    pid: child.pid!,
    port: info.udp[0]!.port,
    admin: info.admin ?? '',
    stderr: () => err,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
