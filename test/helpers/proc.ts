// Child-process helpers for tests: bounded waits, and clean-up by PID.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const NATPUNCH = new URL('../../bin/natpunch.js', import.meta.url).pathname;

// The CLIs these tests start pin peer names to keys in $NATPUNCH_HOME/known_peers (trust on first use); tests use
// the same names with fresh keys on every run, so they get a natpunch home of their own, never the user's.
if (!process.env.NATPUNCH_HOME) {
  const home = mkdtempSync(join(tmpdir(), 'natpunch-test-home-'));
  process.env.NATPUNCH_HOME = home;
  process.once('exit', () => rmSync(home, { recursive: true, force: true }));
}

/** The path of an installed command, or undefined (tests skip with a note when a tool they drive is missing). */
export function which(bin: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Starts a process and resolves with it and the first stdout line that satisfies `ready` (bounded by `ms`). */
export async function startUntilLine(
  cmd: string,
  args: string[],
  ready: (line: string) => boolean,
  ms = 20_000,
): Promise<{ child: ChildProcess; line: string; output: () => string }> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      stop(child);
      reject(new Error(`${cmd} not ready within ${ms} ms; stdout: ${out} stderr: ${err}`));
    }, ms);
    child.stdout!.on('data', (d) => {
      out += d;
      for (const l of out.split('\n')) {
        if (ready(l)) {
          clearTimeout(timer);
          resolve(l);
          return;
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited with ${code} before it was ready; stdout: ${out} stderr: ${err}`));
    });
  });
  return { child, line, output: () => out + err };
}

/** Kills by PID (SIGTERM, then SIGKILL after `ms`) and waits for the exit. Resolves with the exit code/signal. */
export async function stop(
  child: ChildProcess,
  signal: NodeJS.Signals = 'SIGTERM',
  ms = 5000,
): Promise<{ code: number | null; signal: string | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const [code, sig] = await exited;
  clearTimeout(timer);
  return { code, signal: sig };
}

/** Runs a command to completion (bounded), collecting output. */
export async function run(
  cmd: string,
  args: string[],
  ms = 30_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/**
 * Resolves once `text()` (what the test has collected from the child so far) satisfies `pred`, checked on every chunk
 * the child writes to stdout or stderr — no polling; rejects when the child exits first or after `ms`.
 */
export function waitForOutput(
  child: ChildProcess,
  text: () => string,
  pred: (t: string) => boolean,
  what: string,
  ms = 20_000,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`timed out waiting for ${what}: ${text()}`)), ms);
    // Listeners added after the test's collectors, so text() already holds the chunk.
    const check = () => {
      if (pred(text())) done();
    };
    const onExit = (code: number | null) => done(new Error(`exited with ${code} while waiting for ${what}: ${text()}`));
    const done = (err?: Error) => {
      clearTimeout(timer);
      child.stdout?.off('data', check);
      child.stderr?.off('data', check);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve();
    };
    child.stdout?.on('data', check);
    child.stderr?.on('data', check);
    child.once('exit', onExit);
    check();
  });
}
