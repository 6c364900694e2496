/**
 * Where a TURN server keeps the relay ports it reserved with a RESERVATION-TOKEN (RFC 8656 §7.2 step 5: EVEN-PORT with
 * the R bit holds port+1 for a later Allocate that carries the token, §14.9). The default keeps the bound sockets in
 * this server. `serve --workers N` replaces it with one the worker threads share (src/server/reservations.ts): the
 * Allocate that redeems a token usually comes from another client port, which the kernel may hash to another worker.
 */
import type { RelaySocket } from './relay-socket.js';

/** What a reservation holds: a bound socket it can ask for its address and close. */
export interface HeldSocket {
  address(): { address: string; port: number; family: string };
  close(): void;
}

export interface RelayReservations<S extends HeldSocket = RelaySocket> {
  readonly size: number;
  /** Holds `socket` (bound to the reserved port) for `token` (hex) until `expires` (ms). false: could not hold it. */
  hold(token: string, socket: S, expires: number): boolean;
  /**
   * Redeems `token`: the socket bound to the reserved port, now owned by the caller, or null (unknown, expired or
   * already redeemed). `rebind` binds a fresh socket to address:port, for stores that cannot hand a socket across.
   */
  take(token: string, now: number, rebind: (address: string, port: number) => Promise<S | null>): Promise<S | null>;
  /** Releases what expired before `now`. */
  sweep(now: number): void;
  /** Releases everything this server holds. */
  close(): void;
}

/** The reservations of one TurnServer, in memory. */
export class LocalReservations<S extends HeldSocket = RelaySocket> implements RelayReservations<S> {
  readonly #held = new Map<string, { socket: S; expires: number }>();

  get size(): number {
    return this.#held.size;
  }

  hold(token: string, socket: S, expires: number): boolean {
    this.#held.set(token, { socket, expires });
    return true;
  }

  async take(token: string, now: number): Promise<S | null> {
    const r = this.#held.get(token);
    if (!r) return null;
    this.#held.delete(token);
    if (r.expires < now) {
      r.socket.close();
      return null;
    }
    return r.socket;
  }

  sweep(now: number): void {
    for (const [k, r] of this.#held) {
      if (r.expires < now) {
        r.socket.close();
        this.#held.delete(k);
      }
    }
  }

  close(): void {
    for (const r of this.#held.values()) r.socket.close();
    this.#held.clear();
  }
}
