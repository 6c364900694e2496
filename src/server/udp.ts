import dgram from 'node:dgram';
import { lookup as dnsLookup, type LookupOptions } from 'node:dns';
import { EventEmitter } from 'node:events';
import type { DatagramListener, DatagramTransport, RemoteInfo } from '../net/datagram.js';

/**
 * Servers only ever send to addresses taken from received packets, i.e. IP literals. dgram resolves every
 * destination through dns.lookup (an IP check plus a process.nextTick per packet); this answers literals at once
 * and leaves names to the real resolver.
 */
function literalLookup(
  hostname: string,
  options: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  const family = literalFamily(hostname);
  if (family !== 0) callback(null, hostname, family);
  else dnsLookup(hostname, options as LookupOptions, callback as never);
}

/** 6 for anything with a colon (names never have one), 4 for digits-and-dots, 0 otherwise. No regex. */
function literalFamily(host: string): 0 | 4 | 6 {
  if (host.length === 0) return 0;
  if (host.includes(':')) return 6;
  for (let i = 0; i < host.length; i++) {
    const c = host.charCodeAt(i);
    if (c !== 0x2e && (c < 0x30 || c > 0x39)) return 0;
  }
  return 4;
}

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
  static async bind(
    address: string,
    port: number,
    options: { bufferBytes?: number; ipv6Only?: boolean } = {},
  ): Promise<ServerUdpSocket> {
    const v6 = address.includes(':');
    const socket = dgram.createSocket({
      type: v6 ? 'udp6' : 'udp4',
      ipv6Only: v6 && (options.ipv6Only ?? true),
      reuseAddr: false,
      lookup: literalLookup,
    });
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
