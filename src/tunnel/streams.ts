import { Socket } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import { NatpunchError } from '../util/errors.js';
import type { Decoded } from './socks5.js';

/** How long a peer may take to send a header (SOCKS greeting, tunnel request, reply) before we hang up. */
export const DEFAULT_HEADER_TIMEOUT_MS = 10_000;

/**
 * Reads one message from the front of a stream: feeds what arrived to `decode` until it returns a value, then puts
 * any bytes after the message back (unshift) so whoever pipes the stream next sees them. Rejects on a decode error,
 * end of stream, `maxBytes` without a complete message, the timeout, or the signal.
 */
export function readMessage<T>(
  stream: Readable,
  decode: (buf: Buffer) => Decoded<T> | null,
  opts: { maxBytes: number; timeoutMs?: number; signal?: AbortSignal; what?: string },
): Promise<T> {
  const what = opts.what ?? 'message';
  return new Promise<T>((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    const cleanup = () => {
      done = true;
      clearTimeout(timer);
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onEnd);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    const fail = (err: Error) => {
      if (done) return;
      cleanup();
      reject(err);
    };
    const onReadable = () => {
      if (done) return;
      let chunk: Buffer | null;
      while ((chunk = stream.read() as Buffer | null) !== null) {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        let d: Decoded<T> | null;
        try {
          d = decode(buf);
        } catch (err) {
          return fail(err as Error);
        }
        if (d) {
          const rest = buf.subarray(d.length);
          cleanup();
          if (rest.length) stream.unshift(rest);
          resolve(d.value);
          return;
        }
        if (buf.length > opts.maxBytes)
          return fail(new NatpunchError('TUNNEL_PROTOCOL', `${what} longer than ${opts.maxBytes} bytes`));
      }
    };
    const onEnd = () => fail(new NatpunchError('STREAM_CLOSED', `the stream ended before a complete ${what}`));
    const onError = (err: Error) => fail(err);
    const onAbort = () =>
      fail(new NatpunchError('ABORTED', `reading the ${what} was aborted`, { cause: opts.signal?.reason }));
    const timer = setTimeout(
      () =>
        fail(
          new NatpunchError('TIMEOUT', `no complete ${what} within ${opts.timeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS} ms`),
        ),
      opts.timeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS,
    );
    timer.unref();
    if (opts.signal?.aborted) return onAbort();
    if (stream.readableEnded || stream.destroyed) return onEnd();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    stream.on('readable', onReadable);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.on('error', onError);
    onReadable();
  });
}

/** Tears a stream down; TCP sockets get a RST when the other side failed, so the application sees an error, not EOF. */
export function abortStream(s: Duplex, err?: Error | null): void {
  if (s.destroyed) return;
  if (err && s instanceof Socket && typeof s.resetAndDestroy === 'function' && !s.connecting) {
    s.resetAndDestroy();
    return;
  }
  s.destroy(err ?? undefined);
}

/**
 * Ties the lifetimes of two duplex streams that the caller pipes into each other (a.pipe(b), b.pipe(a): pipe
 * semantics, so a slow reader pauses the writer and memory stays bounded; each end() is a half-close passed on).
 * When one closes uncleanly (an error, or destroyed before both directions ended) the other is torn down too; a
 * clean close leaves the other to finish its own writes. Resolves with the first error once both are closed.
 */
export function joinStreams(a: Duplex, b: Duplex): Promise<Error | null> {
  return new Promise((resolve) => {
    let firstError: Error | null = null;
    let closed = 0;
    const watch = (self: Duplex, other: Duplex) => {
      self.on('error', (err: Error) => {
        firstError ??= err;
      });
      self.once('close', () => {
        closed++;
        const clean = self.readableEnded && self.writableFinished && !self.errored;
        if (!clean) abortStream(other, firstError ?? new NatpunchError('STREAM_CLOSED', 'the other side closed'));
        if (closed === 2) resolve(firstError);
      });
    };
    watch(a, b);
    watch(b, a);
  });
}

/** Pipes a and b into each other with pipe semantics (backpressure, half-close) and ties their lifetimes. */
export function splice(a: Duplex, b: Duplex): Promise<Error | null> {
  const done = joinStreams(a, b);
  a.pipe(b);
  b.pipe(a);
  return done;
}
