import { EventEmitter } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { MuxStream } from '../session/mux.js';
import { replyName, SocksReply } from './socks5.js';
import { abortStream, joinStreams } from './streams.js';
import { openTunnel, type PeerLink } from './link.js';

/** Connection events of the local listeners (`forward` and `socks`). */
export type ConnectionEvent =
  | { event: 'listening'; address: string; port: number }
  | { event: 'accepted'; conn: number; from: string }
  | { event: 'open'; conn: number; target: string }
  | { event: 'failed'; conn: number; target: string | null; error: string; status?: number }
  | { event: 'close'; conn: number; target: string; bytesUp: number; bytesDown: number; error: string | null };

export interface LocalListenOptions {
  /** default 127.0.0.1 (only this machine may use the tunnel) */
  host?: string;
  port: number;
}

/**
 * Shared by TcpForwarder and SocksServer: a TCP server whose connections are paused until a tunnel stream is ready,
 * tracked so close() can end them.
 */
export abstract class LocalListener extends EventEmitter {
  protected readonly link: PeerLink;
  protected readonly logger: Logger;
  #server: Server;
  #sockets = new Set<Socket>();
  #streams = new Set<MuxStream>();
  #nextConn = 1;
  #closed = false;
  #listenOpts: LocalListenOptions;
  #doneUp = 0;
  #doneDown = 0;

  constructor(link: PeerLink, listen: LocalListenOptions, logger?: Logger) {
    super();
    this.link = link;
    this.logger = logger ?? silentLogger;
    this.#listenOpts = listen;
    this.#server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) =>
      this.#accept(socket),
    );
  }

  /** Starts listening; resolves with the bound address. */
  listen(): Promise<{ address: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#listenOpts.port, this.#listenOpts.host ?? '127.0.0.1', () => {
        this.#server.off('error', reject);
        const a = this.address;
        this.emit('event', { event: 'listening', ...a } satisfies ConnectionEvent);
        resolve(a);
      });
    });
  }

  get address(): { address: string; port: number } {
    const a = this.#server.address();
    if (!a || typeof a === 'string') throw new NatpunchError('SOCKET_CLOSED', 'not listening');
    return { address: a.address, port: a.port };
  }

  get connectionCount(): number {
    return this.#sockets.size;
  }

  protected track(stream: MuxStream): void {
    this.#streams.add(stream);
    stream.once('close', () => {
      this.#streams.delete(stream);
      this.#doneUp += stream.bytesSent;
      this.#doneDown += stream.bytesReceived;
    });
  }

  /** Open connections and bytes carried so far (tunnel payload plus the small per-stream headers). */
  stats(): { connections: number; bytesUp: number; bytesDown: number } {
    let up = this.#doneUp;
    let down = this.#doneDown;
    for (const s of this.#streams) {
      up += s.bytesSent;
      down += s.bytesReceived;
    }
    return { connections: this.#sockets.size, bytesUp: up, bytesDown: down };
  }

  protected report(e: ConnectionEvent): void {
    this.emit('event', e);
  }

  /** Reports the connection `open`, waits until both directions have ended (joinStreams' promise), reports `close`. */
  protected async reportCarried(
    conn: number,
    target: string,
    stream: MuxStream,
    done: Promise<Error | null>,
  ): Promise<void> {
    this.report({ event: 'open', conn, target });
    const err = await done;
    this.report({
      event: 'close',
      conn,
      target,
      bytesUp: stream.bytesSent,
      bytesDown: stream.bytesReceived,
      error: err ? err.message : null,
    });
  }

  #accept(socket: Socket): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    const conn = this.#nextConn++;
    this.#sockets.add(socket);
    socket.on('error', () => {});
    const ac = new AbortController();
    socket.once('close', () => {
      this.#sockets.delete(socket);
      ac.abort();
    });
    this.report({ event: 'accepted', conn, from: `${socket.remoteAddress}:${socket.remotePort}` });
    this.handle(socket, conn, ac.signal).catch((err: Error) => {
      this.logger.warn({ conn, err: err.message }, 'tunnel connection failed');
      abortStream(socket, err);
    });
  }

  protected abstract handle(socket: Socket, conn: number, signal: AbortSignal): Promise<void>;

  /** Stops listening and resets the connections it carries (the session belongs to the PeerLink). */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    for (const s of this.#streams) s.destroy();
    for (const s of this.#sockets) s.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

/**
 * `natpunch forward LOCALPORT:PEER:REMOTEPORT`: every TCP connection accepted locally becomes a new stream in the
 * link's one session, asking the exposing peer for REMOTEPORT. Bytes the application sends before the peer has
 * answered ride right behind the request (no extra round trip); a refusal resets the local connection.
 */
export class TcpForwarder extends LocalListener {
  readonly remotePort: number;
  #label: string;

  /** `peerLabel` names the peer in events (default "peer"). */
  constructor(options: {
    link: PeerLink;
    remotePort: number;
    listen: LocalListenOptions;
    peerLabel?: string;
    logger?: Logger;
  }) {
    super(options.link, options.listen, options.logger);
    if (!Number.isInteger(options.remotePort) || options.remotePort < 1 || options.remotePort > 65535) {
      throw new NatpunchError('BAD_ARGUMENT', `bad remote port ${options.remotePort}`);
    }
    this.remotePort = options.remotePort;
    this.#label = `${options.peerLabel ?? 'peer'}:${options.remotePort}`;
  }

  protected async handle(socket: Socket, conn: number, signal: AbortSignal): Promise<void> {
    const target = this.#label;
    let session;
    try {
      session = await this.link.getSession({ signal });
    } catch (err) {
      this.report({ event: 'failed', conn, target, error: (err as Error).message });
      abortStream(socket, err as Error);
      return;
    }
    const { stream, reply } = openTunnel(session, { kind: 'forward', port: this.remotePort });
    this.track(stream);
    const done = joinStreams(socket, stream);
    socket.pipe(stream); // optimistic: the application's first bytes follow the request
    let status: number;
    try {
      status = (await reply).status;
    } catch (err) {
      this.report({ event: 'failed', conn, target, error: (err as Error).message });
      abortStream(stream, err as Error);
      return;
    }
    if (status !== SocksReply.SUCCEEDED) {
      const error = `the peer refused: ${replyName(status)}`;
      this.report({ event: 'failed', conn, target, error, status });
      abortStream(stream, new NatpunchError('TUNNEL_REFUSED', error));
      return;
    }
    stream.pipe(socket);
    await this.reportCarried(conn, target, stream, done);
  }
}
