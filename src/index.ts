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
export { PortMapper, probePortMapping, DEFAULT_PROTOCOL_ORDER } from './portmap/mapper.js';
export type { PortMapperOptions, MapRequest, PortMapProbe, ProtocolProbe, CloseResult } from './portmap/mapper.js';
export type { PortMapping, PortMapProtocol, MapTransport, RetransmitSchedule } from './portmap/common.js';
export { defaultGateway } from './portmap/common.js';
export { NatPmpClient } from './portmap/natpmp.js';
export { PcpClient, GatewayAnnounceListener } from './portmap/pcp.js';
export { UpnpIgdClient, ssdpSearch } from './portmap/upnp.js';
