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
export {
  encodeRendezvous,
  decodeRendezvous,
  verifyRendezvous,
  frameTcp,
  TcpFrameDecoder,
  isValidName,
  RENDEZVOUS_VERSION,
  MAX_CANDIDATES as RENDEZVOUS_MAX_CANDIDATES,
  MessageType as RendezvousMessageType,
  ErrorCode as RendezvousErrorCode,
} from './wire/rendezvous.js';
export type {
  RendezvousMessage,
  ConnectMode,
  ConnectRole,
  Endpoint as RendezvousEndpoint,
  Target as RendezvousTarget,
  SeqOfferMessage,
  SeqOfferResultMessage,
} from './wire/rendezvous.js';
export { RendezvousServer, attachRendezvous } from './rendezvous/server.js';
export type { RendezvousServerOptions, RendezvousStats, StartSchedule, ServiceHost, SeqOfferSpoofer } from './rendezvous/server.js';
export { DEFAULT_TURN_CREDENTIAL_TTL_S, SEQ_OFFER_PAIR_TIMEOUT_MS } from './rendezvous/server.js';
export type { TurnCredentialConfig } from './rendezvous/server.js';
export { MemoryRegistry } from './rendezvous/registry.js';
export type { Registry, PeerRecord, PutResult } from './rendezvous/registry.js';
export { RendezvousClient, hostCandidates, parseTarget } from './rendezvous/client.js';
export type { RendezvousClientOptions, RendezvousClientEvents, RegisterResult, LookupResult, ConnectOffer } from './rendezvous/client.js';
export type { TurnCredentials } from './rendezvous/client.js';
export type { SeqOfferEvent } from './rendezvous/client.js';
export { SEQ_OFFER_STORE_CAP, SEQ_OFFER_STORE_TTL_MS } from './rendezvous/client.js';
export { UdxEndpoint } from './net/udx.js';
export type { UdxStream } from './net/udx.js';
export { generateKeyPair, loadKeyPair, saveKeyPair, parseKeyPair, keyToId, idToKey, isPeerId } from './session/identity.js';
export type { KeyPair } from './session/identity.js';
export { Session, streamIdsFor, isAllowed, DEFAULT_KEEPALIVE_MS, DEFAULT_IDLE_TIMEOUT_MS, MAX_DATAGRAM_BYTES } from './session/session.js';
export type { SessionOptions, SessionPath, PathKind, Allow } from './session/session.js';
export { MuxStream, DEFAULT_STREAM_WINDOW, MAX_FRAME_PAYLOAD } from './session/mux.js';
export { ConnectivityChecks, runChecks, deriveCheckKey } from './traversal/checks.js';
export type { CheckOptions, CheckResult, PairReport } from './traversal/checks.js';
export { connect, listen, Listener, defaultCandidates, keepAliveFor, DEFAULT_RENDEZVOUS_PORT, DEFAULT_CONNECT_TIMEOUT_MS } from './natpunch.js';
export type { ConnectOptions, ListenOptions, Progress, RendezvousLike, ConnectOfferLike, RendezvousFactory } from './natpunch.js';
export { netcheck, parseServer, verdictOf, mappingFromServers } from './discovery/netcheck.js';
export type { NatReport, NetcheckOptions, NetcheckServer, NetcheckProgress, Difficulty } from './discovery/netcheck.js';
export { classifyMapping, classifyFiltering, classicName } from './discovery/classify.js';
export type { MappingBehaviour, FilteringBehaviour, ClassicNatType, Endpoint } from './discovery/classify.js';
export { analyseAllocation } from './discovery/allocation.js';
export type { AllocationPattern, AllocationReport } from './discovery/allocation.js';
export type { LifetimeResult } from './discovery/lifetime.js';
export type { PortMappingPresence } from './discovery/portmap-probe.js';
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

// STUN: wire codec (RFC 8489/5389/3489/5780), client transactions, server, and the `serve` composition.
export * from './wire/stun/index.js';
export {
  StunClient,
  StunTcpClient,
  LongTermAuthState,
  stunBinding,
  resolveStunServer,
  bindingResult,
  STUN_RTO_MS,
  STUN_RC,
  STUN_RM,
  STUN_TCP_TIMEOUT_MS,
  STUN_MAX_AUTH_RETRIES,
} from './stun/client.js';
export type {
  StunEndpoint,
  StunCredentials,
  StunRequestOptions,
  StunResponse,
  BindingResult,
  StunClientOptions,
  StunTcpClientOptions,
  StunBindingOptions,
} from './stun/client.js';
export { StunServer, STUN_MAX_AMPLIFICATION, STUN_TCP_IDLE_MS, STUN_MAX_TCP_CONNECTIONS } from './stun/server.js';
export type { StunServerOptions, StunServerCounters, Rfc5780Sockets, StunMethodHandler, StunRequestContext } from './stun/server.js';
export { LongTermAuthenticator, DEFAULT_NONCE_LIFETIME_MS } from './stun/auth.js';
export type { LongTermAuthOptions, AuthResult } from './stun/auth.js';
export { startServer, DEFAULT_SERVE_ADDRESSES } from './server/serve.js';
export type { ServeConfig, ServerHandle, TcpHandler, ServeSocket, Endpoint as ServeEndpoint } from './server/serve.js';
export { ServerUdpSocket } from './server/udp.js';
// TCP hole punching and raw sockets (native addon: native/; optional, see addonStatus())
export { addonAvailable, addonStatus, loadAddon } from './net/native.js';
export type { AddonStatus, NativeAddon, NativeAddress } from './net/native.js';
export { bindReusePort, connectFrom, getTtl, listenReusePort, setTtl, socketFd, startConnect } from './net/tcp.js';
export type { ConnectFromOptions, TcpListenOptions, PendingConnect } from './net/tcp.js';
export { RawSocket, IPPROTO_ICMP, IPPROTO_RAW } from './net/raw.js';
export type { RawListener, RawRemoteInfo, RawSocketOptions } from './net/raw.js';
export { tcpPunch, TCP_PUNCH_DEFAULTS, TCP_NOMINATION_BYTE } from './traversal/tcp-p2pnat.js';
export type { TcpPunchCandidate, TcpPunchOptions, TcpPunchResult, TcpPunchRole } from './traversal/tcp-p2pnat.js';
// Sessions over TCP (issue 7): connect/listen({ transport: 'udp' | 'tcp' | 'auto' }), Session.establishTcp.
export { AUTO_UDP_GRACE_MS, DEFAULT_PORT_MAPPING_TIMEOUT_MS } from './natpunch.js';
export type { TransportMode } from './natpunch.js';
export { AUTO_RELAY_WAIT_MS } from './natpunch.js';
export { TCP_DATAGRAM_BACKLOG_BYTES } from './session/session.js';
export type { TcpSessionOptions } from './session/session.js';
export { openTcpLocal, TCP_MAPPING_REFRESH_MS } from './traversal/tcp-session.js';
export type { TcpLocal } from './traversal/tcp-session.js';
export { discoverNatHops, NatHopCache, TTL_DISCOVERY_DEFAULTS } from './traversal/tcp-stunt.js';
export type { DiscoverNatHopsOptions, HopOutcome, HopProbe, NatHops } from './traversal/tcp-stunt.js';
export { predictTcpCandidates, DEFAULT_PREDICTED_PORTS } from './traversal/tcp-predict.js';
export type { TcpAllocationSample } from './traversal/tcp-predict.js';
export {
  predictPorts, predictedCandidates, hardNatKind, observeMapping, measureNat, advertiseHardNat, reobserve, DEFAULT_PREDICTION_WINDOW,
} from './traversal/predict.js';
export type { HardNatKind, HardNatAdvert, NatMeasurement, StunServerAddress } from './traversal/predict.js';
export { advertToCandidates, advertFromCandidates, needsHardPunch, DEFAULT_HARDNAT_MEASURE_TIMEOUT_MS } from './traversal/hardwire.js';
export type { HardNatOptions } from './traversal/hardwire.js';
export {
  HardPunch, planHardPunch, birthdaySuccess, birthdayProbesFor, doubleRandomSuccess, HARDNAT_FIRST_BYTE, BIRTHDAY_PORT_SPACE,
  DEFAULT_BIRTHDAY_SOCKETS, DEFAULT_BIRTHDAY_PROBES, DEFAULT_PROBE_RATE, DEFAULT_DOUBLE_RANDOM_BUDGET, DEFAULT_MAX_MAPPINGS,
} from './traversal/birthday.js';
export type { HardPunchOptions, HardPunchResult, HardStrategy, DoubleRandomBudget } from './traversal/birthday.js';
export * as icmp from './wire/icmp.js';
export { PortMapper, probePortMapping, closeOnSignals, toCandidate, DEFAULT_PROTOCOL_ORDER } from './portmap/mapper.js';
export type { PortMapperOptions, MapRequest, PortMapProbe, ProtocolProbe, CloseResult } from './portmap/mapper.js';
export { PROBE_TIMEOUT_MS } from './portmap/mapper.js';
export type { PortMapping, PortMapProtocol, MapTransport, RetransmitSchedule } from './portmap/common.js';
export { defaultGateway } from './portmap/common.js';
export { NatPmpClient } from './portmap/natpmp.js';
export { PcpClient, GatewayAnnounceListener } from './portmap/pcp.js';
export { UpnpIgdClient, ssdpSearch } from './portmap/upnp.js';
export { UdxServerSocket } from './server/udx.js';
// TURN relay (RFC 8656, RFC 6062): server, client, auth and peer policy
export { TurnServer, DEFAULT_LIFETIME_S as TURN_DEFAULT_LIFETIME_S, PERMISSION_LIFETIME_S, CHANNEL_LIFETIME_S } from './relay/server.js';
export type { TurnServerOptions, TurnStats } from './relay/server.js';
export { TurnClient } from './relay/client.js';
export type { TurnClientOptions, AllocateOptions, Allocation as TurnAllocation } from './relay/client.js';
export { attachTurn } from './relay/attach.js';
export type { TurnHost } from './relay/attach.js';
export {
  UsersFileStore,
  SharedSecretStore,
  CombinedStore,
  NonceManager,
  TokenBucket,
  makeSharedSecretCredentials,
  sharedSecretPassword,
} from './relay/auth.js';
export type { CredentialStore } from './relay/auth.js';
export { DefaultPeerPolicy, DEFAULT_DENIED_PEERS } from './relay/policy.js';
export type { PeerPolicy, PeerPolicyOptions, PeerDecision } from './relay/policy.js';
export { turnRegistry, TurnMethod } from './wire/turn.js';
export * as channelData from './wire/channel-data.js';
// Tunnels: expose / forward / socks over sessions (src/tunnel/).
export {
  expose,
  linkTo,
  TunnelExit,
  PeerLink,
  openTunnel,
  TcpForwarder,
  SocksServer,
  DestinationPolicy,
  socks5,
  encodeTunnelRequest,
  decodeTunnelRequest,
  encodeTunnelReply,
  decodeTunnelReply,
  TUNNEL_VERSION,
  DEFAULT_SESSION_WAIT_MS,
  DEFAULT_REPLY_TIMEOUT_MS,
  DEFAULT_TARGET_CONNECT_TIMEOUT_MS,
} from './tunnel/index.js';
export type {
  ExposeHandle,
  ExposeTarget,
  TunnelExitOptions,
  TunnelEvent,
  LinkEvent,
  PeerLinkOptions,
  ConnectionEvent,
  LocalListenOptions,
  SocksServerOptions,
  DestinationDecision,
  Resolver as DestinationResolver,
  TunnelRequest,
  TunnelReply,
} from './tunnel/index.js';
export {
  listenIcmp, connectIcmp, IcmpListener, IcmpBeacon, IcmpKnocker, DEFAULT_ICMP_PROBE_ADDRESS, DEFAULT_ICMP_INTERVAL_MS,
  DEFAULT_ICMP_PUNCH_PORT, ICMP_PUNCH_IDENTIFIER, ICMP_PUNCH_SEQUENCE,
} from './traversal/icmp.js';
export type { IcmpListenOptions, IcmpConnectOptions, IcmpKnock, IcmpProgress, IcmpBeaconOptions, IcmpKnockerOptions } from './traversal/icmp.js';
// TCP sequence-number techniques (STUNT #1, NATBlaster): raw sockets + packet capture, root only
export { PacketCapture } from './net/capture.js';
export type { CaptureListener } from './net/capture.js';
export { natBlaster } from './traversal/tcp-natblaster.js';
export type { NatBlasterOptions } from './traversal/tcp-natblaster.js';
export { sequencePunch, SEQ_PUNCH_DEFAULTS } from './traversal/tcp-seqpunch.js';
export type { SeqChannel, SeqPunchOptions, SeqPreference } from './traversal/tcp-seqpunch.js';
export { stunt1, SynAckSpoofer } from './traversal/tcp-stunt1.js';
export type { Stunt1Options } from './traversal/tcp-stunt1.js';
export { craftSynAck, installIcmpGuard, openSeqSyn, parseSeqOffer, SeqSyn, TCP_SEQ_DEFAULTS } from './traversal/tcp-seq.js';
export type { SeqOffer, SeqResult, SeqSynOptions, SeqTechnique } from './traversal/tcp-seq.js';
export { SpoofService, submitStunt1Offer, SPOOF_SERVICE_DEFAULTS } from './server/spoof.js';
export type { SpoofServiceOptions } from './server/spoof.js';
export * as tcpWire from './wire/tcp.js';
export { encodeSeqOffer, decodeSeqOffer, SEQ_OFFER_BYTES } from './wire/seq-offer.js';
