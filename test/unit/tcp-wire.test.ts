import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeIpv4 } from '../../src/wire/icmp.js';
import {
  decodeIpv4Tcp,
  decodeTcp,
  decodeTcpOptions,
  encodeIpv4Tcp,
  encodeTcp,
  encodeTcpOptions,
  synAckSegment,
  tcpChecksumValid,
  TCP_ACK,
  TCP_SYN,
} from '../../src/wire/tcp.js';

// The options area of a Linux SYN (MSS 1460, SACK-Permitted, Timestamps, NOP, Window Scale 7), byte for byte.
const LINUX_SYN_OPTIONS = Buffer.from('020405b40402080a0001e2400000000001030307', 'hex');

test('the options of a Linux SYN decode field by field and re-encode byte-exactly', () => {
  const o = decodeTcpOptions(LINUX_SYN_OPTIONS);
  assert.deepEqual(o, { mss: 1460, sackPermitted: true, timestamps: { value: 0x1e240, echo: 0 }, windowScale: 7 });
  assert.deepEqual(encodeTcpOptions(o!), LINUX_SYN_OPTIONS);
});

test('options without timestamps pad SACK-Permitted with NOPs and stay 32-bit aligned', () => {
  const enc = encodeTcpOptions({ mss: 1400, sackPermitted: true });
  assert.equal(enc.length % 4, 0);
  assert.deepEqual(decodeTcpOptions(enc), { mss: 1400, sackPermitted: true });
  assert.equal(encodeTcpOptions({}).length, 0);
});

test('a segment round-trips and its pseudo-header checksum verifies (and breaks when a byte flips)', () => {
  const seg = encodeTcp(
    {
      sourcePort: 40000,
      destinationPort: 443,
      seq: 0xfffffff0,
      ack: 0x12345678,
      flags: TCP_SYN | TCP_ACK,
      window: 64240,
      options: { mss: 1460 },
      payload: Buffer.from('x'),
    },
    '10.1.0.10',
    '203.0.113.10',
  );
  assert.equal(tcpChecksumValid(seg, '10.1.0.10', '203.0.113.10'), true);
  assert.equal(tcpChecksumValid(seg, '10.1.0.11', '203.0.113.10'), false, 'the pseudo-header covers the addresses');
  const d = decodeTcp(seg)!;
  assert.equal(d.seq, 0xfffffff0);
  assert.equal(d.ack, 0x12345678);
  assert.equal(d.flags, TCP_SYN | TCP_ACK);
  assert.equal(d.headerLength, 24);
  assert.equal(Buffer.from(d.payload).toString(), 'x');
  const bad = Buffer.from(seg);
  bad[bad.length - 1] ^= 1;
  assert.equal(tcpChecksumValid(bad, '10.1.0.10', '203.0.113.10'), false);
});

test('an IPv4/TCP packet decodes with both checksums right', () => {
  const pkt = encodeIpv4Tcp(
    { sourcePort: 1, destinationPort: 2, seq: 3, ack: 0, flags: TCP_SYN, window: 100 },
    { source: '192.0.2.1', destination: '198.51.100.2', ttl: 3 },
  );
  assert.equal(decodeIpv4(pkt)!.header.checksumValid, true);
  const d = decodeIpv4Tcp(pkt)!;
  assert.equal(d.ip.ttl, 3);
  assert.equal(d.tcp.seq, 3);
  assert.equal(tcpChecksumValid(pkt.subarray(20), '192.0.2.1', '198.51.100.2'), true);
});

test('the crafted SYN-ACK acknowledges the other ISN + 1 and negotiates only what both SYNs offered', () => {
  const a = {
    isn: 0xffffffff,
    window: 64240,
    options: { mss: 1460, windowScale: 7, sackPermitted: true, timestamps: { value: 111, echo: 0 } },
  };
  const b = { isn: 500, window: 65535, options: { mss: 1400, windowScale: 9, timestamps: { value: 222, echo: 0 } } };
  const s = synAckSegment(a, b, { sourcePort: 1000, destinationPort: 2000 });
  assert.equal(s.seq, 0xffffffff);
  assert.equal(s.ack, 501);
  assert.equal(s.flags, TCP_SYN | TCP_ACK);
  assert.equal(s.window, 64240);
  assert.deepEqual(s.options, { mss: 1460, windowScale: 7, timestamps: { value: 111, echo: 222 } });
  // wraps: ISN 0xffffffff + 1 = 0
  assert.equal(synAckSegment(b, a, { sourcePort: 2000, destinationPort: 1000 }).ack, 0);
  const noTs = synAckSegment(a, { ...b, options: { mss: 536 } }, { sourcePort: 1, destinationPort: 2 });
  assert.deepEqual(noTs.options, { mss: 1460 });
});

test('malformed segments and options decode to null, never throw', () => {
  assert.equal(decodeTcp(new Uint8Array(19)), null);
  const shortOffset = Buffer.alloc(20);
  shortOffset[12] = 0x40; // data offset 16 bytes < 20
  assert.equal(decodeTcp(shortOffset), null);
  const longOffset = Buffer.alloc(20);
  longOffset[12] = 0xf0; // 60 bytes claimed, 20 present
  assert.equal(decodeTcp(longOffset), null);
  assert.equal(decodeTcpOptions(Buffer.from([2, 4, 5])), null);
  assert.equal(decodeTcpOptions(Buffer.from([8, 1])), null);
  assert.equal(decodeTcpOptions(Buffer.from([2, 3, 0])), null);
  assert.deepEqual(decodeTcpOptions(Buffer.from([30, 4, 0, 0, 2, 4, 1, 0])), { mss: 256 }, 'unknown kinds are skipped');
  assert.equal(decodeIpv4Tcp(Buffer.alloc(10)), null);
  for (let i = 0; i < 2000; i++) {
    const junk = Buffer.from(Array.from({ length: (i % 70) + 1 }, (_, j) => (i * 31 + j * 7) & 0xff));
    decodeTcp(junk);
    decodeIpv4Tcp(junk);
  }
});

test('a sequence offer packs into 32 bytes and back; malformed blobs decode to null', async () => {
  const { encodeSeqOffer, decodeSeqOffer, SEQ_OFFER_BYTES } = await import('../../src/wire/seq-offer.js');
  const offer = {
    private: { address: '10.1.0.10', port: 40000 },
    public: { address: '198.51.100.10', port: 61000 },
    isn: 0xdeadbeef,
    window: 64240,
    options: { mss: 1460, windowScale: 10, sackPermitted: true, timestamps: { value: 0xffffffff, echo: 0 } },
  };
  const blob = encodeSeqOffer(offer);
  assert.equal(blob.length, SEQ_OFFER_BYTES);
  assert.deepEqual(decodeSeqOffer(blob), offer);
  const bare = { ...offer, options: {} };
  assert.deepEqual(decodeSeqOffer(encodeSeqOffer(bare)), bare);
  assert.equal(decodeSeqOffer(blob.subarray(0, 31)), null);
  for (const [at, value] of [
    [0, 2],
    [1, 0x10],
    [23, 1],
    [22, 15],
    [6, 0],
  ] as const) {
    const bad = Buffer.from(blob);
    bad[at] = value;
    if (at === 6) bad[7] = 0;
    assert.equal(decodeSeqOffer(bad), null, `byte ${at} = ${value}`);
  }
  assert.throws(() => encodeSeqOffer({ ...offer, public: { address: '::1', port: 1 } }), TypeError);
});
