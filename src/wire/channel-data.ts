/**
 * TURN ChannelData messages (RFC 8656 §12.4, §12.5). Pure codec, no I/O.
 *
 *    0                   1                   2                   3
 *   |         Channel Number        |            Length             |
 *   |                     Application Data (Length bytes)           |
 *
 * The first byte of a ChannelData message is 0x40..0x4F (channel numbers 0x4000..0x4FFF, RFC 8656 §12), which is
 * how it is told apart from STUN (0..3) on a shared socket.
 */

/** RFC 8656 §12: the channel numbers a client may bind. 0x5000..0xFFFF are reserved (RFC 7983 collisions). */
export const CHANNEL_MIN = 0x4000;
export const CHANNEL_MAX = 0x4fff;
/**
 * RFC 5766 §11 allowed 0x4000..0x7FFF and older clients (coturn's turnutils_uclient among them) still bind channels
 * above 0x4FFF; a server may accept them (first byte 0x40..0x7F) where nothing else shares those first bytes.
 */
export const CHANNEL_MAX_RFC5766 = 0x7fff;
/** RFC 8656 §12.4: 2-byte channel number + 2-byte length. */
export const CHANNEL_DATA_HEADER = 4;
/** The largest payload the 16-bit Length field can describe. */
export const CHANNEL_DATA_MAX_PAYLOAD = 0xffff;

export function isValidChannel(n: number): boolean {
  return Number.isInteger(n) && n >= CHANNEL_MIN && n <= CHANNEL_MAX;
}

/** True when the first byte says "ChannelData" (RFC 8656 §12 / RFC 7983 §7: 64..79). */
export function isChannelData(buf: Uint8Array): boolean {
  return buf.length >= CHANNEL_DATA_HEADER && buf[0]! >= 0x40 && buf[0]! <= 0x4f;
}

export interface ChannelDataView {
  channel: number;
  /** A view into the input buffer (no copy); copy it if it must outlive the packet. */
  data: Buffer;
}

/**
 * Decodes a ChannelData message received over UDP (RFC 8656 §12.5): padding is optional; a Length larger than what
 * arrived means the message is malformed and is dropped (returns null); bytes after Length are padding and ignored.
 * Never throws.
 */
export function decodeChannelDataUdp(buf: Buffer): ChannelDataView | null {
  if (buf.length < CHANNEL_DATA_HEADER) return null;
  const channel = buf.readUInt16BE(0);
  if (channel < CHANNEL_MIN || channel > CHANNEL_MAX) return null;
  const length = buf.readUInt16BE(2);
  if (length > buf.length - CHANNEL_DATA_HEADER) return null;
  return { channel, data: buf.subarray(CHANNEL_DATA_HEADER, CHANNEL_DATA_HEADER + length) };
}

/** The padded size of a ChannelData message with `length` payload bytes over TCP/TLS (RFC 8656 §12.5: multiple of 4). */
export function channelDataStreamSize(length: number): number {
  return (CHANNEL_DATA_HEADER + length + 3) & ~3;
}

export interface EncodeChannelDataOptions {
  /** Pad to a multiple of 4 bytes: required over TCP/TLS (RFC 8656 §12.5), optional (and off here) over UDP. */
  pad?: boolean;
}

/** Encodes a ChannelData message into a new buffer. Padding bytes are zero. */
export function encodeChannelData(channel: number, data: Uint8Array, options: EncodeChannelDataOptions = {}): Buffer {
  if (!isValidChannel(channel)) throw new RangeError(`channel number ${channel} is outside 0x4000..0x4FFF`);
  if (data.length > CHANNEL_DATA_MAX_PAYLOAD)
    throw new RangeError(`ChannelData payload of ${data.length} bytes is too large`);
  const size = options.pad ? channelDataStreamSize(data.length) : CHANNEL_DATA_HEADER + data.length;
  const out = Buffer.allocUnsafe(size);
  writeChannelDataHeader(out, 0, channel, data.length);
  out.set(data, CHANNEL_DATA_HEADER);
  out.fill(0, CHANNEL_DATA_HEADER + data.length);
  return out;
}

/** Writes the 4-byte header at `offset` (for callers that frame into a buffer they reuse). */
export function writeChannelDataHeader(out: Buffer, offset: number, channel: number, length: number): void {
  out.writeUInt16BE(channel, offset);
  out.writeUInt16BE(length, offset + 2);
}

/**
 * How many bytes the next frame at the head of a TCP/TLS stream occupies (RFC 8656 §12.5 for ChannelData, padded to
 * 4; RFC 8489 §6.2.2 for STUN: 20-byte header + length), or 0 when more bytes are needed, or -1 when the stream is
 * not a TURN stream (first byte neither STUN nor ChannelData) and must be closed.
 */
export function streamFrameSize(buf: Uint8Array, offset = 0): number {
  const avail = buf.length - offset;
  if (avail < 1) return 0;
  const b0 = buf[offset]!;
  // ChannelData (0x40..0x7F: RFC 8656's 0x40..0x4F plus the RFC 5766 range older clients use).
  if (b0 >= 0x40 && b0 <= 0x7f) {
    if (avail < CHANNEL_DATA_HEADER) return 0;
    const length = (buf[offset + 2]! << 8) | buf[offset + 3]!;
    const size = channelDataStreamSize(length);
    return avail >= size ? size : 0;
  }
  if (b0 <= 3) {
    if (avail < 20) return 0;
    const length = (buf[offset + 2]! << 8) | buf[offset + 3]!;
    const size = 20 + length;
    return avail >= size ? size : 0;
  }
  return -1;
}

/**
 * Splits a byte stream into STUN / ChannelData frames (RFC 8656 §12.5, RFC 8489 §6.2.2). Feed it chunks; it calls
 * `onFrame` with views of whole frames (ChannelData frames include their padding) and keeps the remainder.
 * Returns false (and stops) when the stream carries something that is neither, or a frame exceeds `maxFrame`.
 */
export class TurnStreamFramer {
  #pending: Buffer | null = null;
  readonly maxFrame: number;

  constructor(maxFrame = 0xffff + 20) {
    this.maxFrame = maxFrame;
  }

  push(chunk: Buffer, onFrame: (frame: Buffer) => void): boolean {
    const buf = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
    this.#pending = null;
    let off = 0;
    for (;;) {
      const size = streamFrameSize(buf, off);
      if (size < 0) return false;
      if (size === 0) break;
      if (size > this.maxFrame) return false;
      onFrame(buf.subarray(off, off + size));
      off += size;
    }
    if (off < buf.length) {
      // Peek at what is known of the partial frame's size so a lying length cannot grow the buffer unbounded.
      if (buf.length - off >= 4) {
        const b0 = buf[off]!;
        const length = buf.readUInt16BE(off + 2);
        const need = b0 <= 3 ? 20 + length : channelDataStreamSize(length);
        if (need > this.maxFrame) return false;
      }
      this.#pending = Buffer.from(buf.subarray(off));
    }
    return true;
  }

  /** Bytes held waiting for the rest of a frame. */
  get buffered(): number {
    return this.#pending?.length ?? 0;
  }
}
