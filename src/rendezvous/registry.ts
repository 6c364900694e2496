import type { Candidate } from '../traversal/candidate.js';
import type { Endpoint } from '../wire/rendezvous.js';

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
}

export type PutResult = 'ok' | 'name-taken' | 'full';

/**
 * Storage for registrations. Small on purpose so another backend (Redis, for several server nodes) fits: every
 * method may be async, `put` must be atomic for the name claim (a name is bound to the first key that claims it until
 * that registration expires or is removed; SET NX semantics), and `expire` returns the keys it removed.
 */
export interface Registry {
  get(publicKey: Buffer, now: number): Promise<PeerRecord | undefined>;
  getByName(name: string, now: number): Promise<PeerRecord | undefined>;
  put(record: PeerRecord, now: number): Promise<PutResult>;
  delete(publicKey: Buffer): Promise<boolean>;
  /** Removes records with expiresAt <= now; returns their keys. */
  expire(now: number): Promise<Buffer[]>;
  size(): Promise<number>;
}

export const DEFAULT_MAX_PEERS = 100_000;

/** The default registry: two maps in this process, bounded by `maxPeers`. */
export class MemoryRegistry implements Registry {
  readonly maxPeers: number;
  #byKey = new Map<string, PeerRecord>();
  #byName = new Map<string, string>();

  constructor(options: { maxPeers?: number } = {}) {
    this.maxPeers = options.maxPeers ?? DEFAULT_MAX_PEERS;
  }

  async get(publicKey: Buffer, now: number): Promise<PeerRecord | undefined> {
    const r = this.#byKey.get(publicKey.toString('hex'));
    return r && r.expiresAt > now ? r : undefined;
  }

  async getByName(name: string, now: number): Promise<PeerRecord | undefined> {
    const id = this.#byName.get(name);
    const r = id === undefined ? undefined : this.#byKey.get(id);
    return r && r.expiresAt > now ? r : undefined;
  }

  async put(record: PeerRecord, now: number): Promise<PutResult> {
    const id = record.publicKey.toString('hex');
    if (record.name !== undefined) {
      const holder = this.#byName.get(record.name);
      if (holder !== undefined && holder !== id) {
        const held = this.#byKey.get(holder);
        if (held && held.expiresAt > now) return 'name-taken';
        this.#remove(holder);
      }
    }
    const previous = this.#byKey.get(id);
    if (!previous && this.#byKey.size >= this.maxPeers) {
      await this.expire(now);
      if (this.#byKey.size >= this.maxPeers) return 'full';
    }
    if (previous?.name !== undefined && previous.name !== record.name) this.#byName.delete(previous.name);
    this.#byKey.set(id, record);
    if (record.name !== undefined) this.#byName.set(record.name, id);
    return 'ok';
  }

  async delete(publicKey: Buffer): Promise<boolean> {
    return this.#remove(publicKey.toString('hex'));
  }

  async expire(now: number): Promise<Buffer[]> {
    const gone: Buffer[] = [];
    for (const [id, r] of this.#byKey) {
      if (r.expiresAt <= now) {
        this.#remove(id);
        gone.push(r.publicKey);
      }
    }
    return gone;
  }

  async size(): Promise<number> {
    return this.#byKey.size;
  }

  #remove(id: string): boolean {
    const r = this.#byKey.get(id);
    if (!r) return false;
    this.#byKey.delete(id);
    if (r.name !== undefined && this.#byName.get(r.name) === id) this.#byName.delete(r.name);
    return true;
  }
}
