import { EventEmitter } from 'node:events';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { createRequire } from 'node:module';
import type net from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { FirstByte } from '../net/demux.js';
import type { RemoteInfo } from '../net/datagram.js';
import type { UdxEndpoint, UdxStream } from '../net/udx.js';
import type { Candidate } from '../traversal/candidate.js';
import { keyToId, type KeyPair } from './identity.js';
import { FrameType, Mux, MUX_VERSION, type MuxStream } from './mux.js';
import type { CompletedHandshake } from './handshake-ik.js';

const require = createRequire(import.meta.url);

/** Keepalive interval: below the shortest common NAT UDP mapping lifetime (RFC 4787 §4.3 REQ-5 asks ≥ 2 min, but
 *  many NATs use 30 s; RFC 8445 §11 suggests 15 s for ICE keepalives). */
export const DEFAULT_KEEPALIVE_MS = 15_000;
/** Declare the path dead after this long without any traffic from the peer (three keepalives missed). */
export const DEFAULT_IDLE_TIMEOUT_MS = 3 * DEFAULT_KEEPALIVE_MS;
/** Noise XX handshake plus the HELLO frame: three trips; generous for lossy links. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Datagrams ride in one UDX packet: 1200-byte UDX MTU minus UDX header (20) and secretbox overhead (24). */
export const MAX_DATAGRAM_BYTES = 1150;
/** Keepalive timer resolution. */
const KEEPALIVE_TICK_MS = 500;
/** First silence probe after this long without hearing from the peer (then 2×, 4× ... up to the keepalive). */
export const SILENCE_PROBE_MS = 2_000;
/** How long close() lets ended streams hand their remaining bytes to the transport before it says goodbye. */
export const CLOSE_DRAIN_MS = 5_000;
/** How long close() waits for the peer to acknowledge the end of the encrypted stream. */
const CLOSE_GRACE_MS = 2_000;
/** Probe kinds of the session's path keepalives on the 0xF1 channel (src/traversal/checks.ts uses 1..4). */
export const PATH_PROBE = 0x10;
const PATH_PROBE_BYTES = 2 + 16 + 4 + 16;
/** Probe kinds asking the peer to move the session to a new transport, and its answer. */
const SWAP_REQ = 0x11;
const SWAP_ACK = 0x12;
const SWAP_REQUEST_INTERVAL_MS = 250;
const SWAP_MAX_REQUESTS = 40;
/** After the transport died, a session waits this long for a new path (the peer's swap, or `recover`). */
export const DEFAULT_RECONNECT_GRACE_MS = 20_000;
/** A move to a new path must complete within this long, or the session ends with SESSION_LOST. */
export const SWAP_TIMEOUT_MS = 10_000;

interface Swap {
  gen: number;
  remote: { address: string; port: number };
  path: Partial<SessionPath> | undefined;
  udx: UdxStream | null;
  noise: NoiseStream | null;
  sent: number;
  resolve: () => void;
  done: Promise<void>;
  reqTimer: NodeJS.Timeout | null;
  deadline: NodeJS.Timeout | null;
}

export type PathKind = 'lan' | 'direct' | 'relay';

export interface SessionPath {
  kind: PathKind;
  local: { address: string; port: number };
  remote: { address: string; port: number };
  candidatePair: { local: Candidate | null; remote: Candidate | null } | null;
  rttMs: number | null;
  /** The transport under the session: 'udp' (UDX; the default when absent) or 'tcp' (a TCP-punched connection). */
  transport?: 'udp' | 'tcp';
  /** Why connect({ transport: 'auto' }) ended up on this transport (e.g. TCP unavailable without the addon). */
  transportReason?: string;
  /** Over TCP: the technique that punched the connection (P2P-NAT simultaneous open, STUNT #1 or NATBlaster). */
  tcpTechnique?: 'p2pnat' | 'stunt1' | 'natblaster';
}

/** Who may connect: a list of public keys (Buffers or hex ids) or a function deciding per key. */
export type Allow = ReadonlyArray<Uint8Array | string> | ((remotePublicKey: Buffer) => boolean | Promise<boolean>);

export async function isAllowed(allow: Allow | undefined, key: Buffer): Promise<boolean> {
  if (allow === undefined) return true;
  if (typeof allow === 'function') {
    try {
      return (await allow(key)) === true;
    } catch {
      return false;
    }
  }
  const id = keyToId(key);
  return allow.some((k) => (typeof k === 'string' ? k.toLowerCase() === id : Buffer.from(k).equals(key)));
}

export interface SessionOptions {
  endpoint: UdxEndpoint;
  isInitiator: boolean;
  keyPair: KeyPair;
  /** Where the peer is. Optional when `udxStream` is given: then it is where that stream got connected to. */
  remote?: { address: string; port: number };
  /** A UDX stream made by the caller (e.g. UdxEndpoint.acceptStream, still waiting for the peer's first packet). */
  udxStream?: UdxStream;
  /** UDX stream ids agreed by both ends (see streamIdsFor). */
  localStreamId: number;
  remoteStreamId: number;
  /** Initiator: the key it meant to reach. The handshake fails unless the responder proves this key. */
  expectedRemoteKey?: Uint8Array;
  /** Responder: who may connect (default: anyone). */
  allow?: Allow;
  /** Path details for session.path; a function is evaluated once the handshake is done. */
  path?: Partial<SessionPath> | (() => Partial<SessionPath>);
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  /** Called when the path went silent; resolve with a new remote address to migrate to, or reject to give up. */
  recover?: (signal: AbortSignal) => Promise<{ address: string; port: number; path?: Partial<SessionPath> }>;
  /** Close the endpoint when the session closes. */
  ownsEndpoint?: boolean;
  /** When the transport dies, wait this long for a new path before ending the session (default 20 s; 0: never). */
  reconnectGraceMs?: number;
  /** Always move to a new path with a fresh transport (tests; normally only when data is in flight). */
  alwaysSwap?: boolean;
  logger?: Logger;
  signal?: AbortSignal;
}

/**
 * A session over a TCP connection (a TCP-punched socket, src/traversal/tcp-p2pnat.ts): the same Noise XX handshake,
 * key checks, allow list and multiplexed streams as over UDX. What differs: datagrams travel as DATAGRAM frames on the
 * encrypted stream (so they are reliable and ordered, and dropped only when the socket's send buffer is past
 * TCP_DATAGRAM_BACKLOG_BYTES); the path cannot migrate (no path probes, no swap): when the connection dies the
 * session ends with SESSION_LOST.
 */
export interface TcpSessionOptions {
  /** A connected TCP socket; the session owns it from now on (destroys it on close or failure). */
  socket: net.Socket;
  isInitiator: boolean;
  keyPair: KeyPair;
  expectedRemoteKey?: Uint8Array;
  allow?: Allow;
  path?: Partial<SessionPath> | (() => Partial<SessionPath>);
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  logger?: Logger;
  signal?: AbortSignal;
}

/** The mux writes to whichever transport is current (a path change swaps it, see Session#completeSwap). */
function sinkFor(holder: { noise: NoiseStream }) {
  return {
    writeFrame: (f: Buffer) => holder.noise.write(f),
    allocFrame: (n: number) => holder.noise.alloc(n),
    waitDrain: () =>
      new Promise<void>((res) => {
        const n = holder.noise;
        if (n.destroyed || n.destroying) {
          // The transport died: what is written now is kept by the streams and resent on the next path.
          setTimeout(res, 50);
          return;
        }
        const done = () => {
          n.off('drain', done);
          n.off('close', done);
          res();
        };
        n.on('drain', done);
        n.on('close', done);
      }),
    get closed() {
      return holder.noise.destroyed || holder.noise.destroying;
    },
  };
}

/** On TCP, datagrams are dropped (as UDP would under congestion) when this much is already queued on the socket. */
export const TCP_DATAGRAM_BACKLOG_BYTES = 256 * 1024;

function unmapV4(address: string | undefined): string {
  return (address ?? '').replace(/^::ffff:/, '');
}

/** Both ends derive the pair of UDX stream ids from the connection id (initiator id, responder id), never 0. */
export function streamIdsFor(connectionId: Uint8Array | string): { initiator: number; responder: number } {
  const h = createHash('sha256').update('natpunch udx stream ids').update(connectionId).digest();
  const a = h.readUInt32BE(0) || 1;
  let b = h.readUInt32BE(4) || 2;
  if (b === a) b = (a % 0xfffffffe) + 1;
  return { initiator: a, responder: b };
}

interface NoiseStream extends NodeJS.EventEmitter {
  remotePublicKey: Buffer | null;
  handshakeHash: Buffer | null;
  destroyed: boolean;
  destroying: boolean;
  write(b: Buffer): boolean;
  /**
   * secret-stream's zero-copy write: a buffer of `n` bytes inside the buffer it will encrypt in place. Writing it
   * (next) skips secret-stream's copy of the message into its ciphertext buffer.
   */
  alloc(n: number): Buffer;
  end(): void;
  destroy(err?: Error): void;
  trySend(b: Uint8Array): void;
}

/**
 * An authenticated, encrypted session with one peer: Noise XX (@hyperswarm/secret-stream, Ed25519 static keys)
 * over one UDX stream on the peer's UDP socket, carrying multiplexed streams and unreliable datagrams.
 *
 * Events: 'stream' (MuxStream), 'datagram' (Buffer), 'path' (SessionPath), 'path-lost', 'close' (Error | null).
 */
export class Session extends EventEmitter {
  readonly remotePublicKey: Buffer;
  readonly publicKey: Buffer;
  readonly isInitiator: boolean;
  /** 'IK' when the handshake rode on the connectivity checks (docs/handshake.md), 'XX' when it ran afterwards. */
  readonly handshakePattern: 'IK' | 'XX';
  /**
   * Responder: the early data the initiator put in IK message 1 (at most MAX_EARLY_DATA_BYTES), on exactly the one
   * session that message opened; null otherwise. Not forward secret against the responder's key (see the docs).
   */
  readonly earlyData: Buffer | null;
  /** Initiator: whether the responder received the early data given to connect() (false after an XX fallback). */
  readonly earlyDataAccepted: boolean;
  #endpoint: UdxEndpoint | null;
  #udx: UdxStream | null;
  /** Set for a session over TCP (then #endpoint and #udx are null). */
  #tcp: net.Socket | null;
  #holder: { noise: NoiseStream };
  #hh0: Buffer;
  #gen = 0;
  #swap: Swap | null = null;
  #mux: Mux;
  #path: SessionPath;
  #options: SessionOptions;
  #logger: Logger;
  #closed = false;
  #closeError: Error | null = null;
  #goodbye = false;
  #lastReceived = Date.now();
  #keepTimer: NodeJS.Timeout | null = null;
  #pingSeq = 0;
  #pingSent = new Map<number, number>();
  #recovering: AbortController | null = null;
  #lostTimer: NodeJS.Timeout | null = null;
  #pathKey: Buffer;
  #pathTag: Buffer;
  #pathSeqOut = 0;
  #pathSeqIn = -1;
  #offProbe: () => void;
  #closing: Promise<void> | null = null;
  #confirm: { resolve: () => void; reject: (err: Error) => void } | null = null;
  /**
   * Resolves once the peer has proved it holds this session's keys: at once for an XX session and for the IK
   * initiator (message 2 proved the responder); for the IK responder on the initiator's first encrypted frame. Rejects
   * when the session ends before that. A listener surfaces a session only then (src/endpoint/endpoint.ts): an IK
   * message 1 whose message 2 was lost leaves a session the connector never uses (docs/handshake.md). The
   * 'confirmed' event fires at the same moment, synchronously, before the frame that confirmed it is handled: a
   * listener that attaches its 'stream' handler there misses no stream the connector opened in that frame.
   */
  readonly confirmed: Promise<void>;
  #isConfirmed = false;

  /** See `confirmed`. */
  get isConfirmed(): boolean {
    return this.#isConfirmed;
  }

  get #noise(): NoiseStream {
    return this.#holder.noise;
  }

  private constructor(
    options: SessionOptions,
    raw: { udx: UdxStream } | { tcp: net.Socket },
    holder: { noise: NoiseStream },
    mux: Mux,
    ik?: { earlyData: Buffer | null; earlyDataAccepted: boolean },
  ) {
    super();
    this.confirmed = new Promise<void>((resolve, reject) => (this.#confirm = { resolve, reject }));
    this.confirmed.catch(() => {}); // observed by whoever waits for it
    if (!(ik && !options.isInitiator)) this.#confirmed();
    this.once('close', (err: Error | null) => {
      this.#confirm?.reject(
        err ?? new NatpunchError('SESSION_CLOSED', 'the session closed before the peer confirmed it'),
      );
      this.#confirm = null;
    });
    this.handshakePattern = ik ? 'IK' : 'XX';
    this.earlyData = ik?.earlyData ?? null;
    this.earlyDataAccepted = ik?.earlyDataAccepted ?? false;
    const noise = holder.noise;
    this.#options = options;
    const udx = 'udx' in raw ? raw.udx : null;
    this.#tcp = 'tcp' in raw ? raw.tcp : null;
    this.#endpoint = udx ? options.endpoint : null;
    this.#udx = udx;
    this.#holder = holder;
    this.#hh0 = Buffer.from(noise.handshakeHash!);
    this.#mux = mux;
    this.#logger = options.logger ?? silentLogger;
    this.isInitiator = options.isInitiator;
    this.publicKey = options.keyPair.publicKey;
    this.remotePublicKey = Buffer.from(noise.remotePublicKey!);
    const tcp = this.#tcp;
    const local = udx ? options.endpoint.address() : { address: unmapV4(tcp!.localAddress), port: tcp!.localPort ?? 0 };
    const given = typeof options.path === 'function' ? options.path() : options.path;
    this.#path = {
      kind: given?.kind ?? 'direct',
      local: given?.local ?? { address: local.address, port: local.port },
      remote: tcp
        ? { address: unmapV4(tcp.remoteAddress), port: tcp.remotePort ?? 0 }
        : udx!.remoteHost
          ? { address: udx!.remoteHost, port: udx!.remotePort }
          : { address: options.remote?.address ?? '', port: options.remote?.port ?? 0 },
      candidatePair: given?.candidatePair ?? null,
      // libudx's smoothed RTT after the handshake's round trips is a better figure than the check's (which may
      // include the peer's start-up); PONGs keep it current.
      rttMs: udx && udx.rtt > 0 ? udx.rtt : (given?.rttMs ?? null),
    };
    if (tcp) this.#path.transport = 'tcp';
    if (given?.transportReason) this.#path.transportReason = given.transportReason;
    if (given?.tcpTechnique) this.#path.tcpTechnique = given.tcpTechnique;
    // Path keepalive key and tag come from the Noise handshake hash: only the two ends know them.
    const hh = noise.handshakeHash!;
    this.#pathKey = createHash('sha256').update('natpunch path key').update(hh).digest();
    this.#pathTag = createHash('sha256').update('natpunch path tag').update(hh).digest().subarray(0, 16);
    this.#offProbe = this.#endpoint
      ? this.#endpoint.onMessage((msg, rinfo) => this.#onPathProbe(msg, rinfo))
      : () => {};
    mux.on('datagram', (b: Buffer) => this.emit('datagram', b)); // DATAGRAM frames (TCP sessions)

    mux.on('stream', (s: MuxStream) => this.emit('stream', s));
    mux.on('pong', (seq: number) => {
      const sent = this.#pingSent.get(seq);
      this.#pingSent.delete(seq);
      if (sent !== undefined) this.#path.rttMs = Date.now() - sent;
    });
    mux.on('goodbye', () => {
      this.#goodbye = true;
    });
    mux.on('protocol-error', (err: Error) => this.#die(err));
    this.#attach(noise);
    this.#startKeepalive();
    this.#sendPing();
    if (ik && !options.isInitiator)
      this.#awaitConfirmation(noise, options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS);
  }

  /**
   * IK responder: the session exists from message 1 on, but only the initiator's first encrypted frame (its PING,
   * sent at once) proves it got message 2 and holds the keys. Without one in time the session ends.
   */
  #awaitConfirmation(noise: NoiseStream, timeoutMs: number): void {
    const confirmed = () => {
      clearTimeout(timer);
      noise.off('data', confirmed);
      noise.off('message', confirmed);
      if (!this.#closed) this.#confirmed();
    };
    const timer = setTimeout(() => {
      confirmed();
      this.#die(
        new NatpunchError(
          'HANDSHAKE_FAILED',
          `the initiator did not confirm the handshake (no encrypted frame within ${timeoutMs} ms)`,
        ),
      );
    }, timeoutMs);
    timer.unref();
    // Ahead of the session's own handlers (#attach): the confirmation is out before the frame is dispatched.
    noise.prependListener('data', confirmed);
    noise.prependListener('message', confirmed);
    this.once('close', confirmed);
  }

  #confirmed(): void {
    if (this.#isConfirmed) return;
    this.#isConfirmed = true;
    this.#confirm?.resolve();
    this.#confirm = null;
    this.emit('confirmed');
  }

  /** Listens to one encrypted transport; events from a transport that was swapped out are ignored. */
  #attach(noise: NoiseStream): void {
    const current = () => noise === this.#holder.noise;
    noise.on('data', (frame: Buffer) => {
      if (!current()) return;
      this.#lastReceived = Date.now();
      this.#mux.onFrame(frame);
    });
    noise.on('message', (buf: Buffer) => {
      if (!current()) return;
      this.#lastReceived = Date.now();
      this.emit('datagram', Buffer.from(buf));
    });
    noise.on('end', () => {
      // The peer finished the encrypted stream: an orderly close.
      if (current() && !this.#closed) this.#die(new NatpunchError('SESSION_CLOSED', 'the peer closed the session'));
    });
    noise.on('close', () => {
      if (!current() || this.#closed) return;
      if (this.#goodbye) {
        this.#die(new NatpunchError('SESSION_CLOSED', 'the peer closed the session'));
        return;
      }
      this.#transportLost(new NatpunchError('SESSION_LOST', 'the encrypted stream to the peer closed unexpectedly'));
    });
    noise.on('error', (err: Error) => {
      if (!current() || this.#closed) return;
      this.#transportLost(
        new NatpunchError(
          'SESSION_LOST',
          `the path to the peer failed (${err.message}); no acknowledgements on ${this.#path.remote.address}:${this.#path.remote.port}`,
          { cause: err },
        ),
      );
    });
  }

  /**
   * Runs the Noise XX handshake over a new UDX stream to `remote` and resolves with an authenticated session.
   * Initiator: fails with HANDSHAKE_FAILED unless the responder proves `expectedRemoteKey`, NOT_ALLOWED if refused.
   * Responder: fails with NOT_ALLOWED (after telling the initiator) when `allow` refuses the initiator's key.
   */
  static establish(options: SessionOptions): Promise<Session> {
    if (options.isInitiator && !options.expectedRemoteKey) {
      return Promise.reject(new NatpunchError('BAD_ARGUMENT', 'the initiator must know the key it connects to'));
    }
    const SecretStream = require('@hyperswarm/secret-stream') as new (
      init: boolean,
      raw: unknown,
      opts: unknown,
    ) => NoiseStream;
    const logger = options.logger ?? silentLogger;
    const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    if (!options.udxStream && !options.remote) {
      return Promise.reject(new NatpunchError('BAD_ARGUMENT', 'a session needs the remote address or a UDX stream'));
    }
    const udx =
      options.udxStream ??
      options.endpoint.connectStream(
        options.localStreamId,
        options.remoteStreamId,
        options.remote!.port,
        options.remote!.address,
      );
    const where = () => (udx.remoteHost ? `${udx.remoteHost}:${udx.remotePort}` : 'the peer');
    return Session.#handshake(options, { udx }, udx, where, SecretStream, logger, timeoutMs);
  }

  /** Runs the Noise XX handshake over a connected TCP socket (see TcpSessionOptions). Same checks as establish(). */
  static establishTcp(options: TcpSessionOptions): Promise<Session> {
    if (options.isInitiator && !options.expectedRemoteKey) {
      options.socket.destroy();
      return Promise.reject(new NatpunchError('BAD_ARGUMENT', 'the initiator must know the key it connects to'));
    }
    const SecretStream = require('@hyperswarm/secret-stream') as new (
      init: boolean,
      raw: unknown,
      opts: unknown,
    ) => NoiseStream;
    const logger = options.logger ?? silentLogger;
    const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    const socket = options.socket;
    socket.setNoDelay(true);
    const where = () => `tcp ${unmapV4(socket.remoteAddress)}:${socket.remotePort ?? 0}`;
    if (socket.destroyed || !socket.writable) {
      socket.destroy();
      return Promise.reject(
        new NatpunchError(
          'HANDSHAKE_FAILED',
          `the secure channel to ${where()} closed during the handshake (the connection was already closed)`,
        ),
      );
    }
    // Internal options: no UDX endpoint; everything UDX-specific is off for a TCP session.
    const sessionOptions = {
      ...options,
      endpoint: null,
      localStreamId: 0,
      remoteStreamId: 0,
      reconnectGraceMs: 0,
    } as unknown as SessionOptions;
    return Session.#handshake(sessionOptions, { tcp: socket }, socket, where, SecretStream, logger, timeoutMs);
  }

  static #handshake(
    options: SessionOptions,
    raw: { udx: UdxStream } | { tcp: net.Socket },
    rawStream: { destroy(): void },
    where: () => string,
    SecretStream: new (init: boolean, raw: unknown, opts: unknown) => NoiseStream,
    logger: Logger,
    timeoutMs: number,
  ): Promise<Session> {
    const noise = new SecretStream(options.isInitiator, rawStream, { keyPair: options.keyPair });
    noise.on('error', () => {}); // handled through 'close' and the promise below

    return new Promise<Session>((resolve, reject) => {
      let settled = false;
      const frames: Buffer[] = [];
      let mux: Mux | null = null;
      const finish = (err: Error | null, session?: Session) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        noise.off('close', onClose);
        noise.off('data', onEarlyData);
        if (err) {
          noise.destroy();
          rawStream.destroy();
          reject(err);
        } else resolve(session!);
      };
      const timer = setTimeout(
        () =>
          finish(
            new NatpunchError('HANDSHAKE_FAILED', `no authenticated session with ${where()} within ${timeoutMs} ms`),
          ),
        timeoutMs,
      );
      const onAbort = () =>
        finish(new NatpunchError('ABORTED', 'session setup aborted', { cause: options.signal?.reason }));
      const onClose = () =>
        finish(new NatpunchError('HANDSHAKE_FAILED', `the secure channel to ${where()} closed during the handshake`));
      const onEarlyData = (frame: Buffer) => {
        if (frames.length < 64) frames.push(frame);
      };
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      noise.on('close', onClose);

      const holder = { noise };
      const sink = sinkFor(holder);

      const makeSession = () => {
        const session = new Session(options, raw, holder, mux!);
        noise.off('data', onEarlyData);
        for (const f of frames.splice(0)) mux!.onFrame(f);
        return session;
      };

      noise.once('handshake', () => {
        const remoteKey = noise.remotePublicKey!;
        mux = new Mux(sink, { isInitiator: options.isInitiator });
        if (options.isInitiator) {
          if (!Buffer.from(options.expectedRemoteKey!).equals(remoteKey)) {
            logger.warn(
              { expected: keyToId(options.expectedRemoteKey!), got: keyToId(remoteKey) },
              'responder key mismatch',
            );
            return finish(
              new NatpunchError(
                'HANDSHAKE_FAILED',
                `the peer at ${where()} proved key ${keyToId(remoteKey).slice(0, 16)}…, not the key we meant to reach (${keyToId(options.expectedRemoteKey!).slice(0, 16)}…); refusing`,
              ),
            );
          }
          // Wait for the responder's verdict (HELLO or REJECT) before handing out the session.
          noise.on('data', onEarlyData);
          const onVerdict = (frame: Buffer) => {
            if (frame[0] === FrameType.HELLO) {
              noise.off('data', onVerdict);
              frames.shift(); // the HELLO itself
              finish(null, makeSession());
            } else if (frame[0] === FrameType.REJECT) {
              noise.off('data', onVerdict);
              const code = frame.subarray(5).toString('utf8');
              finish(
                new NatpunchError(
                  'NOT_ALLOWED',
                  `the peer ${keyToId(remoteKey).slice(0, 16)}… refused the connection (${code})`,
                ),
              );
            }
          };
          noise.on('data', onVerdict);
          return;
        }
        noise.on('data', onEarlyData);
        void isAllowed(options.allow, Buffer.from(remoteKey)).then((ok) => {
          if (settled) return;
          if (!ok) {
            noise.write(Buffer.from([FrameType.REJECT, 0, 0, 0, 0, ...Buffer.from('NOT_ALLOWED')]));
            noise.end();
            const err = new NatpunchError(
              'NOT_ALLOWED',
              `refused a session from ${keyToId(remoteKey)} (not in the allow list)`,
            );
            // Let the REJECT frame leave before tearing down.
            settled = true;
            clearTimeout(timer);
            options.signal?.removeEventListener('abort', onAbort);
            noise.off('close', onClose);
            const kill = setTimeout(() => noise.destroy(), CLOSE_GRACE_MS);
            kill.unref();
            noise.once('close', () => clearTimeout(kill));
            reject(err);
            return;
          }
          noise.write(Buffer.from([FrameType.HELLO, 0, 0, 0, 0, MUX_VERSION]));
          finish(null, makeSession());
        });
      });
    });
  }

  /**
   * A session whose Noise handshake already completed inside the connectivity checks (Noise IK, see
   * src/session/handshake-ik.ts): the transport keys go straight to secret-stream over a new UDX stream to `remote`
   * (the pair the checks chose). No further round trip: the initiator may send at once; the responder's UDX stream
   * is connected to where message 1 came from, so its first packets go out at once too. The allow decision was
   * taken on message 1 (a refused initiator never gets here). Initiator: fails unless the handshake proved
   * `expectedRemoteKey`.
   */
  static fromHandshake(
    options: SessionOptions & { handshake: CompletedHandshake; earlyData?: Buffer | null; earlyDataAccepted?: boolean },
  ): Session {
    const hs = options.handshake;
    if (
      options.isInitiator &&
      (!options.expectedRemoteKey || !Buffer.from(options.expectedRemoteKey).equals(hs.remotePublicKey))
    ) {
      throw new NatpunchError(
        'HANDSHAKE_FAILED',
        'the handshake proved another key than the one we meant to reach; refusing',
      );
    }
    if (!options.udxStream && !options.remote)
      throw new NatpunchError('BAD_ARGUMENT', 'a session needs the remote address or a UDX stream');
    const SecretStream = require('@hyperswarm/secret-stream') as new (
      init: boolean,
      raw: unknown,
      opts: unknown,
    ) => NoiseStream;
    const udx =
      options.udxStream ??
      options.endpoint.connectStream(
        options.localStreamId,
        options.remoteStreamId,
        options.remote!.port,
        options.remote!.address,
      );
    const noise = new SecretStream(options.isInitiator, udx, {
      handshake: { tx: hs.tx, rx: hs.rx, hash: hs.hash, publicKey: hs.publicKey, remotePublicKey: hs.remotePublicKey },
    });
    noise.on('error', () => {}); // handled through 'close' (Session#attach)
    const holder = { noise };
    const mux = new Mux(sinkFor(holder), { isInitiator: options.isInitiator });
    return new Session(options, { udx }, holder, mux, {
      earlyData: options.isInitiator ? null : (options.earlyData ?? null),
      earlyDataAccepted: options.isInitiator ? options.earlyDataAccepted === true : false,
    });
  }

  /** 'tcp' for a session over a TCP-punched connection, else 'udp' (UDX, possibly through a relay). */
  get transport(): 'udp' | 'tcp' {
    return this.#tcp ? 'tcp' : 'udp';
  }

  get path(): SessionPath {
    return { ...this.#path, local: { ...this.#path.local }, remote: { ...this.#path.remote } };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Opens a new reliable, ordered, duplex stream to the peer. */
  openStream(): MuxStream {
    if (this.#closed) throw this.#closeError ?? new NatpunchError('SESSION_CLOSED', 'the session is closed');
    return this.#mux.openStream();
  }

  /** Sends one unreliable, encrypted datagram (at most MAX_DATAGRAM_BYTES). It may be lost or reordered. */
  sendDatagram(buf: Uint8Array): void {
    if (this.#closed) throw this.#closeError ?? new NatpunchError('SESSION_CLOSED', 'the session is closed');
    if (buf.length > MAX_DATAGRAM_BYTES)
      throw new NatpunchError('BAD_ARGUMENT', `datagram of ${buf.length} bytes exceeds ${MAX_DATAGRAM_BYTES}`);
    if (this.#tcp) {
      // TCP has no unreliable channel: a DATAGRAM frame on the encrypted stream, dropped under backpressure.
      if (this.#tcp.writableLength <= TCP_DATAGRAM_BACKLOG_BYTES) this.#mux.sendControl(FrameType.DATAGRAM, 0, buf);
      return;
    }
    this.#noise.trySend(buf);
  }

  /** Measures the round trip over the session (a PING frame answered by a PONG). */
  ping(timeoutMs = 5_000): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(new NatpunchError('SESSION_CLOSED', 'the session is closed'));
      const seq = this.#sendPing();
      const onPong = (s: number) => {
        if (s !== seq) return;
        cleanup();
        resolve(this.#path.rttMs ?? 0);
      };
      const onClose = () => {
        cleanup();
        reject(new NatpunchError('SESSION_CLOSED', 'the session closed'));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new NatpunchError('TIMEOUT', `no pong within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.#mux.off('pong', onPong);
        this.off('close', onClose);
      };
      this.#mux.on('pong', onPong);
      this.once('close', onClose);
    });
  }

  /**
   * Points the session at a new remote address (path migration); streams and data in flight survive. With nothing
   * in flight the UDX stream is simply re-pointed (libudx changeRemote). Otherwise a new UDX stream and Noise
   * handshake are set up on the new path and the streams resend what the peer did not get (libudx would keep
   * resending packets in flight to the old, dead address).
   */
  async migrate(remote: { address: string; port: number }, path?: Partial<SessionPath>): Promise<void> {
    if (this.#closed) return;
    if (!this.#endpoint || !this.#udx)
      throw new NatpunchError('BAD_ARGUMENT', 'a session over TCP cannot move to another path');
    const cur = this.#path.remote;
    if (
      path &&
      cur.address === remote.address &&
      cur.port === remote.port &&
      !this.#swap &&
      !this.#lostTimer &&
      !this.#recovering &&
      !this.#udx.destroyed
    ) {
      // The peer already moved us onto this address (it announced the new path first): only what we know of it changes.
      this.#path = { ...this.#path, ...path };
      this.emit('path', this.path);
      return;
    }
    if (
      this.#swap ||
      this.#udx.destroyed ||
      this.#noise.destroyed ||
      this.#udx.inflight > 0 ||
      this.#options.alwaysSwap
    ) {
      await this.#startSwap(remote, path);
      return;
    }
    const changed = this.#endpoint.changeRemote(this.#udx, remote.port, remote.address);
    this.#path = { ...this.#path, ...path, remote: { address: remote.address, port: remote.port } };
    this.#lastReceived = Date.now();
    // Announce the new path at once: libudx completes the change only once data in flight is acknowledged.
    this.#sendPathProbe();
    await changed;
    this.#logger.info({ remote }, 'session path changed');
    this.emit('path', this.path);
    this.#sendPing();
  }

  #resumeIds(gen: number): { initiator: number; responder: number } {
    const g = Buffer.alloc(4);
    g.writeUInt32BE(gen, 0);
    return streamIdsFor(Buffer.concat([this.#hh0, Buffer.from('resume'), g]));
  }

  /** We learned the peer is now at `remote`: move the session there on a new transport. */
  #startSwap(remote: { address: string; port: number }, path?: Partial<SessionPath>): Promise<void> {
    const cur = this.#swap;
    if (cur && cur.remote.address === remote.address && cur.remote.port === remote.port) {
      // Both ends moving to the same pair (e.g. after a relay upgrade's checks): keep what our side knows of it.
      if (path) cur.path = { ...cur.path, ...path };
      return cur.done;
    }
    if (cur) this.#dropSwap(cur);
    const sw = this.#newSwap(this.#gen + 1, remote, path);
    if (!this.isInitiator) this.#openSwapTransport(sw); // ready for the initiator's first handshake message
    return sw.done;
  }

  #newSwap(gen: number, remote: { address: string; port: number }, path?: Partial<SessionPath>): Swap {
    let resolve!: () => void;
    const done = new Promise<void>((r) => (resolve = r));
    const sw: Swap = {
      gen,
      remote: { ...remote },
      path,
      udx: null,
      noise: null,
      sent: 0,
      resolve,
      done,
      reqTimer: null,
      deadline: null,
    };
    this.#swap = sw;
    const sendReq = () => {
      if (this.#swap !== sw || sw.sent++ >= SWAP_MAX_REQUESTS) return;
      this.#sendSwapProbe(SWAP_REQ, gen, sw.remote);
    };
    sendReq();
    sw.reqTimer = setInterval(sendReq, SWAP_REQUEST_INTERVAL_MS);
    sw.reqTimer.unref();
    sw.deadline = setTimeout(() => {
      if (this.#swap !== sw) return;
      this.#dropSwap(sw);
      // A move that did not happen (say a replayed request) costs nothing while the current transport still works.
      if (this.#noise.destroyed || this.#udx?.destroyed || this.#lostTimer) {
        this.#die(
          new NatpunchError(
            'SESSION_LOST',
            `the peer moved to ${remote.address}:${remote.port} but the session could not follow within ${SWAP_TIMEOUT_MS} ms`,
          ),
        );
      }
    }, SWAP_TIMEOUT_MS);
    sw.deadline.unref();
    this.#logger.info({ remote, gen }, 'moving the session to a new path');
    return sw;
  }

  #dropSwap(sw: Swap): void {
    if (sw.reqTimer) clearInterval(sw.reqTimer);
    if (sw.deadline) clearTimeout(sw.deadline);
    sw.noise?.destroy();
    sw.udx?.destroy();
    if (this.#swap === sw) this.#swap = null;
    sw.resolve();
  }

  #openSwapTransport(sw: Swap): void {
    if (sw.udx || this.#closed || !this.#endpoint) return;
    const SecretStream = require('@hyperswarm/secret-stream') as new (
      init: boolean,
      raw: unknown,
      opts: unknown,
    ) => NoiseStream;
    const ids = this.#resumeIds(sw.gen);
    try {
      sw.udx = this.isInitiator
        ? this.#endpoint.connectStream(ids.initiator, ids.responder, sw.remote.port, sw.remote.address)
        : this.#endpoint.connectStream(ids.responder, ids.initiator, sw.remote.port, sw.remote.address);
    } catch (err) {
      this.#dropSwap(sw);
      this.#die(
        new NatpunchError('SESSION_LOST', `cannot open the new path: ${(err as Error).message}`, { cause: err }),
      );
      return;
    }
    const noise = new SecretStream(this.isInitiator, sw.udx, { keyPair: this.#options.keyPair });
    sw.noise = noise;
    noise.on('error', () => {});
    noise.once('handshake', () => {
      if (this.#swap !== sw || this.#closed) return;
      if (!noise.remotePublicKey || !Buffer.from(noise.remotePublicKey).equals(this.remotePublicKey)) {
        this.#logger.warn('a different key answered on the new path; ignored');
        this.#dropSwap(sw);
        return;
      }
      this.#completeSwap(sw, noise);
    });
  }

  #completeSwap(sw: Swap, noise: NoiseStream): void {
    if (sw.reqTimer) clearInterval(sw.reqTimer);
    if (sw.deadline) clearTimeout(sw.deadline);
    this.#swap = null;
    this.#gen = sw.gen;
    if (this.#lostTimer) clearTimeout(this.#lostTimer);
    this.#lostTimer = null;
    const old = { noise: this.#holder.noise, udx: this.#udx };
    this.#holder.noise = noise;
    this.#udx = sw.udx!;
    old.noise.destroy();
    old.udx?.destroy();
    this.#attach(noise);
    // First thing on the new transport: what we have of every stream, so the peer resends exactly the rest.
    noise.write(this.#mux.beginResume());
    // Our writers wait for the peer's RESUME; never forever.
    const resumeTimer = setTimeout(() => {
      if (this.#mux.resuming && this.#holder.noise === noise) {
        this.#die(
          new NatpunchError(
            'SESSION_LOST',
            `the peer did not resume the session on the new path within ${SWAP_TIMEOUT_MS} ms`,
          ),
        );
      }
    }, SWAP_TIMEOUT_MS);
    resumeTimer.unref();
    this.#path = { ...this.#path, ...sw.path, remote: { ...sw.remote } };
    this.#lastReceived = Date.now();
    this.#logger.info({ remote: sw.remote, gen: sw.gen }, 'session moved to a new path');
    this.emit('path', this.path);
    this.#sendPing();
    sw.resolve();
  }

  /** Swap probes (0xF1 0x11 request / 0x12 ack): tag(16) | generation(4) | HMAC(pathKey)[0..16]. */
  #sendSwapProbe(kind: number, gen: number, to: { address: string; port: number }): void {
    const b = Buffer.allocUnsafe(PATH_PROBE_BYTES);
    b[0] = FirstByte.PROBE;
    b[1] = kind;
    this.#pathTag.copy(b, 2);
    b.writeUInt32BE(gen, 18);
    createHmac('sha256', this.#pathKey).update(b.subarray(0, 22)).digest().copy(b, 22, 0, 16);
    this.#endpoint?.send(b, to.port, to.address);
  }

  #onSwapProbe(kind: number, gen: number, from: { address: string; port: number }): void {
    if (gen <= this.#gen) return; // a finished or older move
    if (kind === SWAP_REQ) {
      let sw = this.#swap;
      if (!sw || sw.gen !== gen || sw.remote.address !== from.address || sw.remote.port !== from.port) {
        if (sw) this.#dropSwap(sw);
        sw = this.#newSwap(gen, from, { candidatePair: null });
      }
      this.#openSwapTransport(sw);
      if (!this.isInitiator) this.#sendSwapProbe(SWAP_ACK, gen, from); // our stream is ready: start the handshake
      return;
    }
    // SWAP_ACK: the responder's stream waits; the initiator opens its own and starts the handshake.
    const sw = this.#swap;
    if (sw && sw.gen === gen && this.isInitiator) this.#openSwapTransport(sw);
  }

  #sendPing(): number {
    const seq = (this.#pingSeq = (this.#pingSeq + 1) >>> 0);
    this.#pingSent.set(seq, Date.now());
    if (this.#pingSent.size > 16) this.#pingSent.delete(this.#pingSent.keys().next().value!);
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(seq, 0);
    this.#mux.sendControl(FrameType.PING, 0, b);
    return seq;
  }

  #startKeepalive(): void {
    const keepAliveMs = this.#options.keepAliveMs ?? DEFAULT_KEEPALIVE_MS;
    const idleMs = this.#options.idleTimeoutMs ?? Math.max(DEFAULT_IDLE_TIMEOUT_MS, 3 * keepAliveMs);
    const tick = Math.max(50, Math.min(KEEPALIVE_TICK_MS, keepAliveMs, Math.floor(idleMs / 3)));
    let lastPing = Date.now();
    // Silence probes: when the peer has been quiet for a while, announce ourselves with a path probe from our socket
    // at growing intervals (2, 4, 8 s ... up to the keepalive). If our NAT lost its state (conntrack flushed) while
    // we only receive, this outbound packet recreates the mapping so the peer's retransmissions get through again
    // before libudx gives up (~12 s without acks).
    let quietSince = this.#lastReceived;
    let nextQuietProbe = SILENCE_PROBE_MS;
    this.#keepTimer = setInterval(() => {
      if (this.#closed) return;
      const now = Date.now();
      if (now - lastPing >= keepAliveMs) {
        lastPing = now;
        this.#sendPing();
        this.#sendPathProbe();
      }
      if (this.#lastReceived !== quietSince) {
        quietSince = this.#lastReceived;
        nextQuietProbe = SILENCE_PROBE_MS;
      } else if (now - quietSince >= nextQuietProbe) {
        this.#sendPathProbe();
        nextQuietProbe = Math.min(nextQuietProbe * 2, Math.max(SILENCE_PROBE_MS, keepAliveMs));
        nextQuietProbe = Math.max(nextQuietProbe, now - quietSince + SILENCE_PROBE_MS);
      }
      if (now - this.#lastReceived > idleMs && !this.#recovering) void this.#onPathLost(idleMs);
    }, tick);
    this.#keepTimer.unref();
  }

  /**
   * The transport died (libudx gave up on the path). The session lingers for reconnectGraceMs with its streams
   * waiting: the peer may move it to a new path (swap probes), or we re-establish through `recover`.
   */
  #transportLost(err: NatpunchError): void {
    if (this.#closed || this.#lostTimer) return;
    if (this.#swap) return; // already moving to a new path
    const grace = this.#options.reconnectGraceMs ?? DEFAULT_RECONNECT_GRACE_MS;
    if (grace <= 0) return this.#die(err);
    this.#logger.warn({ err: err.message, grace }, 'transport lost; waiting for a new path');
    this.#lostTimer = setTimeout(() => this.#die(err), grace);
    this.#lostTimer.unref();
    if (this.#options.recover && !this.#recovering) void this.#onPathLost(0);
    else this.emit('path-lost');
  }

  async #onPathLost(idleMs: number): Promise<void> {
    this.#logger.warn({ remote: this.#path.remote, idleMs }, 'no traffic from the peer; path lost');
    this.emit('path-lost');
    const recover = this.#options.recover;
    if (!recover) {
      this.#die(
        new NatpunchError(
          'SESSION_LOST',
          `no traffic from the peer for ${idleMs} ms (path ${this.#path.remote.address}:${this.#path.remote.port} lost)`,
        ),
      );
      return;
    }
    const ac = new AbortController();
    this.#recovering = ac;
    // Meanwhile keep announcing ourselves on the path: if only our mapping changed the peer migrates to it.
    const probeTimer = setInterval(() => this.#sendPathProbe(), 1_000);
    probeTimer.unref();
    try {
      const next = await recover(ac.signal);
      if (this.#closed) return;
      await this.migrate({ address: next.address, port: next.port }, next.path);
    } catch (err) {
      if (!this.#closed)
        this.#die(
          new NatpunchError('SESSION_LOST', `path lost and re-establishing failed: ${(err as Error).message}`, {
            cause: err,
          }),
        );
    } finally {
      clearInterval(probeTimer);
      this.#recovering = null;
    }
  }

  /**
   * Path keepalive (0xF1 0x10): tag(16) | seq(4) | HMAC-SHA256(pathKey, ...)[0..16]. Sent from the session's own
   * socket, so its source address is our current mapping. A valid probe with a higher sequence from a new source
   * means the peer's NAT rebound its mapping: migrate to it (QUIC does the same, RFC 9000 §9.3).
   */
  #sendPathProbe(): void {
    if (this.#closed || !this.#endpoint) return;
    const b = Buffer.allocUnsafe(PATH_PROBE_BYTES);
    b[0] = FirstByte.PROBE;
    b[1] = PATH_PROBE;
    this.#pathTag.copy(b, 2);
    b.writeUInt32BE((this.#pathSeqOut = (this.#pathSeqOut + 1) >>> 0), 18);
    createHmac('sha256', this.#pathKey).update(b.subarray(0, 22)).digest().copy(b, 22, 0, 16);
    this.#endpoint.send(b, this.#path.remote.port, this.#path.remote.address);
  }

  #onPathProbe(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.#closed || msg.length !== PATH_PROBE_BYTES || msg[0] !== FirstByte.PROBE) return;
    const kind = msg[1];
    if (kind !== PATH_PROBE && kind !== SWAP_REQ && kind !== SWAP_ACK) return;
    if (!msg.subarray(2, 18).equals(this.#pathTag)) return;
    const mac = createHmac('sha256', this.#pathKey).update(msg.subarray(0, 22)).digest().subarray(0, 16);
    if (!timingSafeEqual(mac, msg.subarray(22))) return;
    if (kind !== PATH_PROBE) {
      this.#onSwapProbe(kind!, msg.readUInt32BE(18), { address: rinfo.address, port: rinfo.port });
      return;
    }
    const seq = msg.readUInt32BE(18);
    if (seq <= this.#pathSeqIn) return; // replayed or reordered
    this.#pathSeqIn = seq;
    this.#lastReceived = Date.now();
    const cur = this.#path.remote;
    if (rinfo.address !== cur.address || rinfo.port !== cur.port) {
      this.#logger.info(
        { from: cur, to: { address: rinfo.address, port: rinfo.port } },
        'peer address changed (NAT rebinding)',
      );
      this.#recovering?.abort();
      void this.migrate({ address: rinfo.address, port: rinfo.port }, { candidatePair: null }).catch(() => {});
    }
  }

  #die(err: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeError = err;
    this.#logger.info({ err: err.message }, 'session ended');
    this.#teardown();
    this.#mux.fail(err);
    this.#noise.destroy();
    this.#tcp?.destroy();
    void this.#releaseEndpoint().then(() => this.emit('close', err));
  }

  #teardown(): void {
    if (this.#swap) this.#dropSwap(this.#swap);
    if (this.#lostTimer) clearTimeout(this.#lostTimer);
    this.#lostTimer = null;
    if (this.#keepTimer) clearInterval(this.#keepTimer);
    this.#keepTimer = null;
    this.#recovering?.abort();
    this.#offProbe();
  }

  async #releaseEndpoint(): Promise<void> {
    this.#tcp?.destroy();
    if (this.#options.ownsEndpoint && this.#endpoint) await this.#endpoint.close().catch(() => {});
  }

  /** Closes the session: tells the peer (its open streams end with SESSION_CLOSED), ends ours without error. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    if (this.#closed) return (this.#closing = Promise.resolve());
    // Streams that were ended by their writer still deliver what they hold (bounded), as a socket's end() would.
    this.#closing = this.#mux.drainEnded(CLOSE_DRAIN_MS).then(() => this.#closeNow());
    return this.#closing;
  }

  #closeNow(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.#teardown();
    this.#mux.sendControl(FrameType.GOODBYE, 0);
    this.#mux.closeAll();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.#noise.destroy(), CLOSE_GRACE_MS);
      this.#noise.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (this.#noise.destroyed) {
        clearTimeout(timer);
        resolve();
      }
      this.#noise.end();
    }).then(async () => {
      await this.#releaseEndpoint();
      this.emit('close', null);
    });
  }
}
