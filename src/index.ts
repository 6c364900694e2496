/**
 * natpunch: direct, authenticated connections between two machines whatever NATs stand between them.
 *
 * The root export is what an application needs to connect peers: connect()/listen(), sessions and their streams,
 * keys, netcheck, tunnels, errors. Each subsystem has its own subpath export following the source folders
 * (package.json "exports"): natpunch/stun, natpunch/turn, natpunch/portmap, natpunch/rendezvous, natpunch/traversal,
 * natpunch/discovery, natpunch/session, natpunch/net, natpunch/server, natpunch/tunnel and natpunch/lab (root only;
 * not re-exported here).
 */
export { NatpunchError, isNatpunchError } from './util/errors.js';
export type { NatpunchErrorCode } from './util/errors.js';
export { sleep, timeoutSignal, throwIfAborted } from './util/abort.js';
export { createLogger, silentLogger } from './util/log.js';
export type { Logger } from './util/log.js';
// connect()/listen() and everything their options and events name: natpunch.ts is that facade, re-exported whole.
export * from './natpunch.js';
export {
  generateKeyPair,
  loadKeyPair,
  saveKeyPair,
  parseKeyPair,
  keyToId,
  idToKey,
  isPeerId,
} from './session/identity.js';
export type { KeyPair } from './session/identity.js';
export {
  Session,
  MuxStream,
  DEFAULT_KEEPALIVE_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  MAX_DATAGRAM_BYTES,
} from './session/index.js';
export type { SessionOptions, SessionPath, PathKind, Allow } from './session/index.js';
export { netcheck, parseServer, verdictOf } from './discovery/netcheck.js';
export type { NatReport, NetcheckOptions, NetcheckServer, NetcheckProgress, Difficulty } from './discovery/netcheck.js';
export { expose, linkTo, TcpForwarder, SocksServer, DestinationPolicy } from './tunnel/index.js';
export type { ExposeHandle, ExposeTarget } from './tunnel/index.js';
export type { DatagramTransport, DatagramListener, RemoteInfo } from './net/datagram.js';
