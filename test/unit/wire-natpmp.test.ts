import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeNatPmpRequest,
  decodeNatPmpResponse,
  encodeNatPmpRequest,
  encodeNatPmpResponse,
  natPmpResultMessage,
  natPmpResultName,
  type NatPmpResponse,
} from '../../src/wire/natpmp.js';
import { isNatpunchError } from '../../src/util/errors.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

test('NAT-PMP external address request is the two bytes 00 00 (RFC 6886 §3.2)', () => {
  assert.equal(hex(encodeNatPmpRequest({ op: 'external-address' })), '0000');
  assert.deepEqual(decodeNatPmpRequest(Buffer.from('0000', 'hex')), { op: 'external-address' });
});

test('NAT-PMP UDP/TCP mapping requests are byte exact with opcode 1/2 and lifetime in seconds (§3.3)', () => {
  const udp = encodeNatPmpRequest({
    op: 'map',
    transport: 'udp',
    internalPort: 4000,
    suggestedExternalPort: 4001,
    lifetime: 7200,
  });
  assert.equal(hex(udp), '0001' + '0000' + '0fa0' + '0fa1' + '00001c20');
  const tcp = encodeNatPmpRequest({
    op: 'map',
    transport: 'tcp',
    internalPort: 80,
    suggestedExternalPort: 0,
    lifetime: 0,
  });
  assert.equal(hex(tcp), '0002' + '0000' + '0050' + '0000' + '00000000');
  assert.deepEqual(decodeNatPmpRequest(udp), {
    op: 'map',
    transport: 'udp',
    internalPort: 4000,
    suggestedExternalPort: 4001,
    lifetime: 7200,
  });
  assert.deepEqual(decodeNatPmpRequest(tcp), {
    op: 'map',
    transport: 'tcp',
    internalPort: 80,
    suggestedExternalPort: 0,
    lifetime: 0,
  });
});

test('NAT-PMP responses round-trip byte exactly', () => {
  const cases: NatPmpResponse[] = [
    { op: 'external-address', resultCode: 0, epoch: 1234, externalAddress: '198.51.100.7' },
    { op: 'map', transport: 'udp', resultCode: 0, epoch: 99, internalPort: 4000, externalPort: 40000, lifetime: 3600 },
    {
      op: 'map',
      transport: 'tcp',
      resultCode: 4,
      epoch: 0xffffffff,
      internalPort: 1,
      externalPort: 65535,
      lifetime: 0,
    },
    { op: 'error', requestOpcode: 7, resultCode: 5, epoch: 3 },
  ];
  for (const c of cases) {
    const bytes = encodeNatPmpResponse(c);
    assert.deepEqual(decodeNatPmpResponse(bytes), c);
    assert.equal(hex(encodeNatPmpResponse(decodeNatPmpResponse(bytes))), hex(bytes));
  }
  const ext = encodeNatPmpResponse(cases[0]!);
  assert.equal(hex(ext), '0080' + '0000' + '000004d2' + 'c6336407');
});

test('NAT-PMP result codes have names and actionable messages', () => {
  assert.equal(natPmpResultName(3), 'NETWORK_FAILURE');
  assert.equal(natPmpResultName(77), 'UNKNOWN_77');
  assert.match(natPmpResultMessage(2), /refused/);
  assert.match(natPmpResultMessage(3), /NETWORK_FAILURE/);
});

test('malformed NAT-PMP packets throw PORTMAP errors, never crash', () => {
  const bad = [
    '',
    '00',
    '0080000000000001', // success external-address response with no address
    '0180000000000001c6336407', // version 1
    '0000000000000000', // a request (R bit clear) where a response was expected
    '0081000000000000000000000000000000', // 17-byte mapping response
    '00810000000000000fa0', // 10-byte success mapping response
    '008000000000000001020304ff', // 13-byte external address response
  ];
  for (const h of bad) {
    assert.throws(
      () => decodeNatPmpResponse(Buffer.from(h, 'hex')),
      (e) => isNatpunchError(e, 'PORTMAP'),
      h,
    );
  }
  for (const h of ['', '01', '0001', '0003000000000000000000', '0001000000000000000000000000', '0000ff']) {
    assert.throws(
      () => decodeNatPmpRequest(Buffer.from(h, 'hex')),
      (e) => isNatpunchError(e, 'PORTMAP'),
      h,
    );
  }
  // Random garbage never escapes as anything but a PORTMAP error.
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.alloc(i % 24);
    for (let j = 0; j < b.length; j++) b[j] = (i * 31 + j * 17) & 0xff;
    if (b.length > 0) b[0] = i % 3 === 0 ? 0 : b[0]!;
    try {
      decodeNatPmpResponse(b);
    } catch (e) {
      assert.ok(isNatpunchError(e, 'PORTMAP'));
    }
  }
});

test('NAT-PMP encoder rejects out-of-range fields with BAD_ARGUMENT', () => {
  assert.throws(
    () =>
      encodeNatPmpRequest({ op: 'map', transport: 'udp', internalPort: 70000, suggestedExternalPort: 0, lifetime: 1 }),
    (e) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
  assert.throws(
    () => encodeNatPmpResponse({ op: 'external-address', resultCode: 0, epoch: 1, externalAddress: 'nope' }),
    (e) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
});
