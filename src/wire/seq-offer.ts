/**
 * A SeqOffer (src/traversal/tcp-seq.ts) as 32 bytes, for signalling channels that carry opaque bytes (e.g. a future
 * rendezvous field). Pure codec, no I/O; the decoder returns null on anything malformed.
 *
 *   0  version (1)          1  flags: 1 MSS, 2 window scale, 4 SACK-permitted, 8 timestamps (RFC 9293 §3.2,
 *   2  private IPv4 (4)     6  private port (2)                     RFC 7323 §2-3, RFC 2018 §2)
 *   8  public IPv4 (4)     12  public port (2)
 *  14  ISN (4)             18  window (2)        20  MSS (2)        22  window scale (1)   23  zero
 *  24  TSval (4)           28  TSecr (4)
 */
import { formatIPv4, parseIPv4 } from './ip.js';
import type { TcpOptions } from './tcp.js';

export const SEQ_OFFER_VERSION = 1;
export const SEQ_OFFER_BYTES = 32;

export interface SeqOfferFields {
  private: { address: string; port: number };
  public: { address: string; port: number };
  isn: number;
  window: number;
  options: TcpOptions;
}

const F_MSS = 1;
const F_WSCALE = 2;
const F_SACK = 4;
const F_TS = 8;

function putIpv4(out: Buffer, off: number, address: string): void {
  const bytes = parseIPv4(address);
  if (!bytes) throw new TypeError(`not an IPv4 address: ${address}`);
  out.set(bytes, off);
}

/** Encodes an offer (throws TypeError/RangeError on values that do not fit). */
export function encodeSeqOffer(o: SeqOfferFields): Buffer {
  const out = Buffer.alloc(SEQ_OFFER_BYTES);
  let flags = 0;
  out[0] = SEQ_OFFER_VERSION;
  putIpv4(out, 2, o.private.address);
  out.writeUInt16BE(o.private.port, 6);
  putIpv4(out, 8, o.public.address);
  out.writeUInt16BE(o.public.port, 12);
  out.writeUInt32BE(o.isn >>> 0, 14);
  out.writeUInt16BE(o.window, 18);
  if (o.options.mss !== undefined) {
    flags |= F_MSS;
    out.writeUInt16BE(o.options.mss, 20);
  }
  if (o.options.windowScale !== undefined) {
    flags |= F_WSCALE;
    out.writeUInt8(o.options.windowScale, 22);
  }
  if (o.options.sackPermitted) flags |= F_SACK;
  if (o.options.timestamps) {
    flags |= F_TS;
    out.writeUInt32BE(o.options.timestamps.value >>> 0, 24);
    out.writeUInt32BE(o.options.timestamps.echo >>> 0, 28);
  }
  out[1] = flags;
  return out;
}

/** Decodes 32 bytes into an offer; null when the version, flags or ports are wrong. */
export function decodeSeqOffer(b: Uint8Array): SeqOfferFields | null {
  if (b.length !== SEQ_OFFER_BYTES || b[0] !== SEQ_OFFER_VERSION || (b[1]! & ~0x0f) !== 0 || b[23] !== 0) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const flags = b[1]!;
  const privatePort = dv.getUint16(6);
  const publicPort = dv.getUint16(12);
  if (privatePort === 0 || publicPort === 0) return null;
  const options: TcpOptions = {};
  if (flags & F_MSS) options.mss = dv.getUint16(20);
  if (flags & F_WSCALE) {
    if (b[22]! > 14) return null; // RFC 7323 §2.3
    options.windowScale = b[22]!;
  }
  if (flags & F_SACK) options.sackPermitted = true;
  if (flags & F_TS) options.timestamps = { value: dv.getUint32(24), echo: dv.getUint32(28) };
  return {
    private: { address: formatIPv4(b, 2), port: privatePort },
    public: { address: formatIPv4(b, 8), port: publicPort },
    isn: dv.getUint32(14),
    window: dv.getUint16(18),
    options,
  };
}
