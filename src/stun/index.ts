/**
 * natpunch/stun: STUN (RFC 8489, RFC 5389, RFC 3489, RFC 5780): the wire codec, client transactions, long-term credentials and the server.
 */
export * from '../wire/stun/index.js';
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
} from './client.js';
export type {
  StunEndpoint,
  StunCredentials,
  StunRequestOptions,
  StunResponse,
  BindingResult,
  StunClientOptions,
  StunTcpClientOptions,
  StunBindingOptions,
} from './client.js';
export { StunServer, STUN_MAX_AMPLIFICATION, STUN_TCP_IDLE_MS, STUN_MAX_TCP_CONNECTIONS } from './server.js';
export type {
  StunServerOptions,
  StunServerCounters,
  Rfc5780Sockets,
  StunMethodHandler,
  StunRequestContext,
} from './server.js';
export { LongTermAuthenticator, DEFAULT_NONCE_LIFETIME_MS } from './auth.js';
export type { LongTermAuthOptions, AuthResult } from './auth.js';
