import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  addressToBytes,
  bytesToAddress,
  decodePcpRequest,
  decodePcpResponse,
  encodePcpRequest,
  encodePcpResponse,
  pcpResultMessage,
  pcpResultName,
  PcpResult,
  type PcpRequest,
  type PcpResponse,
} from '../../src/wire/pcp.js';
import { isNatpunchError } from '../../src/util/errors.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const nonce = Uint8Array.from({ length: 12 }, (_, i) => i + 1);

test('IPv4 addresses travel IPv4-mapped (::ffff:a.b.c.d, RFC 6887 §5) and IPv6 text is RFC 5952 compressed', () => {
  assert.equal(hex(addressToBytes('192.0.2.1')), '00000000000000000000ffffc0000201');
  assert.equal(bytesToAddress(addressToBytes('192.0.2.1')), '192.0.2.1');
  assert.equal(bytesToAddress(addressToBytes('::ffff:192.0.2.1')), '192.0.2.1');
  assert.equal(bytesToAddress(addressToBytes('2001:db8:0:0:1:0:0:1')), '2001:db8::1:0:0:1');
  assert.equal(bytesToAddress(addressToBytes('::')), '::');
  assert.equal(bytesToAddress(addressToBytes('fe80::1%eth0')), 'fe80::1');
  assert.equal(bytesToAddress(addressToBytes('2001:db8:1:2:3:4:5:6')), '2001:db8:1:2:3:4:5:6');
  for (const bad of ['1::2::3', '12345::', '1:2:3:4:5:6:7', 'hello', '1.2.3.256', '::1.2.3']) {
    assert.throws(
      () => addressToBytes(bad),
      (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
      bad,
    );
  }
});

test('PCP MAP request is byte exact (RFC 6887 §7.1, §11.1)', () => {
  const req: PcpRequest = {
    opcode: 'map',
    lifetime: 7200,
    clientAddress: '10.0.0.2',
    map: { nonce, protocol: 17, internalPort: 4000, externalPort: 0, externalAddress: '0.0.0.0' },
  };
  const bytes = encodePcpRequest(req);
  assert.equal(bytes.length, 60);
  assert.equal(
    hex(bytes),
    '02010000' +
      '00001c20' +
      '00000000000000000000ffff0a000002' +
      '0102030405060708090a0b0c' +
      '11000000' +
      '0fa0' +
      '0000' +
      '00000000000000000000ffff00000000',
  );
  assert.deepEqual(decodePcpRequest(bytes), { ...req, version: 2, options: [] });
});

test('PCP PEER and ANNOUNCE requests with options round-trip byte exactly (§12.1, §14.1, §13)', () => {
  const reqs: PcpRequest[] = [
    { version: 2, opcode: 'announce', lifetime: 0, clientAddress: '2001:db8::5', options: [] },
    {
      version: 2,
      opcode: 'peer',
      lifetime: 60,
      clientAddress: '10.0.0.2',
      peer: {
        nonce,
        protocol: 6,
        internalPort: 22,
        externalPort: 2222,
        externalAddress: '198.51.100.1',
        remotePort: 443,
        remoteAddress: '203.0.113.9',
      },
      options: [{ type: 'prefer-failure' }, { type: 'third-party', address: '10.0.0.9' }],
    },
    {
      version: 2,
      opcode: 'map',
      lifetime: 1,
      clientAddress: '2001:db8::2',
      map: { nonce, protocol: 0, internalPort: 0, externalPort: 0, externalAddress: '::' },
      options: [
        { type: 'filter', prefixLength: 64, remotePort: 0, remoteAddress: '2001:db8:aa::' },
        { type: 'unknown', code: 200, data: Uint8Array.of(1, 2, 3) },
      ],
    },
  ];
  for (const r of reqs) {
    const bytes = encodePcpRequest(r);
    assert.equal(bytes.length % 4, 0);
    assert.deepEqual(decodePcpRequest(bytes), r);
    assert.equal(hex(encodePcpRequest(decodePcpRequest(bytes))), hex(bytes));
  }
  assert.equal(hex(encodePcpRequest(reqs[0]!)).slice(0, 8), '02000000');
  // unknown option 200 with 3 data bytes: header 4 + padded 4
  assert.equal(hex(encodePcpRequest(reqs[2]!)).slice(-16), 'c8000003' + '01020300');
});

test('PCP responses round-trip byte exactly, incl. header-only error answers', () => {
  const resps: PcpResponse[] = [
    {
      version: 2,
      opcode: 'map',
      resultCode: 0,
      lifetime: 3600,
      epoch: 77,
      options: [],
      map: { nonce, protocol: 17, internalPort: 4000, externalPort: 40000, externalAddress: '198.51.100.7' },
    },
    { version: 2, opcode: 'announce', resultCode: 0, lifetime: 0, epoch: 5, options: [] },
    { version: 2, opcode: 'map', resultCode: PcpResult.NO_RESOURCES, lifetime: 30, epoch: 1, options: [] },
    { version: 0, opcode: 'map', resultCode: PcpResult.UNSUPP_VERSION, lifetime: 0, epoch: 1, options: [] },
    { version: 2, opcode: 'other', code: 9, resultCode: PcpResult.UNSUPP_OPCODE, lifetime: 0, epoch: 1, options: [] },
    {
      version: 2,
      opcode: 'peer',
      resultCode: 0,
      lifetime: 10,
      epoch: 2,
      options: [],
      peer: {
        nonce,
        protocol: 6,
        internalPort: 1,
        externalPort: 2,
        externalAddress: '2001:db8::1',
        remotePort: 3,
        remoteAddress: '2001:db8::2',
      },
    },
  ];
  for (const r of resps) {
    const bytes = encodePcpResponse(r);
    assert.deepEqual(decodePcpResponse(bytes), r);
    assert.equal(hex(encodePcpResponse(decodePcpResponse(bytes))), hex(bytes));
  }
  assert.equal(hex(encodePcpResponse(resps[2]!)).slice(0, 24), '02810008' + '0000001e' + '00000001');
});

test('PCP result codes have names and actionable messages', () => {
  assert.equal(pcpResultName(8), 'NO_RESOURCES');
  assert.equal(pcpResultName(1), 'UNSUPP_VERSION');
  assert.equal(pcpResultName(13), 'EXCESSIVE_REMOTE_PEERS');
  assert.equal(pcpResultName(99), 'UNKNOWN_99');
  assert.match(pcpResultMessage(12), /ADDRESS_MISMATCH/);
});

test('malformed PCP packets throw PORTMAP errors, never crash', () => {
  const ok = Buffer.from(
    encodePcpResponse({
      version: 2,
      opcode: 'map',
      resultCode: 0,
      lifetime: 1,
      epoch: 1,
      options: [],
      map: { nonce, protocol: 17, internalPort: 1, externalPort: 1, externalAddress: '198.51.100.1' },
    }),
  );
  const cases: Buffer[] = [
    Buffer.alloc(0),
    Buffer.alloc(20),
    ok.subarray(0, 58), // not a multiple of 4
    ok.subarray(0, 40), // MAP success truncated
    Buffer.alloc(1104), // too long
    Buffer.concat([ok, Buffer.from('01000010', 'hex')]), // THIRD_PARTY option running past the end
    Buffer.concat([ok, Buffer.from('0200000400000000', 'hex')]), // PREFER_FAILURE with data
    Buffer.concat([ok, Buffer.from('03000014', 'hex'), Buffer.alloc(20, 0xff)]), // FILTER prefix length 255
    Buffer.from([...ok.subarray(0, 1), 0x01, ...ok.subarray(2)]), // R bit clear
    Buffer.from([2, 0x85, 0, 0, ...Buffer.alloc(20)]), // SUCCESS for unknown opcode
  ];
  for (const c of cases)
    assert.throws(
      () => decodePcpResponse(c),
      (e) => isNatpunchError(e, 'PORTMAP'),
      hex(c),
    );
  assert.throws(
    () => decodePcpRequest(ok),
    (e) => isNatpunchError(e, 'PORTMAP'),
  );
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.alloc(24 + (i % 12) * 4);
    for (let j = 0; j < b.length; j++) b[j] = (i * 131 + j * 7) & 0xff;
    b[0] = 2;
    b[1] = 0x80 | (i % 4);
    try {
      decodePcpResponse(b);
    } catch (e) {
      assert.ok(isNatpunchError(e, 'PORTMAP'), String(e));
    }
  }
});

test('PCP encoder rejects bad nonces and addresses with BAD_ARGUMENT', () => {
  assert.throws(
    () =>
      encodePcpRequest({
        opcode: 'map',
        lifetime: 1,
        clientAddress: '10.0.0.1',
        map: { nonce: new Uint8Array(4), protocol: 17, internalPort: 1, externalPort: 0, externalAddress: '0.0.0.0' },
      }),
    (e) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
  assert.throws(
    () => encodePcpRequest({ opcode: 'announce', lifetime: 0, clientAddress: 'gateway' }),
    (e) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
});
