import dgram from 'node:dgram';
import net, { isIP } from 'node:net';
import { randomBytes } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import type { DatagramTransport, RemoteInfo } from '../net/datagram.js';
import { NodeDatagramTransport } from '../net/datagram.js';
import { BatchedUdpSocket } from '../net/batched.js';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { CHANNEL_DATA_HEADER, CHANNEL_MIN, TurnStreamFramer } from '../wire/channel-data.js';
import { normalizeIp, sourceKey } from './ip.js';
import {
  AllocationQuota,
  candidateKeys,
  DEFAULT_REALM,
  NonceManager,
  PasswordAlgorithm,
  SecurityFeature,
  SourceRateLimiter,
  TokenBucket,
  type CredentialStore,
  type PasswordAlgorithmId,
} from './auth.js';
import {
  A,
  attrText,
  attrUint32,
  attrValue,
  attrXorAddresses,
  Cls,
  encodeDataIndication,
  fingerprintOk,
  findAttr,
  integrityKind,
  KNOWN_REQUIRED,
  Method,
  parseStun,
  StunBuilder,
  verifyIntegrity,
  type Peer,
  type StunMsg,
} from './message.js';
import { DefaultPeerPolicy, type PeerPolicy, type RelayScope } from './policy.js';
import { LocalReservations, type RelayReservations } from './reservations.js';
import { bindRelaySocket, relayBatchingUnavailable, type RelaySocket } from './relay-socket.js';

// Defaults, each from the RFC section that sets or suggests it.
/** RFC 8656 §3.2 / §7.2: default allocation lifetime 10 minutes. */
export const DEFAULT_LIFETIME_S = 600;
/** RFC 8656 §7.2: the server may cap requested lifetimes; 1 hour is the usual cap. */
export const MAX_LIFETIME_S = 3600;
/** RFC 8656 §9: permissions last 300 s. */
export const PERMISSION_LIFETIME_S = 300;
/** RFC 8656 §12: channel bindings last 600 s. */
export const CHANNEL_LIFETIME_S = 600;
/** RFC 8656 §7.2 step 5: a reserved (EVEN-PORT R=1) port is held for about 30 s. */
export const RESERVATION_LIFETIME_S = 30;
/** RFC 6062 §5.3: a peer connection waits 30 s for its ConnectionBind. */
export const CONNECTION_BIND_TIMEOUT_S = 30;
/** RFC 6062 §5.2: how long a Connect waits for the peer's TCP handshake. */
export const CONNECT_TIMEOUT_MS = 10_000;
/** RFC 8656 §7.2: relayed ports come from the dynamic range 49152..65535 by default. */
export const DEFAULT_MIN_PORT = 49152;
export const DEFAULT_MAX_PORT = 65535;
/** Quotas (RFC 8656 §7.2 step 10, 486): per user and in total. */
export const DEFAULT_MAX_ALLOCATIONS_PER_USER = 10;
export const DEFAULT_MAX_ALLOCATIONS = 1000;
/**
 * Allocations per source (IPv4 address, IPv6 /64): a household or office behind one NAT fits; one host with a
 * thousand self-made identities gets no more than this (issue 18 hole 4).
 */
export const DEFAULT_MAX_ALLOCATIONS_PER_SOURCE = 32;
/** Per-allocation limits that bound memory: permissions and channels (508 Insufficient Capacity). */
export const MAX_PERMISSIONS_PER_ALLOCATION = 256;
export const MAX_CHANNELS_PER_ALLOCATION = 256;
/** Unauthenticated/failed requests per second per source IP, and burst (RFC 8656 §21.1.3 DoS). */
export const DEFAULT_UNAUTH_RATE = 50;
export const DEFAULT_UNAUTH_BURST = 200;
/**
 * Anti-amplification (issue 18): an answer to an unauthenticated UDP request is never larger than the request,
 * except — because RFC 8489 §9.2.4 requires the 401/420/400 and RFC 8489 §6.3 the Binding answer — within this
 * budget: per source IP (IPv6 /64) a burst of AMPLIFIED_BURST, then AMPLIFIED_PER_SECOND, and AMPLIFIED_GLOBAL_PER_SECOND
 * for the whole server. A reflection attack through this server therefore yields a victim at most
 * AMPLIFIED_BURST + AMPLIFIED_PER_SECOND·t answers (≈ 6× a 20-byte request each), and the server at most
 * AMPLIFIED_GLOBAL_PER_SECOND of them in total. Clients that pad their first request (PADDING, RFC 5780 §7.6; the
 * natpunch client does) are never limited by it. Over TCP/TLS the handshake proves the address: no limit.
 */
export const AMPLIFIED_BURST = 4;
export const AMPLIFIED_PER_SECOND = 1;
export const AMPLIFIED_GLOBAL_PER_SECOND = 500;
/** Concurrent TURN TCP/TLS connections (each costs a socket and a framer). */
export const DEFAULT_MAX_TCP_CONNECTIONS = 4096;
/** A TCP/TLS connection without an allocation is closed after this long without traffic. */
export const TCP_IDLE_TIMEOUT_MS = 60_000;
/** Over TCP, datagrams to the client are dropped rather than queued beyond this many buffered bytes. */
export const TCP_MAX_BUFFERED = 1 << 20;
/** Kernel buffer size asked for each relay socket (a limit, not an allocation). */
export const RELAY_SOCKET_BUFFER_BYTES = 1 << 20;
/** How often expired allocations, permissions and channels are swept. */
export const SWEEP_INTERVAL_MS = 1000;

export interface TurnServerOptions {
  /**
   * Where keys come from (users file, shared secret, or your own): unscoped credentials, whose allocations may
   * reach any peer the PeerPolicy allows. There is no unauthenticated mode. Optional when `scope` is given.
   */
  credentials?: CredentialStore;
  /**
   * Peer-relay mode (relay/peer-relay.ts): scoped credentials, whose allocations may reach only the peers
   * introduced to their key (and their allocations on this relay).
   */
  scope?: RelayScope;
  realm?: string;
  /** IPv4 address relay sockets bind to and that XOR-RELAYED-ADDRESS names. Default: first non-internal IPv4. */
  relayAddress?: string;
  /** IPv6 relay address; enables REQUESTED-ADDRESS-FAMILY IPv6 and dual allocations. */
  relayAddress6?: string;
  /**
   * The public IPv4 address peers reach `relayAddress` at, when the server sits behind a 1:1 NAT (cloud VMs):
   * XOR-RELAYED-ADDRESS names it instead of the bound address (coturn's external-ip).
   */
  externalAddress?: string;
  minPort?: number;
  maxPort?: number;
  /** Peer permission policy; default DefaultPeerPolicy (safe defaults) with the relay addresses as own addresses. */
  policy?: PeerPolicy;
  /** Used when `policy` is not given. */
  allowPeers?: readonly string[];
  denyPeers?: readonly string[];
  /** More addresses of this server to refuse as peers (listening addresses); relay addresses are always included. */
  ownAddresses?: readonly string[];
  maxAllocationsPerUser?: number;
  maxAllocations?: number;
  /** Allocations per source IPv4 address / IPv6 /64 (default DEFAULT_MAX_ALLOCATIONS_PER_SOURCE). */
  maxAllocationsPerSource?: number;
  /** Where RESERVATION-TOKEN ports are held (default: in this server; `serve --workers` shares them). */
  reservations?: RelayReservations;
  /** Per-allocation relay bandwidth cap in bytes/s each way combined (0 = none). */
  bandwidth?: number;
  defaultLifetime?: number;
  maxLifetime?: number;
  nonceLifetime?: number;
  unauthRate?: number;
  unauthBurst?: number;
  software?: string;
  /**
   * Accept RFC 5766 channel numbers 0x5000..0x7FFF too (default true: coturn's and other older clients use them;
   * RFC 8656 §12 reserves them only to avoid DTLS-SRTP collisions, which a TURN server port does not carry).
   */
  legacyChannels?: boolean;
  /** Concurrent TCP/TLS client connections (default 4096). */
  maxTcpConnections?: number;
  logger?: Logger;
}

export interface TurnStats {
  allocations: number;
  allocationsTotal: number;
  tcpAllocations: number;
  permissions: number;
  channels: number;
  packetsToPeer: number;
  bytesToPeer: number;
  packetsToClient: number;
  bytesToClient: number;
  droppedNoPermission: number;
  /** ChannelData for a channel that is not bound (or from a 5-tuple without an allocation). */
  droppedNoChannel: number;
  droppedBandwidth: number;
  deniedPeers: number;
  authFailures: number;
  rateLimited: number;
  /** Answers to unauthenticated UDP requests not sent because they would have been larger than the request. */
  amplificationDropped: number;
  requests: number;
  /** Binding requests answered on TCP/TLS connections TURN took over (serve's STUN counters do not see them). */
  tcpBindings: number;
}

/** Where a client's messages come from and how to answer: one side of the 5-tuple (RFC 8656 §2). */
interface ClientEndpoint {
  readonly kind: 'udp' | 'tcp';
  readonly address: string;
  readonly port: number;
  send(buf: Buffer): void;
  /** ChannelData to the client without building it in one buffer when the transport allows. */
  sendChannelData(channel: number, data: Buffer): void;
  /**
   * A batched UDP transport that can forward bound channels itself (the addon's relay fast path), with the client's
   * address as that socket reports it. Absent for TCP clients and other transports.
   */
  readonly route?: { socket: BatchedUdpSocket; address: string; port: number };
}

interface Channel {
  number: number;
  peer: Peer;
  expires: number;
  perm: Permission;
  /** Whether the addon's fast path forwards this channel (rules on the client's socket and the relay socket). */
  routed: boolean;
  /** Relay to relay: the #live key of the allocation the peer is, whose removal takes the rules away. */
  routedTo?: string;
}

/** Which ports of a permitted IP may be reached; null: any. Evaluated per packet (allocations come and go). */
type PortFilter = ((port: number) => boolean) | null;

interface Permission {
  expires: number;
  /**
   * Set when the IP is reachable only at some ports: one of this server's relay addresses (two clients of this
   * server relaying to each other, as two browsers forced to relay do) → exactly its live allocations, so the
   * permission cannot reach other services on the server's own address; or, in peer-relay mode, an introduced
   * peer seen at an address denied by default → exactly where it was seen.
   */
  restrict: PortFilter;
  /** Channels to peers at this IP, by peer port. */
  channels: Map<number, Channel> | null;
}

interface PeerConnection {
  id: number;
  socket: net.Socket;
  peer: Peer;
  timer: NodeJS.Timeout | null;
  bound: boolean;
  pending: Buffer[];
}

class Allocation {
  readonly permissions = new Map<string, Permission>();
  readonly channels = new Map<number, Channel>();
  readonly sockets: RelaySocket[] = [];
  /** The IPv4 and IPv6 relay sockets among `sockets` (RFC 8656 §7.2: at most one relayed address per family). */
  socket4: RelaySocket | undefined;
  socket6: RelaySocket | undefined;
  tcpServer: net.Server | null = null;
  readonly tcpConns = new Map<number, PeerConnection>();
  relayed: Peer[] = [];
  expires = 0;
  lastTid: Buffer | null = null;
  lastResponse: Buffer | null = null;
  closed = false;
  constructor(
    readonly client: ClientEndpoint,
    readonly username: string,
    /** Peer-relay scope: the key the credentials were issued to; null for unscoped credentials. */
    readonly scope: string | null,
    /** Quota unit of the client (relay/ip.ts sourceKey). */
    readonly source: string,
    readonly key: Buffer,
    readonly integrity: 'sha1' | 'sha256',
    readonly transport: 'udp' | 'tcp',
    readonly bucket: TokenBucket | null,
    readonly onRemove: () => void,
  ) {}

  /** The relay socket of the peer's family (one string scan per relayed packet, no loop over the sockets). */
  socketFor(address: string): RelaySocket | undefined {
    return address.includes(':') ? this.socket6 : this.socket4;
  }

  hasFamily(address: string): boolean {
    const v6 = address.includes(':');
    return this.relayed.some((r) => r.address.includes(':') === v6);
  }
}

interface AuthOk {
  username: string;
  scope: string | null;
  key: Buffer;
  integrity: 'sha1' | 'sha256';
  fingerprint: boolean;
}

/**
 * A TURN server (RFC 8656, RFC 6062 TCP allocations). It owns no listening socket of its own when attached to
 * `natpunch serve`'s transports (`handleUdp` / `attachUdp`, `handleTcp`); `listen()` makes a standalone server.
 * It owns the relay sockets of its allocations and closes them in `close()`.
 */
/** listen() on port 0 retries when the UDP port the kernel chose is already taken on TCP. */
const LISTEN_ATTEMPTS = 10;

/** A transport that sends a header and a payload as one datagram without joining them (src/net/batched.ts). */
interface PartsSender {
  sendParts(head: Uint8Array, tail: Uint8Array, port: number, address: string): void;
}

export class TurnServer {
  readonly realm: string;
  /** Sockets with fast-path rules, whose forwarded counts `stats` folds in. */
  readonly #routedSockets = new Set<BatchedUdpSocket>();
  /** Relay-to-relay channels the fast path forwards, by the #live key of the allocation they reach. */
  readonly #routedToRelay = new Map<string, Map<Channel, Allocation>>();
  /** Batched relay sockets of live allocations (what they forward natively goes peer → client). */
  readonly #relaySockets = new Set<RelaySocket>();
  readonly #counters: TurnStats = {
    allocations: 0,
    allocationsTotal: 0,
    tcpAllocations: 0,
    permissions: 0,
    channels: 0,
    packetsToPeer: 0,
    bytesToPeer: 0,
    packetsToClient: 0,
    bytesToClient: 0,
    droppedNoPermission: 0,
    droppedNoChannel: 0,
    droppedBandwidth: 0,
    deniedPeers: 0,
    authFailures: 0,
    rateLimited: 0,
    amplificationDropped: 0,
    requests: 0,
    tcpBindings: 0,
  };
  readonly relayAddress: string;
  readonly relayAddress6: string | undefined;
  readonly externalAddress: string | undefined;

  readonly #opts: TurnServerOptions;
  readonly #log: Logger;
  readonly #policy: PeerPolicy;
  readonly #scope: RelayScope | undefined;
  /** Live relayed transport addresses, "u4:port" / "t6:port" (protocol, family, port) → allocation. */
  readonly #live = new Map<string, Allocation>();
  readonly #nonces: NonceManager;
  readonly #quota: AllocationQuota;
  readonly #limiter: SourceRateLimiter;
  readonly #amplified = new SourceRateLimiter(AMPLIFIED_PER_SECOND, AMPLIFIED_BURST);
  readonly #amplifiedTotal = new TokenBucket(AMPLIFIED_GLOBAL_PER_SECOND, AMPLIFIED_GLOBAL_PER_SECOND);
  /** UDP allocations by transport, client address, client port (no per-packet string keys). */
  readonly #udp = new Map<DatagramTransport, Map<string, Map<number, Allocation>>>();
  readonly #tcpAllocs = new Map<net.Socket, Allocation>();
  readonly #reservations: RelayReservations;
  readonly #connIds = new Map<number, { alloc: Allocation; conn: PeerConnection }>();
  readonly #pendingAllocs = new Set<string>();
  readonly #tcpClients = new Set<net.Socket>();
  readonly #detach: Array<() => void> = [];
  readonly #ownTransports: NodeDatagramTransport[] = [];
  readonly #ownServers: net.Server[] = [];
  #sweeper: NodeJS.Timeout;
  #tidCounter = 0;
  readonly #tidPrefix = randomBytes(8);
  #closed = false;
  readonly #maxChannelByte: number;
  /** Relay sockets read and write in batches (native addon); decided once, at construction. */
  readonly #batchedRelay = relayBatchingUnavailable() === undefined;

  constructor(options: TurnServerOptions) {
    if (!options?.credentials && !options?.scope)
      throw new NatpunchError('BAD_ARGUMENT', 'a TURN server needs credentials (a users file or an auth secret)');
    this.#opts = options;
    this.#scope = options.scope;
    this.realm = options.realm ?? DEFAULT_REALM;
    this.#log = options.logger ?? silentLogger;
    this.relayAddress = options.relayAddress ?? defaultRelayAddress();
    for (const [flag, a] of [
      ['relay address', this.relayAddress],
      ['IPv6 relay address', options.relayAddress6],
      ['external address', options.externalAddress],
    ] as const) {
      if (a === undefined) continue;
      if (!isIP(a) || a === '0.0.0.0' || a === '::')
        throw new NatpunchError('BAD_ARGUMENT', `the ${flag} must be one specific IP address, not "${a}"`);
    }
    if (options.relayAddress6 && !options.relayAddress6.includes(':'))
      throw new NatpunchError('BAD_ARGUMENT', 'the IPv6 relay address must be IPv6');
    if (options.externalAddress && options.externalAddress.includes(':'))
      throw new NatpunchError(
        'BAD_ARGUMENT',
        'the external address must be IPv4 (it stands for the IPv4 relay address)',
      );
    this.externalAddress = options.externalAddress;
    this.relayAddress6 = options.relayAddress6;
    this.#maxChannelByte = options.legacyChannels === false ? 0x4f : 0x7f;
    this.#policy =
      options.policy ??
      new DefaultPeerPolicy({
        allow: options.allowPeers,
        deny: options.denyPeers,
        ownAddresses: [
          this.relayAddress,
          ...(this.relayAddress6 ? [this.relayAddress6] : []),
          ...(options.externalAddress ? [options.externalAddress] : []),
          ...(options.ownAddresses ?? []),
        ],
      });
    this.#nonces = new NonceManager({
      lifetimeSeconds: options.nonceLifetime,
      features: SecurityFeature.PASSWORD_ALGORITHMS,
    });
    this.#quota = new AllocationQuota(
      options.maxAllocationsPerUser ?? DEFAULT_MAX_ALLOCATIONS_PER_USER,
      options.maxAllocations ?? DEFAULT_MAX_ALLOCATIONS,
      options.maxAllocationsPerSource ?? DEFAULT_MAX_ALLOCATIONS_PER_SOURCE,
    );
    this.#reservations = options.reservations ?? new LocalReservations();
    this.#limiter = new SourceRateLimiter(
      options.unauthRate ?? DEFAULT_UNAUTH_RATE,
      options.unauthBurst ?? DEFAULT_UNAUTH_BURST,
    );
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_INTERVAL_MS);
    this.#sweeper.unref();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Transports

  /**
   * Offers one datagram that arrived on a shared UDP transport. Returns true when it was TURN's (a TURN method or
   * ChannelData) and has been handled; false leaves it to the STUN server / other protocols (Binding included).
   */
  handleUdp(transport: DatagramTransport, msg: Buffer, rinfo: RemoteInfo): boolean {
    if (this.#closed || msg.length < 4) return false;
    const b0 = msg[0]!;
    if (b0 >= 0x40 && b0 <= this.#maxChannelByte) {
      // RFC 8656 §12.5 (UDP): header only; Length beyond the datagram → drop; extra bytes are padding.
      const alloc = this.#udp.get(transport)?.get(rinfo.address)?.get(rinfo.port);
      if (!alloc) {
        this.#counters.droppedNoChannel++;
        return true;
      }
      const length = (msg[2]! << 8) | msg[3]!;
      if (length > msg.length - CHANNEL_DATA_HEADER) return true;
      this.#channelToPeer(alloc, (b0 << 8) | msg[1]!, msg.subarray(CHANNEL_DATA_HEADER, CHANNEL_DATA_HEADER + length));
      return true;
    }
    if (b0 > 3 || msg.length < 20) return false;
    const method = ((msg[0]! << 8) | msg[1]!) & 0x3eef;
    // Binding (method 1, any class) is the STUN server's; everything else with a TURN method is ours.
    if (method === 0x001) return false;
    const m = parseStun(msg);
    // Malformed or not a TURN method: leave it to the STUN server, which answers or drops per RFC 8489.
    if (!m || m.method < Method.Allocate || m.method > Method.ConnectionAttempt) return false;
    const client = this.#udpEndpoint(transport, rinfo);
    this.#onStun(
      client,
      m,
      () => this.#udp.get(transport)?.get(rinfo.address)?.get(rinfo.port),
      (a) => this.#setUdpAlloc(transport, rinfo, a),
    );
    return true;
  }

  /** Registers on a transport (standalone use); returns the detach function. */
  attachUdp(transport: DatagramTransport): () => void {
    const off = transport.onMessage((msg, rinfo) => {
      this.handleUdp(transport, msg, rinfo);
    });
    const detach = () => {
      off();
      const byAddr = this.#udp.get(transport);
      if (byAddr) for (const ports of byAddr.values()) for (const a of ports.values()) this.#removeAllocation(a);
      this.#udp.delete(transport);
      if (transport instanceof BatchedUdpSocket && this.#routedSockets.delete(transport)) this.#foldRouted(transport);
    };
    this.#detach.push(detach);
    return detach;
  }

  /**
   * Takes over an accepted TCP (or TLS) connection whose first bytes are STUN/TURN (RFC 8656 §3.1, RFC 6062).
   * `head` is whatever the dispatcher already read. The server closes the socket when done.
   */
  handleTcp(socket: net.Socket, head?: Buffer): void {
    if (this.#closed || this.#tcpClients.size >= (this.#opts.maxTcpConnections ?? DEFAULT_MAX_TCP_CONNECTIONS)) {
      socket.destroy();
      return;
    }
    this.#tcpClients.add(socket);
    socket.setNoDelay(true);
    // A connection without an allocation (or a pending RFC 6062 bind) may not sit idle; with one, the allocation's
    // lifetime governs and the sweep closes the connection when it expires.
    socket.setTimeout(TCP_IDLE_TIMEOUT_MS, () => {
      if (!this.#tcpAllocs.has(socket)) socket.destroy();
    });
    const framer = new TurnStreamFramer();
    const address = normalizeIp(socket.remoteAddress ?? '');
    const port = socket.remotePort ?? 0;
    const client: ClientEndpoint = {
      kind: 'tcp',
      address,
      port,
      send: (buf) => {
        if (!socket.destroyed && socket.writableLength < TCP_MAX_BUFFERED) socket.write(buf);
      },
      sendChannelData: (channel, data) => {
        if (socket.destroyed || socket.writableLength >= TCP_MAX_BUFFERED) return;
        // RFC 8656 §12.5: over TCP the ChannelData message is padded to a multiple of 4.
        const size = (CHANNEL_DATA_HEADER + data.length + 3) & ~3;
        const out = Buffer.allocUnsafe(size);
        out.writeUInt16BE(channel, 0);
        out.writeUInt16BE(data.length, 2);
        data.copy(out, 4);
        out.fill(0, 4 + data.length);
        socket.write(out);
      },
    };
    let raw = false; // after ConnectionBind the connection carries the peer's bytes (RFC 6062 §5.4)
    const onData = (chunk: Buffer) => {
      if (raw) return;
      const ok = framer.push(chunk, (frame) => {
        if (raw) return;
        if (frame[0]! >= 0x40) {
          const alloc = this.#tcpAllocs.get(socket);
          if (!alloc) {
            // ChannelData before any allocation: not a TURN client (RFC 8656 §12.6 drops it; on a stream we close).
            this.#counters.droppedNoChannel++;
            raw = true;
            socket.destroy();
            return;
          }
          const length = frame.readUInt16BE(2);
          this.#channelToPeer(alloc, frame.readUInt16BE(0), frame.subarray(4, 4 + length));
          return;
        }
        const m = parseStun(frame);
        if (!m) {
          // Over a stream a frame that is not STUN means the framing is lost (RFC 8489 §6.2.2): close.
          raw = true;
          socket.destroy();
          return;
        }
        if (m.method === Method.Binding && m.cls === Cls.Request) {
          this.#counters.tcpBindings++;
          client.send(this.#bindingResponse(m, client));
          return;
        }
        if (m.method === Method.ConnectionBind && m.cls === Cls.Request) {
          const rest = this.#onConnectionBind(socket, client, m);
          if (rest) {
            raw = true;
            socket.off('data', onData);
            rest();
          }
          return;
        }
        this.#onStun(
          client,
          m,
          () => this.#tcpAllocs.get(socket),
          (a) => {
            if (a) this.#tcpAllocs.set(socket, a);
            else this.#tcpAllocs.delete(socket);
          },
        );
      });
      if (!ok) socket.destroy();
    };
    socket.on('data', onData);
    socket.on('error', () => {});
    socket.on('close', () => {
      this.#tcpClients.delete(socket);
      const alloc = this.#tcpAllocs.get(socket);
      // RFC 8656 §3.1 / RFC 6062 §5.5: closing the control connection deletes the allocation.
      if (alloc) this.#removeAllocation(alloc);
    });
    if (head && head.length) onData(head);
  }

  /**
   * A standalone TURN server on `port` (UDP and TCP, one address): answers Binding itself. `natpunch serve` uses
   * handleUdp/handleTcp on its shared sockets instead.
   */
  async listen(options: { port?: number; address?: string } = {}): Promise<{ address: string; port: number }> {
    // With port 0 the kernel picks a free UDP port; the same number may be taken on TCP, so pick again.
    const attempts = options.port ? 1 : LISTEN_ATTEMPTS;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#listenOnce(options.port ?? 0, options.address ?? '0.0.0.0');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= attempts) throw err;
      }
    }
  }

  async #listenOnce(requestedPort: number, address: string): Promise<{ address: string; port: number }> {
    const udp = await NodeDatagramTransport.bind({ port: requestedPort, address });
    const port = udp.address().port;
    const server = net.createServer((s) => this.handleTcp(s));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, address, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      udp.close();
      throw err;
    }
    this.#ownTransports.push(udp);
    try {
      udp.socket.setRecvBufferSize(4 * RELAY_SOCKET_BUFFER_BYTES);
      udp.socket.setSendBufferSize(4 * RELAY_SOCKET_BUFFER_BYTES);
    } catch {
      // capped by the kernel
    }
    const off = udp.onMessage((msg, rinfo) => {
      if (this.handleUdp(udp, msg, rinfo)) return;
      const m = msg[0]! <= 3 ? parseStun(msg) : null;
      if (m && m.method === Method.Binding && m.cls === Cls.Request) {
        // RFC 8489 §6.3: Binding needs no credentials, so its answer is bounded like every unverified one.
        const client = this.#udpEndpoint(udp, rinfo);
        this.#sendUnverified(client, m, this.#bindingResponse(m, client));
      }
    });
    this.#detach.push(off);
    server.on('error', () => {});
    this.#ownServers.push(server);
    return { address, port };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const d of this.#detach.splice(0)) d();
    for (const a of this.#allAllocations()) this.#removeAllocation(a);
    this.#udp.clear();
    this.#reservations.close();
    for (const s of this.#tcpClients) s.destroy();
    for (const t of this.#ownTransports) t.close();
    for (const s of this.#ownServers) s.close();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Requests

  #udpEndpoint(transport: DatagramTransport, rinfo: RemoteInfo): ClientEndpoint {
    // Transports over a node:dgram socket (NodeDatagramTransport, serve's ServerUdpSocket) get the two-buffer send.
    const maybe = (transport as { socket?: unknown }).socket;
    const raw = maybe instanceof dgram.Socket ? maybe : null;
    // Batched sockets (src/net/batched.ts) copy header and data straight into their send queue: no joined Buffer.
    const batched =
      !raw && typeof (transport as Partial<PartsSender>).sendParts === 'function'
        ? (transport as unknown as PartsSender)
        : null;
    const { address, port } = rinfo;
    // Reused: sendParts copies it before returning.
    const head = batched ? Buffer.alloc(4) : null;
    return {
      kind: 'udp',
      address: normalizeIp(address),
      port,
      ...(transport instanceof BatchedUdpSocket && transport.canRoute
        ? { route: { socket: transport, address, port } }
        : {}),
      send: (buf) => transport.send(buf, port, address),
      sendChannelData: raw
        ? (channel, data) => {
            const hdr = Buffer.allocUnsafe(4);
            hdr.writeUInt16BE(channel, 0);
            hdr.writeUInt16BE(data.length, 2);
            raw.send([hdr, data], port, address);
          }
        : batched && head
          ? (channel, data) => {
              // RFC 8656 §12.4: ChannelData = channel number, length, data.
              head.writeUInt16BE(channel, 0);
              head.writeUInt16BE(data.length, 2);
              batched.sendParts(head, data, port, address);
            }
          : (channel, data) => {
              const out = Buffer.allocUnsafe(4 + data.length);
              out.writeUInt16BE(channel, 0);
              out.writeUInt16BE(data.length, 2);
              data.copy(out, 4);
              transport.send(out, port, address);
            },
    };
  }

  #setUdpAlloc(transport: DatagramTransport, rinfo: RemoteInfo, alloc: Allocation | null): void {
    let byAddr = this.#udp.get(transport);
    if (!byAddr) this.#udp.set(transport, (byAddr = new Map()));
    let ports = byAddr.get(rinfo.address);
    if (alloc) {
      if (!ports) byAddr.set(rinfo.address, (ports = new Map()));
      ports.set(rinfo.port, alloc);
    } else if (ports) {
      ports.delete(rinfo.port);
      if (ports.size === 0) byAddr.delete(rinfo.address);
    }
  }

  #bindingResponse(m: StunMsg, client: { address: string; port: number }): Buffer {
    // RFC 8489 §7.3.1: a Binding success response carries XOR-MAPPED-ADDRESS.
    return new StunBuilder(Method.Binding, Cls.Success, m.transactionId)
      .xorAddress(A.XOR_MAPPED_ADDRESS, { address: normalizeIp(client.address), port: client.port })
      .finish({ fingerprint: true });
  }

  #onStun(
    client: ClientEndpoint,
    m: StunMsg,
    current: () => Allocation | undefined,
    setAlloc: (a: Allocation | null) => void,
  ): void {
    this.#counters.requests++;
    if (m.cls === Cls.Indication) {
      if (m.method === Method.Send) {
        const alloc = current();
        if (alloc) this.#sendIndication(alloc, m);
      }
      return;
    }
    if (m.cls !== Cls.Request) return;
    if (!fingerprintOk(m)) return; // RFC 8489 §7.3: a wrong FINGERPRINT means "not STUN": drop silently.
    const fingerprint = findAttr(m, A.FINGERPRINT) !== undefined;
    // RFC 8489 §7.3.1: unknown comprehension-required attributes → 420 (after auth would leak less, but the RFC
    // orders this check first and the response is small).
    const unknown = m.attributes.filter((a) => a.type < 0x8000 && !KNOWN_REQUIRED.has(a.type)).map((a) => a.type);
    if (unknown.length) {
      if (!this.#limiter.allow(client.address, Date.now())) return;
      const u = Buffer.alloc(unknown.length * 2);
      unknown.forEach((t, i) => u.writeUInt16BE(t, i * 2));
      this.#sendUnverified(
        client,
        m,
        new StunBuilder(m.method, Cls.Error, m.transactionId)
          .error(420, 'Unknown Attribute')
          .add(A.UNKNOWN_ATTRIBUTES, u)
          .finish({ fingerprint }),
      );
      return;
    }
    // Allocate retransmission (RFC 8656 §7.2): same 5-tuple and transaction id → the same success response.
    const existing = current();
    if (m.method === Method.Allocate && existing?.lastTid?.equals(m.transactionId) && existing.lastResponse) {
      client.send(existing.lastResponse);
      return;
    }
    const auth = this.#authenticate(client, m, fingerprint, existing);
    if (!auth) return;
    const reply = (b: StunBuilder) => client.send(this.#sign(b, auth));
    const fail = (code: number, reason: string) => {
      this.#log.debug(
        { client: `${client.address}:${client.port}`, method: m.method, code, reason },
        'turn request refused',
      );
      reply(new StunBuilder(m.method, Cls.Error, m.transactionId).error(code, reason));
    };

    if (m.method === Method.Allocate) {
      if (existing) return fail(437, 'Allocation Mismatch');
      // One Allocate at a time per 5-tuple: relay sockets are bound asynchronously, and a second request in that
      // window must not create a second allocation. The client's retransmission gets the answer (cached above).
      const pendingKey = `${client.kind}|${client.address}|${client.port}`;
      if (this.#pendingAllocs.has(pendingKey)) return;
      this.#pendingAllocs.add(pendingKey);
      this.#allocate(
        client,
        m,
        auth,
        reply,
        fail,
        (a) => {
          this.#pendingAllocs.delete(pendingKey);
          setAlloc(a);
        },
        () => this.#pendingAllocs.delete(pendingKey),
      );
      return;
    }
    if (!existing) return fail(437, 'Allocation Mismatch');
    // RFC 8656 §5: requests on an allocation must use the credentials that created it.
    if (existing.username !== auth.username) return fail(441, 'Wrong Credentials');
    switch (m.method) {
      case Method.Refresh:
        return this.#refresh(existing, m, reply, fail);
      case Method.CreatePermission:
        return this.#createPermission(existing, m, reply, fail);
      case Method.ChannelBind:
        return this.#channelBind(existing, m, reply, fail);
      case Method.Connect:
        return this.#connect(existing, m, reply, fail);
      default:
        return fail(400, 'Bad Request');
    }
  }

  /**
   * Sends an answer to a request whose sender has not proven its address. Over UDP an answer larger than the
   * request goes out only within the amplification budget (see AMPLIFIED_BURST); over TCP/TLS always.
   */
  #sendUnverified(client: ClientEndpoint, request: StunMsg, answer: Buffer): void {
    if (client.kind === 'udp' && answer.length > request.raw.length) {
      const now = Date.now();
      if (!this.#amplified.allow(sourceKey(client.address), now) || !this.#amplifiedTotal.take(1, now)) {
        this.#counters.amplificationDropped++;
        return;
      }
    }
    client.send(answer);
  }

  #sign(b: StunBuilder, auth: AuthOk): Buffer {
    if (this.#opts.software) b.text(A.SOFTWARE, this.#opts.software);
    return b.finish({ key: auth.key, integrity: auth.integrity, fingerprint: auth.fingerprint });
  }

  /**
   * RFC 8489 §9.2.4 server side of long-term credentials. Sends the 400/401/438 itself and returns null when the
   * request does not pass. Responses to unauthenticated requests are rate limited per source IP.
   */
  #authenticate(client: ClientEndpoint, m: StunMsg, fingerprint: boolean, existing?: Allocation): AuthOk | null {
    const now = Date.now();
    // `verified`: the request carried a nonce we issued to this very address (438: only its time ran out), so the
    // address answered us before; otherwise the answer is bounded by #sendUnverified.
    const challenge = (code: 401 | 438, reason: string, verified = false) => {
      if (!this.#limiter.allow(client.address, now)) {
        this.#counters.rateLimited++;
        return null;
      }
      // No SOFTWARE here: the challenge goes to unauthenticated senders and is kept small (anti-amplification).
      const b = new StunBuilder(m.method, Cls.Error, m.transactionId)
        .error(code, reason)
        .text(A.REALM, this.realm)
        .text(A.NONCE, this.#nonces.issue(client.address))
        // RFC 8489 §9.2.4: with the password-algorithms bit set, PASSWORD-ALGORITHMS lists what we accept.
        .add(A.PASSWORD_ALGORITHMS, PASSWORD_ALGORITHMS_VALUE);
      const out = b.finish({ fingerprint });
      if (verified) client.send(out);
      else this.#sendUnverified(client, m, out);
      return null;
    };
    const bad = (reason: string) => {
      if (this.#limiter.allow(client.address, now))
        this.#sendUnverified(
          client,
          m,
          new StunBuilder(m.method, Cls.Error, m.transactionId).error(400, reason).finish({ fingerprint }),
        );
      return null;
    };
    const kind = integrityKind(m);
    if (!kind) return challenge(401, 'Unauthorized');
    const username = attrText(m, A.USERNAME);
    const realm = attrText(m, A.REALM);
    const nonce = attrText(m, A.NONCE);
    if (username === undefined || realm === undefined || nonce === undefined) return bad('Bad Request');
    const nonceState = this.#nonces.check(nonce, client.address);
    if (nonceState === 'stale') return challenge(438, 'Stale Nonce', true);
    if (nonceState === 'invalid' || realm !== this.realm) {
      this.#counters.authFailures++;
      return challenge(401, 'Unauthorized');
    }
    // RFC 8489 §9.2.4 (bid-down protection): PASSWORD-ALGORITHMS must echo ours; PASSWORD-ALGORITHM picks one.
    let algorithm: PasswordAlgorithmId = PasswordAlgorithm.MD5;
    const algs = attrValue(m, A.PASSWORD_ALGORITHMS);
    const alg = attrValue(m, A.PASSWORD_ALGORITHM);
    if (algs || alg) {
      if (!algs || !alg || !algs.equals(PASSWORD_ALGORITHMS_VALUE) || alg.length < 4) return bad('Bad Request');
      const id = alg.readUInt16BE(0);
      if (id !== PasswordAlgorithm.MD5 && id !== PasswordAlgorithm.SHA256) return bad('Bad Request');
      algorithm = id;
    }
    // Scoped (peer-relay) usernames are checked against the scope's secret only, so they never pass as unscoped.
    const scope = this.#scope?.keyOf(username) ?? null;
    const store = scope !== null ? this.#scope!.credentials : this.#opts.credentials;
    for (const key of store ? candidateKeys(store, username, this.realm, algorithm) : []) {
      if (verifyIntegrity(m, key)) return { username, scope, key, integrity: kind, fingerprint };
    }
    // Requests on an allocation may keep using the key that created it after time-limited credentials expire
    // (RFC 8656 §5 asks only that they match): a relayed session outlives its credentials' lifetime; a new
    // allocation needs valid ones. Same algorithm only (the key depends on it).
    if (
      existing &&
      existing.username === username &&
      existing.key.length === (algorithm === PasswordAlgorithm.SHA256 ? 32 : 16) &&
      verifyIntegrity(m, existing.key)
    ) {
      return { username, scope: existing.scope, key: existing.key, integrity: kind, fingerprint };
    }
    this.#counters.authFailures++;
    return challenge(401, 'Unauthorized');
  }

  #lifetime(m: StunMsg): number {
    const def = this.#opts.defaultLifetime ?? DEFAULT_LIFETIME_S;
    const max = this.#opts.maxLifetime ?? MAX_LIFETIME_S;
    const requested = attrUint32(m, A.LIFETIME);
    if (requested === undefined) return def;
    if (requested === 0) return 0;
    // RFC 8656 §7.2 step 9: min(requested, max), and not below the default.
    return Math.max(def, Math.min(requested, max));
  }

  #allocate(
    client: ClientEndpoint,
    m: StunMsg,
    auth: AuthOk,
    reply: (b: StunBuilder) => void,
    fail: (code: number, reason: string) => void,
    setAlloc: (a: Allocation | null) => void,
    settled: () => void,
  ): void {
    // Every exit below must call settled() (directly or through done/undo) so the 5-tuple may allocate again.
    const failNow = (code: number, reason: string) => {
      settled();
      fail(code, reason);
    };
    // RFC 8656 §7.2 step 3 / RFC 6062 §5.1: REQUESTED-TRANSPORT is required; 17 = UDP, 6 = TCP (over TCP only).
    const rt = attrValue(m, A.REQUESTED_TRANSPORT);
    if (!rt || rt.length !== 4) return failNow(400, 'Bad Request');
    const transport = rt[0] === 17 ? 'udp' : rt[0] === 6 ? 'tcp' : null;
    if (!transport) return failNow(442, 'Unsupported Transport Protocol');
    if (transport === 'tcp' && client.kind !== 'tcp') return failNow(400, 'Bad Request');
    const evenPort = attrValue(m, A.EVEN_PORT);
    const token = attrValue(m, A.RESERVATION_TOKEN);
    const raf = attrValue(m, A.REQUESTED_ADDRESS_FAMILY);
    const aaf = attrValue(m, A.ADDITIONAL_ADDRESS_FAMILY);
    // RFC 8656 §7.2 steps 4-6: mutually exclusive attributes.
    if (token && (evenPort || raf || aaf)) return failNow(400, 'Bad Request');
    if (raf && aaf) return failNow(400, 'Bad Request');
    if (transport === 'tcp' && (evenPort || token || aaf)) return failNow(400, 'Bad Request');
    let families: Array<'IPv4' | 'IPv6'> = ['IPv4'];
    let addressError = false;
    if (raf) {
      if (raf.length !== 4 || (raf[0] !== 1 && raf[0] !== 2)) return failNow(440, 'Address Family not Supported');
      if (raf[0] === 2) {
        if (!this.relayAddress6) return failNow(440, 'Address Family not Supported');
        families = ['IPv6'];
      }
    }
    if (aaf) {
      // RFC 8656 §7.2 step 6: ADDITIONAL-ADDRESS-FAMILY must be IPv6.
      if (aaf.length !== 4 || aaf[0] !== 2) return failNow(400, 'Bad Request');
      if (this.relayAddress6) families = ['IPv4', 'IPv6'];
      else addressError = true;
    }
    const lifetime = this.#lifetime(m) || (this.#opts.defaultLifetime ?? DEFAULT_LIFETIME_S);
    const source = sourceKey(client.address);
    const q = this.#quota.acquire(auth.username, source);
    if (q !== 'ok') {
      this.#log.info({ user: auth.username, source, limit: q }, 'turn allocation quota reached');
      return failNow(486, 'Allocation Quota Reached');
    }
    const rate = this.#opts.bandwidth ?? 0;
    const alloc = new Allocation(
      client,
      auth.username,
      auth.scope,
      source,
      auth.key,
      auth.integrity,
      transport,
      rate > 0 ? new TokenBucket(rate, rate) : null,
      () => {
        this.#quota.release(auth.username, source);
        setAlloc(null);
      },
    );
    const done = (reservationToken?: Buffer) => {
      settled();
      if (this.#closed || alloc.closed) {
        // The server closed while the relay sockets were being bound.
        if (!alloc.closed) {
          alloc.closed = true;
          this.#quota.release(auth.username, source);
          for (const s of alloc.sockets) s.close();
          alloc.tcpServer?.close();
        }
        return;
      }
      alloc.expires = Date.now() + lifetime * 1000;
      setAlloc(alloc);
      for (const r of alloc.relayed) this.#live.set(liveKey(transport, r.address, r.port), alloc);
      if (transport === 'tcp') this.#tcpAllocsCount(1);
      this.#counters.allocations++;
      this.#counters.allocationsTotal++;
      const b = new StunBuilder(Method.Allocate, Cls.Success, m.transactionId);
      for (const r of alloc.relayed) b.xorAddress(A.XOR_RELAYED_ADDRESS, this.#advertised(r));
      if (addressError) {
        // RFC 8656 §18.12: ADDRESS-ERROR-CODE for the family we could not allocate.
        const reason = Buffer.from('Address Family not Supported');
        const v = Buffer.alloc(4 + reason.length);
        v[0] = 2;
        v[2] = 4;
        v[3] = 40;
        reason.copy(v, 4);
        b.add(A.ADDRESS_ERROR_CODE, v);
      }
      b.u32(A.LIFETIME, lifetime);
      if (reservationToken) b.add(A.RESERVATION_TOKEN, reservationToken);
      b.xorAddress(A.XOR_MAPPED_ADDRESS, { address: client.address, port: client.port });
      const res = this.#sign(b, auth);
      alloc.lastTid = Buffer.from(m.transactionId);
      alloc.lastResponse = res;
      client.send(res);
      this.#log.info(
        { user: auth.username, client: `${client.address}:${client.port}`, relayed: alloc.relayed, transport },
        'turn allocation',
      );
    };
    const undo = (code: number, reason: string) => {
      settled();
      this.#quota.release(auth.username, source);
      alloc.closed = true;
      for (const s of alloc.sockets) s.close();
      alloc.tcpServer?.close();
      fail(code, reason);
    };
    if (transport === 'tcp') {
      this.#openTcpRelay(alloc)
        .then(() => done())
        .catch(() => undo(508, 'Insufficient Capacity'));
      return;
    }
    if (token) {
      this.#reservations
        .take(token.toString('hex'), Date.now(), (address, port) => this.#bindUdp(address, port))
        .then(
          (socket) => {
            if (!socket) return undo(508, 'Insufficient Capacity');
            this.#adoptRelaySocket(alloc, socket);
            done();
          },
          () => undo(508, 'Insufficient Capacity'),
        );
      return;
    }
    const wantEven = evenPort !== undefined;
    const reserve = wantEven && evenPort.length >= 1 && (evenPort[0]! & 0x80) !== 0;
    this.#openUdpRelays(alloc, families, wantEven, reserve)
      .then((tokenBuf) => done(tokenBuf))
      .catch(() => undo(508, 'Insufficient Capacity'));
  }

  #tcpAllocsCount(delta: number): void {
    this.#counters.tcpAllocations += delta;
  }

  #bindUdp(address: string, port: number): Promise<RelaySocket | null> {
    return bindRelaySocket(address, port, { batched: this.#batchedRelay, bufferBytes: RELAY_SOCKET_BUFFER_BYTES });
  }

  #randomPort(even: boolean): number {
    const min = this.#opts.minPort ?? DEFAULT_MIN_PORT;
    const max = this.#opts.maxPort ?? DEFAULT_MAX_PORT;
    let p = min + Math.floor(Math.random() * (max - min + 1));
    if (even && p % 2) p = p + 1 > max ? p - 1 : p + 1;
    return p;
  }

  async #openUdpRelays(
    alloc: Allocation,
    families: Array<'IPv4' | 'IPv6'>,
    even: boolean,
    reserve: boolean,
  ): Promise<Buffer | undefined> {
    let token: Buffer | undefined;
    for (const fam of families) {
      const address = fam === 'IPv4' ? this.relayAddress : this.relayAddress6!;
      let sock: RelaySocket | null = null;
      for (let attempt = 0; attempt < 64 && !sock; attempt++) {
        const port = this.#randomPort(even);
        sock = await this.#bindUdp(address, port);
        if (
          sock &&
          reserve &&
          fam === families[0] &&
          this.#reservations.size >= (this.#opts.maxAllocations ?? DEFAULT_MAX_ALLOCATIONS)
        ) {
          // Reserved ports count against the same bound as allocations.
          sock.close();
          throw new Error('too many reservations');
        }
        if (sock && reserve && fam === families[0]) {
          // RFC 8656 §7.2 step 5: R bit → also hold port+1 and hand out a RESERVATION-TOKEN for it.
          const next =
            port + 1 <= (this.#opts.maxPort ?? DEFAULT_MAX_PORT) ? await this.#bindUdp(address, port + 1) : null;
          if (!next) {
            sock.close();
            sock = null;
            continue;
          }
          token = randomBytes(8);
          if (!this.#reservations.hold(token.toString('hex'), next, Date.now() + RESERVATION_LIFETIME_S * 1000)) {
            sock.close();
            sock = null;
            token = undefined;
            continue;
          }
        }
      }
      if (!sock) throw new Error('no relay port');
      this.#adoptRelaySocket(alloc, sock);
    }
    return token;
  }

  #adoptRelaySocket(alloc: Allocation, sock: RelaySocket): void {
    const a = sock.address();
    alloc.sockets.push(sock);
    alloc.relayed.push({ address: a.address, port: a.port });
    if (a.address.includes(':')) alloc.socket6 ??= sock;
    else alloc.socket4 ??= sock;
    if (sock instanceof BatchedUdpSocket) this.#relaySockets.add(sock);
    sock.onMessage((msg, rinfo) => this.#peerToClient(alloc, msg, rinfo));
  }

  async #openTcpRelay(alloc: Allocation): Promise<void> {
    for (let attempt = 0; attempt < 32; attempt++) {
      const server = net.createServer({ pauseOnConnect: true }, (s) => this.#onPeerTcp(alloc, s));
      const port = this.#randomPort(false);
      const ok = await new Promise<boolean>((resolve) => {
        server.once('error', () => resolve(false));
        server.listen(port, this.relayAddress, () => resolve(true));
      });
      if (!ok) continue;
      server.on('error', noop);
      alloc.tcpServer = server;
      alloc.relayed.push({ address: this.relayAddress, port });
      return;
    }
    throw new Error('no relay port');
  }

  #refresh(alloc: Allocation, m: StunMsg, reply: (b: StunBuilder) => void, fail: (c: number, r: string) => void): void {
    const raf = attrValue(m, A.REQUESTED_ADDRESS_FAMILY);
    // RFC 8656 §7.3: a REQUESTED-ADDRESS-FAMILY naming a family this allocation does not have → 443.
    if (raf && (raf.length !== 4 || !alloc.relayed.some((r) => (r.address.includes(':') ? 2 : 1) === raf[0]))) {
      return fail(443, 'Peer Address Family Mismatch');
    }
    const lifetime = this.#lifetime(m);
    if (lifetime === 0) {
      this.#removeAllocation(alloc);
    } else {
      alloc.expires = Date.now() + lifetime * 1000;
    }
    reply(new StunBuilder(Method.Refresh, Cls.Success, m.transactionId).u32(A.LIFETIME, lifetime));
  }

  #isRelayIp(address: string): boolean {
    return (
      address === this.relayAddress ||
      address === this.externalAddress ||
      (this.relayAddress6 !== undefined && address === this.relayAddress6)
    );
  }

  /** The relayed address as peers see it (RFC 8656 §7.3 XOR-RELAYED-ADDRESS; external address behind a 1:1 NAT). */
  #advertised(r: Peer): Peer {
    return this.externalAddress && r.address === this.relayAddress
      ? { address: this.externalAddress, port: r.port }
      : r;
  }

  /**
   * Whether `alloc` may reach `peer` (RFC 8656 §9.1: 403 Forbidden when not). Returns an error code (400, 403,
   * 443), or how far the permission reaches: null = every port of the IP, a PortFilter = only those ports.
   *
   * Unscoped allocations: the PeerPolicy decides; one of this server's relay addresses, denied as an own address,
   * is allowed only towards the server's live allocations (relay to relay) — never other services on the host.
   * Scoped (peer-relay) allocations: only what relay/peer-relay.ts puts in the key's scope (see there).
   */
  #access(alloc: Allocation, peer: Peer | null): number | { restrict: PortFilter } {
    if (!peer) return 400;
    if (!alloc.hasFamily(peer.address)) return 443;
    const ip = peer.address;
    const decision = this.#policy.check(ip);
    if (decision === 'invalid') return 400;
    const refuse = (why: string) => {
      this.#counters.deniedPeers++;
      this.#log.warn({ user: alloc.username, peer: ip, decision: why }, 'turn peer refused by policy');
      return 403;
    };
    if (decision === 'denied-by-config') return refuse(decision);
    const proto = alloc.transport;
    if (alloc.scope === null) {
      if (decision === 'allowed') return { restrict: null };
      if (this.#isRelayIp(ip)) return { restrict: (port) => this.#liveTarget(alloc, proto, ip, port) };
      return refuse(decision);
    }
    const scope = this.#scope!;
    const key = alloc.scope;
    if (this.#isRelayIp(ip)) {
      if (!scope.hasIntroductions(key)) return refuse('not-introduced');
      return { restrict: (port) => this.#liveTarget(alloc, proto, ip, port) || scope.allowsEndpoint(key, ip, port) };
    }
    if (!scope.allowsAddress(key, ip)) return refuse('not-introduced');
    // A peer seen at an address the policy denies (loopback, RFC 1918, this host): that exact endpoint only.
    return { restrict: decision === 'allowed' ? null : (port) => scope.allowsEndpoint(key, ip, port) };
  }

  /**
   * Relay to relay: `ip:port` is a live allocation of this server (not `from` itself) — for a scoped `from`, one
   * made with credentials of a key introduced to it. Nothing else on the relay host is a target (issue 18 hole 3).
   */
  #liveTarget(from: Allocation, proto: 'udp' | 'tcp', ip: string, port: number): boolean {
    const to = this.#live.get(liveKey(proto, ip === this.externalAddress ? this.relayAddress : ip, port));
    if (!to || to === from || to.closed) return false;
    if (from.scope === null) return true;
    return to.scope !== null && this.#scope!.introduced(from.scope, to.scope);
  }

  #permission(alloc: Allocation, ip: string, now: number, restrict: PortFilter): Permission {
    let p = alloc.permissions.get(ip);
    if (!p) {
      p = { expires: 0, channels: null, restrict };
      alloc.permissions.set(ip, p);
      this.#counters.permissions++;
    }
    p.restrict = restrict;
    p.expires = now + PERMISSION_LIFETIME_S * 1000;
    // The fast path's rules last until the channel or the permission expires: they follow the new lifetime.
    if (p.channels) for (const ch of p.channels.values()) this.#route(alloc, ch);
    return p;
  }

  /**
   * Installs (or renews) the addon's forwarding rules for a channel, both ways, when both sockets are batched and
   * nothing needs a per-packet decision: no bandwidth cap (TokenBucket), and a permission for the whole IP or one
   * that reaches exactly this server's live allocations (relay to relay, below); other PortFilters are evaluated per
   * packet. The rules expire with the channel or the permission, whichever is first; JavaScript still sees every
   * datagram no rule matches and checks it fully.
   */
  #route(alloc: Allocation, ch: Channel): void {
    const via = alloc.client.route;
    const relay = alloc.socketFor(ch.peer.address);
    const ttl = Math.min(ch.expires, ch.perm.expires) - Date.now();
    // Relay to relay for unscoped credentials (two clients of this server relaying to each other, as two browsers
    // forced to relay do): the permission's filter admits exactly this server's live allocations (#access), so the
    // rules hold while the peer's allocation lives, and #removeAllocation takes them away with it. Other filters
    // (peer-relay scopes) depend on more than that and stay per packet.
    let routedTo: string | undefined;
    if (ch.perm.restrict) {
      const { address, port } = ch.peer;
      if (alloc.scope === null && this.#isRelayIp(address) && ch.perm.restrict(port))
        routedTo = liveKey('udp', address === this.externalAddress ? this.relayAddress : address, port);
    }
    if (
      !via ||
      alloc.closed ||
      alloc.bucket ||
      (ch.perm.restrict && !routedTo) ||
      ttl <= 0 ||
      !(relay instanceof BatchedUdpSocket) ||
      !relay.canRoute ||
      !via.socket.canRoute
    ) {
      this.#unroute(alloc, ch);
      return;
    }
    const client = { address: via.address, port: via.port };
    const ok =
      via.socket.routeChannel(client, ch.number, relay, ch.peer, ttl) &&
      relay.routePeer(ch.peer, via.socket, client, ch.number, ttl);
    if (!ok) {
      ch.routed = true; // whichever half went in comes out again
      this.#unroute(alloc, ch);
      return;
    }
    ch.routed = true;
    this.#routedSockets.add(via.socket);
    this.#routedSockets.add(relay);
    if (routedTo !== ch.routedTo) this.#dropDependency(ch);
    if (routedTo) {
      ch.routedTo = routedTo;
      let deps = this.#routedToRelay.get(routedTo);
      if (!deps) this.#routedToRelay.set(routedTo, (deps = new Map()));
      deps.set(ch, alloc);
    }
  }

  #dropDependency(ch: Channel): void {
    if (!ch.routedTo) return;
    const deps = this.#routedToRelay.get(ch.routedTo);
    deps?.delete(ch);
    if (deps?.size === 0) this.#routedToRelay.delete(ch.routedTo);
    ch.routedTo = undefined;
  }

  #unroute(alloc: Allocation, ch: Channel): void {
    this.#dropDependency(ch);
    if (!ch.routed) return;
    ch.routed = false;
    const via = alloc.client.route;
    via?.socket.unrouteChannel({ address: via.address, port: via.port }, ch.number);
    const relay = alloc.socketFor(ch.peer.address);
    if (relay instanceof BatchedUdpSocket) relay.unroutePeer(ch.peer);
  }

  /** Counters, including what the addon's fast path forwarded without JavaScript. */
  get stats(): TurnStats {
    for (const s of this.#routedSockets) this.#foldRouted(s);
    return this.#counters;
  }

  /** Adds what `socket` forwarded natively: client-facing sockets carry client → peer, relay sockets the reverse. */
  #foldRouted(socket: BatchedUdpSocket): void {
    const { packets, bytes } = socket.takeRouted();
    if (packets === 0) return;
    if (this.#relaySockets.has(socket)) {
      this.#counters.packetsToClient += packets;
      this.#counters.bytesToClient += bytes;
    } else {
      this.#counters.packetsToPeer += packets;
      this.#counters.bytesToPeer += bytes;
    }
  }

  #createPermission(
    alloc: Allocation,
    m: StunMsg,
    reply: (b: StunBuilder) => void,
    fail: (c: number, r: string) => void,
  ): void {
    const peers = attrXorAddresses(m, A.XOR_PEER_ADDRESS);
    if (peers.length === 0) return fail(400, 'Bad Request');
    // RFC 8656 §9.2: all addresses are checked before any permission is installed.
    const restricts = new Map<string, PortFilter>();
    for (const p of peers) {
      const access = this.#access(alloc, p);
      if (access === 403) return fail(403, 'Forbidden');
      if (access === 443) return fail(443, 'Peer Address Family Mismatch');
      if (typeof access === 'number') return fail(400, 'Bad Request');
      restricts.set(p!.address, access.restrict);
    }
    const fresh = new Set(peers.map((p) => p!.address)).size;
    if (
      alloc.permissions.size + fresh > MAX_PERMISSIONS_PER_ALLOCATION &&
      peers.some((p) => !alloc.permissions.has(p!.address))
    ) {
      return fail(508, 'Insufficient Capacity');
    }
    const now = Date.now();
    for (const p of peers) this.#permission(alloc, p!.address, now, restricts.get(p!.address) ?? null);
    reply(new StunBuilder(Method.CreatePermission, Cls.Success, m.transactionId));
  }

  #channelBind(
    alloc: Allocation,
    m: StunMsg,
    reply: (b: StunBuilder) => void,
    fail: (c: number, r: string) => void,
  ): void {
    const cn = attrValue(m, A.CHANNEL_NUMBER);
    const peers = attrXorAddresses(m, A.XOR_PEER_ADDRESS);
    if (!cn || cn.length !== 4 || peers.length !== 1 || alloc.transport !== 'udp') return fail(400, 'Bad Request');
    const number = cn.readUInt16BE(0);
    // RFC 8656 §12: 0x4000..0x4FFF; RFC 5766 clients use up to 0x7FFF (accepted unless legacyChannels is false).
    if (number < CHANNEL_MIN || number > ((this.#maxChannelByte << 8) | 0xff)) return fail(400, 'Bad Request');
    const peer = peers[0]!;
    const access = this.#access(alloc, peer);
    if (access === 403) return fail(403, 'Forbidden');
    if (access === 443) return fail(443, 'Peer Address Family Mismatch');
    if (typeof access === 'number' || !peer) return fail(400, 'Bad Request');
    // A channel names one port: a restricted IP must allow exactly that one (RFC 8656 §11.2 → 403).
    if (access.restrict && !access.restrict(peer.port)) {
      this.#counters.deniedPeers++;
      return fail(403, 'Forbidden');
    }
    const now = Date.now();
    // RFC 8656 §11.2: a channel is bound to one peer and a peer to one channel.
    const bound = alloc.channels.get(number);
    if (bound && (bound.peer.address !== peer.address || bound.peer.port !== peer.port))
      return fail(400, 'Bad Request');
    const existingPerm = alloc.permissions.get(peer.address);
    const other = existingPerm?.channels?.get(peer.port);
    if (other && other.number !== number) return fail(400, 'Bad Request');
    if (!bound && alloc.channels.size >= MAX_CHANNELS_PER_ALLOCATION) return fail(508, 'Insufficient Capacity');
    const perm = this.#permission(alloc, peer.address, now, access.restrict);
    if (bound) {
      bound.expires = now + CHANNEL_LIFETIME_S * 1000;
    } else {
      const ch: Channel = {
        number,
        peer: { address: peer.address, port: peer.port },
        expires: now + CHANNEL_LIFETIME_S * 1000,
        perm,
        routed: false,
      };
      alloc.channels.set(number, ch);
      (perm.channels ??= new Map()).set(peer.port, ch);
      this.#counters.channels++;
    }
    this.#route(alloc, bound ?? alloc.channels.get(number)!);
    reply(new StunBuilder(Method.ChannelBind, Cls.Success, m.transactionId));
  }

  // -------------------------------------------------------------------------------------------------------------
  // Relaying

  /** RFC 8656 §11.3/§12.6: client → peer through a Send indication (silently dropped without permission). */
  #sendIndication(alloc: Allocation, m: StunMsg): void {
    if (alloc.transport !== 'udp') return;
    const peers = attrXorAddresses(m, A.XOR_PEER_ADDRESS);
    const data = attrValue(m, A.DATA);
    const peer = peers[0];
    if (!peer || !data) return;
    const now = Date.now();
    const perm = alloc.permissions.get(peer.address);
    if (!perm || perm.expires < now) {
      this.#counters.droppedNoPermission++;
      return;
    }
    if (perm.restrict && !perm.restrict(peer.port)) {
      this.#counters.deniedPeers++;
      return;
    }
    this.#toPeer(alloc, peer.address, peer.port, data, now);
  }

  /** RFC 8656 §12.6: ChannelData from the client; unknown/expired channel → drop. */
  #channelToPeer(alloc: Allocation, number: number, data: Buffer): void {
    const ch = alloc.channels.get(number);
    if (!ch) {
      this.#counters.droppedNoChannel++;
      return;
    }
    const now = Date.now();
    if (ch.expires < now || ch.perm.expires < now || (ch.perm.restrict && !ch.perm.restrict(ch.peer.port))) {
      this.#counters.droppedNoPermission++;
      return;
    }
    this.#toPeer(alloc, ch.peer.address, ch.peer.port, data, now);
  }

  #toPeer(alloc: Allocation, address: string, port: number, data: Buffer, now: number): void {
    if (alloc.bucket && !alloc.bucket.take(data.length, now)) {
      this.#counters.droppedBandwidth++;
      return;
    }
    const sock = alloc.socketFor(address);
    if (!sock) return;
    sock.send(data, port, address);
    this.#counters.packetsToPeer++;
    this.#counters.bytesToPeer += data.length;
  }

  /** RFC 8656 §11.5/§12.7: a datagram from a peer → ChannelData if a channel is bound, else a Data indication. */
  #peerToClient(alloc: Allocation, msg: Buffer, rinfo: RemoteInfo): void {
    const now = Date.now();
    const perm = alloc.permissions.get(rinfo.address);
    if (!perm || perm.expires < now) {
      this.#counters.droppedNoPermission++;
      return;
    }
    if (alloc.bucket && !alloc.bucket.take(msg.length, now)) {
      this.#counters.droppedBandwidth++;
      return;
    }
    if (perm.restrict && !perm.restrict(rinfo.port)) {
      this.#counters.droppedNoPermission++;
      return;
    }
    const ch = perm.channels?.get(rinfo.port);
    if (ch && ch.expires >= now) {
      alloc.client.sendChannelData(ch.number, msg);
    } else {
      const ind = encodeDataIndication({ address: rinfo.address, port: rinfo.port }, msg, this.#nextTid());
      if (!ind) return;
      alloc.client.send(ind);
    }
    this.#counters.packetsToClient++;
    this.#counters.bytesToClient += msg.length;
  }

  #nextTid(): Buffer {
    const tid = Buffer.allocUnsafe(12);
    this.#tidPrefix.copy(tid, 0);
    tid.writeUInt32BE((this.#tidCounter = (this.#tidCounter + 1) >>> 0), 8);
    return tid;
  }

  // -------------------------------------------------------------------------------------------------------------
  // RFC 6062 TCP allocations

  #newConnectionId(): number {
    for (;;) {
      const id = randomBytes(4).readUInt32BE(0);
      if (id !== 0 && !this.#connIds.has(id)) return id;
    }
  }

  #trackPeerConn(alloc: Allocation, socket: net.Socket, peer: Peer): PeerConnection {
    const id = this.#newConnectionId();
    const conn: PeerConnection = { id, socket, peer, timer: null, bound: false, pending: [] };
    // RFC 6062 §5.3: if no ConnectionBind arrives within 30 s, close the peer connection.
    conn.timer = setTimeout(() => {
      if (!conn.bound) socket.destroy();
    }, CONNECTION_BIND_TIMEOUT_S * 1000);
    conn.timer.unref();
    alloc.tcpConns.set(id, conn);
    this.#connIds.set(id, { alloc, conn });
    socket.on('error', noop);
    socket.on('close', () => {
      if (conn.timer) clearTimeout(conn.timer);
      alloc.tcpConns.delete(id);
      this.#connIds.delete(id);
    });
    return conn;
  }

  /** RFC 6062 §5.2: Connect → open a TCP connection to the peer, answer with CONNECTION-ID. */
  #connect(alloc: Allocation, m: StunMsg, reply: (b: StunBuilder) => void, fail: (c: number, r: string) => void): void {
    if (alloc.transport !== 'tcp') return fail(400, 'Bad Request');
    const peers = attrXorAddresses(m, A.XOR_PEER_ADDRESS);
    const peer = peers[0];
    if (peers.length !== 1 || !peer) return fail(400, 'Bad Request');
    const access = this.#access(alloc, peer);
    if (access === 403 || (typeof access !== 'number' && access.restrict && !access.restrict(peer.port))) {
      if (access !== 403) this.#counters.deniedPeers++;
      return fail(403, 'Forbidden');
    }
    if (access === 443) return fail(443, 'Peer Address Family Mismatch');
    if (typeof access === 'number') return fail(400, 'Bad Request');
    for (const c of alloc.tcpConns.values()) {
      if (c.peer.address === peer.address && c.peer.port === peer.port) return fail(446, 'Connection Already Exists');
    }
    const socket = net.connect({ host: peer.address, port: peer.port, localAddress: this.relayAddress });
    socket.pause();
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      socket.destroy();
      fail(447, 'Connection Timeout or Failure');
    }, CONNECT_TIMEOUT_MS);
    socket.once('error', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fail(447, 'Connection Timeout or Failure');
    });
    socket.once('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (alloc.closed) {
        socket.destroy();
        return;
      }
      // The connection to the peer also acts as a permission for its address (RFC 6062 §5.2).
      this.#permission(alloc, peer.address, Date.now(), access.restrict);
      const conn = this.#trackPeerConn(alloc, socket, peer);
      const id = Buffer.alloc(4);
      id.writeUInt32BE(conn.id, 0);
      reply(new StunBuilder(Method.Connect, Cls.Success, m.transactionId).add(A.CONNECTION_ID, id));
    });
  }

  /** RFC 6062 §5.3: a peer connects to the relayed address; with a permission → ConnectionAttempt to the client. */
  #onPeerTcp(alloc: Allocation, socket: net.Socket): void {
    const address = normalizeIp(socket.remoteAddress ?? '');
    const perm = alloc.permissions.get(address);
    if (!perm || perm.expires < Date.now() || alloc.closed) {
      this.#counters.droppedNoPermission++;
      socket.destroy();
      return;
    }
    const peer = { address, port: socket.remotePort ?? 0 };
    const conn = this.#trackPeerConn(alloc, socket, peer);
    const id = Buffer.alloc(4);
    id.writeUInt32BE(conn.id, 0);
    const b = new StunBuilder(Method.ConnectionAttempt, Cls.Indication, randomBytes(12))
      .add(A.CONNECTION_ID, id)
      .xorAddress(A.XOR_PEER_ADDRESS, peer);
    alloc.client.send(b.finish({ fingerprint: true }));
  }

  /**
   * RFC 6062 §5.4: ConnectionBind on a new TCP connection. On success returns a function that starts piping (the
   * caller stops framing first); on failure answers with an error and returns null.
   */
  #onConnectionBind(socket: net.Socket, client: ClientEndpoint, m: StunMsg): (() => void) | null {
    if (this.#tcpAllocs.has(socket)) {
      client.send(new StunBuilder(m.method, Cls.Error, m.transactionId).error(400, 'Bad Request').finish());
      return null;
    }
    const auth = this.#authenticate(client, m, findAttr(m, A.FINGERPRINT) !== undefined);
    if (!auth) return null;
    const idv = attrValue(m, A.CONNECTION_ID);
    const entry = idv && idv.length === 4 ? this.#connIds.get(idv.readUInt32BE(0)) : undefined;
    if (!entry || entry.conn.bound || entry.alloc.username !== auth.username) {
      client.send(this.#sign(new StunBuilder(m.method, Cls.Error, m.transactionId).error(400, 'Bad Request'), auth));
      return null;
    }
    const { conn } = entry;
    conn.bound = true;
    if (conn.timer) clearTimeout(conn.timer);
    socket.write(this.#sign(new StunBuilder(Method.ConnectionBind, Cls.Success, m.transactionId), auth));
    return () => {
      // From here on both connections are a plain byte pipe (RFC 6062 §5.4).
      this.#tcpClients.delete(socket);
      socket.setTimeout(0);
      socket.on('close', () => conn.socket.destroy());
      conn.socket.on('close', () => socket.destroy());
      socket.pipe(conn.socket);
      conn.socket.pipe(socket);
      conn.socket.resume();
    };
  }

  // -------------------------------------------------------------------------------------------------------------
  // Lifetimes

  #removeAllocation(alloc: Allocation): void {
    if (alloc.closed) return;
    alloc.closed = true;
    for (const ch of alloc.channels.values()) this.#unroute(alloc, ch);
    for (const s of alloc.sockets) {
      if (s instanceof BatchedUdpSocket && this.#routedSockets.delete(s)) this.#foldRouted(s);
      this.#relaySockets.delete(s);
      s.close();
    }
    if (alloc.tcpServer) {
      alloc.tcpServer.close();
      this.#counters.tcpAllocations--;
    }
    for (const c of alloc.tcpConns.values()) c.socket.destroy();
    this.#counters.permissions -= alloc.permissions.size;
    this.#counters.channels -= alloc.channels.size;
    this.#counters.allocations--;
    for (const r of alloc.relayed) {
      const k = liveKey(alloc.transport, r.address, r.port);
      if (this.#live.get(k) === alloc) this.#live.delete(k);
      // Other allocations' fast-path rules towards this one (relay to relay) end with it.
      const deps = this.#routedToRelay.get(k);
      if (deps) for (const [ch, from] of [...deps]) this.#unroute(from, ch);
    }
    alloc.onRemove();
    if (alloc.transport === 'tcp' || alloc.client.kind === 'tcp') {
      for (const [sock, a] of this.#tcpAllocs) if (a === alloc) this.#tcpAllocs.delete(sock);
    }
  }

  #allAllocations(): Allocation[] {
    const all: Allocation[] = [...this.#tcpAllocs.values()];
    for (const byAddr of this.#udp.values()) for (const ports of byAddr.values()) all.push(...ports.values());
    return all;
  }

  #sweep(): void {
    const now = Date.now();
    for (const a of this.#allAllocations()) {
      if (a.expires < now) {
        this.#log.info({ user: a.username }, 'turn allocation expired');
        const sock = a.client.kind === 'tcp' ? [...this.#tcpAllocs].find(([, x]) => x === a)?.[0] : undefined;
        this.#removeAllocation(a);
        // RFC 8656 §3.1 (TCP): the control connection goes with its allocation.
        sock?.end();
        continue;
      }
      for (const [n, ch] of a.channels) {
        if (ch.expires < now) {
          this.#unroute(a, ch);
          a.channels.delete(n);
          ch.perm.channels?.delete(ch.peer.port);
          this.#counters.channels--;
        }
      }
      for (const [ip, p] of a.permissions) {
        if (p.expires < now && (!p.channels || p.channels.size === 0)) {
          a.permissions.delete(ip);
          this.#counters.permissions--;
        }
      }
    }
    this.#reservations.sweep(now);
    this.#limiter.sweep(now);
  }
}

/** PASSWORD-ALGORITHMS value we offer (RFC 8489 §14.11): SHA-256 first, then MD5, no parameters. */
const PASSWORD_ALGORITHMS_VALUE = Buffer.from([0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]);

function noop(): void {}

/** Key of a live relayed transport address in TurnServer's #live map. */
function liveKey(proto: 'udp' | 'tcp', address: string, port: number): string {
  return `${proto === 'udp' ? 'u' : 't'}${address.includes(':') ? '6' : '4'}:${port}`;
}

export { normalizeIp };

/** The first non-internal IPv4 address of this machine, or 127.0.0.1. */
export function defaultRelayAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) if (i.family === 'IPv4' && !i.internal) return i.address;
  }
  return '127.0.0.1';
}
