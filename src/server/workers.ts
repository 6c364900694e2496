/**
 * `serve --workers N`: N event loops serving one port. The main thread runs the full server (TCP, TLS, the
 * rendezvous and its registry, admin); N-1 worker threads each bind the same UDP port(s) with SO_REUSEPORT and run
 * STUN and TURN on them. Linux hashes each datagram's 4-tuple to one socket of the group, so all packets of one client
 * reach the same worker: a TURN allocation, its relay sockets (bound by that worker, so peer packets come back to it)
 * and its permissions and channels live in one thread and per-packet work never crosses threads.
 *
 * The rendezvous keeps one registry: a classic BPF program on the port's SO_REUSEPORT group (steerToFirst) sends
 * every datagram starting with 0xF0 (RFC 7983-style demultiplexing, src/net/demux.ts) to the group's first socket,
 * which is the main thread's (it binds first). TCP stays on the main thread. With the peer relay (the default) the
 * relay's scopes live with the rendezvous too, so the program (steerBindingsOnly) spreads only STUN Binding requests
 * over the workers and keeps all TURN traffic on the main thread. Budgets kept per thread (STUN's oversized-answer
 * budget per source) are N times larger for the process; the global ones are too, which the bound tolerates.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { BatchedUdpSocket, batchedUnavailableReason } from '../net/batched.js';
import { NatpunchError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { ServeSocket } from './serve.js';
import type { StunCounterSnapshot } from './stun-counters.js';

/** First byte of every rendezvous datagram (src/wire/rendezvous). */
const RENDEZVOUS_FIRST_BYTE = 0xf0;
/** A worker must have bound its sockets within this time or the pool start fails. */
export const WORKER_READY_TIMEOUT_MS = 15_000;
/** close() asks workers to stop and terminates those still running after this time. */
export const WORKER_STOP_TIMEOUT_MS = 5_000;

/** The default worker count: one per core the process may use. */
export function defaultWorkerCount(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

/**
 * How many event loops `serve` can run with these settings, and why fewer than asked. RFC 5780 mode answers
 * CHANGE-REQUEST from sibling sockets of one thread; non-batched sockets have no SO_REUSEPORT.
 */
export function effectiveWorkerCount(
  requested: number,
  config: { altAddress?: string; udp?: string; turnInMain?: boolean },
): { count: number; reason?: string } {
  if (requested <= 1) return { count: 1 };
  if (config.altAddress) return { count: 1, reason: 'RFC 5780 mode (--alt-address) runs in one thread' };
  if (config.udp && config.udp !== 'auto' && config.udp !== 'batched')
    return { count: 1, reason: `--udp ${config.udp} has no SO_REUSEPORT; use batched or auto` };
  const why = batchedUnavailableReason(undefined, { steerBindings: config.turnInMain });
  if (why) return { count: 1, reason: why };
  return { count: requested };
}

/**
 * Steers each SO_REUSEPORT group so the main thread gets what only it can answer. With `turnInMain` (the peer relay
 * is on: its scopes come from the rendezvous' introductions, which live in the main thread) only STUN Binding
 * requests are spread over the workers and every other datagram (rendezvous, TURN, ChannelData) reaches the main
 * thread; otherwise only rendezvous datagrams are pinned there and TURN allocations live in whichever worker the
 * kernel's 4-tuple hash picks.
 */
export function steerToMain(sockets: readonly ServeSocket[], turnInMain: boolean): void {
  for (const s of sockets) {
    if (!(s instanceof BatchedUdpSocket))
      throw new NatpunchError('BAD_ARGUMENT', 'several workers need batched UDP sockets');
    if (turnInMain) s.steerBindingsOnly();
    else s.steerToFirst(RENDEZVOUS_FIRST_BYTE);
  }
}

/** Messages a worker entry posts to the main thread. */
export type WorkerMessage =
  | { type: 'ready'; info?: unknown }
  | { type: 'error'; message: string }
  | { type: 'stun-counters'; snapshot: StunCounterSnapshot };
/** The message the main thread posts to stop a worker; the entry closes its server and lets the thread end. */
export const WORKER_STOP = 'stop';

/**
 * A source checkout runs TypeScript through tsx's loader, which a worker thread does not inherit when it was
 * registered through tsx's API (bin/natpunch.js): a .ts entry is started by a small bootstrap that registers it first.
 */
function spawnWorker(entry: URL, workerData: unknown): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, { workerData });
  const tsx = import.meta.resolve('tsx/esm/api');
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(boot, { eval: true, workerData });
}

export interface WorkerPool {
  readonly size: number;
  /** What each worker reported when ready. */
  readonly info: unknown[];
  close(): Promise<void>;
}

/**
 * Starts `count` worker threads running `entry` with `data` as workerData, and waits until each has posted
 * { type: 'ready' } (its sockets are bound). A worker that fails to start fails the pool (the others are stopped).
 */
export async function startWorkerPool(options: {
  count: number;
  entry: URL;
  data: (index: number) => unknown;
  logger: Logger;
  signal?: AbortSignal;
  readyTimeoutMs?: number;
  /** Each worker's STUN counters, about once a second (worker number 2..N, as in its logs). */
  onCounters?: (worker: number, snapshot: StunCounterSnapshot) => void;
}): Promise<WorkerPool> {
  const { logger } = options;
  const workers: Worker[] = [];
  const infos: unknown[] = [];
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(
              () =>
                void w.terminate().then(
                  () => resolve(),
                  () => resolve(),
                ),
              WORKER_STOP_TIMEOUT_MS,
            );
            w.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            w.postMessage(WORKER_STOP);
          }),
      ),
    ).then(() => undefined);
    return closing;
  };
  try {
    await Promise.all(
      Array.from({ length: options.count }, (_, index) => {
        const w = spawnWorker(options.entry, options.data(index));
        workers.push(w);
        return new Promise<void>((resolve, reject) => {
          const timer = setTimeout(
            () =>
              reject(
                new NatpunchError(
                  'TIMEOUT',
                  `serve worker ${index + 1} did not start within ${options.readyTimeoutMs ?? WORKER_READY_TIMEOUT_MS} ms`,
                ),
              ),
            options.readyTimeoutMs ?? WORKER_READY_TIMEOUT_MS,
          );
          const onAbort = () => reject(new NatpunchError('ABORTED', 'serve workers: start aborted'));
          options.signal?.addEventListener('abort', onAbort, { once: true });
          const done = () => {
            clearTimeout(timer);
            options.signal?.removeEventListener('abort', onAbort);
          };
          w.on('message', (m: WorkerMessage) => {
            if (m.type === 'stun-counters') options.onCounters?.(index + 2, m.snapshot);
            else if (m.type === 'ready') {
              infos[index] = m.info;
              done();
              resolve();
            } else if (m.type === 'error') {
              done();
              reject(new NatpunchError('BAD_ARGUMENT', `serve worker ${index + 1}: ${m.message}`));
            }
          });
          w.on('error', (err) => {
            done();
            logger.error({ worker: index + 1, err: String(err) }, 'serve: worker failed');
            reject(err);
          });
          w.on('exit', (code) => {
            done();
            if (!closing)
              logger.warn(
                { worker: index + 1, code },
                'serve: worker exited; its share of clients moves to the other sockets of the port',
              );
            reject(new NatpunchError('BAD_ARGUMENT', `serve worker ${index + 1} exited (code ${code})`));
          });
        });
      }),
    );
  } catch (err) {
    await close();
    throw err;
  }
  return { size: options.count, info: infos, close };
}
