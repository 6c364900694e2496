/**
 * Who gets relay credentials from the rendezvous, and what the relay learns from introductions. The rendezvous
 * server calls an issuer after each REGISTER and each CONNECT; it never decides by itself who may relay.
 *
 * Two issuers exist:
 *  - PeerRelay (peer-relay.ts, `natpunch serve`'s default): scoped credentials for every registered key; the relay
 *    then lets an allocation send only to the peers introduced to that key.
 *  - SharedSecretIssuer (here): unscoped credentials of the operator's `--auth-secret` TURN service, handed only to
 *    keys the operator allows (`--turn-allow`), never to any self-made key (issue 18 hole 4).
 * FirstIssuer tries several in order (an allowed key gets the unscoped ones, everyone else scoped ones).
 */
import { makeSharedSecretCredentials } from './auth.js';
import { sourceKey } from './ip.js';
import type { Endpoint } from '../wire/rendezvous.js';

/** What TURN_CREDENTIALS carries (wire/rendezvous.ts). */
export interface IssuedCredentials {
  username: string;
  password: string;
  ttlSeconds: number;
  /** The TURN port on the rendezvous host. */
  port: number;
  /** The TURN-over-TLS port, when the server runs one. */
  tlsPort?: number;
}

export interface RelayCredentialIssuer {
  /** Whether this issuer decides for `key` (FirstIssuer asks the first one that does). */
  handles(key: Uint8Array): boolean;
  /**
   * Credentials for `key` (32-byte Ed25519 public key) that has just registered from `observed`; `refresh` is true
   * when the key was already registered. Null: none due (the last ones are still fresh), not allowed, or the
   * source is over its issuance rate.
   */
  issue(key: Uint8Array, observed: Endpoint, refresh: boolean, now: number): IssuedCredentials | null;
  /** The rendezvous has introduced `a` and `b` (CONNECT), each seen at the given addresses. */
  introduce(a: Uint8Array, aSeen: readonly Endpoint[], b: Uint8Array, bSeen: readonly Endpoint[], now: number): void;
}

/** Credentials per source (IPv4 address, IPv6 /64) per minute, and burst: one IP collected 105 in 3.3 s before. */
export const DEFAULT_CREDENTIAL_RATE_PER_MINUTE = 30;
/** Credentials of one key are re-sent on a refresh only when more than half their lifetime has passed. */
export const REISSUE_FRACTION = 0.5;
/** The unscoped shared-secret credentials live this long (draft-uberti-behave-turn-rest suggests a day). */
export const DEFAULT_SHARED_SECRET_TTL_S = 3600;

/** Per-key memory of the last issue, so refreshes do not get (and do not send) new credentials each time. */
export class IssueMemory {
  readonly #last = new Map<string, { at: number; endpoint: string }>();
  constructor(readonly maxKeys: number) {}

  /** True when new credentials are due for `key` seen at `observed`. */
  due(keyHex: string, observed: Endpoint, refresh: boolean, ttlSeconds: number, now: number): boolean {
    const e = this.#last.get(keyHex);
    const endpoint = `${observed.transport}:${observed.address}:${observed.port}`;
    if (!e || !refresh || e.endpoint !== endpoint) return true;
    return now - e.at >= ttlSeconds * 1000 * REISSUE_FRACTION;
  }

  record(keyHex: string, observed: Endpoint, now: number): void {
    this.#last.delete(keyHex);
    if (this.#last.size >= this.maxKeys) this.#last.delete(this.#last.keys().next().value!);
    this.#last.set(keyHex, { at: now, endpoint: `${observed.transport}:${observed.address}:${observed.port}` });
  }
}

/**
 * A token bucket per source (IPv4 address / IPv6 /64) kept as one number: the time its bucket is full again (the
 * generic cell rate algorithm's form of a token bucket). It decides exactly like SourceRateLimiter (relay/auth.ts)
 * — bucket full at first sight, refilled at `perSecond`, at most `burst`, idle sources swept when `maxSources` are
 * held and new ones then sharing one overflow bucket at 4× — in a Map entry and a number instead of a TokenBucket
 * object (~100 B less per source; a rendezvous sees one source per peer).
 */
export class CredentialLimiter {
  /** Source → when its bucket is full again (ms, relative to #epoch so that it usually stays a small integer). */
  readonly #full = new Map<string, number>();
  readonly #epoch: number;
  readonly #interval: number;
  /** How far past now the full time may be for one more token: the burst less the token being taken. */
  readonly #slack: number;
  #overflowFull = Number.NEGATIVE_INFINITY;

  constructor(
    readonly perSecond: number,
    readonly burst: number,
    readonly maxSources = 65536,
    now = Date.now(),
  ) {
    this.#epoch = now;
    this.#interval = 1000 / perSecond;
    this.#slack = (burst - 1) * this.#interval;
  }

  allow(source: string, now: number): boolean {
    const t = now - this.#epoch;
    let full = this.#full.get(source);
    if (full === undefined) {
      if (this.#full.size >= this.maxSources) this.sweep(now);
      if (this.#full.size >= this.maxSources) {
        // Shared by new sources while the table is full: 4× the rate and burst of one.
        const base = Math.max(this.#overflowFull, t);
        if (base - t > (this.burst * 4 - 1) * (this.#interval / 4)) return false;
        this.#overflowFull = base + this.#interval / 4;
        return true;
      }
      full = t;
    }
    const base = Math.max(full, t);
    if (base - t > this.#slack) return false;
    this.#full.set(source, base + this.#interval);
    return true;
  }

  /** Drops sources whose buckets have refilled completely (they have been quiet for burst / rate). */
  sweep(now: number): void {
    const t = now - this.#epoch;
    for (const [source, full] of this.#full) if (full <= t) this.#full.delete(source);
  }

  get size(): number {
    return this.#full.size;
  }
}

/** A per-source credential budget (token bucket per IPv4 address / IPv6 /64, bounded memory). */
export function credentialLimiter(perMinute: number): CredentialLimiter {
  return new CredentialLimiter(perMinute / 60, Math.max(1, perMinute));
}

export interface SharedSecretIssuerOptions {
  /** The TURN server's shared secret (its first `--auth-secret`). */
  secret: string;
  /** The TURN port on this host. */
  port: number;
  /**
   * Keys (64 hex characters) that get credentials, or 'any' — the old behaviour, which makes the TURN service
   * usable by anyone who makes a key: only for closed deployments. Default: none.
   */
  allow?: Iterable<string> | 'any';
  ttlSeconds?: number;
  /** Default DEFAULT_CREDENTIAL_RATE_PER_MINUTE per source. */
  ratePerMinute?: number;
}

/** Unscoped credentials for the operator's `--auth-secret` TURN service, for allowed keys only. */
export class SharedSecretIssuer implements RelayCredentialIssuer {
  readonly #secret: string;
  readonly #port: number;
  readonly #allow: Set<string> | 'any';
  readonly #ttl: number;
  readonly #limiter: CredentialLimiter;
  readonly #memory = new IssueMemory(65_536);

  constructor(options: SharedSecretIssuerOptions) {
    this.#secret = options.secret;
    this.#port = options.port;
    this.#allow = options.allow === 'any' ? 'any' : new Set([...(options.allow ?? [])].map((k) => k.toLowerCase()));
    this.#ttl = options.ttlSeconds ?? DEFAULT_SHARED_SECRET_TTL_S;
    this.#limiter = credentialLimiter(options.ratePerMinute ?? DEFAULT_CREDENTIAL_RATE_PER_MINUTE);
  }

  handles(key: Uint8Array): boolean {
    return this.#allow === 'any' || this.#allow.has(Buffer.from(key).toString('hex'));
  }

  issue(key: Uint8Array, observed: Endpoint, refresh: boolean, now: number): IssuedCredentials | null {
    const keyHex = Buffer.from(key).toString('hex');
    if (!this.handles(key) || !this.#memory.due(keyHex, observed, refresh, this.#ttl, now)) return null;
    if (!this.#limiter.allow(sourceKey(observed.address), now)) return null;
    this.#memory.record(keyHex, observed, now);
    // Username "expiry:first 16 hex of the key" (relay/auth.ts makeSharedSecretCredentials), as before.
    const c = makeSharedSecretCredentials(this.#secret, this.#ttl, keyHex.slice(0, 16), now);
    return { username: c.username, password: c.password, ttlSeconds: this.#ttl, port: this.#port };
  }

  introduce(): void {
    // Unscoped credentials do not depend on introductions.
  }
}

/** The first issuer that handles a key decides for it. Every issuer hears every introduction. */
export class FirstIssuer implements RelayCredentialIssuer {
  constructor(readonly issuers: readonly RelayCredentialIssuer[]) {}

  handles(key: Uint8Array): boolean {
    return this.issuers.some((i) => i.handles(key));
  }

  issue(key: Uint8Array, observed: Endpoint, refresh: boolean, now: number): IssuedCredentials | null {
    return this.issuers.find((i) => i.handles(key))?.issue(key, observed, refresh, now) ?? null;
  }

  introduce(a: Uint8Array, aSeen: readonly Endpoint[], b: Uint8Array, bSeen: readonly Endpoint[], now: number): void {
    for (const i of this.issuers) i.introduce(a, aSeen, b, bSeen, now);
  }
}
