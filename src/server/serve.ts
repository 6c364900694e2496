/**
 * `serve`: composes the natpunch services on one port (default 3478, RFC 8489 §6.2) over UDP and TCP.
 * It creates the sockets; services attach to them. UDP datagrams go to every attached service, each of which looks
 * at the first byte (RFC 7983 style, src/net/demux.ts) and ignores what is not its own. TCP connections are
 * dispatched once, by their first byte, to the handler registered for it (STUN 0..3, the rendezvous 0xF0; TURN adds
 * its own with `registerTcpHandler`).
 */
import net from 'node:net';
import { attachRendezvous, type RendezvousServer, type RendezvousServerOptions } from '../rendezvous/server.js';
import { relayAddressFor, startRelay, type RelayService, type RelayServiceOptions } from '../relay/service.js';
import { turnRegistry } from '../wire/turn.js';
import { StunServer, type StunServerOptions } from '../stun/server.js';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { DEFAULT_STUN_PORT, normalizeAddress } from '../wire/stun/index.js';
import type { DatagramTransport } from '../net/datagram.js';
import { BatchedUdpSocket, batchedUnavailableReason, type SocketBufferSizes } from '../net/batched.js';
import { ServerUdpSocket } from './udp.js';
import { loadUdx, UdxServerSocket } from './udx.js';

/** A UDP socket owned by serve: a DatagramTransport it can close. */
export type ServeSocket = DatagramTransport & { close(): void };
type BindUdp = (
  address: string,
  port: number,
  options: { bufferBytes: number; ipv6Only: boolean; reusePort: boolean },
) => Promise<ServeSocket>;
/** How serve's UDP sockets read and write: see ServeConfig.udp. */
export type UdpImplementation = 'batched' | 'udx' | 'dgram';

/** Where `serve` listens when no address is given: every IPv4 address, and every IPv6 address if the host has IPv6. */
export const DEFAULT_SERVE_ADDRESSES = ['0.0.0.0', '::'] as const;
/** A TCP connection must send its first bytes within this time or it is closed. */
export const TCP_FIRST_BYTE_TIMEOUT_MS = 10_000;
/** Open TCP connections across all services; more are refused (file descriptors are finite). */
export const SERVE_MAX_TCP_CONNECTIONS = 4096;
/**
 * Kernel socket buffers requested for server UDP sockets (SO_RCVBUF/SO_SNDBUF). A small datagram costs about 1 KiB of
 * buffer accounting (skb truesize), so 4 MiB holds ~4,000 queued requests: several milliseconds of a burst at the
 * rates one core serves, enough to ride out a garbage-collection pause without loss. The batched path asks with
 * SO_RCVBUFFORCE (root) so net.core.rmem_max does not cap it; what the kernel granted is logged at start.
 */
export const SERVER_UDP_BUFFER_BYTES = 4 * 1024 * 1024;
/** Attempts at finding a port free on every address when port 0 (any) is asked for. */
const PORT_ATTEMPTS = 20;

export interface ServeConfig {
  /** Port for UDP and TCP on every address. Default 3478; 0 picks a free one (tests). */
  port?: number;
  /** Addresses to listen on. Default 0.0.0.0 and :: (the latter skipped when the host has no IPv6). */
  addresses?: string[];
  /** RFC 5780 mode: a second IP address of this host. Needs exactly one `addresses` entry of the same family. */
  altAddress?: string;
  /** RFC 5780 mode: the alternate port. Default port + 1 (a free one when port is 0). */
  altPort?: number;
  /** Without RFC 5780 mode: also answer STUN on port + 1 (the clients' NAT measurement). Default true. */
  measurePort?: boolean;
  /** Listen on TCP too. Default true. */
  tcp?: boolean;
  /**
   * UDP socket implementation: 'batched' (natpunch's addon: recvmmsg/sendmmsg, one syscall per batch), 'udx'
   * (libudx through udx-native), 'dgram' (node:dgram), or 'auto' (batched when the addon is built and
   * NATPUNCH_BATCHED_IO is not 0, else udx when its native module loads, else dgram). Default 'auto'.
   */
  udp?: 'auto' | UdpImplementation;
  /**
   * SO_REUSEPORT on the UDP sockets (batched only), so `serve --workers N` can bind the port N times. Default false.
   */
  reusePort?: boolean;
  logger?: Logger;
  stun?: Omit<StunServerOptions, 'logger'>;
  /** The rendezvous server on the same sockets (0xF0 datagrams and TCP connections). Default on; false disables. */
  rendezvous?: false | Omit<RendezvousServerOptions, 'logger'>;
  /**
   * The TURN relay on the same sockets (src/relay/service.ts). Default on, in peer-relay mode: registered peers get
   * scoped credentials that relay only to the peers they were introduced to. `turn.credentials` adds the full TURN
   * service for configured users. false disables the relay.
   */
  relay?: false | RelayServiceOptions;
}

export interface Endpoint {
  address: string;
  port: number;
}

export type TcpHandler = (socket: net.Socket, head: Buffer) => void;

export interface ServerHandle {
  readonly stun: StunServer;
  /** Absent when started with `rendezvous: false`. */
  readonly rendezvous?: RendezvousServer;
  /** Absent when started with `relay: false`. */
  readonly relay?: RelayService;
  readonly udp: Endpoint[];
  readonly tcp: Endpoint[];
  /** Present in RFC 5780 mode. */
  readonly rfc5780?: { primary: Endpoint; altPort: Endpoint; altIp: Endpoint; altBoth: Endpoint };
  /** The UDP sockets, for services that attach later (rendezvous, TURN). */
  readonly sockets: ServeSocket[];
  /** Which UDP implementation is in use. */
  readonly udpImplementation: UdpImplementation;
  /** SO_RCVBUF/SO_SNDBUF the kernel granted per UDP socket (batched path only; the others ask and do not report). */
  readonly socketBuffers?: SocketBufferSizes;
  /**
   * Routes TCP connections whose first byte satisfies `match` to `handler`. Later registrations win, so TURN can
   * take over the STUN range (0..3) when it joins. Returns a function that unregisters.
   */
  registerTcpHandler(match: (firstByte: number) => boolean, handler: TcpHandler): () => void;
  close(): Promise<void>;
}

function endpoint(address: string, port: number): Endpoint {
  return { address: normalizeAddress(address) || address, port };
}

async function ipv6Available(): Promise<boolean> {
  try {
    const s = await ServerUdpSocket.bind('::1', 0);
    s.close();
    return true;
  } catch {
    return false;
  }
}

function listenTcp(address: string, port: number, ipv6Only: boolean): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer({ noDelay: true });
    srv.once('error', reject);
    srv.listen({ host: address, port, ipv6Only, exclusive: true }, () => {
      srv.off('error', reject);
      resolve(srv);
    });
  });
}

function isInUse(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'EADDRINUSE';
}

/** Binds UDP (and TCP) on `port` at every address; with port 0, finds one port free on all of them. */
async function bindAll(
  bindUdp: BindUdp,
  addresses: string[],
  port: number,
  tcp: boolean,
  reusePort = false,
): Promise<{ udp: ServeSocket[]; tcp: net.Server[]; port: number }> {
  for (let attempt = 0; attempt < (port === 0 ? PORT_ATTEMPTS : 1); attempt++) {
    const udp: ServeSocket[] = [];
    const tcps: net.Server[] = [];
    let chosen = port;
    // '::' is IPv6-only when an IPv4 address is served by its own socket, dual-stack otherwise.
    const hasV4 = addresses.some((a) => !a.includes(':'));
    try {
      for (const address of addresses) {
        const ipv6Only = address.includes(':') && hasV4;
        const s = await bindUdp(address, chosen, { bufferBytes: SERVER_UDP_BUFFER_BYTES, ipv6Only, reusePort });
        udp.push(s);
        chosen = s.address().port;
        if (tcp) tcps.push(await listenTcp(address, chosen, ipv6Only));
      }
      return { udp, tcp: tcps, port: chosen };
    } catch (err) {
      udp.forEach((s) => s.close());
      tcps.forEach((s) => s.close());
      if (port === 0 && isInUse(err)) continue;
      throw err;
    }
  }
  throw new NatpunchError('BAD_ARGUMENT', `could not find a free port on ${addresses.join(', ')}`);
}

function bindError(err: unknown, what: string): NatpunchError {
  const code = (err as NodeJS.ErrnoException)?.code;
  const hint =
    code === 'EADDRINUSE'
      ? 'the port is in use (another STUN/TURN server?); pick another with --port'
      : code === 'EADDRNOTAVAIL'
        ? 'that address is not configured on this host'
        : code === 'EACCES'
          ? 'permission denied (ports below 1024 need root)'
          : ((err as Error)?.message ?? String(err));
  return new NatpunchError('BAD_ARGUMENT', `cannot listen on ${what}: ${hint}`, { cause: err });
}

export async function startServer(config: ServeConfig = {}): Promise<ServerHandle> {
  const log = config.logger ?? silentLogger;
  const port = config.port ?? DEFAULT_STUN_PORT;
  const useTcp = config.tcp ?? true;
  let addresses = config.addresses?.length ? [...config.addresses] : [...DEFAULT_SERVE_ADDRESSES];
  for (const a of [...addresses, ...(config.altAddress ? [config.altAddress] : [])]) {
    if (!net.isIP(a)) throw new NatpunchError('BAD_ARGUMENT', `not an IP address: ${a}`);
  }
  if (!config.addresses?.length && !(await ipv6Available())) {
    addresses = addresses.filter((a) => !a.includes(':'));
    log.info('no IPv6 on this host; listening on IPv4 only');
  }

  const wanted = config.udp ?? 'auto';
  const noBatching = wanted === 'auto' || wanted === 'batched' ? batchedUnavailableReason() : 'not asked for';
  if (wanted === 'batched' && noBatching)
    throw new NatpunchError('ADDON_UNAVAILABLE', `batched UDP I/O unavailable: ${noBatching}`);
  if (config.reusePort && (noBatching || (wanted !== 'auto' && wanted !== 'batched'))) {
    throw new NatpunchError(
      'ADDON_UNAVAILABLE',
      `several workers need SO_REUSEPORT from the native addon: ${noBatching}`,
    );
  }
  const batched = !noBatching;
  const udx = batched || wanted === 'dgram' ? undefined : loadUdx();
  if (wanted === 'udx' && !udx)
    throw new NatpunchError('ADDON_UNAVAILABLE', 'udx-native could not be loaded; use udp: "dgram"');
  const udpImplementation: UdpImplementation = batched ? 'batched' : udx ? 'udx' : 'dgram';
  if (wanted === 'auto' && !batched) log.info({ reason: noBatching, udpImplementation }, 'serve: batched UDP I/O off');
  const bindUdp: BindUdp = batched
    ? async (address, port, options) => BatchedUdpSocket.bind(address, port, options)
    : udx
      ? async (address, port, options) => UdxServerSocket.bind(udx, address, port, options)
      : (address, port, options) => ServerUdpSocket.bind(address, port, options);
  const reusePort = config.reusePort ?? false;

  // TURN's attributes are known to the STUN server's 420 check when TURN shares the port.
  const stun = new StunServer({
    ...(config.relay === false ? {} : { registry: turnRegistry }),
    ...config.stun,
    logger: log,
  });
  const sockets: ServeSocket[] = [];
  /** STUN-only sockets on port + 1 (config.measurePort). */
  const measureSockets: ServeSocket[] = [];
  const tcpServers: net.Server[] = [];
  const handlers: Array<{ match: (b: number) => boolean; handler: TcpHandler }> = [];
  const allTcp = new Set<net.Socket>();
  let rfc5780: ServerHandle['rfc5780'];

  const cleanup = () => {
    stun.close();
    sockets.forEach((s) => s.close());
    measureSockets.forEach((s) => s.close());
    tcpServers.forEach((s) => s.close());
  };

  try {
    if (config.altAddress) {
      // RFC 5780 §4.2 / §6: two addresses × two ports.
      if (addresses.length !== 1)
        throw new NatpunchError('BAD_ARGUMENT', '--alt-address needs exactly one --address (the primary)');
      const a = addresses[0]!;
      const b = config.altAddress;
      if (a.includes(':') !== b.includes(':'))
        throw new NatpunchError('BAD_ARGUMENT', '--address and --alt-address must be the same IP family');
      if (net.isIP(a) && (a === '0.0.0.0' || a === '::'))
        throw new NatpunchError('BAD_ARGUMENT', 'RFC 5780 mode needs a specific --address, not a wildcard');
      let done = false;
      for (let attempt = 0; attempt < (port === 0 || config.altPort === 0 ? PORT_ATTEMPTS : 1) && !done; attempt++) {
        let primary: Awaited<ReturnType<typeof bindAll>> | undefined;
        let alt: Awaited<ReturnType<typeof bindAll>> | undefined;
        try {
          primary = await bindAll(bindUdp, [a, b], port, useTcp);
          const p2 = config.altPort ?? (port === 0 ? 0 : port + 1);
          alt = await bindAll(bindUdp, [a, b], p2, false);
          if (alt.port === primary.port) throw Object.assign(new Error('same port'), { code: 'EADDRINUSE' });
          sockets.push(...primary.udp, ...alt.udp);
          tcpServers.push(...primary.tcp);
          stun.attachRfc5780({
            primary: primary.udp[0]!,
            altPort: alt.udp[0]!,
            altIp: primary.udp[1]!,
            altBoth: alt.udp[1]!,
          });
          rfc5780 = {
            primary: endpoint(a, primary.port),
            altPort: endpoint(a, alt.port),
            altIp: endpoint(b, primary.port),
            altBoth: endpoint(b, alt.port),
          };
          done = true;
        } catch (err) {
          primary?.udp.forEach((s) => s.close());
          primary?.tcp.forEach((s) => s.close());
          alt?.udp.forEach((s) => s.close());
          if ((port === 0 || config.altPort === 0) && isInUse(err)) continue;
          throw err instanceof NatpunchError ? err : bindError(err, `${a} and ${b}`);
        }
      }
      if (!done) throw new NatpunchError('BAD_ARGUMENT', 'could not find free ports for RFC 5780 mode');
    } else {
      try {
        const bound = await bindAll(bindUdp, addresses, port, useTcp, reusePort);
        sockets.push(...bound.udp);
        tcpServers.push(...bound.tcp);
      } catch (err) {
        throw err instanceof NatpunchError ? err : bindError(err, `${addresses.join(', ')} port ${port}`);
      }
      for (const s of sockets) stun.attachUdp(s);
      // A plain STUN answer on port + 1 too (best effort): with the main port it gives clients two destinations on
      // this host, so they can tell whether their NAT maps per destination (RFC 4787 §4.1) and predict its ports —
      // what the hard-NAT punch needs (src/traversal/predict.ts measureNat). STUN only: no rendezvous, no relay.
      if (config.measurePort !== false) {
        const bound = sockets[0]?.address().port;
        if (bound !== undefined && bound < 65535) {
          for (const a of addresses) {
            try {
              const m = await bindUdp(a, bound + 1, {
                bufferBytes: 256 * 1024,
                ipv6Only: a.includes(':') && addresses.some((x) => !x.includes(':')),
                reusePort,
              });
              measureSockets.push(m);
              stun.attachUdp(m);
            } catch (err) {
              log.info(
                { address: a, port: bound + 1, err: (err as Error).message },
                'serve: no STUN on port + 1 (NAT measurement against this server is unavailable)',
              );
            }
          }
        }
      }
    }
  } catch (err) {
    cleanup();
    throw err;
  }

  // STUN owns the STUN range on TCP (RFC 8489 §6.2.2); the rendezvous (0xF0) and TURN register theirs later.
  handlers.push({ match: (b) => b <= 3, handler: (sock, head) => stun.handleTcp(sock, head) });
  const registerTcpHandler = (match: (firstByte: number) => boolean, handler: TcpHandler): (() => void) => {
    const entry = { match, handler };
    handlers.push(entry);
    return () => {
      const i = handlers.indexOf(entry);
      if (i >= 0) handlers.splice(i, 1);
    };
  };
  // The rendezvous shares every UDP socket (it reads only 0xF0 datagrams) and takes TCP connections starting 0xF0.
  const rendezvous =
    config.rendezvous === false
      ? undefined
      : attachRendezvous({ sockets, registerTcpHandler }, { ...config.rendezvous, logger: log });

  let relay: RelayService | undefined;
  if (config.relay !== false) {
    const options = config.relay ?? {};
    try {
      relay = startRelay(
        {
          stun,
          sockets,
          registerTcpHandler,
          udp: sockets.map((s) => s.address()),
          ...(rendezvous ? { rendezvous: rendezvous.server } : {}),
        },
        {
          ...options,
          turn: { ...options.turn, relayAddress: options.turn?.relayAddress ?? relayAddressFor(addresses) },
        },
        log,
      );
    } catch (err) {
      rendezvous?.close();
      cleanup();
      throw err;
    }
  }

  for (const srv of tcpServers) {
    srv.on('connection', (sock) => {
      sock.on('error', () => {});
      if (allTcp.size >= SERVE_MAX_TCP_CONNECTIONS) {
        sock.destroy();
        return;
      }
      allTcp.add(sock);
      sock.once('close', () => allTcp.delete(sock));
      sock.setTimeout(TCP_FIRST_BYTE_TIMEOUT_MS, () => sock.destroy());
      sock.once('data', (head: Buffer) => {
        sock.setTimeout(0);
        const first = head[0]!;
        for (let i = handlers.length - 1; i >= 0; i--) {
          if (handlers[i]!.match(first)) {
            // The handler must attach its 'data' listener synchronously (or pause the socket) to see later chunks.
            handlers[i]!.handler(sock, head);
            return;
          }
        }
        log.debug({ first, from: sock.remoteAddress }, 'serve: TCP connection with unknown first byte closed');
        sock.destroy();
      });
    });
  }

  const udp = sockets.map((s) => endpoint(s.address().address, s.address().port));
  const tcp = tcpServers.map((s) => {
    const a = s.address() as net.AddressInfo;
    return endpoint(a.address, a.port);
  });
  const socketBuffers = sockets[0] instanceof BatchedUdpSocket ? sockets[0].buffers : undefined;
  log.info(
    {
      udp,
      tcp,
      rfc5780: rfc5780 ?? null,
      rendezvous: Boolean(rendezvous),
      relay: relay ? { peerRelay: Boolean(relay.peerRelay), relayAddress: relay.turn.relayAddress } : null,
      udpImplementation,
      socketBuffers: socketBuffers ?? null,
    },
    'serve: listening',
  );

  let closing: Promise<void> | undefined;
  return {
    stun,
    ...(rendezvous ? { rendezvous: rendezvous.server } : {}),
    ...(relay ? { relay } : {}),
    udp,
    tcp,
    ...(rfc5780 ? { rfc5780 } : {}),
    sockets,
    registerTcpHandler,
    udpImplementation,
    ...(socketBuffers ? { socketBuffers } : {}),
    close() {
      closing ??= (async () => {
        relay?.close();
        rendezvous?.close();
        stun.close();
        for (const s of allTcp) s.destroy();
        await Promise.all(tcpServers.map((s) => new Promise<void>((r) => s.close(() => r()))));
        sockets.forEach((s) => s.close());
        measureSockets.forEach((s) => s.close());
        await Promise.all(
          [...sockets, ...measureSockets].map((s) => (s instanceof UdxServerSocket ? s.whenClosed() : undefined)),
        );
        log.info({ counters: { ...stun.counters }, rendezvous: rendezvous?.server.stats() ?? null }, 'serve: stopped');
      })();
      return closing;
    },
  };
}
