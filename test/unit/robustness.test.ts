import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { UdxEndpoint } from '../../src/net/udx.js';
import { ConnectivityChecks } from '../../src/traversal/checks.js';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';
import {
  Mux,
  MuxStream,
  encodeFrame,
  FrameType,
  DEFAULT_STREAM_WINDOW,
  type FrameSink,
} from '../../src/session/mux.js';
import { isNatpunchError } from '../../src/util/errors.js';

function host(port: number): Candidate {
  return { type: 'host', transport: 'udp', address: '127.0.0.1', port, priority: candidatePriority('host') };
}

test('garbage on the probe channel is dropped; the checks still succeed', async () => {
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const noise = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const key = randomBytes(32);
  const ca = new ConnectivityChecks({
    transport: a,
    role: 'initiator',
    connectionId: 'x',
    key,
    local: [],
    remote: [host(b.address().port)],
    timeoutMs: 5000,
  });
  const cb = new ConnectivityChecks({
    transport: b,
    role: 'responder',
    connectionId: 'x',
    key,
    local: [],
    remote: [host(a.address().port)],
    timeoutMs: 5000,
  });
  try {
    // 500 malformed probes at each side: random lengths, right first byte, random kinds, truncated headers.
    for (let i = 0; i < 500; i++) {
      const junk = randomBytes(Math.floor(Math.random() * 80));
      if (junk.length) junk[0] = 0xf1;
      if (junk.length > 1) junk[1] = i % 6;
      noise.send(junk, a.address().port, '127.0.0.1');
      noise.send(junk, b.address().port, '127.0.0.1');
    }
    const [ra, rb] = await Promise.all([ca.run(), cb.run()]);
    assert.equal(ra.remote.port, b.address().port);
    assert.equal(rb.remote.port, a.address().port);
  } finally {
    ca.close();
    cb.close();
    await Promise.all([a.close(), b.close(), noise.close()]);
  }
});

function sinkInto(frames: Buffer[]): FrameSink {
  return { writeFrame: (f) => (frames.push(f), true), waitDrain: async () => {}, closed: false };
}

test('random frames from an authenticated but broken peer never throw', () => {
  const out: Buffer[] = [];
  const mux = new Mux(sinkInto(out), { isInitiator: true });
  const errors: Error[] = [];
  mux.on('protocol-error', (e: Error) => errors.push(e));
  mux.on('stream', (s: MuxStream) => s.on('error', () => {}));
  for (let i = 0; i < 5000; i++) {
    const f = randomBytes(Math.floor(Math.random() * 40));
    if (f.length) f[0] = 1 + (i % 13); // every frame type, BLOCKED (0x0d) included
    assert.doesNotThrow(() => mux.onFrame(f));
  }
  // Oversized frames are refused as protocol errors.
  mux.onFrame(Buffer.alloc(70 * 1024, 0x04));
  assert.ok(errors.some((e) => isNatpunchError(e, 'PROTOCOL')));
});

test('a peer that sends beyond its credit gets that stream reset, not the session', () => {
  const out: Buffer[] = [];
  const mux = new Mux(sinkInto(out), { isInitiator: true });
  const streams: MuxStream[] = [];
  mux.on('stream', (s: MuxStream) => {
    s.on('error', () => {});
    s.pause();
    streams.push(s);
  });
  mux.onFrame(encodeFrame(FrameType.OPEN, 2));
  mux.onFrame(encodeFrame(FrameType.OPEN, 4));
  const chunk = Buffer.alloc(64 * 1024);
  for (let sent = 0; sent <= DEFAULT_STREAM_WINDOW; sent += chunk.length)
    mux.onFrame(encodeFrame(FrameType.DATA, 2, chunk));
  assert.equal(streams.length, 2);
  assert.ok(streams[0]!.destroyed, 'the offending stream is gone');
  assert.ok(!streams[1]!.destroyed, 'the other stream lives');
  assert.ok(
    out.some((f) => f[0] === FrameType.RESET && f.readUInt32BE(1) === 2),
    'a RESET was sent for it',
  );
  // Opening a stream with our own parity is a protocol error.
  let protocolError = false;
  mux.on('protocol-error', () => (protocolError = true));
  mux.onFrame(encodeFrame(FrameType.OPEN, 3));
  assert.ok(protocolError);
  mux.closeAll();
});
