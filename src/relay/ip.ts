// Relay-side address helpers under the names the relay code uses; text <-> bytes and IP ranges are the codecs' one
// implementation (src/wire/ip.ts).
import { addressToBytes, formatAddress } from '../wire/ip.js';

/** Parses an IPv4 or IPv6 literal into 4 or 16 bytes, or null. IPv6 zone ids (%eth0) are dropped. */
export const parseIp = addressToBytes;

/** Formats 4 or 16 address bytes (RFC 5952 for IPv6, IPv4-mapped as ::ffff:a.b.c.d as node:net prints them). */
export const formatIp = formatAddress;

/** '::ffff:1.2.3.4' → '1.2.3.4' (how a dual-stack socket names IPv4 peers) so policy and permissions see one
 * spelling. A plain string check, kept cheap for per-packet use; other text (zones included) passes unchanged. */
export function normalizeIp(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

// CIDR blocks and embedded IPv4: the one IP-range helper (src/wire/ip.ts), shared with the tunnel's destination policy.
export { parseCidr, cidrContains, embeddedIpv4, type Cidr } from '../wire/ip.js';

/**
 * The unit per-source limits count in: an IPv4 address, or an IPv6 /64 (one subscriber usually holds a whole /64,
 * so counting single IPv6 addresses would give one attacker 2^64 budgets).
 */
export function sourceKey(address: string): string {
  const a = normalizeIp(address);
  if (!a.includes(':')) return a;
  const b = parseIp(a);
  if (!b || b.length !== 16) return a;
  return `${Buffer.from(b.subarray(0, 8)).toString('hex')}/64`;
}
