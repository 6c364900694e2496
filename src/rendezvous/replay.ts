/**
 * The rendezvous' replay cache, sized to its window.
 *
 * A signed message (REGISTER, CONNECT, UNREGISTER, SEQ_OFFER) is accepted while its timestamp is within ±window of
 * the server clock, so it could be replayed for up to 2 × window after it was made. The cache therefore remembers
 * EVERY admitted message until its own timestamp + window has passed (after that the window check refuses it), not
 * the last N messages: a fixed-size cache evicting the oldest could be outrun by sending more than N signed
 * messages inside one window (65,536 at ~1,100/s with a 30 s window), after which a captured CONNECT replays.
 *
 * Expiry is time-bucketed: each entry is listed in the bucket of the moment it may be forgotten
 * (floor(expiresAt / bucketMs)); sweep() drops whole buckets whose time has passed, so expiry costs O(entries
 * expired), lookups one Map access. Memory is bounded by the rate at which signed messages are admitted (per-IP
 * token buckets upstream) times the entry lifetime. As a last resort against floods from very many addresses,
 * `maxEntries` caps it: when full, `add` refuses (the server answers SERVER_FULL) instead of forgetting anything, so
 * overload can cost availability but never replay protection.
 */
export const DEFAULT_REPLAY_BUCKET_MS = 5_000;
/** Hard cap (fail closed): ~500k admitted signed messages inside one entry lifetime, ~7,500/s sustained. */
export const DEFAULT_MAX_REPLAY_ENTRIES = 500_000;

export class ReplayCache<E> {
  readonly #bucketMs: number;
  readonly #max: number;
  readonly #entries = new Map<string, E>();
  /** bucket index → keys that may be forgotten once the bucket's time has passed. */
  readonly #buckets = new Map<number, string[]>();

  constructor(options: { bucketMs?: number; maxEntries?: number } = {}) {
    this.#bucketMs = Math.max(1, options.bucketMs ?? DEFAULT_REPLAY_BUCKET_MS);
    this.#max = options.maxEntries ?? DEFAULT_MAX_REPLAY_ENTRIES;
  }

  get size(): number {
    return this.#entries.size;
  }

  get full(): boolean {
    return this.#entries.size >= this.#max;
  }

  get(key: string): E | undefined {
    return this.#entries.get(key);
  }

  /**
   * Remembers `key` until `expiresAt` (ms since the epoch) has passed. Returns false, remembering nothing, when the
   * cache is full (the caller refuses the message) or the key is already known.
   */
  add(key: string, entry: E, expiresAt: number): boolean {
    if (this.#entries.has(key) || this.full) return false;
    this.#entries.set(key, entry);
    // Listed in the bucket whose start is after expiresAt, so nothing is forgotten early.
    const b = Math.floor(expiresAt / this.#bucketMs) + 1;
    const list = this.#buckets.get(b);
    if (list) list.push(key);
    else this.#buckets.set(b, [key]);
    return true;
  }

  /** Replaces the entry of a key already remembered (its expiry stays); false when it is not. */
  replace(key: string, entry: E): boolean {
    if (!this.#entries.has(key)) return false;
    this.#entries.set(key, entry);
    return true;
  }

  /**
   * Forgets `key` now (something else guards it from here on). `expiresAt` must be what it was added with: its
   * bucket is searched from the end, where an entry added moments ago sits, so this costs what was added since.
   */
  delete(key: string, expiresAt: number): boolean {
    if (!this.#entries.delete(key)) return false;
    const b = Math.floor(expiresAt / this.#bucketMs) + 1;
    const list = this.#buckets.get(b);
    const i = list ? list.lastIndexOf(key) : -1;
    if (i >= 0) {
      list!.splice(i, 1);
      if (list!.length === 0) this.#buckets.delete(b);
    }
    return true;
  }

  /** Forgets every entry whose expiry has passed by `now`. */
  sweep(now: number): void {
    const current = Math.floor(now / this.#bucketMs);
    for (const [b, keys] of this.#buckets) {
      if (b > current) continue;
      for (const k of keys) this.#entries.delete(k);
      this.#buckets.delete(b);
    }
  }

  /** How long until the oldest bucket is dropped (for a retry-after when full). */
  msUntilRoom(now: number): number {
    let oldest = Infinity;
    for (const b of this.#buckets.keys()) oldest = Math.min(oldest, b);
    return oldest === Infinity ? 0 : Math.max(0, oldest * this.#bucketMs - now);
  }

  clear(): void {
    this.#entries.clear();
    this.#buckets.clear();
  }
}
