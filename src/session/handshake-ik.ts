import { createRequire } from 'node:module';
import { NatpunchError } from '../util/errors.js';
import type { CheckAnswer, CheckHandshake } from '../traversal/checks.js';
import type { KeyPair } from './identity.js';

/**
 * Noise IK folded into the connectivity checks (docs/handshake.md).
 *
 *   <- s                  the listener's static key: the connector knows it from the offer / its pin
 *   -> e, es, s, ss       message 1, carried by the connector's check requests (may carry early data)
 *   <- e, ee, se          message 2, carried by the listener's check response: the handshake is complete
 *
 * Noise_IK_Ed25519_ChaChaPoly_BLAKE2b via noise-handshake + noise-curve-ed: the primitives @hyperswarm/secret-stream
 * uses for XX, so the resulting { tx, rx, hash } key a secret-stream exactly as its own handshake would.
 *
 * Check payload (opaque to src/traversal/checks.ts), first byte = type:
 *   1 IK1        request:  Noise message 1
 *   2 IK2        response: Noise message 2
 *   3 ELSEWHERE  response: message 1 was accepted on another pair (this pair works but is not the session's)
 *   4 DECLINE    response: u8 reason; the connector falls back to XX
 * Message 1 plaintext: u8 version | u64be sender clock (ms since the epoch) | early data.
 * Message 2 plaintext: u8 status (0 accepted, 1 not allowed) | u8 multiplexer version.
 * Prologue: "natpunch IK v1" | connection id (a message 1 never decrypts in another connection).
 */

const require = createRequire(import.meta.url);

interface NoiseState {
  rs: Uint8Array | null;
  tx: Uint8Array | null;
  rx: Uint8Array | null;
  hash: Uint8Array | null;
  complete: boolean;
  e: { publicKey: Uint8Array; secretKey: Uint8Array } | null;
  initialise(prologue: Uint8Array, remoteStatic?: Uint8Array): void;
  send(payload?: Uint8Array): Uint8Array;
  recv(message: Uint8Array): Uint8Array;
}
type NoiseCtor = new (
  pattern: string,
  initiator: boolean,
  staticKeyPair: KeyPair,
  opts: { curve: unknown },
) => NoiseState;

export const IkPayload = { IK1: 1, IK2: 2, ELSEWHERE: 3, DECLINE: 4 } as const;
export const IkDecline = { UNDECRYPTABLE: 1, STALE: 2, BUSY: 3, UNEXPECTED_KEY: 4, VERSION: 5 } as const;
const DECLINE_NAMES: Record<number, string> = {
  [IkDecline.UNDECRYPTABLE]: 'message 1 did not decrypt (the listener has another key than the one pinned)',
  [IkDecline.STALE]: 'the clocks differ by more than the replay window',
  [IkDecline.BUSY]: 'the replay cache is full',
  [IkDecline.UNEXPECTED_KEY]: 'the connector is not the key the rendezvous introduced',
  [IkDecline.VERSION]: 'unknown IK payload version',
};

export const IK_VERSION = 1;
/** Early data rides in message 1 only; bounded so a check stays ≤ 1156 bytes (< 1200, see docs/handshake.md). */
export const MAX_EARLY_DATA_BYTES = 1000;
/** Message 1 is accepted only when the two clocks agree within this (bounds how long replays must be remembered). */
export const IK_CLOCK_WINDOW_MS = 60_000;
/** Replay-cache entries: an ephemeral key is remembered this long (covers the whole acceptance window). */
export const IK_REPLAY_MEMORY_MS = 2 * IK_CLOCK_WINDOW_MS;
/** At most this many remembered ephemerals (~2.5 MB; 136 IK handshakes a second for the whole memory time); when
 *  full, IK is declined (XX) rather than forgetting early. */
export const IK_REPLAY_CACHE_MAX = 16_384;
/** Message 1s per attempt that failed to decrypt before the listener stops trying (each costs two DH operations). */
export const MAX_UNDECRYPTABLE_PER_ATTEMPT = 8;

const PROLOGUE_LABEL = Buffer.from('natpunch IK v1');
const MSG1_PLAIN_HEADER = 1 + 8;
const STATUS_ACCEPTED = 0;
const STATUS_NOT_ALLOWED = 1;
/** Ed25519 point (e, s) and ChaChaPoly tag sizes (Noise spec §4: DHLEN 32, §5.1: 16-byte tags). */
const DHLEN = 32;
const TAGLEN = 16;
/** Message 1: e | enc(s) | enc(payload). */
const MIN_MSG1_BYTES = DHLEN + DHLEN + TAGLEN + TAGLEN + MSG1_PLAIN_HEADER;
const MAX_MSG1_BYTES = MIN_MSG1_BYTES + MAX_EARLY_DATA_BYTES;

function noiseModules(): { Noise: NoiseCtor; curve: unknown } {
  return { Noise: require('noise-handshake') as NoiseCtor, curve: require('noise-curve-ed') as unknown };
}

function prologueFor(connectionId: Uint8Array | string): Buffer {
  return Buffer.concat([PROLOGUE_LABEL, Buffer.from(connectionId)]);
}

/** A completed handshake in the shape @hyperswarm/secret-stream accepts as `opts.handshake`. */
export interface CompletedHandshake {
  tx: Buffer;
  rx: Buffer;
  hash: Buffer;
  publicKey: Buffer;
  remotePublicKey: Buffer;
}

function completed(noise: NoiseState, keyPair: KeyPair): CompletedHandshake {
  return {
    tx: Buffer.from(noise.tx!),
    rx: Buffer.from(noise.rx!),
    hash: Buffer.from(noise.hash!),
    publicKey: Buffer.from(keyPair.publicKey),
    remotePublicKey: Buffer.from(noise.rs!),
  };
}

type Address = { address: string; port: number };
const sameAddress = (a: Address, b: Address) => a.address === b.address && a.port === b.port;

/**
 * The listener's memory of message-1 ephemerals (one per listener, shared by its attempts). A message 1 whose
 * ephemeral key was seen within IK_REPLAY_MEMORY_MS is a replay.
 */
export class IkReplayCache {
  #seen = new Map<string, number>();
  #max: number;
  #memoryMs: number;

  constructor(options: { maxEntries?: number; memoryMs?: number } = {}) {
    this.#max = options.maxEntries ?? IK_REPLAY_CACHE_MAX;
    this.#memoryMs = options.memoryMs ?? IK_REPLAY_MEMORY_MS;
  }

  /** 'fresh' (now remembered), 'replay' (seen before) or 'full' (cannot remember more: decline IK). */
  admit(ephemeral: Uint8Array, now = Date.now()): 'fresh' | 'replay' | 'full' {
    // Entries are in insertion order, so expired ones are at the front.
    for (const [k, expires] of this.#seen) {
      if (expires > now) break;
      this.#seen.delete(k);
    }
    const key = Buffer.from(ephemeral).toString('hex');
    if (this.#seen.has(key)) return 'replay';
    if (this.#seen.size >= this.#max) return 'full';
    this.#seen.set(key, now + this.#memoryMs);
    return 'fresh';
  }

  get size(): number {
    return this.#seen.size;
  }
}

export interface IkInitiatorOptions {
  keyPair: KeyPair;
  /** The listener's static key (from the offer, or the pinned key). */
  remoteKey: Uint8Array;
  connectionId: Uint8Array | string;
  /** Sent inside message 1 (not forward secret against the listener's key; see docs/handshake.md). */
  earlyData?: Uint8Array;
  /** Clock for the message-1 timestamp (tests). */
  now?: () => number;
}

export type IkInitiatorState =
  | { state: 'waiting' }
  | { state: 'complete'; handshake: CompletedHandshake; earlyDataAccepted: boolean }
  | { state: 'refused' }
  | { state: 'declined'; reason: string };

/**
 * Connector side: builds message 1 once (every check request carries the same bytes) and completes the handshake
 * from the first valid message 2. A message 2 that does not decrypt is ignored (the state is rebuilt for each
 * attempt, so a forged answer cannot spoil the real one).
 */
export class IkInitiator implements CheckHandshake {
  readonly message1: Buffer;
  #o: IkInitiatorOptions;
  #ephemeral: { publicKey: Buffer; secretKey: Buffer };
  #plain1: Buffer;
  #state: IkInitiatorState = { state: 'waiting' };

  constructor(options: IkInitiatorOptions) {
    const early = options.earlyData ? Buffer.from(options.earlyData) : Buffer.alloc(0);
    if (early.length > MAX_EARLY_DATA_BYTES) {
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `early data of ${early.length} bytes exceeds ${MAX_EARLY_DATA_BYTES}; send the rest on a stream once connected`,
      );
    }
    if (options.remoteKey.length !== DHLEN)
      throw new NatpunchError('BAD_ARGUMENT', 'the listener key must be 32 bytes');
    this.#o = options;
    this.#plain1 = Buffer.alloc(MSG1_PLAIN_HEADER + early.length);
    this.#plain1[0] = IK_VERSION;
    this.#plain1.writeBigUInt64BE(BigInt(Math.max(0, Math.floor((options.now ?? Date.now)()))), 1);
    early.copy(this.#plain1, MSG1_PLAIN_HEADER);
    const { Noise, curve } = noiseModules();
    const first = new Noise('IK', true, options.keyPair, { curve });
    first.initialise(prologueFor(options.connectionId), Buffer.from(options.remoteKey));
    const m1 = Buffer.from(first.send(this.#plain1));
    this.#ephemeral = { publicKey: Buffer.from(first.e!.publicKey), secretKey: Buffer.from(first.e!.secretKey) };
    this.message1 = Buffer.concat([Buffer.from([IkPayload.IK1]), m1]);
  }

  get state(): IkInitiatorState {
    return this.#state;
  }

  get earlyDataBytes(): number {
    return this.#plain1.length - MSG1_PLAIN_HEADER;
  }

  requestPayload(): Buffer {
    return this.message1;
  }

  onRequest(): null {
    return null; // the connector answers the listener's checks without a payload
  }

  onResponse(payload: Buffer | null): 'nominate' | 'ignore' | 'plain' {
    if (this.#state.state === 'complete' || this.#state.state === 'refused') return 'ignore';
    if (!payload || payload.length === 0) return 'plain'; // an older listener: XX
    switch (payload[0]) {
      case IkPayload.IK2:
        return this.#complete(payload.subarray(1));
      case IkPayload.ELSEWHERE:
        return 'ignore';
      case IkPayload.DECLINE:
        this.#state = { state: 'declined', reason: DECLINE_NAMES[payload[1] ?? 0] ?? `reason ${payload[1]}` };
        return 'plain';
      default:
        return 'plain'; // a newer listener's payload we do not know: XX works with everyone
    }
  }

  #complete(message2: Buffer): 'nominate' | 'ignore' {
    const { Noise, curve } = noiseModules();
    try {
      // A fresh state per answer: noise-handshake's state is spoiled by a failed recv. Same ephemeral, same
      // message 1 bytes (ChaChaPoly is deterministic for the same key and nonce).
      const noise = new Noise('IK', true, this.#o.keyPair, { curve });
      noise.e = {
        publicKey: Buffer.from(this.#ephemeral.publicKey),
        secretKey: Buffer.from(this.#ephemeral.secretKey),
      };
      noise.initialise(prologueFor(this.#o.connectionId), Buffer.from(this.#o.remoteKey));
      noise.send(this.#plain1);
      const plain = Buffer.from(noise.recv(Buffer.from(message2)));
      if (!noise.complete || plain.length < 2) return 'ignore';
      if (plain[0] === STATUS_NOT_ALLOWED) {
        this.#state = { state: 'refused' };
        return 'nominate';
      }
      if (plain[0] !== STATUS_ACCEPTED) return 'ignore';
      this.#state = { state: 'complete', handshake: completed(noise, this.#o.keyPair), earlyDataAccepted: true };
      this.#ephemeral.secretKey.fill(0);
      return 'nominate';
    } catch {
      return 'ignore'; // forged, corrupted or from another key: not message 2 of this handshake
    }
  }
}

export interface IkAccepted {
  handshake: CompletedHandshake;
  /** The early data of message 1 (exactly once: only the state that accepted it carries it). */
  earlyData: Buffer | null;
  /** Where message 1 came from: the session's remote address. */
  from: Address;
}

export interface IkResponderOptions {
  keyPair: KeyPair;
  connectionId: Uint8Array | string;
  /** The connector's key as the introduction gave it: message 1 must prove exactly this key. */
  expectedKey: Uint8Array;
  replay: IkReplayCache;
  /** Who may connect; decided on message 1, before any answer carries message 2. */
  allow?: (remoteKey: Buffer) => boolean | Promise<boolean>;
  muxVersion: number;
  /** Called once when message 1 was accepted (the session can start), or when the connector was refused. */
  onAccept: (accepted: IkAccepted) => void;
  onRefuse?: (remoteKey: Buffer) => void;
  now?: () => number;
}

type ResponderState =
  | { state: 'idle' }
  | { state: 'pending'; message1: Buffer; done: Promise<void> }
  | { state: 'answered'; message1: Buffer; from: Address; answer: Buffer }
  | { state: 'declined'; message1: Buffer; answer: Buffer };

/**
 * Listener side: one IK state per attempt. The first acceptable message 1 decides; retransmissions of those same
 * bytes get the same message 2 (on the pair it came from) or ELSEWHERE (on other pairs); other message 1s are
 * dropped; replays seen by the listener before are dropped without an answer.
 */
export class IkResponder implements CheckHandshake {
  #o: IkResponderOptions;
  #s: ResponderState = { state: 'idle' };
  #undecryptable = 0;

  constructor(options: IkResponderOptions) {
    this.#o = options;
  }

  requestPayload(): null {
    return null;
  }

  onResponse(): 'plain' {
    return 'plain'; // the listener's own checks carry no handshake
  }

  get accepted(): boolean {
    return this.#s.state === 'answered';
  }

  onRequest(payload: Buffer, from: Address): CheckAnswer | null | Promise<CheckAnswer | null> {
    if (payload.length === 0 || payload[0] !== IkPayload.IK1) return { payload: null }; // not ours: a plain answer
    const m1 = payload.subarray(1);
    const s = this.#s;
    if (s.state === 'pending') return s.message1.equals(m1) ? s.done.then(() => this.onRequest(payload, from)) : null;
    if (s.state === 'answered') {
      if (!s.message1.equals(m1)) return null; // one handshake per attempt
      return sameAddress(s.from, from) ? { payload: s.answer } : { payload: Buffer.from([IkPayload.ELSEWHERE]) };
    }
    if (s.state === 'declined') return s.message1.equals(m1) ? { payload: s.answer } : null;
    return this.#first(Buffer.from(m1), from);
  }

  #decline(message1: Buffer, reason: number): CheckAnswer {
    const answer = Buffer.from([IkPayload.DECLINE, reason]);
    this.#s = { state: 'declined', message1, answer };
    return { payload: answer };
  }

  #first(m1: Buffer, from: Address): CheckAnswer | null | Promise<CheckAnswer | null> {
    if (m1.length < MIN_MSG1_BYTES || m1.length > MAX_MSG1_BYTES) return null;
    const undecryptable = { payload: Buffer.from([IkPayload.DECLINE, IkDecline.UNDECRYPTABLE]) };
    if (this.#undecryptable >= MAX_UNDECRYPTABLE_PER_ATTEMPT) return undecryptable; // no more DH work for junk
    const { Noise, curve } = noiseModules();
    const noise = new Noise('IK', false, this.#o.keyPair, { curve });
    let plain: Buffer;
    const ephemeral = Buffer.from(m1.subarray(0, DHLEN));
    try {
      noise.initialise(prologueFor(this.#o.connectionId));
      plain = Buffer.from(noise.recv(Buffer.from(m1))); // a copy: noise-handshake zeroes what it read
    } catch {
      // Encrypted to another key (the connector pinned someone else) or garbage: XX settles it. Not remembered,
      // so garbage injected by someone who knows the check key cannot block the real message 1 (up to a bound).
      this.#undecryptable++;
      return undecryptable;
    }
    const remoteKey = Buffer.from(noise.rs!);
    if (!remoteKey.equals(Buffer.from(this.#o.expectedKey))) return this.#decline(m1, IkDecline.UNEXPECTED_KEY);
    if (plain.length < MSG1_PLAIN_HEADER || plain[0] !== IK_VERSION) return this.#decline(m1, IkDecline.VERSION);
    const now = (this.#o.now ?? Date.now)();
    const sent = Number(plain.readBigUInt64BE(1));
    if (Math.abs(now - sent) > IK_CLOCK_WINDOW_MS) return this.#decline(m1, IkDecline.STALE);
    const admitted = this.#o.replay.admit(ephemeral, now);
    if (admitted === 'replay') return null; // never answered, never a second session
    if (admitted === 'full') return this.#decline(m1, IkDecline.BUSY);
    const earlyData = plain.length > MSG1_PLAIN_HEADER ? Buffer.from(plain.subarray(MSG1_PLAIN_HEADER)) : null;
    plain.fill(0);
    const finish = (allowed: boolean): CheckAnswer => {
      const m2 = Buffer.from(
        noise.send(Buffer.from([allowed ? STATUS_ACCEPTED : STATUS_NOT_ALLOWED, this.#o.muxVersion])),
      );
      const answer = Buffer.concat([Buffer.from([IkPayload.IK2]), m2]);
      this.#s = { state: 'answered', message1: m1, from: { ...from }, answer };
      if (allowed) {
        this.#o.onAccept({ handshake: completed(noise, this.#o.keyPair), earlyData, from: { ...from } });
        return { payload: answer, select: true };
      }
      this.#o.onRefuse?.(remoteKey);
      return { payload: answer };
    };
    const allow = this.#o.allow;
    if (!allow) return finish(true);
    const verdict = (async () => {
      try {
        return (await allow(remoteKey)) === true;
      } catch {
        return false;
      }
    })();
    const answered = verdict.then(finish);
    this.#s = { state: 'pending', message1: m1, done: answered.then(() => {}) };
    return answered;
  }
}
