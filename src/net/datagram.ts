import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';

export interface RemoteInfo {
  address: string;
  port: number;
  family: 'IPv4' | 'IPv6';
}

export type DatagramListener = (msg: Buffer, rinfo: RemoteInfo) => void;

/**
 * The UDP socket abstraction every protocol layer shares. STUN transactions, rendezvous messages, punching probes
 * and the encrypted session all run over ONE socket per peer (the mapping the NAT made for it is what matters),
 * so protocol code never owns the socket: it is handed a DatagramTransport and registers a listener.
 * A listener returns nothing; each one looks at the first byte (RFC 7983 style) and ignores what is not its own.
 */
export interface DatagramTransport {
  send(msg: Uint8Array, port: number, address: string): void;
  onMessage(listener: DatagramListener): () => void;
  address(): { address: string; port: number; family: string };
  readonly closed: boolean;
}

/** A DatagramTransport over a plain node:dgram socket. */
export class NodeDatagramTransport implements DatagramTransport {
  readonly socket: dgram.Socket;
  #events = new EventEmitter();
  #closed = false;
  #connected = false;

  private constructor(socket: dgram.Socket) {
    this.socket = socket;
    this.#events.setMaxListeners(0);
    socket.on('message', (msg, rinfo) => this.#events.emit('message', msg, rinfo as RemoteInfo));
    // ICMP errors surface as 'error' on connected sockets only (onError); an unconnected socket must never crash the
    // process.
    socket.on('error', (err) => this.#events.emit('socket-error', err));
    socket.on('close', () => {
      this.#closed = true;
    });
  }

  static async bind(
    options: { port?: number; address?: string; type?: 'udp4' | 'udp6' } = {},
  ): Promise<NodeDatagramTransport> {
    const type = options.type ?? (options.address?.includes(':') ? 'udp6' : 'udp4');
    const socket = dgram.createSocket({ type, reuseAddr: false });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(options.port ?? 0, options.address, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    return new NodeDatagramTransport(socket);
  }

  /**
   * A socket connect()ed to one peer, for one-server clients (`natpunch stun`): the kernel then reports ICMP port
   * unreachable as ECONNREFUSED (onError), so a closed port fails at once instead of after every retransmission.
   * It only exchanges datagrams with that peer; send()'s address is ignored.
   */
  static async connect(
    peer: { address: string; port: number },
    options: { address?: string } = {},
  ): Promise<NodeDatagramTransport> {
    const transport = await NodeDatagramTransport.bind({
      type: peer.address.includes(':') ? 'udp6' : 'udp4',
      ...(options.address ? { address: options.address } : {}),
    });
    await new Promise<void>((resolve, reject) => {
      transport.socket.once('error', reject);
      transport.socket.connect(peer.port, peer.address, () => {
        transport.socket.off('error', reject);
        resolve();
      });
    });
    transport.#connected = true;
    return transport;
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(msg: Uint8Array, port: number, address: string): void {
    if (this.#closed) return;
    // Send errors (EHOSTUNREACH, ENETUNREACH) are expected while probing; callers learn of loss by timeouts.
    if (this.#connected) this.socket.send(msg, () => {});
    else this.socket.send(msg, port, address, () => {});
  }

  onMessage(listener: DatagramListener): () => void {
    this.#events.on('message', listener);
    return () => this.#events.off('message', listener);
  }

  /** Socket errors: on a connected socket, ICMP errors (ECONNREFUSED for port unreachable). */
  onError(listener: (err: NodeJS.ErrnoException) => void): () => void {
    this.#events.on('socket-error', listener);
    return () => this.#events.off('socket-error', listener);
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
