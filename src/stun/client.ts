/**
 * STUN client transactions (RFC 8489 §6.2, §6.3.3, §9).
 *
 * UDP: runs over a DatagramTransport the caller owns (the hole-punching code later sends from the same socket), so
 * it registers a listener and ignores every packet whose first byte is not STUN's (0..3, RFC 7983). Requests are
 * retransmitted per §6.2.1 (RTO doubling, Rc sends, last wait Rm × RTO), responses are matched by transaction id
 * and source address, FINGERPRINT is checked when present, and late or spoofed responses are dropped.
 * TCP: one request per write on a stream framed per §6.2.2, no retransmission, 39.5 s timeout.
 * Long-term credentials (§9.2): the first request goes without, a 401 with REALM and NONCE is answered with
 * USERNAME/REALM/NONCE and MESSAGE-INTEGRITY(-SHA256); 438 Stale Nonce retries with the new nonce. TURN reuses this.
 */
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import type { DatagramTransport, RemoteInfo } from '../net/datagram.js';
import { NodeDatagramTransport } from '../net/datagram.js';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { RFC8489_TIMING, TransactionTable } from './transaction.js';
import {
  attr,
  type AttributeInit,
  checkFingerprint,
  createTransactionId,
  decodeStun,
  DEFAULT_STUN_PORT,
  encodeStun,
  type EncodeOptions,
  ErrorCode,
  ErrorCodeAttr,
  longTermKey,
  MappedAddress,
  Nonce,
  nonceFeatures,
  normalizeAddress,
  OtherAddress,
  PasswordAlgorithm,
  PasswordAlgorithmAttr,
  PasswordAlgorithms,
  type PasswordAlgorithmName,
  Realm,
  ResponseOrigin,
  SecurityFeature,
  shortTermKey,
  coreRegistry,
  type StunRegistry,
  Software,
  StunClass,
  type StunMessage,
  StunMethod,
  StunFramer,
  transactionKey,
  type TransportAddress,
  Username,
  verifyIntegrity,
  verifyIntegritySha256,
  XorMappedAddress,
} from '../wire/stun/index.js';

/** RFC 8489 §6.2.1: initial retransmission timeout. */
export const STUN_RTO_MS = RFC8489_TIMING.rtoMs;
/** RFC 8489 §6.2.1: number of requests sent before giving up. */
export const STUN_RC = RFC8489_TIMING.rc;
/** RFC 8489 §6.2.1: the last wait is Rm × RTO. With the defaults a transaction fails after 39.5 s. */
export const STUN_RM = RFC8489_TIMING.rm!;
/** RFC 8489 §6.2.2: a TCP transaction fails after 39.5 s without a response. */
export const STUN_TCP_TIMEOUT_MS = 39_500;
/** RFC 8489 §9.2.5/§9.2.4: at most this many authentication retries (401 then 438s) per request. */
export const STUN_MAX_AUTH_RETRIES = 3;

export interface StunEndpoint {
  address: string;
  port: number;
}

export type StunCredentials =
  | { kind: 'short-term'; username: string; password: string }
  | { kind: 'long-term'; username: string; password: string };

export interface StunRequestOptions {
  signal?: AbortSignal;
  /** Overall deadline in ms (bounds all retransmissions and auth retries). Default: the RFC schedule. */
  timeoutMs?: number;
  /** Default Binding. */
  method?: number;
  attributes?: readonly AttributeInit[];
  credentials?: StunCredentials;
  /** Add FINGERPRINT (RFC 8489 §14.7). Default true. */
  fingerprint?: boolean;
  /** Accept the response only from the address it was sent to (§6.3.3 hygiene). Default true; RFC 5780 probes with
   *  CHANGE-REQUEST set this to false because the answer comes from the alternate address. */
  matchSource?: boolean;
  rtoMs?: number;
  rc?: number;
  rm?: number;
}

export interface StunResponse {
  message: StunMessage;
  /** Where the response came from. */
  from: StunEndpoint;
  /** Time from the first transmission to the response, in ms. */
  rttMs: number;
  /** How many times the (last) request was sent. */
  transmissions: number;
}

export interface BindingResult {
  /** XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from old servers): our address as the server saw it. */
  mapped: TransportAddress;
  server: StunEndpoint;
  from: StunEndpoint;
  rttMs: number;
  /** RFC 5780 §7.3/§7.4 when the server sent them. */
  responseOrigin?: TransportAddress;
  otherAddress?: TransportAddress;
  software?: string;
  message: StunMessage;
}

/**
 * SOFTWARE in our requests (RFC 8489 §14.14 asks for it; fewer than 128 characters). Its length is on purpose:
 * servers that answer with no more bytes than they were sent (natpunch's, src/stun/server.ts) then have room for
 * the optional attributes (SOFTWARE, RFC 5780's OTHER-ADDRESS and RESPONSE-ORIGIN). SOFTWARE is
 * comprehension-optional, so unlike PADDING (RFC 5780 §7.6) no server refuses a request for carrying it.
 */
export const DEFAULT_CLIENT_SOFTWARE =
  'natpunch (this text pads the request: servers that answer with no more bytes than they get have room for all)';

function clientSoftware(option: string | undefined): string | undefined {
  if (option === undefined) return DEFAULT_CLIENT_SOFTWARE;
  return option === '' ? undefined : option;
}

export interface StunClientOptions {
  logger?: Logger;
  /** Attributes this client understands (RFC 8489 §6.3.3: a response with unknown comprehension-required
   *  attributes fails the transaction). Default: the core table; TURN passes its extended registry. */
  registry?: StunRegistry;
  /** SOFTWARE attribute for requests (RFC 8489 §14.14); default DEFAULT_CLIENT_SOFTWARE, '' for none. */
  software?: string;
  rtoMs?: number;
  rc?: number;
  rm?: number;
}

/** Long-term credential state per server (§9.2.4): realm, nonce, algorithm and the derived key. */
export class LongTermAuthState {
  realm: string;
  nonce: string;
  algorithm: PasswordAlgorithmName;
  /** The server's PASSWORD-ALGORITHMS, echoed back when the nonce cookie says it offers the feature (§9.2.4). */
  offeredAlgorithms?: Array<{ algorithm: number; params: Uint8Array }>;
  readonly username: string;
  #password: string;
  key: Uint8Array;

  constructor(username: string, password: string, challenge: StunMessage) {
    this.username = username;
    this.#password = password;
    this.realm = '';
    this.nonce = '';
    this.algorithm = 'MD5';
    this.key = new Uint8Array(0);
    this.update(challenge);
  }

  /** Takes REALM/NONCE/PASSWORD-ALGORITHMS from a 401 or 438 response. */
  update(challenge: StunMessage): void {
    // A 438 may omit REALM (§9.2.5 only requires a new NONCE); keep the one we have.
    const realm = challenge.get(Realm) ?? (this.realm || undefined);
    const nonce = challenge.get(Nonce);
    if (realm === undefined || nonce === undefined) {
      throw new NatpunchError('STUN_ERROR_RESPONSE', 'server asked for credentials without REALM and NONCE');
    }
    this.realm = realm;
    this.nonce = nonce;
    const features = nonceFeatures(nonce) ?? 0;
    const offered =
      (features & SecurityFeature.PasswordAlgorithms) !== 0 ? challenge.get(PasswordAlgorithms) : undefined;
    this.offeredAlgorithms = offered;
    // §9.2.4: pick the first algorithm we support from the server's list; MD5 when there is none.
    const pick = offered?.find(
      (a) => a.algorithm === PasswordAlgorithm.SHA256 || a.algorithm === PasswordAlgorithm.MD5,
    );
    this.algorithm = pick?.algorithm === PasswordAlgorithm.SHA256 ? 'SHA-256' : 'MD5';
    this.key = longTermKey(this.username, this.realm, this.#password, this.algorithm);
  }

  attributes(): AttributeInit[] {
    const out: AttributeInit[] = [attr(Username, this.username), attr(Realm, this.realm), attr(Nonce, this.nonce)];
    if (this.offeredAlgorithms) {
      out.push(attr(PasswordAlgorithms, this.offeredAlgorithms));
      out.push(
        attr(PasswordAlgorithmAttr, {
          algorithm: this.algorithm === 'SHA-256' ? PasswordAlgorithm.SHA256 : PasswordAlgorithm.MD5,
          params: new Uint8Array(0),
        }),
      );
    }
    return out;
  }

  encodeOptions(): EncodeOptions {
    return this.algorithm === 'SHA-256' ? { integritySha256: this.key } : { integrity: this.key };
  }

  verify(msg: StunMessage): boolean {
    return this.algorithm === 'SHA-256' ? verifyIntegritySha256(msg, this.key) : verifyIntegrity(msg, this.key);
  }
}

/** One attempt: send a request built for a fresh transaction id, resolve with the (success or error) response. */
type Transact = (
  build: (tid: Uint8Array) => Uint8Array,
  accept: (msg: StunMessage) => boolean,
  signal: AbortSignal,
) => Promise<StunResponse>;

function endpointText(e: StunEndpoint): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

function unknownError(server: StunEndpoint, types: number[]): NatpunchError {
  const list = types.map((t) => `0x${t.toString(16).padStart(4, '0')}`).join(', ');
  return new NatpunchError(
    'STUN_DECODE',
    `${endpointText(server)} answered with unknown comprehension-required attributes ${list}`,
    {
      details: { unknownAttributes: types },
    },
  );
}

function errorFrom(server: StunEndpoint, msg: StunMessage): NatpunchError {
  let code = 0;
  let reason: string;
  try {
    const ec = msg.get(ErrorCodeAttr);
    code = ec?.code ?? 0;
    reason = ec?.reason ?? '';
  } catch {
    reason = 'malformed ERROR-CODE';
  }
  return new NatpunchError('STUN_ERROR_RESPONSE', `${endpointText(server)} answered ${code} ${reason}`.trim(), {
    details: { code, reason, response: msg },
  });
}

/**
 * Runs a request with the §9 credential logic on top of a transport-specific single transaction.
 * `authCache` remembers long-term state per server so later requests (TURN refreshes) go authenticated at once.
 */
async function runRequest(
  server: StunEndpoint,
  options: StunRequestOptions,
  software: string | undefined,
  transact: Transact,
  authCache: Map<string, LongTermAuthState>,
  signal: AbortSignal,
): Promise<StunResponse> {
  const method = options.method ?? StunMethod.Binding;
  const base = [...(options.attributes ?? [])];
  if (software) base.push(attr(Software, software));
  const fingerprint = options.fingerprint ?? true;
  const creds = options.credentials;
  const cacheKey = `${endpointText(server)}|${creds?.username ?? ''}`;
  let longTerm = creds?.kind === 'long-term' ? authCache.get(cacheKey) : undefined;
  const shortKey = creds?.kind === 'short-term' ? shortTermKey(creds.password) : undefined;

  for (let attempt = 0; ; attempt++) {
    const lt = longTerm;
    const build = (tid: Uint8Array) => {
      const attributes = [...base];
      let enc: EncodeOptions = { fingerprint };
      if (shortKey && creds) {
        attributes.push(attr(Username, creds.username)); // §9.1.2
        enc = { ...enc, integrity: shortKey };
      } else if (lt) {
        attributes.push(...lt.attributes()); // §9.2.4
        enc = { ...enc, ...lt.encodeOptions() };
      }
      return encodeStun({ cls: StunClass.Request, method, transactionId: tid, attributes }, enc);
    };
    // §9.1.3/§9.2.5: a success response to an authenticated request must carry valid integrity, else it is
    // discarded (as if lost). Error responses are taken as they are (401/438 carry none).
    const accept = (msg: StunMessage) => {
      if (msg.cls !== StunClass.SuccessResponse) return true;
      if (shortKey) return verifyIntegrity(msg, shortKey);
      if (lt) return lt.verify(msg);
      return true;
    };
    const res = await transact(build, accept, signal);
    const msg = res.message;
    if (msg.cls === StunClass.SuccessResponse) return res;
    let code = 0;
    try {
      code = msg.get(ErrorCodeAttr)?.code ?? 0;
    } catch {
      /* reported below */
    }
    const canRetry = creds?.kind === 'long-term' && attempt < STUN_MAX_AUTH_RETRIES;
    if (canRetry && (code === ErrorCode.Unauthorized || code === ErrorCode.StaleNonce)) {
      // §9.2.5: 401 without credentials sent, or 438 (new nonce): retry with the new challenge. A 401 to a request
      // that already carried credentials means they are wrong: retry only if the realm or nonce changed.
      if (code === ErrorCode.Unauthorized && lt && msg.get(Nonce) === lt.nonce && msg.get(Realm) === lt.realm) {
        authCache.delete(cacheKey);
        throw errorFrom(server, msg);
      }
      try {
        if (longTerm) longTerm.update(msg);
        else longTerm = new LongTermAuthState(creds.username, creds.password, msg);
      } catch (err) {
        throw err instanceof NatpunchError ? err : errorFrom(server, msg);
      }
      authCache.set(cacheKey, longTerm);
      continue;
    }
    throw errorFrom(server, msg);
  }
}

/** Combines the caller's signal with an overall deadline; the returned signal's reason is STUN_TIMEOUT. */
function deadline(server: StunEndpoint, timeoutMs: number | undefined, parent: AbortSignal | undefined) {
  const controller = new AbortController();
  const timer =
    timeoutMs === undefined
      ? undefined
      : setTimeout(
          () =>
            controller.abort(
              new NatpunchError('STUN_TIMEOUT', `no STUN response from ${endpointText(server)} within ${timeoutMs} ms`),
            ),
          timeoutMs,
        );
  // A NatpunchError reason from an enclosing deadline (STUN_TIMEOUT) passes through; anything else is ABORTED.
  const onAbort = () =>
    controller.abort(
      parent?.reason instanceof NatpunchError
        ? parent.reason
        : new NatpunchError('ABORTED', 'STUN request aborted', { cause: parent?.reason }),
    );
  if (parent?.aborted) onAbort();
  else parent?.addEventListener('abort', onAbort, { once: true });
  return {
    signal: controller.signal,
    dispose() {
      if (timer) clearTimeout(timer);
      parent?.removeEventListener('abort', onAbort);
    },
  };
}

/** What a response to one outstanding request must satisfy before it is delivered (§6.3.3). */
interface Expectation {
  server: StunEndpoint;
  matchSource: boolean;
  accept: (msg: StunMessage) => boolean;
}

/** STUN client over a caller-owned UDP transport. close() stops listening; it does not close the transport. */
export class StunClient {
  readonly #transport: DatagramTransport;
  readonly #log: Logger;
  readonly #software?: string;
  readonly #rto: number;
  readonly #rc: number;
  readonly #rm: number;
  readonly #transactions = new TransactionTable<string, { message: StunMessage; from: StunEndpoint }>();
  readonly #expect = new Map<string, Expectation>();
  readonly #auth = new Map<string, LongTermAuthState>();
  readonly #close = new AbortController();
  readonly #unsubscribe: () => void;
  readonly #registry: StunRegistry;

  constructor(transport: DatagramTransport, options: StunClientOptions = {}) {
    this.#transport = transport;
    this.#log = options.logger ?? silentLogger;
    this.#software = clientSoftware(options.software);
    this.#rto = options.rtoMs ?? STUN_RTO_MS;
    this.#rc = options.rc ?? STUN_RC;
    this.#rm = options.rm ?? STUN_RM;
    this.#registry = options.registry ?? coreRegistry;
    this.#unsubscribe = transport.onMessage((msg, rinfo) => this.#onMessage(msg, rinfo));
  }

  get closed(): boolean {
    return this.#close.signal.aborted;
  }

  #onMessage(buf: Buffer, rinfo: RemoteInfo): void {
    if (buf.length < 20 || buf[0]! > 3) return; // RFC 7983: not STUN
    let msg: StunMessage;
    try {
      msg = decodeStun(buf);
    } catch {
      return; // §6.3: malformed, silently discarded
    }
    if (msg.cls !== StunClass.SuccessResponse && msg.cls !== StunClass.ErrorResponse) return;
    const key = msg.transactionKey;
    const p = this.#expect.get(key);
    if (!p) return; // unknown or late (transaction already done)
    const from = { address: normalizeAddress(rinfo.address), port: rinfo.port };
    if (p.matchSource && (from.port !== p.server.port || from.address !== normalizeAddress(p.server.address))) {
      this.#log.debug({ from, expected: p.server }, 'stun: response from unexpected source ignored');
      return;
    }
    if (checkFingerprint(msg) === 'invalid') return; // §7.3: FINGERPRINT present and wrong: not for us
    if (!p.accept(msg)) {
      this.#log.debug({ from }, 'stun: response failed integrity check, ignored');
      return;
    }
    const unknown = msg.unknownComprehensionRequired(this.#registry);
    if (unknown.length > 0) {
      // §6.3.3/§6.3.4: a response we cannot fully understand fails the transaction.
      this.#transactions.reject(key, unknownError(p.server, unknown));
      return;
    }
    this.#transactions.resolve(key, { message: msg, from });
  }

  /** One retransmitted transaction (§6.2.1) through the shared engine (src/stun/transaction.ts). */
  #transact(server: StunEndpoint, options: StunRequestOptions): Transact {
    const timing = { rtoMs: options.rtoMs ?? this.#rto, rc: options.rc ?? this.#rc, rm: options.rm ?? this.#rm };
    const matchSource = options.matchSource ?? true;
    return async (build, accept, signal) => {
      const tid = createTransactionId();
      const key = transactionKey(tid);
      const packet = build(tid);
      this.#expect.set(key, { server, matchSource, accept });
      try {
        const r = await this.#transactions.run(
          key,
          () => {
            if (this.#transport.closed) throw new NatpunchError('SOCKET_CLOSED', "the STUN client's socket was closed");
            this.#transport.send(packet, server.port, server.address);
          },
          {
            timing,
            signal,
            timeoutError: (sent, ms) =>
              new NatpunchError(
                'STUN_TIMEOUT',
                `no STUN response from ${endpointText(server)} after ${sent} requests (${ms} ms)`,
              ),
          },
        );
        return { message: r.answer.message, from: r.answer.from, rttMs: r.rttMs, transmissions: r.transmissions };
      } finally {
        this.#expect.delete(key);
      }
    };
  }

  /** Sends a request and resolves with the success response; error responses reject with STUN_ERROR_RESPONSE. */
  async request(server: StunEndpoint, options: StunRequestOptions = {}): Promise<StunResponse> {
    if (this.closed) throw new NatpunchError('SOCKET_CLOSED', 'STUN client is closed');
    const closeSignal = this.#close.signal;
    const parent = options.signal ? AbortSignal.any([options.signal, closeSignal]) : closeSignal;
    const d = deadline(server, options.timeoutMs, parent);
    try {
      return await runRequest(server, options, this.#software, this.#transact(server, options), this.#auth, d.signal);
    } finally {
      d.dispose();
    }
  }

  /** A Binding request; resolves with the mapped address. */
  async binding(server: StunEndpoint, options: StunRequestOptions = {}): Promise<BindingResult> {
    const res = await this.request(server, { ...options, method: StunMethod.Binding });
    return bindingResult(server, res);
  }

  /** Stops listening and rejects pending requests with ABORTED. The transport stays open (the caller owns it). */
  close(): void {
    if (this.closed) return;
    this.#close.abort();
    this.#unsubscribe();
  }
}

export function bindingResult(server: StunEndpoint, res: StunResponse): BindingResult {
  const m = res.message;
  let mapped: TransportAddress | undefined;
  try {
    mapped = m.get(XorMappedAddress) ?? m.get(MappedAddress);
  } catch (err) {
    throw new NatpunchError('STUN_DECODE', `${endpointText(server)} sent a malformed mapped address`, { cause: err });
  }
  if (!mapped) throw new NatpunchError('STUN_DECODE', `${endpointText(server)} answered without a mapped address`);
  const optional = <T>(f: () => T | undefined): T | undefined => {
    try {
      return f();
    } catch {
      return undefined;
    }
  };
  const result: BindingResult = { mapped, server, from: res.from, rttMs: res.rttMs, message: m };
  const responseOrigin = optional(() => m.get(ResponseOrigin));
  const otherAddress = optional(() => m.get(OtherAddress));
  const software = optional(() => m.get(Software));
  if (responseOrigin) result.responseOrigin = responseOrigin;
  if (otherAddress) result.otherAddress = otherAddress;
  if (software !== undefined) result.software = software;
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// TCP

export interface StunTcpClientOptions extends StunClientOptions {
  signal?: AbortSignal;
  /** Connect timeout; default STUN_TCP_TIMEOUT_MS. */
  timeoutMs?: number;
  localAddress?: string;
}

/**
 * STUN over one TCP connection (§6.2.2). Requests are not retransmitted (TCP is reliable); a transaction fails after
 * 39.5 s. ChannelData frames on the stream are handed to `onChannelData` listeners (TURN over TCP).
 */
export class StunTcpClient {
  readonly socket: net.Socket;
  readonly server: StunEndpoint;
  readonly #framer = new StunFramer();
  readonly #transactions = new TransactionTable<string, StunMessage>();
  readonly #accept = new Map<string, (m: StunMessage) => boolean>();
  readonly #registry: StunRegistry;
  readonly #auth = new Map<string, LongTermAuthState>();
  readonly #close = new AbortController();
  readonly #software?: string;
  readonly #channelListeners = new Set<(channel: number, data: Uint8Array) => void>();

  constructor(socket: net.Socket, server: StunEndpoint, options: StunClientOptions = {}) {
    this.socket = socket;
    this.server = server;
    this.#software = clientSoftware(options.software);
    this.#registry = options.registry ?? coreRegistry;
    socket.on('data', (chunk: Buffer) => {
      let frames;
      try {
        frames = this.#framer.push(chunk);
      } catch (err) {
        // The stream is not STUN: nothing sensible can follow. Pending requests fail with the reason.
        this.#close.abort(err);
        socket.destroy();
        return;
      }
      for (const f of frames) {
        if (f.kind === 'channel-data') {
          for (const l of this.#channelListeners) l(f.channel, f.data);
          continue;
        }
        let msg: StunMessage;
        try {
          msg = decodeStun(f.data);
        } catch {
          continue;
        }
        if (msg.cls !== StunClass.SuccessResponse && msg.cls !== StunClass.ErrorResponse) continue;
        const key = msg.transactionKey;
        const accept = this.#accept.get(key);
        if (!accept || checkFingerprint(msg) === 'invalid' || !accept(msg)) continue;
        const unknown = msg.unknownComprehensionRequired(this.#registry);
        if (unknown.length > 0) this.#transactions.reject(key, unknownError(this.server, unknown));
        else this.#transactions.resolve(key, msg);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => this.#close.abort(new NatpunchError('SOCKET_CLOSED', 'the STUN TCP connection closed')));
  }

  static async connect(server: StunEndpoint, options: StunTcpClientOptions = {}): Promise<StunTcpClient> {
    const d = deadline(server, options.timeoutMs ?? STUN_TCP_TIMEOUT_MS, options.signal);
    try {
      const socket = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ host: server.address, port: server.port, localAddress: options.localAddress });
        const onAbort = () => {
          s.destroy();
          reject(d.signal.reason);
        };
        d.signal.addEventListener('abort', onAbort, { once: true });
        s.once('connect', () => {
          d.signal.removeEventListener('abort', onAbort);
          resolve(s);
        });
        s.once('error', (err) => {
          d.signal.removeEventListener('abort', onAbort);
          reject(
            new NatpunchError('STUN_CONNECT', `cannot connect to ${endpointText(server)} over TCP: ${err.message}`, {
              cause: err,
            }),
          );
        });
      });
      socket.setNoDelay(true);
      return new StunTcpClient(socket, server, options);
    } finally {
      d.dispose();
    }
  }

  onChannelData(listener: (channel: number, data: Uint8Array) => void): () => void {
    this.#channelListeners.add(listener);
    return () => this.#channelListeners.delete(listener);
  }

  get closed(): boolean {
    return this.#close.signal.aborted;
  }

  /** One transaction over the stream (§6.2.2): the shared engine in reliable mode, bounded by 39.5 s. */
  #transact: Transact = async (build, accept, signal) => {
    const tid = createTransactionId();
    const key = transactionKey(tid);
    const expired = new AbortController();
    const timer = setTimeout(
      () =>
        expired.abort(
          new NatpunchError(
            'STUN_TIMEOUT',
            `no STUN response from ${endpointText(this.server)} over TCP within ${STUN_TCP_TIMEOUT_MS} ms`,
          ),
        ),
      STUN_TCP_TIMEOUT_MS,
    );
    this.#accept.set(key, accept);
    try {
      const r = await this.#transactions.run(key, () => this.socket.write(build(tid)), {
        timing: RFC8489_TIMING,
        reliable: true,
        signal: AbortSignal.any([signal, this.#close.signal, expired.signal]),
        timeoutError: () =>
          new NatpunchError('STUN_TIMEOUT', `no STUN response from ${endpointText(this.server)} over TCP`),
        abortError: (reason) =>
          reason instanceof Error ? reason : new NatpunchError('ABORTED', 'STUN request aborted', { cause: reason }),
      });
      return { message: r.answer, from: this.server, rttMs: r.rttMs, transmissions: 1 };
    } finally {
      clearTimeout(timer);
      this.#accept.delete(key);
    }
  };

  async request(options: StunRequestOptions = {}): Promise<StunResponse> {
    if (this.closed) throw new NatpunchError('SOCKET_CLOSED', 'the STUN TCP connection is closed');
    const d = deadline(this.server, options.timeoutMs, options.signal);
    try {
      return await runRequest(this.server, options, this.#software, this.#transact, this.#auth, d.signal);
    } finally {
      d.dispose();
    }
  }

  async binding(options: StunRequestOptions = {}): Promise<BindingResult> {
    return bindingResult(this.server, await this.request({ ...options, method: StunMethod.Binding }));
  }

  close(): void {
    if (!this.closed) this.#close.abort(new NatpunchError('ABORTED', 'STUN TCP client closed'));
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Convenience

export interface StunBindingOptions extends StunRequestOptions {
  tcp?: boolean;
  /** Local address to bind the temporary socket to. */
  localAddress?: string;
  logger?: Logger;
}

/** "host", "host:port", "[v6]:port" or a bare IPv6 address. */
export function splitHostPort(text: string): { host: string; port: number } {
  const bracket = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(text);
  if (bracket) return { host: bracket[1]!, port: bracket[2] ? Number(bracket[2]) : DEFAULT_STUN_PORT };
  const colon = text.lastIndexOf(':');
  if (colon > 0 && text.indexOf(':') === colon && /^\d{1,5}$/.test(text.slice(colon + 1))) {
    return { host: text.slice(0, colon), port: Number(text.slice(colon + 1)) };
  }
  return { host: text, port: DEFAULT_STUN_PORT };
}

/** Resolves "host" or "host:port"-style input to an IP endpoint (DNS lookup only for names). */
export async function resolveStunServer(
  server: string | { host: string; port?: number },
  signal?: AbortSignal,
): Promise<StunEndpoint> {
  const { host, port } = typeof server === 'string' ? splitHostPort(server) : server;
  if (net.isIP(host)) return { address: host, port: port ?? DEFAULT_STUN_PORT };
  signal?.throwIfAborted();
  try {
    const found = await lookup(host);
    return { address: found.address, port: port ?? DEFAULT_STUN_PORT };
  } catch (err) {
    throw new NatpunchError('BAD_ARGUMENT', `cannot resolve STUN server "${host}"`, { cause: err });
  }
}

/**
 * One Binding request from a temporary socket (UDP, or TCP with `tcp: true`), closed afterwards. For long-lived
 * use, create a StunClient on your own socket instead.
 */
export async function stunBinding(
  server: string | { host: string; port?: number },
  options: StunBindingOptions = {},
): Promise<BindingResult & { local: StunEndpoint }> {
  const endpoint = await resolveStunServer(server, options.signal);
  if (options.tcp) {
    // One deadline for connect + transaction (the default is §6.2.2's 39.5 s).
    const d = deadline(endpoint, options.timeoutMs ?? STUN_TCP_TIMEOUT_MS, options.signal);
    try {
      const client = await StunTcpClient.connect(endpoint, {
        signal: d.signal,
        localAddress: options.localAddress,
        logger: options.logger,
      });
      try {
        const result = await client.binding({ ...options, timeoutMs: undefined, signal: d.signal });
        const local = {
          address: normalizeAddress(client.socket.localAddress ?? ''),
          port: client.socket.localPort ?? 0,
        };
        return { ...result, local };
      } finally {
        client.close();
      }
    } finally {
      d.dispose();
    }
  }
  // A connected socket: ICMP port unreachable ends the transaction at once (ECONNREFUSED) instead of after Rc sends.
  const transport = await NodeDatagramTransport.connect(
    endpoint,
    options.localAddress ? { address: options.localAddress } : {},
  );
  const unreachable = new AbortController();
  const offError = transport.onError((err) => {
    const why = err.code === 'ECONNREFUSED' ? 'port unreachable: nothing listens there' : err.message;
    unreachable.abort(new NatpunchError('UNREACHABLE', `${endpointText(endpoint)}: ${why}`, { cause: err }));
  });
  const client = new StunClient(transport, { logger: options.logger });
  try {
    const signal = options.signal ? AbortSignal.any([options.signal, unreachable.signal]) : unreachable.signal;
    const result = await client.binding(endpoint, { ...options, signal });
    const a = transport.address();
    return { ...result, local: { address: normalizeAddress(a.address), port: a.port } };
  } finally {
    offError();
    client.close();
    transport.close();
  }
}
