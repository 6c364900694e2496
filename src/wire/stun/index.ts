/** STUN wire codec (RFC 8489, RFC 5389, RFC 3489 legacy attributes, RFC 5780). Pure, no I/O. */
export * from './constants.js';
export * from './address.js';
export * from './registry.js';
export * from './message.js';
export * from './credentials.js';
export * from './framing.js';
