import { createRequire } from 'node:module';
import { EventEmitter } from 'node:events';
import type { DatagramListener, DatagramTransport, RemoteInfo } from '../net/datagram.js';

/**
 * A server-side DatagramTransport on libudx's UDP socket (udx-native, already a dependency for the session layer).
 * Its receive path hands out slices of a preallocated slab and its send path skips Node's dgram bookkeeping, which
 * measured roughly a third more packets per CPU-second than node:dgram on loopback. `startServer` uses it when the
 * native module loads and falls back to ServerUdpSocket (node:dgram) otherwise.
 */

interface UdxSocketLike extends EventEmitter {
  bind(port: number, host: string): void;
  address(): { host: string; family: number; port: number } | null;
  trySend(buffer: Uint8Array, port: number, host: string): void;
  setRecvBufferSize(size: number): number;
  setSendBufferSize(size: number): number;
  close(): Promise<void>;
}
interface UdxLike {
  createSocket(opts?: { ipv6Only?: boolean }): UdxSocketLike;
}

/** Loads udx-native once per call site; undefined when the native addon is unavailable on this platform. */
export function loadUdx(): UdxLike | undefined {
  try {
    const require = createRequire(import.meta.url);
    const UDX = require('udx-native') as new () => UdxLike;
    return new UDX();
  } catch {
    return undefined;
  }
}

export class UdxServerSocket implements DatagramTransport {
  readonly #socket: UdxSocketLike;
  readonly #events = new EventEmitter();
  #closed = false;
  #closing?: Promise<void>;

  private constructor(socket: UdxSocketLike) {
    this.#socket = socket;
    this.#events.setMaxListeners(0);
    socket.on('message', (msg: Buffer, r: { host: string; family: number; port: number }) => {
      const rinfo: RemoteInfo = { address: r.host, port: r.port, family: r.family === 6 ? 'IPv6' : 'IPv4' };
      this.#events.emit('message', msg, rinfo);
    });
    socket.on('error', () => {}); // a server socket must never crash the process
    socket.on('close', () => {
      this.#closed = true;
    });
  }

  static bind(
    udx: UdxLike,
    address: string,
    port: number,
    options: { bufferBytes?: number; ipv6Only?: boolean } = {},
  ): UdxServerSocket {
    const v6 = address.includes(':');
    const socket = udx.createSocket({ ipv6Only: v6 && (options.ipv6Only ?? true) });
    try {
      socket.bind(port, address);
    } catch (err) {
      void socket.close();
      // Same shape as node's errors so callers can test err.code.
      const message = (err as Error).message ?? String(err);
      const code = /EADDRINUSE|already in use/i.test(message)
        ? 'EADDRINUSE'
        : /EADDRNOTAVAIL|not available/i.test(message)
          ? 'EADDRNOTAVAIL'
          : /EACCES|permission denied/i.test(message)
            ? 'EACCES'
            : undefined;
      throw Object.assign(new Error(message), { code });
    }
    if (options.bufferBytes) {
      try {
        socket.setRecvBufferSize(options.bufferBytes);
        socket.setSendBufferSize(options.bufferBytes);
      } catch {
        /* capped by the kernel; not fatal */
      }
    }
    return new UdxServerSocket(socket);
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(msg: Uint8Array, port: number, address: string): void {
    if (this.#closed) return;
    try {
      this.#socket.trySend(msg, port, address);
    } catch {
      // Not an IP literal (e.g. a zone suffix it does not parse): nothing sensible to do for a reply.
    }
  }

  onMessage(listener: DatagramListener): () => void {
    this.#events.on('message', listener);
    return () => this.#events.off('message', listener);
  }

  address(): { address: string; port: number; family: string } {
    const a = this.#socket.address();
    return { address: a?.host ?? '', port: a?.port ?? 0, family: a?.family === 6 ? 'IPv6' : 'IPv4' };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing ??= this.#socket.close();
  }

  /** Resolves once the native socket is closed. */
  async whenClosed(): Promise<void> {
    await this.#closing;
  }
}
