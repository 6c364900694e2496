/**
 * connect() and listen(): one-shot Endpoints (src/endpoint/endpoint.ts). Everything about choosing and racing the
 * techniques lives in src/traversal/planner.ts and race.ts; the socket, registration, NAT view, relay and mapping in
 * src/endpoint/local.ts. These wrappers only decide what a one-shot caller wants and hand the session over.
 */
import { silentLogger, type Logger } from './util/log.js';
import { NatpunchError, isNatpunchError } from './util/errors.js';
import { timeoutSignal } from './util/abort.js';
import { peerTarget, type PeerSpec } from './identity/verify.js';
import type { PeerPins } from './identity/known-peers.js';
import type { Session } from './session/session.js';
import { createEndpoint, Endpoint, type EndpointConnectOptions, type EndpointOptions } from './endpoint/endpoint.js';
import { rendezvousServer } from './endpoint/local.js';
import { connectWithoutRendezvous } from './traversal/no-rendezvous.js';
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  type ConnectOptions,
  type ListenOptions,
  type Progress,
} from './endpoint/types.js';

export { Endpoint as Listener, createEndpoint, keepAliveFor } from './endpoint/endpoint.js';
export type { EndpointOptions, EndpointConnectOptions, EndpointEvents } from './endpoint/endpoint.js';
export { defaultCandidates, DEFAULT_PORT_MAPPING_TIMEOUT_MS, AUTO_RELAY_WAIT_MS } from './endpoint/local.js';
export {
  upgradeCandidates,
  RELAY_UPGRADE_INTERVAL_MS,
  RELAY_UPGRADE_ROUND_MS,
  RELAY_UPGRADE_MAX_MS,
} from './endpoint/upgrade.js';
export { PORT_MAPPING_ENV, portMappingDefault } from './endpoint/defaults.js';
export { DEFAULT_RENDEZVOUS_PORT, DEFAULT_CONNECT_TIMEOUT_MS, MAX_CONCURRENT_ATTEMPTS } from './endpoint/types.js';
export type {
  ConnectOptions,
  ListenOptions,
  Progress,
  RendezvousLike,
  ConnectOfferLike,
  RendezvousFactory,
  TransportMode,
  RelayOption,
} from './endpoint/types.js';
export { TCP_GRACE_MS as AUTO_UDP_GRACE_MS, RELAY_HOLD_MS as DEFAULT_RELAY_HOLD_MS } from './traversal/planner.js';

/**
 * Connects to a peer and resolves with an authenticated session: through a rendezvous (`to` + `rendezvous`), or in
 * direct mode (`peer`: the caller did the signalling), or by ICMP (`icmp`, when the rendezvous cannot be reached).
 * The session owns its one-shot Endpoint: closing the session releases the socket, relay and mapping.
 */
export async function connect(options: ConnectOptions): Promise<Session> {
  const logger = options.logger ?? silentLogger;
  const offline = !options.peer && !options.rendezvous ? await withoutRendezvous(options, logger) : null;
  if (offline) return offline;
  if (!options.peer && (options.to === undefined || !options.rendezvous)) {
    throw new NatpunchError('BAD_ARGUMENT', 'connect needs `to` and `rendezvous`, or `peer` (direct mode), or `icmp`');
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const { signal, dispose } = timeoutSignal(timeoutMs, options.signal);
  let introduced = false;
  const onProgress = (p: Progress) => ((introduced ||= p.phase === 'offer'), options.onProgress?.(p));
  let ep: Endpoint | null = null;
  try {
    ep = await createEndpoint(oneShotEndpointOptions(options, onProgress, signal));
    const session = await ep.connect(options.peer?.publicKey ?? options.to!, oneShotConnectOptions(options, signal));
    const owner = ep;
    session.once('close', () => void owner.close());
    owner.releaseRelayOnceDirect(session);
    return session;
  } catch (err) {
    await ep?.close();
    // No introduction came: the planner decides what still runs without a rendezvous (ICMP, when allowed).
    const offline =
      !options.peer && !introduced && !options.signal?.aborted ? await withoutRendezvous(options, logger) : null;
    if (offline) return offline;
    throw timeoutOr(err, signal, timeoutMs);
  } finally {
    dispose();
  }
}

/** The one-shot Endpoint of connect(): it accepts no introductions, and registers only to be handed relay
 *  credentials ('auto' relay through a real server); direct mode has no rendezvous. */
function oneShotEndpointOptions(
  options: ConnectOptions,
  onProgress: (p: Progress) => void,
  signal: AbortSignal,
): EndpointOptions {
  const { peer, to: _to, timeoutMs: _t, signal: _s, earlyData: _e, knownPeers: _k, ...rest } = options;
  const register =
    !peer && rest.relay !== false && (rest.relay ?? 'auto') === 'auto' && rendezvousServer(rest.rendezvous) !== null;
  return { ...rest, ...(peer ? { rendezvous: undefined } : {}), accept: false, register, onProgress, signal };
}

function oneShotConnectOptions(options: ConnectOptions, signal: AbortSignal): EndpointConnectOptions {
  return {
    signal,
    ...(options.peer ? { candidates: options.peer.candidates } : {}),
    ...(options.connectionId ? { connectionId: options.connectionId } : {}),
    ...(options.earlyData ? { earlyData: options.earlyData } : {}),
    ...(options.knownPeers ? { knownPeers: options.knownPeers } : {}),
  };
}

/** connect()'s own deadline names itself: a TIMEOUT saying how long, with what was going on as its cause. */
function timeoutOr(err: unknown, signal: AbortSignal, timeoutMs: number): unknown {
  if (!(signal.reason instanceof NatpunchError) || signal.reason.code !== 'TIMEOUT' || isNatpunchError(err, 'TIMEOUT'))
    return err;
  return new NatpunchError('TIMEOUT', `no session with the peer within ${timeoutMs} ms (${(err as Error).message})`, {
    cause: err,
  });
}

/** Listens for sessions: a long-lived Endpoint that registers with the rendezvous (when given) and accepts. */
export async function listen(options: ListenOptions): Promise<Endpoint> {
  return createEndpoint(options);
}

/**
 * The key the ICMP path must authenticate for `to`: the key given, or the one a name is pinned to. A name with
 * neither is refused: ICMP has no rendezvous to resolve it, and without a key any server would be accepted.
 */
async function icmpPeerKey(to: PeerSpec, pins: PeerPins | undefined): Promise<Buffer> {
  const target = peerTarget(to);
  if (target.key) return target.key;
  const pinned = target.name && pins?.pinned ? await pins.pinned(target.name) : null;
  if (pinned) return Buffer.from(pinned);
  throw new NatpunchError(
    'PEER_KEY_MISMATCH',
    `ICMP hole punching cannot check who "${target.name}" is: give its key (--peer-key, or to: { name, key }), or connect once through the rendezvous so the name is pinned`,
  );
}

/** connect() with no introduction: the planner's plan for that case (traversal/no-rendezvous.ts); null: none. */
async function withoutRendezvous(options: ConnectOptions, logger: Logger): Promise<Session | null> {
  const icmp = options.icmp;
  // Unless the caller allows ICMP, nothing runs without a rendezvous: no key check, no module loaded.
  if (!icmp) return null;
  const peerKey = options.to === undefined ? null : await icmpPeerKey(options.to, options.knownPeers);
  return connectWithoutRendezvous({
    keyPair: options.keyPair,
    icmp: { ...icmp, peerKey, ...(options.bind?.address ? { bindAddress: options.bind.address } : {}) },
    ...(options.keepAliveMs !== undefined ? { keepAliveMs: options.keepAliveMs } : {}),
    ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    logger,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
}
