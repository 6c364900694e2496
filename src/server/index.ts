/**
 * natpunch/server: The `serve` composition (STUN + rendezvous + optional TURN on shared sockets) and its socket implementations.
 */
export { startServer, DEFAULT_SERVE_ADDRESSES } from './serve.js';
export type { ServeConfig, ServerHandle, TcpHandler, ServeSocket, Endpoint as ServeEndpoint } from './serve.js';
export { ServerUdpSocket } from './udp.js';
export { UdxServerSocket } from './udx.js';
export { SpoofService, submitStunt1Offer, SPOOF_SERVICE_DEFAULTS } from './spoof.js';
export type { SpoofServiceOptions } from './spoof.js';
