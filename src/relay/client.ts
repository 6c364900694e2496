import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { DatagramListener, DatagramTransport, RemoteInfo } from '../net/datagram.js';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { CHANNEL_MIN, CHANNEL_MAX, TurnStreamFramer } from '../wire/channel-data.js';
import { normalizeIp } from './ip.js';
import { longTermKey, NonceManager, PasswordAlgorithm, SecurityFeature, type PasswordAlgorithmId } from './auth.js';
import {
  A,
  attrText,
  attrUint32,
  attrValue,
  attrXorAddresses,
  Cls,
  errorInfo,
  Method,
  parseStun,
  StunBuilder,
  verifyIntegrity,
  type Peer,
  type StunMsg,
} from './message.js';
import { RFC8489_TIMING, TransactionTable } from '../stun/transaction.js';

/** RFC 8489 §6.2.1: initial RTO 500 ms, doubled per retransmission, Rc = 7 (UDP only). */
export const INITIAL_RTO_MS = 500;
export const MAX_RETRANSMITS = 6;
/** Bounded default for one TURN transaction (RFC 8489 §6.2.1 gives 39.5 s; we give up sooner). */
export const DEFAULT_TRANSACTION_TIMEOUT_MS = 10_000;
/** Refresh the allocation this long before it expires (RFC 8656 §8: the client refreshes before expiry). */
export const REFRESH_MARGIN_S = 60;
/** RFC 8656 §9: permissions last 300 s; refresh a minute early. */
export const PERMISSION_REFRESH_MS = 240_000;
/** RFC 8656 §12: channels last 600 s; refresh a minute early (ChannelBind also refreshes the permission). */
export const CHANNEL_REFRESH_MS = 540_000;
/** After a failed channel setup, datagrams to that peer are dropped for this long before trying again. */
export const SETUP_RETRY_MS = 5_000;
/** Datagrams queued for a peer while its permission/channel is being set up. */
export const MAX_QUEUED_PER_PEER = 64;
/**
 * Unauthenticated requests over UDP (the first Allocate, before the 401) are padded to this size with PADDING
 * (RFC 5780 §7.6), so the server's challenge is no larger than what we sent and its anti-amplification budget
 * (relay/server.ts AMPLIFIED_BURST) never delays us. 160 bytes cover a 401 whose realm has up to ~50 characters.
 */
export const UNAUTHENTICATED_REQUEST_PAD_BYTES = 160;

export interface TurnClientOptions {
  /** The TURN server (IP literal) and port. */
  server: { address: string; port: number };
  username: string;
  password: string;
  /**
   * A caller-owned UDP transport (the same socket used for punching, so STUN/TURN share one NAT mapping). When
   * absent, `TurnClient.connectTcp()` builds a client over TCP.
   */
  transport?: DatagramTransport;
  software?: string;
  logger?: Logger;
  /** Per-transaction timeout, default 10 s. */
  timeoutMs?: number;
}

export interface AllocateOptions {
  signal?: AbortSignal;
  /** Relayed transport protocol: 'udp' (default) or 'tcp' (RFC 6062; the client must be over TCP). */
  transport?: 'udp' | 'tcp';
  /** REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6). */
  family?: 'IPv4' | 'IPv6';
  /** Ask for IPv4 + IPv6 (ADDITIONAL-ADDRESS-FAMILY, RFC 8656 §18.11). */
  dual?: boolean;
  /** Requested LIFETIME in seconds. */
  lifetime?: number;
  /** EVEN-PORT (RFC 8656 §18.7), with the R bit when 'reserve'. */
  evenPort?: boolean | 'reserve';
  reservationToken?: Buffer;
  dontFragment?: boolean;
}

export interface Allocation {
  /** XOR-RELAYED-ADDRESS(es): the address peers send to. */
  relayed: Peer[];
  /** XOR-MAPPED-ADDRESS: the client as the server sees it. */
  mapped: Peer | null;
  lifetime: number;
  reservationToken?: Buffer;
}

interface PeerState {
  /** When setting up a channel to this peer last failed (403 by policy, …): no retry for a while. */
  failedAt: number;
  channel: number | null;
  permissionAt: number;
  channelAt: number;
  setup: Promise<void> | null;
  queue: Buffer[];
}

/**
 * A TURN client (RFC 8656, RFC 6062). It runs over a caller-owned DatagramTransport (UDP) or over a TCP connection
 * it owns (connectTcp). It does not own the UDP socket; close() releases the allocation and its timers.
 *
 * For the session layer: after `allocate()`, `relayTransport()` returns a DatagramTransport whose send() goes to a
 * peer through the relay (permission + channel set up on first use) and whose onMessage() delivers what peers send
 * to the relayed address, with the peer's address as rinfo — any protocol that runs over a DatagramTransport runs
 * over the relay unchanged.
 */
export class TurnClient {
  readonly server: Peer;
  allocation: Allocation | null = null;

  readonly #opts: TurnClientOptions;
  readonly #log: Logger;
  readonly #transport: DatagramTransport | null;
  readonly #tcp: net.Socket | null;
  readonly #transactions = new TransactionTable<string, StunMsg>();
  readonly #events = new EventEmitter();
  readonly #peers = new Map<string, PeerState>();
  readonly #channels = new Map<number, Peer>();
  #nextChannel = CHANNEL_MIN;
  #realm: string | null = null;
  #nonce: string | null = null;
  #key: Buffer | null = null;
  #algorithm: PasswordAlgorithmId | null = null;
  #offered: Buffer | null = null;
  #off: (() => void) | null = null;
  #refreshTimer: NodeJS.Timeout | null = null;
  #maintTimer: NodeJS.Timeout | null = null;
  #closed = false;
  /** Opens another stream connection to the server (RFC 6062 data connections). */
  #dial: () => net.Socket = () => net.connect({ host: this.server.address, port: this.server.port });

  constructor(options: TurnClientOptions, tcp?: net.Socket) {
    this.#opts = options;
    this.#log = options.logger ?? silentLogger;
    this.server = { address: options.server.address, port: options.server.port };
    this.#events.setMaxListeners(0);
    if (tcp) {
      this.#tcp = tcp;
      this.#transport = null;
      const framer = new TurnStreamFramer();
      tcp.on('data', (chunk: Buffer) => {
        if (!framer.push(chunk, (f) => this.#onPacket(f))) tcp.destroy();
      });
      tcp.on('error', noop);
      tcp.on('close', () => this.#fail(new NatpunchError('SOCKET_CLOSED', 'TURN server closed the TCP connection')));
    } else {
      if (!options.transport)
        throw new NatpunchError('BAD_ARGUMENT', 'TurnClient needs a transport (or use TurnClient.connectTcp)');
      this.#transport = options.transport;
      this.#tcp = null;
      this.#off = options.transport.onMessage((msg, rinfo) => {
        if (rinfo.port !== this.server.port || normalizeIp(rinfo.address) !== this.server.address) return;
        this.#onPacket(msg);
      });
    }
  }

  /** A client over a TCP connection to the server (owned by the client; closed by close()). */
  static async connectTcp(
    options: Omit<TurnClientOptions, 'transport'> & { signal?: AbortSignal },
  ): Promise<TurnClient> {
    const dial = () => net.connect({ host: options.server.address, port: options.server.port });
    const socket = dial();
    socket.setNoDelay(true);
    await waitConnect(socket, options.timeoutMs ?? DEFAULT_TRANSACTION_TIMEOUT_MS, options.signal);
    const client = new TurnClient(options, socket);
    client.#dial = dial;
    return client;
  }

  /**
   * A client over TLS ("turns:", RFC 8656 §3.1; default port 5349). `tls` holds the usual node:tls options (ca,
   * servername, rejectUnauthorized...). RFC 6062 data connections use TLS too.
   */
  static async connectTls(
    options: Omit<TurnClientOptions, 'transport'> & { signal?: AbortSignal; tls?: tls.ConnectionOptions },
  ): Promise<TurnClient> {
    const dial = () =>
      tls.connect({ host: options.server.address, port: options.server.port, minVersion: 'TLSv1.2', ...options.tls });
    const socket = dial();
    socket.setNoDelay(true);
    await waitConnect(socket, options.timeoutMs ?? DEFAULT_TRANSACTION_TIMEOUT_MS, options.signal, 'secureConnect');
    const client = new TurnClient(options, socket);
    client.#dial = dial;
    return client;
  }

  get overTcp(): boolean {
    return this.#tcp !== null;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Transactions

  #write(buf: Buffer): void {
    if (this.#tcp) {
      if (!this.#tcp.destroyed) this.#tcp.write(buf);
    } else this.#transport!.send(buf, this.server.port, this.server.address);
  }

  /** Sends one request and waits for its response (retransmitting over UDP, RFC 8489 §6.2.1). */
  async #transact(
    build: (b: StunBuilder) => void,
    method: number,
    signal?: AbortSignal,
    authenticated = true,
  ): Promise<StunMsg> {
    const tid = randomBytes(12);
    const b = new StunBuilder(method, Cls.Request, tid);
    build(b);
    if (this.#opts.software) b.text(A.SOFTWARE, this.#opts.software);
    if (authenticated && this.#key) {
      b.text(A.USERNAME, this.#opts.username).text(A.REALM, this.#realm!).text(A.NONCE, this.#nonce!);
      if (this.#offered) {
        // RFC 8489 §9.2.4: echo the server's PASSWORD-ALGORITHMS and name the one we chose.
        const alg = Buffer.from([0, this.#algorithm!, 0, 0]);
        b.add(A.PASSWORD_ALGORITHMS, this.#offered).add(A.PASSWORD_ALGORITHM, alg);
      }
    }
    const sha256 = this.#offered !== null && this.#algorithm === PasswordAlgorithm.SHA256;
    if (!(authenticated && this.#key) && !this.#tcp) {
      // PADDING's own header (4) and FINGERPRINT (8) come on top of what is built so far.
      const pad = UNAUTHENTICATED_REQUEST_PAD_BYTES - b.length - 4 - 8;
      if (pad > 0) b.add(A.PADDING, Buffer.alloc(pad));
    }
    const msg =
      authenticated && this.#key
        ? b.finish({ key: this.#key, integrity: sha256 ? 'sha256' : 'sha1', fingerprint: true })
        : b.finish({ fingerprint: true });
    const key = tid.toString('hex');
    const timeoutMs = this.#opts.timeoutMs ?? DEFAULT_TRANSACTION_TIMEOUT_MS;
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'TURN client is closed');
    // The shared engine (src/stun/transaction.ts): §6.2.1 retransmission over UDP, one send over TCP (§6.2.2), both
    // bounded by this client's transaction timeout.
    const expired = new AbortController();
    const timer = setTimeout(
      () =>
        expired.abort(
          new NatpunchError('TIMEOUT', `no answer from TURN server ${this.server.address}:${this.server.port}`),
        ),
      timeoutMs,
    );
    try {
      const r = await this.#transactions.run(key, () => this.#write(msg), {
        timing: { rtoMs: INITIAL_RTO_MS, rc: MAX_RETRANSMITS + 1, rm: RFC8489_TIMING.rm! },
        reliable: this.#tcp !== null,
        signal: signal ? AbortSignal.any([signal, expired.signal]) : expired.signal,
        timeoutError: () =>
          new NatpunchError('TIMEOUT', `no answer from TURN server ${this.server.address}:${this.server.port}`),
        abortError: (reason) => new NatpunchError('ABORTED', 'operation aborted', { cause: reason }),
      });
      return r.answer;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A request with the long-term credential dance (RFC 8489 §9.2.4): 401 → take REALM/NONCE (and the offered
   * PASSWORD-ALGORITHMS) and retry; 438 → new NONCE and retry. Throws STUN_ERROR_RESPONSE for other errors.
   */
  async #request(method: number, build: (b: StunBuilder) => void, signal?: AbortSignal): Promise<StunMsg> {
    let triedWithKey = false;
    for (let attempt = 0; attempt < 4; attempt++) {
      const hadKey = this.#key !== null;
      const res = await this.#transact(build, method, signal);
      if (res.cls === Cls.Success) {
        if (this.#key && !verifyIntegrity(res, this.#key)) {
          throw new NatpunchError(
            'STUN_INTEGRITY',
            'TURN response failed MESSAGE-INTEGRITY: wrong password or a spoofed response',
          );
        }
        return res;
      }
      const err = errorInfo(res);
      const code = err?.code ?? 0;
      if (code === 401 || code === 438) {
        // A second 401 with fresh credentials means the server does not accept them.
        if (code === 401 && hadKey && triedWithKey) break;
        const realm = attrText(res, A.REALM);
        const nonce = attrText(res, A.NONCE);
        if (!nonce || (!realm && !this.#realm)) break;
        triedWithKey = true;
        this.#nonce = nonce;
        if (realm) this.#realm = realm;
        const offered = attrValue(res, A.PASSWORD_ALGORITHMS);
        if (offered && NonceManager.featuresOf(nonce) & SecurityFeature.PASSWORD_ALGORITHMS) {
          this.#offered = Buffer.from(offered);
          this.#algorithm = offersSha256(offered) ? PasswordAlgorithm.SHA256 : PasswordAlgorithm.MD5;
        } else {
          this.#offered = null;
          this.#algorithm = PasswordAlgorithm.MD5;
        }
        this.#key = longTermKey(this.#opts.username, this.#realm!, this.#opts.password, this.#algorithm);
        continue;
      }
      throw turnError(method, code, err?.reason ?? '', res);
    }
    throw new NatpunchError(
      'STUN_ERROR_RESPONSE',
      `TURN server rejected the credentials for "${this.#opts.username}" (401 Unauthorized)`,
      {
        details: { code: 401 },
      },
    );
  }

  #onPacket(msg: Buffer): void {
    const b0 = msg[0];
    if (b0 === undefined) return;
    if (b0 >= 0x40 && b0 <= 0x4f) {
      // RFC 8656 §12.7: ChannelData from the server; unknown channels are dropped.
      if (msg.length < 4) return;
      const peer = this.#channels.get(msg.readUInt16BE(0));
      const length = msg.readUInt16BE(2);
      if (!peer || length > msg.length - 4) return;
      this.#events.emit('data', msg.subarray(4, 4 + length), peer);
      return;
    }
    if (b0 > 3) return;
    const m = parseStun(msg);
    if (!m) return;
    if (m.cls === Cls.Success || m.cls === Cls.Error) {
      this.#transactions.resolve(m.transactionKey, m);
      return;
    }
    if (m.cls !== Cls.Indication) return;
    if (m.method === Method.Data) {
      // RFC 8656 §11.6: Data indication from the server.
      const peer = attrXorAddresses(m, A.XOR_PEER_ADDRESS)[0];
      const data = attrValue(m, A.DATA);
      if (peer && data) this.#events.emit('data', data, peer);
    } else if (m.method === Method.ConnectionAttempt) {
      const id = attrUint32(m, A.CONNECTION_ID);
      const peer = attrXorAddresses(m, A.XOR_PEER_ADDRESS)[0];
      if (id !== undefined && peer) this.#events.emit('connection-attempt', id, peer);
    }
  }

  #fail(err: unknown): void {
    this.#transactions.rejectAll(err instanceof Error ? err : new NatpunchError('TURN', String(err)));
  }

  // -------------------------------------------------------------------------------------------------------------
  // API

  /** RFC 8656 §7.1: Allocate, retrying once with credentials after the 401. Starts the refresh timer. */
  async allocate(options: AllocateOptions = {}): Promise<Allocation> {
    if (this.allocation) throw new NatpunchError('TURN', 'this client already has an allocation');
    const transport = options.transport ?? 'udp';
    if (transport === 'tcp' && !this.#tcp)
      throw new NatpunchError('BAD_ARGUMENT', 'TCP allocations (RFC 6062) need a client over TCP');
    const res = await this.#request(
      Method.Allocate,
      (b) => {
        b.add(A.REQUESTED_TRANSPORT, Buffer.from([transport === 'tcp' ? 6 : 17, 0, 0, 0]));
        if (options.family)
          b.add(A.REQUESTED_ADDRESS_FAMILY, Buffer.from([options.family === 'IPv6' ? 2 : 1, 0, 0, 0]));
        if (options.dual) b.add(A.ADDITIONAL_ADDRESS_FAMILY, Buffer.from([2, 0, 0, 0]));
        if (options.lifetime !== undefined) b.u32(A.LIFETIME, options.lifetime);
        if (options.evenPort) b.add(A.EVEN_PORT, Buffer.from([options.evenPort === 'reserve' ? 0x80 : 0]));
        if (options.reservationToken) b.add(A.RESERVATION_TOKEN, options.reservationToken);
        if (options.dontFragment) b.add(A.DONT_FRAGMENT, Buffer.alloc(0));
      },
      options.signal,
    );
    const relayed = attrXorAddresses(res, A.XOR_RELAYED_ADDRESS).filter((p): p is Peer => p !== null);
    if (relayed.length === 0) throw new NatpunchError('TURN', 'Allocate success response has no XOR-RELAYED-ADDRESS');
    const token = attrValue(res, A.RESERVATION_TOKEN);
    this.allocation = {
      relayed,
      mapped: attrXorAddresses(res, A.XOR_MAPPED_ADDRESS)[0] ?? null,
      lifetime: attrUint32(res, A.LIFETIME) ?? 600,
      ...(token ? { reservationToken: Buffer.from(token) } : {}),
    };
    this.#scheduleRefresh(this.allocation.lifetime);
    this.#maintTimer = setInterval(() => this.#maintain(), 30_000);
    this.#maintTimer.unref();
    this.#log.debug({ relayed }, 'turn allocated');
    return this.allocation;
  }

  #scheduleRefresh(lifetime: number): void {
    if (this.#refreshTimer) clearTimeout(this.#refreshTimer);
    const ms = Math.max(1, lifetime > 2 * REFRESH_MARGIN_S ? lifetime - REFRESH_MARGIN_S : lifetime / 2) * 1000;
    this.#refreshTimer = setTimeout(() => {
      this.refresh().catch((err) => this.#log.warn({ err }, 'turn refresh failed'));
    }, ms);
    this.#refreshTimer.unref();
  }

  /** RFC 8656 §8: Refresh; lifetime 0 deletes the allocation. Returns the granted lifetime. */
  async refresh(lifetime?: number, signal?: AbortSignal): Promise<number> {
    if (!this.allocation) throw new NatpunchError('TURN', 'no allocation to refresh');
    const res = await this.#request(
      Method.Refresh,
      (b) => {
        if (lifetime !== undefined) b.u32(A.LIFETIME, lifetime);
      },
      signal,
    );
    const granted = attrUint32(res, A.LIFETIME) ?? 0;
    if (granted > 0) {
      this.allocation.lifetime = granted;
      this.#scheduleRefresh(granted);
    }
    return granted;
  }

  /** RFC 8656 §9.1: CreatePermission for one or more peer IPs (ports are ignored by the server). */
  async createPermission(peers: ReadonlyArray<Peer | string>, signal?: AbortSignal): Promise<void> {
    const list = peers.map((p) => (typeof p === 'string' ? { address: p, port: 0 } : p));
    await this.#request(
      Method.CreatePermission,
      (b) => {
        for (const p of list) b.xorAddress(A.XOR_PEER_ADDRESS, p);
      },
      signal,
    );
    const now = Date.now();
    for (const p of list) this.#peer(p).permissionAt = now;
  }

  /** RFC 8656 §11.1: ChannelBind; returns the channel number (reused when the peer already has one). */
  async bindChannel(peer: Peer, signal?: AbortSignal): Promise<number> {
    const st = this.#peer(peer);
    let number = st.channel;
    if (number === null) {
      if (this.#nextChannel > CHANNEL_MAX) throw new NatpunchError('TURN', 'no free channel numbers');
      number = this.#nextChannel++;
    }
    const n = number;
    await this.#request(
      Method.ChannelBind,
      (b) => {
        b.add(A.CHANNEL_NUMBER, Buffer.from([n >> 8, n & 0xff, 0, 0])).xorAddress(A.XOR_PEER_ADDRESS, peer);
      },
      signal,
    );
    st.channel = n;
    st.channelAt = st.permissionAt = Date.now();
    this.#channels.set(n, { address: peer.address, port: peer.port });
    return n;
  }

  #peer(p: Peer): PeerState {
    const k = peerKey(p);
    let st = this.#peers.get(k);
    if (!st) {
      st = { failedAt: 0, channel: null, permissionAt: 0, channelAt: 0, setup: null, queue: [] };
      this.#peers.set(k, st);
    }
    return st;
  }

  /**
   * Sends a datagram to a peer through the relay: ChannelData when a channel is bound (4-byte overhead), else a
   * Send indication (RFC 8656 §11.3) when a permission exists, else sets up permission + channel first and queues
   * (bounded) until done.
   */
  send(data: Uint8Array, peer: Peer): void {
    if (this.#closed || !this.allocation) return;
    const st = this.#peer(peer);
    if (st.channel !== null) {
      const out = Buffer.allocUnsafe(this.#tcp ? (4 + data.length + 3) & ~3 : 4 + data.length);
      out.writeUInt16BE(st.channel, 0);
      out.writeUInt16BE(data.length, 2);
      out.set(data, 4);
      if (this.#tcp) out.fill(0, 4 + data.length); // RFC 8656 §12.5: padded over TCP
      this.#write(out);
      return;
    }
    if (st.permissionAt > 0 && !st.setup) {
      this.#write(this.sendIndication(data, peer));
    } else if (st.failedAt > 0 && Date.now() - st.failedAt < SETUP_RETRY_MS) {
      return; // the server refused this peer moments ago: drop rather than ask again per datagram
    } else if (st.queue.length < MAX_QUEUED_PER_PEER) st.queue.push(Buffer.from(data));
    if (!st.setup) {
      st.setup = this.bindChannel(peer)
        .then(() => {
          st.failedAt = 0;
        })
        .catch((err) => {
          st.failedAt = Date.now();
          this.#log.warn({ err, peer }, 'turn channel setup failed');
        })
        .finally(() => {
          st.setup = null;
          const q = st.queue.splice(0);
          if (st.channel !== null) for (const d of q) this.send(d, peer);
        });
    }
  }

  /** Builds a Send indication (RFC 8656 §11.3) without sending it. */
  sendIndication(data: Uint8Array, peer: Peer): Buffer {
    return new StunBuilder(Method.Send, Cls.Indication, randomBytes(12))
      .xorAddress(A.XOR_PEER_ADDRESS, peer)
      .add(A.DATA, data)
      .finish();
  }

  /** Data from peers (Data indications and ChannelData). Returns the unsubscribe function. */
  onData(listener: (data: Buffer, peer: Peer) => void): () => void {
    this.#events.on('data', listener);
    return () => this.#events.off('data', listener);
  }

  /** Keeps permissions and channels in use alive (RFC 8656 §9, §12). */
  #maintain(): void {
    const now = Date.now();
    for (const [k, st] of this.#peers) {
      const peer = parsePeerKey(k);
      if (st.channel !== null && now - st.channelAt > CHANNEL_REFRESH_MS - 30_000) {
        this.bindChannel(peer).catch((err) => this.#log.warn({ err }, 'turn channel refresh failed'));
      } else if (st.channel === null && st.permissionAt > 0 && now - st.permissionAt > PERMISSION_REFRESH_MS - 30_000) {
        this.createPermission([peer]).catch((err) => this.#log.warn({ err }, 'turn permission refresh failed'));
      }
    }
  }

  /**
   * A DatagramTransport over the relay: send(msg, port, address) reaches that peer through the TURN server;
   * onMessage() gets what peers send to the relayed address, with the peer as rinfo; address() is the relayed
   * transport address. Close the TurnClient to release it.
   */
  relayTransport(): DatagramTransport {
    if (!this.allocation) throw new NatpunchError('TURN', 'allocate() first');
    const relayed = this.allocation.relayed[0]!;
    const self = this;
    return {
      send(msg: Uint8Array, port: number, address: string) {
        self.send(msg, { address: normalizeIp(address), port });
      },
      onMessage(listener: DatagramListener) {
        return self.onData((data, peer) => {
          const rinfo: RemoteInfo = {
            address: peer.address,
            port: peer.port,
            family: peer.address.includes(':') ? 'IPv6' : 'IPv4',
          };
          listener(data, rinfo);
        });
      },
      address() {
        return {
          address: relayed.address,
          port: relayed.port,
          family: relayed.address.includes(':') ? 'IPv6' : 'IPv4',
        };
      },
      get closed() {
        return self.#closed;
      },
    };
  }

  // -------------------------------------------------------------------------------------------------------------
  // RFC 6062

  /**
   * RFC 6062 §4.3: Connect to a peer through a TCP allocation; returns a TCP socket to the server that, after
   * ConnectionBind, carries the peer's byte stream. The caller owns (and destroys) the returned socket.
   */
  async connectPeer(peer: Peer, signal?: AbortSignal): Promise<net.Socket> {
    const res = await this.#request(Method.Connect, (b) => b.xorAddress(A.XOR_PEER_ADDRESS, peer), signal);
    const id = attrUint32(res, A.CONNECTION_ID);
    if (id === undefined) throw new NatpunchError('TURN', 'Connect success response has no CONNECTION-ID');
    return this.bindConnection(id, signal);
  }

  /** RFC 6062 §4.4: incoming peer connections; call `bindConnection(id)` to accept one. */
  onConnectionAttempt(listener: (connectionId: number, peer: Peer) => void): () => void {
    this.#events.on('connection-attempt', listener);
    return () => this.#events.off('connection-attempt', listener);
  }

  /** RFC 6062 §4.3/§4.4: a new TCP connection to the server + ConnectionBind → the peer's data stream. */
  async bindConnection(connectionId: number, signal?: AbortSignal): Promise<net.Socket> {
    if (!this.#key) throw new NatpunchError('TURN', 'allocate() first');
    const timeoutMs = this.#opts.timeoutMs ?? DEFAULT_TRANSACTION_TIMEOUT_MS;
    const socket = this.#dial();
    socket.setNoDelay(true);
    try {
      await waitConnect(socket, timeoutMs, signal, socket instanceof tls.TLSSocket ? 'secureConnect' : 'connect');
      const id = Buffer.alloc(4);
      id.writeUInt32BE(connectionId, 0);
      for (let attempt = 0; attempt < 2; attempt++) {
        const tid = randomBytes(12);
        const b = new StunBuilder(Method.ConnectionBind, Cls.Request, tid).add(A.CONNECTION_ID, id);
        b.text(A.USERNAME, this.#opts.username).text(A.REALM, this.#realm!).text(A.NONCE, this.#nonce!);
        if (this.#offered)
          b.add(A.PASSWORD_ALGORITHMS, this.#offered).add(
            A.PASSWORD_ALGORITHM,
            Buffer.from([0, this.#algorithm!, 0, 0]),
          );
        const sha256 = this.#offered !== null && this.#algorithm === PasswordAlgorithm.SHA256;
        socket.write(b.finish({ key: this.#key, integrity: sha256 ? 'sha256' : 'sha1', fingerprint: true }));
        const { msg, rest } = await readOneStun(socket, timeoutMs, signal);
        if (msg.cls === Cls.Success) {
          if (rest.length) socket.unshift(rest);
          return socket;
        }
        const err = errorInfo(msg);
        if (err?.code === 438 && attempt === 0) {
          this.#nonce = attrText(msg, A.NONCE) ?? this.#nonce;
          continue;
        }
        throw turnError(Method.ConnectionBind, err?.code ?? 0, err?.reason ?? '', msg);
      }
      throw new NatpunchError('TURN', 'ConnectionBind failed');
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  /** Deletes the allocation (Refresh with LIFETIME 0, best effort, bounded) and stops timers. */
  async close(signal?: AbortSignal): Promise<void> {
    if (this.#closed) return;
    if (this.#refreshTimer) clearTimeout(this.#refreshTimer);
    if (this.#maintTimer) clearInterval(this.#maintTimer);
    if (this.allocation && !(this.#tcp?.destroyed ?? this.#transport?.closed)) {
      const ac = new AbortController();
      const t = setTimeout(() => ac.abort(), 1500);
      const onAbort = () => ac.abort();
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        await this.refresh(0, ac.signal);
      } catch {
        // The server expires it anyway.
      } finally {
        clearTimeout(t);
        signal?.removeEventListener('abort', onAbort);
      }
    }
    this.#closed = true;
    if (this.#refreshTimer) clearTimeout(this.#refreshTimer);
    this.#fail(new NatpunchError('SOCKET_CLOSED', 'TURN client closed'));
    this.#off?.();
    this.#tcp?.destroy();
    this.allocation = null;
    this.#events.removeAllListeners();
  }
}

function offersSha256(v: Buffer): boolean {
  for (let o = 0; o + 4 <= v.length;) {
    if (v.readUInt16BE(o) === PasswordAlgorithm.SHA256) return true;
    o += 4 + ((v.readUInt16BE(o + 2) + 3) & ~3);
  }
  return false;
}

const METHOD_NAMES: Record<number, string> = {
  [Method.Allocate]: 'Allocate',
  [Method.Refresh]: 'Refresh',
  [Method.CreatePermission]: 'CreatePermission',
  [Method.ChannelBind]: 'ChannelBind',
  [Method.Connect]: 'Connect',
  [Method.ConnectionBind]: 'ConnectionBind',
};

function turnError(method: number, code: number, reason: string, _res: StunMsg): NatpunchError {
  const name = METHOD_NAMES[method] ?? `method 0x${method.toString(16)}`;
  const kind = code === 403 ? 'TURN_FORBIDDEN_PEER' : 'STUN_ERROR_RESPONSE';
  const hint =
    code === 403
      ? ' (the server refuses to relay to this peer address)'
      : code === 486
        ? ' (allocation quota reached)'
        : code === 437
          ? ' (allocation mismatch)'
          : '';
  return new NatpunchError(kind, `TURN ${name} failed: ${code} ${reason}${hint}`, { details: { code, reason } });
}

function peerKey(p: Peer): string {
  return `${p.address}|${p.port}`;
}

function parsePeerKey(k: string): Peer {
  const i = k.lastIndexOf('|');
  return { address: k.slice(0, i), port: Number(k.slice(i + 1)) };
}

function noop(): void {}

function waitConnect(
  socket: net.Socket,
  timeoutMs: number,
  signal?: AbortSignal,
  event: 'connect' | 'secureConnect' = 'connect',
): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: unknown) => {
      clearTimeout(t);
      socket.off(event, onConnect);
      socket.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve();
    };
    const onConnect = () => done();
    const onError = (e: Error) =>
      done(new NatpunchError('TURN', `cannot connect to TURN server: ${e.message}`, { cause: e }));
    const onAbort = () => done(new NatpunchError('ABORTED', 'operation aborted'));
    const t = setTimeout(() => done(new NatpunchError('TIMEOUT', 'TCP connect to TURN server timed out')), timeoutMs);
    socket.once(event, onConnect);
    socket.once('error', onError);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Reads exactly one STUN message from a fresh TCP connection with read() (not 'data', so the socket is left in a
 * state where the caller's own 'data' listener starts the flow); bytes after it are put back.
 */
function readOneStun(
  socket: net.Socket,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<{ msg: StunMsg; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const done = (err: unknown, value?: { msg: StunMsg; rest: Buffer }) => {
      clearTimeout(t);
      socket.off('readable', onReadable);
      socket.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
      if (value) resolve(value);
      else reject(err);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        if (buf.length < 20) continue;
        const size = 20 + buf.readUInt16BE(2);
        if (buf.length < size) continue;
        const msg = parseStun(Buffer.from(buf.subarray(0, size)));
        const rest = buf.subarray(size);
        if (rest.length) socket.unshift(rest);
        if (!msg) return done(new NatpunchError('STUN_DECODE', 'bad ConnectionBind response'));
        return done(null, { msg, rest: Buffer.alloc(0) });
      }
    };
    const onClose = () => done(new NatpunchError('SOCKET_CLOSED', 'TURN server closed the data connection'));
    const onAbort = () => done(new NatpunchError('ABORTED', 'operation aborted'));
    const t = setTimeout(() => done(new NatpunchError('TIMEOUT', 'ConnectionBind timed out')), timeoutMs);
    socket.on('readable', onReadable);
    socket.once('close', onClose);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}
