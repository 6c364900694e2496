/**
 * TCP segments over IPv4, as a pure codec (no I/O): enough to read the kernel's own SYN (its ISN and options) and to
 * craft the SYN-ACK of the sequence-number techniques (STUNT #1, NATBlaster).
 *
 *   RFC 9293 §3.1     TCP header format (flags, data offset, window, urgent pointer)
 *   RFC 9293 §3.1     checksum over the IPv4 pseudo-header (source, destination, zero, protocol, TCP length)
 *   RFC 9293 §3.2     options: End of List (0), No-Operation (1), Maximum Segment Size (2, SYN only)
 *   RFC 7323 §2, §3   Window Scale (3, SYN only) and Timestamps (8: TSval, TSecr)
 *   RFC 2018 §2       SACK-Permitted (4, SYN only)
 *
 * Decoders never throw on bad input: they return null (the caller drops the packet).
 */
import { decodeIpv4, encodeIpv4, internetChecksum, IPPROTO_TCP, type Ipv4Header } from './icmp.js';

/** RFC 9293 §3.1 control bits. */
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;

const OPT_EOL = 0;
const OPT_NOP = 1;
const OPT_MSS = 2;
const OPT_WSCALE = 3;
const OPT_SACK_PERMITTED = 4;
const OPT_TIMESTAMPS = 8;

/** RFC 7323 §2.3: a shift count above 14 is treated as 14. */
export const MAX_WINDOW_SCALE = 14;

export interface TcpTimestamps {
  /** TSval: the sender's clock. */
  value: number;
  /** TSecr: the TSval echoed back (0 in a SYN). */
  echo: number;
}

export interface TcpOptions {
  mss?: number;
  windowScale?: number;
  sackPermitted?: boolean;
  timestamps?: TcpTimestamps;
}

export interface TcpSegment {
  sourcePort: number;
  destinationPort: number;
  /** Sequence number (unsigned 32-bit). */
  seq: number;
  /** Acknowledgment number (meaningful when ACK is set). */
  ack: number;
  flags: number;
  window: number;
  urgent?: number;
  options?: TcpOptions;
  payload?: Uint8Array;
}

export interface DecodedTcp extends Required<Omit<TcpSegment, 'payload'>> {
  payload: Uint8Array;
  headerLength: number;
  checksum: number;
}

function ipv4Bytes(address: string): number[] | null {
  const parts = address.split('.');
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return null;
    out.push(Number(p));
  }
  return out;
}

/** RFC 9293 §3.1: the sum of the IPv4 pseudo-header, to start the TCP checksum with. */
function pseudoHeaderSum(source: string, destination: string, tcpLength: number): number {
  const s = ipv4Bytes(source);
  const d = ipv4Bytes(destination);
  if (!s || !d) throw new TypeError('TCP checksum: source and destination must be IPv4 addresses');
  return (
    ((s[0]! << 8) | s[1]!) +
    ((s[2]! << 8) | s[3]!) +
    ((d[0]! << 8) | d[1]!) +
    ((d[2]! << 8) | d[3]!) +
    IPPROTO_TCP +
    tcpLength
  );
}

/** The TCP checksum of `segment` (its checksum field counted as is: 0 when computing, the value when verifying). */
export function tcpChecksum(segment: Uint8Array, source: string, destination: string): number {
  return internetChecksum(segment, pseudoHeaderSum(source, destination, segment.length));
}

/** Encodes options in the order Linux puts them in a SYN (MSS, SACK-Permitted + Timestamps, NOP + Window Scale). */
export function encodeTcpOptions(o: TcpOptions): Buffer {
  const parts: number[] = [];
  if (o.mss !== undefined) {
    if (!Number.isInteger(o.mss) || o.mss < 0 || o.mss > 0xffff)
      throw new RangeError('TCP option: MSS must be 0..65535');
    parts.push(OPT_MSS, 4, o.mss >> 8, o.mss & 0xff);
  }
  if (o.timestamps) {
    if (o.sackPermitted) parts.push(OPT_SACK_PERMITTED, 2);
    else parts.push(OPT_NOP, OPT_NOP);
    const v = o.timestamps.value >>> 0;
    const e = o.timestamps.echo >>> 0;
    parts.push(
      OPT_TIMESTAMPS,
      10,
      v >>> 24,
      (v >>> 16) & 0xff,
      (v >>> 8) & 0xff,
      v & 0xff,
      e >>> 24,
      (e >>> 16) & 0xff,
      (e >>> 8) & 0xff,
      e & 0xff,
    );
  } else if (o.sackPermitted) {
    parts.push(OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2);
  }
  if (o.windowScale !== undefined) {
    if (!Number.isInteger(o.windowScale) || o.windowScale < 0 || o.windowScale > 255)
      throw new RangeError('TCP option: window scale must be 0..255');
    parts.push(OPT_NOP, OPT_WSCALE, 3, o.windowScale);
  }
  while (parts.length % 4 !== 0) parts.push(OPT_EOL);
  return Buffer.from(parts);
}

/** Decodes the options area; unknown options are skipped, a malformed list yields null. */
export function decodeTcpOptions(area: Uint8Array): TcpOptions | null {
  const o: TcpOptions = {};
  let i = 0;
  while (i < area.length) {
    const kind = area[i]!;
    if (kind === OPT_EOL) break;
    if (kind === OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= area.length) return null;
    const len = area[i + 1]!;
    if (len < 2 || i + len > area.length) return null;
    const at = i + 2;
    switch (kind) {
      case OPT_MSS:
        if (len !== 4) return null;
        o.mss = (area[at]! << 8) | area[at + 1]!;
        break;
      case OPT_WSCALE:
        if (len !== 3) return null;
        o.windowScale = area[at]!;
        break;
      case OPT_SACK_PERMITTED:
        if (len !== 2) return null;
        o.sackPermitted = true;
        break;
      case OPT_TIMESTAMPS: {
        if (len !== 10) return null;
        const dv = new DataView(area.buffer, area.byteOffset + at, 8);
        o.timestamps = { value: dv.getUint32(0), echo: dv.getUint32(4) };
        break;
      }
      default:
        break; // RFC 9293 §3.2: options a receiver does not implement are skipped by their length
    }
    i += len;
  }
  return o;
}

/** RFC 9293 §3.1: header + options + payload, checksummed over the pseudo-header of `source` → `destination`. */
export function encodeTcp(seg: TcpSegment, source: string, destination: string): Buffer {
  for (const p of [seg.sourcePort, seg.destinationPort]) {
    if (!Number.isInteger(p) || p < 0 || p > 0xffff) throw new RangeError('TCP port must be 0..65535');
  }
  const opts = seg.options ? encodeTcpOptions(seg.options) : Buffer.alloc(0);
  const headerLength = 20 + opts.length;
  if (headerLength > 60) throw new RangeError('TCP options too long');
  const payload = seg.payload ?? new Uint8Array(0);
  const out = Buffer.alloc(headerLength + payload.length);
  out.writeUInt16BE(seg.sourcePort, 0);
  out.writeUInt16BE(seg.destinationPort, 2);
  out.writeUInt32BE(seg.seq >>> 0, 4);
  out.writeUInt32BE(seg.ack >>> 0, 8);
  out.writeUInt16BE(((headerLength / 4) << 12) | (seg.flags & 0x1ff), 12);
  out.writeUInt16BE(seg.window & 0xffff, 14);
  out.writeUInt16BE((seg.urgent ?? 0) & 0xffff, 18);
  out.set(opts, 20);
  out.set(payload, headerLength);
  out.writeUInt16BE(tcpChecksum(out, source, destination), 16);
  return out;
}

/** Decodes a TCP segment (no checksum check: see tcpChecksumValid). null when malformed. */
export function decodeTcp(segment: Uint8Array): DecodedTcp | null {
  if (segment.length < 20) return null;
  const dv = new DataView(segment.buffer, segment.byteOffset, segment.length);
  const headerLength = (segment[12]! >> 4) * 4;
  if (headerLength < 20 || headerLength > segment.length) return null;
  const options = decodeTcpOptions(segment.subarray(20, headerLength));
  if (!options) return null;
  return {
    sourcePort: dv.getUint16(0),
    destinationPort: dv.getUint16(2),
    seq: dv.getUint32(4),
    ack: dv.getUint32(8),
    flags: dv.getUint16(12) & 0x1ff,
    window: dv.getUint16(14),
    checksum: dv.getUint16(16),
    urgent: dv.getUint16(18),
    options,
    headerLength,
    payload: segment.subarray(headerLength),
  };
}

/** True when the segment's checksum is right for that pseudo-header (a correct segment sums to zero). */
export function tcpChecksumValid(segment: Uint8Array, source: string, destination: string): boolean {
  return tcpChecksum(segment, source, destination) === 0;
}

/** An IPv4 packet carrying TCP, decoded; null when it is not one or is malformed. */
export function decodeIpv4Tcp(packet: Uint8Array): { ip: Ipv4Header; tcp: DecodedTcp } | null {
  const d = decodeIpv4(packet);
  if (!d || d.header.protocol !== IPPROTO_TCP) return null;
  const tcp = decodeTcp(d.payload);
  return tcp ? { ip: d.header, tcp } : null;
}

/** A complete IPv4 packet (RFC 791 header, DF set as Linux does for TCP) carrying `seg`. */
export function encodeIpv4Tcp(
  seg: TcpSegment,
  ip: { source: string; destination: string; ttl?: number; identification?: number },
): Buffer {
  return encodeIpv4({ ...ip, protocol: IPPROTO_TCP, dontFragment: true }, encodeTcp(seg, ip.source, ip.destination));
}

/** What a SYN told about its sender: enough to answer it (or to stand in for its sender). */
export interface SynInfo {
  /** The SYN's initial sequence number. */
  isn: number;
  /** Its (unscaled, RFC 7323 §2.2) window. */
  window: number;
  options: TcpOptions;
}

/**
 * The SYN-ACK that `sender` (whose own SYN was `sender`) would send in answer to `receiver`'s SYN, as in a TCP
 * simultaneous open (RFC 9293 §3.5, figure 8): seq = sender's ISN, ack = receiver's ISN + 1. Options follow the
 * negotiation rules: each of Window Scale (RFC 7323 §2.2), SACK-Permitted (RFC 2018 §2) and Timestamps
 * (RFC 7323 §3.2) appears only when BOTH SYNs carried it, with the sender's own values, so both kernels end up with
 * the settings their own SYN announced; TSecr echoes the receiver's TSval (RFC 7323 §4.3; Linux checks it lies
 * between the SYN's timestamp and now).
 */
export function synAckSegment(
  sender: SynInfo,
  receiver: SynInfo,
  ports: { sourcePort: number; destinationPort: number },
): TcpSegment {
  const s = sender.options;
  const r = receiver.options;
  const options: TcpOptions = {};
  if (s.mss !== undefined) options.mss = s.mss;
  if (s.windowScale !== undefined && r.windowScale !== undefined)
    options.windowScale = Math.min(s.windowScale, MAX_WINDOW_SCALE);
  if (s.sackPermitted && r.sackPermitted) options.sackPermitted = true;
  if (s.timestamps && r.timestamps) options.timestamps = { value: s.timestamps.value, echo: r.timestamps.value };
  return {
    ...ports,
    seq: sender.isn >>> 0,
    ack: (receiver.isn + 1) >>> 0,
    flags: TCP_SYN | TCP_ACK,
    window: sender.window,
    options,
  };
}
