/**
 * Packet capture (AF_PACKET, SOCK_DGRAM, ETH_P_IP) through the native addon: the IPv4 packets of this host in both
 * directions, without link-layer header. Needs CAP_NET_RAW.
 *
 * Why a packet socket: the sequence-number techniques (STUNT #1, NATBlaster) need the initial sequence number and
 * options of the SYN the KERNEL sent for a socket it keeps owning (in SYN_SENT, so its SYN-ACK completes the
 * connection). Linux offers no socket option that returns the ISN, and an IPv4 raw socket only receives inbound
 * packets (raw(7)); a packet socket sees our outgoing SYN as PACKET_OUTGOING. Open it only for the short window
 * around a connect: it sees every IPv4 packet of the namespace.
 */
import { EventEmitter } from 'node:events';
import { NatpunchError } from '../util/errors.js';
import {
  drainReadable,
  loadAddon,
  openPrivilegedFd,
  POLL_READABLE,
  type NativeAddon,
  type NativeFdWatcher,
} from './native.js';

export type CaptureListener = (packet: Buffer, outgoing: boolean) => void;

export class PacketCapture {
  readonly fd: number;
  #addon: NativeAddon;
  #watcher: NativeFdWatcher;
  #events = new EventEmitter();
  #closed = false;

  private constructor(addon: NativeAddon, fd: number) {
    this.#addon = addon;
    this.fd = fd;
    this.#events.setMaxListeners(0);
    this.#watcher = new addon.FdWatcher(fd, (status) => this.#onReadable(status));
    this.#watcher.start(POLL_READABLE);
  }

  /**
   * Opens a capture on interface `ifindex` (0: all); `tcpPort` keeps only TCP segments from or to that port (filtered
   * in the kernel). NOT_ROOT without CAP_NET_RAW; ADDON_UNAVAILABLE without the addon.
   */
  static open(options: { ifindex?: number; tcpPort?: number; addon?: NativeAddon } = {}): PacketCapture {
    const addon = options.addon ?? loadAddon('packet capture');
    if (!addon.packetSocket || !addon.recvPacket) {
      throw new NatpunchError(
        'ADDON_UNAVAILABLE',
        'the native addon predates packet capture; rebuild it (`npm run build:native`)',
      );
    }
    const fd = openPrivilegedFd(
      () => addon.packetSocket!(options.ifindex ?? 0, options.tcpPort ?? 0),
      'packet socket',
      'packet capture needs root or CAP_NET_RAW',
    );
    return new PacketCapture(addon, fd);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Registers a listener for IPv4 packets (with their IP header); returns the function that removes it. */
  onPacket(listener: CaptureListener): () => void {
    this.#events.on('packet', listener);
    return () => this.#events.off('packet', listener);
  }

  unref(): this {
    this.#watcher.unref();
    return this;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    this.#events.removeAllListeners();
    try {
      this.#addon.close(this.fd);
    } catch {
      // already gone
    }
  }

  #onReadable(status: number): void {
    if (this.#closed || status < 0) return;
    drainReadable(
      () => this.#addon.recvPacket!(this.fd, 65535),
      (msg) => this.#events.emit('packet', msg.data, msg.outgoing),
      () => this.#closed,
    );
  }
}
