/**
 * natpunch/discovery: NAT discovery: netcheck and its classification (RFC 4787 mapping/filtering, RFC 5780 tests).
 */
export { netcheck, parseServer, verdictOf, mappingFromServers } from './netcheck.js';
export type { NatReport, NetcheckOptions, NetcheckServer, NetcheckProgress, Difficulty } from './netcheck.js';
export { classifyMapping, classifyFiltering, classicName } from './classify.js';
export type { MappingBehaviour, FilteringBehaviour, ClassicNatType, Endpoint } from './classify.js';
export { analyseAllocation } from './allocation.js';
export type { AllocationPattern, AllocationReport } from './allocation.js';
export type { LifetimeResult } from './lifetime.js';
export type { PortMappingPresence } from './portmap-probe.js';
