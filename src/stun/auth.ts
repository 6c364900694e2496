/**
 * Server side of the long-term credential mechanism (RFC 8489 §9.2.4-§9.2.5): challenges, nonces carrying the
 * security feature set (§9.2 nonce cookie), password-algorithm negotiation with bid-down protection (§9.2.4 step
 * list), USERHASH (§14.4) and integrity checks. Stateless: nonces are HMACs over their expiry and the client's
 * address, so there is no table to flood. TURN (RFC 8656 §9) uses it for Allocate/Refresh/...; a STUN server can
 * use it for Binding through StunServer.registerMethod.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { NatpunchError } from '../util/errors.js';
import {
  attr,
  type AttributeInit,
  type EncodeOptions,
  longTermKey,
  Nonce,
  nonceFeatures,
  nonceWithFeatures,
  PasswordAlgorithm,
  PasswordAlgorithmAttr,
  PasswordAlgorithms,
  type PasswordAlgorithmName,
  type PasswordAlgorithmValue,
  Realm,
  SecurityFeature,
  type StunMessage,
  type TransportAddress,
  Userhash,
  userhash,
  Username,
  verifyIntegrity,
  verifyIntegritySha256,
  Attr,
} from '../wire/stun/index.js';

/** How long a nonce stays valid; after that the client gets 438 Stale Nonce and retries (RFC 8489 §9.2.4). */
export const DEFAULT_NONCE_LIFETIME_MS = 10 * 60_000;

export interface LongTermAuthOptions {
  realm: string;
  /** The password of `username` in this realm, or undefined for unknown users. */
  getPassword: (username: string) => string | undefined;
  /** Usernames to try when a request carries USERHASH instead of USERNAME (username anonymity, §9.2.1). */
  listUsers?: () => Iterable<string>;
  /** Password algorithms offered, most preferred first. Default SHA-256 then MD5. */
  algorithms?: PasswordAlgorithmName[];
  nonceLifetimeMs?: number;
  /** Key for nonce HMACs; random per instance by default (nonces then die with the process). */
  nonceSecret?: Uint8Array;
  now?: () => number;
}

export type AuthResult =
  | {
      ok: true;
      username: string;
      algorithm: PasswordAlgorithmName;
      key: Uint8Array;
      /** Encode options that sign the response the way the request was signed (§9.2.4 last step). */
      sign: EncodeOptions;
    }
  | {
      ok: false;
      code: 400 | 401 | 438;
      reason: string;
      /** Attributes the error response must carry (REALM, NONCE, PASSWORD-ALGORITHMS for 401/438). */
      attributes: AttributeInit[];
    };

const ALGORITHM_VALUE: Record<PasswordAlgorithmName, number> = {
  MD5: PasswordAlgorithm.MD5,
  'SHA-256': PasswordAlgorithm.SHA256,
};

export class LongTermAuthenticator {
  readonly realm: string;
  readonly #opts: LongTermAuthOptions;
  readonly #secret: Uint8Array;
  readonly #lifetime: number;
  readonly #now: () => number;
  readonly #offered: PasswordAlgorithmValue[];
  readonly #features: number;

  constructor(options: LongTermAuthOptions) {
    if (!options.realm) throw new NatpunchError('BAD_ARGUMENT', 'long-term credentials need a realm');
    this.realm = options.realm;
    this.#opts = options;
    this.#secret = options.nonceSecret ?? randomBytes(32);
    this.#lifetime = options.nonceLifetimeMs ?? DEFAULT_NONCE_LIFETIME_MS;
    this.#now = options.now ?? Date.now;
    const algorithms = options.algorithms ?? ['SHA-256', 'MD5'];
    if (algorithms.length === 0) throw new NatpunchError('BAD_ARGUMENT', 'at least one password algorithm is needed');
    this.#offered = algorithms.map((a) => ({ algorithm: ALGORITHM_VALUE[a], params: new Uint8Array(0) }));
    // §9.2: we always negotiate password algorithms; username anonymity when USERHASH can be resolved.
    this.#features = SecurityFeature.PasswordAlgorithms | (options.listUsers ? SecurityFeature.UsernameAnonymity : 0);
  }

  /** A fresh nonce for `from`: cookie + features + base64url(expiry || HMAC(secret, features, expiry, address)). */
  nonce(from: TransportAddress): string {
    const expiry = Math.floor((this.#now() + this.#lifetime) / 1000);
    const e = Buffer.alloc(4);
    e.writeUInt32BE(expiry >>> 0);
    return nonceWithFeatures(this.#features, Buffer.concat([e, this.#mac(e, from)]).toString('base64url'));
  }

  #mac(expiry: Buffer, from: TransportAddress): Buffer {
    return createHmac('sha256', this.#secret)
      .update(`${this.#features}|${from.address}|`)
      .update(expiry)
      .digest()
      .subarray(0, 12);
  }

  /** 'ok', 'stale' (well-formed, ours, expired) or 'bad'. */
  #checkNonce(nonce: string, from: TransportAddress): 'ok' | 'stale' | 'bad' {
    if (nonceFeatures(nonce) !== this.#features) return 'bad';
    const body = Buffer.from(nonce.slice(13), 'base64url');
    if (body.length !== 16) return 'bad';
    const expiry = body.subarray(0, 4);
    if (!timingSafeEqual(body.subarray(4), this.#mac(expiry, from))) return 'bad';
    return expiry.readUInt32BE(0) * 1000 < this.#now() ? 'stale' : 'ok';
  }

  /** REALM, NONCE and PASSWORD-ALGORITHMS for a 401/438 (§9.2.4). */
  challenge(from: TransportAddress): AttributeInit[] {
    return [attr(Realm, this.realm), attr(Nonce, this.nonce(from)), attr(PasswordAlgorithms, this.#offered)];
  }

  #fail(code: 400 | 401 | 438, reason: string, from: TransportAddress): AuthResult {
    return { ok: false, code, reason, attributes: code === 400 ? [] : this.challenge(from) };
  }

  /** Checks a request per RFC 8489 §9.2.4. Decoding problems in its attributes count as 400. */
  check(req: StunMessage, from: TransportAddress): AuthResult {
    try {
      return this.#check(req, from);
    } catch (err) {
      if (err instanceof NatpunchError && err.code === 'STUN_DECODE') return this.#fail(400, 'Bad Request', from);
      throw err;
    }
  }

  #check(req: StunMessage, from: TransportAddress): AuthResult {
    const hasMi = req.has(Attr.MESSAGE_INTEGRITY);
    const hasMi256 = req.has(Attr.MESSAGE_INTEGRITY_SHA256);
    // Step 1: no integrity at all -> 401 with a challenge.
    if (!hasMi && !hasMi256) return this.#fail(401, 'Unauthorized', from);
    // Step 2: integrity present but USERNAME/USERHASH, REALM or NONCE missing -> 400.
    const username = req.get(Username);
    const hash = req.get(Userhash);
    const realm = req.get(Realm);
    const nonce = req.get(Nonce);
    if ((username === undefined && hash === undefined) || realm === undefined || nonce === undefined) {
      return this.#fail(400, 'Bad Request', from);
    }
    // Step 3: the nonce must be ours and fresh (438 gets a new one).
    const state = this.#checkNonce(nonce, from);
    if (state !== 'ok')
      return this.#fail(state === 'stale' ? 438 : 401, state === 'stale' ? 'Stale Nonce' : 'Unauthorized', from);
    if (realm !== this.realm) return this.#fail(401, 'Unauthorized', from);
    // Step 4: password algorithm negotiation with bid-down protection (§9.2.4, "If the request contains ...").
    const list = req.get(PasswordAlgorithms);
    const chosen = req.get(PasswordAlgorithmAttr);
    let algorithm: PasswordAlgorithmName;
    if (!list && !chosen) {
      if (!this.#offered.some((a) => a.algorithm === PasswordAlgorithm.MD5))
        return this.#fail(400, 'Bad Request', from);
      algorithm = 'MD5'; // an RFC 5389 client
    } else if (!list || !chosen) {
      return this.#fail(400, 'Bad Request', from);
    } else {
      const same =
        list.length === this.#offered.length &&
        list.every((a, i) => a.algorithm === this.#offered[i]!.algorithm && a.params.length === 0);
      if (!same || !this.#offered.some((a) => a.algorithm === chosen.algorithm))
        return this.#fail(400, 'Bad Request', from);
      algorithm = chosen.algorithm === PasswordAlgorithm.SHA256 ? 'SHA-256' : 'MD5';
    }
    // Step 5: find the user (by USERHASH when anonymity is on) and derive the key.
    let user = username;
    if (user === undefined && hash && this.#opts.listUsers) {
      for (const candidate of this.#opts.listUsers()) {
        if (timingSafeEqual(Buffer.from(userhash(candidate, this.realm)), Buffer.from(hash))) {
          user = candidate;
          break;
        }
      }
    }
    const password = user === undefined ? undefined : this.#opts.getPassword(user);
    if (user === undefined || password === undefined) return this.#fail(401, 'Unauthorized', from);
    const key = longTermKey(user, this.realm, password, algorithm);
    // Step 6: the integrity the client used must verify (SHA-256 variant preferred when both are present).
    const valid = hasMi256 ? verifyIntegritySha256(req, key) : verifyIntegrity(req, key);
    if (!valid) return this.#fail(401, 'Unauthorized', from);
    const sign: EncodeOptions = hasMi256 ? { integritySha256: key } : { integrity: key };
    return { ok: true, username: user, algorithm, key, sign };
  }
}
