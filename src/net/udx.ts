import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { NatpunchError } from '../util/errors.js';
import type { DatagramListener, DatagramTransport, RemoteInfo } from './datagram.js';

const require = createRequire(import.meta.url);

/** The parts of udx-native's stream (a streamx Duplex) natpunch uses. Verified against udx-native 1.21.3. */
export interface UdxStream extends NodeJS.EventEmitter {
  readonly id: number;
  remoteId: number;
  remoteHost: string | null;
  remotePort: number;
  /** Smoothed RTT in ms as libudx measures it (0 until the first ack). */
  readonly rtt: number;
  readonly mtu: number;
  /** Bytes sent and not yet acknowledged. */
  readonly inflight: number;
  readonly destroyed: boolean;
  readonly connected: boolean;
  connect(socket: unknown, remoteId: number, port: number, host: string): void;
  /** Resolves when the remote changed; returns null when the change completed synchronously (nothing in flight). */
  changeRemote(socket: unknown, remoteId: number, port: number, host: string): Promise<void> | null;
  send(buf: Uint8Array): Promise<boolean>;
  trySend(buf: Uint8Array): void;
  write(buf: Uint8Array): boolean;
  end(): void;
  destroy(err?: Error): void;
  setKeepalive(ms: number): void;
}

interface UdxSocket extends NodeJS.EventEmitter {
  bind(port: number, host?: string): void;
  address(): { host: string; family: number; port: number } | null;
  send(buf: Uint8Array, port: number, host: string, ttl?: number): Promise<boolean>;
  trySend(buf: Uint8Array, port: number, host: string, ttl?: number): void;
  close(): Promise<void>;
  readonly closing: boolean;
  /** SO_RCVBUF / SO_SNDBUF (udx-native ≥ 1.19); the kernel caps them at net.core.rmem_max / wmem_max. */
  setRecvBufferSize?(bytes: number): number;
  setSendBufferSize?(bytes: number): number;
  getRecvBufferSize?(): number;
  getSendBufferSize?(): number;
}

interface Udx {
  createSocket(opts?: { ipv6Only?: boolean }): UdxSocket;
  createStream(id: number, opts?: { firewall?: (socket: unknown, port: number, host: string) => boolean }): UdxStream;
}

type UdxCtor = new () => Udx;

function loadUdx(): UdxCtor {
  try {
    return require('udx-native') as UdxCtor;
  } catch (err) {
    throw new NatpunchError(
      'ADDON_UNAVAILABLE',
      'udx-native could not be loaded (is its prebuild installed for this platform?)',
      { cause: err },
    );
  }
}

/** Largest stream id libudx accepts: ids are u32 on the wire; 0 is kept out of use so "unset" stays visible. */
const MAX_STREAM_ID = 0xffffffff;
/** close() waits this long for libudx to finish the streams' close handshakes. */
export const CLOSE_WAIT_MS = 2_000;
/**
 * Socket buffers of an endpoint's socket (SO_RCVBUF and SO_SNDBUF; Linux caps them at net.core.rmem_max/wmem_max).
 * A session's UDX stream has up to its congestion window in flight, and the kernel's default (208 KiB, ~90 packets
 * of 1.5 KB by their truesize) overflows whenever the receiving process is off the CPU for a moment (garbage
 * collection, another process): each overflow is a loss burst the sender retransmits and its congestion control
 * backs off from. Measured between two processes on loopback with the machine busy: 1,115 and 14,414 retransmits
 * per 256 MiB with the default, none with 4 MiB, and twice the throughput (bench/stream.bench.ts). Memory is only
 * used while packets wait to be read.
 */
export const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * ONE UDP socket (a udx-native socket) per peer. It is a DatagramTransport for STUN, rendezvous and probes
 * (udx-native's socket 'message' event carries every datagram that is not traffic of a UDX stream connected on
 * this socket, including UDX packets for unknown stream ids), and it creates the UDX streams that carry the
 * encrypted session over the same 5-tuple the NAT mapped.
 */
export class UdxEndpoint implements DatagramTransport {
  readonly udx: Udx;
  readonly socket: UdxSocket;
  #events = new EventEmitter();
  #closed = false;
  #closing: Promise<void> | null = null;
  #streams = new Map<number, UdxStream>();
  #host: string;

  private constructor(udx: Udx, socket: UdxSocket, host: string) {
    this.udx = udx;
    this.socket = socket;
    this.#host = host;
    this.#events.setMaxListeners(0);
    socket.on('message', (msg: Buffer, rinfo: { host: string; family: number; port: number }) => {
      const info: RemoteInfo = { address: rinfo.host, port: rinfo.port, family: rinfo.family === 6 ? 'IPv6' : 'IPv4' };
      this.#events.emit('message', msg, info);
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#closed = true;
    });
  }

  /** Binds a new socket; `address` defaults to 0.0.0.0 (IPv4 all interfaces). */
  static async bind(options: { port?: number; address?: string } = {}): Promise<UdxEndpoint> {
    const Ctor = loadUdx();
    const udx = new Ctor();
    const socket = udx.createSocket();
    const host = options.address ?? '0.0.0.0';
    try {
      socket.bind(options.port ?? 0, host);
    } catch (err) {
      await socket.close().catch(() => {});
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `cannot bind UDP ${host}:${options.port ?? 0}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    try {
      socket.setRecvBufferSize?.(SOCKET_BUFFER_BYTES);
      socket.setSendBufferSize?.(SOCKET_BUFFER_BYTES);
    } catch {
      // Not fatal: the socket works with the kernel's default buffers, only less well under load.
    }
    return new UdxEndpoint(udx, socket, host);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The socket's buffer sizes as the kernel set them (it doubles the request for bookkeeping and caps it). */
  bufferSizes(): { recv: number; send: number } | null {
    try {
      return { recv: this.socket.getRecvBufferSize?.() ?? 0, send: this.socket.getSendBufferSize?.() ?? 0 };
    } catch {
      return null;
    }
  }

  /** Sends one raw datagram; `ttl` sets the IP TTL of this datagram only (0 or undefined: the default). */
  send(msg: Uint8Array, port: number, address: string, ttl?: number): void {
    if (this.#closed) return;
    try {
      this.socket.trySend(msg, port, address, ttl);
    } catch {
      // Invalid address or a closing socket: like a lost datagram, callers learn by timeouts.
    }
  }

  /** Like send, resolving true once the kernel took the datagram (false on a send error). */
  async sendAsync(msg: Uint8Array, port: number, address: string, ttl?: number): Promise<boolean> {
    if (this.#closed) return false;
    try {
      return await this.socket.send(msg, port, address, ttl);
    } catch {
      return false;
    }
  }

  onMessage(listener: DatagramListener): () => void {
    this.#events.on('message', listener);
    return () => this.#events.off('message', listener);
  }

  address(): { address: string; port: number; family: string } {
    const a = this.socket.address();
    if (!a) return { address: this.#host, port: 0, family: 'IPv4' };
    return { address: a.host, port: a.port, family: a.family === 6 ? 'IPv6' : 'IPv4' };
  }

  /** True when a local stream id is free on this socket. */
  streamIdFree(id: number): boolean {
    return !this.#streams.has(id);
  }

  /**
   * Creates a UDX stream with local id `localId` connected to `remoteId` at address:port. Both ends must agree on
   * the two ids beforehand (natpunch derives them from the connection id).
   */
  connectStream(localId: number, remoteId: number, port: number, address: string): UdxStream {
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'the endpoint is closed');
    if (!Number.isInteger(localId) || localId <= 0 || localId > MAX_STREAM_ID)
      throw new NatpunchError('BAD_ARGUMENT', `bad stream id ${localId}`);
    if (this.#streams.has(localId))
      throw new NatpunchError('BAD_ARGUMENT', `stream id ${localId} is already in use on this socket`);
    const stream = this.udx.createStream(localId);
    this.#streams.set(localId, stream);
    stream.once('close', () => {
      if (this.#streams.get(localId) === stream) this.#streams.delete(localId);
    });
    stream.on('error', () => {});
    try {
      stream.connect(this.socket, remoteId, port, address);
    } catch (err) {
      stream.destroy();
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `cannot connect UDX stream to ${address}:${port}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    return stream;
  }

  /**
   * Creates a UDX stream with local id `localId` that connects itself to the first address a packet for it comes
   * from, if `accept(address, port)` agrees (libudx asks its firewall hook for packets to unconnected streams).
   * Emits 'connect' on the stream when that happened. Packets from refused addresses are dropped.
   */
  acceptStream(localId: number, remoteId: number, accept: (address: string, port: number) => boolean): UdxStream {
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'the endpoint is closed');
    if (!Number.isInteger(localId) || localId <= 0 || localId > MAX_STREAM_ID)
      throw new NatpunchError('BAD_ARGUMENT', `bad stream id ${localId}`);
    if (this.#streams.has(localId))
      throw new NatpunchError('BAD_ARGUMENT', `stream id ${localId} is already in use on this socket`);
    let stream: UdxStream | null = null;
    const firewall = (_socket: unknown, port: number, host: string): boolean => {
      if (!stream || stream.destroyed || this.#closed) return true;
      let ok = false;
      try {
        ok = accept(host, port);
      } catch {
        ok = false;
      }
      if (!ok) return true; // firewalled: dropped
      try {
        stream.connect(this.socket, remoteId, port, host);
      } catch {
        return true;
      }
      return false;
    };
    stream = this.udx.createStream(localId, { firewall });
    const s = stream;
    this.#streams.set(localId, s);
    s.once('close', () => {
      if (this.#streams.get(localId) === s) this.#streams.delete(localId);
    });
    s.on('error', () => {});
    return s;
  }

  /** Points an existing stream at a new remote address (NAT rebinding), keeping its state and data in flight. */
  async changeRemote(stream: UdxStream, port: number, address: string): Promise<void> {
    const pending = stream.changeRemote(this.socket, stream.remoteId, port, address);
    if (pending) await pending;
  }

  /**
   * Destroys the streams still open on this socket, then closes it. A stream whose peer vanished keeps retrying its
   * close handshake inside libudx for several seconds; this resolves after at most CLOSE_WAIT_MS regardless and
   * the socket finishes closing in the background.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    for (const s of this.#streams.values()) s.destroy();
    const closed = this.socket.close();
    this.#closing = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, CLOSE_WAIT_MS);
      timer.unref();
      void closed.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.#closing;
  }
}
