import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeIcmp,
  decodeIcmpPacket,
  decodeIpv4,
  encodeEcho,
  encodeIpv4,
  encodeTimeExceeded,
  internetChecksum,
  ICMP_TIME_EXCEEDED,
  IPPROTO_ICMP,
  IPPROTO_TCP,
} from '../../src/wire/icmp.js';

test('internet checksum matches the RFC 1071 §3 worked example', () => {
  // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum (one's complement) to ddf2; the checksum is its complement.
  const data = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assert.equal(internetChecksum(data), ~0xddf2 & 0xffff);
  // odd length pads with a zero byte
  assert.equal(internetChecksum(Uint8Array.from([0x01])), ~0x0100 & 0xffff);
});

test('a known IPv4 header checksums to zero and decodes field by field', () => {
  // A captured header (20 bytes): 45 00 00 73 00 00 40 00 40 11 b8 61 c0 a8 00 01 c0 a8 00 c7
  const hdr = Buffer.from('450000730000400040 11b861c0a80001c0a800c7'.replace(/ /g, ''), 'hex');
  const packet = Buffer.concat([hdr, Buffer.alloc(0x73 - 20)]);
  const ip = decodeIpv4(packet);
  assert.ok(ip);
  assert.equal(ip.header.checksumValid, true);
  assert.equal(ip.header.ttl, 64);
  assert.equal(ip.header.protocol, 17);
  assert.equal(ip.header.source, '192.168.0.1');
  assert.equal(ip.header.destination, '192.168.0.199');
  assert.equal(ip.payload.length, 0x73 - 20);
});

test('echo request round-trips with a valid checksum', () => {
  const msg = encodeEcho({ identifier: 0xbeef, sequence: 7, data: Buffer.from('natpunch') });
  assert.equal(internetChecksum(msg), 0);
  const d = decodeIcmp(msg);
  assert.ok(d && d.kind === 'echo-request');
  assert.equal(d.identifier, 0xbeef);
  assert.equal(d.sequence, 7);
  assert.equal(Buffer.from(d.data).toString(), 'natpunch');
  assert.equal(d.checksumValid, true);
  msg[9] ^= 1;
  assert.equal(decodeIcmp(msg)?.checksumValid, false);
});

test('time exceeded quoting a TCP SYN exposes its ports and sequence number', () => {
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(40000, 0);
  tcp.writeUInt16BE(443, 2);
  tcp.writeUInt32BE(0xdeadbeef, 4);
  const syn = encodeIpv4({ source: '10.0.0.2', destination: '203.0.113.9', protocol: IPPROTO_TCP, ttl: 1 }, tcp);
  // RFC 792: the router quotes the IP header and the first 64 bits of data.
  const te = encodeTimeExceeded(syn.subarray(0, 28));
  const outer = encodeIpv4({ source: '10.0.0.1', destination: '10.0.0.2', protocol: IPPROTO_ICMP }, te);
  const d = decodeIcmpPacket(outer);
  assert.ok(d);
  assert.equal(d.ip.source, '10.0.0.1');
  assert.equal(d.icmp.kind, 'time-exceeded');
  assert.equal(d.icmp.type, ICMP_TIME_EXCEEDED);
  assert.ok(d.icmp.kind === 'time-exceeded' && d.icmp.quoted);
  const q = d.icmp.quoted;
  assert.equal(q.header.source, '10.0.0.2');
  assert.equal(q.header.destination, '203.0.113.9');
  assert.equal(q.header.ttl, 1);
  assert.equal(q.sourcePort, 40000);
  assert.equal(q.destinationPort, 443);
  assert.equal(q.tcpSequence, 0xdeadbeef);
  assert.equal(d.icmp.checksumValid, true);
});

test('time exceeded quoting an echo request exposes identifier and sequence (pwnat)', () => {
  const echo = encodeEcho({ identifier: 1234, sequence: 0 });
  const quoted = encodeIpv4({ source: '192.0.2.10', destination: '3.3.3.3', protocol: IPPROTO_ICMP }, echo);
  const d = decodeIcmp(encodeTimeExceeded(quoted));
  assert.ok(d && d.kind === 'time-exceeded' && d.quoted);
  assert.equal(d.quoted.echoIdentifier, 1234);
  assert.equal(d.quoted.echoSequence, 0);
  assert.equal(d.quoted.header.destination, '3.3.3.3');
});

test('truncated and garbage input decodes to null, never throws', () => {
  assert.equal(decodeIcmp(new Uint8Array(3)), null);
  assert.equal(decodeIpv4(new Uint8Array(10)), null);
  assert.equal(decodeIpv4(Uint8Array.from([0x65, ...new Array(30).fill(0)])), null); // version 6
  assert.equal(decodeIpv4(Uint8Array.from([0x4f, ...new Array(30).fill(0)])), null); // IHL 60 > length
  assert.equal(decodeIcmpPacket(new Uint8Array(40)), null);
  // time exceeded whose quote is cut short: still decodes, the quote is null
  const d = decodeIcmp(encodeTimeExceeded(new Uint8Array(5)));
  assert.ok(d && d.kind === 'time-exceeded');
  assert.equal(d.quoted, null);
  for (let i = 0; i < 200; i++) {
    const junk = Buffer.alloc(i, i * 37);
    decodeIcmpPacket(junk);
    decodeIcmp(junk);
  }
  assert.throws(() => encodeIpv4({ source: 'x', destination: '1.2.3.4', protocol: 1 }, new Uint8Array(0)), TypeError);
});
