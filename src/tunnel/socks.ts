import { createHash, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import { isNatpunchError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import {
  decodeAuthRequest,
  decodeGreeting,
  decodeRequest,
  encodeAuthReply,
  encodeMethodChoice,
  encodeReply,
  replyName,
  SocksCommand,
  SocksMethod,
  SocksReply,
} from './socks5.js';
import { DEFAULT_HEADER_TIMEOUT_MS, joinStreams, readMessage } from './streams.js';
import { openTunnel, type PeerLink } from './link.js';
import { LocalListener, type LocalListenOptions } from './forward.js';

/** Greeting and request are small: RFC 1928 §3/§4 bound them at 257 and 262 bytes; RFC 1929 §2 at 513. */
const MAX_SOCKS_MESSAGE_BYTES = 513;

export interface SocksServerOptions {
  link: PeerLink;
  listen: LocalListenOptions;
  /** RFC 1929 username/password; without it the server offers only "no authentication required". */
  auth?: { username: string; password: string };
  handshakeTimeoutMs?: number;
  logger?: Logger;
}

function digest(b: Buffer | string): Buffer {
  return createHash('sha256').update(b).digest();
}

/**
 * `natpunch socks`: a SOCKS5 server (RFC 1928, CONNECT only) whose connections exit on the peer's side. The peer
 * decides what may be reached (its --allow-dest); its verdict comes back as the RFC 1928 §6 reply code.
 */
export class SocksServer extends LocalListener {
  #options: SocksServerOptions;

  constructor(options: SocksServerOptions) {
    super(options.link, options.listen, options.logger);
    this.#options = options;
  }

  protected async handle(socket: Socket, conn: number, signal: AbortSignal): Promise<void> {
    const read = <T>(decode: (b: Buffer) => { value: T; length: number } | null, what: string) =>
      readMessage(socket, decode, {
        maxBytes: MAX_SOCKS_MESSAGE_BYTES,
        timeoutMs: this.#options.handshakeTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS,
        signal,
        what,
      });
    const fail = (error: string, status?: number, target: string | null = null) => {
      this.report({ event: 'failed', conn, target, error, ...(status !== undefined ? { status } : {}) });
    };

    // RFC 1928 §3: method negotiation.
    const greeting = await read(decodeGreeting, 'SOCKS5 greeting');
    const auth = this.#options.auth;
    const wanted = auth ? SocksMethod.USERNAME_PASSWORD : SocksMethod.NO_AUTH;
    if (!greeting.methods.includes(wanted)) {
      socket.end(encodeMethodChoice(SocksMethod.NO_ACCEPTABLE));
      fail(auth ? 'client did not offer username/password authentication' : 'client did not offer "no authentication"');
      return;
    }
    socket.write(encodeMethodChoice(wanted));
    if (auth) {
      // RFC 1929 §2: compare digests in constant time, so timing says nothing about the credentials.
      const req = await read(decodeAuthRequest, 'SOCKS5 username/password');
      const ok =
        timingSafeEqual(digest(req.username), digest(auth.username)) &&
        timingSafeEqual(digest(req.password), digest(auth.password));
      if (!ok) {
        socket.end(encodeAuthReply(false));
        fail('bad SOCKS username or password');
        return;
      }
      socket.write(encodeAuthReply(true));
    }

    // RFC 1928 §4: the request.
    let request;
    try {
      request = await read(decodeRequest, 'SOCKS5 request');
    } catch (err) {
      const reply = isNatpunchError(err, 'SOCKS_PROTOCOL') ? (err.details?.reply as number | undefined) : undefined;
      if (reply !== undefined) {
        socket.end(encodeReply(reply));
        fail((err as Error).message, reply);
        return;
      }
      throw err;
    }
    const target = `${request.host.includes(':') ? `[${request.host}]` : request.host}:${request.port}`;
    if (request.command !== SocksCommand.CONNECT) {
      // BIND and UDP ASSOCIATE would need the exit to listen or relay datagrams for us: not offered.
      socket.end(encodeReply(SocksReply.COMMAND_NOT_SUPPORTED));
      fail(`SOCKS command ${request.command} not supported (CONNECT only)`, SocksReply.COMMAND_NOT_SUPPORTED, target);
      return;
    }
    let session;
    try {
      session = await this.link.getSession({ signal });
    } catch (err) {
      socket.end(encodeReply(SocksReply.GENERAL_FAILURE));
      fail((err as Error).message, SocksReply.GENERAL_FAILURE, target);
      return;
    }
    const { stream, reply } = openTunnel(session, { kind: 'connect', host: request.host, port: request.port });
    this.track(stream);
    const onGone = () => stream.destroy();
    socket.once('close', onGone); // the client gave up while the exit was connecting
    let verdict;
    try {
      verdict = await reply;
    } catch (err) {
      if (!socket.destroyed) socket.end(encodeReply(SocksReply.GENERAL_FAILURE));
      stream.destroy();
      fail((err as Error).message, SocksReply.GENERAL_FAILURE, target);
      return;
    }
    // RFC 1928 §6: the exit's status and bound address, as the exit reported them.
    if (verdict.status !== SocksReply.SUCCEEDED) {
      // End the socket politely so the client reads the reply; the stream is done.
      socket.end(encodeReply(verdict.status));
      socket.resume();
      stream.destroy();
      fail(`the peer refused ${target}: ${replyName(verdict.status)}`, verdict.status, target);
      return;
    }
    socket.off('close', onGone);
    if (socket.destroyed) {
      stream.destroy();
      return;
    }
    const done = joinStreams(socket, stream);
    socket.write(encodeReply(SocksReply.SUCCEEDED, verdict.bound));
    socket.pipe(stream);
    stream.pipe(socket);
    await this.reportCarried(conn, target, stream, done);
  }
}
