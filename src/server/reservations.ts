/**
 * TURN port reservations shared by `serve --workers N` threads (RFC 8656 §7.2 step 5 and §14.9 RESERVATION-TOKEN).
 * An Allocate with EVEN-PORT and the R bit holds port+1; the Allocate that redeems the token comes from another client
 * port, which the kernel's SO_REUSEPORT hash may give to another worker. File descriptors belong to the process, so
 * the reserved port is held by a plain fd recorded in a SharedArrayBuffer table every worker sees; whichever worker
 * redeems the token closes that fd and binds its own relay socket to the port at once.
 */
import { loadAddon, type NativeAddon } from '../net/native.js';
import type { HeldSocket, RelayReservations } from '../relay/reservations.js';
import type { RelaySocket } from '../relay/relay-socket.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from '../wire/ip.js';

/** Reservations held at once across all workers; more are refused (the Allocate then gets 508). */
export const SHARED_RESERVATION_SLOTS = 4096;
/** Int32 fields per slot: state, token (2), fd, port, family (4|6), owner thread, address (4). */
const STRIDE = 11;
const FREE = 0;
const BUSY = 1;
const HELD = 2;

/** The table workers share: pass `buffer` to each worker and wrap it with SharedReservations there. */
export function createReservationTable(): SharedArrayBuffer {
  return new SharedArrayBuffer(SHARED_RESERVATION_SLOTS * (STRIDE * 4 + 8));
}

interface FdAddon {
  udpSocket(family: 4 | 6, ipv6Only: boolean, reusePort: boolean): number;
}

export class SharedReservations<S extends HeldSocket = RelaySocket> implements RelayReservations<S> {
  readonly #slots: Int32Array;
  readonly #expires: Float64Array;
  readonly #owner: number;
  readonly #addon: NativeAddon & FdAddon;

  /** `owner`: this thread's index (each releases its own holds on close). */
  constructor(table: SharedArrayBuffer, owner: number, addon: NativeAddon = loadAddon('shared TURN reservations')) {
    this.#slots = new Int32Array(table, 0, SHARED_RESERVATION_SLOTS * STRIDE);
    this.#expires = new Float64Array(table, SHARED_RESERVATION_SLOTS * STRIDE * 4, SHARED_RESERVATION_SLOTS);
    this.#owner = owner;
    this.#addon = addon as NativeAddon & FdAddon;
  }

  get size(): number {
    let n = 0;
    for (let i = 0; i < SHARED_RESERVATION_SLOTS; i++) if (Atomics.load(this.#slots, i * STRIDE) === HELD) n++;
    return n;
  }

  hold(token: string, socket: S, expires: number): boolean {
    const { address, port, family } = socket.address();
    const v6 = family === 'IPv6';
    const bytes = v6 ? parseIPv6(address) : parseIPv4(address);
    // Swap the relay socket for a bare fd on the same port (both kinds close their fd synchronously in close()).
    socket.close();
    if (!bytes) return false;
    let fd: number;
    try {
      fd = this.#addon.udpSocket(v6 ? 6 : 4, v6, false);
    } catch {
      return false;
    }
    try {
      this.#addon.bind(fd, address, port);
    } catch {
      this.#addon.close(fd);
      return false;
    }
    for (let i = 0; i < SHARED_RESERVATION_SLOTS; i++) {
      const b = i * STRIDE;
      if (Atomics.compareExchange(this.#slots, b, FREE, BUSY) !== FREE) continue;
      this.#slots[b + 1] = parseInt(token.slice(0, 8), 16) | 0;
      this.#slots[b + 2] = parseInt(token.slice(8, 16), 16) | 0;
      this.#slots[b + 3] = fd;
      this.#slots[b + 4] = port;
      this.#slots[b + 5] = v6 ? 6 : 4;
      this.#slots[b + 6] = this.#owner;
      const padded = new Uint8Array(16);
      padded.set(bytes);
      const view = new DataView(padded.buffer);
      for (let w = 0; w < 4; w++) this.#slots[b + 7 + w] = view.getInt32(w * 4);
      this.#expires[i] = expires;
      Atomics.store(this.#slots, b, HELD);
      return true;
    }
    this.#addon.close(fd);
    return false;
  }

  async take(
    token: string,
    now: number,
    rebind: (address: string, port: number) => Promise<S | null>,
  ): Promise<S | null> {
    if (!/^[0-9a-f]{16}$/.test(token)) return null;
    const hi = parseInt(token.slice(0, 8), 16) | 0;
    const lo = parseInt(token.slice(8, 16), 16) | 0;
    for (let i = 0; i < SHARED_RESERVATION_SLOTS; i++) {
      const b = i * STRIDE;
      if (Atomics.load(this.#slots, b) !== HELD || this.#slots[b + 1] !== hi || this.#slots[b + 2] !== lo) continue;
      if (Atomics.compareExchange(this.#slots, b, HELD, BUSY) !== HELD) return null; // redeemed concurrently
      const fd = this.#slots[b + 3]!;
      const port = this.#slots[b + 4]!;
      const v6 = this.#slots[b + 5] === 6;
      const bytes = new Uint8Array(16);
      const view = new DataView(bytes.buffer);
      for (let w = 0; w < 4; w++) view.setInt32(w * 4, this.#slots[b + 7 + w]!);
      const expired = this.#expires[i]! < now;
      this.#addon.close(fd);
      Atomics.store(this.#slots, b, FREE);
      if (expired) return null;
      return rebind(v6 ? formatIPv6(bytes) : formatIPv4(bytes), port);
    }
    return null;
  }

  sweep(now: number): void {
    this.#release((i) => this.#expires[i]! < now);
  }

  close(): void {
    this.#release((i) => this.#slots[i * STRIDE + 6] === this.#owner);
  }

  #release(which: (slot: number) => boolean): void {
    for (let i = 0; i < SHARED_RESERVATION_SLOTS; i++) {
      const b = i * STRIDE;
      if (Atomics.load(this.#slots, b) !== HELD || !which(i)) continue;
      if (Atomics.compareExchange(this.#slots, b, HELD, BUSY) !== HELD) continue;
      this.#addon.close(this.#slots[b + 3]!);
      Atomics.store(this.#slots, b, FREE);
    }
  }
}
