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
import { longTermKey, sharedSecretPassword, type CredentialStore, type PasswordAlgorithmId } from './auth.js';
import {
  credentialLimiter,
  DEFAULT_CREDENTIAL_RATE_PER_MINUTE,
  REISSUE_FRACTION,
  type CredentialLimiter,
  type IssuedCredentials,
  type RelayCredentialIssuer,
} from './issuer.js';
import { normalizeIp, parseIp, sourceKey } from './ip.js';
import type { RelayScope } from './policy.js';
import type { Endpoint } from '../wire/rendezvous.js';

/** Scoped credentials live 10 minutes (RFC 8656 §3.2's default allocation lifetime); refreshes renew them. */
export const DEFAULT_PEER_RELAY_TTL_S = 600;
/**
 * Keys remembered: above the rendezvous' default registry size (DEFAULT_MAX_PEERS, 100,000), with room for keys
 * whose registration lapsed while their credentials and introductions still count (up to ttlSeconds). Below it (it
 * was 65,536), a full registry evicted a third of its peers' relay state every refresh round: their introductions
 * and observed addresses were forgotten (relayed sessions lost their permissions) and their credentials reissued.
 * Each remembered key costs ~120 B (its 32-byte key as a string, its packed state, its table slot).
 */
export const DEFAULT_PEER_RELAY_MAX_KEYS = 131_072;
/** Observed addresses kept per key (UDP and TCP registrations, a NAT rebinding). */
export const MAX_OBSERVED_PER_KEY = 4;
/** Introductions kept per key; the oldest is forgotten first. */
export const MAX_INTRODUCTIONS_PER_KEY = 64;

const SCOPED_USERNAME = /^(\d{1,12}):([0-9a-f]{64})$/;
const KEY_HEX = /^[0-9a-f]{64}$/;

/*
 * Per-key state, packed (issue 20: ~440 B per key as objects, Endpoint arrays, hex keys and a second Map for the
 * issue memory; a rendezvous with 100k peers holds one per peer). #keys maps the key's 32 bytes as a one-byte
 * (latin1) string — 48 B where the hex spelling takes 80 — to its packed state: a latin1 string, or for a key
 * that was ever introduced, an Introduced holding that string and the introductions, also one string: per
 * introduction the other key's 32 bytes and its expiry (ms, 48-bit big-endian), oldest first (a Map per key cost
 * ~250 B for the one or two introductions a key usually has).
 *
 * The packed string, one byte per character:
 *   [0..5]   when credentials were last issued to the key: ms, 48-bit big-endian (meaningless until an endpoint
 *            carries ISSUED)
 *   then up to MAX_OBSERVED_PER_KEY endpoint records, least recently observed first:
 *            flags   TCP (else UDP) | ISSUED (the last credentials went to this endpoint) | ISSUED_MAPPED (and it
 *                    was spelled IPv4-mapped, ::ffff:a.b.c.d: a refresh in the other spelling gets new ones, as before)
 *            address 4 then 4 bytes (IPv4), 6 then 16 bytes (IPv6), or 0, a length byte and the text (an address
 *                    with a zone or that does not parse, compared as text like before)
 *            port    16-bit big-endian
 * Strings are immutable: an update stores a new one. Updates happen per REGISTER or CONNECT, never per datagram.
 */
const AT_CHARS = 6;
const NEVER_ISSUED = '\0'.repeat(AT_CHARS);
const TCP = 1;
const ISSUED = 2;
const ISSUED_MAPPED = 4;
const FAMILY_TEXT = 0;
const FAMILY_V4 = 4;
const FAMILY_V6 = 6;

interface Introduced {
  packed: string;
  /** [introduced key (32, latin1)][expiry (AT_CHARS)] per introduction, oldest first. */
  introduced: string;
}

const KEY_CHARS = 32;
const INTRODUCTION_CHARS = KEY_CHARS + AT_CHARS;

/** Where `other`'s record starts in an introductions string, or -1. */
function introductionOf(introduced: string, other: string): number {
  if (other.length !== KEY_CHARS) return -1;
  for (let o = 0; o < introduced.length; o += INTRODUCTION_CHARS) if (introduced.startsWith(other, o)) return o;
  return -1;
}

function introductionExpiry(introduced: string, o: number): number {
  return unpackAt(introduced.slice(o + KEY_CHARS, o + INTRODUCTION_CHARS));
}

/**
 * `introduced` without the record at `o` (if any) and with `other` (expiring at `until`) appended, keeping the newest
 * `max`: one flat string (a join of several parts copies; a slice kept in the table would hold its whole parent).
 */
function withIntroduction(introduced: string, o: number, other: string, until: number, max: number): string {
  const parts = o < 0 ? [introduced] : [introduced.slice(0, o), introduced.slice(o + INTRODUCTION_CHARS)];
  parts.push(other, packAt(until));
  let all = parts.join('');
  if (all.length > max * INTRODUCTION_CHARS)
    all = Buffer.from(all.slice(all.length - max * INTRODUCTION_CHARS), 'latin1').toString('latin1');
  return all;
}

type KeyState = string | Introduced;

function packedOf(state: KeyState): string {
  return typeof state === 'string' ? state : state.packed;
}

/** The address part of an endpoint record for normalized address text (family, bytes). */
function packAddress(address: string): string {
  const bytes = address.includes('%') ? null : parseIp(address);
  if (bytes) return String.fromCharCode(bytes.length === 4 ? FAMILY_V4 : FAMILY_V6, ...bytes);
  // Socket addresses are far shorter than 255 bytes; the cut only keeps the length byte honest.
  const text = Buffer.from(address, 'utf8').subarray(0, 255).toString('latin1');
  return String.fromCharCode(FAMILY_TEXT, text.length) + text;
}

/** ISSUED_MAPPED when `address` is spelled as normalizeIp rewrites it, else 0. */
function mappedFlag(address: string): number {
  return normalizeIp(address) === address ? 0 : ISSUED_MAPPED;
}

function packPort(port: number): string {
  return String.fromCharCode((port >> 8) & 0xff, port & 0xff);
}

/** Where the endpoint record starting at `off` ends. */
function recordEnd(packed: string, off: number): number {
  const family = packed.charCodeAt(off + 1);
  const n = family === FAMILY_V4 ? 4 : family === FAMILY_V6 ? 16 : 1 + packed.charCodeAt(off + 2);
  return off + 2 + n + 2;
}

/** Whether an endpoint record's address (and port, when `addressPort` includes it) starts with `addressPort`. */
function hasEndpoint(packed: string, addressPort: string): boolean {
  for (let off = AT_CHARS; off < packed.length; off = recordEnd(packed, off)) {
    if (packed.startsWith(addressPort, off + 1)) return true;
  }
  return false;
}

function packAt(ms: number): string {
  const v = Math.min(Math.max(0, Math.floor(ms)), 2 ** 48 - 1);
  const hi = Math.floor(v / 2 ** 24);
  const lo = v % 2 ** 24;
  return String.fromCharCode(hi >> 16, (hi >> 8) & 0xff, hi & 0xff, lo >> 16, (lo >> 8) & 0xff, lo & 0xff);
}

function unpackAt(packed: string): number {
  const c = (i: number) => packed.charCodeAt(i);
  return ((c(0) << 16) | (c(1) << 8) | c(2)) * 2 ** 24 + ((c(3) << 16) | (c(4) << 8) | c(5));
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
  /** Key (32 bytes as latin1) → packed state (above); Map order is recency: the first key is evicted first. */
  readonly #keys = new Map<string, KeyState>();
  readonly #maxKeys: number;
  readonly #limiter: CredentialLimiter;
  readonly #now: () => number;
  /** The TURN side asks in hex, often for the same allocation's key: its last conversion is kept. */
  #lastHex = '';
  #lastKey = '';
  /** Likewise the last peer address asked about, packed (a restricted permission asks per datagram). */
  #lastIp = '';
  #lastPackedIp = '';

  constructor(options: PeerRelayOptions) {
    this.port = options.port;
    this.ttlSeconds = options.ttlSeconds ?? DEFAULT_PEER_RELAY_TTL_S;
    this.#secret = options.secret ?? randomBytes(32).toString('base64');
    this.#maxKeys = options.maxKeys ?? DEFAULT_PEER_RELAY_MAX_KEYS;
    this.#limiter = credentialLimiter(options.credentialRatePerMinute ?? DEFAULT_CREDENTIAL_RATE_PER_MINUTE);
    this.#now = options.now ?? Date.now;
    this.credentials = { key: (username, realm, algorithm) => this.#key(username, realm, algorithm) };
  }

  // ---------------------------------------------------------------------------------------------------------------
  // RelayCredentialIssuer (the rendezvous side)

  handles(): boolean {
    return true;
  }

  issue(key: Uint8Array, observed: Endpoint, refresh: boolean, now: number): IssuedCredentials | null {
    const k = latin1(key);
    // Only keys that hold credentials (or were introduced) take scope state: a flood of fresh keys past the
    // per-source credential rate cannot push active keys out of the bounded table.
    const known = this.#keys.has(k);
    if (known) this.#observe(k, observed);
    if (!this.#due(k, observed, refresh, now)) return null;
    if (!this.#limiter.allow(sourceKey(observed.address), now)) return null;
    if (!known) this.#observe(k, observed);
    this.#issued(k, observed, now);
    const username = `${Math.floor(now / 1000) + this.ttlSeconds}:${Buffer.from(key).toString('hex')}`;
    return {
      username,
      password: sharedSecretPassword(this.#secret, username),
      ttlSeconds: this.ttlSeconds,
      port: this.port,
      ...(this.tlsPort ? { tlsPort: this.tlsPort } : {}),
    };
  }

  introduce(a: Uint8Array, aSeen: readonly Endpoint[], b: Uint8Array, bSeen: readonly Endpoint[], now: number): void {
    const ak = latin1(a);
    const bk = latin1(b);
    if (ak === bk) return;
    for (const e of aSeen) this.#observe(ak, e);
    for (const e of bSeen) this.#observe(bk, e);
    const expires = now + this.ttlSeconds * 1000;
    this.#link(ak, bk, expires);
    this.#link(bk, ak, expires);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // RelayScope (the TURN side: keys in hex, as keyOf gives them)

  keyOf(username: string): string | null {
    const m = SCOPED_USERNAME.exec(username);
    return m ? m[2]! : null;
  }

  introduced(key: string, other: string): boolean {
    const state = this.#introductions(key);
    if (!state) return false;
    const o = this.#fromHex(other);
    const at = introductionOf(state.introduced, o);
    const now = this.#now();
    if (at < 0 || introductionExpiry(state.introduced, at) <= now) return false;
    return this.#use(state, at, now);
  }

  allowsAddress(key: string, ip: string): boolean {
    return this.#allows(key, this.#packIp(ip));
  }

  allowsEndpoint(key: string, ip: string, port: number): boolean {
    return this.#allows(key, this.#packIp(ip) + packPort(port));
  }

  hasIntroductions(key: string): boolean {
    const now = this.#now();
    const introduced = this.#introductions(key)?.introduced ?? '';
    for (let o = 0; o < introduced.length; o += INTRODUCTION_CHARS)
      if (introductionExpiry(introduced, o) > now) return true;
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

  /** The latin1 key for a hex one; '' (no key's) for anything but 64 lower-case hex digits. */
  #fromHex(hex: string): string {
    if (hex !== this.#lastHex) {
      this.#lastKey = KEY_HEX.test(hex) ? Buffer.from(hex, 'hex').toString('latin1') : '';
      this.#lastHex = hex;
    }
    return this.#lastKey;
  }

  #packIp(ip: string): string {
    if (ip !== this.#lastIp || this.#lastPackedIp === '') {
      this.#lastPackedIp = packAddress(normalizeIp(ip));
      this.#lastIp = ip;
    }
    return this.#lastPackedIp;
  }

  #introductions(keyHex: string): Introduced | undefined {
    const state = this.#keys.get(this.#fromHex(keyHex));
    return state === undefined || typeof state === 'string' ? undefined : state;
  }

  /** A live introduction of `keyHex` to a key observed at `addressPort` (a packed address, maybe with its port). */
  #allows(keyHex: string, addressPort: string): boolean {
    const state = this.#introductions(keyHex);
    if (!state) return false;
    const now = this.#now();
    const introduced = state.introduced;
    for (let o = 0; o < introduced.length; o += INTRODUCTION_CHARS) {
      if (introductionExpiry(introduced, o) <= now) continue;
      const seen = this.#keys.get(introduced.slice(o, o + KEY_CHARS));
      if (seen !== undefined && hasEndpoint(packedOf(seen), addressPort)) return this.#use(state, o, now);
    }
    return false;
  }

  /** The state of `key`, made most recently used; a new key evicts the least recently used one when full. */
  #state(key: string): KeyState {
    let s = this.#keys.get(key);
    if (s !== undefined) this.#keys.delete(key);
    else {
      s = NEVER_ISSUED;
      if (this.#keys.size >= this.#maxKeys) this.#keys.delete(this.#keys.keys().next().value!);
    }
    this.#keys.set(key, s);
    return s;
  }

  #store(key: string, state: KeyState, packed: string): void {
    if (typeof state === 'string') this.#keys.set(key, packed);
    else state.packed = packed;
  }

  #observe(key: string, e: Endpoint): void {
    const state = this.#state(key);
    const packed = packedOf(state);
    const tcp = e.transport === 'tcp' ? TCP : 0;
    const endpoint = packAddress(normalizeIp(e.address)) + packPort(e.port);
    let flags = tcp;
    const records: string[] = [];
    for (let off = AT_CHARS, end = 0; off < packed.length; off = end) {
      end = recordEnd(packed, off);
      const f = packed.charCodeAt(off);
      // Seen again: moved to the newest place, keeping whether the last credentials went to it.
      if ((f & TCP) === tcp && end - off - 1 === endpoint.length && packed.startsWith(endpoint, off + 1)) {
        flags |= f & (ISSUED | ISSUED_MAPPED);
      } else records.push(packed.slice(off, end));
    }
    records.push(String.fromCharCode(flags) + endpoint);
    if (records.length > MAX_OBSERVED_PER_KEY) records.shift();
    records.unshift(packed.slice(0, AT_CHARS));
    // join makes one flat string (a + b would keep a rope of the parts alive in the table).
    const next = records.join('');
    // A refresh from the endpoint seen last changes nothing: the stored string stays (storing the equal new one
    // would promote it and leave the old one as old-generation garbage, per refresh of every registered peer).
    if (next !== packed) this.#store(key, state, next);
  }

  /**
   * Whether new credentials are due for `key` seen at `observed`: always on a first registration or from another
   * endpoint; on a refresh from the same one, once REISSUE_FRACTION of their lifetime has passed.
   */
  #due(key: string, observed: Endpoint, refresh: boolean, now: number): boolean {
    const state = this.#keys.get(key);
    if (!refresh || state === undefined) return true;
    const packed = packedOf(state);
    const tcp = observed.transport === 'tcp' ? TCP : 0;
    const endpoint = packAddress(normalizeIp(observed.address)) + packPort(observed.port);
    for (let off = AT_CHARS, end = 0; off < packed.length; off = end) {
      end = recordEnd(packed, off);
      const f = packed.charCodeAt(off);
      if ((f & ISSUED) === 0) continue;
      if ((f & TCP) !== tcp || end - off - 1 !== endpoint.length || !packed.startsWith(endpoint, off + 1)) return true;
      if ((f & ISSUED_MAPPED) !== mappedFlag(observed.address)) return true;
      return now - unpackAt(packed) >= this.ttlSeconds * 1000 * REISSUE_FRACTION;
    }
    return true;
  }

  /** Credentials were issued to `key` now, to `observed`: the endpoint observed last (issue() has just observed it). */
  #issued(key: string, observed: Endpoint, now: number): void {
    const state = this.#keys.get(key);
    if (state === undefined) return;
    const packed = packedOf(state);
    const parts = [packAt(now)];
    let last = AT_CHARS;
    for (let off = AT_CHARS, end = 0; off < packed.length; off = end) {
      end = recordEnd(packed, off);
      last = off;
      parts.push(String.fromCharCode(packed.charCodeAt(off) & ~(ISSUED | ISSUED_MAPPED)) + packed.slice(off + 1, end));
    }
    if (last >= packed.length) return;
    const flags = (packed.charCodeAt(last) & ~ISSUED_MAPPED) | ISSUED | mappedFlag(observed.address);
    parts[parts.length - 1] = String.fromCharCode(flags) + packed.slice(last + 1);
    this.#store(key, state, parts.join(''));
  }

  /**
   * An introduction in use stays: each permission, channel or restricted datagram that relies on it pushes its
   * expiry to a full lifetime from now (so a relayed session outlives the lifetime; an unused one lapses).
   */
  #use(state: Introduced, at: number, now: number): true {
    const until = now + this.ttlSeconds * 1000;
    // Only write when it moved noticeably (this runs per datagram on restricted permissions). It keeps its place:
    // the order is when introduced, which decides what goes first when a key has too many.
    if (introductionExpiry(state.introduced, at) < until - 1000) {
      const s = state.introduced;
      state.introduced = [s.slice(0, at + KEY_CHARS), packAt(until), s.slice(at + INTRODUCTION_CHARS)].join('');
    }
    return true;
  }

  #link(from: string, to: string, expires: number): void {
    let state = this.#state(from);
    if (typeof state === 'string') {
      state = { packed: state, introduced: '' };
      this.#keys.set(from, state);
    }
    const at = introductionOf(state.introduced, to);
    state.introduced = withIntroduction(state.introduced, at, to, expires, MAX_INTRODUCTIONS_PER_KEY);
  }
}

/** A key's bytes as a one-byte string (the table's key). */
function latin1(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
}
