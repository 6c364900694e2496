/**
 * IP address text <-> bytes, the one implementation for the codecs (STUN, TURN, PCP, NAT-PMP, rendezvous, ICMP):
 * pure, without node:net. IPv6 text follows RFC 5952 (lower case, longest run of zero groups compressed,
 * IPv4-mapped addresses printed as ::ffff:a.b.c.d).
 */

export type AddressFamily = 'IPv4' | 'IPv6';

function parseIPv4Into(text: string, out: Uint8Array, offset: number): boolean {
  // Hand-rolled (no regex, no split): this runs for every response the server sends.
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x2e; // virtual trailing '.'
    if (c === 0x2e) {
      if (digits === 0 || part > 3) return false;
      out[offset + part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      // A leading zero ("010") reads as octal in inet_aton and as decimal elsewhere: refuse the ambiguity.
      if (digits === 1 && value === 0) return false;
      value = value * 10 + (c - 0x30);
      if (++digits > 3 || value > 255) return false;
    } else {
      return false;
    }
  }
  return part === 4;
}

/** Parses dotted-quad IPv4 text into 4 bytes; null when it is not one. */
export function parseIPv4(text: string): Uint8Array | null {
  const out = new Uint8Array(4);
  return parseIPv4Into(text, out, 0) ? out : null;
}

/** Parses IPv6 text (with ::, embedded IPv4 and an optional %zone, which is dropped) into 16 bytes. */
export function parseIPv6(text: string): Uint8Array | null {
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  if (text.length < 2 || text.length > 45) return null;
  const out = new Uint8Array(16);
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const parseGroups = (s: string, allowV4: boolean): number[] | null => {
    if (s === '') return [];
    const groups = s.split(':');
    const words: number[] = [];
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i]!;
      if (allowV4 && i === groups.length - 1 && g.includes('.')) {
        const v4 = parseIPv4(g);
        if (!v4) return null;
        words.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      words.push(parseInt(g, 16));
    }
    return words;
  };
  let words: number[];
  if (halves.length === 2) {
    const head = parseGroups(halves[0]!, false);
    const tail = parseGroups(halves[1]!, true);
    if (!head || !tail || head.length + tail.length > 7) return null;
    words = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseGroups(text, true);
    if (!all || all.length !== 8) return null;
    words = all;
  }
  for (let i = 0; i < 8; i++) {
    out[i * 2] = words[i]! >> 8;
    out[i * 2 + 1] = words[i]! & 0xff;
  }
  return out;
}

/** Dotted-quad text of the 4 bytes at `offset`. */
export function formatIPv4(b: Uint8Array, offset = 0): string {
  return `${b[offset]}.${b[offset + 1]}.${b[offset + 2]}.${b[offset + 3]}`;
}

/** RFC 5952 §4 canonical text. */
export function formatIPv6(b: Uint8Array, offset = 0): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((b[offset + i * 2]! << 8) | b[offset + i * 2 + 1]!);
  // RFC 5952 §5: IPv4-mapped addresses keep their dotted tail.
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${formatIPv4(b, offset + 12)}`;
  }
  // §4.2.3: compress the longest run (first if tied) of two or more zero groups.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Address text to bytes (4 or 16); null when it is neither family. */
export function addressToBytes(address: string): Uint8Array | null {
  return address.includes(':') ? parseIPv6(address) : parseIPv4(address);
}

/** 4 or 16 address bytes to text (dotted quad, or RFC 5952 IPv6). */
export function formatAddress(bytes: Uint8Array): string {
  return bytes.length === 4 ? formatIPv4(bytes) : formatIPv6(bytes);
}

/** '::ffff:1.2.3.4' -> '1.2.3.4' (a dual-stack socket reports IPv4 peers this way); zones are dropped. */
export function normalizeAddress(address: string): string {
  const zone = address.indexOf('%');
  if (zone >= 0) address = address.slice(0, zone);
  if (address.includes(':')) {
    const b = parseIPv6(address);
    if (!b) return address;
    const text = formatIPv6(b);
    return text.startsWith('::ffff:') && text.includes('.') ? text.slice(7) : text;
  }
  return address;
}

export function familyOf(address: string): AddressFamily {
  return address.includes(':') ? 'IPv6' : 'IPv4';
}

// ---------------------------------------------------------------------------------------------------------------
// IP ranges: the one CIDR implementation (TURN peer policy, tunnel destination policy).

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
  const bytes = addressToBytes(addr);
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
