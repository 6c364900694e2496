/**
 * A slab for the rendezvous' per-peer byte records (issue 20: 100k registered peers in ≤ 150 MB).
 */
/** Bytes per chunk. A record is at most a few KiB (a packed registration: 255 candidates, three 255-byte strings). */
const CHUNK_BYTES = 1 << 20;
/** Each record is preceded by its length (u16). */
const LENGTH_BYTES = 2;

/**
 * Small byte records (per-peer state: registry records, the server's channel entries) in 1 MiB Buffer chunks, each
 * addressed by one number (chunk × CHUNK_BYTES + offset), so a record costs its bytes and no object. A rewrite of
 * the same length (the usual refresh: same candidates and name, new times) goes over the old bytes, where a
 * string per record made every refresh promote a new string and leave the old one as old-generation garbage until
 * the next full collection (issue 20). A freed region is reused by the next record of exactly its length (records
 * of one shape have one length). The chunks stay allocated: what a slab holds is bounded by the most records it
 * held at once (the registry's maxPeers) times their size.
 */
export class ByteSlab {
  readonly #chunks: Buffer[] = [];
  /** Bytes handed out in the last chunk (CHUNK_BYTES before the first: none to hand out). */
  #used = CHUNK_BYTES;
  /** Length → freed regions of that length. */
  readonly #free = new Map<number, number[]>();

  /** Stores `bytes`; returns its address. */
  store(bytes: Uint8Array): number {
    const n = bytes.length;
    let at = this.#free.get(n)?.pop();
    if (at === undefined) {
      if (this.#used + LENGTH_BYTES + n > CHUNK_BYTES) {
        this.#chunks.push(Buffer.allocUnsafeSlow(CHUNK_BYTES));
        this.#used = 0;
      }
      at = (this.#chunks.length - 1) * CHUNK_BYTES + this.#used;
      this.#used += LENGTH_BYTES + n;
    }
    const chunk = this.#chunks[Math.floor(at / CHUNK_BYTES)]!;
    const o = at % CHUNK_BYTES;
    chunk.writeUInt16BE(n, o);
    chunk.set(bytes, o + LENGTH_BYTES);
    return at;
  }

  /** Stores `bytes` in place of the record at `at` (over it when the length is the same); returns the new address. */
  replace(at: number, bytes: Uint8Array): number {
    if (this.#length(at) === bytes.length) {
      const chunk = this.#chunks[Math.floor(at / CHUNK_BYTES)]!;
      chunk.set(bytes, (at % CHUNK_BYTES) + LENGTH_BYTES);
      return at;
    }
    this.release(at);
    return this.store(bytes);
  }

  release(at: number): void {
    const n = this.#length(at);
    const list = this.#free.get(n);
    if (list) list.push(at);
    else this.#free.set(n, [at]);
  }

  /** The record's bytes (a view: read it before the next store). */
  view(at: number): Buffer {
    const chunk = this.#chunks[Math.floor(at / CHUNK_BYTES)]!;
    const o = (at % CHUNK_BYTES) + LENGTH_BYTES;
    return chunk.subarray(o, o + chunk.readUInt16BE(o - LENGTH_BYTES));
  }

  /** The f64 at `offset` in the record, without a view. */
  readDouble(at: number, offset: number): number {
    return this.#chunks[Math.floor(at / CHUNK_BYTES)]!.readDoubleBE((at % CHUNK_BYTES) + LENGTH_BYTES + offset);
  }

  /** The u32 at `offset` in the record, without a view. */
  readUInt32(at: number, offset: number): number {
    return this.#chunks[Math.floor(at / CHUNK_BYTES)]!.readUInt32BE((at % CHUNK_BYTES) + LENGTH_BYTES + offset);
  }

  #length(at: number): number {
    return this.#chunks[Math.floor(at / CHUNK_BYTES)]!.readUInt16BE(at % CHUNK_BYTES);
  }
}
