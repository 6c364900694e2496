import { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import { NatpunchError } from '../util/errors.js';

/**
 * natpunch's stream multiplexer: many reliable, ordered, duplex streams over ONE encrypted, reliable, message-
 * framed channel (a secret-stream over a UDX stream: each write arrives as one message, so frames need no length).
 *
 * Frame: u8 type | u32be stream id | payload. Stream ids: the initiator opens odd ids, the responder even ids
 * (the HTTP/2 convention, RFC 9113 §5.1.1), so both can open streams without negotiation.
 * Flow control is per stream and credit-based (as HTTP/2 WINDOW_UPDATE, RFC 9113 §6.9): a sender may have at
 * most the credit the receiver granted in flight; the receiver grants more as its reader consumes. A paused reader
 * therefore holds at most one window in memory, whatever the writer does.
 */
export const FrameType = {
  HELLO: 0x01, // responder → initiator: the session is accepted (payload: u8 version)
  REJECT: 0x02, // responder → initiator: refused (payload: utf8 error code)
  OPEN: 0x03,
  DATA: 0x04,
  CREDIT: 0x05, // payload: u32be bytes granted
  END: 0x06, // half-close: no more data from the sender on this stream
  RESET: 0x07, // abort this stream only (payload: utf8 reason)
  PING: 0x08, // payload: u32be sequence
  PONG: 0x09,
  GOODBYE: 0x0a, // the session is being closed on purpose
} as const;

export const MUX_VERSION = 1;
export const FRAME_HEADER_BYTES = 5;
/** Largest DATA payload per frame: big enough to keep per-message costs low, small enough to interleave streams. */
export const MAX_FRAME_PAYLOAD = 64 * 1024;
/** Largest frame accepted from the peer; anything bigger is a protocol violation and ends the session. */
export const MAX_FRAME_BYTES = FRAME_HEADER_BYTES + MAX_FRAME_PAYLOAD;
/** Per-stream credit: 1 MiB covers the bandwidth-delay product of 100 Mbit/s at 80 ms RTT (one window in flight). */
export const DEFAULT_STREAM_WINDOW = 1024 * 1024;
/** Streams a peer may have open at once in one session; more are reset. With the window this bounds a session's
 *  receive buffers (256 × 1 MiB worst case with every reader paused). */
export const DEFAULT_MAX_STREAMS = 256;

export function encodeFrame(type: number, id: number, payload?: Uint8Array): Buffer {
  const buf = Buffer.allocUnsafe(FRAME_HEADER_BYTES + (payload?.length ?? 0));
  buf[0] = type;
  buf.writeUInt32BE(id, 1);
  if (payload) buf.set(payload, FRAME_HEADER_BYTES);
  return buf;
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/** Where the mux writes frames: returns false when the caller should wait for `waitDrain()`. */
export interface FrameSink {
  writeFrame(frame: Buffer): boolean;
  waitDrain(): Promise<void>;
  readonly closed: boolean;
}

export interface MuxOptions {
  isInitiator: boolean;
  window?: number;
  maxStreams?: number;
}

/** One multiplexed stream: a Node Duplex. `destroy(err)` resets only this stream. */
export class MuxStream extends Duplex {
  readonly id: number;
  #mux: Mux;
  #sendCredit: number;
  #creditWaiters: Array<() => void> = [];
  #received = 0;
  #granted: number;
  #window: number;
  #localEnded = false;
  #remoteEnded = false;
  #remoteReset = false;
  bytesSent = 0;
  bytesReceived = 0;

  constructor(mux: Mux, id: number, window: number) {
    super({ allowHalfOpen: true, readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024 });
    this.id = id;
    this.#mux = mux;
    this.#window = window;
    this.#sendCredit = window;
    this.#granted = window;
  }

  /** Bytes this side may still send before the peer grants more. */
  get sendCredit(): number {
    return this.#sendCredit;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#sendAll(chunk).then(() => cb(), (err: Error) => cb(err));
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.#sendAll(Buffer.concat(chunks.map((c) => c.chunk))).then(() => cb(), (err: Error) => cb(err));
  }

  async #sendAll(chunk: Buffer): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      while (this.#sendCredit === 0) {
        await new Promise<void>((resolve) => this.#creditWaiters.push(resolve));
        if (this.destroyed) throw new NatpunchError('STREAM_CLOSED', 'stream closed while waiting to send');
      }
      const n = Math.min(chunk.length - off, this.#sendCredit, MAX_FRAME_PAYLOAD);
      this.#sendCredit -= n;
      this.bytesSent += n;
      await this.#mux.sendFrame(FrameType.DATA, this.id, chunk.subarray(off, off + n));
      off += n;
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#localEnded = true;
    this.#mux.sendControl(FrameType.END, this.id);
    cb();
  }

  override _read(): void {
    this.#maybeGrant();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const clean = this.#localEnded && this.#remoteEnded;
    if (!clean && !this.#remoteReset) {
      this.#mux.sendControl(FrameType.RESET, this.id, Buffer.from(err ? (err.message || 'error').slice(0, 200) : 'closed'));
    }
    this.#wakeWriters();
    this.#mux.forget(this.id);
    cb(err);
  }

  #wakeWriters(): void {
    const waiters = this.#creditWaiters;
    this.#creditWaiters = [];
    for (const w of waiters) w();
  }

  /** Receiver side: grant the peer more credit once the reader consumed half a window. */
  #maybeGrant(): void {
    if (this.#remoteEnded || this.destroyed) return;
    const consumed = this.#received - this.readableLength;
    if (this.#granted - consumed <= this.#window / 2) {
      const delta = consumed + this.#window - this.#granted;
      this.#granted += delta;
      this.#mux.sendControl(FrameType.CREDIT, this.id, u32(delta));
    }
  }

  /** @internal frames from the peer */
  onData(payload: Buffer): void {
    if (this.#remoteEnded) return this.#violation('data after end');
    this.#received += payload.length;
    this.bytesReceived += payload.length;
    if (this.#received > this.#granted) return this.#violation('peer exceeded its flow-control credit');
    // Copy: the payload is a view into the decrypted message buffer.
    if (this.push(Buffer.from(payload))) this.#maybeGrant();
  }

  onCredit(n: number): void {
    this.#sendCredit += n;
    if (this.#sendCredit > 0x7fffffff) return this.#violation('credit overflow');
    this.#wakeWriters();
  }

  onEnd(): void {
    if (this.#remoteEnded) return;
    this.#remoteEnded = true;
    this.push(null);
  }

  onReset(reason: string): void {
    this.#remoteReset = true;
    this.destroy(new NatpunchError('STREAM_RESET', `the peer reset the stream: ${reason}`));
  }

  #violation(what: string): void {
    this.destroy(new NatpunchError('PROTOCOL', `stream ${this.id}: ${what}`));
  }
}

/**
 * The multiplexer state of one session. Emits 'stream' (MuxStream opened by the peer), 'ping'/'pong' (seq),
 * 'hello', 'reject' (code), 'goodbye', 'protocol-error' (NatpunchError).
 */
export class Mux extends EventEmitter {
  #sink: FrameSink;
  #streams = new Map<number, MuxStream>();
  #nextId: number;
  #window: number;
  #maxStreams: number;
  #isInitiator: boolean;
  #dead: Error | null = null;

  constructor(sink: FrameSink, options: MuxOptions) {
    super();
    this.#sink = sink;
    this.#isInitiator = options.isInitiator;
    this.#nextId = options.isInitiator ? 1 : 2;
    this.#window = options.window ?? DEFAULT_STREAM_WINDOW;
    this.#maxStreams = options.maxStreams ?? DEFAULT_MAX_STREAMS;
  }

  get streamCount(): number {
    return this.#streams.size;
  }

  openStream(): MuxStream {
    if (this.#dead) throw this.#dead;
    if (this.#nextId > 0xfffffffd) throw new NatpunchError('PROTOCOL', 'stream ids exhausted for this session');
    const id = this.#nextId;
    this.#nextId += 2;
    const stream = new MuxStream(this, id, this.#window);
    this.#streams.set(id, stream);
    this.sendControl(FrameType.OPEN, id);
    return stream;
  }

  /** Writes a frame, waiting while the encrypted channel is over its buffer limit. */
  async sendFrame(type: number, id: number, payload?: Uint8Array): Promise<void> {
    if (this.#dead) throw this.#dead;
    if (this.#sink.closed) throw new NatpunchError('SESSION_CLOSED', 'the session is closed');
    if (!this.#sink.writeFrame(encodeFrame(type, id, payload))) await this.#sink.waitDrain();
  }

  /** Small control frames ignore backpressure (they are what relieves it). */
  sendControl(type: number, id: number, payload?: Uint8Array): void {
    if (this.#dead || this.#sink.closed) return;
    this.#sink.writeFrame(encodeFrame(type, id, payload));
  }

  forget(id: number): void {
    this.#streams.delete(id);
  }

  /** Handles one frame (one decrypted message) from the peer. */
  onFrame(frame: Buffer): void {
    if (this.#dead) return;
    if (frame.length < FRAME_HEADER_BYTES || frame.length > MAX_FRAME_BYTES) {
      this.emit('protocol-error', new NatpunchError('PROTOCOL', `bad frame length ${frame.length}`));
      return;
    }
    const type = frame[0]!;
    const id = frame.readUInt32BE(1);
    const payload = frame.subarray(FRAME_HEADER_BYTES);
    switch (type) {
      case FrameType.OPEN: {
        const peerParity = this.#isInitiator ? 0 : 1;
        if (id === 0 || id % 2 !== peerParity || this.#streams.has(id)) {
          this.emit('protocol-error', new NatpunchError('PROTOCOL', `bad stream id ${id} in OPEN`));
          return;
        }
        if (this.#streams.size >= this.#maxStreams) {
          this.sendControl(FrameType.RESET, id, Buffer.from('too many streams'));
          return;
        }
        const stream = new MuxStream(this, id, this.#window);
        this.#streams.set(id, stream);
        this.emit('stream', stream);
        return;
      }
      case FrameType.DATA:
        this.#streams.get(id)?.onData(payload);
        return; // data for a stream we already reset is dropped
      case FrameType.CREDIT:
        if (payload.length === 4) this.#streams.get(id)?.onCredit(payload.readUInt32BE(0));
        return;
      case FrameType.END:
        this.#streams.get(id)?.onEnd();
        return;
      case FrameType.RESET: {
        const s = this.#streams.get(id);
        if (s) {
          this.#streams.delete(id);
          s.onReset(payload.toString('utf8').slice(0, 200));
        }
        return;
      }
      case FrameType.PING:
        if (payload.length === 4) this.sendControl(FrameType.PONG, 0, payload);
        this.emit('ping');
        return;
      case FrameType.PONG:
        if (payload.length === 4) this.emit('pong', payload.readUInt32BE(0));
        return;
      case FrameType.HELLO:
        this.emit('hello', payload[0] ?? 0);
        return;
      case FrameType.REJECT:
        this.emit('reject', payload.toString('utf8').slice(0, 64));
        return;
      case FrameType.GOODBYE:
        this.emit('goodbye');
        return;
      default:
        return; // unknown frame types are ignored so later versions can add some
    }
  }

  /** The session died: every open stream errors with `err` (never a silent hang). */
  fail(err: Error): void {
    if (this.#dead) return;
    this.#dead = err;
    const streams = [...this.#streams.values()];
    this.#streams.clear();
    for (const s of streams) s.destroy(err);
  }

  /** Orderly local close: open streams are destroyed without an error. */
  closeAll(): void {
    if (this.#dead) return;
    this.#dead = new NatpunchError('SESSION_CLOSED', 'the session is closed');
    const streams = [...this.#streams.values()];
    this.#streams.clear();
    for (const s of streams) s.destroy();
  }
}
