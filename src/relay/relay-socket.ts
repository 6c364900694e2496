/**
 * The UDP socket behind one relayed transport address of a TURN allocation (RFC 8656 §7.2: the server binds one per
 * allocation and family; peers send to it, §11.5, and the server sends from it, §11.3/§12.6). With the native addon
 * it reads and writes in batches (recvmmsg/sendmmsg, src/net/batched.ts): a peer's burst costs one wake-up and one
 * JavaScript call, and what clients send to a peer during one loop turn leaves in one system call. Without the addon
 * (or with NATPUNCH_BATCHED_IO=0) it is a node:dgram socket.
 */
import dgram from 'node:dgram';
import { BatchedUdpSocket, batchedUnavailableReason } from '../net/batched.js';
import type { DatagramListener, RemoteInfo } from '../net/datagram.js';

export interface RelaySocket {
  /** Queues (batched) or sends one datagram; failures are dropped, as UDP would. `address` is an IP literal. */
  send(data: Uint8Array, port: number, address: string): void;
  onMessage(listener: DatagramListener): () => void;
  address(): { address: string; port: number; family: string };
  /** Closes the socket at once (its port is free when this returns). */
  close(): void;
}

/**
 * Per relay socket: datagrams per batch, and the receive slab and send arena. Small, because a server holds one
 * socket per allocation: 32 datagrams amortise the system call well, and 64 KiB is one maximal datagram.
 */
const RELAY_BATCH = 32;
const RELAY_SLAB_BYTES = 64 * 1024;
const RELAY_ARENA_BYTES = 64 * 1024;

/** Whether relay sockets are batched here (undefined) or why not. */
export function relayBatchingUnavailable(): string | undefined {
  return batchedUnavailableReason();
}

/** Binds address:port; null when the port is taken or the address unusable (the caller tries another port). */
export async function bindRelaySocket(
  address: string,
  port: number,
  options: { batched: boolean; bufferBytes: number },
): Promise<RelaySocket | null> {
  if (options.batched) {
    try {
      return BatchedUdpSocket.bind(address, port, {
        bufferBytes: options.bufferBytes,
        ipv6Only: true,
        batchSize: RELAY_BATCH,
        slabBytes: RELAY_SLAB_BYTES,
        arenaBytes: RELAY_ARENA_BYTES,
      });
    } catch {
      return null;
    }
  }
  return DgramRelaySocket.bind(address, port, options.bufferBytes);
}

/** The fallback: a node:dgram socket. */
class DgramRelaySocket implements RelaySocket {
  readonly #socket: dgram.Socket;

  private constructor(socket: dgram.Socket) {
    this.#socket = socket;
  }

  static bind(address: string, port: number, bufferBytes: number): Promise<DgramRelaySocket | null> {
    // Peers are always IP literals: skip dgram's per-send dns.lookup (and its nextTick) with an identity lookup.
    const s = dgram.createSocket({ type: address.includes(':') ? 'udp6' : 'udp4', lookup: literalLookup });
    return new Promise((resolve) => {
      s.once('error', () => {
        s.close();
        resolve(null);
      });
      s.bind(port, address, () => {
        s.removeAllListeners('error');
        s.on('error', noop);
        try {
          // Bursts from many peers should queue in the kernel, not drop, while the event loop is busy.
          s.setRecvBufferSize(bufferBytes);
          s.setSendBufferSize(bufferBytes);
        } catch {
          // capped by net.core.rmem_max / wmem_max: not fatal
        }
        resolve(new DgramRelaySocket(s));
      });
    });
  }

  send(data: Uint8Array, port: number, address: string): void {
    // No callback: the 'error' handler absorbs failures, and Node skips the send-completion wrap.
    this.#socket.send(data, port, address);
  }

  onMessage(listener: DatagramListener): () => void {
    const l = (msg: Buffer, rinfo: dgram.RemoteInfo) => listener(msg, rinfo as RemoteInfo);
    this.#socket.on('message', l);
    return () => this.#socket.off('message', l);
  }

  address(): { address: string; port: number; family: string } {
    return this.#socket.address();
  }

  close(): void {
    try {
      this.#socket.close();
    } catch {
      // already closed
    }
  }
}

function noop(): void {}

/** dgram `lookup` for addresses that are already IP literals (the relay never sends to names). */
function literalLookup(
  address: string,
  family: unknown,
  callback: (err: Error | null, address: string, family: number) => void,
): void {
  const fam =
    typeof family === 'number'
      ? family
      : typeof family === 'object' && family && 'family' in family
        ? Number((family as { family: unknown }).family)
        : 0;
  callback(null, address, fam || (address.includes(':') ? 6 : 4));
}
