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
  for (let i = 0; i < 8; ) {
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
