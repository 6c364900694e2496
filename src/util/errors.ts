/**
 * The one error class natpunch throws. `code` is stable and meant for programs; `message` is meant for a person
 * and should say what to do about it.
 */
export type NatpunchErrorCode =
  | 'BAD_ARGUMENT'
  | 'ABORTED'
  | 'TIMEOUT'
  | 'STUN_DECODE'
  | 'STUN_TIMEOUT'
  | 'STUN_ERROR_RESPONSE'
  | 'STUN_INTEGRITY'
  | 'SOCKET_CLOSED'
  | 'NOT_ROOT'
  | 'LAB'
  | 'ADDON_UNAVAILABLE'
  | 'RENDEZVOUS'
  | 'PEER_NOT_FOUND'
  | 'PEER_KEY_CHANGED'
  | 'PEER_KEY_MISMATCH'
  | 'PUNCH_FAILED'
  | 'HANDSHAKE_FAILED'
  | 'NOT_ALLOWED'
  | 'PORTMAP'
  | 'TURN'
  | 'TURN_FORBIDDEN_PEER'
  | 'UNREACHABLE'
  | (string & {});

export class NatpunchError extends Error {
  readonly code: NatpunchErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(code: NatpunchErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NatpunchError';
    this.code = code;
    if (options?.details) this.details = options.details;
  }
}

export function isNatpunchError(err: unknown, code?: NatpunchErrorCode): err is NatpunchError {
  return err instanceof NatpunchError && (code === undefined || err.code === code);
}
