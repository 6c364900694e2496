/**
 * natpunch/portmap: Port mapping on the gateway: PCP (RFC 6887), NAT-PMP (RFC 6886) and UPnP IGD behind one PortMapper.
 */
export { PortMapper, probePortMapping, closeOnSignals, toCandidate, DEFAULT_PROTOCOL_ORDER } from './mapper.js';
export type { PortMapperOptions, MapRequest, PortMapProbe, ProtocolProbe, CloseResult } from './mapper.js';
export { PROBE_TIMEOUT_MS } from './mapper.js';
export type { PortMapping, PortMapProtocol, MapTransport, RetransmitSchedule } from './common.js';
export { defaultGateway } from './common.js';
export { NatPmpClient } from './natpmp.js';
export { PcpClient, GatewayAnnounceListener } from './pcp.js';
export { UpnpIgdClient, ssdpSearch } from './upnp.js';
