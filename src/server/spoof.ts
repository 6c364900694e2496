/**
 * STUNT #1's server side as a small service (`natpunch serve --spoof`): OFF by default, root only, a lab/research
 * capability. Spoofing source addresses is what BCP 38 (RFC 2827) ingress filtering exists to stop, so it works only
 * where the server's network does not filter (the NAT lab; some research networks).
 *
 * Protocol (TCP, one JSON line each way, at most MAX_LINE_BYTES):
 *   peer → server  {"pair": "<8-64 hex chars, e.g. the rendezvous connection id>", "offer": SeqOffer}
 *   server → peer  {"ok": true, "state": "waiting" | "spoofed"}  or  {"ok": false, "error": "..."}
 * When both offers of a pair are in, the server sends each peer the SYN-ACK the other would have sent
 * (tcp-stunt1.ts SynAckSpoofer). Abuse limits: an offer's public address must be the address its connection comes
 * from (so packets only go to hosts that asked, with a source that also asked); a pair id holds at most two offers
 * and expires after PAIR_TIMEOUT_MS; at most MAX_PENDING_PAIRS wait at once.
 */
import net from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { NativeAddon } from '../net/native.js';
import { parseSeqOffer, type SeqOffer } from '../traversal/tcp-seq.js';
import { SynAckSpoofer } from '../traversal/tcp-stunt1.js';

export const SPOOF_SERVICE_DEFAULTS = {
  /** A peer's request line must arrive within this time. */
  requestTimeoutMs: 5_000,
  /** How long the first offer of a pair waits for the second (both are sent within one RTT of each other). */
  pairTimeoutMs: 10_000,
  maxPendingPairs: 1024,
  maxLineBytes: 4096,
} as const;

const PAIR_RE = /^[0-9a-f]{8,64}$/;

interface Pending {
  offer: SeqOffer;
  socket: net.Socket;
  timer: NodeJS.Timeout;
}

export interface SpoofServiceOptions {
  port?: number;
  host?: string;
  logger?: Logger;
  addon?: NativeAddon;
  /** For tests: a spoofer to use instead of opening one (needs CAP_NET_RAW). */
  spoofer?: Pick<SynAckSpoofer, 'spoof' | 'close'>;
}

function reply(socket: net.Socket, msg: Record<string, unknown>, end = false): void {
  if (socket.destroyed) return;
  const line = `${JSON.stringify(msg)}\n`;
  if (end) socket.end(line);
  else socket.write(line);
}

export class SpoofService {
  readonly server: net.Server;
  #spoofer: Pick<SynAckSpoofer, 'spoof' | 'close'>;
  #pending = new Map<string, Pending>();
  #sockets = new Set<net.Socket>();
  #log: Logger;
  #closed = false;

  private constructor(server: net.Server, spoofer: Pick<SynAckSpoofer, 'spoof' | 'close'>, log: Logger) {
    this.server = server;
    this.#spoofer = spoofer;
    this.#log = log;
  }

  /** Starts the service. NOT_ROOT without CAP_NET_RAW. */
  static async start(options: SpoofServiceOptions = {}): Promise<SpoofService> {
    const spoofer = options.spoofer ?? SynAckSpoofer.open({ addon: options.addon });
    const server = net.createServer();
    const service = new SpoofService(server, spoofer, options.logger ?? silentLogger);
    server.on('connection', (s) => service.#onConnection(s));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(options.port ?? 0, options.host ?? '0.0.0.0', () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      spoofer.close();
      throw new NatpunchError('ADDRESS_IN_USE', `spoof service cannot listen: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return service;
  }

  address(): { address: string; port: number } {
    const a = this.server.address() as net.AddressInfo;
    return { address: a.address, port: a.port };
  }

  #onConnection(socket: net.Socket): void {
    if (this.#closed) return void socket.destroy();
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    socket.on('error', () => {});
    socket.setTimeout(SPOOF_SERVICE_DEFAULTS.requestTimeoutMs + SPOOF_SERVICE_DEFAULTS.pairTimeoutMs, () =>
      socket.destroy(),
    );
    const requestTimer = setTimeout(
      () => reply(socket, { ok: false, error: 'no request line in time' }, true),
      SPOOF_SERVICE_DEFAULTS.requestTimeoutMs,
    );
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0 && buf.length <= SPOOF_SERVICE_DEFAULTS.maxLineBytes) return;
      socket.off('data', onData);
      clearTimeout(requestTimer);
      if (nl < 0 || nl > SPOOF_SERVICE_DEFAULTS.maxLineBytes)
        return reply(socket, { ok: false, error: 'request line too long' }, true);
      this.#onRequest(socket, buf.slice(0, nl));
    };
    socket.on('data', onData);
    socket.once('close', () => clearTimeout(requestTimer));
  }

  #onRequest(socket: net.Socket, line: string): void {
    let pair: string;
    let offer: SeqOffer;
    try {
      const req = JSON.parse(line) as { pair?: unknown; offer?: unknown };
      if (typeof req.pair !== 'string' || !PAIR_RE.test(req.pair))
        throw new NatpunchError('BAD_ARGUMENT', 'pair must be 8-64 lowercase hex characters');
      pair = req.pair;
      offer = parseSeqOffer(req.offer);
    } catch (err) {
      return reply(
        socket,
        { ok: false, error: err instanceof NatpunchError ? err.message : 'request is not JSON' },
        true,
      );
    }
    const from = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    if (offer.public.address !== from) {
      return reply(
        socket,
        {
          ok: false,
          error: `offer's public address ${offer.public.address} is not the address this request came from (${from})`,
        },
        true,
      );
    }
    const first = this.#pending.get(pair);
    if (!first) {
      if (this.#pending.size >= SPOOF_SERVICE_DEFAULTS.maxPendingPairs)
        return reply(socket, { ok: false, error: 'too many pending pairs' }, true);
      const timer = setTimeout(() => {
        this.#pending.delete(pair);
        reply(socket, { ok: false, error: 'the other offer of the pair did not arrive' }, true);
      }, SPOOF_SERVICE_DEFAULTS.pairTimeoutMs);
      this.#pending.set(pair, { offer, socket, timer });
      reply(socket, { ok: true, state: 'waiting' });
      return;
    }
    this.#pending.delete(pair);
    clearTimeout(first.timer);
    this.#log.info({ a: first.offer.public, b: offer.public }, 'spoof: sending STUNT #1 SYN-ACKs');
    reply(socket, { ok: true, state: 'spoofed' }, true);
    reply(first.socket, { ok: true, state: 'spoofed' }, true);
    this.#spoofer.spoof(first.offer, offer).catch((err) => this.#log.warn({ err }, 'spoof: sending failed'));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const p of this.#pending.values()) clearTimeout(p.timer);
    this.#pending.clear();
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
    this.#spoofer.close();
  }
}

/**
 * Hands our offer to a STUNT #1 spoof service (the `exchange` of stunt1()). Resolves when the server accepted it
 * ('waiting' or 'spoofed'); rejects with PUNCH_FAILED when the server refuses, TIMEOUT / ABORTED otherwise. The
 * connection is closed by the server when the pair completes or expires.
 */
export function submitStunt1Offer(options: {
  server: { address: string; port: number };
  pair: string;
  offer: SeqOffer;
  signal?: AbortSignal;
  timeoutMs?: number;
}): Promise<'waiting' | 'spoofed'> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: options.server.address, port: options.server.port });
    let buf = '';
    let settled = false;
    const done = (err: Error | undefined, state?: 'waiting' | 'spoofed') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.removeAllListeners('data');
      // Keep the connection until the server ends it (it holds the pair while we wait); never beyond the timeout.
      socket.on('error', () => {});
      setTimeout(() => socket.destroy(), SPOOF_SERVICE_DEFAULTS.pairTimeoutMs).unref();
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(state!);
    };
    const timeoutMs = options.timeoutMs ?? SPOOF_SERVICE_DEFAULTS.requestTimeoutMs;
    const timer = setTimeout(
      () =>
        done(
          new NatpunchError(
            'TIMEOUT',
            `spoof service ${options.server.address}:${options.server.port} did not answer within ${timeoutMs} ms`,
          ),
        ),
      timeoutMs,
    );
    const onAbort = () =>
      done(new NatpunchError('ABORTED', 'STUNT #1 offer submission aborted', { cause: options.signal?.reason }));
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('error', (e) =>
      done(new NatpunchError('PUNCH_FAILED', `spoof service unreachable: ${e.message}`, { cause: e })),
    );
    socket.once('connect', () => socket.write(`${JSON.stringify({ pair: options.pair, offer: options.offer })}\n`));
    socket.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > SPOOF_SERVICE_DEFAULTS.maxLineBytes)
          done(new NatpunchError('PUNCH_FAILED', 'spoof service sent garbage'));
        return;
      }
      let msg: { ok?: unknown; state?: unknown; error?: unknown };
      try {
        msg = JSON.parse(buf.slice(0, nl)) as typeof msg;
      } catch {
        return done(new NatpunchError('PUNCH_FAILED', 'spoof service sent garbage'));
      }
      if (msg.ok === true && (msg.state === 'waiting' || msg.state === 'spoofed')) done(undefined, msg.state);
      else
        done(
          new NatpunchError('PUNCH_FAILED', `spoof service refused the offer: ${String(msg.error ?? 'no reason')}`, {
            details: { reason: 'spoof-refused' },
          }),
        );
    });
  });
}
