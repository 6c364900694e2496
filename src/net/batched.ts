/**
 * A server UDP socket that reads and writes datagrams in batches (recvmmsg/sendmmsg through the native addon's
 * BatchUdp, native/src/addon.cc). One wake-up of the event loop reads up to BATCH_SIZE datagrams with one syscall and
 * calls JavaScript once; the replies the listeners send while handling that batch leave together in one sendmmsg.
 * Sends made outside a batch (timers, relay traffic from other sockets) are queued and flushed once per loop turn
 * (by the addon, after the poll phase). TURN can hand the addon forwarding rules for bound channels (routeChannel,
 * routePeer): matching datagrams are relayed natively and never reach the listeners.
 *
 * It is a DatagramTransport, so the STUN, rendezvous and TURN servers use it unchanged. Each datagram handed to a
 * listener is its own region of a slab that is never rewritten, so a listener may keep the Buffer (as with
 * node:dgram). `natpunch serve` uses it when the addon is built, unless NATPUNCH_BATCHED_IO=0.
 */
import { formatIPv6 } from '../wire/ip.js';
import { NatpunchError } from '../util/errors.js';
import type { DatagramListener, DatagramTransport, RemoteInfo } from './datagram.js';
import { addonStatus, type NativeAddon } from './native.js';

/**
 * Datagrams per recvmmsg/sendmmsg. 64 keeps one batch's JavaScript work well under a millisecond (a STUN Binding
 * costs a few µs), so a full batch does not delay timers, and amortises the syscall over enough datagrams that its
 * fixed cost (~1-2 µs) stops mattering.
 */
export const BATCH_SIZE = 64;
/**
 * The receive slab a server socket's datagrams are copied into (the addon's own default is 1 MiB). A slab stays
 * referenced until it is full, so on a socket that is busy but not flooded (a rendezvous with its peers refreshing)
 * it outlives a few young-generation scavenges and is promoted: its memory is then freed only by the next full
 * collection, and a 1 MiB slab at a time piled up as external memory and glibc heap (issue 20: the rendezvous' RSS
 * at 100k peers; bench/rendezvous.bench.ts with BENCH_RDV_MEMTRACE=1 shows the split). 128 KiB holds a full batch of
 * MTU-sized datagrams (BATCH_SIZE × 1,500 B) and any single one (the addon grows a slab to fit a batch).
 */
export const DEFAULT_SLAB_BYTES = 128 * 1024;
/** u32 values per datagram in the metadata array the addon fills (offset, length, port, family, 4 address words). */
const META_STRIDE = 8;
/** IPv4 text cache bound: formatted addresses are reused while a client keeps sending; cleared when it is full. */
const ADDRESS_CACHE_MAX = 16_384;

/** Kernel socket buffer sizes as Linux reports them after setting (it doubles the request for bookkeeping). */
export interface SocketBufferSizes {
  recv: number;
  send: number;
}

export interface BatchedBindOptions {
  /** Requested SO_RCVBUF and SO_SNDBUF. */
  bufferBytes?: number;
  /** For '::': IPv6 only (a separate 0.0.0.0 socket shares the port). Default true. */
  ipv6Only?: boolean;
  /** SO_REUSEPORT: several workers bind the same port and the kernel spreads clients by 4-tuple hash. */
  reusePort?: boolean;
  /**
   * Memory per socket, for sockets that come by the thousand (a TURN server's relay sockets, one per allocation):
   * datagrams per batch (default BATCH_SIZE), the receive slab (default DEFAULT_SLAB_BYTES) and the send arena in
   * bytes (default 1 MiB).
   */
  batchSize?: number;
  slabBytes?: number;
  arenaBytes?: number;
  addon?: NativeAddon;
}

/** Native surface used here (optional members: older addon builds lack them, and then batching is unavailable). */
interface BatchUdpNative {
  start(): void;
  stop(): void;
  close(): void;
  queue(data: Uint8Array, address: string, port: number, tail?: Uint8Array): boolean;
  flush(): number;
  stats(): BatchedStats;
  ref(): void;
  unref(): void;
  /** The TURN relay fast path (absent from addon builds before it; see routeChannel below). */
  routeChannel?(
    clientAddress: string,
    clientPort: number,
    channel: number,
    relay: BatchUdpNative,
    peerAddress: string,
    peerPort: number,
    ttlMs: number,
  ): boolean;
  unrouteChannel?(clientAddress: string, clientPort: number, channel: number): void;
  routePeer?(
    peerAddress: string,
    peerPort: number,
    server: BatchUdpNative,
    clientAddress: string,
    clientPort: number,
    channel: number,
    ttlMs: number,
  ): boolean;
  unroutePeer?(peerAddress: string, peerPort: number): void;
  takeRouted?(): [number, number];
}

/** Datagrams and payload bytes the relay fast path forwarded (BatchedUdpSocket.takeRouted). */
export interface RoutedCounts {
  packets: number;
  bytes: number;
}

export interface BatchedStats {
  received: number;
  /** recvmmsg calls that returned datagrams. received / batches is the mean batch. */
  batches: number;
  sent: number;
  /** sendmmsg calls. */
  sendCalls: number;
  /** Datagrams the kernel refused (full send buffer, no route, too large): dropped, as UDP does. */
  sendDropped: number;
  recvErrors: number;
  /** Of `received`, the datagrams the TURN relay fast path forwarded without calling JavaScript. */
  routed: number;
}

interface BatchAddon {
  udpSocket(family: 4 | 6, ipv6Only: boolean, reusePort: boolean): number;
  setSocketBuffers(fd: number, recv: number, send: number): SocketBufferSizes;
  steerToFirst(fd: number, firstByte: number): void;
  /** Absent from addons built before it (a stale native/build). */
  steerBindingsOnly?(fd: number): void;
  BatchUdp: new (
    fd: number,
    meta: Uint32Array,
    onBatch: (slab: Buffer, count: number) => void,
    batchSize: number,
    slabBytes?: number,
    arenaBytes?: number,
  ) => BatchUdpNative;
}

/**
 * Why batched I/O is off, or undefined when it can be used; with `steerBindings`, also when the addon cannot steer
 * only Binding requests over a SO_REUSEPORT group (serve --workers with the peer relay).
 */
export function batchedUnavailableReason(
  addon?: NativeAddon,
  needs: { steerBindings?: boolean } = {},
): string | undefined {
  if (process.env.NATPUNCH_BATCHED_IO === '0') return 'batched I/O is disabled by NATPUNCH_BATCHED_IO=0';
  let a: unknown = addon;
  if (!a) {
    const status = addonStatus();
    if (!status.available) return status.reason;
    a = status.addon;
  }
  if (typeof (a as Partial<BatchAddon>).BatchUdp !== 'function')
    return 'the native addon predates batched I/O; rebuild it (`npm run build:native`)';
  if (needs.steerBindings && typeof (a as Partial<BatchAddon>).steerBindingsOnly !== 'function')
    return 'the native addon predates steering for the peer relay; rebuild it (`npm run build:native`)';
  return undefined;
}

export class BatchedUdpSocket implements DatagramTransport {
  readonly fd: number;
  /** What the kernel granted for SO_RCVBUF/SO_SNDBUF (reported by `serve`). */
  readonly buffers: SocketBufferSizes;
  readonly #addon: BatchAddon;
  readonly #native: BatchUdpNative;
  readonly #meta: Uint32Array;
  readonly #listeners: DatagramListener[] = [];
  readonly #v4Text = new Map<number, string>();
  readonly #v6Bytes = new Uint8Array(16);
  readonly #v6View = new DataView(this.#v6Bytes.buffer);
  #inBatch = false;
  #flushScheduled = false;
  /** The addon flushes queued datagrams at the end of the loop turn itself (builds with the relay fast path). */
  readonly #nativeFlush: boolean;
  #closed = false;
  #local: { address: string; port: number; family: string };

  private constructor(
    addon: BatchAddon,
    fd: number,
    buffers: SocketBufferSizes,
    local: { address: string; port: number; family: string },
    options: BatchedBindOptions,
  ) {
    this.#addon = addon;
    this.fd = fd;
    this.buffers = buffers;
    this.#local = local;
    const batch = options.batchSize ?? BATCH_SIZE;
    this.#meta = new Uint32Array(batch * META_STRIDE);
    this.#native = new addon.BatchUdp(
      fd,
      this.#meta,
      (slab, count) => this.#onBatch(slab, count),
      batch,
      options.slabBytes ?? DEFAULT_SLAB_BYTES,
      options.arenaBytes,
    );
    this.#native.start();
    this.#nativeFlush = typeof this.#native.routeChannel === 'function';
  }

  /** Binds address:port. Throws errors with node-style `code` (EADDRINUSE, EADDRNOTAVAIL, EACCES) like dgram. */
  static bind(address: string, port: number, options: BatchedBindOptions = {}): BatchedUdpSocket {
    const status = options.addon ? { available: true as const, addon: options.addon } : addonStatus();
    if (!status.available) throw new Error(status.reason);
    const native = status.addon as NativeAddon & BatchAddon;
    const v6 = address.includes(':');
    const fd = native.udpSocket(v6 ? 6 : 4, v6 && (options.ipv6Only ?? true), options.reusePort ?? false);
    try {
      native.bind(fd, address, port);
      const buffers = options.bufferBytes
        ? native.setSocketBuffers(fd, options.bufferBytes, options.bufferBytes)
        : native.setSocketBuffers(fd, 0, 0);
      const local = native.getSockName(fd);
      return new BatchedUdpSocket(
        native,
        fd,
        buffers,
        {
          address: local.address,
          port: local.port,
          family: local.family,
        },
        options,
      );
    } catch (err) {
      native.close(fd);
      throw err;
    }
  }

  /** Sends datagrams whose first byte is `firstByte` to the first socket of this port's SO_REUSEPORT group. */
  steerToFirst(firstByte: number): void {
    this.#addon.steerToFirst(this.fd, firstByte);
  }

  /** Spreads only STUN Binding requests over the SO_REUSEPORT group; every other datagram goes to its first socket. */
  steerBindingsOnly(): void {
    const steer = this.#addon.steerBindingsOnly;
    if (!steer) throw new NatpunchError('ADDON_UNAVAILABLE', 'the native addon predates steerBindingsOnly: rebuild it');
    steer.call(this.#addon, this.fd);
  }

  get closed(): boolean {
    return this.#closed;
  }

  stats(): BatchedStats {
    return this.#native.stats();
  }

  #address(meta: Uint32Array, base: number): string {
    if (meta[base + 3] === 4) {
      const a = meta[base + 4]!;
      let text = this.#v4Text.get(a);
      if (text === undefined) {
        text = `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
        if (this.#v4Text.size >= ADDRESS_CACHE_MAX) this.#v4Text.clear();
        this.#v4Text.set(a, text);
      }
      return text;
    }
    for (let w = 0; w < 4; w++) this.#v6View.setUint32(w * 4, meta[base + 4 + w]!);
    return formatIPv6(this.#v6Bytes);
  }

  #onBatch(slab: Buffer, count: number): void {
    const meta = this.#meta;
    let failure: { err: unknown } | undefined;
    this.#inBatch = true;
    try {
      for (let i = 0; i < count && !this.#closed; i++) {
        const base = i * META_STRIDE;
        const offset = meta[base]!;
        const msg = slab.subarray(offset, offset + meta[base + 1]!);
        const rinfo: RemoteInfo = {
          address: this.#address(meta, base),
          port: meta[base + 2]!,
          family: meta[base + 3] === 6 ? 'IPv6' : 'IPv4',
        };
        const ls = this.#listeners;
        for (let j = 0; j < ls.length; j++) {
          try {
            ls[j]!(msg, rinfo);
          } catch (err) {
            // A listener bug must not lose the rest of the batch; the first one is rethrown after it (and surfaces as
            // an uncaught exception, as it would from a node:dgram 'message' listener).
            failure ??= { err };
          }
        }
      }
    } finally {
      this.#inBatch = false;
    }
    // The addon flushes the queued replies right after this returns.
    if (failure) throw failure.err;
  }

  send(msg: Uint8Array, port: number, address: string): void {
    if (this.#closed) return;
    // false: not a numeric address (never the case for replies, which go to addresses taken from packets).
    this.#native.queue(msg, address, port);
    this.#scheduleFlush();
  }

  /** Outside a batch, queued datagrams leave together once per event-loop turn. */
  #scheduleFlush(): void {
    if (this.#nativeFlush || this.#inBatch || this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      if (!this.#closed) this.#native.flush();
    });
  }

  /** Sends `head` followed by `tail` as one datagram, without joining them first (TURN ChannelData header + data). */
  sendParts(head: Uint8Array, tail: Uint8Array, port: number, address: string): void {
    if (this.#closed) return;
    this.#native.queue(head, address, port, tail);
    this.#scheduleFlush();
  }

  /**
   * Whether this socket can take part in the TURN relay fast path: the addon forwards a bound channel's datagrams
   * itself, both ways, without calling JavaScript (native/src/addon.cc, "TURN relay fast path").
   */
  get canRoute(): boolean {
    return this.#nativeFlush && !this.#closed;
  }

  /**
   * On the client-facing socket: ChannelData `channel` (RFC 8656 §12.4) from client:clientPort is forwarded, as its
   * data, to peer:peerPort from `relay` for the next `ttlMs` (then it is handed to listeners again). Replaces an
   * earlier rule for the same client and channel. False when the rule could not be installed (closed socket,
   * an address that is not numeric or not of the relay socket's family).
   */
  routeChannel(
    client: { address: string; port: number },
    channel: number,
    relay: BatchedUdpSocket,
    peer: { address: string; port: number },
    ttlMs: number,
  ): boolean {
    if (!this.canRoute || !relay.canRoute) return false;
    return this.#native.routeChannel!(
      client.address,
      client.port,
      channel,
      relay.#native,
      peer.address,
      peer.port,
      ttlMs,
    );
  }

  unrouteChannel(client: { address: string; port: number }, channel: number): void {
    if (this.canRoute) this.#native.unrouteChannel!(client.address, client.port, channel);
  }

  /**
   * On a relay socket: datagrams from peer:peerPort are forwarded to client:clientPort from `server` as ChannelData
   * `channel` (RFC 8656 §12.7) for the next `ttlMs`. Replaces an earlier rule for the same peer.
   */
  routePeer(
    peer: { address: string; port: number },
    server: BatchedUdpSocket,
    client: { address: string; port: number },
    channel: number,
    ttlMs: number,
  ): boolean {
    if (!this.canRoute || !server.canRoute) return false;
    return this.#native.routePeer!(
      peer.address,
      peer.port,
      server.#native,
      client.address,
      client.port,
      channel,
      ttlMs,
    );
  }

  unroutePeer(peer: { address: string; port: number }): void {
    if (this.canRoute) this.#native.unroutePeer!(peer.address, peer.port);
  }

  /** What the fast path forwarded from this socket's datagrams since the last call (then zero again). */
  takeRouted(): RoutedCounts {
    if (!this.#nativeFlush) return { packets: 0, bytes: 0 };
    const [packets, bytes] = this.#native.takeRouted!();
    return { packets, bytes };
  }

  onMessage(listener: DatagramListener): () => void {
    this.#listeners.push(listener);
    return () => {
      const i = this.#listeners.indexOf(listener);
      if (i >= 0) this.#listeners.splice(i, 1);
    };
  }

  address(): { address: string; port: number; family: string } {
    return this.#local;
  }

  /** Flushes queued datagrams, stops reading and closes the socket. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
  }
}
