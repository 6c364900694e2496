/**
 * Framing for STUN over a byte stream (RFC 8489 §6.2.2: messages back to back, each self-delimiting by its length
 * field). TURN's ChannelData messages (RFC 8656 §12.5) share the stream: 4-byte header (channel number
 * 0x4000-0x4FFF, length) and, over TCP, padding to a multiple of 4 that the length does not count.
 */
import { NatpunchError } from '../../util/errors.js';
import { HEADER_LENGTH } from './constants.js';

export type StreamFrame =
  { kind: 'stun'; data: Uint8Array } | { kind: 'channel-data'; channel: number; data: Uint8Array };

/** Upper bound on buffered bytes: one maximal message plus one read. */
export const DEFAULT_MAX_FRAME_BUFFER = 0xffff + HEADER_LENGTH + 65536;

export class StunFramer {
  #buf: Uint8Array = new Uint8Array(0);
  readonly #max: number;

  constructor(options: { maxBuffer?: number } = {}) {
    this.#max = options.maxBuffer ?? DEFAULT_MAX_FRAME_BUFFER;
  }

  get buffered(): number {
    return this.#buf.length;
  }

  /**
   * Adds bytes and returns every complete frame (views into the received chunks). Throws NatpunchError
   * ('STUN_DECODE') when the stream cannot be STUN/ChannelData (the caller should close the connection).
   */
  push(chunk: Uint8Array): StreamFrame[] {
    let buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const frames: StreamFrame[] = [];
    for (;;) {
      if (buf.length < 4) break;
      const first = buf[0]!;
      const length = (buf[2]! << 8) | buf[3]!;
      if (first <= 3) {
        // RFC 8489 §5: STUN, length excludes the 20-byte header and is a multiple of 4.
        if (length % 4 !== 0) throw new NatpunchError('STUN_DECODE', 'STUN stream: length not a multiple of 4');
        const total = HEADER_LENGTH + length;
        if (buf.length < total) break;
        frames.push({ kind: 'stun', data: buf.subarray(0, total) });
        buf = buf.subarray(total);
      } else if (first >= 0x40 && first <= 0x4f) {
        // RFC 8656 §12.5: ChannelData, padded to 4 bytes over stream transports.
        const total = 4 + ((length + 3) & ~3);
        if (buf.length < total) break;
        frames.push({ kind: 'channel-data', channel: (first << 8) | buf[1]!, data: buf.subarray(4, 4 + length) });
        buf = buf.subarray(total);
      } else {
        throw new NatpunchError('STUN_DECODE', `STUN stream: unexpected first byte 0x${first.toString(16)}`);
      }
    }
    if (buf.length > this.#max) throw new NatpunchError('STUN_DECODE', 'STUN stream: frame buffer limit exceeded');
    this.#buf = buf;
    return frames;
  }
}

/** Encodes a ChannelData message (RFC 8656 §12.4); `stream` adds the padding required over TCP. */
export function encodeChannelData(channel: number, data: Uint8Array, stream = false): Buffer {
  if (channel < 0x4000 || channel > 0x4fff) throw new NatpunchError('BAD_ARGUMENT', `channel ${channel} out of range`);
  if (data.length > 0xffff) throw new NatpunchError('BAD_ARGUMENT', 'ChannelData payload longer than 65535 bytes');
  const total = 4 + (stream ? (data.length + 3) & ~3 : data.length);
  const out = Buffer.alloc(total);
  out.writeUInt16BE(channel, 0);
  out.writeUInt16BE(data.length, 2);
  out.set(data, 4);
  return out;
}
