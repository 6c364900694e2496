/**
 * natpunch/traversal: NAT traversal techniques: connectivity checks, candidates, port prediction and birthday punching, TCP hole punching (P2P-NAT, STUNT, sequence-number techniques) and ICMP hole punching.
 */
export { ConnectivityChecks, runChecks, deriveCheckKey } from './checks.js';
export type { CheckOptions, CheckResult, PairReport, CheckHandshake, CheckAnswer } from './checks.js';
export { MAX_CHECK_BYTES } from './checks.js';
export { tcpPunch, TCP_PUNCH_DEFAULTS, TCP_NOMINATION_BYTE } from './tcp-p2pnat.js';
export type { TcpPunchCandidate, TcpPunchOptions, TcpPunchResult, TcpPunchRole } from './tcp-p2pnat.js';
export { openTcpLocal, TCP_MAPPING_REFRESH_MS } from './tcp-session.js';
export type { TcpLocal } from './tcp-session.js';
export { tcpTechnique, tcpApplies } from './tcp-technique.js';
export type { TcpTechniqueOptions } from './tcp-technique.js';
export { discoverNatHops, NatHopCache, TTL_DISCOVERY_DEFAULTS } from './tcp-stunt.js';
export type { DiscoverNatHopsOptions, HopOutcome, HopProbe, NatHops } from './tcp-stunt.js';
export { predictTcpCandidates, DEFAULT_PREDICTED_PORTS } from './tcp-predict.js';
export type { TcpAllocationSample } from './tcp-predict.js';
export {
  predictPorts,
  predictedCandidates,
  hardNatKind,
  observeMapping,
  measureNat,
  advertiseHardNat,
  reobserve,
  DEFAULT_PREDICTION_WINDOW,
} from './predict.js';
export type { HardNatKind, HardNatAdvert, NatMeasurement, StunServerAddress } from './predict.js';
export {
  advertToCandidates,
  advertFromCandidates,
  needsHardPunch,
  DEFAULT_HARDNAT_MEASURE_TIMEOUT_MS,
} from './hardwire.js';
export type { HardNatOptions } from './hardwire.js';
export {
  HardPunch,
  planHardPunch,
  birthdaySuccess,
  birthdayProbesFor,
  doubleRandomSuccess,
  HARDNAT_FIRST_BYTE,
  BIRTHDAY_PORT_SPACE,
  DEFAULT_BIRTHDAY_SOCKETS,
  DEFAULT_BIRTHDAY_PROBES,
  DEFAULT_PROBE_RATE,
  DEFAULT_DOUBLE_RANDOM_BUDGET,
  DEFAULT_MAX_MAPPINGS,
} from './birthday.js';
export type { HardPunchOptions, HardPunchResult, HardStrategy, DoubleRandomBudget } from './birthday.js';
export * as icmp from '../wire/icmp.js';
export {
  listenIcmp,
  connectIcmp,
  IcmpListener,
  IcmpBeacon,
  IcmpKnocker,
  DEFAULT_ICMP_PROBE_ADDRESS,
  DEFAULT_ICMP_INTERVAL_MS,
  DEFAULT_ICMP_PUNCH_PORT,
  ICMP_PUNCH_IDENTIFIER,
  ICMP_PUNCH_SEQUENCE,
} from './icmp.js';
export type {
  IcmpListenOptions,
  IcmpConnectOptions,
  IcmpKnock,
  IcmpProgress,
  IcmpBeaconOptions,
  IcmpKnockerOptions,
} from './icmp.js';
export { natBlaster } from './tcp-natblaster.js';
export type { NatBlasterOptions } from './tcp-natblaster.js';
export { sequencePunch, SEQ_PUNCH_DEFAULTS } from './tcp-seqpunch.js';
export type { SeqChannel, SeqPunchOptions, SeqPreference } from './tcp-seqpunch.js';
export { stunt1, SynAckSpoofer } from './tcp-stunt1.js';
export type { Stunt1Options } from './tcp-stunt1.js';
export { craftSynAck, installIcmpGuard, openSeqSyn, parseSeqOffer, SeqSyn, TCP_SEQ_DEFAULTS } from './tcp-seq.js';
export type { SeqOffer, SeqResult, SeqSynOptions, SeqTechnique } from './tcp-seq.js';
export * as tcpWire from '../wire/tcp.js';
export { encodeSeqOffer, decodeSeqOffer, SEQ_OFFER_BYTES } from '../wire/seq-offer.js';
