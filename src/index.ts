/**
 * natpunch public API. Everything an embedding application uses is exported from here.
 */
export { NatpunchError, isNatpunchError } from './util/errors.js';
export type { NatpunchErrorCode } from './util/errors.js';
export { sleep, timeoutSignal, throwIfAborted } from './util/abort.js';
export { createLogger, silentLogger } from './util/log.js';
export type { Logger } from './util/log.js';
export { NodeDatagramTransport } from './net/datagram.js';
export type { DatagramTransport, DatagramListener, RemoteInfo } from './net/datagram.js';
export { UdxEndpoint } from './net/udx.js';
export type { UdxStream } from './net/udx.js';
export { generateKeyPair, loadKeyPair, saveKeyPair, parseKeyPair, keyToId, idToKey, isPeerId } from './session/identity.js';
export type { KeyPair } from './session/identity.js';
export { Session, streamIdsFor, isAllowed, DEFAULT_KEEPALIVE_MS, DEFAULT_IDLE_TIMEOUT_MS, MAX_DATAGRAM_BYTES } from './session/session.js';
export type { SessionOptions, SessionPath, PathKind, Allow } from './session/session.js';
export { MuxStream, DEFAULT_STREAM_WINDOW, MAX_FRAME_PAYLOAD } from './session/mux.js';
export { ConnectivityChecks, runChecks, deriveCheckKey } from './traversal/checks.js';
export type { CheckOptions, CheckResult, PairReport } from './traversal/checks.js';
export { connect, listen, Listener, defaultCandidates, DEFAULT_RENDEZVOUS_PORT, DEFAULT_CONNECT_TIMEOUT_MS } from './natpunch.js';
export type { ConnectOptions, ListenOptions, Progress, RendezvousLike, ConnectOfferLike, RendezvousFactory } from './natpunch.js';
export { Lab, Agent, LabProcess, labUnavailableReason, defaultTopology, NAT_TYPES } from './lab/index.js';
export type {
  LabOptions,
  LabState,
  TopologySpec,
  NatType,
  NatOptions,
  ResolvedNatOptions,
  LinkShape,
  ExecResult,
} from './lab/index.js';
