import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import type { DatagramListener, DatagramTransport, RemoteInfo } from '../net/datagram.js';

/**
 * A server-side DatagramTransport: like NodeDatagramTransport, plus the socket options a server needs (IPv6-only
 * sockets so 0.0.0.0 and :: can share a port; larger kernel buffers for bursts).
 */
export class ServerUdpSocket implements DatagramTransport {
  readonly socket: dgram.Socket;
  readonly #events = new EventEmitter();
  #closed = false;

  private constructor(socket: dgram.Socket) {
    this.socket = socket;
    this.#events.setMaxListeners(0);
    socket.on('message', (msg, rinfo) => this.#events.emit('message', msg, rinfo as RemoteInfo));
    socket.on('error', () => {}); // an unconnected server socket must never crash the process
    socket.on('close', () => {
      this.#closed = true;
    });
  }

  /** `ipv6Only` (for '::') lets a separate 0.0.0.0 socket share the port; without it '::' is dual-stack. */
  static async bind(address: string, port: number, options: { bufferBytes?: number; ipv6Only?: boolean } = {}): Promise<ServerUdpSocket> {
    const v6 = address.includes(':');
    const socket = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', ipv6Only: v6 && (options.ipv6Only ?? true), reuseAddr: false });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, address, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    if (options.bufferBytes) {
      try {
        socket.setRecvBufferSize(options.bufferBytes);
        socket.setSendBufferSize(options.bufferBytes);
      } catch {
        /* capped by the kernel (net.core.rmem_max); not fatal */
      }
    }
    return new ServerUdpSocket(socket);
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(msg: Uint8Array, port: number, address: string): void {
    if (this.#closed) return;
    // No callback: errors surface as 'error' (ignored above); saves a closure per packet on the hot path.
    this.socket.send(msg, port, address);
  }

  onMessage(listener: DatagramListener): () => void {
    this.#events.on('message', listener);
    return () => this.#events.off('message', listener);
  }

  address() {
    return this.socket.address();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.socket.close();
  }
}
