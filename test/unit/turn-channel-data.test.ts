import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeChannelDataUdp,
  encodeChannelData,
  isChannelData,
  streamFrameSize,
  TurnStreamFramer,
} from '../../src/wire/channel-data.js';

test('ChannelData encodes header + payload, unpadded over UDP and padded to 4 over TCP (RFC 8656 §12.5)', () => {
  const data = Buffer.from('hello');
  const udp = encodeChannelData(0x4001, data);
  assert.deepEqual([...udp], [0x40, 0x01, 0x00, 0x05, ...data]);
  const tcp = encodeChannelData(0x4001, data, { pad: true });
  assert.equal(tcp.length, 12);
  assert.deepEqual([...tcp.subarray(9)], [0, 0, 0]);
  assert.equal(tcp.readUInt16BE(2), 5, 'Length excludes padding');
  assert.equal(encodeChannelData(0x4fff, Buffer.alloc(4), { pad: true }).length, 8);
});

test('ChannelData decoding over UDP: views the payload, ignores trailing padding, drops short or bad-channel messages', () => {
  const msg = Buffer.from([0x4a, 0xbc, 0x00, 0x03, 1, 2, 3, 0]);
  const v = decodeChannelDataUdp(msg);
  assert.ok(v);
  assert.equal(v.channel, 0x4abc);
  assert.deepEqual([...v.data], [1, 2, 3]);
  assert.equal(v.data.buffer, msg.buffer, 'no copy');
  assert.equal(decodeChannelDataUdp(Buffer.from([0x40, 0x00, 0x00, 0x05, 1, 2])), null, 'length lies');
  assert.equal(decodeChannelDataUdp(Buffer.from([0x50, 0x00, 0x00, 0x00])), null, 'reserved channel 0x5000');
  assert.equal(decodeChannelDataUdp(Buffer.from([0x40, 0x00])), null, 'short');
  assert.ok(isChannelData(Buffer.from([0x4f, 0, 0, 0])));
  assert.ok(!isChannelData(Buffer.from([0x00, 1, 0, 0])));
});

test('encodeChannelData rejects channel numbers outside 0x4000..0x4FFF', () => {
  assert.throws(() => encodeChannelData(0x3fff, Buffer.alloc(0)), RangeError);
  assert.throws(() => encodeChannelData(0x5000, Buffer.alloc(0)), RangeError);
});

test('stream framing splits STUN and padded ChannelData frames across arbitrary chunk boundaries', () => {
  const stun = Buffer.alloc(28);
  stun.writeUInt16BE(0x0001, 0);
  stun.writeUInt16BE(8, 2);
  const cd1 = encodeChannelData(0x4000, Buffer.from('abcde'), { pad: true });
  const cd2 = encodeChannelData(0x4001, Buffer.alloc(0), { pad: true });
  const all = Buffer.concat([cd1, stun, cd2, cd1]);
  assert.equal(streamFrameSize(all), 12);
  for (const step of [1, 3, 7, all.length]) {
    const f = new TurnStreamFramer();
    const frames: number[] = [];
    for (let i = 0; i < all.length; i += step)
      assert.ok(f.push(all.subarray(i, i + step), (fr) => frames.push(fr.length)));
    assert.deepEqual(frames, [12, 28, 4, 12]);
    assert.equal(f.buffered, 0);
  }
  assert.equal(
    new TurnStreamFramer().push(Buffer.from([0x80, 1, 2, 3]), () => {}),
    false,
    'not TURN',
  );
  assert.equal(
    new TurnStreamFramer(100).push(Buffer.from([0x00, 1, 0x10, 0]), () => {}),
    false,
    'too large',
  );
});
