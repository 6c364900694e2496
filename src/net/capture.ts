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
import { NatpunchError } from '../util/errors.js';
import { loadAddon, openPrivilegedFd, POLL_READABLE, type NativeAddon } from './native.js';
import { WatchedFd } from './watched-fd.js';

export type CaptureListener = (packet: Buffer, outgoing: boolean) => void;

type CapturedPacket = { data: Buffer; outgoing: boolean };

export class PacketCapture extends WatchedFd<CapturedPacket> {
  private constructor(addon: NativeAddon, fd: number) {
    super(addon, fd);
    this.watcher.start(POLL_READABLE);
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

  /** Registers a listener for IPv4 packets (with their IP header); returns the function that removes it. */
  onPacket(listener: CaptureListener): () => void {
    this.events.on('packet', listener);
    return () => this.events.off('packet', listener);
  }

  protected receive(): CapturedPacket | null {
    return this.addon.recvPacket!(this.fd, 65535);
  }

  protected deliver(msg: CapturedPacket): void {
    this.events.emit('packet', msg.data, msg.outgoing);
  }
}
