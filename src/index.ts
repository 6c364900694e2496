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
// TCP hole punching and raw sockets (native addon: native/; optional, see addonStatus())
export { addonAvailable, addonStatus, loadAddon } from './net/native.js';
export type { AddonStatus, NativeAddon, NativeAddress } from './net/native.js';
export { bindReusePort, connectFrom, getTtl, listenReusePort, setTtl, socketFd, startConnect } from './net/tcp.js';
export type { ConnectFromOptions, ListenOptions, PendingConnect } from './net/tcp.js';
export { RawSocket, IPPROTO_ICMP, IPPROTO_RAW } from './net/raw.js';
export type { RawListener, RawRemoteInfo, RawSocketOptions } from './net/raw.js';
export { tcpPunch, TCP_PUNCH_DEFAULTS, TCP_NOMINATION_BYTE } from './traversal/tcp-p2pnat.js';
export type { TcpPunchCandidate, TcpPunchOptions, TcpPunchResult, TcpPunchRole } from './traversal/tcp-p2pnat.js';
export { discoverNatHops, NatHopCache, TTL_DISCOVERY_DEFAULTS } from './traversal/tcp-stunt.js';
export type { DiscoverNatHopsOptions, HopOutcome, HopProbe, NatHops } from './traversal/tcp-stunt.js';
export { predictTcpCandidates, DEFAULT_PREDICTED_PORTS } from './traversal/tcp-predict.js';
export type { TcpAllocationSample } from './traversal/tcp-predict.js';
export * as icmp from './wire/icmp.js';
