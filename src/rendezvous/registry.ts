import type { Candidate } from '../traversal/candidate.js';
import type { Endpoint } from '../wire/rendezvous.js';
import { PackedRecordMap } from './record.js';

/** What the server knows about one registered peer: only its key, name and addresses. */
export interface PeerRecord {
  publicKey: Buffer;
  name?: string;
  /** The peer's own candidates (host, mapped, predicted, relay ...), as signed in its REGISTER. */
  candidates: Candidate[];
  /** The source address the server saw the REGISTER come from (the server-reflexive address). */
  reflexive: Endpoint;
  /** Reachable from anywhere: flagged by the peer, or its reflexive address is one of its host candidates. */
  reachable: boolean;
  registeredAt: number;
  expiresAt: number;
  /** The newest signed timestamp accepted for this key; older REGISTERs are stale. */
  lastTimestamp: number;
  /** RTT between the peer and the server in ms, when known. */
  rttMs?: number;
  /** The server node the peer registered with (it holds the peer's channel; several nodes share one registry). */
  node?: string;
  /** The peer's NAT type as it last reported it (outcome reports), for operators; never used for decisions. */
  natType?: string;
}

export type PutResult = 'ok' | 'name-taken' | 'full';

/** Who a name belongs to: the key that last held it, until `until` (ms since the epoch). */
export interface NameReservation {
  publicKey: Buffer;
  until: number;
  /** The holder is registered under the name right now. */
  live: boolean;
}

/**
 * Storage for registrations and name reservations. Small on purpose so another backend fits (memory by default,
 * Redis for several server nodes, src/rendezvous/redis-registry.ts).
 *
 * Names are bound to keys (issue 18): a name belongs to the key that registered it while that registration lives,
 * and stays reserved for that key for `nameHoldMs` after it unregisters, expires or takes another name. Only the
 * key itself can release it earlier (a signed RELEASE_NAME, checked by the server before it calls `release`).
 * `put` must claim the name atomically (SET NX semantics across nodes). `expire` returns the keys it removed.
 */
export interface Registry {
  /**
   * True when a record stays until it expires or is deleted through this process (an in-process registry), so the
   * server may let a record's lastTimestamp stand in for its REGISTER's replay-cache entry. A shared store can lose
   * records behind the server's back (a restarted Redis), so it leaves this unset and the entries are kept.
   */
  readonly recordsGuardReplays?: boolean;
  get(publicKey: Buffer, now: number): Promise<PeerRecord | undefined>;
  getByName(name: string, now: number): Promise<PeerRecord | undefined>;
  /**
   * `keyId`, when given, is the record's key as a one-byte string (compact.ts keyId()): an in-process registry may
   * keep that very string as its table key, so the server's own per-key table and the registry share one copy.
   */
  put(record: PeerRecord, now: number, keyId?: string): Promise<PutResult>;
  /** Withdraws a registration; its name stays reserved for the key (nameHoldMs). */
  delete(publicKey: Buffer, now?: number): Promise<boolean>;
  /** Removes records with expiresAt <= now; returns their keys. Their names stay reserved. */
  expire(now: number): Promise<Buffer[]>;
  /** Live registrations. */
  size(now?: number): Promise<number>;
  /** Who holds or reserves `name`, if anyone. */
  reservation(name: string, now: number): Promise<NameReservation | undefined>;
  /**
   * Drops `name`'s reservation if `publicKey` holds it (and the name from that key's live record): the name is free
   * at once. The caller has checked the key's signature. Returns whether anything was released.
   */
  release(name: string, publicKey: Buffer, now: number): Promise<boolean>;
  /** Up to `limit` live registrations, those whose name or key (hex) contains `query` when given (dashboards). */
  list(now: number, options?: { limit?: number; query?: string }): Promise<PeerRecord[]>;
  /** Remembers a peer's self-reported NAT type for operators (outcome reports). Best effort. */
  noteNatType(publicKey: Buffer, natType: string, now: number): Promise<void>;
  /** Releases connections (Redis); the memory registry has nothing to release. */
  close?(): Promise<void>;
}

export const DEFAULT_MAX_PEERS = 100_000;
/** Default time a name stays reserved for its last key after it unregisters or expires (issue 18: 30 days). */
export const DEFAULT_NAME_HOLD_MS = 30 * 24 * 3600_000;
/** Reserved names kept in memory at most (each ~150 bytes): beyond this the oldest reservations are dropped. */
export const DEFAULT_MAX_RESERVATIONS = 1_000_000;
/** Registry.list() returns at most this many records by default. */
export const DEFAULT_LIST_LIMIT = 500;

export interface RegistryOptions {
  maxPeers?: number;
  /** How long a name stays reserved for its last key after it unregisters or expires. Default 30 days; 0: not at all. */
  nameHoldMs?: number;
}

export function matchesQuery(r: PeerRecord, query: string | undefined): boolean {
  if (!query) return true;
  const q = query.toLowerCase();
  return (r.name?.includes(q) ?? false) || r.publicKey.toString('hex').includes(q);
}

/** The default registry: maps in this process, bounded by `maxPeers` (and reservations by DEFAULT_MAX_RESERVATIONS). */
export class MemoryRegistry implements Registry {
  readonly recordsGuardReplays = true;
  readonly maxPeers: number;
  readonly nameHoldMs: number;
  /**
   * Records packed into one flat string each (record.ts), keyed by the public key's 32 bytes as a one-byte string
   * (48 bytes on the heap; its hex form takes 80).
   */
  #byKey = new PackedRecordMap<PeerRecord>();
  /** name → the key (32 bytes as a one-byte string) it belongs to and until when (a live holder's until is its expiry + the hold). */
  #names = new Map<string, { id: string; until: number }>();
  #maxReservations: number;

  constructor(options: RegistryOptions & { maxReservations?: number } = {}) {
    this.maxPeers = options.maxPeers ?? DEFAULT_MAX_PEERS;
    this.nameHoldMs = options.nameHoldMs ?? DEFAULT_NAME_HOLD_MS;
    this.#maxReservations = options.maxReservations ?? DEFAULT_MAX_RESERVATIONS;
  }

  async get(publicKey: Buffer, now: number): Promise<PeerRecord | undefined> {
    const r = this.#byKey.get(publicKey.toString('latin1'));
    return r && r.expiresAt > now ? r : undefined;
  }

  async getByName(name: string, now: number): Promise<PeerRecord | undefined> {
    const n = this.#names.get(name);
    const r = n === undefined ? undefined : this.#byKey.get(n.id);
    return r && r.expiresAt > now && r.name === name ? r : undefined;
  }

  async put(record: PeerRecord, now: number, keyId?: string): Promise<PutResult> {
    const id = keyId ?? record.publicKey.toString('latin1');
    if (record.name !== undefined) {
      const held = this.#names.get(record.name);
      if (held && held.id !== id && held.until > now) return 'name-taken';
    }
    const previous = this.#byKey.get(id);
    if (!previous && this.#byKey.size >= this.maxPeers) {
      await this.expire(now);
      if (this.#byKey.size >= this.maxPeers) return 'full';
    }
    // A name the key leaves stays reserved for it (held from now on).
    if (previous?.name !== undefined && previous.name !== record.name)
      this.#hold(previous.name, id, now + this.nameHoldMs);
    const carried = previous?.natType;
    this.#byKey.set(
      id,
      carried !== undefined && record.natType === undefined ? { ...record, natType: carried } : record,
    );
    if (record.name !== undefined) this.#hold(record.name, id, record.expiresAt + this.nameHoldMs);
    return 'ok';
  }

  async delete(publicKey: Buffer, now = Date.now()): Promise<boolean> {
    const id = publicKey.toString('latin1');
    const r = this.#byKey.get(id);
    if (!r) return false;
    this.#byKey.delete(id);
    if (r.name !== undefined) this.#hold(r.name, id, now + this.nameHoldMs);
    return true;
  }

  async expire(now: number): Promise<Buffer[]> {
    const gone: Buffer[] = [];
    for (const [id, expiresAt] of this.#byKey.summaries()) {
      if (expiresAt <= now) {
        this.#byKey.delete(id);
        gone.push(Buffer.from(id, 'latin1'));
      }
    }
    for (const [name, n] of this.#names) if (n.until <= now) this.#names.delete(name);
    return gone;
  }

  async size(now?: number): Promise<number> {
    if (now === undefined) return this.#byKey.size;
    let n = 0;
    for (const [, expiresAt] of this.#byKey.summaries()) if (expiresAt > now) n++;
    return n;
  }

  async reservation(name: string, now: number): Promise<NameReservation | undefined> {
    const n = this.#names.get(name);
    if (!n || n.until <= now) return undefined;
    const r = this.#byKey.get(n.id);
    return {
      publicKey: Buffer.from(n.id, 'latin1'),
      until: n.until,
      live: Boolean(r && r.expiresAt > now && r.name === name),
    };
  }

  async release(name: string, publicKey: Buffer, now: number): Promise<boolean> {
    const id = publicKey.toString('latin1');
    const n = this.#names.get(name);
    if (!n || n.id !== id || n.until <= now) return false;
    this.#names.delete(name);
    const r = this.#byKey.get(id);
    if (r?.name === name) {
      const { name: _dropped, ...rest } = r;
      this.#byKey.set(id, rest);
    }
    return true;
  }

  async list(now: number, options: { limit?: number; query?: string } = {}): Promise<PeerRecord[]> {
    const limit = options.limit ?? DEFAULT_LIST_LIMIT;
    const out: PeerRecord[] = [];
    for (const r of this.#byKey.values()) {
      if (out.length >= limit) break;
      if (r.expiresAt > now && matchesQuery(r, options.query)) out.push(r);
    }
    return out;
  }

  async noteNatType(publicKey: Buffer, natType: string): Promise<void> {
    const id = publicKey.toString('latin1');
    const r = this.#byKey.get(id);
    if (r) this.#byKey.set(id, { ...r, natType });
  }

  #hold(name: string, id: string, until: number): void {
    this.#names.delete(name); // re-inserted: Map order is then oldest first, for eviction
    if (this.#names.size >= this.#maxReservations) {
      for (const [k, v] of this.#names) {
        if (!this.#isLive(k, v.id)) {
          this.#names.delete(k);
          break;
        }
      }
    }
    this.#names.set(name, { id, until });
  }

  #isLive(name: string, id: string): boolean {
    return this.#byKey.summary(id)?.name === name;
  }
}
