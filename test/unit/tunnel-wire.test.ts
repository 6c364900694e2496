import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeAddress,
  decodeAuthRequest,
  decodeGreeting,
  decodeReply,
  decodeRequest,
  encodeAddress,
  encodeAuthRequest,
  encodeGreeting,
  encodeReply,
  encodeRequest,
  replyForError,
  SocksCommand,
  SocksReply,
} from '../../src/tunnel/socks5.js';
import {
  decodeTunnelReply,
  decodeTunnelRequest,
  encodeTunnelReply,
  encodeTunnelRequest,
} from '../../src/tunnel/wire.js';
import { DestinationPolicy } from '../../src/tunnel/policy.js';
import { isNatpunchError } from '../../src/util/errors.js';

test('SOCKS5 greeting (RFC 1928 §3): byte layout, incomplete input, wrong version', () => {
  const g = encodeGreeting([0x00, 0x02]);
  assert.deepEqual([...g], [5, 2, 0, 2]);
  assert.deepEqual(decodeGreeting(g), { value: { methods: [0, 2] }, length: 4 });
  assert.equal(decodeGreeting(g.subarray(0, 3)), null);
  assert.equal(decodeGreeting(Buffer.from([5])), null);
  assert.throws(
    () => decodeGreeting(Buffer.from([4, 1, 0])),
    (e) => isNatpunchError(e, 'SOCKS_PROTOCOL'),
  );
});

test('SOCKS5 addresses (RFC 1928 §5): IPv4, IPv6, domain round-trip byte-exact', () => {
  const v4 = encodeAddress({ host: '10.2.0.10', port: 8080 });
  assert.deepEqual([...v4], [1, 10, 2, 0, 10, 0x1f, 0x90]);
  assert.deepEqual(decodeAddress(v4, 0)?.value, { atyp: 1, host: '10.2.0.10', port: 8080 });
  const v6 = encodeAddress({ host: '2001:db8::1', port: 443 });
  assert.equal(v6.length, 1 + 16 + 2);
  assert.equal(v6[0], 4);
  assert.deepEqual(decodeAddress(v6, 0)?.value, { atyp: 4, host: '2001:db8::1', port: 443 });
  assert.equal(decodeAddress(encodeAddress({ host: '::1', port: 1 }), 0)?.value.host, '::1');
  assert.equal(decodeAddress(encodeAddress({ host: '1:0:0:2:0:0:0:3', port: 1 }), 0)?.value.host, '1:0:0:2::3');
  const dn = encodeAddress({ host: 'example.test', port: 22 });
  assert.deepEqual([...dn.subarray(0, 2)], [3, 12]);
  assert.deepEqual(decodeAddress(dn, 0)?.value, { atyp: 3, host: 'example.test', port: 22 });
  for (let i = 0; i < dn.length; i++)
    assert.equal(decodeAddress(dn.subarray(0, i), 0), null, `prefix ${i} is incomplete`);
});

test('SOCKS5 request and reply (RFC 1928 §4, §6); bad address type carries reply 0x08', () => {
  const req = encodeRequest(SocksCommand.CONNECT, { host: '192.0.2.1', port: 80 });
  assert.deepEqual([...req], [5, 1, 0, 1, 192, 0, 2, 1, 0, 80]);
  assert.deepEqual(decodeRequest(Buffer.concat([req, Buffer.from('extra')])), {
    value: { command: 1, atyp: 1, host: '192.0.2.1', port: 80 },
    length: 10,
  });
  assert.equal(decodeRequest(req.subarray(0, 9)), null);
  assert.throws(
    () => decodeRequest(Buffer.from([5, 1, 0, 9, 1, 2, 3, 4, 0, 80])),
    (e) => isNatpunchError(e, 'SOCKS_PROTOCOL') && e.details?.reply === SocksReply.ADDRESS_TYPE_NOT_SUPPORTED,
  );
  const rep = encodeReply(SocksReply.NOT_ALLOWED);
  assert.deepEqual([...rep], [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(decodeReply(rep)?.value, { reply: 2, bound: { host: '0.0.0.0', port: 0 } });
});

test('RFC 1929 username/password request round-trips; bounds enforced', () => {
  const a = encodeAuthRequest('alice', 's3cret');
  assert.deepEqual([...a.subarray(0, 2)], [1, 5]);
  const d = decodeAuthRequest(a)!;
  assert.equal(d.value.username.toString(), 'alice');
  assert.equal(d.value.password.toString(), 's3cret');
  assert.equal(d.length, a.length);
  assert.equal(decodeAuthRequest(a.subarray(0, a.length - 1)), null);
  assert.throws(() => encodeAuthRequest('', 'x'));
  assert.throws(
    () => decodeAuthRequest(Buffer.from([5, 1, 0x61])),
    (e) => isNatpunchError(e, 'SOCKS_PROTOCOL'),
  );
});

test('errno → RFC 1928 reply codes', () => {
  assert.equal(replyForError({ code: 'ECONNREFUSED' }), SocksReply.CONNECTION_REFUSED);
  assert.equal(replyForError({ code: 'ENETUNREACH' }), SocksReply.NETWORK_UNREACHABLE);
  assert.equal(replyForError({ code: 'EHOSTUNREACH' }), SocksReply.HOST_UNREACHABLE);
  assert.equal(replyForError({ code: 'ENOTFOUND' }), SocksReply.HOST_UNREACHABLE);
  assert.equal(replyForError(new Error('x')), SocksReply.GENERAL_FAILURE);
});

test('tunnel header: forward and connect requests, replies; garbage is a typed error', () => {
  const f = encodeTunnelRequest({ kind: 'forward', port: 22 });
  assert.deepEqual([...f], [1, 1, 0, 22]);
  assert.deepEqual(decodeTunnelRequest(f), { value: { kind: 'forward', port: 22 }, length: 4 });
  const c = encodeTunnelRequest({ kind: 'connect', host: 'db.internal', port: 5432 });
  assert.deepEqual(decodeTunnelRequest(c)?.value, { kind: 'connect', host: 'db.internal', port: 5432 });
  for (let i = 0; i < c.length; i++) assert.equal(decodeTunnelRequest(c.subarray(0, i)), null);
  const r = encodeTunnelReply(0, { host: '10.2.0.10', port: 40000 });
  assert.deepEqual(decodeTunnelReply(r)?.value, { status: 0, bound: { host: '10.2.0.10', port: 40000 } });
  assert.throws(
    () => decodeTunnelRequest(Buffer.from([9, 1, 0, 22])),
    (e) => isNatpunchError(e, 'TUNNEL_PROTOCOL'),
  );
  assert.throws(
    () => decodeTunnelRequest(Buffer.from([1, 7])),
    (e) => isNatpunchError(e, 'TUNNEL_PROTOCOL'),
  );
  assert.throws(
    () => decodeTunnelRequest(Buffer.from([1, 2, 3, 0, 0, 0])),
    (e) => isNatpunchError(e, 'TUNNEL_PROTOCOL'),
  );
  assert.throws(() => encodeTunnelRequest({ kind: 'forward', port: 0 }));
  // Random bytes never crash the decoders: a value, null or a typed error.
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.from(Array.from({ length: (i % 40) + 1 }, () => Math.floor(Math.random() * 256)));
    for (const dec of [decodeTunnelRequest, decodeTunnelReply, decodeRequest, decodeGreeting, decodeAuthRequest]) {
      try {
        dec(b);
      } catch (e) {
        assert.ok(isNatpunchError(e), String(e));
      }
    }
  }
});

test('destination policy: default none; CIDR, ports, ranges, host names, IPv6, mapped IPv4', async () => {
  assert.equal((await new DestinationPolicy().check('127.0.0.1', 80)).allowed, false);
  const resolved: Record<string, string> = { 'web.lan': '10.2.0.20', 'db.internal': '10.9.9.9' };
  const p = DestinationPolicy.parse(
    ['10.2.0.0/24:80,443', '192.168.1.5:22', '[fd00::/8]:1000-2000', 'db.internal:5432'],
    async (h) => {
      const a = resolved[h];
      if (!a) throw Object.assign(new Error(`no such host ${h}`), { code: 'ENOTFOUND' });
      return a;
    },
  );
  assert.equal((await p.check('10.2.0.99', 80)).allowed, true);
  assert.equal((await p.check('10.2.0.99', 22)).allowed, false);
  assert.equal((await p.check('10.2.1.1', 80)).allowed, false);
  assert.equal((await p.check('192.168.1.5', 22)).allowed, true);
  assert.equal((await p.check('192.168.1.6', 22)).allowed, false);
  assert.equal((await p.check('fd12::1', 1500)).allowed, true);
  assert.equal((await p.check('fd12::1', 2001)).allowed, false);
  assert.equal((await p.check('::ffff:10.2.0.1', 443)).allowed, true);
  assert.deepEqual(await p.check('web.lan', 80), { allowed: true, address: '10.2.0.20', rule: '10.2.0.0/24:80,443' });
  assert.equal((await p.check('db.internal', 5432)).allowed, true);
  assert.equal((await p.check('db.internal', 5433)).allowed, false);
  const nx = await p.check('nowhere.lan', 80);
  assert.equal(nx.allowed, false);
  assert.ok(nx.error);
  assert.equal((await DestinationPolicy.parse(['0.0.0.0/0:*']).check('8.8.8.8', 53)).allowed, true);
  for (const bad of [
    '10.0.0.0/33:80',
    '10.0.0.1',
    '10.0.0.1:0',
    '10.0.0.1:80-70',
    'bad_host:80',
    '10.0.0.1/x:80',
    ':80',
  ]) {
    assert.throws(
      () => DestinationPolicy.parse([bad]),
      (e) => isNatpunchError(e, 'BAD_ARGUMENT'),
      bad,
    );
  }
});
