/**
 * Tunnels over natpunch sessions: `expose` (the exit: forwards streams to exposed ports and allowed destinations),
 * `forward` (local TCP port → exposed port on the peer) and `socks` (a SOCKS5 front exiting on the peer).
 */
import { connect, listen, type ConnectOptions, type Listener, type ListenOptions } from '../natpunch.js';
import type { Allow, Session } from '../session/session.js';
import { NatpunchError } from '../util/errors.js';
import { TunnelExit, type TunnelExitOptions } from './exit.js';
import { PeerLink } from './link.js';
import { createEndpoint, type Endpoint } from '../endpoint/endpoint.js';

export { TunnelExit, DEFAULT_TARGET_CONNECT_TIMEOUT_MS } from './exit.js';
export type { ExposeTarget, TunnelExitOptions, TunnelEvent } from './exit.js';
export {
  PeerLink,
  openTunnel,
  DEFAULT_SESSION_WAIT_MS,
  DEFAULT_REPLY_TIMEOUT_MS,
  RECONNECT_MIN_MS,
  RECONNECT_MAX_MS,
} from './link.js';
export type { LinkEvent, PeerLinkOptions } from './link.js';
export { TcpForwarder, LocalListener } from './forward.js';
export type { ConnectionEvent, LocalListenOptions } from './forward.js';
export { SocksServer } from './socks.js';
export type { SocksServerOptions } from './socks.js';
export { DestinationPolicy } from './policy.js';
export type { DestinationDecision, Resolver } from './policy.js';
export { readMessage, joinStreams, splice, abortStream, DEFAULT_HEADER_TIMEOUT_MS } from './streams.js';
export * as socks5 from './socks5.js';
export {
  encodeTunnelRequest,
  decodeTunnelRequest,
  encodeTunnelReply,
  decodeTunnelReply,
  TUNNEL_VERSION,
} from './wire.js';
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
export async function expose(
  options: ListenOptions & { allow: Allow; exit: TunnelExitOptions },
): Promise<ExposeHandle> {
  if (options.allow === undefined)
    throw new NatpunchError(
      'BAD_ARGUMENT',
      'expose needs `allow`: the keys that may connect (or `() => true` for any key)',
    );
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

/**
 * A PeerLink to one peer (`forward`, `socks`): ONE session at a time carries every tunnelled connection, and every
 * session it re-establishes runs on the same long-lived Endpoint (one socket, registration, NAT view, relay
 * allocation and mapping, created with the first session and closed with the link). Direct mode (`peer`) and ICMP
 * without a rendezvous use one-shot connect() instead.
 */
export function linkTo(options: Omit<ConnectOptions, 'signal'> & { waitMs?: number }): PeerLink {
  const { waitMs, ...connectOptions } = options;
  const { to, peer, timeoutMs, earlyData, knownPeers, connectionId: _id, icmp, ...endpointOptions } = connectOptions;
  const oneShot = peer !== undefined || icmp !== undefined || !connectOptions.rendezvous || to === undefined;
  let ep: Promise<Endpoint> | null = null;
  const endpoint = (): Promise<Endpoint> => {
    if (!ep) {
      const register = endpointOptions.relay !== false && (endpointOptions.relay ?? 'auto') === 'auto';
      ep = createEndpoint({ ...endpointOptions, accept: false, register });
      ep.catch(() => (ep = null));
    }
    return ep;
  };
  return new PeerLink({
    connect: async (signal) => {
      if (oneShot) return connect({ ...connectOptions, signal });
      const e = await endpoint();
      return e.connect(to!, {
        signal,
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        ...(earlyData ? { earlyData } : {}),
        ...(knownPeers ? { knownPeers } : {}),
      });
    },
    release: async () => {
      const e = ep;
      ep = null;
      await (await e?.catch(() => null))?.close();
    },
    ...(waitMs !== undefined ? { waitMs } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
}
