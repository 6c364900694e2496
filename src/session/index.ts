/**
 * natpunch/session: Sessions: Ed25519 identities and key files, the Noise-encrypted Session over a path, and its stream multiplexer.
 */
export { generateKeyPair, loadKeyPair, saveKeyPair, parseKeyPair, keyToId, idToKey, isPeerId } from './identity.js';
export type { KeyPair } from './identity.js';
export {
  Session,
  streamIdsFor,
  isAllowed,
  DEFAULT_KEEPALIVE_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  MAX_DATAGRAM_BYTES,
} from './session.js';
export type { SessionOptions, SessionPath, PathKind, Allow } from './session.js';
export { MuxStream, DEFAULT_STREAM_WINDOW, MAX_FRAME_PAYLOAD } from './mux.js';
export { TCP_DATAGRAM_BACKLOG_BYTES } from './session.js';
export type { TcpSessionOptions } from './session.js';
export { IkInitiator, IkResponder, IkReplayCache, MAX_EARLY_DATA_BYTES, IK_CLOCK_WINDOW_MS } from './handshake-ik.js';
export type { CompletedHandshake, IkAccepted, IkInitiatorOptions, IkResponderOptions } from './handshake-ik.js';
export { IkListenerAttempt, initiatorIk, initiatorIkSession, ikStreamIds } from './ik-attempt.js';
