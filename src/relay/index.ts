/**
 * natpunch/turn: TURN (RFC 8656, RFC 6062): the server, the client, credentials (RFC 8489 long-term, shared-secret REST), peer policy and the TURN wire attributes. Published as `natpunch/turn`.
 */
export {
  TurnServer,
  DEFAULT_LIFETIME_S as TURN_DEFAULT_LIFETIME_S,
  PERMISSION_LIFETIME_S,
  CHANNEL_LIFETIME_S,
} from './server.js';
export type { TurnServerOptions, TurnStats } from './server.js';
export { TurnClient } from './client.js';
export type { TurnClientOptions, AllocateOptions, Allocation as TurnAllocation } from './client.js';
export { attachTurn } from './attach.js';
export type { TurnHost } from './attach.js';
export {
  UsersFileStore,
  SharedSecretStore,
  CombinedStore,
  NonceManager,
  TokenBucket,
  makeSharedSecretCredentials,
  sharedSecretPassword,
} from './auth.js';
export type { CredentialStore } from './auth.js';
export { DefaultPeerPolicy, DEFAULT_DENIED_PEERS } from './policy.js';
export type { PeerPolicy, PeerPolicyOptions, PeerDecision } from './policy.js';
export { turnRegistry, TurnMethod } from '../wire/turn.js';
export * as channelData from '../wire/channel-data.js';
