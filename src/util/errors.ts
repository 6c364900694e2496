/**
 * The one error class natpunch throws. `code` is stable and meant for programs; `message` is meant for a person
 * and should say what to do about it. The codes are a closed union: a mistyped or new code fails to compile until
 * it is listed here (and in docs/cli.md's table when the CLI can print it).
 */
export type NatpunchErrorCode =
  // caller mistakes and control flow
  | 'BAD_ARGUMENT'
  | 'ABORTED'
  | 'TIMEOUT'
  | 'NOT_ROOT'
  | 'ADDON_UNAVAILABLE'
  | 'LAB'
  // sockets
  | 'SOCKET'
  | 'SOCKET_CLOSED'
  | 'ADDRESS_IN_USE'
  | 'UNREACHABLE'
  | 'TCP_CONNECT'
  // STUN (RFC 8489)
  | 'STUN_DECODE'
  | 'STUN_TIMEOUT'
  | 'STUN_CONNECT'
  | 'STUN_ERROR_RESPONSE'
  | 'STUN_INTEGRITY'
  // rendezvous and traversal
  | 'RENDEZVOUS'
  | 'RENDEZVOUS_DECODE'
  | 'RATE_LIMITED'
  | 'PEER_NOT_FOUND'
  | 'PEER_KEY_CHANGED'
  | 'PEER_KEY_MISMATCH'
  | 'PUNCH_FAILED'
  // sessions and streams
  | 'HANDSHAKE_FAILED'
  | 'NOT_ALLOWED'
  | 'PROTOCOL'
  | 'SESSION_CLOSED'
  | 'SESSION_LOST'
  | 'STREAM_CLOSED'
  | 'STREAM_RESET'
  // port mapping (PCP, NAT-PMP, UPnP IGD)
  | 'PORTMAP'
  | 'PORTMAP_UNSUPPORTED_VERSION'
  // TURN (RFC 8656)
  | 'TURN'
  | 'TURN_FORBIDDEN_PEER'
  // tunnels
  | 'TUNNEL_PROTOCOL'
  | 'TUNNEL_REFUSED'
  | 'SOCKS_PROTOCOL';

export class NatpunchError extends Error {
  readonly code: NatpunchErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(
    code: NatpunchErrorCode,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NatpunchError';
    this.code = code;
    if (options?.details) this.details = options.details;
  }
}

export function isNatpunchError(err: unknown, code?: NatpunchErrorCode): err is NatpunchError {
  return err instanceof NatpunchError && (code === undefined || err.code === code);
}
