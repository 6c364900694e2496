import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { FirstByte } from '../net/demux.js';
import type { DatagramTransport, RemoteInfo } from '../net/datagram.js';
import { candidateKey, candidatePriority, type Candidate } from './candidate.js';

/**
 * ICE-style UDP connectivity checks (RFC 8445 §7) over a shared DatagramTransport, first byte 0xF1.
 *
 * Both peers send authenticated check requests to every remote candidate at once, paced, with retransmissions
 * (RFC 8445 §14.3 pacing, RFC 8489 §6.2.1 backoff). A response proves the pair works both ways. Requests from an
 * address we were not told of become peer-reflexive candidates (§7.3.1.3) and get a triggered check (§7.3.1.4).
 * The initiator (the controlling agent, §6.1.1) nominates the first pair that succeeded (§8.1.1) and both stop:
 * either with a nominate/ack exchange, or (nomination: 'implicit', what connect()/listen() use) by starting the
 * session on that pair at once, its first packet telling the responder which pair won (cf. aggressive nomination,
 * RFC 5245 §8.1.1.2), which saves a round trip.
 *
 * Probe layout (all integers big-endian):
 *   0   u8   0xF1
 *   1   u8   kind: 1 request, 2 response, 3 nominate, 4 nominate-ack
 *   2   u8   flags: bit 0 set when the sender is the initiator (a reflected probe is ignored, cf. §7.3.1.1);
 *             bit 1 set when a handshake payload follows (older peers ignore it; see docs/handshake.md)
 *   3   u8   0
 *   4   16   connection tag: SHA-256(connection id)[0..16]
 *   20  12   transaction id (as RFC 8489 §5)
 *   32  ...  responses only: the source address the request came from: u8 family (4|6), u16 port, address bytes
 *   ..  u16  flags bit 1 only: payload length, then the payload (opaque here: a Noise IK message, CheckHandshake)
 *   end 16   HMAC-SHA256(key, everything before)[0..16] (the role of MESSAGE-INTEGRITY, RFC 8489 §14.5)
 *
 * A check with a payload stays within MAX_CHECK_BYTES, the 1200 bytes natpunch assumes any path carries (RFC 9000
 * §14's figure, under IPv6's 1280-byte minimum MTU, RFC 8200 §5).
 */
export const ProbeKind = { REQUEST: 1, RESPONSE: 2, NOMINATE: 3, NOMINATE_ACK: 4 } as const;

/** RFC 8445 §14.2 suggests Ta = 50 ms for non-RTP; natpunch checks one socket, so a shorter pace is safe. */
export const DEFAULT_PACE_MS = 10;
/** First retransmission after 100 ms, doubling (RFC 8489 §6.2.1 uses RTO 500 ms; peers are often near). */
export const DEFAULT_INITIAL_RTO_MS = 100;
export const MAX_RTO_MS = 800;
/** Requests per pair before the pair is given up (RFC 8489 §6.2.1 Rc = 7; more since both NATs must open). */
export const DEFAULT_MAX_REQUESTS_PER_PAIR = 12;
/** Whole check phase bound: a pair that works answers within a second or two; pairs that cannot go direct fail fast. */
export const DEFAULT_CHECK_TIMEOUT_MS = 5_000;
/** After completing, keep answering the peer's probes this long (its final nominate may need a retransmission). */
export const DEFAULT_LINGER_MS = 3_000;
/** At most this many remote candidates are checked (bad input cannot make us flood). */
export const MAX_REMOTE_CANDIDATES = 32;
/** Implicit nomination: how long a working pair waits for a higher-priority one still being checked. */
export const NOMINATION_GRACE_MS = 25;
/**
 * The first check of up to this many pairs leaves at once, the rest paced: a pace step spent on an unreachable host
 * candidate would delay the public one (and with it the handshake riding on it). RFC 8445 §14 paces checks to bound
 * their sustained rate; one burst of a few small checks at the start does not change it.
 */
export const INITIAL_BURST_PAIRS = 4;
/** Nominations sent before a succeeded pair is given up. */
const MAX_NOMINATIONS = 8;

const HEADER_BYTES = 32;
const MAC_BYTES = 16;
const FLAG_INITIATOR = 1;
const FLAG_PAYLOAD = 2;
/** Largest check datagram, payload included (see the layout above). */
export const MAX_CHECK_BYTES = 1200;
/** Largest handshake payload: a response's header, IPv6 address, length and MAC must fit next to it. */
export const MAX_CHECK_PAYLOAD_BYTES = MAX_CHECK_BYTES - HEADER_BYTES - 19 - 2 - MAC_BYTES;

/** What a responder's handshake answers to a request's payload. */
export interface CheckAnswer {
  /** Payload for the response (null: a plain response). */
  payload: Uint8Array | null;
  /** Implicit nomination: the handshake chose this pair; the responder finishes the checks on it at once. */
  select?: boolean;
}

/**
 * A handshake riding on the checks (src/session/handshake-ik.ts): the checks carry its bytes, authenticated by the
 * check MAC like everything else, and act on its verdicts. The handshake does its own cryptography.
 */
export interface CheckHandshake {
  /** Initiator: the payload every request carries (null: none). */
  requestPayload(): Uint8Array | null;
  /**
   * Responder: the answer to a request's payload. null sends no response at all (a replay, or a message that is
   * not this handshake's); a promise delays the response until it settles.
   */
  onRequest(payload: Buffer, from: { address: string; port: number }): CheckAnswer | null | Promise<CheckAnswer | null>;
  /**
   * Initiator: a response came back (payload null when it had none). 'nominate': use this pair now (the handshake
   * completed on it); 'ignore': the pair is not the session's; 'plain': an ordinary response.
   */
  onResponse(payload: Buffer | null, from: { address: string; port: number }): 'nominate' | 'ignore' | 'plain';
}

export interface CheckOptions {
  transport: DatagramTransport;
  /** The initiator nominates; the responder waits for its nomination. */
  role: 'initiator' | 'responder';
  connectionId: Uint8Array | string;
  /** Key both peers derived from what the rendezvous told them; authenticates every probe. */
  key: Uint8Array;
  local: Candidate[];
  remote: Candidate[];
  paceMs?: number;
  initialRtoMs?: number;
  maxRequestsPerPair?: number;
  timeoutMs?: number;
  lingerMs?: number;
  /**
   * 'ack' (default): the initiator sends a nomination and finishes on its acknowledgement; the responder finishes
   * when nominated. 'implicit': the initiator finishes on the first pair that worked and uses it at once (the
   * session's first packet is the nomination, saving a round trip); the responder finishes when its caller
   * calls select() with the address that packet came from (see isValidated()).
   */
  nomination?: 'ack' | 'implicit';
  /** A handshake carried in the checks' requests and responses (docs/handshake.md). */
  handshake?: CheckHandshake;
  signal?: AbortSignal;
  logger?: Logger;
}

export interface PairReport {
  remote: string;
  type: string;
  requests: number;
  responses: number;
  state: 'waiting' | 'in-progress' | 'succeeded' | 'failed' | 'skipped';
  reason?: string;
}

export interface CheckResult {
  /** Where the session should send. */
  remote: { address: string; port: number };
  remoteCandidate: Candidate;
  /** Our candidate the peer saw us as (host when the peer reached our interface address), or a prflx one. */
  localCandidate: Candidate | null;
  /** How the peer saw us (our reflexive address on this path), when known. */
  mapped: { address: string; port: number } | null;
  kind: 'lan' | 'direct';
  rttMs: number | null;
  tried: PairReport[];
}

type ResolvedOptions = Required<Omit<CheckOptions, 'signal' | 'logger' | 'handshake'>> &
  Pick<CheckOptions, 'signal' | 'handshake'>;

interface Pair {
  candidate: Candidate;
  key: string;
  state: PairReport['state'];
  requests: number;
  responses: number;
  /** Authenticated requests received from this address. */
  heard: number;
  nextAt: number;
  tx: Map<string, number>;
  rttMs: number | null;
  reason?: string;
  mapped: { address: string; port: number } | null;
  via: { address: string; port: number } | null;
}

function tagOf(connectionId: Uint8Array | string): Buffer {
  return createHash('sha256').update('natpunch check tag').update(connectionId).digest().subarray(0, 16);
}

/** Derives the probe key from what both peers know after the rendezvous: connection id and both public keys. */
export function deriveCheckKey(connectionId: Uint8Array | string, keyA: Uint8Array, keyB: Uint8Array): Buffer {
  const [x, y] = Buffer.compare(Buffer.from(keyA), Buffer.from(keyB)) <= 0 ? [keyA, keyB] : [keyB, keyA];
  return createHmac('sha256', Buffer.from(typeof connectionId === 'string' ? Buffer.from(connectionId) : connectionId))
    .update('natpunch check key')
    .update(x)
    .update(y)
    .digest();
}

function encodeAddress(address: string, port: number): Buffer {
  const fam = isIP(address);
  if (fam === 4) {
    const b = Buffer.alloc(7);
    b[0] = 4;
    b.writeUInt16BE(port, 1);
    address.split('.').forEach((o, i) => (b[3 + i] = Number(o)));
    return b;
  }
  if (fam === 6) {
    const b = Buffer.alloc(19);
    b[0] = 6;
    b.writeUInt16BE(port, 1);
    ipv6Bytes(address).copy(b, 3);
    return b;
  }
  return Buffer.alloc(0);
}

function ipv6Bytes(address: string): Buffer {
  const out = Buffer.alloc(16);
  let a = address.split('%')[0]!;
  if (a.includes('.')) {
    // ::ffff:1.2.3.4 style tail
    const idx = a.lastIndexOf(':');
    const v4 = a
      .slice(idx + 1)
      .split('.')
      .map(Number);
    a = `${a.slice(0, idx)}:${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`;
  }
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g || '0', 16), i * 2));
  return out;
}

function decodeAddress(b: Buffer): { address: string; port: number } | null {
  if (b.length === 7 && b[0] === 4) return { address: [...b.subarray(3)].join('.'), port: b.readUInt16BE(1) };
  if (b.length === 19 && b[0] === 6) {
    const groups: string[] = [];
    for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(3 + i * 2).toString(16));
    return { address: groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::'), port: b.readUInt16BE(1) };
  }
  return null;
}

function sameAddress(a: { address: string; port: number }, b: { address: string; port: number }): boolean {
  return a.port === b.port && a.address === b.address;
}

/**
 * One run of connectivity checks with one peer. `run()` resolves with the nominated pair; afterwards the object
 * keeps answering the peer's probes for `lingerMs` (or until close()).
 */
export class ConnectivityChecks {
  #o: ResolvedOptions;
  #log: Logger;
  #tag: Buffer;
  #key: Buffer;
  #pairs: Pair[] = [];
  #isInitiator: boolean;
  #off: (() => void) | null = null;
  #timer: NodeJS.Timeout | null = null;
  #deadline: NodeJS.Timeout | null = null;
  #linger: NodeJS.Timeout | null = null;
  #done = false;
  #closed = false;
  #nominating: { pair: Pair; tx: Buffer; sent: number; nextAt: number } | null = null;
  #graceTimer: NodeJS.Timeout | null = null;
  #resolve: ((r: CheckResult) => void) | null = null;
  #reject: ((e: Error) => void) | null = null;
  #family: 4 | 6;
  #onAbort = () =>
    this.#fail(
      new NatpunchError('ABORTED', 'connectivity checks aborted', {
        cause: this.#o.signal?.reason,
        details: { tried: this.report() },
      }),
    );
  #result: CheckResult | null = null;

  constructor(options: CheckOptions) {
    this.#o = {
      paceMs: DEFAULT_PACE_MS,
      initialRtoMs: DEFAULT_INITIAL_RTO_MS,
      maxRequestsPerPair: DEFAULT_MAX_REQUESTS_PER_PAIR,
      timeoutMs: DEFAULT_CHECK_TIMEOUT_MS,
      lingerMs: DEFAULT_LINGER_MS,
      nomination: 'ack',
      ...options,
    } as ResolvedOptions;
    if (options.key.length < 16) throw new NatpunchError('BAD_ARGUMENT', 'the check key must be at least 16 bytes');
    this.#log = options.logger ?? silentLogger;
    this.#tag = tagOf(options.connectionId);
    this.#key = Buffer.from(options.key);
    this.#isInitiator = options.role === 'initiator';
    this.#family = options.transport.address().family === 'IPv6' ? 6 : 4;
    const requestPayload = options.handshake?.requestPayload();
    if (requestPayload && requestPayload.length > MAX_CHECK_PAYLOAD_BYTES) {
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `a check payload of ${requestPayload.length} bytes does not fit a ${MAX_CHECK_BYTES}-byte check`,
      );
    }
    for (const c of options.remote.slice(0, MAX_REMOTE_CANDIDATES)) this.#addPair(c, 0);
  }

  #addPair(c: Candidate, nextAt: number): Pair {
    const key = candidateKey(c);
    const existing = this.#pairs.find((p) => p.key === key);
    if (existing) return existing;
    const pair: Pair = {
      candidate: c,
      key,
      state: 'waiting',
      requests: 0,
      responses: 0,
      heard: 0,
      nextAt,
      tx: new Map(),
      rttMs: null,
      mapped: null,
      via: null,
    };
    const fam = isIP(c.address);
    if (c.transport !== 'udp') {
      pair.state = 'skipped';
      pair.reason = 'not a UDP candidate';
    } else if (fam === 0 || !Number.isInteger(c.port) || c.port <= 0 || c.port > 65535) {
      pair.state = 'skipped';
      pair.reason = 'invalid address';
    } else if (fam !== this.#family && !(this.#family === 6 && fam === 4)) {
      pair.state = 'skipped';
      pair.reason = `IPv${fam} candidate on an IPv${this.#family} socket`;
    }
    this.#pairs.push(pair);
    this.#pairs.sort((a, b) => b.candidate.priority - a.candidate.priority);
    return pair;
  }

  report(): PairReport[] {
    return this.#pairs.map((p) => ({
      remote: `${p.candidate.address.includes(':') ? `[${p.candidate.address}]` : p.candidate.address}:${p.candidate.port}`,
      type: p.candidate.type,
      requests: p.requests,
      responses: p.responses,
      state: p.state,
      ...(p.reason
        ? { reason: p.reason }
        : p.state === 'failed' || (p.state === 'in-progress' && p.responses === 0)
          ? { reason: 'no response' }
          : {}),
    }));
  }

  run(): Promise<CheckResult> {
    if (this.#resolve || this.#done) return Promise.reject(new NatpunchError('BAD_ARGUMENT', 'checks already ran'));
    return new Promise<CheckResult>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
      if (this.#o.signal?.aborted) return this.#onAbort();
      this.#o.signal?.addEventListener('abort', this.#onAbort, { once: true });
      this.#off = this.#o.transport.onMessage((msg, rinfo) => this.#onMessage(msg, rinfo));
      this.#deadline = setTimeout(() => this.#fail(this.#failure()), this.#o.timeoutMs);
      this.#timer = setInterval(() => this.#tick(), this.#o.paceMs);
      for (let i = 0; i < INITIAL_BURST_PAIRS; i++) this.#tick();
    });
  }

  #failure(): NatpunchError {
    const tried = this.report();
    const summary =
      tried.length === 0
        ? 'the peer offered no candidates'
        : tried
            .map(
              (t) =>
                `${t.remote} (${t.type}, ${t.requests} checks, ${t.responses ? `${t.responses} responses, ${t.state}` : (t.reason ?? t.state)})`,
            )
            .join('; ');
    const nominated = this.#isInitiator ? '' : ' (no nomination from the initiator)';
    return new NatpunchError(
      'PUNCH_FAILED',
      `no direct UDP path to the peer within ${this.#o.timeoutMs} ms${nominated}: tried ${summary}`,
      { details: { tried } },
    );
  }

  /** Sends at most one probe per pace interval: the nomination first, then the pair most overdue. */
  #tick(): void {
    if (this.#done || this.#closed) return;
    const now = Date.now();
    const nom = this.#nominating;
    if (nom) {
      if (now >= nom.nextAt) {
        if (nom.sent >= MAX_NOMINATIONS) {
          nom.pair.state = 'failed';
          nom.pair.reason = 'nomination not acknowledged';
          this.#nominating = null;
          this.#maybeNominate();
        } else {
          nom.sent++;
          nom.nextAt = now + Math.min(MAX_RTO_MS, this.#o.initialRtoMs * 2 ** (nom.sent - 1));
          this.#send(ProbeKind.NOMINATE, nom.tx, nom.pair.via ?? nom.pair.candidate);
        }
      }
      return; // nominating: the other checks stop (RFC 8445 §8.1.2)
    }
    let best: Pair | null = null;
    for (const p of this.#pairs) {
      if (p.state !== 'waiting' && p.state !== 'in-progress') continue;
      if (p.requests >= this.#o.maxRequestsPerPair) {
        if (p.state === 'in-progress' && now >= p.nextAt) {
          p.state = 'failed';
          p.reason = 'no response';
        }
        continue;
      }
      if (p.nextAt <= now && (!best || p.nextAt < best.nextAt)) best = p;
    }
    if (!best) return;
    const tx = randomBytes(12);
    best.tx.set(tx.toString('hex'), now);
    best.requests++;
    best.state = 'in-progress';
    best.nextAt = now + Math.min(MAX_RTO_MS, this.#o.initialRtoMs * 2 ** (best.requests - 1));
    this.#send(ProbeKind.REQUEST, tx, best.candidate, undefined, this.#o.handshake?.requestPayload() ?? null);
  }

  #send(
    kind: number,
    tx: Buffer,
    to: { address: string; port: number },
    mapped?: { address: string; port: number },
    payload?: Uint8Array | null,
  ): void {
    const addr = mapped ? encodeAddress(mapped.address, mapped.port) : Buffer.alloc(0);
    if (payload && payload.length > MAX_CHECK_PAYLOAD_BYTES) payload = null; // bounded above; never an oversized check
    const b = Buffer.alloc(HEADER_BYTES + addr.length + (payload ? 2 + payload.length : 0) + MAC_BYTES);
    b[0] = FirstByte.PROBE;
    b[1] = kind;
    b[2] = (this.#isInitiator ? FLAG_INITIATOR : 0) | (payload ? FLAG_PAYLOAD : 0);
    this.#tag.copy(b, 4);
    tx.copy(b, 20);
    addr.copy(b, HEADER_BYTES);
    let macAt = HEADER_BYTES + addr.length;
    if (payload) {
      b.writeUInt16BE(payload.length, macAt);
      b.set(payload, macAt + 2);
      macAt += 2 + payload.length;
    }
    createHmac('sha256', this.#key).update(b.subarray(0, macAt)).digest().copy(b, macAt, 0, MAC_BYTES);
    this.#o.transport.send(b, to.port, to.address);
  }

  #onMessage(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.#closed || msg.length < HEADER_BYTES + MAC_BYTES || msg[0] !== FirstByte.PROBE) return;
    const kind = msg[1]!;
    if (kind < ProbeKind.REQUEST || kind > ProbeKind.NOMINATE_ACK) return;
    if (!msg.subarray(4, 20).equals(this.#tag)) return; // another connection's probe
    const macAt = msg.length - MAC_BYTES;
    const mac = createHmac('sha256', this.#key).update(msg.subarray(0, macAt)).digest().subarray(0, MAC_BYTES);
    if (!timingSafeEqual(mac, msg.subarray(macAt))) {
      this.#log.debug({ from: rinfo }, 'probe with a bad MAC dropped');
      return;
    }
    const flags = msg[2]!;
    const fromInitiator = (flags & FLAG_INITIATOR) !== 0;
    if (fromInitiator === this.#isInitiator) return; // our own probe reflected back
    const tx = msg.subarray(20, 32);
    const from = { address: rinfo.address, port: rinfo.port };
    const answer = kind === ProbeKind.RESPONSE || kind === ProbeKind.NOMINATE_ACK;
    let addressBytes = msg.subarray(HEADER_BYTES, macAt);
    let payload: Buffer | null = null;
    if (flags & FLAG_PAYLOAD) {
      let at = HEADER_BYTES;
      if (answer) {
        const len = msg[at] === 4 ? 7 : msg[at] === 6 ? 19 : 0;
        if (len === 0) return;
        addressBytes = msg.subarray(at, at + len);
        at += len;
      }
      if (at + 2 > macAt || at + 2 + msg.readUInt16BE(at) !== macAt) return; // malformed: dropped
      payload = msg.subarray(at + 2, macAt);
    }
    switch (kind) {
      case ProbeKind.REQUEST:
        return this.#onRequest(tx, from, payload);
      case ProbeKind.RESPONSE:
        return this.#onResponse(tx, from, decodeAddress(addressBytes), payload);
      case ProbeKind.NOMINATE:
        return this.#onNominate(tx, from);
      case ProbeKind.NOMINATE_ACK:
        return this.#onNominateAck(tx, from, decodeAddress(addressBytes));
    }
  }

  #pairFor(from: { address: string; port: number }): Pair {
    const known = this.#pairs.find((p) => sameAddress(p.candidate, from) || (p.via && sameAddress(p.via, from)));
    if (known) return known;
    // RFC 8445 §7.3.1.3: a request from an unknown address is a peer-reflexive candidate.
    const prflx: Candidate = {
      type: 'prflx',
      transport: 'udp',
      address: from.address,
      port: from.port,
      priority: candidatePriority('prflx'),
    };
    this.#log.debug({ prflx }, 'learned a peer-reflexive candidate');
    return this.#addPair(prflx, Date.now());
  }

  #onRequest(tx: Buffer, from: { address: string; port: number }, payload: Buffer | null): void {
    if (!this.#done) {
      const pair = this.#pairFor(from);
      pair.heard++;
      // Triggered check (RFC 8445 §7.3.1.4): the peer reached us from there, so check back at once.
      if ((pair.state === 'waiting' || pair.state === 'in-progress') && pair.requests < this.#o.maxRequestsPerPair) {
        pair.nextAt = Math.min(pair.nextAt, Date.now());
      }
    }
    const hs = this.#o.handshake;
    if (!payload || !hs || this.#isInitiator) {
      this.#send(ProbeKind.RESPONSE, tx, from, from);
      return;
    }
    let answer: CheckAnswer | null | Promise<CheckAnswer | null>;
    try {
      answer = hs.onRequest(payload, from);
    } catch (err) {
      this.#log.debug({ err: (err as Error).message }, 'check handshake failed; plain answer');
      answer = { payload: null };
    }
    if (answer instanceof Promise)
      void answer.then(
        (a) => this.#answer(tx, from, a),
        () => {},
      );
    else this.#answer(tx, from, answer);
  }

  #answer(tx: Buffer, from: { address: string; port: number }, answer: CheckAnswer | null): void {
    if (!answer || this.#closed) return; // null: no answer at all (say, a replayed handshake message)
    this.#send(ProbeKind.RESPONSE, tx, from, from, answer.payload);
    if (answer.select && this.#o.nomination === 'implicit') this.select(from.address, from.port);
  }

  #onResponse(
    tx: Buffer,
    from: { address: string; port: number },
    mapped: { address: string; port: number } | null,
    payload: Buffer | null,
  ): void {
    if (this.#done) return;
    const id = tx.toString('hex');
    const pair = this.#pairs.find((p) => p.tx.has(id));
    if (!pair) return;
    const sentAt = pair.tx.get(id)!;
    pair.responses++;
    const verdict = this.#isInitiator && this.#o.handshake ? this.#o.handshake.onResponse(payload, from) : 'plain';
    if (verdict === 'ignore') return; // the pair works, but the handshake is not (or not yet) on it
    if (verdict === 'nominate') {
      // The handshake completed on this pair (the responder chose it): use it now, no grace for a better one.
      if (pair.state !== 'succeeded') pair.rttMs = Date.now() - sentAt;
      pair.state = 'succeeded';
      if (mapped) pair.mapped = mapped;
      if (!sameAddress(pair.candidate, from)) pair.via = from;
      if (this.#o.nomination === 'implicit') return this.#finish(pair, pair.via ?? pair.candidate);
      this.#nominating = { pair, tx: randomBytes(12), sent: 0, nextAt: 0 };
      return this.#tick();
    }
    if (pair.state === 'succeeded') return;
    pair.state = 'succeeded';
    pair.rttMs = Date.now() - sentAt;
    pair.mapped = mapped;
    // A response from another address than we sent to: keep talking to where it came from.
    if (!sameAddress(pair.candidate, from)) pair.via = from;
    this.#log.debug({ remote: pair.key, rttMs: pair.rttMs }, 'candidate pair succeeded');
    this.#maybeNominate();
  }

  #maybeNominate(): void {
    if (!this.#isInitiator || this.#nominating || this.#done) return;
    // RFC 8445 §8.1.1: the controlling agent picks a valid pair; natpunch takes the first that worked.
    const pair = this.#pairs.find((p) => p.state === 'succeeded');
    if (!pair) return;
    if (this.#o.nomination === 'implicit') {
      // Like RFC 8445's aggressive nomination: the pair is used at once; its first session packet nominates it.
      // A better pair (say the LAN one when hairpinning also works) still being checked gets a short grace.
      const better = this.#pairs.some(
        (p) =>
          p !== pair &&
          p.candidate.priority > pair.candidate.priority &&
          (p.state === 'waiting' || p.state === 'in-progress'),
      );
      if (better && !this.#graceTimer) {
        this.#graceTimer = setTimeout(() => {
          const best = this.#pairs.find((p) => p.state === 'succeeded');
          if (best) this.#finish(best, best.via ?? best.candidate);
        }, NOMINATION_GRACE_MS);
        return;
      }
      if (this.#graceTimer && pair !== this.#pairs.find((p) => p.state === 'succeeded')) return;
      if (better) return; // still within the grace: wait for the better pair or the timer
      this.#finish(pair, pair.via ?? pair.candidate);
      return;
    }
    this.#nominating = { pair, tx: randomBytes(12), sent: 0, nextAt: 0 };
    this.#tick();
  }

  #onNominate(tx: Buffer, from: { address: string; port: number }): void {
    // Always acknowledge (also while lingering: our earlier ack may have been lost).
    this.#send(ProbeKind.NOMINATE_ACK, tx, from, from);
    if (this.#done || this.#isInitiator) return;
    const pair = this.#pairFor(from);
    pair.state = 'succeeded';
    this.#finish(pair, from);
  }

  #onNominateAck(
    tx: Buffer,
    from: { address: string; port: number },
    mapped: { address: string; port: number } | null,
  ): void {
    const nom = this.#nominating;
    if (this.#done || !nom || !nom.tx.equals(tx)) return;
    if (mapped) nom.pair.mapped = mapped;
    this.#finish(nom.pair, from);
  }

  #finish(pair: Pair, remote: { address: string; port: number }): void {
    if (this.#done) return;
    this.#done = true;
    this.#stopTimers();
    const mapped = pair.mapped;
    const localCandidate = mapped
      ? (this.#o.local.find((c) => sameAddress(c, mapped)) ?? {
          type: 'prflx' as const,
          transport: 'udp' as const,
          address: mapped.address,
          port: mapped.port,
          priority: candidatePriority('prflx'),
        })
      : null;
    const result: CheckResult = {
      remote: { address: remote.address, port: remote.port },
      remoteCandidate: pair.candidate,
      localCandidate,
      mapped,
      kind: pair.candidate.type === 'host' ? 'lan' : 'direct',
      rttMs: pair.rttMs,
      tried: this.report(),
    };
    this.#result = result;
    this.#log.info({ remote: pair.key, type: pair.candidate.type, rttMs: pair.rttMs }, 'candidate pair nominated');
    // Linger: keep answering the peer's probes for a while, then let go of the transport.
    this.#linger = setTimeout(() => this.close(), this.#o.lingerMs);
    this.#linger.unref();
    this.#resolve?.(result);
  }

  get result(): CheckResult | null {
    return this.#result;
  }

  /** True when `address:port` proved itself: it sent us an authenticated check or answered one of ours. */
  isValidated(address: string, port: number): boolean {
    const from = { address, port };
    return this.#pairs.some(
      (p) =>
        (sameAddress(p.candidate, from) || (p.via !== null && sameAddress(p.via, from))) &&
        (p.heard > 0 || p.state === 'succeeded'),
    );
  }

  /**
   * Responder with implicit nomination: the initiator's session arrived from `address:port`; finish with that pair.
   * Returns null (and changes nothing) when the address never proved itself.
   */
  select(address: string, port: number): CheckResult | null {
    if (this.#result) return this.#result;
    if (this.#done || !this.isValidated(address, port)) return null;
    const from = { address, port };
    const pair = this.#pairFor(from);
    pair.state = 'succeeded';
    this.#finish(pair, from);
    return this.#result;
  }

  #fail(err: Error): void {
    if (this.#done) return;
    this.#done = true;
    this.close();
    this.#reject?.(err);
  }

  #stopTimers(): void {
    if (this.#graceTimer) clearTimeout(this.#graceTimer);
    this.#graceTimer = null;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#deadline) clearTimeout(this.#deadline);
    this.#timer = this.#deadline = null;
    this.#o.signal?.removeEventListener('abort', this.#onAbort);
  }

  /** Stops everything, including answering the peer. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopTimers();
    if (this.#linger) clearTimeout(this.#linger);
    this.#off?.();
    this.#off = null;
    if (!this.#done) {
      this.#done = true;
      this.#reject?.(new NatpunchError('ABORTED', 'connectivity checks closed', { details: { tried: this.report() } }));
    }
  }
}

/** Runs checks to completion; the returned `checks` lingers to answer the peer and must be closed by the caller. */
export async function runChecks(options: CheckOptions): Promise<CheckResult & { checks: ConnectivityChecks }> {
  const checks = new ConnectivityChecks(options);
  const result = await checks.run();
  return { ...result, checks };
}
