// The multiplexer's flow-control window grows where the path needs it (BLOCKED, src/session/mux.ts) and stays
// bounded where the reader is slow or the peer asks for too much. Two Mux instances joined by an in-memory link
// that delivers frames in order after a delay (a path with a round trip), no sockets: what is checked is the
// multiplexer's own protocol.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import {
  DEFAULT_STREAM_WINDOW,
  encodeFrame,
  FrameType,
  MAX_FRAME_PAYLOAD,
  MAX_SESSION_WINDOW_GROWTH,
  MAX_STREAM_WINDOW,
  Mux,
  type FrameSink,
  type MuxStream,
} from '../../src/session/mux.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A pair of muxes whose frames reach the other side `delayMs` later, in order; counts frames by type. */
function linkedPair(window: number, delayMs: number) {
  const seen = new Map<number, number>();
  const sinkTo = (peer: () => Mux): FrameSink => ({
    writeFrame: (f) => {
      const copy = Buffer.from(f);
      setTimeout(() => {
        seen.set(copy[0]!, (seen.get(copy[0]!) ?? 0) + 1);
        peer().onFrame(copy);
      }, delayMs);
      return true;
    },
    waitDrain: async () => {},
    closed: false,
  });
  const a: Mux = new Mux(
    sinkTo(() => b),
    { isInitiator: true, window },
  );
  const b: Mux = new Mux(
    sinkTo(() => a),
    { isInitiator: false, window },
  );
  return { a, b, seen };
}

test('a window smaller than the path grows on BLOCKED, and every byte arrives in order', async () => {
  const window = 64 * 1024;
  const { a, b, seen } = linkedPair(window, 10);
  const incoming = once(b, 'stream') as Promise<[MuxStream]>;
  const s = a.openStream();
  const data = randomBytes(4 * 1024 * 1024);
  s.end(data);
  const [r] = await incoming;
  const chunks: Buffer[] = [];
  r.on('data', (d: Buffer) => chunks.push(d));
  await once(r, 'end');
  assert.equal(sha(Buffer.concat(chunks)), sha(data));
  assert.ok((seen.get(FrameType.BLOCKED) ?? 0) > 0, 'the sender said it was blocked');
  assert.ok(r.receiveWindow > window, `the window grew (${r.receiveWindow})`);
  assert.ok(r.receiveWindow <= MAX_STREAM_WINDOW);
  a.closeAll();
  b.closeAll();
});

test('a paused reader does not grow the window: the writer stays held to one window', async () => {
  const window = 64 * 1024;
  const { a, b, seen } = linkedPair(window, 1);
  const incoming = once(b, 'stream') as Promise<[MuxStream]>;
  const s = a.openStream();
  s.write(randomBytes(1024 * 1024));
  const [r] = await incoming;
  r.pause();
  // Wait until the sender ran out of credit and its BLOCKED reached the receiver.
  while ((seen.get(FrameType.BLOCKED) ?? 0) === 0) await new Promise((res) => setTimeout(res, 5));
  await new Promise((res) => setTimeout(res, 20)); // what the receiver would grant in answer has arrived too
  assert.equal(r.receiveWindow, window);
  assert.ok(r.readableLength <= window, `receiver holds ${r.readableLength} bytes`);
  assert.ok(s.bytesSent <= window, `sender sent ${s.bytesSent} bytes`);
  a.closeAll();
  b.closeAll();
});

/** Frames a peer would send: DATA up to `upTo` on stream `id` from `from`, then BLOCKED at `upTo`. */
function fillThenBlock(mux: Mux, id: number, from: number, upTo: number): void {
  const chunk = Buffer.alloc(MAX_FRAME_PAYLOAD);
  for (let off = from; off < upTo; off += MAX_FRAME_PAYLOAD)
    mux.onFrame(encodeFrame(FrameType.DATA, id, chunk.subarray(0, Math.min(MAX_FRAME_PAYLOAD, upTo - off))));
  const limit = Buffer.alloc(8);
  limit.writeBigUInt64BE(BigInt(upTo));
  mux.onFrame(encodeFrame(FrameType.BLOCKED, id, limit));
}

test("the session's window growth is bounded across streams, and a BLOCKED ahead of the data is ignored", async () => {
  const out: Buffer[] = [];
  const sink: FrameSink = { writeFrame: (f) => (out.push(f), true), waitDrain: async () => {}, closed: false };
  const mux = new Mux(sink, { isInitiator: false });
  const streams: MuxStream[] = [];
  mux.on('stream', (s: MuxStream) => {
    s.on('data', () => {}); // a reader that keeps up
    s.on('error', () => {});
    streams.push(s);
  });
  for (const id of [1, 3, 5]) mux.onFrame(encodeFrame(FrameType.OPEN, id));
  await new Promise((res) => setImmediate(res)); // the readers start flowing

  // A BLOCKED claiming a limit the data never reached changes nothing.
  const early = Buffer.alloc(8);
  early.writeBigUInt64BE(BigInt(DEFAULT_STREAM_WINDOW));
  mux.onFrame(encodeFrame(FrameType.BLOCKED, 1, early));
  assert.equal(streams[0]!.receiveWindow, DEFAULT_STREAM_WINDOW);

  // Each stream: fill its limit, say BLOCKED, repeat: the window doubles each time while the budget lasts.
  for (const [i, id] of [1, 3, 5].entries()) {
    let received = 0;
    for (let round = 0; round < 6; round++) {
      const limit = received + streams[i]!.receiveWindow;
      fillThenBlock(mux, id, received, limit);
      received = limit;
    }
  }
  const grown = streams.map((s) => s.receiveWindow - DEFAULT_STREAM_WINDOW);
  assert.equal(streams[0]!.receiveWindow, MAX_STREAM_WINDOW);
  assert.ok(
    grown.reduce((x, y) => x + y, 0) <= MAX_SESSION_WINDOW_GROWTH,
    `growth ${grown.join(' + ')} within the session's budget`,
  );
  assert.ok(streams[2]!.receiveWindow < MAX_STREAM_WINDOW, 'the last stream found the budget spent');
  mux.closeAll();
});

test('a path change after the window grew: the frames lost with the old path are resent, nothing is lost or doubled', async () => {
  const window = 64 * 1024;
  // One link whose frames in flight die with it (generation), down while the "new path" is being set up.
  let gen = 0;
  let up = true;
  const sinkTo = (peer: () => Mux): FrameSink => ({
    writeFrame: (f) => {
      if (!up) return true; // written to a transport that is already dead
      const copy = Buffer.from(f);
      const sentOn = gen;
      setTimeout(() => {
        if (sentOn === gen) peer().onFrame(copy);
      }, 5);
      return true;
    },
    waitDrain: async () => {},
    closed: false,
  });
  const a: Mux = new Mux(
    sinkTo(() => b),
    { isInitiator: true, window },
  );
  const b: Mux = new Mux(
    sinkTo(() => a),
    { isInitiator: false, window },
  );
  const incoming = once(b, 'stream') as Promise<[MuxStream]>;
  const s = a.openStream();
  const data = randomBytes(8 * 1024 * 1024);
  s.end(data);
  const [r] = await incoming;
  const chunks: Buffer[] = [];
  let got = 0;
  r.on('data', (d: Buffer) => {
    chunks.push(d);
    got += d.length;
  });
  // Let the window grow past its start, then lose the path with data and grants in flight both ways.
  while (r.receiveWindow < 4 * window) await new Promise((res) => setTimeout(res, 1));
  // ... at a moment when DATA is on the wire (sent, not yet arrived): it dies with the path.
  while (s.bytesSent <= r.bytesReceived + window) await new Promise((res) => setImmediate(res));
  assert.ok(got < data.length, 'the path changes mid-transfer');
  gen++;
  up = false;
  await new Promise((res) => setTimeout(res, 20)); // writers keep writing into the dead transport
  up = true;
  // The new transport: each side's RESUME first, as Session#completeSwap writes it.
  const resumeA = a.beginResume();
  const resumeB = b.beginResume();
  sinkTo(() => b).writeFrame(resumeA);
  sinkTo(() => a).writeFrame(resumeB);
  await once(r, 'end');
  const all = Buffer.concat(chunks);
  assert.equal(all.length, data.length);
  assert.equal(sha(all), sha(data));
  a.closeAll();
  b.closeAll();
});
