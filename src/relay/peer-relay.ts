/**
 * Peer-relay mode (what `natpunch serve` runs by default): like Tailscale's DERP, the relay carries traffic between
 * its own registered peers and nowhere else.
 *
 * - Every key that registers on the rendezvous gets short-lived TURN credentials (username "expiry:key hex",
 *   password HMAC-SHA1 under a secret only this server knows — the shared-secret scheme of relay/auth.ts with a
 *   secret that is never configured, so these credentials cannot be confused with an operator's `--auth-secret`).
 * - The rendezvous tells PeerRelay which keys it introduced to which (CONNECT) and from which addresses it saw each
 *   key's messages (REGISTER, CONNECT). Those observed addresses are the peer's own: it sent from them.
 *   Self-reported candidates are never trusted: a key could list any victim address as a "candidate".
 * - The TURN server asks PeerRelay, for an allocation made with scoped credentials of key K, whether a peer
 *   address is in K's scope (RelayScope, relay/policy.ts):
 *     · an address the server observed for a peer introduced to K → any port (the peer's NAT picks the port);
 *       if that address is the server's own or in a range denied by default (loopback, RFC 1918, ...), only the
 *       exact observed address and port: a peer on the relay host does not open the host's other services;
 *     · the relay's own address → only the live allocations of keys introduced to K (relay to relay, both peers
 *       relayed);
 *     · anything else → 403 Forbidden (RFC 8656 §9.1).
 *
 * State is bounded: at most `maxKeys` keys (least recently seen forgotten first), a few observed addresses and
 * MAX_INTRODUCTIONS_PER_KEY introductions per key, each introduction expiring with the credentials' lifetime.
 */
import { randomBytes } from 'node:crypto';
import {
  longTermKey,
  sharedSecretPassword,
  type CredentialStore,
  type PasswordAlgorithmId,
  type SourceRateLimiter,
} from './auth.js';
import {
  credentialLimiter,
  DEFAULT_CREDENTIAL_RATE_PER_MINUTE,
  IssueMemory,
  type IssuedCredentials,
  type RelayCredentialIssuer,
} from './issuer.js';
import { normalizeIp, sourceKey } from './ip.js';
import type { RelayScope } from './policy.js';
import type { Endpoint } from '../wire/rendezvous.js';

/** Scoped credentials live 10 minutes (RFC 8656 §3.2's default allocation lifetime); refreshes renew them. */
export const DEFAULT_PEER_RELAY_TTL_S = 600;
/** Keys remembered (the rendezvous' own default registry size). */
export const DEFAULT_PEER_RELAY_MAX_KEYS = 65_536;
/** Observed addresses kept per key (UDP and TCP registrations, a NAT rebinding). */
export const MAX_OBSERVED_PER_KEY = 4;
/** Introductions kept per key; the oldest is forgotten first. */
export const MAX_INTRODUCTIONS_PER_KEY = 64;

const SCOPED_USERNAME = /^(\d{1,12}):([0-9a-f]{64})$/;

interface KeyState {
  observed: Endpoint[];
  /**
   * Introduced key hex → expiry (ms). Made on the first introduction: most registered keys are never introduced, and
   * an empty Map costs ~290 bytes (18 MiB of a 100k-peer rendezvous' heap before it was made lazily).
   */
  introduced: Map<string, number> | undefined;
}

export interface PeerRelayOptions {
  /** The TURN port on the rendezvous host (what TURN_CREDENTIALS names). */
  port: number;
  /** HMAC secret; default 32 random bytes per process (credentials die with the process, as registrations do). */
  secret?: string;
  ttlSeconds?: number;
  maxKeys?: number;
  /** Credentials issued per source (IPv4 address, IPv6 /64) per minute, also the burst. */
  credentialRatePerMinute?: number;
  now?: () => number;
}

export class PeerRelay implements RelayCredentialIssuer, RelayScope {
  readonly port: number;
  /** Announced with the credentials once serve runs TURN over TLS (set by serve after it listens). */
  tlsPort: number | undefined;
  readonly ttlSeconds: number;
  readonly credentials: CredentialStore;
  readonly #secret: string;
  readonly #keys = new Map<string, KeyState>();
  readonly #maxKeys: number;
  readonly #limiter: SourceRateLimiter;
  readonly #memory: IssueMemory;
  readonly #now: () => number;

  constructor(options: PeerRelayOptions) {
    this.port = options.port;
    this.ttlSeconds = options.ttlSeconds ?? DEFAULT_PEER_RELAY_TTL_S;
    this.#secret = options.secret ?? randomBytes(32).toString('base64');
    this.#maxKeys = options.maxKeys ?? DEFAULT_PEER_RELAY_MAX_KEYS;
    this.#limiter = credentialLimiter(options.credentialRatePerMinute ?? DEFAULT_CREDENTIAL_RATE_PER_MINUTE);
    this.#memory = new IssueMemory(this.#maxKeys);
    this.#now = options.now ?? Date.now;
    this.credentials = { key: (username, realm, algorithm) => this.#key(username, realm, algorithm) };
  }

  // ---------------------------------------------------------------------------------------------------------------
  // RelayCredentialIssuer (the rendezvous side)

  handles(): boolean {
    return true;
  }

  issue(key: Uint8Array, observed: Endpoint, refresh: boolean, now: number): IssuedCredentials | null {
    const keyHex = Buffer.from(key).toString('hex');
    // Only keys that hold credentials (or were introduced) take scope state: a flood of fresh keys past the
    // per-source credential rate cannot push active keys out of the bounded table.
    const known = this.#keys.has(keyHex);
    if (known) this.#observe(keyHex, observed);
    if (!this.#memory.due(keyHex, observed, refresh, this.ttlSeconds, now)) return null;
    if (!this.#limiter.allow(sourceKey(observed.address), now)) return null;
    if (!known) this.#observe(keyHex, observed);
    this.#memory.record(keyHex, observed, now);
    const username = `${Math.floor(now / 1000) + this.ttlSeconds}:${keyHex}`;
    return {
      username,
      password: sharedSecretPassword(this.#secret, username),
      ttlSeconds: this.ttlSeconds,
      port: this.port,
      ...(this.tlsPort ? { tlsPort: this.tlsPort } : {}),
    };
  }

  introduce(a: Uint8Array, aSeen: readonly Endpoint[], b: Uint8Array, bSeen: readonly Endpoint[], now: number): void {
    const ah = Buffer.from(a).toString('hex');
    const bh = Buffer.from(b).toString('hex');
    if (ah === bh) return;
    for (const e of aSeen) this.#observe(ah, e);
    for (const e of bSeen) this.#observe(bh, e);
    const expires = now + this.ttlSeconds * 1000;
    this.#link(ah, bh, expires);
    this.#link(bh, ah, expires);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // RelayScope (the TURN side)

  keyOf(username: string): string | null {
    const m = SCOPED_USERNAME.exec(username);
    return m ? m[2]! : null;
  }

  introduced(key: string, other: string): boolean {
    const state = this.#keys.get(key);
    const exp = state?.introduced?.get(other);
    const now = this.#now();
    if (exp === undefined || exp <= now) return false;
    this.#use(state!, other, now);
    return true;
  }

  allowsAddress(key: string, ip: string): boolean {
    const state = this.#keys.get(key);
    if (!state) return false;
    const now = this.#now();
    const address = normalizeIp(ip);
    for (const [other, exp] of state.introduced ?? []) {
      if (exp <= now) continue;
      if (this.#keys.get(other)?.observed.some((e) => e.address === address)) return this.#use(state, other, now);
    }
    return false;
  }

  allowsEndpoint(key: string, ip: string, port: number): boolean {
    const state = this.#keys.get(key);
    if (!state) return false;
    const now = this.#now();
    const address = normalizeIp(ip);
    for (const [other, exp] of state.introduced ?? []) {
      if (exp <= now) continue;
      if (this.#keys.get(other)?.observed.some((e) => e.address === address && e.port === port))
        return this.#use(state, other, now);
    }
    return false;
  }

  hasIntroductions(key: string): boolean {
    const now = this.#now();
    for (const exp of this.#keys.get(key)?.introduced?.values() ?? []) if (exp > now) return true;
    return false;
  }

  /** Keys remembered (for stats and tests). */
  get size(): number {
    return this.#keys.size;
  }

  // ---------------------------------------------------------------------------------------------------------------

  #key(username: string, realm: string, algorithm: PasswordAlgorithmId): Buffer | null {
    const m = SCOPED_USERNAME.exec(username);
    if (!m || Number(m[1]) * 1000 <= this.#now()) return null;
    return longTermKey(username, realm, sharedSecretPassword(this.#secret, username), algorithm);
  }

  /** The state of `keyHex`, made most recently used; a new key evicts the least recently used one when full. */
  #state(keyHex: string): KeyState {
    let s = this.#keys.get(keyHex);
    if (s) this.#keys.delete(keyHex);
    else {
      s = { observed: [], introduced: undefined };
      if (this.#keys.size >= this.#maxKeys) this.#keys.delete(this.#keys.keys().next().value!);
    }
    this.#keys.set(keyHex, s);
    return s;
  }

  #observe(keyHex: string, e: Endpoint): void {
    const s = this.#state(keyHex);
    const address = normalizeIp(e.address);
    const i = s.observed.findIndex((o) => o.transport === e.transport && o.address === address && o.port === e.port);
    if (i >= 0) s.observed.splice(i, 1);
    const seen = { transport: e.transport, address, port: e.port };
    // An exact-size array for the usual single address (push onto [] reserves room for 17).
    if (s.observed.length === 0) s.observed = [seen];
    else s.observed.push(seen);
    if (s.observed.length > MAX_OBSERVED_PER_KEY) s.observed.shift();
  }

  /**
   * An introduction in use stays: each permission, channel or restricted datagram that relies on it pushes its
   * expiry to a full lifetime from now (so a relayed session outlives the lifetime; an unused one lapses).
   */
  #use(state: KeyState, other: string, now: number): true {
    const until = now + this.ttlSeconds * 1000;
    // Only write when it moved noticeably (this runs per datagram on restricted permissions).
    const introduced = (state.introduced ??= new Map());
    if ((introduced.get(other) ?? 0) < until - 1000) introduced.set(other, until);
    return true;
  }

  #link(from: string, to: string, expires: number): void {
    const introduced = (this.#state(from).introduced ??= new Map());
    introduced.delete(to);
    introduced.set(to, expires);
    if (introduced.size > MAX_INTRODUCTIONS_PER_KEY) introduced.delete(introduced.keys().next().value!);
  }
}
