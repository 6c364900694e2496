import { isIPv4, isIPv6 } from 'node:net';

/** Parses an IPv4 or IPv6 literal into 4 or 16 bytes, or null. Zone ids (%eth0) are dropped. */
export function parseIp(text: string): Uint8Array | null {
  const addr = text.includes('%') ? text.slice(0, text.indexOf('%')) : text;
  if (isIPv4(addr)) {
    const out = new Uint8Array(4);
    const parts = addr.split('.');
    for (let i = 0; i < 4; i++) out[i] = Number(parts[i]);
    return out;
  }
  if (!isIPv6(addr)) return null;
  const out = new Uint8Array(16);
  let head = addr;
  let tailV4: Uint8Array | null = null;
  const lastColon = addr.lastIndexOf(':');
  if (addr.indexOf('.', lastColon) >= 0) {
    tailV4 = parseIp(addr.slice(lastColon + 1));
    if (!tailV4) return null;
    head = addr.slice(0, lastColon + 1) + '0:0';
  }
  const [left, right] = head.includes('::') ? head.split('::') : [head, undefined];
  const lp = left ? left.split(':') : [];
  const rp = right ? right.split(':') : [];
  const groups: number[] = [];
  for (const g of lp) groups.push(parseInt(g, 16));
  if (right !== undefined) for (let i = lp.length + rp.length; i < 8; i++) groups.push(0);
  for (const g of rp) groups.push(parseInt(g, 16));
  if (groups.length !== 8) return null;
  for (let i = 0; i < 8; i++) {
    out[i * 2] = groups[i]! >> 8;
    out[i * 2 + 1] = groups[i]! & 0xff;
  }
  if (tailV4) out.set(tailV4, 12);
  return out;
}

/** Formats 4 or 16 address bytes the way node:net prints them (RFC 5952 compressed for IPv6). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  // RFC 5952 §4.2: compress the longest run (≥ 2) of zero groups, the first one on ties.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  const left = hex.slice(0, bestStart).join(':');
  const right = hex.slice(bestStart + bestLen).join(':');
  return `${left}::${right}`;
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
