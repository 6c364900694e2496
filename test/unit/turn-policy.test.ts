import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DefaultPeerPolicy } from '../../src/relay/policy.js';
import { formatIp, parseCidr, parseIp, cidrContains } from '../../src/relay/ip.js';

test('IP parsing and RFC 5952 formatting round-trip', () => {
  for (const a of [
    '1.2.3.4',
    '::1',
    '::',
    'fe80::1',
    '2001:db8::8:800:200c:417a',
    '::ffff:10.0.0.1',
    '2001:db8:0:1:1:1:1:1',
  ]) {
    const b = parseIp(a);
    assert.ok(b, a);
    // IPv4-mapped keeps its dotted tail (RFC 5952 §5), the text node:dgram reports for such peers.
    assert.equal(formatIp(b), a);
  }
  assert.equal(parseIp('1.2.3'), null);
  assert.equal(parseIp('hello'), null);
  assert.ok(cidrContains(parseCidr('100.64.0.0/10'), parseIp('100.127.255.255')!));
  assert.ok(!cidrContains(parseCidr('100.64.0.0/10'), parseIp('100.128.0.0')!));
  assert.throws(() => parseCidr('10.0.0.0/33'), RangeError);
  assert.throws(() => parseCidr('nope/8'), RangeError);
});

test('peer policy denies loopback, private, link-local, CGN, multicast, unspecified and their IPv6 forms by default', () => {
  const p = new DefaultPeerPolicy({ includeInterfaces: false });
  for (const a of [
    '127.0.0.1',
    '10.1.2.3',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '224.0.0.1',
    '239.255.255.250',
    '0.0.0.0',
    '255.255.255.255',
    '::1',
    '::',
    'fe80::1',
    'fd00::1',
    'fc00::1',
    'ff02::1',
    '::ffff:127.0.0.1',
    '::ffff:10.0.0.1',
    '::ffff:169.254.169.254',
    '64:ff9b::7f00:1',
    '2002:a00:1::1',
    '::7f00:1',
  ]) {
    assert.equal(p.check(a), 'denied-by-default', a);
  }
  for (const a of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '2001:4860:4860::8888', '::ffff:8.8.8.8']) {
    assert.equal(p.check(a), 'allowed', a);
  }
  assert.equal(p.check('not an ip'), 'invalid');
});

test("peer policy: the server's own addresses are denied; allow lifts defaults; deny always wins", () => {
  const p = new DefaultPeerPolicy({ includeInterfaces: false, ownAddresses: ['203.0.113.7'] });
  assert.equal(p.check('203.0.113.7'), 'denied-own-address');
  assert.equal(p.check('::ffff:203.0.113.7'), 'denied-own-address');
  assert.equal(p.check('203.0.113.8'), 'allowed');
  const q = new DefaultPeerPolicy({
    includeInterfaces: false,
    allow: ['127.0.0.0/8'],
    deny: ['127.0.0.9', '8.8.0.0/16'],
  });
  assert.equal(q.check('127.0.0.1'), 'allowed');
  assert.equal(q.check('::ffff:127.0.0.1'), 'allowed');
  assert.equal(q.check('127.0.0.9'), 'denied-by-config');
  assert.equal(q.check('8.8.8.8'), 'denied-by-config');
  assert.equal(q.check('10.0.0.1'), 'denied-by-default');
  const withIfaces = new DefaultPeerPolicy();
  assert.notEqual(withIfaces.check('127.0.0.1'), 'allowed');
});
