/**
 * natpunch/rendezvous: Rendezvous: the wire messages, the server (with its Registry interface) and the client that registers, looks up and introduces peers.
 */
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
} from '../wire/rendezvous.js';
export type {
  RendezvousMessage,
  ConnectMode,
  ConnectRole,
  Endpoint as RendezvousEndpoint,
  Target as RendezvousTarget,
  SeqOfferMessage,
  SeqOfferResultMessage,
} from '../wire/rendezvous.js';
export { RendezvousServer, attachRendezvous } from './server.js';
export type {
  RendezvousServerOptions,
  RendezvousStats,
  StartSchedule,
  ServiceHost,
  SeqOfferSpoofer,
} from './server.js';
export { DEFAULT_TURN_CREDENTIAL_TTL_S, SEQ_OFFER_PAIR_TIMEOUT_MS } from './server.js';
export type { TurnCredentialConfig } from './server.js';
export { MemoryRegistry } from './registry.js';
export type { Registry, PeerRecord, PutResult } from './registry.js';
export { RendezvousClient, hostCandidates, parseTarget } from './client.js';
export type {
  RendezvousClientOptions,
  RendezvousClientEvents,
  RegisterResult,
  LookupResult,
  ConnectOffer,
} from './client.js';
export type { TurnCredentials } from './client.js';
export type { SeqOfferEvent } from './client.js';
export { SEQ_OFFER_STORE_CAP, SEQ_OFFER_STORE_TTL_MS } from './client.js';
