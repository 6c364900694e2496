import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  attr,
  decodeStun,
  encodeStun,
  verifyIntegrity as coreVerify,
  checkFingerprint,
} from '../../src/wire/stun/message.js';
import { StunClass } from '../../src/wire/stun/constants.js';
import { Username } from '../../src/wire/stun/registry.js';
import {
  ChannelNumber,
  Lifetime,
  RequestedTransport,
  TurnMethod,
  XorPeerAddress,
  XorRelayedAddress,
  turnRegistry,
} from '../../src/wire/turn.js';
import {
  A,
  Cls,
  Method,
  StunBuilder,
  attrXorAddresses,
  attrUint32,
  encodeDataIndication,
  fingerprintOk,
  parseStun,
  verifyIntegrity,
} from '../../src/relay/message.js';

test('TURN hot-path builder and the general STUN codec agree byte for byte (integrity, fingerprint, XOR addresses)', () => {
  const key = randomBytes(16);
  const tid = randomBytes(12);
  const ours = new StunBuilder(Method.ChannelBind, Cls.Request, tid)
    .add(A.CHANNEL_NUMBER, Buffer.from([0x40, 0x01, 0, 0]))
    .xorAddress(A.XOR_PEER_ADDRESS, { address: '2001:db8::1', port: 5000 })
    .text(A.USERNAME, 'alice')
    .finish({ key, fingerprint: true });
  const theirs = encodeStun(
    {
      cls: StunClass.Request,
      method: TurnMethod.ChannelBind,
      transactionId: tid,
      attributes: [
        attr(ChannelNumber, 0x4001),
        attr(XorPeerAddress, { family: 'IPv6', address: '2001:db8::1', port: 5000 }),
        attr(Username, 'alice'),
      ],
    },
    { integrity: key, fingerprint: true },
  );
  assert.deepEqual(ours, theirs);
  const decoded = decodeStun(ours);
  assert.ok(coreVerify(decoded, key));
  assert.equal(checkFingerprint(decoded), 'valid');
  assert.equal(decoded.get(ChannelNumber), 0x4001);
  assert.deepEqual(decoded.get(XorPeerAddress), { family: 'IPv6', address: '2001:db8::1', port: 5000 });
  assert.deepEqual(decoded.unknownComprehensionRequired(turnRegistry), []);
  assert.ok(turnRegistry.isKnownMethod(TurnMethod.Allocate));

  const m = parseStun(theirs)!;
  assert.equal(verifyIntegrity(m, key), 'sha1');
  assert.ok(fingerprintOk(m));
});

test('the general codec reads what the TURN server writes (Allocate response, Data indication)', () => {
  const tid = randomBytes(12);
  const res = new StunBuilder(Method.Allocate, Cls.Success, tid)
    .xorAddress(A.XOR_RELAYED_ADDRESS, { address: '203.0.113.5', port: 50000 })
    .u32(A.LIFETIME, 600)
    .finish({ key: Buffer.alloc(16, 1), integrity: 'sha256', fingerprint: true });
  const d = decodeStun(res);
  assert.equal(d.get(Lifetime), 600);
  assert.deepEqual(d.get(XorRelayedAddress), { family: 'IPv4', address: '203.0.113.5', port: 50000 });
  const ind = encodeDataIndication({ address: '198.51.100.7', port: 1234 }, Buffer.from('abcde'), randomBytes(12))!;
  const di = decodeStun(ind);
  assert.equal(di.method, TurnMethod.Data);
  assert.equal(di.cls, StunClass.Indication);
  assert.equal(Buffer.from(di.get(turnRegistry.attribute(0x0013)!) as Uint8Array).toString(), 'abcde');
  assert.equal(RequestedTransport.decode(Uint8Array.of(17, 0, 0, 0), { transactionId: tid }), 17);
});

test('attributes after MESSAGE-INTEGRITY are ignored (an appended XOR-PEER-ADDRESS is not authenticated)', () => {
  const key = randomBytes(16);
  const tid = randomBytes(12);
  const signed = new StunBuilder(Method.CreatePermission, Cls.Request, tid)
    .xorAddress(A.XOR_PEER_ADDRESS, { address: '198.51.100.1', port: 0 })
    .finish({ key });
  // Append a second XOR-PEER-ADDRESS after the MESSAGE-INTEGRITY and fix up the length.
  const extra = new StunBuilder(Method.CreatePermission, Cls.Request, tid)
    .xorAddress(A.XOR_PEER_ADDRESS, { address: '10.0.0.1', port: 0 })
    .finish()
    .subarray(20);
  const forged = Buffer.concat([signed, extra]);
  forged.writeUInt16BE(forged.length - 20, 2);
  const m = parseStun(forged)!;
  assert.deepEqual(attrXorAddresses(m, A.XOR_PEER_ADDRESS), [{ address: '198.51.100.1', port: 0 }]);
  assert.equal(attrUint32(m, A.LIFETIME), undefined);
});
