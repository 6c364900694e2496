/**
 * The long-lived Endpoint (what hyperdht calls a node, iroh an Endpoint, Tailscale's magicsock a Conn): one UDP
 * socket, one rendezvous registration, the NAT report measured on that socket, the gateway port mapping and the
 * relay allocation, shared by every session to every peer in both directions. `connect(peer)` and incoming
 * introductions ('session' events) all run over it; close() releases everything it owns, once.
 */
import { EventEmitter } from 'node:events';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { connect as connectOnce, listen as listenOnce, type ConnectOptions, type ListenOptions, type Listener, type Progress, type RendezvousLike } from '../natpunch.js';
import type { KeyPair } from '../session/identity.js';
import type { Allow, Session } from '../session/session.js';
import type { Candidate } from '../traversal/candidate.js';
import type { UdxEndpoint } from '../net/udx.js';

export interface EndpointOptions {
  keyPair: KeyPair;
  /** How to reach the rendezvous: "host[:port]", {host, port}, or a factory. Without one: direct mode only. */
  rendezvous?: ListenOptions['rendezvous'];
  /** A name to claim on the rendezvous (incoming sessions find us by it). */
  name?: string;
  bind?: { address?: string; port?: number };
  /** Who may open sessions to us (default: anyone with a valid key; the CLI's expose/listen pass a list). */
  allow?: Allow;
  /** Each technique is on by default; `false` turns it off (see src/traversal/planner.ts). */
  hardNat?: ListenOptions['hardNat'];
  portMapping?: ListenOptions['portMapping'];
  relay?: ListenOptions['relay'] | false;
  transport?: ListenOptions['transport'];
  tcpSequence?: ListenOptions['tcpSequence'];
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  /** Names pinned to keys for connect(name) (ConnectOptions.knownPeers, src/identity/known-peers.ts). */
  knownPeers?: ConnectOptions['knownPeers'];
  logger?: Logger;
  onProgress?: (p: Progress) => void;
  signal?: AbortSignal;
}

export interface EndpointConnectOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  onProgress?: (p: Progress) => void;
  /** Direct mode: the caller exchanged keys and candidates itself. */
  candidates?: Candidate[];
  connectionId?: Uint8Array;
  /** Up to 1000 bytes in the first check (Noise IK message 1, docs/handshake.md); see ConnectOptions.earlyData. */
  earlyData?: Uint8Array;
}

export interface EndpointEvents {
  session: [session: Session];
  progress: [progress: Progress];
  'connection-error': [error: Error, peer: string];
  close: [];
}

/** The rendezvous client shared with connect attempts: they may not close it (the Endpoint owns it). */
function borrowed(rv: RendezvousLike): RendezvousLike {
  return new Proxy(rv, {
    get(target, prop, receiver) {
      if (prop === 'close') return () => {};
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

export class Endpoint extends EventEmitter<EndpointEvents> {
  readonly publicKey: Buffer;
  readonly #listener: Listener;
  readonly #options: EndpointOptions;
  readonly #logger: Logger;
  readonly #outgoing = new Set<Session>();
  #closed = false;

  /** @internal use createEndpoint() */
  constructor(listener: Listener, options: EndpointOptions) {
    super();
    this.#listener = listener;
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.publicKey = Buffer.from(options.keyPair.publicKey);
    listener.on('session', (s: Session) => this.emit('session', s));
    listener.on('progress', (p: Progress) => this.emit('progress', p));
    listener.on('connection-error', (e: Error, peer: string) => this.emit('connection-error', e, peer));
  }

  /** The one UDP socket every session of this Endpoint shares. */
  get socket(): UdxEndpoint {
    return this.#listener.endpoint;
  }

  /** Our candidates as offered to peers (host, server-reflexive, mapped, relayed). */
  get candidates(): Candidate[] {
    return this.#listener.candidates;
  }

  /** Every live session, both directions. */
  get sessions(): Session[] {
    return [...this.#listener.sessions, ...this.#outgoing];
  }

  /** Incoming sessions arrive as 'session' events from creation on; this resolves once the Endpoint is registered
   *  (it already is when createEndpoint() resolved): kept for symmetry with hyperdht's server.listen(). */
  async listen(): Promise<void> {
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'the endpoint is closed');
  }

  /** Opens a session to `peer` (a name, a key, or `{ name, key }` through the rendezvous; with `candidates`, direct
   *  mode with the key). A name is checked against `knownPeers` before anything is sent to the peer. */
  async connect(peer: NonNullable<ConnectOptions['to']>, options: EndpointConnectOptions = {}): Promise<Session> {
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'the endpoint is closed');
    const rv = this.#listener.rendezvous;
    const o = this.#options;
    const onProgress = (p: Progress) => {
      options.onProgress?.(p);
      this.emit('progress', p);
    };
    const common: ConnectOptions = {
      keyPair: o.keyPair,
      endpoint: this.socket,
      candidates: this.#listener.candidates.filter((c) => c.type !== 'relay'),
      ...(o.hardNat !== undefined ? { hardNat: o.hardNat } : {}),
      ...(o.portMapping !== undefined ? { portMapping: false } : { portMapping: false }), // the Endpoint's mapping is already in `candidates`
      ...(o.transport !== undefined ? { transport: o.transport } : {}),
      ...(o.tcpSequence !== undefined ? { tcpSequence: o.tcpSequence } : {}),
      ...(o.keepAliveMs !== undefined ? { keepAliveMs: o.keepAliveMs } : {}),
      ...(o.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
      ...(o.knownPeers ? { knownPeers: o.knownPeers } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.earlyData ? { earlyData: options.earlyData } : {}),
      logger: this.#logger,
      onProgress,
    };
    let session: Session;
    if (options.candidates) {
      if (!(peer instanceof Uint8Array)) throw new NatpunchError('BAD_ARGUMENT', 'direct mode needs the peer key as bytes');
      session = await connectOnce({ ...common, peer: { publicKey: peer, candidates: options.candidates }, ...(options.connectionId ? { connectionId: options.connectionId } : {}) });
    } else {
      if (!rv) throw new NatpunchError('BAD_ARGUMENT', 'this endpoint has no rendezvous: give the peer candidates (direct mode)');
      session = await connectOnce({ ...common, to: peer, rendezvous: () => borrowed(rv) });
    }
    this.#outgoing.add(session);
    session.once('close', () => this.#outgoing.delete(session));
    return session;
  }

  /** Closes every session, the registration, the mapping, the relay allocation and the socket. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#outgoing].map((s) => s.close()));
    await this.#listener.close();
    this.emit('close');
  }
}

/** Binds the socket, measures what it can, registers, and starts accepting; resolves when it is reachable. */
export async function createEndpoint(options: EndpointOptions): Promise<Endpoint> {
  const { relay, ...rest } = options;
  const listener = await listenOnce({
    ...rest,
    ...(relay !== undefined && relay !== false ? { relay } : {}),
  } as ListenOptions);
  return new Endpoint(listener, options);
}
