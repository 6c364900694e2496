import { EventEmitter } from 'node:events';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { createRequire } from 'node:module';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { FirstByte } from '../net/demux.js';
import type { RemoteInfo } from '../net/datagram.js';
import type { UdxEndpoint, UdxStream } from '../net/udx.js';
import type { Candidate } from '../traversal/candidate.js';
import { keyToId, type KeyPair } from './identity.js';
import { FrameType, Mux, MUX_VERSION, type MuxStream } from './mux.js';

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
/** How long close() waits for the peer to acknowledge the end of the encrypted stream. */
const CLOSE_GRACE_MS = 2_000;
/** Probe kinds of the session's path keepalives on the 0xF1 channel (src/traversal/checks.ts uses 1..4). */
export const PATH_PROBE = 0x10;
const PATH_PROBE_BYTES = 2 + 16 + 4 + 16;

export type PathKind = 'lan' | 'direct' | 'relay';

export interface SessionPath {
  kind: PathKind;
  local: { address: string; port: number };
  remote: { address: string; port: number };
  candidatePair: { local: Candidate | null; remote: Candidate | null } | null;
  rttMs: number | null;
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
  remote: { address: string; port: number };
  /** UDX stream ids agreed by both ends (see streamIdsFor). */
  localStreamId: number;
  remoteStreamId: number;
  /** Initiator: the key it meant to reach. The handshake fails unless the responder proves this key. */
  expectedRemoteKey?: Uint8Array;
  /** Responder: who may connect (default: anyone). */
  allow?: Allow;
  path?: Partial<SessionPath>;
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  /** Called when the path went silent; resolve with a new remote address to migrate to, or reject to give up. */
  recover?: (signal: AbortSignal) => Promise<{ address: string; port: number; path?: Partial<SessionPath> }>;
  /** Close the endpoint when the session closes. */
  ownsEndpoint?: boolean;
  logger?: Logger;
  signal?: AbortSignal;
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
  #endpoint: UdxEndpoint;
  #udx: UdxStream;
  #noise: NoiseStream;
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
  #pathKey: Buffer;
  #pathTag: Buffer;
  #pathSeqOut = 0;
  #pathSeqIn = -1;
  #offProbe: () => void;
  #closing: Promise<void> | null = null;

  private constructor(options: SessionOptions, udx: UdxStream, noise: NoiseStream, mux: Mux) {
    super();
    this.#options = options;
    this.#endpoint = options.endpoint;
    this.#udx = udx;
    this.#noise = noise;
    this.#mux = mux;
    this.#logger = options.logger ?? silentLogger;
    this.isInitiator = options.isInitiator;
    this.publicKey = options.keyPair.publicKey;
    this.remotePublicKey = Buffer.from(noise.remotePublicKey!);
    const local = options.endpoint.address();
    this.#path = {
      kind: options.path?.kind ?? 'direct',
      local: options.path?.local ?? { address: local.address, port: local.port },
      remote: { address: options.remote.address, port: options.remote.port },
      candidatePair: options.path?.candidatePair ?? null,
      rttMs: options.path?.rttMs ?? null,
    };
    // Path keepalive key and tag come from the Noise handshake hash: only the two ends know them.
    const hh = noise.handshakeHash!;
    this.#pathKey = createHash('sha256').update('natpunch path key').update(hh).digest();
    this.#pathTag = createHash('sha256').update('natpunch path tag').update(hh).digest().subarray(0, 16);
    this.#offProbe = this.#endpoint.onMessage((msg, rinfo) => this.#onPathProbe(msg, rinfo));

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
    noise.on('data', (frame: Buffer) => {
      this.#lastReceived = Date.now();
      mux.onFrame(frame);
    });
    noise.on('message', (buf: Buffer) => {
      this.#lastReceived = Date.now();
      this.emit('datagram', Buffer.from(buf));
    });
    noise.on('end', () => {
      // The peer finished the encrypted stream: an orderly close.
      if (!this.#closed) this.#die(new NatpunchError('SESSION_CLOSED', 'the peer closed the session'));
    });
    noise.on('close', () => {
      if (!this.#closed) {
        this.#die(this.#goodbye
          ? new NatpunchError('SESSION_CLOSED', 'the peer closed the session')
          : new NatpunchError('SESSION_LOST', 'the encrypted stream to the peer closed unexpectedly'));
      }
    });
    noise.on('error', (err: Error) => {
      if (!this.#closed) this.#die(new NatpunchError('SESSION_LOST', `session transport failed: ${err.message}`, { cause: err }));
    });
    this.#startKeepalive();
    this.#sendPing();
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
    const SecretStream = require('@hyperswarm/secret-stream') as new (init: boolean, raw: unknown, opts: unknown) => NoiseStream;
    const logger = options.logger ?? silentLogger;
    const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    const udx = options.endpoint.connectStream(options.localStreamId, options.remoteStreamId, options.remote.port, options.remote.address);
    const noise = new SecretStream(options.isInitiator, udx, { keyPair: options.keyPair });
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
          udx.destroy();
          reject(err);
        } else resolve(session!);
      };
      const timer = setTimeout(() => finish(new NatpunchError('HANDSHAKE_FAILED', `no authenticated session with ${options.remote.address}:${options.remote.port} within ${timeoutMs} ms`)), timeoutMs);
      const onAbort = () => finish(new NatpunchError('ABORTED', 'session setup aborted', { cause: options.signal?.reason }));
      const onClose = () => finish(new NatpunchError('HANDSHAKE_FAILED', `the secure channel to ${options.remote.address}:${options.remote.port} closed during the handshake`));
      const onEarlyData = (frame: Buffer) => {
        if (frames.length < 64) frames.push(frame);
      };
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      noise.on('close', onClose);

      const sink = {
        writeFrame: (f: Buffer) => noise.write(f),
        waitDrain: () => new Promise<void>((res) => {
          const done = () => {
            noise.off('drain', done);
            noise.off('close', done);
            res();
          };
          noise.on('drain', done);
          noise.on('close', done);
        }),
        get closed() {
          return noise.destroyed || noise.destroying;
        },
      };

      const makeSession = () => {
        const session = new Session(options, udx, noise, mux!);
        noise.off('data', onEarlyData);
        for (const f of frames.splice(0)) mux!.onFrame(f);
        return session;
      };

      noise.once('handshake', () => {
        const remoteKey = noise.remotePublicKey!;
        mux = new Mux(sink, { isInitiator: options.isInitiator });
        if (options.isInitiator) {
          if (!Buffer.from(options.expectedRemoteKey!).equals(remoteKey)) {
            logger.warn({ expected: keyToId(options.expectedRemoteKey!), got: keyToId(remoteKey) }, 'responder key mismatch');
            return finish(new NatpunchError('HANDSHAKE_FAILED', `the peer at ${options.remote.address}:${options.remote.port} proved key ${keyToId(remoteKey).slice(0, 16)}…, not the key we meant to reach (${keyToId(options.expectedRemoteKey!).slice(0, 16)}…); refusing`));
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
              finish(new NatpunchError('NOT_ALLOWED', `the peer ${keyToId(remoteKey).slice(0, 16)}… refused the connection (${code})`));
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
            const err = new NatpunchError('NOT_ALLOWED', `refused a session from ${keyToId(remoteKey)} (not in the allow list)`);
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
    if (buf.length > MAX_DATAGRAM_BYTES) throw new NatpunchError('BAD_ARGUMENT', `datagram of ${buf.length} bytes exceeds ${MAX_DATAGRAM_BYTES}`);
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

  /** Points the session at a new remote address (path migration); streams and data in flight survive. */
  async migrate(remote: { address: string; port: number }, path?: Partial<SessionPath>): Promise<void> {
    if (this.#closed) return;
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
    const tick = Math.max(50, Math.min(keepAliveMs, Math.floor(idleMs / 3)));
    let lastPing = Date.now();
    this.#keepTimer = setInterval(() => {
      if (this.#closed) return;
      const now = Date.now();
      if (now - lastPing >= keepAliveMs) {
        lastPing = now;
        this.#sendPing();
        this.#sendPathProbe();
      }
      if (now - this.#lastReceived > idleMs && !this.#recovering) void this.#onPathLost(idleMs);
    }, tick);
    this.#keepTimer.unref();
  }

  async #onPathLost(idleMs: number): Promise<void> {
    this.#logger.warn({ remote: this.#path.remote, idleMs }, 'no traffic from the peer; path lost');
    this.emit('path-lost');
    const recover = this.#options.recover;
    if (!recover) {
      this.#die(new NatpunchError('SESSION_LOST', `no traffic from the peer for ${idleMs} ms (path ${this.#path.remote.address}:${this.#path.remote.port} lost)`));
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
      if (!this.#closed) this.#die(new NatpunchError('SESSION_LOST', `path lost and re-establishing failed: ${(err as Error).message}`, { cause: err }));
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
    if (this.#closed) return;
    const b = Buffer.allocUnsafe(PATH_PROBE_BYTES);
    b[0] = FirstByte.PROBE;
    b[1] = PATH_PROBE;
    this.#pathTag.copy(b, 2);
    b.writeUInt32BE((this.#pathSeqOut = (this.#pathSeqOut + 1) >>> 0), 18);
    createHmac('sha256', this.#pathKey).update(b.subarray(0, 22)).digest().copy(b, 22, 0, 16);
    this.#endpoint.send(b, this.#path.remote.port, this.#path.remote.address);
  }

  #onPathProbe(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.#closed || msg.length !== PATH_PROBE_BYTES || msg[0] !== FirstByte.PROBE || msg[1] !== PATH_PROBE) return;
    if (!msg.subarray(2, 18).equals(this.#pathTag)) return;
    const mac = createHmac('sha256', this.#pathKey).update(msg.subarray(0, 22)).digest().subarray(0, 16);
    if (!timingSafeEqual(mac, msg.subarray(22))) return;
    const seq = msg.readUInt32BE(18);
    if (seq <= this.#pathSeqIn) return; // replayed or reordered
    this.#pathSeqIn = seq;
    this.#lastReceived = Date.now();
    const cur = this.#path.remote;
    if (rinfo.address !== cur.address || rinfo.port !== cur.port) {
      this.#logger.info({ from: cur, to: { address: rinfo.address, port: rinfo.port } }, 'peer address changed (NAT rebinding)');
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
    void this.#releaseEndpoint().then(() => this.emit('close', err));
  }

  #teardown(): void {
    if (this.#keepTimer) clearInterval(this.#keepTimer);
    this.#keepTimer = null;
    this.#recovering?.abort();
    this.#offProbe();
  }

  async #releaseEndpoint(): Promise<void> {
    if (this.#options.ownsEndpoint) await this.#endpoint.close().catch(() => {});
  }

  /** Closes the session: tells the peer (its open streams end with SESSION_CLOSED), ends ours without error. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    if (this.#closed) return (this.#closing = Promise.resolve());
    this.#closed = true;
    this.#teardown();
    this.#mux.sendControl(FrameType.GOODBYE, 0);
    this.#mux.closeAll();
    this.#closing = new Promise<void>((resolve) => {
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
    return this.#closing;
  }
}
