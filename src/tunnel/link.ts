import { EventEmitter } from 'node:events';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { keyToId } from '../session/identity.js';
import type { Session, SessionPath } from '../session/session.js';
import type { MuxStream } from '../session/mux.js';
import {
  decodeTunnelReply,
  encodeTunnelRequest,
  MAX_TUNNEL_HEADER_BYTES,
  type TunnelReply,
  type TunnelRequest,
} from './wire.js';
import { readMessage } from './streams.js';

/** How long a new TCP connection waits for a session (while one is being punched or re-established). */
export const DEFAULT_SESSION_WAIT_MS = 30_000;
/** How long to wait for the exit's reply: its header timeout plus its TCP connect timeout (exit.ts), plus slack. */
export const DEFAULT_REPLY_TIMEOUT_MS = 25_000;
/** Re-establishing backoff: first retry soon, then doubling up to the maximum. */
export const RECONNECT_MIN_MS = 500;
export const RECONNECT_MAX_MS = 15_000;
/** A session that lived at least this long resets the backoff. */
const STABLE_SESSION_MS = 10_000;

export type LinkEvent =
  | { event: 'connecting'; attempt: number }
  | {
      event: 'session';
      peer: string;
      path: SessionPath['kind'];
      remote: { address: string; port: number };
      rttMs: number | null;
    }
  | {
      event: 'path';
      peer: string;
      path: SessionPath['kind'];
      remote: { address: string; port: number };
      rttMs: number | null;
    }
  | { event: 'session-lost'; peer: string; error: string | null }
  | { event: 'connect-failed'; error: string; code: string | null; retryInMs: number };

export interface PeerLinkOptions {
  /** Makes one session to the peer (e.g. natpunch connect() through the rendezvous). */
  connect: (signal: AbortSignal) => Promise<Session>;
  /** How long getSession() waits by default. */
  waitMs?: number;
  /** Runs once when the link closes, after its session: releases what `connect` shares between sessions (say, the
   *  Endpoint every re-established session runs on). */
  release?: () => Promise<void>;
  logger?: Logger;
}

interface Waiter {
  resolve: (s: Session) => void;
  reject: (e: Error) => void;
}

/**
 * Keeps ONE session to a peer up for many connections: connects at start(), re-establishes with backoff whenever
 * the session ends, and hands the current session to callers, making them wait (bounded) while there is none.
 * Events: 'event' (LinkEvent), 'session' (Session).
 */
export class PeerLink extends EventEmitter {
  #options: PeerLinkOptions;
  #logger: Logger;
  #session: Session | null = null;
  #waiters = new Set<Waiter>();
  #ac = new AbortController();
  #closed = false;
  #running: Promise<void> | null = null;
  #kick: (() => void) | null = null;
  #lastError: Error | null = null;

  constructor(options: PeerLinkOptions) {
    super();
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
  }

  get session(): Session | null {
    return this.#session && !this.#session.closed ? this.#session : null;
  }

  /** Starts connecting (idempotent). */
  start(): void {
    if (this.#running || this.#closed) return;
    this.#running = this.#run();
  }

  /** The current session, or the next one established within `waitMs`; rejects with TIMEOUT naming the last error. */
  getSession(opts: { waitMs?: number; signal?: AbortSignal } = {}): Promise<Session> {
    const current = this.session;
    if (current) return Promise.resolve(current);
    if (this.#closed) return Promise.reject(new NatpunchError('ABORTED', 'the tunnel is closing'));
    this.start();
    this.#kick?.(); // a connection is waiting: retry now rather than after the backoff
    const waitMs = opts.waitMs ?? this.#options.waitMs ?? DEFAULT_SESSION_WAIT_MS;
    return new Promise<Session>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        this.#waiters.delete(w);
      };
      const w: Waiter = {
        resolve: (s) => {
          done();
          resolve(s);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const last = this.#lastError ? `: ${this.#lastError.message}` : '';
        w.reject(
          new NatpunchError('TIMEOUT', `no session with the peer within ${waitMs} ms${last}`, {
            cause: this.#lastError ?? undefined,
          }),
        );
      }, waitMs);
      const onAbort = () =>
        w.reject(new NatpunchError('ABORTED', 'gave up waiting for a session', { cause: opts.signal?.reason }));
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(w);
    });
  }

  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#ac.signal.removeEventListener('abort', done);
        this.#kick = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#kick = done;
      this.#ac.signal.addEventListener('abort', done, { once: true });
    });
  }

  async #run(): Promise<void> {
    let delay = RECONNECT_MIN_MS;
    let attempt = 0;
    while (!this.#closed) {
      this.emit('event', { event: 'connecting', attempt: ++attempt } satisfies LinkEvent);
      let session: Session;
      try {
        session = await this.#options.connect(this.#ac.signal);
      } catch (err) {
        if (this.#closed) break;
        this.#lastError = err as Error;
        this.#logger.warn({ err: (err as Error).message }, 'tunnel: session attempt failed');
        this.emit('event', {
          event: 'connect-failed',
          error: (err as Error).message,
          code: (err as NatpunchError).code ?? null,
          retryInMs: delay,
        } satisfies LinkEvent);
        await this.#pause(delay);
        delay = Math.min(delay * 2, RECONNECT_MAX_MS);
        continue;
      }
      if (this.#closed) {
        await session.close();
        break;
      }
      this.#lastError = null;
      const started = Date.now();
      const peer = keyToId(session.remotePublicKey);
      this.#session = session;
      const p = session.path;
      this.emit('event', {
        event: 'session',
        peer,
        path: p.kind,
        remote: p.remote,
        rttMs: p.rttMs,
      } satisfies LinkEvent);
      this.emit('session', session);
      for (const w of [...this.#waiters]) w.resolve(session);
      const onPath = (np: SessionPath) =>
        this.emit('event', {
          event: 'path',
          peer,
          path: np.kind,
          remote: np.remote,
          rttMs: np.rttMs,
        } satisfies LinkEvent);
      session.on('path', onPath);
      const err = await new Promise<Error | null>((resolve) => session.once('close', resolve));
      session.off('path', onPath);
      this.#session = null;
      if (err) this.#lastError = err;
      if (this.#closed) break;
      this.emit('event', { event: 'session-lost', peer, error: err ? err.message : null } satisfies LinkEvent);
      if (Date.now() - started >= STABLE_SESSION_MS) delay = RECONNECT_MIN_MS;
      else {
        await this.#pause(delay);
        delay = Math.min(delay * 2, RECONNECT_MAX_MS);
      }
    }
  }

  /** Stops re-establishing, fails the waiters and closes the session. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#ac.abort(new NatpunchError('ABORTED', 'tunnel closed'));
    for (const w of [...this.#waiters]) w.reject(new NatpunchError('ABORTED', 'the tunnel is closing'));
    const s = this.#session;
    this.#session = null;
    await s?.close();
    await this.#running?.catch(() => {});
    await this.#options.release?.().catch(() => {});
  }
}

/**
 * Opens one tunnel stream in `session`: writes the request header at once (the caller may pipe data right behind
 * it) and returns the stream with a promise of the exit's reply.
 */
export function openTunnel(
  session: Session,
  request: TunnelRequest,
  timeoutMs = DEFAULT_REPLY_TIMEOUT_MS,
): { stream: MuxStream; reply: Promise<TunnelReply> } {
  const stream = session.openStream();
  stream.on('error', () => {}); // callers learn of errors through joinStreams / the reply promise
  stream.write(encodeTunnelRequest(request));
  const reply = readMessage(stream, decodeTunnelReply, {
    maxBytes: MAX_TUNNEL_HEADER_BYTES,
    timeoutMs,
    what: 'tunnel reply',
  });
  return { stream, reply };
}
