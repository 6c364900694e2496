/**
 * Tunnels over natpunch sessions: `expose` (the exit: forwards streams to exposed ports and allowed destinations),
 * `forward` (local TCP port → exposed port on the peer) and `socks` (a SOCKS5 front exiting on the peer).
 */
import { connect, listen, type ConnectOptions, type Listener, type ListenOptions } from '../natpunch.js';
import type { Allow, Session } from '../session/session.js';
import { NatpunchError } from '../util/errors.js';
import { TunnelExit, type TunnelExitOptions } from './exit.js';
import { PeerLink } from './link.js';

export { TunnelExit, DEFAULT_TARGET_CONNECT_TIMEOUT_MS } from './exit.js';
export type { ExposeTarget, TunnelExitOptions, TunnelEvent } from './exit.js';
export { PeerLink, openTunnel, DEFAULT_SESSION_WAIT_MS, DEFAULT_REPLY_TIMEOUT_MS, RECONNECT_MIN_MS, RECONNECT_MAX_MS } from './link.js';
export type { LinkEvent, PeerLinkOptions } from './link.js';
export { TcpForwarder, LocalListener } from './forward.js';
export type { ConnectionEvent, LocalListenOptions } from './forward.js';
export { SocksServer } from './socks.js';
export type { SocksServerOptions } from './socks.js';
export { DestinationPolicy } from './policy.js';
export type { DestinationDecision, Resolver } from './policy.js';
export { readMessage, joinStreams, splice, abortStream, DEFAULT_HEADER_TIMEOUT_MS } from './streams.js';
export * as socks5 from './socks5.js';
export { encodeTunnelRequest, decodeTunnelRequest, encodeTunnelReply, decodeTunnelReply, TUNNEL_VERSION } from './wire.js';
export type { TunnelRequest, TunnelReply } from './wire.js';

export interface ExposeHandle {
  listener: Listener;
  exit: TunnelExit;
  close(): Promise<void>;
}

/**
 * Listens for sessions (rendezvous name: ListenOptions) and serves tunnels on each one. `allow` is required: who may
 * reach the exposed services is never left to a default (`allow: () => true` admits any key, on purpose).
 */
export async function expose(options: ListenOptions & { allow: Allow; exit: TunnelExitOptions }): Promise<ExposeHandle> {
  if (options.allow === undefined) throw new NatpunchError('BAD_ARGUMENT', 'expose needs `allow`: the keys that may connect (or `() => true` for any key)');
  const exit = new TunnelExit(options.exit);
  const listener = await listen(options);
  const onSession = (s: Session) => exit.attach(s);
  listener.on('session', onSession);
  for (const s of listener.sessions) exit.attach(s);
  return {
    listener,
    exit,
    async close() {
      listener.off('session', onSession);
      exit.close();
      await listener.close();
    },
  };
}

/** A PeerLink whose sessions come from natpunch connect() (`to` through `rendezvous`, or direct mode). */
export function linkTo(options: Omit<ConnectOptions, 'signal'> & { waitMs?: number }): PeerLink {
  const { waitMs, ...connectOptions } = options;
  return new PeerLink({
    connect: (signal) => connect({ ...connectOptions, signal }),
    ...(waitMs !== undefined ? { waitMs } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
}
