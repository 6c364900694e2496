import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isNatpunchError } from '../../src/util/errors.js';
import {
  attr,
  checkFingerprint,
  coreRegistry,
  decodeMessageType,
  decodeStun,
  encodeMessageType,
  encodeStun,
  ErrorCodeAttr,
  formatIPv6,
  longTermKey,
  nonceFeatures,
  nonceWithFeatures,
  Nonce,
  parseIPv6,
  PasswordAlgorithmAttr,
  PasswordAlgorithms,
  Realm,
  saslprep,
  SecurityFeature,
  shortTermKey,
  Software,
  StunClass,
  StunFramer,
  StunMethod,
  uint32Codec,
  UnknownAttributes,
  Username,
  Userhash,
  userhash,
  verifyIntegrity,
  verifyIntegritySha256,
  XorMappedAddress,
  encodeChannelData,
  ChangeRequest,
  OtherAddress,
  ResponseOrigin,
  MappedAddress,
} from '../../src/wire/stun/index.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// RFC 5769 §2.1-2.4 (padding bytes in the RFC are 0x20 on purpose: receivers must ignore them).
const SAMPLE_REQUEST = hex(`
  000100582112a442b7e7a701bc34d686fa87dfae
  80220010 5354554e 20746573 7420636c 69656e74
  00240004 6e0001ff
  80290008 932ff9b1 51263b36
  00060009 6576746a 3a683676 59202020
  00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
  80280004 e57a3bcf`);
const SAMPLE_IPV4_RESPONSE = hex(`
  0101003c2112a442b7e7a701bc34d686fa87dfae
  8022000b 74657374 20766563 746f7220
  00200008 0001a147 e112a643
  00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280004 c07d4c96`);
const SAMPLE_IPV6_RESPONSE = hex(`
  010100482112a442b7e7a701bc34d686fa87dfae
  8022000b 74657374 20766563 746f7220
  00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
  00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
  80280004 c8fb0b4c`);
const SAMPLE_LONG_TERM = hex(`
  000100602112a44278ad3433c6ad72c029da412e
  00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
  0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
  0014000b 6578616d 706c652e 6f726700
  00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666`);
// RFC 8489 Appendix B.1 (SHA-256 long-term request with USERHASH and PASSWORD-ALGORITHM).
const SAMPLE_SHA256 = hex(`
  000100902112a44278ad3433c6ad72c029da412e
  001e0020 4a3cf38f ef6992bd a952c678 0417da0f 24819415 569e60b2 05c46e41 407f1704
  00150029 6f624d61 744a6f73 32414141 43662f2f 3439396b 39353464 364f4c33 346f4c39 46535476 79363473 41000000
  0014000b 6578616d 706c652e 6f726700
  001d0004 00020000
  001c0020 b5c7bf00 5b6c52a2 1c51c5e8 92f81924 13629 6cb 927c4314 9309278c c6518e65`);

const SHORT_TERM_PASSWORD = 'VOkJxbRl1RmTxUk/WvJxBt';
const TID_A = hex('b7e7a701bc34d686fa87dfae');
const TID_B = hex('78ad3433c6ad72c029da412e');
const SPACE = 0x20;

test('message type packs class and method bits as RFC 8489 §5 says', () => {
  assert.equal(encodeMessageType(StunClass.Request, StunMethod.Binding), 0x0001);
  assert.equal(encodeMessageType(StunClass.SuccessResponse, StunMethod.Binding), 0x0101);
  assert.equal(encodeMessageType(StunClass.ErrorResponse, StunMethod.Binding), 0x0111);
  assert.equal(encodeMessageType(StunClass.Indication, 0x003), 0x0013);
  for (const method of [0x000, 0x001, 0x00f, 0x010, 0x0ff, 0x800, 0xfff]) {
    for (const cls of [0, 1, 2, 3] as const)
      assert.deepEqual(decodeMessageType(encodeMessageType(cls, method)), { cls, method });
  }
});

test('RFC 5769 §2.1 sample request decodes, verifies, and re-encodes byte for byte', () => {
  const m = decodeStun(SAMPLE_REQUEST);
  assert.equal(m.cls, StunClass.Request);
  assert.equal(m.method, StunMethod.Binding);
  assert.deepEqual(Buffer.from(m.transactionId), TID_A);
  assert.equal(m.get(Software), 'STUN test client');
  assert.equal(m.get(Username), 'evtj:h6vY');
  assert.ok(verifyIntegrity(m, shortTermKey(SHORT_TERM_PASSWORD)));
  assert.ok(!verifyIntegrity(m, shortTermKey('wrong')));
  assert.equal(checkFingerprint(m), 'valid');
  // PRIORITY (0x0024) is an ICE attribute the core table does not know: comprehension-required, so reported.
  assert.deepEqual(m.unknownComprehensionRequired(), [0x0024]);
  const out = encodeStun(
    {
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: TID_A,
      attributes: [
        attr(Software, 'STUN test client'),
        { type: 0x0024, value: hex('6e0001ff') },
        { type: 0x8029, value: hex('932ff9b151263b36') },
        attr(Username, 'evtj:h6vY'),
      ],
    },
    { integrity: shortTermKey(SHORT_TERM_PASSWORD), fingerprint: true, paddingByte: SPACE },
  );
  assert.deepEqual(out, SAMPLE_REQUEST);
});

test('RFC 5769 §2.2 IPv4 response: XOR-MAPPED-ADDRESS 192.0.2.1:32853, byte for byte', () => {
  const m = decodeStun(SAMPLE_IPV4_RESPONSE);
  assert.equal(m.cls, StunClass.SuccessResponse);
  assert.deepEqual(m.get(XorMappedAddress), { family: 'IPv4', address: '192.0.2.1', port: 32853 });
  assert.equal(m.get(Software), 'test vector');
  assert.ok(verifyIntegrity(m, shortTermKey(SHORT_TERM_PASSWORD)));
  assert.equal(checkFingerprint(m), 'valid');
  const out = encodeStun(
    {
      cls: StunClass.SuccessResponse,
      method: StunMethod.Binding,
      transactionId: TID_A,
      attributes: [
        attr(Software, 'test vector'),
        attr(XorMappedAddress, { family: 'IPv4', address: '192.0.2.1', port: 32853 }),
      ],
    },
    { integrity: shortTermKey(SHORT_TERM_PASSWORD), fingerprint: true, paddingByte: SPACE },
  );
  assert.deepEqual(out, SAMPLE_IPV4_RESPONSE);
});

test('RFC 5769 §2.3 IPv6 response: XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853, byte for byte', () => {
  const m = decodeStun(SAMPLE_IPV6_RESPONSE);
  const mapped = { family: 'IPv6' as const, address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 };
  assert.deepEqual(m.get(XorMappedAddress), mapped);
  assert.ok(verifyIntegrity(m, shortTermKey(SHORT_TERM_PASSWORD)));
  assert.equal(checkFingerprint(m), 'valid');
  const out = encodeStun(
    {
      cls: StunClass.SuccessResponse,
      method: StunMethod.Binding,
      transactionId: TID_A,
      attributes: [attr(Software, 'test vector'), attr(XorMappedAddress, mapped)],
    },
    { integrity: shortTermKey(SHORT_TERM_PASSWORD), fingerprint: true, paddingByte: SPACE },
  );
  assert.deepEqual(out, SAMPLE_IPV6_RESPONSE);
});

test("RFC 5769 §2.4 long-term request: SASLprep'd password, MD5 key, byte for byte", () => {
  const username = '\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9';
  const password = 'The\u00ADM\u00AAtr\u2168';
  assert.equal(saslprep(password), 'TheMatrIX');
  const key = longTermKey(username, 'example.org', password);
  const m = decodeStun(SAMPLE_LONG_TERM);
  assert.equal(m.get(Username), username);
  assert.equal(m.get(Nonce), 'f//499k954d6OL34oL9FSTvy64sA');
  assert.equal(m.get(Realm), 'example.org');
  assert.ok(verifyIntegrity(m, key));
  assert.equal(checkFingerprint(m), 'absent');
  const out = encodeStun(
    {
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: TID_B,
      attributes: [attr(Username, username), attr(Nonce, 'f//499k954d6OL34oL9FSTvy64sA'), attr(Realm, 'example.org')],
    },
    { integrity: key },
  );
  assert.deepEqual(out, SAMPLE_LONG_TERM);
});

test('RFC 8489 B.1: USERHASH, PASSWORD-ALGORITHM SHA-256, MESSAGE-INTEGRITY-SHA256, byte for byte', () => {
  const username = '\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9';
  const nonce = 'obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA';
  const key = longTermKey(username, 'example.org', 'The\u00ADM\u00AAtr\u2168', 'SHA-256');
  const m = decodeStun(SAMPLE_SHA256);
  assert.equal(m.get(PasswordAlgorithmAttr)?.algorithm, 2);
  assert.deepEqual(Buffer.from(m.get(Userhash)!), Buffer.from(userhash(username, 'example.org')));
  assert.equal(m.get(Nonce), nonce);
  assert.equal(nonceFeatures(nonce), 2);
  assert.ok(verifyIntegritySha256(m, key));
  assert.ok(!verifyIntegritySha256(m, longTermKey(username, 'example.org', 'The\u00ADM\u00AAtr\u2168', 'MD5')));
  const out = encodeStun(
    {
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: TID_B,
      attributes: [
        attr(Userhash, userhash(username, 'example.org')),
        attr(Nonce, nonce),
        attr(Realm, 'example.org'),
        attr(PasswordAlgorithmAttr, { algorithm: 2, params: new Uint8Array(0) }),
      ],
    },
    { integritySha256: key },
  );
  assert.deepEqual(out, SAMPLE_SHA256);
});

test('IPv6 text is parsed and printed canonically (RFC 5952)', () => {
  for (const [input, canon] of [
    ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['::', '::'],
    ['::1', '::1'],
    ['fe80::1%eth0', 'fe80::1'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
    ['2001:db8::', '2001:db8::'],
  ] as const) {
    assert.equal(formatIPv6(parseIPv6(input)!), canon);
  }
  for (const bad of ['1::2::3', '12345::', 'g::1', ':1', '1:2:3:4:5:6:7:8:9']) assert.equal(parseIPv6(bad), null, bad);
});

test('attributes after MESSAGE-INTEGRITY are ignored except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (§14.5)', () => {
  const key = shortTermKey('pw');
  const signed = encodeStun(
    { cls: StunClass.Request, method: StunMethod.Binding, transactionId: TID_A, attributes: [attr(Username, 'u')] },
    { integrity: key, integritySha256: key },
  );
  // Append a SOFTWARE attribute after the integrity attributes, then a FINGERPRINT; fix the length field.
  const extra = Buffer.concat([signed, hex('80220004 41424344')]);
  extra.writeUInt16BE(extra.length - 20, 2);
  const m = decodeStun(extra);
  assert.equal(m.get(Software), undefined);
  assert.equal(m.ignoredAttributes, 1);
  assert.ok(verifyIntegrity(m, key));
  assert.ok(verifyIntegritySha256(m, key));
  const withFp = encodeStun(
    { cls: StunClass.Request, method: StunMethod.Binding, transactionId: TID_A, attributes: [attr(Username, 'u')] },
    { integrity: key, fingerprint: true },
  );
  const dm = decodeStun(withFp);
  assert.ok(verifyIntegrity(dm, key));
  assert.equal(checkFingerprint(dm), 'valid');
  const tampered = Buffer.from(withFp);
  tampered[24] ^= 1; // inside USERNAME
  assert.equal(checkFingerprint(decodeStun(tampered)), 'invalid');
  assert.ok(!verifyIntegrity(decodeStun(tampered), key));
});

test('every core attribute round-trips, and unknown comprehension-required types are reported', () => {
  const a4 = { family: 'IPv4' as const, address: '198.51.100.7', port: 4242 };
  const a6 = { family: 'IPv6' as const, address: '2001:db8::7', port: 65535 };
  const buf = encodeStun({
    cls: StunClass.ErrorResponse,
    method: StunMethod.Binding,
    transactionId: TID_A,
    attributes: [
      attr(ErrorCodeAttr, { code: 420, reason: 'Unknown Attribute' }),
      attr(UnknownAttributes, [0x0024, 0x7fff]),
      attr(MappedAddress, a4),
      attr(XorMappedAddress, a6),
      attr(OtherAddress, a6),
      attr(ResponseOrigin, a4),
      attr(ChangeRequest, { changeIp: true, changePort: false }),
      attr(PasswordAlgorithms, [
        { algorithm: 2, params: new Uint8Array(0) },
        { algorithm: 1, params: Uint8Array.of(1, 2, 3) },
      ]),
      { type: 0x7fff, value: Uint8Array.of(9) },
      { type: 0xc001, value: Uint8Array.of(9) },
    ],
  });
  const m = decodeStun(buf);
  assert.equal(m.cls, StunClass.ErrorResponse);
  assert.deepEqual(m.get(ErrorCodeAttr), { code: 420, reason: 'Unknown Attribute' });
  assert.deepEqual(m.get(UnknownAttributes), [0x0024, 0x7fff]);
  assert.deepEqual(m.get(MappedAddress), a4);
  assert.deepEqual(m.get(XorMappedAddress), a6);
  assert.deepEqual(m.get(OtherAddress), a6);
  assert.deepEqual(m.get(ResponseOrigin), a4);
  assert.deepEqual(m.get(ChangeRequest), { changeIp: true, changePort: false });
  assert.deepEqual(
    m.get(PasswordAlgorithms)!.map((p) => [p.algorithm, [...p.params]]),
    [
      [2, []],
      [1, [1, 2, 3]],
    ],
  );
  // 0xc001 is comprehension-optional: not reported.
  assert.deepEqual(m.unknownComprehensionRequired(), [0x7fff]);
  // Values are views, not copies.
  assert.equal(m.getRaw(0x7fff)!.value.buffer, buf.buffer);
});

test('the attribute table is open: an extended registry knows new attributes, the core stays frozen', () => {
  const turn = coreRegistry.extend();
  const Lifetime = turn.registerAttribute(0x000d, 'LIFETIME', uint32Codec);
  turn.registerMethod(0x003, 'Allocate');
  assert.throws(
    () => coreRegistry.registerAttribute(0x000d, 'LIFETIME', uint32Codec),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
  const buf = encodeStun({
    cls: StunClass.Request,
    method: 0x003,
    transactionId: TID_A,
    attributes: [attr(Lifetime, 600)],
  });
  const m = decodeStun(buf);
  assert.equal(m.get(Lifetime), 600);
  assert.deepEqual(m.unknownComprehensionRequired(coreRegistry), [0x000d]);
  assert.deepEqual(m.unknownComprehensionRequired(turn), []);
  assert.equal(turn.methodName(0x003), 'Allocate');
});

test('nonce cookie carries the security feature bits (§9.2)', () => {
  const features = SecurityFeature.PasswordAlgorithms | SecurityFeature.UsernameAnonymity;
  const n = nonceWithFeatures(features, 'abc123');
  assert.ok(n.startsWith('obMatJos2'));
  assert.equal(nonceFeatures(n), features);
  assert.equal(nonceFeatures('plain-nonce'), undefined);
  assert.throws(
    () => saslprep('a\u0007b'),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
  assert.equal(saslprep('a\u00A0b'), 'a b');
});

test('TCP framing splits back-to-back STUN and padded ChannelData frames across arbitrary chunking', () => {
  const cd = encodeChannelData(0x4001, Uint8Array.of(1, 2, 3, 4, 5), true);
  assert.equal(cd.length, 12);
  const stream = Buffer.concat([SAMPLE_REQUEST, cd, SAMPLE_IPV4_RESPONSE, SAMPLE_LONG_TERM]);
  for (const step of [1, 3, 7, 64, stream.length]) {
    const framer = new StunFramer();
    const frames = [];
    for (let i = 0; i < stream.length; i += step) frames.push(...framer.push(stream.subarray(i, i + step)));
    assert.equal(frames.length, 4);
    assert.deepEqual(Buffer.from(frames[0]!.data), SAMPLE_REQUEST);
    assert.equal(frames[1]!.kind, 'channel-data');
    assert.deepEqual(frames[1]!.kind === 'channel-data' && [frames[1]!.channel, [...frames[1]!.data]], [
      0x4001,
      [1, 2, 3, 4, 5],
    ]);
    assert.deepEqual(Buffer.from(frames[3]!.data), SAMPLE_LONG_TERM);
    assert.equal(framer.buffered, 0);
  }
  assert.throws(
    () => new StunFramer().push(hex('f0000000')),
    (e: unknown) => isNatpunchError(e, 'STUN_DECODE'),
  );
});

// ---------------------------------------------------------------------------------------------------------------
// Property test: decoding never throws anything but NatpunchError('STUN_DECODE').

function rng(seed: number): () => number {
  // mulberry32: deterministic, so a failure can be replayed from the printed seed.
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function exercise(buf: Uint8Array, framer: StunFramer, allowLegacy: boolean): void {
  let m;
  try {
    m = decodeStun(buf, { allowLegacy });
  } catch (err) {
    if (!isNatpunchError(err, 'STUN_DECODE')) throw err;
  }
  if (m) {
    m.unknownComprehensionRequired();
    checkFingerprint(m);
    verifyIntegrity(m, TID_A);
    verifyIntegritySha256(m, TID_A);
    for (const a of m.attributes) {
      const def = coreRegistry.attribute(a.type);
      if (!def) continue;
      try {
        m.get(def);
      } catch (err) {
        if (!isNatpunchError(err, 'STUN_DECODE')) throw err;
      }
    }
  }
  try {
    framer.push(buf);
  } catch (err) {
    if (!isNatpunchError(err, 'STUN_DECODE')) throw err;
  }
}

test('decode throws only STUN_DECODE on 100k random and mutated messages', () => {
  const seed = Number(process.env.STUN_FUZZ_SEED ?? Date.now() % 1e9);
  const rand = rng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const key = shortTermKey('pw');
  const corpus: Buffer[] = [
    SAMPLE_REQUEST,
    SAMPLE_IPV4_RESPONSE,
    SAMPLE_IPV6_RESPONSE,
    SAMPLE_LONG_TERM,
    SAMPLE_SHA256,
  ];
  const coreTypes = [
    0x0001, 0x0003, 0x0004, 0x0005, 0x0006, 0x0008, 0x0009, 0x000a, 0x0014, 0x0015, 0x001c, 0x001d, 0x001e, 0x0020,
    0x0026, 0x0027, 0x8002, 0x8003, 0x8022, 0x8023, 0x8028, 0x802b, 0x802c,
  ];
  // Structured random messages: core attribute types with random values (valid framing, hostile contents).
  for (let i = 0; i < 300; i++) {
    const attributes = Array.from({ length: int(6) }, () => ({
      type: rand() < 0.8 ? coreTypes[int(coreTypes.length)]! : int(0x10000),
      value: Uint8Array.from({ length: int(40) }, () => int(256)),
    }));
    corpus.push(
      encodeStun(
        {
          cls: int(4) as 0,
          method: int(0x1000),
          transactionId: Uint8Array.from({ length: 12 }, () => int(256)),
          attributes,
        },
        {
          integrity: rand() < 0.5 ? key : undefined,
          integritySha256: rand() < 0.3 ? key : undefined,
          fingerprint: rand() < 0.5,
        },
      ),
    );
  }
  let n = 0;
  const framer = () => new StunFramer({ maxBuffer: 4096 });
  let f = framer();
  try {
    for (; n < 100_000; n++) {
      let buf: Buffer;
      const kind = n % 5;
      if (kind === 0) {
        // Pure random bytes, half of them with a plausible STUN header.
        buf = Buffer.from(Uint8Array.from({ length: int(120) }, () => int(256)));
        if (rand() < 0.5 && buf.length >= 20) {
          buf.writeUInt16BE(int(0x4000), 0);
          buf.writeUInt16BE(buf.length - 20, 2);
          buf.writeUInt32BE(0x2112a442, 4);
        }
      } else {
        buf = Buffer.from(corpus[int(corpus.length)]!);
        if (kind === 1) {
          for (let k = 1 + int(4); k > 0; k--) buf[int(buf.length)] ^= 1 << int(8); // bit flips
        } else if (kind === 2) {
          buf = buf.subarray(0, int(buf.length)); // truncation
        } else if (kind === 3) {
          // Length lies: the header's or an attribute's length field.
          const at = rand() < 0.5 ? 2 : 20 + 4 * int(Math.max(1, (buf.length - 20) / 4)) + 2;
          if (at + 1 < buf.length)
            buf.writeUInt16BE(rand() < 0.5 ? int(0x10000) : (buf.readUInt16BE(at) + int(9) - 4) & 0xffff, at);
        } else {
          // Extension with garbage, length field kept consistent.
          buf = Buffer.concat([buf, Uint8Array.from({ length: 4 * int(8) }, () => int(256))]);
          buf.writeUInt16BE(buf.length - 20, 2);
        }
      }
      if (n % 1000 === 0) f = framer();
      exercise(buf, f, (n & 8) !== 0);
    }
  } catch (err) {
    assert.fail(`seed ${seed}, message ${n}: decode threw ${(err as Error).stack}`);
  }
  assert.equal(n, 100_000);
});
