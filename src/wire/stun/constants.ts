/**
 * STUN constants: header layout, message classes, methods, attribute types and error codes.
 * RFC 8489 (STUN), RFC 5389 (its predecessor), RFC 3489 (classic STUN, legacy attributes), RFC 5780 (NAT behaviour
 * discovery). TURN (RFC 8656) adds its own methods and attributes through the registry (see registry.ts).
 */

/** RFC 8489 §5: the fixed value in bytes 4..7 of every RFC 5389/8489 message. */
export const MAGIC_COOKIE = 0x2112a442;
/** RFC 8489 §5: 20-byte header (type, length, magic cookie, 96-bit transaction id). */
export const HEADER_LENGTH = 20;
/** RFC 8489 §5: transaction id length (96 bits). RFC 3489 used 128 bits including what is now the cookie. */
export const TRANSACTION_ID_LENGTH = 12;
/** RFC 8489 §14.7: FINGERPRINT = CRC-32 of the message XOR this value. */
export const FINGERPRINT_XOR = 0x5354554e;
/** RFC 8489 §9.2: nonces starting with this cookie carry the security feature set. */
export const NONCE_COOKIE = 'obMatJos2';
/** RFC 8489 §6.2: well-known ports. */
export const DEFAULT_STUN_PORT = 3478;
export const DEFAULT_STUNS_PORT = 5349;

/** RFC 8489 §5: the two class bits C1 C0. */
export const StunClass = {
  Request: 0b00,
  Indication: 0b01,
  SuccessResponse: 0b10,
  ErrorResponse: 0b11,
} as const;
export type StunClass = (typeof StunClass)[keyof typeof StunClass];

export const STUN_CLASS_NAMES: Record<StunClass, string> = {
  0: 'request',
  1: 'indication',
  2: 'success response',
  3: 'error response',
};

/** RFC 8489 §18.2 (Binding). TURN registers 0x003.. on its own registry. */
export const StunMethod = {
  Binding: 0x001,
} as const;

/**
 * Attribute types. 0x0000-0x7FFF are comprehension-required, 0x8000-0xFFFF comprehension-optional (RFC 8489 §14).
 */
export const Attr = {
  MAPPED_ADDRESS: 0x0001, // RFC 8489 §14.1
  RESPONSE_ADDRESS: 0x0002, // RFC 3489 §11.2.2 (deprecated, not implemented)
  CHANGE_REQUEST: 0x0003, // RFC 5780 §7.2
  SOURCE_ADDRESS: 0x0004, // RFC 3489 §11.2.5 (legacy)
  CHANGED_ADDRESS: 0x0005, // RFC 3489 §11.2.3 (legacy)
  USERNAME: 0x0006, // RFC 8489 §14.3
  MESSAGE_INTEGRITY: 0x0008, // RFC 8489 §14.5
  ERROR_CODE: 0x0009, // RFC 8489 §14.8
  UNKNOWN_ATTRIBUTES: 0x000a, // RFC 8489 §14.13
  REALM: 0x0014, // RFC 8489 §14.9
  NONCE: 0x0015, // RFC 8489 §14.10
  MESSAGE_INTEGRITY_SHA256: 0x001c, // RFC 8489 §14.6
  PASSWORD_ALGORITHM: 0x001d, // RFC 8489 §14.12
  USERHASH: 0x001e, // RFC 8489 §14.4
  XOR_MAPPED_ADDRESS: 0x0020, // RFC 8489 §14.2
  PADDING: 0x0026, // RFC 5780 §7.6
  RESPONSE_PORT: 0x0027, // RFC 5780 §7.5
  PASSWORD_ALGORITHMS: 0x8002, // RFC 8489 §14.11
  ALTERNATE_DOMAIN: 0x8003, // RFC 8489 §14.16
  SOFTWARE: 0x8022, // RFC 8489 §14.14
  ALTERNATE_SERVER: 0x8023, // RFC 8489 §14.15
  FINGERPRINT: 0x8028, // RFC 8489 §14.7
  RESPONSE_ORIGIN: 0x802b, // RFC 5780 §7.3
  OTHER_ADDRESS: 0x802c, // RFC 5780 §7.4
} as const;

/** RFC 8489 §14: comprehension-required attributes have the top bit clear. */
export function isComprehensionRequired(type: number): boolean {
  return type < 0x8000;
}

/** RFC 8489 §14.8 error codes (TURN adds 403, 437, 441, 442, 443, 486, 508). */
export const ErrorCode = {
  TryAlternate: 300,
  BadRequest: 400,
  Unauthorized: 401,
  UnknownAttribute: 420,
  StaleNonce: 438,
  ServerError: 500,
} as const;

export const ERROR_REASONS: Record<number, string> = {
  300: 'Try Alternate',
  400: 'Bad Request',
  401: 'Unauthorized',
  420: 'Unknown Attribute',
  438: 'Stale Nonce',
  500: 'Server Error',
};

/** RFC 8489 §18.5: PASSWORD-ALGORITHM values. */
export const PasswordAlgorithm = {
  MD5: 0x0001,
  SHA256: 0x0002,
} as const;

/** RFC 8489 §9.2: security feature set bits in the nonce cookie (bit 0 is the most significant of the 24). */
export const SecurityFeature = {
  PasswordAlgorithms: 1 << 23,
  UsernameAnonymity: 1 << 22,
} as const;

/** RFC 5780 §7.2: CHANGE-REQUEST flags. */
export const ChangeRequestFlag = {
  ChangeIp: 0x04,
  ChangePort: 0x02,
} as const;
