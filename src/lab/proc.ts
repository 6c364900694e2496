import type { ChildProcess } from 'node:child_process';
import { NatpunchError } from '../util/errors.js';

/** How long `LabProcess.next()` waits by default for a matching JSON line. */
export const DEFAULT_NEXT_TIMEOUT_MS = 10_000;
/** How long `close()` waits for the process to exit after SIGTERM before SIGKILL. */
export const CLOSE_GRACE_MS = 1_000;
const STDERR_KEEP = 8192;

type Json = Record<string, unknown>;
interface Waiter {
  predicate: (msg: Json) => boolean;
  resolve: (msg: Json) => void;
  reject: (err: unknown) => void;
}

/**
 * A process running inside a lab namespace, with line-based JSON on stdout: every stdout line that parses as a JSON
 * object is a message; other lines are kept in `lines` (for debugging) and otherwise ignored. `next()` takes the
 * first message (in arrival order) that matches a predicate; messages that match no waiter stay queued.
 */
export class LabProcess {
  readonly host: string;
  readonly child: ChildProcess;
  /** every non-JSON stdout line */
  readonly lines: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #queue: Json[] = [];
  #waiters: Waiter[] = [];
  #stderr = '';
  #partial = '';
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(host: string, child: ChildProcess) {
    this.host = host;
    this.child = child;
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => this.#onData(chunk));
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-STDERR_KEEP);
    });
    child.stdin?.on('error', () => {}); // EPIPE after the process died is reported through `exited`
    this.exited = new Promise((resolve) => {
      const done = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.#exit) return;
        this.#exit = { code, signal };
        const err = new NatpunchError(
          'LAB',
          `process on ${host} exited (code ${code}, signal ${signal})${this.#stderr ? `: ${this.#stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`,
        );
        for (const w of this.#waiters.splice(0)) w.reject(err);
        resolve(this.#exit);
      };
      child.once('exit', done);
      child.once('error', () => done(null, null));
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Last 8 KiB of stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  #onData(chunk: string): void {
    const text = this.#partial + chunk;
    const parts = text.split('\n');
    this.#partial = parts.pop() ?? '';
    for (const line of parts) {
      const trimmed = line.trim();
      if (!trimmed) continue;
      let msg: unknown;
      try {
        msg = JSON.parse(trimmed);
      } catch {
        this.lines.push(line);
        continue;
      }
      if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
        this.lines.push(line);
        continue;
      }
      this.#deliver(msg as Json);
    }
  }

  #deliver(msg: Json): void {
    const i = this.#waiters.findIndex((w) => w.predicate(msg));
    if (i >= 0) {
      const [w] = this.#waiters.splice(i, 1);
      w!.resolve(msg);
    } else {
      this.#queue.push(msg);
    }
  }

  /**
   * Resolves with the first message matching `predicate` (default: any), waiting up to `timeoutMs`.
   * Rejects with TIMEOUT, ABORTED, or LAB when the process exits first.
   */
  next<T extends Json = Json>(
    predicate: (msg: Json) => boolean = () => true,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    const i = this.#queue.findIndex(predicate);
    if (i >= 0) return Promise.resolve(this.#queue.splice(i, 1)[0] as T);
    if (this.#exit) {
      return Promise.reject(
        new NatpunchError('LAB', `process on ${this.host} has exited: ${this.#stderr.trim().slice(-500)}`),
      );
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_NEXT_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        const k = this.#waiters.indexOf(waiter);
        if (k >= 0) this.#waiters.splice(k, 1);
      };
      const waiter: Waiter = {
        predicate,
        resolve: (m) => {
          cleanup();
          resolve(m as T);
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      };
      const timer = setTimeout(
        () =>
          waiter.reject(new NatpunchError('TIMEOUT', `no matching message from ${this.host} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onAbort = () =>
        waiter.reject(new NatpunchError('ABORTED', 'operation aborted', { cause: opts.signal?.reason }));
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /** Messages received and not yet taken by `next()`; `drain()` empties the queue. */
  pending(): Json[] {
    return [...this.#queue];
  }

  drain(predicate: (msg: Json) => boolean = () => true): Json[] {
    const out = this.#queue.filter(predicate);
    this.#queue = this.#queue.filter((m) => !predicate(m));
    return out;
  }

  /** Writes one JSON line to the process's stdin. */
  send(msg: unknown): void {
    if (!this.child.stdin || this.child.stdin.destroyed) {
      throw new NatpunchError('LAB', `process on ${this.host} has no open stdin`);
    }
    this.child.stdin.write(`${JSON.stringify(msg)}\n`);
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.#exit) return;
    try {
      this.child.kill(signal);
    } catch {
      /* already gone */
    }
  }

  /** SIGTERM, then SIGKILL after CLOSE_GRACE_MS; resolves when the process has exited. */
  async close(): Promise<void> {
    if (this.#exit) return;
    this.child.stdin?.end();
    this.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.exited,
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.kill('SIGKILL');
          resolve();
        }, CLOSE_GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, CLOSE_GRACE_MS).unref())]);
  }
}
