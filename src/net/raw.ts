/**
 * Raw IP sockets through the native addon (SOCK_RAW: root or CAP_NET_RAW). Used for ICMP: reading Time Exceeded
 * during TTL discovery, and the ICMP hole punching of pwnat. Receiving runs on Node's event loop (a uv_poll_t in
 * the addon); each readable event drains the socket, so nothing blocks.
 *
 * On an IPv4 raw socket the kernel delivers every packet of the protocol with its IP header (raw(7)); decode them
 * with src/wire/icmp.ts. Sends carry only the ICMP message unless `headerIncluded` (IP_HDRINCL) is set.
 */
import { NatpunchError } from '../util/errors.js';
import { loadAddon, openPrivilegedFd, POLL_READABLE, type NativeAddon, type NativeAddress } from './native.js';
import { WatchedFd } from './watched-fd.js';

/** IANA protocol numbers. */
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_RAW = 255;

export interface RawRemoteInfo {
  address: string;
  family: 'IPv4' | 'IPv6' | 'unknown';
}

export type RawListener = (packet: Buffer, rinfo: RawRemoteInfo) => void;

export interface RawSocketOptions {
  /** IP protocol number; default ICMP. */
  protocol?: number;
  family?: 4 | 6;
  /** IP_HDRINCL: sends carry their own IPv4 header. */
  headerIncluded?: boolean;
  addon?: NativeAddon;
}

type RawPacket = NativeAddress & { data: Buffer };

export class RawSocket extends WatchedFd<RawPacket> {
  readonly protocol: number;
  #listening = 0;

  private constructor(addon: NativeAddon, fd: number, protocol: number) {
    super(addon, fd);
    this.protocol = protocol;
  }

  /** Opens a raw socket. Throws NOT_ROOT without CAP_NET_RAW, ADDON_UNAVAILABLE without the addon. */
  static open(options: RawSocketOptions = {}): RawSocket {
    const addon = options.addon ?? loadAddon('raw sockets');
    const protocol = options.protocol ?? IPPROTO_ICMP;
    const fd = openPrivilegedFd(
      () => addon.rawSocket(options.family ?? 4, protocol, options.headerIncluded ?? false),
      'raw socket',
      'raw sockets need root or CAP_NET_RAW (run as root, or `setcap cap_net_raw+ep $(which node)`)',
    );
    return new RawSocket(addon, fd, protocol);
  }

  /** Registers a listener for received packets (IPv4: with IP header); returns the function that removes it. */
  onMessage(listener: RawListener): () => void {
    this.events.on('message', listener);
    if (this.#listening++ === 0 && !this.closed) this.watcher.start(POLL_READABLE);
    return () => {
      if (!this.events.listeners('message').includes(listener)) return;
      this.events.off('message', listener);
      if (--this.#listening === 0 && !this.closed) this.watcher.stop();
    };
  }

  /** Sends one packet to `address`. Returns false when the socket buffer is full (the packet was dropped). */
  send(packet: Uint8Array, address: string): boolean {
    if (this.closed) throw new NatpunchError('SOCKET_CLOSED', 'raw socket is closed');
    try {
      return this.addon.sendTo(this.fd, packet, address, 0) >= 0;
    } catch (err) {
      throw new NatpunchError('SOCKET', `raw send to ${address} failed: ${(err as Error).message}`, {
        cause: err,
        details: { errno: (err as { code?: string }).code },
      });
    }
  }

  /** Sets the TTL of packets this socket sends (without IP_HDRINCL). */
  setTtl(ttl: number): void {
    this.addon.setTtl(this.fd, ttl);
  }

  protected receive(): RawPacket | null {
    return this.addon.recvFrom(this.fd, 65535);
  }

  protected deliver(msg: RawPacket): void {
    this.events.emit('message', msg.data, { address: msg.address, family: msg.family } satisfies RawRemoteInfo);
  }
}
