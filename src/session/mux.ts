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
 * The window grows where the path needs it (as QUIC receivers tune theirs, RFC 9000 §4.1-4.2): a sender that ran
 * out of credit with data to send says so once (BLOCKED, as QUIC's STREAM_DATA_BLOCKED, RFC 9000 §19.13); if the
 * reader has kept up (what it received is not sitting unread), the window, not the reader, held the stream back, and
 * the receiver doubles it, up to MAX_STREAM_WINDOW per stream and MAX_SESSION_WINDOW_GROWTH per session, telling the
 * sender the new size in the CREDIT frame (so the sender knows what the peer has consumed: its grants run exactly
 * one window ahead). A peer that knows neither ignores BLOCKED (an unknown type) and never sees a grown window.
 */
export const FrameType = {
  HELLO: 0x01, // responder → initiator: the session is accepted (payload: u8 version)
  REJECT: 0x02, // responder → initiator: refused (payload: utf8 error code)
  OPEN: 0x03,
  DATA: 0x04,
  CREDIT: 0x05, // payload: u32be bytes granted [, u32be the receiver's window from now on, when it grew]
  END: 0x06, // half-close: no more data from the sender on this stream
  RESET: 0x07, // abort this stream only (payload: utf8 reason)
  PING: 0x08, // payload: u32be sequence
  PONG: 0x09,
  GOODBYE: 0x0a, // the session is being closed on purpose
  RESUME: 0x0b, // after a transport swap: u16 count, then per stream id u32, received u64, granted u64, flags u8
  DATAGRAM: 0x0c, // a datagram carried as a frame (TCP sessions, which have no unreliable channel); stream id 0
  BLOCKED: 0x0d, // sender → receiver: out of credit with data to send; payload: u64be the credit limit it hit
} as const;

export const MUX_VERSION = 1;
export const FRAME_HEADER_BYTES = 5;
/** Largest DATA payload per frame: big enough to keep per-message costs low, small enough to interleave streams. */
export const MAX_FRAME_PAYLOAD = 64 * 1024;
/** Largest frame accepted from the peer; anything bigger is a protocol violation and ends the session. */
export const MAX_FRAME_BYTES = FRAME_HEADER_BYTES + MAX_FRAME_PAYLOAD;
/**
 * Per-stream credit a stream starts with: 1 MiB is the bandwidth-delay product of 100 Mbit/s at 80 ms. A fast or
 * long path needs more than the BDP (UDX's BBR keeps up to twice its BDP estimate in flight, and a bottleneck queue
 * adds its delay): measured on the lab's 100 Mbit/s, 40 ms link, a stream held to 1 MiB reached 0.93x of
 * secret-stream without flow control. The window grows from here on demand (see BLOCKED above).
 */
export const DEFAULT_STREAM_WINDOW = 1024 * 1024;
/** Largest window a stream grows to: the BDP of 1 Gbit/s at 130 ms. */
export const MAX_STREAM_WINDOW = 16 * 1024 * 1024;
/** All streams of a session together grow their windows by at most this much beyond their starting windows. */
export const MAX_SESSION_WINDOW_GROWTH = 32 * 1024 * 1024;
/** Streams a peer may have open at once in one session; more are reset. With the windows this bounds a session's
 *  receive buffers (256 × 1 MiB + MAX_SESSION_WINDOW_GROWTH worst case with every reader paused). */
export const DEFAULT_MAX_STREAMS = 256;
const RESUME_ENTRY_BYTES = 21;

/** DATA payloads at least this large are handed to the reader without a copy (see MuxStream.onData). */
const ZERO_COPY_MIN_BYTES = 4096;
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

function u64(n: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64BE(BigInt(n), 0);
  return b;
}

/** Where the mux writes frames: returns false when the caller should wait for `waitDrain()`. */
export interface FrameSink {
  writeFrame(frame: Buffer): boolean;
  /**
   * Optional: a buffer of `n` bytes for the next frame, which writeFrame then sends without copying it again (the
   * session's sink hands out secret-stream's in-place encryption buffer). DATA frames are built in it: header plus
   * one copy of the payload, the only copy of it on the sending side.
   */
  allocFrame?(n: number): Buffer;
  waitDrain(): Promise<void>;
  readonly closed: boolean;
}

export interface MuxOptions {
  isInitiator: boolean;
  window?: number;
  maxStreams?: number;
}

/** Per-stream state a peer reports in a RESUME frame. */
export interface ResumeEntry {
  id: number;
  received: number;
  granted: number;
  gotEnd: boolean;
}

/**
 * One multiplexed stream: a Node Duplex. `destroy(err)` resets only this stream.
 * The sender keeps what it sent until the peer's credit shows it was consumed (at most one window), so after a
 * transport swap (path change) it can resend exactly what the peer did not receive.
 */
export class MuxStream extends Duplex {
  readonly id: number;
  #mux: Mux;
  #creditWaiters: Array<() => void> = [];
  #received = 0;
  #granted: number;
  /** The window this side grants (receiver); it grows on the peer's BLOCKED. */
  #window: number;
  /** How far this stream's window grew beyond the session's starting window (returned to the mux on close). */
  #grown = 0;
  /** The BLOCKED limit the window last grew on. */
  #grewAt = -1;
  #sent = 0;
  #peerGranted: number;
  /** The window the peer grants (sender): its grants run this far ahead of what its reader consumed. */
  #peerWindow: number;
  /** The credit limit we last reported BLOCKED at (one BLOCKED per limit). */
  #blockedAt = -1;
  #retained: Array<{ off: number; buf: Buffer }> = [];
  #openedByUs: boolean;
  #localEnded = false;
  #endSent = false;
  #remoteEnded = false;
  #remoteReset = false;
  bytesSent = 0;
  bytesReceived = 0;

  constructor(mux: Mux, id: number, window: number, openedByUs: boolean) {
    super({ allowHalfOpen: true, readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024 });
    this.id = id;
    this.#mux = mux;
    this.#window = window;
    this.#peerWindow = window;
    this.#peerGranted = window;
    this.#granted = window;
    this.#openedByUs = openedByUs;
  }

  /** Bytes this side may still send before the peer grants more. */
  get sendCredit(): number {
    return this.#peerGranted - this.#sent;
  }

  /** The credit window this side grants the peer on this stream (grows on demand, see BLOCKED). */
  get receiveWindow(): number {
    return this.#window;
  }

  /** Bytes kept for resending (sent, not yet known to be consumed by the peer). */
  get retainedBytes(): number {
    return this.#retained.reduce((n, e) => n + e.buf.length, 0);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#sendAll(chunk).then(
      () => cb(),
      (err: Error) => cb(err),
    );
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    // One after the other, not Buffer.concat: joining them was one more copy of every byte written.
    (async () => {
      for (const c of chunks) await this.#sendAll(c.chunk);
    })().then(
      () => cb(),
      (err: Error) => cb(err),
    );
  }

  async #sendAll(chunk: Buffer): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      if (this.#mux.resuming) await this.#mux.gate();
      if (this.destroyed) throw new NatpunchError('STREAM_CLOSED', 'stream closed while sending');
      const credit = this.sendCredit;
      if (credit <= 0) {
        if (this.#blockedAt !== this.#peerGranted) {
          this.#blockedAt = this.#peerGranted;
          this.#mux.sendControl(FrameType.BLOCKED, this.id, u64(this.#peerGranted));
        }
        await new Promise<void>((resolve) => this.#creditWaiters.push(resolve));
        continue;
      }
      const n = Math.min(chunk.length - off, credit, MAX_FRAME_PAYLOAD);
      const piece = chunk.subarray(off, off + n);
      this.#retained.push({ off: this.#sent, buf: piece });
      this.#sent += n;
      this.bytesSent += n;
      off += n;
      if (!this.#mux.writeData(this.id, piece)) await this.#mux.waitDrain();
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#localEnded = true;
    // Behind the gate: during a transport swap the END must follow the resent data.
    void this.#mux.gate().then(() => {
      this.#endSent = true;
      this.#mux.sendControl(FrameType.END, this.id);
      cb();
    });
  }

  override _read(): void {
    this.#maybeGrant();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const clean = this.#localEnded && this.#remoteEnded;
    if (!clean && !this.#remoteReset) {
      this.#mux.sendControl(
        FrameType.RESET,
        this.id,
        Buffer.from(err ? (err.message || 'error').slice(0, 200) : 'closed'),
      );
    }
    this.#retained = [];
    this.#wakeWriters();
    this.#mux.forget(this.id, this.#grown);
    this.#grown = 0;
    cb(err);
  }

  #wakeWriters(): void {
    const waiters = this.#creditWaiters;
    this.#creditWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Receiver side: grant the peer more credit once the reader consumed a quarter of a window (smaller steps than
   * HTTP/2's customary half keep a sender on a long path from waiting out a round trip for each step).
   */
  #maybeGrant(): void {
    if (this.#remoteEnded || this.destroyed) return;
    const consumed = this.#received - this.readableLength;
    if (this.#granted - consumed <= this.#window - this.#window / 4) this.#grant(consumed);
  }

  /**
   * Grants up to one window past what the reader consumed. Once the window grew, every grant carries its size: after
   * a transport swap the sender may have missed the grant that grew it, and learns it again from the next one.
   */
  #grant(consumed: number): void {
    const delta = consumed + this.#window - this.#granted;
    if (delta <= 0) return;
    this.#granted += delta;
    const payload = this.#grown > 0 ? Buffer.concat([u32(delta), u32(this.#window)]) : u32(delta);
    this.#mux.sendControl(FrameType.CREDIT, this.id, payload);
  }

  /**
   * The peer ran out of credit at `limit` with data to send. BLOCKED follows that data on the ordered channel, so
   * everything up to `limit` has arrived by now; if our reader has also consumed nearly all of it, the grants for it
   * were on their way while the sender sat idle: the window is smaller than the path holds. Double it (within the
   * per-stream and per-session bounds) and grant the difference at once. Growth happens once per limit, so a peer
   * repeating BLOCKED gains nothing.
   */
  onBlocked(limit: number): void {
    // A sender is blocked only once it sent everything up to its limit: a BLOCKED ahead of the data is not believed.
    if (this.#remoteEnded || this.destroyed || limit !== this.#received || limit <= this.#grewAt) return;
    if (this.readableLength > this.#window / 4) return; // the reader is behind: the window is doing its job
    const next = Math.min(this.#window * 2, MAX_STREAM_WINDOW);
    const extra = next - this.#window;
    if (extra <= 0 || !this.#mux.reserveWindowGrowth(extra)) return;
    this.#grewAt = limit;
    this.#window = next;
    this.#grown += extra;
    this.#grant(this.#received - this.readableLength);
  }

  /**
   * Drops retained data the peer no longer needs: below `upTo`, by default what it consumed (its grants run one
   * window ahead of its consumption).
   */
  #trim(upTo = this.#peerGranted - this.#peerWindow): void {
    while (this.#retained.length && this.#retained[0]!.off + this.#retained[0]!.buf.length <= upTo)
      this.#retained.shift();
  }

  /** @internal frames from the peer */
  onData(payload: Buffer): void {
    if (this.#remoteEnded) return this.#violation('data after end');
    this.#received += payload.length;
    this.bytesReceived += payload.length;
    if (this.#received > this.#granted) return this.#violation('peer exceeded its flow-control credit');
    // The payload is a view into the decrypted message. Neither secret-stream nor udx-native ever rewrite a buffer
    // they handed out (each message is a fresh allocation or a fresh slice of a receive slab), so a large payload is
    // passed on as it is: copying 64 KiB per frame cost ~9% of the receiver's CPU and most of its garbage. Small
    // payloads are copied, so a reader that keeps them does not keep a whole receive slab alive.
    if (this.push(payload.length >= ZERO_COPY_MIN_BYTES ? payload : Buffer.from(payload))) this.#maybeGrant();
  }

  /** `window`: the peer's window from now on, when it grew (sent with the grant that grew it). */
  onCredit(n: number, window?: number): void {
    if (window !== undefined) {
      if (window < this.#peerWindow || window > MAX_STREAM_WINDOW) return this.#violation('bad window in CREDIT');
      this.#peerWindow = window;
    }
    this.#peerGranted += n;
    if (this.#peerGranted - this.#sent > 0x7fffffff) return this.#violation('credit overflow');
    this.#trim();
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

  /** @internal what this side has of the stream, for the RESUME frame */
  resumeState(): ResumeEntry {
    return { id: this.id, received: this.#received, granted: this.#granted, gotEnd: this.#remoteEnded };
  }

  /** @internal the peer's view after a transport swap: resend what it lacks (`entry` undefined: it lacks the stream). */
  onResume(entry: ResumeEntry | undefined): void {
    if (this.destroyed) return;
    if (!entry) {
      if (this.#openedByUs && this.#peerGranted === this.#peerWindow && this.#received === 0) {
        // Our OPEN never arrived: open again and resend everything.
        this.#mux.sendControl(FrameType.OPEN, this.id);
        this.#resend(0);
        if (this.#endSent) this.#mux.sendControl(FrameType.END, this.id);
        return;
      }
      this.#remoteReset = true;
      this.destroy(new NatpunchError('STREAM_RESET', 'the stream was closed by the peer while the path changed'));
      return;
    }
    if (entry.received > this.#sent) return this.#violation('peer claims more data than was sent');
    this.#peerGranted = Math.max(this.#peerGranted, entry.granted);
    // What it received, exactly (its granted may include a grown window whose CREDIT was lost with the old path).
    this.#trim(entry.received);
    this.#resend(entry.received);
    if (this.#endSent && !entry.gotEnd) this.#mux.sendControl(FrameType.END, this.id);
    this.#wakeWriters();
  }

  #resend(from: number): void {
    const first = this.#retained[0];
    if (from < this.#sent && (!first || first.off > from))
      return this.#violation('data to resend was already released');
    for (const e of this.#retained) {
      const end = e.off + e.buf.length;
      if (end <= from) continue;
      for (let p = Math.max(0, from - e.off); p < e.buf.length; p += MAX_FRAME_PAYLOAD) {
        this.#mux.writeData(this.id, e.buf.subarray(p, Math.min(p + MAX_FRAME_PAYLOAD, e.buf.length)));
      }
    }
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
  /** How far the open streams' windows grew beyond the starting window, together (≤ MAX_SESSION_WINDOW_GROWTH). */
  #windowGrowth = 0;
  #gate: Promise<void> | null = null;
  #openGate: (() => void) | null = null;
  #highestPeerId = 0;

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
    const stream = new MuxStream(this, id, this.#window, true);
    this.#streams.set(id, stream);
    this.sendControl(FrameType.OPEN, id);
    return stream;
  }

  /** True between beginResume() and the peer's RESUME frame. */
  get resuming(): boolean {
    return this.#gate !== null;
  }

  /** Resolves at once, or when a transport swap in progress has finished resending. */
  gate(): Promise<void> {
    return this.#gate ?? Promise.resolve();
  }

  /** Writes one DATA frame; false when the caller should wait for waitDrain(). */
  writeData(id: number, payload: Uint8Array): boolean {
    if (this.#dead) throw this.#dead;
    if (!this.#sink.allocFrame) return this.#sink.writeFrame(encodeFrame(FrameType.DATA, id, payload));
    const frame = this.#sink.allocFrame(FRAME_HEADER_BYTES + payload.length);
    frame[0] = FrameType.DATA;
    frame.writeUInt32BE(id, 1);
    frame.set(payload, FRAME_HEADER_BYTES);
    return this.#sink.writeFrame(frame);
  }

  waitDrain(): Promise<void> {
    return this.#sink.waitDrain();
  }

  /** Small control frames ignore backpressure (they are what relieves it). */
  sendControl(type: number, id: number, payload?: Uint8Array): void {
    if (this.#dead || this.#sink.closed) return;
    this.#sink.writeFrame(encodeFrame(type, id, payload));
  }

  /** @internal a stream closed: forget it and return what its window grew by to the session's budget. */
  forget(id: number, grown = 0): void {
    this.#streams.delete(id);
    this.#windowGrowth -= grown;
  }

  /** @internal takes `n` bytes of the session's window-growth budget; false when it is spent. */
  reserveWindowGrowth(n: number): boolean {
    if (this.#windowGrowth + n > MAX_SESSION_WINDOW_GROWTH) return false;
    this.#windowGrowth += n;
    return true;
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
        const stream = new MuxStream(this, id, this.#window, false);
        this.#streams.set(id, stream);
        if (id > this.#highestPeerId) this.#highestPeerId = id;
        this.emit('stream', stream);
        return;
      }
      case FrameType.DATA:
        this.#streams.get(id)?.onData(payload);
        return; // data for a stream we already reset is dropped
      case FrameType.CREDIT:
        if (payload.length === 4) this.#streams.get(id)?.onCredit(payload.readUInt32BE(0));
        else if (payload.length === 8)
          this.#streams.get(id)?.onCredit(payload.readUInt32BE(0), payload.readUInt32BE(4));
        return;
      case FrameType.BLOCKED:
        if (payload.length === 8) this.#streams.get(id)?.onBlocked(Number(payload.readBigUInt64BE(0)));
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
      case FrameType.RESUME:
        this.#onResume(payload);
        return;
      case FrameType.DATAGRAM:
        this.emit('datagram', Buffer.from(payload));
        return;
      default:
        return; // unknown frame types are ignored so later versions can add some
    }
  }

  /**
   * A new encrypted transport replaced the old one (path change). Closes the gate so no new data goes out, and
   * returns the RESUME frame to send first on the new transport: what we received of each stream.
   */
  beginResume(): Buffer {
    if (!this.#gate) this.#gate = new Promise<void>((resolve) => (this.#openGate = resolve));
    const entries = [...this.#streams.values()].map((st) => st.resumeState());
    const b = Buffer.alloc(2 + entries.length * RESUME_ENTRY_BYTES);
    b.writeUInt16BE(entries.length, 0);
    entries.forEach((e, i) => {
      const o = 2 + i * RESUME_ENTRY_BYTES;
      b.writeUInt32BE(e.id, o);
      b.writeBigUInt64BE(BigInt(e.received), o + 4);
      b.writeBigUInt64BE(BigInt(e.granted), o + 12);
      b[o + 20] = e.gotEnd ? 1 : 0;
    });
    return encodeFrame(FrameType.RESUME, 0, b);
  }

  /** The peer's RESUME: resend what it lacks, reset what it has and we closed, then let new data flow again. */
  #onResume(payload: Buffer): void {
    if (payload.length < 2) return;
    const count = payload.readUInt16BE(0);
    if (payload.length !== 2 + count * RESUME_ENTRY_BYTES) {
      this.emit('protocol-error', new NatpunchError('PROTOCOL', 'bad RESUME frame'));
      return;
    }
    const theirs = new Map<number, ResumeEntry>();
    for (let i = 0; i < count; i++) {
      const o = 2 + i * RESUME_ENTRY_BYTES;
      const id = payload.readUInt32BE(o);
      theirs.set(id, {
        id,
        received: Number(payload.readBigUInt64BE(o + 4)),
        granted: Number(payload.readBigUInt64BE(o + 12)),
        gotEnd: payload[o + 20] === 1,
      });
    }
    for (const st of [...this.#streams.values()]) st.onResume(theirs.get(st.id));
    const ours = this.#isInitiator ? 1 : 0;
    for (const id of theirs.keys()) {
      if (this.#streams.has(id)) continue;
      // A stream of theirs we never heard of (its OPEN was lost): they will open it again. Anything else we closed.
      if (id % 2 !== ours && id > this.#highestPeerId) continue;
      this.sendControl(FrameType.RESET, id, Buffer.from('closed'));
    }
    const open = this.#openGate;
    this.#gate = null;
    this.#openGate = null;
    open?.();
  }

  /** The session died: every open stream errors with `err` (never a silent hang). */
  fail(err: Error): void {
    if (this.#dead) return;
    this.#dead = err;
    this.#openGate?.();
    this.#gate = null;
    const streams = [...this.#streams.values()];
    this.#streams.clear();
    for (const s of streams) s.destroy(err);
  }

  /**
   * Resolves once every stream whose writer has called end() has handed all its bytes and its END to the
   * transport (the 'finish' event), or after `timeoutMs`. Closing without this would throw away data a caller
   * already wrote and ended — the credit window can hold back up to a whole window per stream.
   */
  async drainEnded(timeoutMs: number): Promise<void> {
    const pending = [...this.#streams.values()].filter((s) => s.writableEnded && !s.writableFinished && !s.destroyed);
    if (pending.length === 0 || this.#dead) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(
        pending.map(
          (s) =>
            new Promise<void>((resolve) => {
              s.once('finish', () => resolve());
              s.once('close', () => resolve());
            }),
        ),
      ),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Orderly local close: open streams are destroyed without an error. */
  closeAll(): void {
    if (this.#dead) return;
    this.#dead = new NatpunchError('SESSION_CLOSED', 'the session is closed');
    this.#openGate?.();
    this.#gate = null;
    const streams = [...this.#streams.values()];
    this.#streams.clear();
    for (const s of streams) s.destroy();
  }
}
