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
