/**
 * Credentials (RFC 8489 §9): short-term and long-term keys, USERHASH, and the nonce cookie that carries the
 * security feature set (§9.2).
 *
 * String preparation: RFC 8489 names the PRECIS OpaqueString profile (RFC 8265); its own test vector (Appendix B.1)
 * and RFC 5769 §2.4 expect the SASLprep (RFC 4013) result ("The\u00ADM\u00AAtr\u2168" -> "TheMatrIX"). We implement
 * the subset that both agree on for real passwords, plus what the vectors need:
 *   - non-ASCII space characters (RFC 3454 C.1.2) map to U+0020 (both profiles);
 *   - "commonly mapped to nothing" characters (RFC 3454 B.1, e.g. U+00AD soft hyphen) are removed (SASLprep);
 *   - Unicode NFKC normalisation (SASLprep; OpaqueString uses NFC, which NFKC subsumes for these inputs);
 *   - prohibited characters (controls, private use, non-characters, surrogates, RFC 3454 C.2-C.9) are rejected with
 *     NatpunchError('BAD_ARGUMENT').
 * Not implemented: the bidirectional-text rule (RFC 3454 §6) and unassigned-code-point checks.
 */
import { createHash } from 'node:crypto';
import { NatpunchError } from '../../util/errors.js';
import { NONCE_COOKIE, PasswordAlgorithm } from './constants.js';

// Character classes here list code points one by one on purpose (RFC 3454 tables), combining marks included.
const NON_ASCII_SPACE = /[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/g;
// eslint-disable-next-line no-misleading-character-class
const MAPPED_TO_NOTHING = /[\u00AD\u034F\u1806\u180B-\u180D\u200B-\u200D\u2060\uFE00-\uFE0F\uFEFF]/g;
// RFC 3454 C.2.1, C.2.2, C.3, C.4, C.5, C.6, C.7, C.8, C.9 (the parts expressible per code point).
const PROHIBITED =
  // eslint-disable-next-line no-control-regex, no-misleading-character-class
  /[\u0000-\u001F\u007F-\u009F\u0340\u0341\u06DD\u070F\u180E\u200C-\u200F\u2028-\u202E\u2060-\u2063\u206A-\u206F\u2FF0-\u2FFB\uD800-\uDFFF\uE000-\uF8FF\uFDD0-\uFDEF\uFFF9-\uFFFF]|[\u{1D173}-\u{1D17A}\u{E0001}\u{E0020}-\u{E007F}\u{F0000}-\u{10FFFF}]|[\u{1FFFE}\u{1FFFF}\u{2FFFE}\u{2FFFF}\u{3FFFE}\u{3FFFF}\u{4FFFE}\u{4FFFF}\u{5FFFE}\u{5FFFF}\u{6FFFE}\u{6FFFF}\u{7FFFE}\u{7FFFF}\u{8FFFE}\u{8FFFF}\u{9FFFE}\u{9FFFF}\u{AFFFE}\u{AFFFF}\u{BFFFE}\u{BFFFF}\u{CFFFE}\u{CFFFF}\u{DFFFE}\u{DFFFF}\u{EFFFE}\u{EFFFF}]/u;

/** SASLprep-style preparation of a password, realm or username (see the module comment for the subset). */
export function saslprep(text: string): string {
  const mapped = text.replace(NON_ASCII_SPACE, ' ').replace(MAPPED_TO_NOTHING, '').normalize('NFKC');
  if (PROHIBITED.test(mapped)) throw new NatpunchError('BAD_ARGUMENT', 'credential contains a prohibited character');
  return mapped;
}

/** RFC 8489 names OpaqueString (RFC 8265 §4.2); natpunch applies the same preparation as `saslprep`. */
export const opaqueString = saslprep;

/** §9.1.1: the short-term key is the prepared password itself. */
export function shortTermKey(password: string): Uint8Array {
  return Buffer.from(saslprep(password), 'utf8');
}

export type PasswordAlgorithmName = 'MD5' | 'SHA-256';

export function passwordAlgorithmName(value: number): PasswordAlgorithmName | undefined {
  return value === PasswordAlgorithm.MD5 ? 'MD5' : value === PasswordAlgorithm.SHA256 ? 'SHA-256' : undefined;
}

/**
 * §9.2.2: key = MD5(username ":" OpaqueString(realm) ":" OpaqueString(password)), or SHA-256 of the same when the
 * SHA-256 password algorithm was negotiated (§18.5). `username` is used as sent in USERNAME.
 */
export function longTermKey(
  username: string,
  realm: string,
  password: string,
  algorithm: PasswordAlgorithmName = 'MD5',
): Uint8Array {
  const input = `${username}:${opaqueString(realm)}:${opaqueString(password)}`;
  return createHash(algorithm === 'MD5' ? 'md5' : 'sha256')
    .update(input, 'utf8')
    .digest();
}

/** §14.4: userhash = SHA-256(OpaqueString(username) ":" OpaqueString(realm)). */
export function userhash(username: string, realm: string): Uint8Array {
  return createHash('sha256')
    .update(`${opaqueString(username)}:${opaqueString(realm)}`, 'utf8')
    .digest();
}

/**
 * §9.2: a nonce that starts with "obMatJos2" then 4 base64 characters holding 24 bits of security features
 * (SecurityFeature.PasswordAlgorithms, SecurityFeature.UsernameAnonymity), then the server's own opaque part.
 */
export function nonceWithFeatures(features: number, opaque: string): string {
  const bits = Buffer.from([(features >> 16) & 0xff, (features >> 8) & 0xff, features & 0xff]);
  return `${NONCE_COOKIE}${bits.toString('base64')}${opaque}`;
}

/** The security feature bits of a nonce, or undefined when it has no nonce cookie. */
export function nonceFeatures(nonce: string): number | undefined {
  if (!nonce.startsWith(NONCE_COOKIE) || nonce.length < NONCE_COOKIE.length + 4) return undefined;
  const b64 = nonce.slice(NONCE_COOKIE.length, NONCE_COOKIE.length + 4);
  if (!/^[A-Za-z0-9+/]{4}$/.test(b64)) return undefined;
  const bits = Buffer.from(b64, 'base64');
  return (bits[0]! << 16) | (bits[1]! << 8) | bits[2]!;
}
