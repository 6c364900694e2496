import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { NatpunchError } from '../util/errors.js';

/**
 * TURN authentication (RFC 8656 §9 → RFC 8489 §9.2 long-term credentials), nonces with the security-feature cookie,
 * the time-limited shared-secret scheme WebRTC deployments use, quotas and rate limits.
 */

/** RFC 8489 §18.5: password algorithm numbers. */
export const PasswordAlgorithm = { MD5: 0x0001, SHA256: 0x0002 } as const;
export type PasswordAlgorithmId = (typeof PasswordAlgorithm)[keyof typeof PasswordAlgorithm];

/** RFC 8489 §9.2.1: a nonce starting with this cookie carries 24 bits of security features after it. */
export const NONCE_COOKIE = 'obMatJos2';
/** RFC 8489 §9.2.1 security-feature bits (bit 0 is the most significant bit of the 24). */
export const SecurityFeature = { PASSWORD_ALGORITHMS: 1 << 23, USERNAME_ANONYMITY: 1 << 22 } as const;

/** How long a nonce stays valid (RFC 8489 §9.2 leaves it to the server; coturn uses 600 s). */
export const DEFAULT_NONCE_LIFETIME_S = 600;
/** Default realm when none is configured. */
export const DEFAULT_REALM = 'natpunch';

/** RFC 8489 §9.2.2: key = MD5(username ":" OpaqueString(realm) ":" OpaqueString(password)). */
export function longTermKey(
  username: string,
  realm: string,
  password: string,
  algorithm: PasswordAlgorithmId = PasswordAlgorithm.MD5,
): Buffer {
  // OpaqueString (RFC 8265 §4.2) for ASCII and most text amounts to NFC normalisation.
  const input = `${username}:${realm.normalize('NFC')}:${password.normalize('NFC')}`;
  return createHash(algorithm === PasswordAlgorithm.SHA256 ? 'sha256' : 'md5')
    .update(input, 'utf8')
    .digest();
}

/** coturn-style `use-auth-secret` (draft-uberti-behave-turn-rest): password = base64(HMAC-SHA1(secret, username)). */
export function sharedSecretPassword(secret: string, username: string): string {
  return createHmac('sha1', secret).update(username, 'utf8').digest('base64');
}

/** Makes time-limited credentials for a peer (what a rendezvous server hands out): username = "expiry[:user]". */
export function makeSharedSecretCredentials(
  secret: string,
  ttlSeconds: number,
  user?: string,
  now = Date.now(),
): { username: string; password: string; expires: number } {
  const expires = Math.floor(now / 1000) + Math.max(1, Math.floor(ttlSeconds));
  const username = user ? `${expires}:${user}` : `${expires}`;
  return { username, password: sharedSecretPassword(secret, username), expires };
}

/** Where keys come from. An embedding application may supply its own (a database, an API). */
export interface CredentialStore {
  /** The long-term key for `username` under `realm` and `algorithm`, or null if the user is unknown/expired. */
  key(username: string, realm: string, algorithm: PasswordAlgorithmId): Buffer | null;
}

/**
 * A users file: one credential per line, `#` starts a comment, blank lines are ignored.
 *
 *     alice:correct horse battery   # plain password (the key is derived per realm and algorithm)
 *     bob:0x8ddb3e1f0ef7bd5d2dd1bbe3cc50b43c   # a precomputed MD5 key, hex (coturn's turnadmin -k format)
 *
 * A username cannot contain ':'; the password is everything after the first ':' (trailing spaces trimmed).
 * A precomputed key only works with MD5 (MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256 both use it when the
 * password algorithm is MD5, RFC 8489 §9.2.2).
 */
export class UsersFileStore implements CredentialStore {
  readonly #passwords = new Map<string, string>();
  readonly #md5Keys = new Map<string, Buffer>();

  constructor(text: string) {
    let lineNo = 0;
    for (const raw of text.split(/\r?\n/)) {
      lineNo++;
      const line = raw.replace(/(^|\s)#.*$/, '').trim();
      if (!line) continue;
      const colon = line.indexOf(':');
      if (colon <= 0 || colon === line.length - 1) {
        throw new NatpunchError('BAD_ARGUMENT', `users file line ${lineNo}: expected "user:password" or "user:0xKEY"`);
      }
      const user = line.slice(0, colon);
      const secret = line.slice(colon + 1);
      if (/^0x[0-9a-fA-F]{32}$/.test(secret)) this.#md5Keys.set(user, Buffer.from(secret.slice(2), 'hex'));
      else this.#passwords.set(user, secret);
    }
  }

  static load(path: string): UsersFileStore {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new NatpunchError('BAD_ARGUMENT', `cannot read users file ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return new UsersFileStore(text);
  }

  get size(): number {
    return this.#passwords.size + this.#md5Keys.size;
  }

  key(username: string, realm: string, algorithm: PasswordAlgorithmId): Buffer | null {
    const password = this.#passwords.get(username);
    if (password !== undefined) return longTermKey(username, realm, password, algorithm);
    const key = this.#md5Keys.get(username);
    if (key && algorithm === PasswordAlgorithm.MD5) return key;
    return null;
  }
}

/**
 * The time-limited shared-secret scheme: username = "<unix expiry>[:<user>]", password = base64(HMAC-SHA1(secret,
 * username)). Several secrets may be valid at once (rotation). Expired usernames are unknown users.
 */
export class SharedSecretStore implements CredentialStore {
  readonly #secrets: string[];
  readonly #now: () => number;

  constructor(secrets: readonly string[], now: () => number = Date.now) {
    if (secrets.length === 0 || secrets.some((s) => s.length === 0))
      throw new NatpunchError('BAD_ARGUMENT', 'auth secret must not be empty');
    this.#secrets = [...secrets];
    this.#now = now;
  }

  /** The key for the first secret (the server tries each in turn through `keys`). */
  key(username: string, realm: string, algorithm: PasswordAlgorithmId): Buffer | null {
    return this.keys(username, realm, algorithm)[0] ?? null;
  }

  keys(username: string, realm: string, algorithm: PasswordAlgorithmId): Buffer[] {
    const m = /^(\d{1,12})(?::.*)?$/s.exec(username);
    if (!m) return [];
    if (Number(m[1]) * 1000 <= this.#now()) return [];
    return this.#secrets.map((s) => longTermKey(username, realm, sharedSecretPassword(s, username), algorithm));
  }
}

/** Tries several stores in order (a users file and a shared secret together). */
export class CombinedStore implements CredentialStore {
  constructor(readonly stores: readonly CredentialStore[]) {}
  key(username: string, realm: string, algorithm: PasswordAlgorithmId): Buffer | null {
    return this.keys(username, realm, algorithm)[0] ?? null;
  }
  keys(username: string, realm: string, algorithm: PasswordAlgorithmId): Buffer[] {
    const out: Buffer[] = [];
    for (const s of this.stores) {
      if (s instanceof SharedSecretStore || s instanceof CombinedStore) out.push(...s.keys(username, realm, algorithm));
      else {
        const k = s.key(username, realm, algorithm);
        if (k) out.push(k);
      }
    }
    return out;
  }
}

/** All candidate keys a store offers for a username (shared-secret rotation gives more than one). */
export function candidateKeys(
  store: CredentialStore,
  username: string,
  realm: string,
  algorithm: PasswordAlgorithmId,
): Buffer[] {
  const multi = store as CredentialStore & { keys?: (u: string, r: string, a: PasswordAlgorithmId) => Buffer[] };
  if (typeof multi.keys === 'function') return multi.keys(username, realm, algorithm);
  const k = store.key(username, realm, algorithm);
  return k ? [k] : [];
}

/**
 * Stateless nonces (RFC 8489 §9.2): "obMatJos2" + base64(24-bit security features) + base64(expiry ‖ MAC(expiry ‖
 * client address)). Bound to the client's IP so a nonce captured elsewhere is useless; expiry → 438 Stale Nonce.
 */
export class NonceManager {
  readonly #key: Buffer;
  readonly lifetimeMs: number;
  readonly features: number;
  readonly #now: () => number;

  constructor(options: { lifetimeSeconds?: number; features?: number; now?: () => number; key?: Buffer } = {}) {
    this.#key = options.key ?? randomBytes(32);
    this.lifetimeMs = (options.lifetimeSeconds ?? DEFAULT_NONCE_LIFETIME_S) * 1000;
    this.features = options.features ?? SecurityFeature.PASSWORD_ALGORITHMS;
    this.#now = options.now ?? Date.now;
  }

  /** The 4 base64 characters that encode the 24 feature bits (RFC 8489 §9.2.1). */
  static encodeFeatures(features: number): string {
    return Buffer.from([(features >> 16) & 0xff, (features >> 8) & 0xff, features & 0xff]).toString('base64');
  }

  /** Feature bits of a nonce, or 0 if it does not start with the cookie. */
  static featuresOf(nonce: string): number {
    if (!nonce.startsWith(NONCE_COOKIE) || nonce.length < NONCE_COOKIE.length + 4) return 0;
    const b = Buffer.from(nonce.slice(NONCE_COOKIE.length, NONCE_COOKIE.length + 4), 'base64');
    if (b.length !== 3) return 0;
    return (b[0]! << 16) | (b[1]! << 8) | b[2]!;
  }

  issue(clientAddress: string): string {
    const body = Buffer.alloc(6 + 12);
    body.writeUIntBE(this.#now() + this.lifetimeMs, 0, 6);
    this.#mac(body.subarray(0, 6), clientAddress).copy(body, 6, 0, 12);
    return NONCE_COOKIE + NonceManager.encodeFeatures(this.features) + body.toString('base64url');
  }

  /** 'valid', 'stale' (ours but expired → 438) or 'invalid' (not ours → 401). */
  check(nonce: string, clientAddress: string): 'valid' | 'stale' | 'invalid' {
    const prefix = NONCE_COOKIE + NonceManager.encodeFeatures(this.features);
    if (!nonce.startsWith(prefix) || nonce.length !== prefix.length + 24) return 'invalid';
    const body = Buffer.from(nonce.slice(prefix.length), 'base64url');
    if (body.length !== 18) return 'invalid';
    const mac = this.#mac(body.subarray(0, 6), clientAddress).subarray(0, 12);
    if (!timingSafeEqual(mac, body.subarray(6))) return 'invalid';
    return body.readUIntBE(0, 6) > this.#now() ? 'valid' : 'stale';
  }

  #mac(expiry: Buffer, clientAddress: string): Buffer {
    return createHmac('sha256', this.#key).update(expiry).update(clientAddress).digest();
  }
}

/** A token bucket: `rate` tokens per second, holding at most `burst`. Used for bandwidth caps and rate limits. */
export class TokenBucket {
  #tokens: number;
  #last: number;
  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number = Date.now(),
  ) {
    this.#tokens = burst;
    this.#last = now;
  }

  /** Takes `n` tokens if available. `now` in ms (callers pass a clock they already read). */
  take(n: number, now: number): boolean {
    if (now > this.#last) {
      this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#last) * this.rate) / 1000);
      this.#last = now;
    }
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }
}

/**
 * Per-source-IP rate limit for requests that are not (yet) authenticated. Memory is bounded: at most `maxSources`
 * buckets; when full, idle buckets are swept and, failing that, new sources share one overflow bucket.
 */
export class SourceRateLimiter {
  readonly #buckets = new Map<string, TokenBucket>();
  readonly #overflow: TokenBucket;
  constructor(
    readonly perSecond: number,
    readonly burst: number,
    readonly maxSources = 65536,
  ) {
    this.#overflow = new TokenBucket(perSecond * 4, burst * 4);
  }

  allow(source: string, now: number): boolean {
    let b = this.#buckets.get(source);
    if (!b) {
      if (this.#buckets.size >= this.maxSources) this.sweep(now);
      if (this.#buckets.size >= this.maxSources) return this.#overflow.take(1, now);
      b = new TokenBucket(this.perSecond, this.burst, now);
      this.#buckets.set(source, b);
    }
    return b.take(1, now);
  }

  /** Drops buckets that have refilled completely (their sources are idle). */
  sweep(now: number): void {
    for (const [k, b] of this.#buckets) {
      // A probe take of 0 refreshes the level; a full bucket means the source has been quiet for burst/rate s.
      b.take(0, now);
      if (b.take(this.burst, now)) this.#buckets.delete(k);
    }
  }

  get size(): number {
    return this.#buckets.size;
  }
}

/**
 * Per-user, per-source and total allocation quotas (RFC 8656 §7.2 step 10: 486 Allocation Quota Reached). The
 * per-source quota (an IPv4 address or an IPv6 /64, relay/ip.ts sourceKey) is what stops one host with many
 * self-made identities from taking every allocation (issue 18 hole 4).
 */
export class AllocationQuota {
  readonly #perUser = new Map<string, number>();
  readonly #perSource = new Map<string, number>();
  #total = 0;
  constructor(
    readonly maxPerUser: number,
    readonly maxTotal: number,
    readonly maxPerSource: number = Number.POSITIVE_INFINITY,
  ) {}

  /** 'ok' and counts it, or which limit was hit. */
  acquire(user: string, source = ''): 'ok' | 'user' | 'source' | 'total' {
    if (this.#total >= this.maxTotal) return 'total';
    const n = this.#perUser.get(user) ?? 0;
    if (n >= this.maxPerUser) return 'user';
    const m = this.#perSource.get(source) ?? 0;
    if (source && m >= this.maxPerSource) return 'source';
    this.#perUser.set(user, n + 1);
    if (source) this.#perSource.set(source, m + 1);
    this.#total++;
    return 'ok';
  }

  release(user: string, source = ''): void {
    const n = this.#perUser.get(user) ?? 0;
    if (n <= 1) this.#perUser.delete(user);
    else this.#perUser.set(user, n - 1);
    if (source) {
      const m = this.#perSource.get(source) ?? 0;
      if (m <= 1) this.#perSource.delete(source);
      else this.#perSource.set(source, m - 1);
    }
    if (this.#total > 0) this.#total--;
  }

  get total(): number {
    return this.#total;
  }
}
