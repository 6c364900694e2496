/**
 * ICMPv4 and the IPv4 header, as a pure codec (no I/O). Enough for TTL discovery (reading Time Exceeded that quotes
 * our TCP SYN) and for ICMP hole punching (echo requests, forged Time Exceeded quoting an echo request).
 *
 *   RFC 791 §3.1   IPv4 header
 *   RFC 792        ICMP: Echo / Echo Reply (type 8 / 0), Destination Unreachable (3), Time Exceeded (11)
 *   RFC 1071       the Internet checksum
 *   RFC 1812 §4.3.2.3  routers quote as much of the original datagram as fits in 576 bytes (RFC 792 asks for the
 *                  IP header + 64 bits, which is what the decoders below rely on)
 *
 * Decoders never throw on bad input: they return null (the caller drops the packet).
 */
import { formatIPv4, parseIPv4 } from './ip.js';

export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACHABLE = 3;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
/** RFC 792: Time Exceeded code 0 = TTL exceeded in transit, 1 = fragment reassembly time exceeded. */
export const TIME_EXCEEDED_IN_TRANSIT = 0;

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** RFC 1071: one's complement of the one's complement sum of 16-bit words (odd byte padded with zero). */
export function internetChecksum(data: Uint8Array, initial = 0): number {
  let sum = initial;
  const n = data.length;
  for (let i = 0; i + 1 < n; i += 2) sum += (data[i]! << 8) | data[i + 1]!;
  if (n % 2 === 1) sum += data[n - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface Ipv4Header {
  headerLength: number;
  totalLength: number;
  identification: number;
  ttl: number;
  protocol: number;
  source: string;
  destination: string;
  checksumValid: boolean;
}

/** RFC 791 §3.1. Returns the header and a view of the payload (clipped to what is present), or null. */
export function decodeIpv4(packet: Uint8Array): { header: Ipv4Header; payload: Uint8Array } | null {
  if (packet.length < 20) return null;
  const version = packet[0]! >> 4;
  const ihl = (packet[0]! & 0x0f) * 4;
  if (version !== 4 || ihl < 20 || packet.length < ihl) return null;
  const totalLength = (packet[2]! << 8) | packet[3]!;
  const end = Math.min(packet.length, Math.max(totalLength, ihl));
  return {
    header: {
      headerLength: ihl,
      totalLength,
      identification: (packet[4]! << 8) | packet[5]!,
      ttl: packet[8]!,
      protocol: packet[9]!,
      source: formatIPv4(packet, 12),
      destination: formatIPv4(packet, 16),
      checksumValid: internetChecksum(packet.subarray(0, ihl)) === 0,
    },
    payload: packet.subarray(ihl, end),
  };
}

export interface Ipv4EncodeOptions {
  source: string;
  destination: string;
  protocol: number;
  ttl?: number;
  identification?: number;
  /** RFC 791 flags: Don't Fragment. */
  dontFragment?: boolean;
}

/** RFC 791 §3.1: a 20-byte header (no options) followed by `payload`, with the header checksum computed. */
export function encodeIpv4(options: Ipv4EncodeOptions, payload: Uint8Array): Buffer {
  const src = parseIPv4(options.source);
  const dst = parseIPv4(options.destination);
  if (!src || !dst) throw new TypeError('encodeIpv4: source and destination must be IPv4 addresses');
  const total = 20 + payload.length;
  if (total > 0xffff) throw new RangeError('encodeIpv4: packet too long');
  const out = Buffer.alloc(total);
  out[0] = 0x45;
  out.writeUInt16BE(total, 2);
  out.writeUInt16BE((options.identification ?? 0) & 0xffff, 4);
  out.writeUInt16BE(options.dontFragment ? 0x4000 : 0, 6);
  out[8] = options.ttl ?? 64;
  out[9] = options.protocol;
  out.set(src, 12);
  out.set(dst, 16);
  out.writeUInt16BE(internetChecksum(out.subarray(0, 20)), 10);
  out.set(payload, 20);
  return out;
}

/** What an ICMP error says about the datagram it quotes (RFC 792: its IP header + the first 64 bits of data). */
export interface QuotedDatagram {
  header: Ipv4Header;
  /** TCP/UDP ports (the first 32 bits of both headers). */
  sourcePort?: number;
  destinationPort?: number;
  /** TCP sequence number (bits 32..63 of the TCP header). */
  tcpSequence?: number;
  /** ICMP echo identifier / sequence when the quoted datagram is an echo request. */
  echoIdentifier?: number;
  echoSequence?: number;
  echoType?: number;
  /** The quoted bytes as they arrived (a view into the input). */
  raw: Uint8Array;
}

export type IcmpMessage =
  | {
      kind: 'echo-request' | 'echo-reply';
      type: number;
      code: number;
      identifier: number;
      sequence: number;
      data: Uint8Array;
      checksumValid: boolean;
    }
  | {
      kind: 'time-exceeded' | 'dest-unreachable';
      type: number;
      code: number;
      quoted: QuotedDatagram | null;
      checksumValid: boolean;
    }
  | { kind: 'other'; type: number; code: number; checksumValid: boolean };

function decodeQuoted(raw: Uint8Array): QuotedDatagram | null {
  const ip = decodeIpv4(raw);
  if (!ip) return null;
  // The quoted total length describes the original datagram, which is usually longer than the quote: take all
  // that is present after the quoted header.
  const l4 = raw.subarray(ip.header.headerLength);
  const q: QuotedDatagram = { header: ip.header, raw };
  if ((ip.header.protocol === IPPROTO_TCP || ip.header.protocol === IPPROTO_UDP) && l4.length >= 4) {
    q.sourcePort = (l4[0]! << 8) | l4[1]!;
    q.destinationPort = (l4[2]! << 8) | l4[3]!;
    if (ip.header.protocol === IPPROTO_TCP && l4.length >= 8) {
      q.tcpSequence = ((l4[4]! << 24) | (l4[5]! << 16) | (l4[6]! << 8) | l4[7]!) >>> 0;
    }
  } else if (ip.header.protocol === IPPROTO_ICMP && l4.length >= 8) {
    q.echoType = l4[0]!;
    q.echoIdentifier = (l4[4]! << 8) | l4[5]!;
    q.echoSequence = (l4[6]! << 8) | l4[7]!;
  }
  return q;
}

/** RFC 792: decodes one ICMP message (without the IP header). Null when shorter than the 8-byte ICMP header. */
export function decodeIcmp(msg: Uint8Array): IcmpMessage | null {
  if (msg.length < 8) return null;
  const type = msg[0]!;
  const code = msg[1]!;
  const checksumValid = internetChecksum(msg) === 0;
  switch (type) {
    case ICMP_ECHO_REQUEST:
    case ICMP_ECHO_REPLY:
      return {
        kind: type === ICMP_ECHO_REQUEST ? 'echo-request' : 'echo-reply',
        type,
        code,
        identifier: (msg[4]! << 8) | msg[5]!,
        sequence: (msg[6]! << 8) | msg[7]!,
        data: msg.subarray(8),
        checksumValid,
      };
    case ICMP_TIME_EXCEEDED:
    case ICMP_DEST_UNREACHABLE:
      // bytes 4..7 are unused (Time Exceeded) or next-hop MTU (RFC 1191); the quoted datagram follows.
      return {
        kind: type === ICMP_TIME_EXCEEDED ? 'time-exceeded' : 'dest-unreachable',
        type,
        code,
        quoted: decodeQuoted(msg.subarray(8)),
        checksumValid,
      };
    default:
      return { kind: 'other', type, code, checksumValid };
  }
}

/** A packet read from an IPv4 raw ICMP socket: IP header + ICMP message. Null when either does not decode. */
export function decodeIcmpPacket(packet: Uint8Array): { ip: Ipv4Header; icmp: IcmpMessage } | null {
  const ip = decodeIpv4(packet);
  if (!ip || ip.header.protocol !== IPPROTO_ICMP) return null;
  const icmp = decodeIcmp(ip.payload);
  return icmp ? { ip: ip.header, icmp } : null;
}

/** RFC 792 Echo / Echo Reply message with its checksum. */
export function encodeEcho(options: {
  type?: typeof ICMP_ECHO_REQUEST | typeof ICMP_ECHO_REPLY;
  identifier: number;
  sequence: number;
  data?: Uint8Array;
}): Buffer {
  const data = options.data ?? new Uint8Array(0);
  const out = Buffer.alloc(8 + data.length);
  out[0] = options.type ?? ICMP_ECHO_REQUEST;
  out.writeUInt16BE(options.identifier & 0xffff, 4);
  out.writeUInt16BE(options.sequence & 0xffff, 6);
  out.set(data, 8);
  out.writeUInt16BE(internetChecksum(out), 2);
  return out;
}

/**
 * RFC 792 Time Exceeded (type 11) quoting `quoted` (the original IP header + at least 64 bits of its data),
 * with its checksum. The ICMP hole punching client forges one of these quoting the server's echo request.
 */
export function encodeTimeExceeded(quoted: Uint8Array, code = TIME_EXCEEDED_IN_TRANSIT): Buffer {
  const out = Buffer.alloc(8 + quoted.length);
  out[0] = ICMP_TIME_EXCEEDED;
  out[1] = code;
  out.set(quoted, 8);
  out.writeUInt16BE(internetChecksum(out), 2);
  return out;
}

/** What ICMP hole punching quotes: the server's echo request as it left the server's NAT (RFC 792 Echo). */
export interface EchoQuote {
  /** Source of the echo request: the server's public (NAT) address. */
  source: string;
  /** Where the echo request went: the unreachable probe address. */
  destination: string;
  identifier: number;
  sequence: number;
  /** TTL in the quoted header; a router that drops a datagram for TTL quotes it as it arrived (1). */
  ttl?: number;
}

/**
 * RFC 792 Time Exceeded (type 11, code 0) that a router would send for the server's echo request: the ICMP message
 * (without the outer IP header) quoting a 20-byte IPv4 header + the 8-byte echo header (RFC 792: "Internet Header
 * + 64 bits of Original Data Datagram"), every checksum computed (RFC 1071). The quoted datagram is exactly the
 * 28-byte echo request the server sends (no echo data), as in the pwnat paper and tool.
 */
export function encodeEchoTimeExceeded(quote: EchoQuote): Buffer {
  const echo = encodeEcho({ identifier: quote.identifier, sequence: quote.sequence });
  const inner = encodeIpv4(
    { source: quote.source, destination: quote.destination, protocol: IPPROTO_ICMP, ttl: quote.ttl ?? 1 },
    echo,
  );
  return encodeTimeExceeded(inner, TIME_EXCEEDED_IN_TRANSIT);
}

/**
 * The echo request an ICMP hole punching server is waiting to hear about, read from a received Time Exceeded:
 * null unless `msg` is a checksum-valid Time Exceeded (code 0) quoting an ICMP Echo Request.
 */
export function quotedEchoOf(
  msg: IcmpMessage,
): { destination: string; source: string; identifier: number; sequence: number } | null {
  if (msg.kind !== 'time-exceeded' || msg.code !== TIME_EXCEEDED_IN_TRANSIT || !msg.checksumValid) return null;
  const q = msg.quoted;
  if (!q || q.header.protocol !== IPPROTO_ICMP || q.echoType !== ICMP_ECHO_REQUEST) return null;
  if (q.echoIdentifier === undefined || q.echoSequence === undefined) return null;
  return {
    destination: q.header.destination,
    source: q.header.source,
    identifier: q.echoIdentifier,
    sequence: q.echoSequence,
  };
}
