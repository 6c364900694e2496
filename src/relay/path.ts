import dgram from 'node:dgram';
import { isIP } from 'node:net';
import type tls from 'node:tls';
import type { DatagramTransport } from '../net/datagram.js';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { candidatePriority, type Candidate } from '../traversal/candidate.js';
import { TurnClient } from './client.js';
import type { Peer } from './message.js';

/** At most this many peer addresses get a relay proxy (bounded sockets; the checks use ≤ 32 candidates). */
export const MAX_RELAY_PROXIES = 32;
/** Datagrams queued per proxy while its loopback socket is being bound. */
const MAX_PENDING = 16;
/**
 * How long the relay gets over UDP before the client tries TCP (RFC 8489 §6.2.1: with RTO 500 ms the first three
 * transmissions go out within 1.5 s; a relay that answers none of them is behind a UDP block).
 */
export const RELAY_UDP_ATTEMPT_MS = 2_000;

export interface RelayPathOptions {
  /** The punching socket (e.g. the UdxEndpoint): the allocation is made from its NAT mapping. Not owned. */
  transport: DatagramTransport;
  /** TURN server (IP literal). */
  server: { address: string; port: number };
  username: string;
  password: string;
  /**
   * Reach the TURN server over TCP instead of from the punching socket (RFC 8656 §3.1: a UDP relayed address
   * controlled over TCP) — for networks that block UDP. Peers still see an ordinary UDP relayed address.
   */
  tcp?: boolean;
  /**
   * Reach the TURN server over TLS ("turns:", RFC 8656 §3.1) on `server` instead: true, or node:tls options (e.g.
   * `servername` when `server.address` is an IP literal but the certificate names a host, `ca` for a private CA).
   */
  tls?: boolean | tls.ConnectionOptions;
  signal?: AbortSignal;
  timeoutMs?: number;
  logger?: Logger;
}

interface Proxy {
  peer: Peer;
  /** Relayed traffic through this proxy is dropped until then (the direct paths' head start). */
  holdUntil: number;
  socket: dgram.Socket | null;
  port: number;
  pending: Buffer[];
}

/**
 * A relay path for a session whose transport does its own socket I/O (UDX): a TURN allocation made on the punching
 * socket, plus one loopback UDP "proxy" socket per peer address. The session (and the connectivity checks) send to
 * a proxy's 127.0.0.1 address; the proxy forwards through the TURN client to its peer; what the peer sends to the
 * relayed address comes back out of that proxy to the punching socket. So the session sees an ordinary UDP peer at
 * 127.0.0.1:proxyPort, and the other side sees us at the relayed address (a `relay` candidate).
 *
 * `hold(ms)` drops relayed traffic for a while: direct candidate pairs get a head start in the race, the relay takes
 * over only when they do not answer (lowest priority, RFC 8445 §5.1.2.1).
 */
export class RelayPath {
  readonly client: TurnClient;
  readonly relayed: Peer;
  readonly #log: Logger;
  readonly #byPeer = new Map<string, Proxy>();
  readonly #byPort = new Map<number, Proxy>();
  readonly #deliverTo: { address: string; port: number };
  #holdUntil = 0;
  #off: () => void;
  #closed = false;

  private constructor(client: TurnClient, transport: DatagramTransport, relayed: Peer, logger: Logger) {
    this.client = client;
    this.relayed = relayed;
    this.#log = logger;
    const local = transport.address();
    const wildcard = local.address === '0.0.0.0' || local.address === '::';
    this.#deliverTo = { address: wildcard ? '127.0.0.1' : local.address, port: local.port };
    this.#off = client.onData((data, peer) => this.#fromPeer(data, peer));
  }

  /** Allocates on the TURN server over `transport` (401 → credentials, RFC 8656 §7). */
  static async open(options: RelayPathOptions): Promise<RelayPath> {
    const logger = options.logger ?? silentLogger;
    const base = {
      server: options.server,
      username: options.username,
      password: options.password,
      logger,
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    };
    const signal = options.signal ? { signal: options.signal } : {};
    const client = options.tls
      ? await TurnClient.connectTls({
          ...base,
          ...signal,
          ...(typeof options.tls === 'object' ? { tls: options.tls } : {}),
        })
      : options.tcp
        ? await TurnClient.connectTcp({ ...base, ...signal })
        : new TurnClient({ ...base, transport: options.transport });
    try {
      const family = options.transport.address().family === 'IPv6' ? 'IPv6' : 'IPv4';
      const alloc = await client.allocate({
        ...(options.signal ? { signal: options.signal } : {}),
        ...(family === 'IPv6' ? { family } : {}),
      });
      return new RelayPath(client, options.transport, alloc.relayed[0]!, logger);
    } catch (err) {
      await client.close();
      throw err;
    }
  }

  /** Our relayed transport address as a candidate to hand the peer. */
  candidate(): Candidate {
    return {
      type: 'relay',
      transport: 'udp',
      address: this.relayed.address,
      port: this.relayed.port,
      priority: candidatePriority('relay'),
    };
  }

  /**
   * Installs permissions for the peers' IPs (RFC 8656 §9), one by one so a refused one (the server denies private
   * addresses by default) does not stop the others. Returns the IPs that are permitted.
   */
  async permit(candidates: readonly Candidate[], signal?: AbortSignal): Promise<string[]> {
    const v6 = this.relayed.address.includes(':');
    // The peer's own relayed address counts too (both sides relayed, e.g. both behind UDP-blocking firewalls). Our
    // relay's address is always asked for: a peer relayed on the same server may not have told us its relayed
    // address (a listener's is not in its registration), and its first check then arrives from there. The server
    // limits that permission to live allocations (peer-relay mode: of peers introduced to us).
    const ips = [
      ...new Set([
        ...candidates
          .filter((c) => c.transport === 'udp' && c.address.includes(':') === v6 && !this.#isOurs(c))
          .map((c) => c.address),
        this.relayed.address,
      ]),
    ];
    const results = await Promise.allSettled(ips.map((ip) => this.client.createPermission([ip], signal)));
    const ok = ips.filter((_, i) => results[i]!.status === 'fulfilled');
    this.#log.debug({ ok, refused: ips.filter((ip) => !ok.includes(ip)) }, 'relay permissions');
    return ok;
  }

  /**
   * Remote candidates that go through the relay: for each peer candidate whose IP is permitted, a `relay` candidate
   * at the loopback proxy for it. Give them to the connectivity checks after the direct ones.
   */
  async proxied(candidates: readonly Candidate[], permitted: readonly string[]): Promise<Candidate[]> {
    const out: Candidate[] = [];
    for (const c of candidates) {
      if (this.#isOurs(c) || !permitted.includes(c.address)) continue;
      const p = await this.#proxy({ address: c.address, port: c.port });
      if (p)
        out.push({
          type: 'relay',
          transport: 'udp',
          address: '127.0.0.1',
          port: p.port,
          priority: candidatePriority('relay'),
        });
    }
    return out;
  }

  #isOurs(c: Candidate): boolean {
    return c.address === this.relayed.address && c.port === this.relayed.port;
  }

  /**
   * Proxies created from now on (by `proxied()`, or for peers that show up through the relay) drop relayed traffic
   * for `ms`: direct paths get a head start. Proxies of sessions already running are not affected.
   */
  hold(ms: number): void {
    this.#holdUntil = Date.now() + ms;
  }

  /** The peer behind a proxy address (for logs and path reports). */
  peerOf(address: string, port: number): Peer | null {
    if (address !== '127.0.0.1') return null;
    return this.#byPort.get(port)?.peer ?? null;
  }

  get closed(): boolean {
    return this.#closed;
  }

  async #proxy(peer: Peer): Promise<Proxy | null> {
    const key = `${peer.address}|${peer.port}`;
    const existing = this.#byPeer.get(key);
    if (existing) return existing;
    if (this.#closed || this.#byPeer.size >= MAX_RELAY_PROXIES) return null;
    const proxy: Proxy = { peer, holdUntil: this.#holdUntil, socket: null, port: 0, pending: [] };
    this.#byPeer.set(key, proxy);
    const socket = dgram.createSocket('udp4');
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    if (this.#closed) {
      socket.close();
      return null;
    }
    proxy.socket = socket;
    proxy.port = socket.address().port;
    this.#byPort.set(proxy.port, proxy);
    socket.on('message', (msg, rinfo) => {
      // Only the punching socket may use the proxy.
      if (rinfo.port !== this.#deliverTo.port || Date.now() < proxy.holdUntil) return;
      this.client.send(msg, proxy.peer);
    });
    for (const d of proxy.pending.splice(0)) socket.send(d, this.#deliverTo.port, this.#deliverTo.address);
    return proxy;
  }

  #fromPeer(data: Buffer, peer: Peer): void {
    if (this.#closed) return;
    const proxy = this.#byPeer.get(`${peer.address}|${peer.port}`);
    if (proxy && Date.now() < proxy.holdUntil) return;
    if (!proxy && Date.now() < this.#holdUntil) return;
    if (proxy?.socket) {
      proxy.socket.send(data, this.#deliverTo.port, this.#deliverTo.address);
      return;
    }
    if (proxy) {
      if (proxy.pending.length < MAX_PENDING) proxy.pending.push(Buffer.from(data));
      return;
    }
    // A peer address we were not told of (its NAT gave it a new mapping towards the relay): a peer-reflexive
    // candidate in the making (RFC 8445 §7.3.1.3); the checks learn it from the proxy's address.
    const copy = Buffer.from(data);
    void this.#proxy(peer).then((p) => {
      if (!p) return;
      if (p.socket) p.socket.send(copy, this.#deliverTo.port, this.#deliverTo.address);
      else if (p.pending.length < MAX_PENDING) p.pending.push(copy);
    });
  }

  /** Releases the allocation (Refresh 0) and closes the proxies. Does not close the punching socket. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#off();
    for (const p of this.#byPeer.values()) p.socket?.close();
    this.#byPeer.clear();
    this.#byPort.clear();
    await this.client.close().catch(() => {});
  }
}

/** Relay credentials as the rendezvous hands them out (rendezvous/client.ts TurnCredentials has this shape). */
export interface RendezvousRelayCredentials {
  /** The rendezvous host as reached (the relay runs on the same host). */
  host: string;
  port: number;
  /** The relay's TLS port, when the server runs TURN over TLS. */
  tlsPort?: number;
  username: string;
  password: string;
}

export interface RendezvousRelayOptions {
  /** The punching socket (not owned). */
  transport: DatagramTransport;
  credentials: RendezvousRelayCredentials;
  /**
   * How the rendezvous itself is reached: 'tcp' means UDP to the server is blocked, so UDP is not tried at all.
   * Default 'udp'.
   */
  rendezvousVia?: 'udp' | 'tcp';
  /** node:tls options for the TLS attempt (e.g. `ca` for a private CA). */
  tls?: tls.ConnectionOptions;
  /**
   * The rendezvous host as the user gave it. When it is a DNS name, the TLS attempt checks the relay's certificate
   * against it (SNI and RFC 6125 name check), not against the IP address the credentials name.
   */
  serverName?: string;
  signal?: AbortSignal;
  logger?: Logger;
  /** Default RELAY_UDP_ATTEMPT_MS. */
  udpAttemptMs?: number;
}

/**
 * Opens the relay a rendezvous handed credentials for, over the first way that works (each bounded, the whole
 * bounded by `signal`): UDP from the punching socket — unless the rendezvous is reached over TCP, which means UDP
 * is blocked — then TCP to the same port (RFC 8656 §3.1: the relayed address is UDP either way), then TLS when
 * the server offers it. Peers always see an ordinary UDP relayed address.
 */
export async function openRendezvousRelay(options: RendezvousRelayOptions): Promise<RelayPath> {
  const { credentials: c, logger = silentLogger } = options;
  const base = {
    transport: options.transport,
    username: c.username,
    password: c.password,
    logger,
    ...(options.signal ? { signal: options.signal } : {}),
  };
  const attempts: Array<{ via: 'udp' | 'tcp' | 'tls'; open: () => Promise<RelayPath> }> = [];
  if (options.rendezvousVia !== 'tcp') {
    attempts.push({
      via: 'udp',
      open: () =>
        RelayPath.open({
          ...base,
          server: { address: c.host, port: c.port },
          timeoutMs: options.udpAttemptMs ?? RELAY_UDP_ATTEMPT_MS,
        }),
    });
  }
  attempts.push({
    via: 'tcp',
    open: () => RelayPath.open({ ...base, server: { address: c.host, port: c.port }, tcp: true }),
  });
  const serverName = options.serverName && !isIP(options.serverName) ? { servername: options.serverName } : {};
  const tlsOptions = { ...serverName, ...options.tls };
  if (c.tlsPort)
    attempts.push({
      via: 'tls',
      open: () => RelayPath.open({ ...base, server: { address: c.host, port: c.tlsPort! }, tls: tlsOptions }),
    });
  const errors: string[] = [];
  for (const a of attempts) {
    try {
      const path = await a.open();
      logger.debug({ via: a.via, relayed: path.relayed }, 'relay allocated');
      return path;
    } catch (err) {
      if (options.signal?.aborted) throw err;
      errors.push(`${a.via}: ${(err as Error).message}`);
      logger.debug({ via: a.via, err: (err as Error).message }, 'relay: this way failed; trying the next');
    }
  }
  throw new NatpunchError('TURN', `could not reach the relay at ${c.host} (${errors.join('; ')})`);
}

/** "user:password@host[:port][?transport=tcp|tls]" → RelayPathOptions minus transport. */
export function parseRelaySpec(text: string): {
  server: { address: string; port: number };
  username: string;
  password: string;
  tcp?: boolean;
  tls?: boolean;
} {
  const q = text.lastIndexOf('?transport=');
  const spec = q >= 0 ? text.slice(0, q) : text;
  const via = q >= 0 ? text.slice(q + '?transport='.length) : 'udp';
  if (via !== 'udp' && via !== 'tcp' && via !== 'tls')
    throw new NatpunchError('BAD_ARGUMENT', `relay "${text}": transport must be udp, tcp or tls`);
  const at = spec.lastIndexOf('@');
  if (at <= 0) throw new NatpunchError('BAD_ARGUMENT', `relay "${spec}": expected user:password@host[:port]`);
  const cred = spec.slice(0, at);
  const host = spec.slice(at + 1);
  const colon = cred.indexOf(':');
  if (colon <= 0) throw new NatpunchError('BAD_ARGUMENT', `relay "${spec}": expected user:password@host[:port]`);
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(host);
  let address: string;
  // RFC 8656 §3.1 / RFC 8489 §6.2.3: 3478 for UDP and TCP, 5349 for TLS.
  let port = via === 'tls' ? 5349 : 3478;
  if (v6) {
    address = v6[1]!;
    if (v6[2]) port = Number(v6[2]);
  } else {
    const parts = host.split(':');
    address = parts[0]!;
    if (parts.length === 2) port = Number(parts[1]);
  }
  if (!Number.isInteger(port) || port <= 0 || port > 65535)
    throw new NatpunchError('BAD_ARGUMENT', `relay "${spec}": bad port`);
  return {
    server: { address, port },
    username: cred.slice(0, colon),
    password: cred.slice(colon + 1),
    ...(via === 'tcp' ? { tcp: true } : {}),
    ...(via === 'tls' ? { tls: true } : {}),
  };
}
