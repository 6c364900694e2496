/**
 * Loads natpunch's optional N-API addon (native/: TCP sockets with SO_REUSEPORT, non-blocking connect, TTL control,
 * raw sockets). Loading is lazy: nothing native is touched until a TCP/ICMP feature asks for it, so natpunch works
 * without the addon (no TCP hole punching, no raw ICMP) and says why through NatpunchError('ADDON_UNAVAILABLE').
 *
 * `NATPUNCH_NO_ADDON=1` forces the addon off (tests of the fallback paths). `NATPUNCH_ADDON_PATH` points at a
 * prebuilt natpunch.node elsewhere. Without either: native/build/Release (built on install or by hand), else the
 * prebuilt binary the package ships for this platform.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NatpunchError } from '../util/errors.js';

/** Address as the addon reports it (getsockname, getpeername, recvfrom). */
export interface NativeAddress {
  address: string;
  port: number;
  family: 'IPv4' | 'IPv6' | 'unknown';
}

/** A uv_poll_t on Node's loop. `events`: 1 readable, 2 writable. The watcher never closes the fd it watches. */
export interface NativeFdWatcher {
  start(events: number): void;
  stop(): void;
  close(): void;
  ref(): void;
  unref(): void;
}

/** The addon's surface (native/src/addon.cc). All calls are synchronous and non-blocking; errors carry `code`. */
export interface NativeAddon {
  tcpSocket(family: 4 | 6): number;
  rawSocket(family: 4 | 6, protocol: number, headerIncluded: boolean): number;
  /**
   * AF_PACKET capture of IPv4 packets on one interface (0: all), both directions; with tcpPort only TCP segments
   * from or to that port (a BPF filter in the kernel). Optional: older builds lack it.
   */
  packetSocket?(ifindex: number, tcpPort?: number): number;
  /** null when nothing is queued. `outgoing`: the packet was sent by this host (PACKET_OUTGOING). */
  recvPacket?(fd: number, maxBytes?: number): { data: Buffer; outgoing: boolean; ifindex: number } | null;
  bind(fd: number, address: string, port: number): void;
  listen(fd: number, backlog: number): void;
  /** true: connected at once; false: in progress (wait for writable, then socketError). */
  connect(fd: number, address: string, port: number): boolean;
  socketError(fd: number): string | null;
  getSockName(fd: number): NativeAddress;
  getPeerName(fd: number): NativeAddress | null;
  setTtl(fd: number, ttl: number): void;
  getTtl(fd: number): number;
  /** Bytes sent, or -1 when the send buffer is full. */
  sendTo(fd: number, data: Uint8Array, address: string, port?: number): number;
  /** null when nothing is queued. */
  recvFrom(fd: number, maxBytes?: number): (NativeAddress & { data: Buffer }) | null;
  close(fd: number): void;
  FdWatcher: new (fd: number, callback: (status: number, events: number) => void) => NativeFdWatcher;
  abiVersion: number;
}

export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

const ADDON_FILE = join('native', 'build', 'Release', 'natpunch.node');
/** Shipped in the npm package for the platform it was packed on (scripts/prebuild-native.mjs). */
const PREBUILT_FILE = join('native', 'prebuilds', `${process.platform}-${process.arch}`, 'natpunch.node');

/** The addon built here wins over the packed prebuilt one (a local build matches this machine's libc). */
function addonFile(root: string): string {
  const built = join(root, ADDON_FILE);
  const prebuilt = join(root, PREBUILT_FILE);
  return !existsSync(built) && existsSync(prebuilt) ? prebuilt : built;
}

/** Walks up from this module (src/net or dist/src/net) to the package root holding native/. */
function findPackageRoot(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return undefined;
}

export type AddonStatus = { available: true; addon: NativeAddon } | { available: false; reason: string };

/**
 * Tries to load the addon and reports why not. Node's module cache keeps the loaded addon, so calling this again is
 * cheap and natpunch keeps no state of its own here.
 */
export function addonStatus(): AddonStatus {
  if (process.env.NATPUNCH_NO_ADDON === '1') {
    return { available: false, reason: 'the native addon is disabled by NATPUNCH_NO_ADDON=1' };
  }
  if (process.platform !== 'linux') {
    return { available: false, reason: `the native addon supports Linux only (this is ${process.platform})` };
  }
  const root = findPackageRoot();
  const file = process.env.NATPUNCH_ADDON_PATH ?? (root ? addonFile(root) : undefined);
  if (!file || !existsSync(file)) {
    let detail = '';
    if (root) {
      try {
        detail = `: ${readFileSync(join(root, 'native', 'build-error.txt'), 'utf8').split('\n')[0]}`;
      } catch {
        detail = '';
      }
    }
    return {
      available: false,
      reason: `the native addon is not built${detail} (needs python3, make, g++ and the Node headers; run \`npm run build:native\`)`,
    };
  }
  try {
    const require = createRequire(import.meta.url);
    const addon = require(file) as NativeAddon;
    if (addon.abiVersion !== 1)
      return { available: false, reason: `native addon at ${file} is an incompatible build; rebuild it` };
    return { available: true, addon };
  } catch (err) {
    return { available: false, reason: `the native addon failed to load: ${(err as Error).message}` };
  }
}

/** The addon, or NatpunchError('ADDON_UNAVAILABLE') saying why it is missing and what it disables. */
export function loadAddon(feature = 'TCP hole punching and raw ICMP'): NativeAddon {
  const status = addonStatus();
  if (status.available) return status.addon;
  throw new NatpunchError('ADDON_UNAVAILABLE', `${feature} unavailable: ${status.reason}`, {
    details: { reason: status.reason },
  });
}

/** True when the addon loads (for callers choosing strategies; `auto` falls back to UDP when false). */
export function addonAvailable(): boolean {
  return addonStatus().available;
}

/** Packets handled per readable event on a raw or packet socket, so a flood cannot starve the event loop. */
export const MAX_PACKETS_PER_WAKEUP = 256;

/**
 * Opens a socket that needs CAP_NET_RAW: permission errors become NOT_ROOT (`notRoot` says what to do), others SOCKET.
 */
export function openPrivilegedFd(open: () => number, what: string, notRoot: string): number {
  try {
    return open();
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EPERM' || code === 'EACCES') throw new NatpunchError('NOT_ROOT', notRoot, { cause: err });
    throw new NatpunchError('SOCKET', `cannot open a ${what}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Drains a readable fd: reads until it is empty, closed, or MAX_PACKETS_PER_WAKEUP were handled. A read error (e.g.
 * ENOBUFS) drops that packet; the next readable event continues.
 */
export function drainReadable<T>(
  read: () => T | null | undefined,
  deliver: (packet: T) => void,
  isClosed: () => boolean,
): void {
  for (let i = 0; i < MAX_PACKETS_PER_WAKEUP && !isClosed(); i++) {
    let packet: T | null | undefined;
    try {
      packet = read();
    } catch {
      return;
    }
    if (!packet) return;
    deliver(packet);
  }
}
