// Relay-side address helpers: CIDR blocks and embedded-IPv4 detection for the peer policy. Text <-> bytes is the
// codecs' one implementation (src/wire/ip.ts), under the names the relay code uses.
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

export interface Cidr {
  /** 4 or 16 bytes, host bits cleared. */
  bytes: Uint8Array;
  prefix: number;
  text: string;
}

/** Parses "10.0.0.0/8", "fe80::/10" or a bare address (a /32 or /128). Throws RangeError on bad input. */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const addr = slash >= 0 ? text.slice(0, slash) : text;
  const bytes = parseIp(addr);
  if (!bytes) throw new RangeError(`"${text}" is not an IP address or CIDR block`);
  const max = bytes.length * 8;
  const prefix = slash >= 0 ? Number(text.slice(slash + 1)) : max;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (slash >= 0 && text.slice(slash + 1) === '')) {
    throw new RangeError(`"${text}" has an invalid prefix length (0..${max})`);
  }
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    bytes[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return { bytes, prefix, text };
}

export function cidrContains(cidr: Cidr, addr: Uint8Array): boolean {
  if (cidr.bytes.length !== addr.length) return false;
  let bits = cidr.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((addr[i]! & mask) !== cidr.bytes[i]) return false;
  }
  return true;
}

/** The IPv4 address an IPv6 address embeds by a well-known mapping (v4-mapped, v4-compatible, NAT64, 6to4), or null. */
export function embeddedIpv4(addr: Uint8Array): Uint8Array | null {
  if (addr.length !== 16) return null;
  const zeros = (from: number, to: number) => {
    for (let i = from; i < to; i++) if (addr[i] !== 0) return false;
    return true;
  };
  // ::ffff:a.b.c.d (RFC 4291 §2.5.5.2) and the deprecated ::a.b.c.d (§2.5.5.1)
  if (zeros(0, 10) && ((addr[10] === 0xff && addr[11] === 0xff) || (addr[10] === 0 && addr[11] === 0))) {
    return addr.subarray(12, 16);
  }
  // 64:ff9b::/96 NAT64 well-known prefix (RFC 6052) and 64:ff9b:1::/48 local-use (RFC 8215)
  if (addr[0] === 0x00 && addr[1] === 0x64 && addr[2] === 0xff && addr[3] === 0x9b) return addr.subarray(12, 16);
  // 2002::/16 6to4 (RFC 3056): bytes 2..5
  if (addr[0] === 0x20 && addr[1] === 0x02) return addr.subarray(2, 6);
  return null;
}

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
