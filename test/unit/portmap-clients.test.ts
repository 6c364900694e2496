import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NatPmpClient } from '../../src/portmap/natpmp.js';
import { GatewayAnnounceListener, PcpClient, UNSUPPORTED_VERSION_CODE } from '../../src/portmap/pcp.js';
import { EpochTracker, defaultGateway, scheduleDuration, NATPMP_RETRANSMIT } from '../../src/portmap/common.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { FakeUdpGateway } from '../helpers/fake-gateway.js';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const fast = { initialMs: 20, attempts: 3 };

test('the NAT-PMP default schedule is RFC 6886 §3.1: 250 ms doubling, 9 sends, 127.75 s', () => {
  assert.deepEqual(NATPMP_RETRANSMIT, { initialMs: 250, attempts: 9 });
  assert.equal(scheduleDuration(NATPMP_RETRANSMIT), 127750);
});

test('NAT-PMP client: external address, map, renew keeps the port, delete', async () => {
  const gw = await FakeUdpGateway.start('natpmp');
  const c = new NatPmpClient({ gateway: '127.0.0.1', port: gw.port, retransmit: fast });
  try {
    const ext = await c.externalAddress();
    assert.equal(ext.address, '198.51.100.77');
    const m = await c.map({ transport: 'udp', internalPort: 4000, externalPort: 4500, lifetime: 120 });
    assert.deepEqual([m.externalPort, m.lifetime, m.gatewayRestarted], [4500, 120, false]);
    assert.equal(gw.requests.at(-1)?.lifetime, 120, 'lifetime is sent in seconds');
    const again = await c.map({ transport: 'udp', internalPort: 4000, externalPort: m.externalPort, lifetime: 120 });
    assert.equal(again.externalPort, 4500);
    assert.equal(gw.mappings.size, 1);
    const tcp = await c.map({ transport: 'tcp', internalPort: 4000, lifetime: 60 });
    assert.equal(tcp.transport, 'tcp');
    assert.equal(gw.mappings.get('tcp:4000')?.proto, 'tcp');
    await c.unmap({ transport: 'udp', internalPort: 4000 });
    assert.equal(gw.mappings.has('udp:4000'), false, 'UDP mapping deleted with the UDP opcode');
    assert.equal(gw.mappings.has('tcp:4000'), true, 'the TCP mapping stays');
  } finally {
    c.close();
    gw.close();
  }
});

test('NAT-PMP client: a gateway reboot (epoch reset) is detected (RFC 6886 §3.6)', async () => {
  const gw = await FakeUdpGateway.start('natpmp');
  // NAT-PMP answers carry no transaction id: a slow schedule keeps a late duplicate of one answer from being
  // taken for the next one on a loaded machine.
  const c = new NatPmpClient({ gateway: '127.0.0.1', port: gw.port, retransmit: { initialMs: 500, attempts: 3 } });
  try {
    assert.equal((await c.map({ transport: 'udp', internalPort: 5000, lifetime: 60 })).gatewayRestarted, false);
    gw.restart();
    assert.equal((await c.map({ transport: 'udp', internalPort: 5000, lifetime: 60 })).gatewayRestarted, true);
    assert.equal((await c.map({ transport: 'udp', internalPort: 5000, lifetime: 60 })).gatewayRestarted, false);
  } finally {
    c.close();
    gw.close();
  }
});

test('NAT-PMP client: error results become PORTMAP errors naming the result code', async () => {
  const gw = await FakeUdpGateway.start('error');
  gw.errorCode = 3;
  const c = new NatPmpClient({ gateway: '127.0.0.1', port: gw.port, retransmit: fast });
  try {
    await assert.rejects(c.map({ transport: 'udp', internalPort: 1, lifetime: 5 }), (e) => {
      assert.ok(isNatpunchError(e, 'PORTMAP'));
      assert.match(e.message, /NETWORK_FAILURE/);
      assert.equal(e.details?.resultCode, 3);
      return true;
    });
  } finally {
    c.close();
    gw.close();
  }
});

test('NAT-PMP client: silence → TIMEOUT after the bounded schedule; wrong lengths → PORTMAP malformed', async () => {
  for (const [mode, code, re] of [
    ['silent', 'TIMEOUT', /no answer .* after 3 tries/],
    ['wrong-length', 'PORTMAP', /malformed/],
  ] as const) {
    const gw = await FakeUdpGateway.start(mode);
    const c = new NatPmpClient({ gateway: '127.0.0.1', port: gw.port, retransmit: fast });
    try {
      await assert.rejects(c.externalAddress(), (e) => isNatpunchError(e, code) && re.test(e.message));
      assert.equal(gw.requests.length, 0);
    } finally {
      c.close();
      gw.close();
    }
  }
});

test('NAT-PMP client: the abort signal ends a request at once', async () => {
  const gw = await FakeUdpGateway.start('silent');
  const c = new NatPmpClient({ gateway: '127.0.0.1', port: gw.port });
  try {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(c.externalAddress(ac.signal), (e) => isNatpunchError(e, 'ABORTED'));
  } finally {
    c.close();
    gw.close();
  }
});

test('PCP client: announce, MAP with nonce, renewal with the same nonce, delete (RFC 6887 §11, §14, §15)', async () => {
  const gw = await FakeUdpGateway.start('pcp');
  const c = new PcpClient({ gateway: '127.0.0.1', port: gw.port, retransmit: fast });
  try {
    const a = await c.announce();
    assert.ok(a.epoch >= 1000);
    const m = await c.map({ transport: 'udp', internalPort: 6000, lifetime: 100 });
    assert.equal(m.externalAddress, '198.51.100.77');
    assert.equal(m.externalPort, 6000);
    assert.equal(m.internalAddress, '127.0.0.1');
    assert.equal(m.lifetime, 100);
    assert.equal(gw.mappings.get('udp:6000')?.nonce, Buffer.from(m.nonce).toString('hex'));
    const r = await c.map({
      transport: 'udp',
      internalPort: 6000,
      lifetime: 100,
      nonce: m.nonce,
      externalPort: m.externalPort,
    });
    assert.equal(r.externalPort, m.externalPort);
    await c.unmap({ transport: 'udp', internalPort: 6000, nonce: m.nonce });
    assert.equal(gw.mappings.size, 0);
  } finally {
    c.close();
    gw.close();
  }
});

test('PCP client: a NAT-PMP-only gateway answers UNSUPP_VERSION with version 0 (RFC 6887 §9)', async () => {
  const gw = await FakeUdpGateway.start('natpmp');
  const c = new PcpClient({ gateway: '127.0.0.1', port: gw.port, retransmit: fast });
  try {
    await assert.rejects(c.map({ transport: 'tcp', internalPort: 22 }), (e) => {
      assert.ok(isNatpunchError(e, UNSUPPORTED_VERSION_CODE));
      assert.equal(e.details?.serverVersion, 0);
      return true;
    });
  } finally {
    c.close();
    gw.close();
  }
});

test('PCP client: answers with another nonce are not ours (→ timeout); error results are named', async () => {
  const gw = await FakeUdpGateway.start('wrong-nonce');
  const c = new PcpClient({ gateway: '127.0.0.1', port: gw.port, retransmit: fast });
  try {
    await assert.rejects(c.map({ transport: 'udp', internalPort: 7 }), (e) => isNatpunchError(e, 'TIMEOUT'));
    gw.mode = 'error';
    await assert.rejects(c.map({ transport: 'udp', internalPort: 7 }), (e) => {
      assert.ok(isNatpunchError(e, 'PORTMAP'));
      assert.match(e.message, /NO_RESOURCES/);
      assert.equal(e.details?.retryAfter, 30);
      return true;
    });
  } finally {
    c.close();
    gw.close();
  }
});

test('PCP unsolicited ANNOUNCE from the gateway reaches the listener; others are ignored', async () => {
  const gw = await FakeUdpGateway.start('pcp');
  const l = await GatewayAnnounceListener.listen({ gateway: '127.0.0.1', port: 0, address: '127.0.0.1' });
  try {
    const got = new Promise((resolve) => l.once('announcement', resolve));
    gw.announce(l.port);
    const a = (await got) as { protocol: string; opcode: string; epoch: number };
    assert.equal(a.protocol, 'pcp');
    assert.equal(a.opcode, 'announce');
  } finally {
    l.close();
    gw.close();
  }
});

test('epoch tracker flags a reset and a too-slow epoch, not normal progress (RFC 6887 §8.5)', () => {
  const t = new EpochTracker();
  assert.equal(t.update(100, 0), false);
  assert.equal(t.update(110, 10_000), false);
  assert.equal(t.update(5, 11_000), true);
  assert.equal(t.update(10, 16_000), false);
  assert.equal(t.update(11, 116_000), true, 'epoch advanced 1 s while 100 s passed');
});

test('default gateway comes from /proc/net/route', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'natpunch-route-'));
  try {
    const f = join(dir, 'route');
    await writeFile(
      f,
      'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n' +
        'eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n' +
        'eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n' +
        'wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n',
    );
    assert.equal(await defaultGateway(f), '192.168.0.1');
    assert.equal(await defaultGateway(join(dir, 'missing')), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('PCP client works over IPv6 (client and external addresses as plain IPv6, RFC 6887 §5)', async () => {
  const gw = await FakeUdpGateway.start('pcp', '::1');
  gw.externalAddress = '2001:db8::77';
  const c = new PcpClient({ gateway: '::1', port: gw.port, retransmit: fast });
  try {
    assert.equal(await c.clientAddress(), '::1');
    const m = await c.map({ transport: 'tcp', internalPort: 8080, lifetime: 60 });
    assert.equal(m.externalAddress, '2001:db8::77');
    assert.equal(m.internalAddress, '::1');
    await c.unmap(m);
    assert.equal(gw.mappings.size, 0);
  } finally {
    c.close();
    gw.close();
  }
});

test('NAT-PMP client: concurrent mappings on one socket each get their own answer', async () => {
  const gw = await FakeUdpGateway.start('natpmp');
  const c = new NatPmpClient({ gateway: '127.0.0.1', port: gw.port, retransmit: { initialMs: 200, attempts: 3 } });
  try {
    const ports = [7001, 7002, 7003, 7004];
    const results = await Promise.all(ports.map((p) => c.map({ transport: 'udp', internalPort: p, lifetime: 60 })));
    assert.deepEqual(
      results.map((r) => r.internalPort),
      ports,
    );
    assert.deepEqual(
      results.map((r) => r.externalPort),
      ports,
    );
  } finally {
    c.close();
    gw.close();
  }
});

test('PCP PEER learns the external address and port of one outbound flow (RFC 6887 §12)', async () => {
  const gw = await FakeUdpGateway.start('pcp');
  const c = new PcpClient({ gateway: '127.0.0.1', port: gw.port, retransmit: fast });
  try {
    const p = await c.peer({
      transport: 'udp',
      internalPort: 5005,
      remoteAddress: '203.0.113.9',
      remotePort: 3478,
      lifetime: 120,
    });
    assert.deepEqual(
      [p.externalAddress, p.externalPort, p.remoteAddress, p.remotePort, p.lifetime],
      ['198.51.100.77', 42005, '203.0.113.9', 3478, 120],
    );
    assert.equal(gw.requests.at(-1)?.kind, 'pcp-peer');
  } finally {
    c.close();
    gw.close();
  }
});
