/**
 * TCP endpoints that share one local port, on top of the native addon (src/net/native.ts).
 *
 * Node 20 cannot do this itself: `net.connect({ localPort })` fails with EADDRINUSE while a listener or another
 * connection holds the port, and `server.listen({ reusePort })` does not exist before Node 22.12. TCP hole punching
 * (RFC 5128 §4, Ford/Srisuresh/Kegel 2005 "P2P-NAT") needs exactly that: one port P that keeps the rendezvous
 * connection, listens, and connects to the peer's candidates at the same time.
 *
 * How it works in Node 20 (verified on Linux): the addon creates the socket with SO_REUSEADDR + SO_REUSEPORT before
 * bind() and starts a non-blocking connect(); a uv_poll_t on Node's own loop (the addon's FdWatcher) reports when the
 * fd becomes writable, SO_ERROR tells success or failure, and only then is the connected fd handed to
 * `new net.Socket({ fd })`, which adopts it as an ordinary connected socket. A listener is a bound reuseport fd given
 * to `server.listen({ fd })`. Nothing ever blocks the event loop.
 */
import net from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { loadAddon, POLL_WRITABLE, type NativeAddon, type NativeAddress } from './native.js';

/** Bound on one connect attempt when the caller gives none. A Linux SYN is retried for ~127 s (tcp_syn_retries=6). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** listen(2) backlog for punching listeners: a handful of peers at most. */
export const DEFAULT_BACKLOG = 16;

export interface Endpoint {
  address: string;
  port: number;
}

function familyOf(address: string): 4 | 6 {
  return address.includes(':') ? 6 : 4;
}

function anyAddress(family: 4 | 6): string {
  return family === 6 ? '::' : '0.0.0.0';
}

/** Turns an addon errno error into the typed error natpunch throws. */
function wrapErrno(err: unknown, what: string): NatpunchError {
  if (err instanceof NatpunchError) return err;
  const code = (err as { code?: string }).code;
  const natCode =
    code === 'EADDRINUSE' ? 'ADDRESS_IN_USE' : code === 'EPERM' || code === 'EACCES' ? 'NOT_ROOT' : 'TCP_CONNECT';
  return new NatpunchError(natCode, `${what}: ${(err as Error).message}`, { cause: err, details: { errno: code } });
}

/** Creates a reuseport TCP socket fd bound to `address:port` (port 0 = ephemeral). The caller owns the fd. */
export function bindReusePort(address: string, port: number, addon: NativeAddon = loadAddon()): number {
  const fd = addon.tcpSocket(familyOf(address));
  try {
    addon.bind(fd, address, port);
  } catch (err) {
    addon.close(fd);
    throw wrapErrno(err, `bind ${address}:${port}`);
  }
  return fd;
}

export interface TcpListenOptions {
  /** Local address; default 0.0.0.0. */
  address?: string;
  /** Local port; 0 picks one. Other reuseport sockets may share it. */
  port: number;
  backlog?: number;
  addon?: NativeAddon;
}

/** A net.Server listening on a port that reuseport sockets (connectFrom) may share. */
export async function listenReusePort(options: TcpListenOptions): Promise<net.Server> {
  const addon = options.addon ?? loadAddon();
  const fd = bindReusePort(options.address ?? '0.0.0.0', options.port, addon);
  const server = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd, backlog: options.backlog ?? DEFAULT_BACKLOG }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    server.close();
    try {
      addon.close(fd);
    } catch {
      // already closed by the server
    }
    throw wrapErrno(err, `listen on port ${options.port}`);
  }
  return server;
}

export interface ConnectFromOptions {
  /** Remote endpoint (numeric address). */
  address: string;
  port: number;
  /** Local address to bind; default the wildcard of the remote's family. */
  localAddress?: string;
  /** Local port to connect from; 0 (default) picks one. May be held by a listener or other connections. */
  localPort?: number;
  /** IP TTL for the SYN (STUNT: a low TTL opens our NAT and dies before the peer's). */
  ttl?: number;
  /** TTL to set right after the SYN left (so the retransmitted SYN / SYN-ACK of a simultaneous open travels far). */
  ttlAfterSyn?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
  addon?: NativeAddon;
}

/** One outgoing connection attempt in flight; `cancel()` closes it (safe after completion: then it does nothing). */
export interface PendingConnect {
  readonly fd: number;
  readonly local: NativeAddress;
  readonly done: Promise<net.Socket>;
  cancel(reason?: unknown): void;
}

/**
 * Starts a non-blocking connect from a reuseport socket (throws at once when the socket cannot even be bound, or
 * ADDON_UNAVAILABLE). `done` resolves with a connected net.Socket (which owns
 * the fd from then on) or rejects with NatpunchError: TCP_CONNECT (details.errno: ECONNREFUSED, EHOSTUNREACH,
 * ETIMEDOUT, ...), TIMEOUT, or ABORTED.
 */
export function startConnect(options: ConnectFromOptions): PendingConnect {
  const addon = options.addon ?? loadAddon();
  const family = familyOf(options.address);
  const fd = bindReusePort(options.localAddress ?? anyAddress(family), options.localPort ?? 0, addon);
  let settled = false;
  let watcher: ReturnType<typeof makeWatcher> | undefined;
  // eslint-disable-next-line prefer-const -- assigned once below, but cleanup() may run before that line
  let timer: NodeJS.Timeout | undefined;
  let resolveDone!: (s: net.Socket) => void;
  let rejectDone!: (e: unknown) => void;
  const done = new Promise<net.Socket>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  const target = `${options.address}:${options.port}`;

  const cleanup = () => {
    settled = true;
    watcher?.close();
    if (timer) clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  };
  const fail = (err: NatpunchError) => {
    if (settled) return;
    cleanup();
    try {
      addon.close(fd);
    } catch {
      // nothing left to close
    }
    rejectDone(err);
  };
  const succeed = () => {
    if (settled) return;
    cleanup();
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd, readable: true, writable: true });
    } catch (err) {
      try {
        addon.close(fd);
      } catch {
        // nothing left to close
      }
      rejectDone(wrapErrno(err, `adopt connection to ${target}`));
      return;
    }
    resolveDone(socket);
  };
  const onAbort = () =>
    fail(new NatpunchError('ABORTED', `connect to ${target} aborted`, { cause: options.signal?.reason }));

  const makeWatcher = () =>
    new addon.FdWatcher(fd, (status) => {
      if (settled) return;
      let code: string | null;
      try {
        // libuv reports POLLERR as status UV_EBADF; SO_ERROR holds the real reason (ECONNREFUSED, EHOSTUNREACH...).
        code = addon.socketError(fd) ?? (status < 0 ? 'EIO' : null);
      } catch (err) {
        code = (err as { code?: string }).code ?? 'EIO';
      }
      if (code)
        fail(new NatpunchError('TCP_CONNECT', `connect to ${target} failed: ${code}`, { details: { errno: code } }));
      else succeed();
    });

  let local: NativeAddress;
  try {
    if (options.ttl !== undefined) addon.setTtl(fd, options.ttl);
    local = addon.getSockName(fd);
    const immediate = addon.connect(fd, options.address, options.port);
    if (options.ttlAfterSyn !== undefined) addon.setTtl(fd, options.ttlAfterSyn);
    local = addon.getSockName(fd);
    if (immediate) {
      queueMicrotask(succeed);
    } else {
      watcher = makeWatcher();
      watcher.start(POLL_WRITABLE);
    }
  } catch (err) {
    settled = true;
    try {
      addon.close(fd);
    } catch {
      // nothing left to close
    }
    const wrapped = wrapErrno(err, `connect to ${target}`);
    return { fd, local: { address: '', port: 0, family: 'unknown' }, done: Promise.reject(wrapped), cancel() {} };
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  timer = setTimeout(
    () => fail(new NatpunchError('TIMEOUT', `connect to ${target}: no answer within ${timeoutMs} ms`)),
    timeoutMs,
  );
  if (options.signal?.aborted) queueMicrotask(onAbort);
  else options.signal?.addEventListener('abort', onAbort, { once: true });

  return {
    fd,
    local,
    done,
    cancel: (reason?: unknown) =>
      fail(new NatpunchError('ABORTED', `connect to ${target} cancelled`, { cause: reason })),
  };
}

/**
 * Connects to `address:port` from `localPort`, even when that port is held by a listener or other connections
 * (the rendezvous connection of P2P-NAT is made this way so its port can be reused for punching).
 */
export async function connectFrom(options: ConnectFromOptions): Promise<net.Socket> {
  return startConnect(options).done;
}

/** The OS file descriptor of a connected net.Socket or listening net.Server (Linux; -1 when it has none). */
export function socketFd(s: net.Socket | net.Server): number {
  const handle = (s as unknown as { _handle?: { fd?: number } | null })._handle;
  return typeof handle?.fd === 'number' ? handle.fd : -1;
}

function fdOf(target: net.Socket | net.Server | number): number {
  const fd = typeof target === 'number' ? target : socketFd(target);
  if (fd < 0) throw new NatpunchError('SOCKET_CLOSED', 'the socket has no file descriptor (closed?)');
  return fd;
}

/** Sets IP_TTL (IPv6: unicast hops) on a socket; affects the next packet it sends. */
export function setTtl(target: net.Socket | net.Server | number, ttl: number, addon: NativeAddon = loadAddon()): void {
  try {
    addon.setTtl(fdOf(target), ttl);
  } catch (err) {
    throw err instanceof RangeError ? new NatpunchError('BAD_ARGUMENT', err.message) : wrapErrno(err, 'set TTL');
  }
}

/** Reads IP_TTL (IPv6: unicast hops) of a socket. */
export function getTtl(target: net.Socket | net.Server | number, addon: NativeAddon = loadAddon()): number {
  try {
    return addon.getTtl(fdOf(target));
  } catch (err) {
    throw wrapErrno(err, 'get TTL');
  }
}
