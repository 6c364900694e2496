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
export type { ServeConfig, ServerHandle, TcpHandler, Endpoint, ServeSocket } from './server/serve.js';
export { ServerUdpSocket } from './server/udp.js';
export { UdxServerSocket } from './server/udx.js';
