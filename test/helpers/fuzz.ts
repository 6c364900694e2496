// Mutation fuzzing shared by test/unit/fuzz.test.ts (bounded, in CI) and scripts/fuzz.ts (1M per parser against a
// live server). Deterministic: every run prints its seed, FUZZ_SEED replays it.
import { SIGNATURE_CONTEXT } from '../../src/wire/rendezvous.js';
import { sign } from '../../src/session/identity.js';

/** xorshift32: fast, seedable, good enough to pick mutations. */
export class Rng {
  #s: number;
  constructor(readonly seed: number) {
    this.#s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)]!;
  }
}

export function seedFromEnv(): number {
  const s = process.env.FUZZ_SEED;
  return s ? Number(s) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
}

/** Interesting values for length and count fields. */
const EDGES = [0, 1, 2, 3, 4, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff];

/**
 * One mutant of `seed`: bit flips, byte sets, truncation, extension, a 16-bit field set to an edge value, a slice
 * duplicated or removed, a splice with another seed, or random bytes of a similar size (each 1 in 8).
 * `keep` bytes at the start are left alone (e.g. a first byte that routes the message to the parser).
 */
export function mutate(rng: Rng, seed: Buffer, others: readonly Buffer[], keep = 0): Buffer {
  let b = Buffer.from(seed);
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    const span = Math.max(0, b.length - keep);
    const at = () => keep + rng.int(Math.max(1, span));
    switch (rng.int(8)) {
      case 0:
        if (span > 0) b[at()] ^= 1 << rng.int(8);
        break;
      case 1:
        if (span > 0) b[at()] = rng.pick([0, 0xff, 0x7f, 0x80, rng.int(256)]);
        break;
      case 2:
        b = b.subarray(0, keep + rng.int(span + 1));
        break;
      case 3:
        b = Buffer.concat([b, rng.bytes(1 + rng.int(64))]);
        break;
      case 4:
        if (span >= 2) {
          const o = keep + rng.int(span - 1);
          b.writeUInt16BE(rng.pick(EDGES), o);
        }
        break;
      case 5: {
        if (span === 0) break;
        const o = at();
        const n = 1 + rng.int(Math.min(32, b.length - o));
        b = rng.int(2)
          ? Buffer.concat([b.subarray(0, o), b.subarray(o + n)])
          : Buffer.concat([b.subarray(0, o + n), b.subarray(o, o + n), b.subarray(o + n)]);
        break;
      }
      case 6: {
        const other = rng.pick(others);
        const o = keep + rng.int(span + 1);
        b = Buffer.concat([b.subarray(0, o), other.subarray(Math.min(o, other.length))]);
        break;
      }
      default:
        b = Buffer.concat([b.subarray(0, keep), rng.bytes(rng.int(seed.length + 16))]);
    }
  }
  return b;
}

/**
 * A signed rendezvous message with its body mutated and then signed again with `secretKey`, so it passes the
 * signature check and reaches the decoder's and the server's deeper logic. The key field (`keyAt`, 32 bytes) is
 * restored after mutating so the signature matches the key the message names.
 */
export function resignedMutant(rng: Rng, signed: Buffer, secretKey: Uint8Array, keyAt: number): Buffer {
  const body = signed.subarray(0, signed.length - 64);
  const key = Buffer.from(body.subarray(keyAt, keyAt + 32));
  const m = mutate(rng, body, [body], 3);
  if (m.length >= keyAt + 32) key.copy(m, keyAt);
  return Buffer.concat([m, sign(Buffer.concat([SIGNATURE_CONTEXT, m]), secretKey)]);
}
