import { EventEmitter } from 'node:events';
import { connect as tcpConnect, type Socket } from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { keyToId } from '../session/identity.js';
import type { Session } from '../session/session.js';
import type { MuxStream } from '../session/mux.js';
import { DestinationPolicy } from './policy.js';
import { replyForError, SocksReply, replyName } from './socks5.js';
import { decodeTunnelRequest, encodeTunnelReply, MAX_TUNNEL_HEADER_BYTES, type TunnelRequest } from './wire.js';
import { DEFAULT_HEADER_TIMEOUT_MS, joinStreams, readMessage } from './streams.js';

/** How long the exit waits for a TCP connection to the target (a SYN retry schedule of a few seconds). */
export const DEFAULT_TARGET_CONNECT_TIMEOUT_MS = 10_000;
/** After a refusal reply, how long the peer gets to close the stream before we reset it. */
const REFUSAL_LINGER_MS = 5_000;

export interface ExposeTarget {
  host: string;
  port: number;
}

export interface TunnelExitOptions {
  /** What `forward` may reach, by port: a request for port P goes to the target whose port is P. */
  targets?: ExposeTarget[];
  /** Where SOCKS CONNECT requests may go (default: nowhere). */
  destinations?: DestinationPolicy;
  connectTimeoutMs?: number;
  headerTimeoutMs?: number;
  logger?: Logger;
}

/** Events a tunnel side reports (CLI status lines and --json). */
export type TunnelEvent =
  | { event: 'open'; conn: number; peer: string; request: TunnelRequest; target: string }
  | { event: 'refused'; conn: number; peer: string; request: TunnelRequest | null; status: number; reason: string }
  | { event: 'close'; conn: number; peer: string; bytesIn: number; bytesOut: number; error: string | null };

/**
 * The exposing side of tunnels: serves every stream a peer opens in a session. The stream's header says what is
 * wanted (an exposed port, or a SOCKS destination); the exit checks it against what it exposes, connects, replies
 * with an RFC 1928 status and then splices the stream and the TCP connection. A failure ends only that stream.
 * Events: 'event' (TunnelEvent).
 */
export class TunnelExit extends EventEmitter {
  #targets = new Map<number, ExposeTarget>();
  #destinations: DestinationPolicy;
  #options: TunnelExitOptions;
  #logger: Logger;
  #active = new Set<{ stream: MuxStream; socket: Socket | null }>();
  #sessions = new Map<Session, () => void>();
  #nextConn = 1;
  #closed = false;
  #doneIn = 0;
  #doneOut = 0;

  constructor(options: TunnelExitOptions = {}) {
    super();
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    for (const t of options.targets ?? []) {
      if (this.#targets.has(t.port))
        throw new NatpunchError(
          'BAD_ARGUMENT',
          `two exposed targets share port ${t.port}; a forward asks for a port, so each must be unique`,
        );
      this.#targets.set(t.port, t);
    }
    this.#destinations = options.destinations ?? new DestinationPolicy();
  }

  get targets(): ExposeTarget[] {
    return [...this.#targets.values()];
  }

  /** Connections being served right now. */
  get activeCount(): number {
    return this.#active.size;
  }

  /** Connections being served and bytes carried so far (from / to the peers). */
  stats(): { connections: number; bytesIn: number; bytesOut: number } {
    let bytesIn = this.#doneIn;
    let bytesOut = this.#doneOut;
    for (const e of this.#active) {
      bytesIn += e.stream.bytesReceived;
      bytesOut += e.stream.bytesSent;
    }
    return { connections: this.#active.size, bytesIn, bytesOut };
  }

  /** Serves the streams of `session` until it closes (or detach()). */
  attach(session: Session): () => void {
    const onStream = (s: MuxStream) => void this.#serve(s, session);
    session.on('stream', onStream);
    const detach = () => {
      session.off('stream', onStream);
      this.#sessions.delete(session);
    };
    session.once('close', detach);
    this.#sessions.set(session, detach);
    return detach;
  }

  #emit(e: TunnelEvent): void {
    this.emit('event', e);
  }

  async #serve(stream: MuxStream, session: Session): Promise<void> {
    const conn = this.#nextConn++;
    const peer = keyToId(session.remotePublicKey);
    const entry = { stream, socket: null as Socket | null };
    this.#active.add(entry);
    stream.on('error', () => {}); // reported through joinStreams / the close event
    let request: TunnelRequest | null = null;
    const refuse = (status: number, reason: string) => {
      this.#emit({ event: 'refused', conn, peer, request, status, reason });
      this.#logger.info({ conn, peer, request, status, reason }, 'tunnel request refused');
      if (stream.destroyed) return;
      stream.end(encodeTunnelReply(status));
      stream.resume(); // drain whatever the peer sent optimistically; it closes the stream on reading the status
      const kill = setTimeout(() => stream.destroy(), REFUSAL_LINGER_MS);
      kill.unref();
      stream.once('close', () => clearTimeout(kill));
    };
    try {
      if (this.#closed) return refuse(SocksReply.GENERAL_FAILURE, 'shutting down');
      try {
        request = await readMessage(stream, decodeTunnelRequest, {
          maxBytes: MAX_TUNNEL_HEADER_BYTES,
          timeoutMs: this.#options.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS,
          what: 'tunnel request',
        });
      } catch (err) {
        return refuse(SocksReply.GENERAL_FAILURE, (err as Error).message);
      }
      let host: string;
      const port = request.port;
      if (request.kind === 'forward') {
        const t = this.#targets.get(request.port);
        if (!t) return refuse(SocksReply.NOT_ALLOWED, `port ${request.port} is not exposed here`);
        host = t.host;
      } else {
        const d = await this.#destinations.check(request.host, request.port);
        if (d.error) return refuse(replyForError(d.error), `cannot resolve ${request.host}: ${d.error.message}`);
        if (!d.allowed)
          return refuse(SocksReply.NOT_ALLOWED, `destination ${request.host}:${request.port} is not allowed`);
        host = d.address!;
      }
      if (stream.destroyed) return;
      let socket: Socket;
      try {
        socket = await this.#dial(host, port);
      } catch (err) {
        return refuse(replyForError(err), `${host}:${port}: ${(err as Error).message}`);
      }
      if (stream.destroyed || this.#closed) {
        socket.destroy();
        return;
      }
      entry.socket = socket;
      const target = `${host}:${port}`;
      this.#emit({ event: 'open', conn, peer, request, target });
      this.#logger.info({ conn, peer, target }, 'tunnel connection open');
      const bound =
        request.kind === 'connect' && socket.localAddress
          ? { host: socket.localAddress, port: socket.localPort ?? 0 }
          : undefined;
      const done = joinStreams(stream, socket);
      stream.write(encodeTunnelReply(SocksReply.SUCCEEDED, bound));
      stream.pipe(socket);
      socket.pipe(stream);
      const err = await done;
      this.#emit({
        event: 'close',
        conn,
        peer,
        bytesIn: stream.bytesReceived,
        bytesOut: stream.bytesSent,
        error: err ? err.message : null,
      });
    } finally {
      const settle = () => {
        if (!this.#active.delete(entry)) return;
        this.#doneIn += stream.bytesReceived;
        this.#doneOut += stream.bytesSent;
      };
      if (!entry.socket) {
        // refused: the entry lives until the stream is gone
        if (stream.destroyed) settle();
        else stream.once('close', settle);
      } else settle();
    }
  }

  #dial(host: string, port: number): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const ms = this.#options.connectTimeoutMs ?? DEFAULT_TARGET_CONNECT_TIMEOUT_MS;
      const socket = tcpConnect({ host, port, allowHalfOpen: true, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new NatpunchError('TIMEOUT', `no TCP connection within ${ms} ms`));
      }, ms);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        resolve(socket);
      });
      const onError = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      socket.once('error', onError);
    });
  }

  /** Stops serving: detaches from every session and resets every connection it carries. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const detach of [...this.#sessions.values()]) detach();
    for (const e of this.#active) {
      e.socket?.destroy();
      e.stream.destroy();
    }
    this.#active.clear();
  }
}

export { replyName };
