import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { PortMapper, probePortMapping } from '../../src/portmap/mapper.js';
import type { PortMapping } from '../../src/portmap/common.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { FakeUdpGateway, FakeUpnpGateway, type UdpMode, type UpnpMode } from '../helpers/fake-gateway.js';

const fast = { initialMs: 20, attempts: 3 };

function mapperFor(udp: FakeUdpGateway, upnp?: FakeUpnpGateway, extra: Record<string, unknown> = {}) {
  return new PortMapper({
    gateway: '127.0.0.1',
    gatewayPort: udp.port,
    retransmit: fast,
    probeRetransmit: fast,
    protocols: upnp ? ['pcp', 'natpmp', 'upnp'] : ['pcp', 'natpmp'],
    upnp: upnp
      ? { ssdp: { address: '127.0.0.1', port: upnp.ssdpPort, timeoutMs: 800 }, httpTimeoutMs: 1000 }
      : undefined,
    ...extra,
  });
}

async function fakes(udpMode: UdpMode, upnpMode?: UpnpMode) {
  const udp = await FakeUdpGateway.start(udpMode);
  const upnp = upnpMode ? await FakeUpnpGateway.start(upnpMode) : undefined;
  return { udp, upnp, close: async () => (udp.close(), await upnp?.close()) };
}

test('PortMapper picks PCP when the gateway speaks it, renews at half-life, and close() deletes the mapping', async () => {
  const f = await fakes('pcp');
  const pm = mapperFor(f.udp);
  try {
    const m = await pm.map({ internalPort: 9000, transport: 'udp', lifetime: 2 });
    assert.equal(m.protocol, 'pcp');
    assert.equal(m.externalAddress, '198.51.100.77');
    assert.equal(f.udp.mappings.size, 1);
    const firstExpiry = m.expiresAt;
    const [renewed] = (await Promise.race([once(pm, 'renewed'), timeout(5000)])) as [PortMapping];
    assert.equal(renewed, m);
    assert.ok(m.expiresAt > firstExpiry, 'the lease was extended');
    assert.ok(f.udp.requests.filter((r) => r.kind === 'pcp-map').length >= 2);
  } finally {
    await pm.close();
    await f.close();
  }
  assert.equal(f.udp.mappings.size, 0, 'close() removed the mapping');
  assert.equal(f.udp.requests.at(-1)?.lifetime, 0);
});

test('PortMapper falls back to NAT-PMP on a NAT-PMP-only gateway and re-maps after a gateway restart', async () => {
  const f = await fakes('natpmp');
  const pm = mapperFor(f.udp);
  try {
    const m = await pm.map({ internalPort: 9001, transport: 'tcp', lifetime: 2 });
    assert.equal(m.protocol, 'natpmp');
    assert.equal(m.externalAddress, '198.51.100.77');
    assert.equal(m.internalAddress, '127.0.0.1');
    f.udp.restart();
    assert.equal(f.udp.mappings.size, 0);
    const restarted = once(pm, 'restart');
    await Promise.race([restarted, timeout(5000)]);
    assert.equal(f.udp.mappings.size, 1, 'the mapping exists again');
  } finally {
    await pm.close();
    await f.close();
  }
  assert.equal(f.udp.mappings.size, 0);
});

test('PortMapper forced to PCP against a NAT-PMP gateway negotiates down to NAT-PMP (RFC 6887 §9)', async () => {
  const f = await fakes('natpmp');
  const pm = mapperFor(f.udp);
  try {
    const m = await pm.map({ internalPort: 9002, protocol: 'pcp', lifetime: 60 });
    assert.equal(m.protocol, 'natpmp');
  } finally {
    await pm.close();
    await f.close();
  }
});

test('PortMapper uses UPnP when PCP and NAT-PMP are silent; IGDv1 permanent-only quirk maps with lease 0', async () => {
  const f = await fakes('silent', 'v1-permanent-only');
  const pm = mapperFor(f.udp, f.upnp);
  try {
    const m = await pm.map({ internalPort: 9003, transport: 'udp', lifetime: 60 });
    assert.equal(m.protocol, 'upnp');
    assert.equal(m.externalAddress, '198.51.100.88');
    assert.equal(m.lifetime, 0);
    assert.equal(m.expiresAt, Infinity);
    assert.equal(f.upnp!.mappings.get('UDP:9003')?.lease, 0);
  } finally {
    await pm.close();
  }
  assert.equal(f.upnp!.mappings.size, 0, 'permanent mapping deleted on close');
  await f.close();
});

test('PortMapper with UPnP IGDv2 renews with AddPortMapping and deletes on unmap', async () => {
  const f = await fakes('silent', 'v2');
  const pm = mapperFor(f.udp, f.upnp, { protocols: ['upnp'] });
  try {
    const m = await pm.map({ internalPort: 9004, transport: 'tcp', lifetime: 2 });
    assert.equal(m.lifetime, 2);
    assert.equal(f.upnp!.actions.includes('AddAnyPortMapping'), true);
    await Promise.race([once(pm, 'renewed'), timeout(5000)]);
    assert.equal(f.upnp!.actions.filter((a) => a === 'AddPortMapping').length >= 1, true);
    await pm.unmap(m);
    assert.equal(f.upnp!.mappings.size, 0);
    assert.deepEqual(pm.mappings, []);
  } finally {
    await pm.close();
    await f.close();
  }
});

test('PortMapper: nothing answers → one clear PORTMAP error, in bounded time', async () => {
  const f = await fakes('silent', 'hang');
  const pm = mapperFor(f.udp, f.upnp);
  try {
    await assert.rejects(pm.map({ internalPort: 9005 }), (e) => {
      assert.ok(isNatpunchError(e, 'PORTMAP'));
      assert.match(e.message, /answers none of pcp, natpmp, upnp/);
      return true;
    });
  } finally {
    await pm.close();
    await f.close();
  }
});

test('PortMapper: an error result (no usable external address) is reported with the result name', async () => {
  const f = await fakes('error');
  const pm = mapperFor(f.udp);
  try {
    await assert.rejects(
      pm.map({ internalPort: 9006 }),
      (e) => isNatpunchError(e, 'PORTMAP') && /NO_RESOURCES/.test(e.message) && /NETWORK_FAILURE/.test(e.message),
    );
  } finally {
    await pm.close();
    await f.close();
  }
});

test('probePortMapping reports which protocols answer', async () => {
  const f = await fakes('natpmp', 'v1');
  try {
    const p = await probePortMapping({
      gateway: '127.0.0.1',
      gatewayPort: f.udp.port,
      probeRetransmit: fast,
      upnp: { ssdp: { address: '127.0.0.1', port: f.upnp!.ssdpPort, timeoutMs: 800 } },
    });
    assert.equal(p.gateway, '127.0.0.1');
    assert.deepEqual([p.pcp.answered, p.natpmp.answered, p.upnp.answered], [false, true, true]);
    assert.equal(p.natpmp.externalAddress, '198.51.100.77');
    assert.equal(p.upnp.externalAddress, '198.51.100.88');
    assert.match(p.pcp.error ?? '', /does not speak PCP/);
    assert.equal(f.udp.mappings.size + f.upnp!.mappings.size, 0, 'a probe opens nothing');
  } finally {
    await f.close();
  }
});

test('PortMapper rejects bad arguments and use after close', async () => {
  const pm = new PortMapper({ gateway: '127.0.0.1', protocols: ['pcp'] });
  await assert.rejects(pm.map({ internalPort: 0 }), (e) => isNatpunchError(e, 'BAD_ARGUMENT'));
  await assert.rejects(pm.map({ internalPort: 1, lifetime: -1 }), (e) => isNatpunchError(e, 'BAD_ARGUMENT'));
  await pm.close();
  await assert.rejects(pm.map({ internalPort: 1 }), (e) => isNatpunchError(e, 'SOCKET_CLOSED'));
  await assert.rejects(new PortMapper({ gateway: 'router.lan' }).map({ internalPort: 1 }), (e) =>
    isNatpunchError(e, 'BAD_ARGUMENT'),
  );
});

function timeout(ms: number): Promise<never> {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms).unref());
}

test('PortMapper: an unsolicited PCP ANNOUNCE after a gateway reboot re-creates the mappings at once (RFC 6887 §14.1.3)', async () => {
  const f = await fakes('pcp');
  const pm = mapperFor(f.udp, undefined, { listenAnnounce: { port: 0, address: '127.0.0.1' } });
  try {
    await pm.map({ internalPort: 9100, lifetime: 3600 });
    await pm.map({ internalPort: 9101, transport: 'tcp', lifetime: 3600 });
    assert.ok(pm.announcePort);
    f.udp.restart();
    assert.equal(f.udp.mappings.size, 0);
    const restarted = once(pm, 'restart');
    f.udp.announce(pm.announcePort!);
    assert.deepEqual(await Promise.race([restarted, timeout(5000)]), ['pcp']);
    for (let i = 0; i < 50 && f.udp.mappings.size < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(f.udp.mappings.size, 2, 'both mappings are back');
  } finally {
    await pm.close();
    await f.close();
  }
  assert.equal(f.udp.mappings.size, 0);
});

test('PortMapper: a NAT-PMP address announcement with a new external address updates the mapping (RFC 6886 §3.2.1)', async () => {
  const f = await fakes('natpmp');
  const pm = mapperFor(f.udp, undefined, { listenAnnounce: { port: 0, address: '127.0.0.1' } });
  try {
    const m = await pm.map({ internalPort: 9102, lifetime: 3600 });
    assert.equal(m.externalAddress, '198.51.100.77');
    f.udp.externalAddress = '198.51.100.99';
    const changed = once(pm, 'changed');
    f.udp.announceNatPmp(pm.announcePort!);
    const [now, before] = (await Promise.race([changed, timeout(5000)])) as [PortMapping, { externalAddress: string }];
    assert.equal(now.externalAddress, '198.51.100.99');
    assert.equal(before.externalAddress, '198.51.100.77');
  } finally {
    await pm.close();
    await f.close();
  }
});

test('closeOnSignals: SIGTERM deletes the mappings, then the process dies of SIGTERM', async () => {
  const { spawn } = await import('node:child_process');
  const f = await fakes('pcp');
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', new URL('../helpers/map-child.ts', import.meta.url).pathname, String(f.udp.port), '9200'],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  try {
    const line = await Promise.race([once(child.stdout!, 'data'), timeout(15_000)]);
    assert.match(String(line), /"mapped":9200/);
    assert.equal(f.udp.mappings.size, 1);
    child.kill('SIGTERM');
    const [code, signal] = (await Promise.race([once(child, 'exit'), timeout(10_000)])) as [
      number | null,
      string | null,
    ];
    assert.equal(signal, 'SIGTERM', `exit code ${code}`);
    assert.equal(f.udp.mappings.size, 0, 'the mapping was deleted before the process went');
  } finally {
    child.kill('SIGKILL');
    await f.close();
  }
});

test('PortMapper over UPnP: a gateway that reports a conflict for every port gives up after a few tries, clearly', async () => {
  const f = await fakes('silent', 'conflict');
  const pm = mapperFor(f.udp, f.upnp, { protocols: ['upnp'] });
  try {
    await assert.rejects(
      pm.map({ internalPort: 9300 }),
      (e) => isNatpunchError(e, 'PORTMAP') && /ConflictInMappingEntry/.test(e.message),
    );
    assert.equal(f.upnp!.actions.filter((a) => a === 'AddPortMapping').length, 4, 'the asked port and 3 others');
  } finally {
    await pm.close();
    await f.close();
  }
});

test('toCandidate turns a mapping into a `mapped` candidate ranked between host and server-reflexive', async () => {
  const { toCandidate } = await import('../../src/portmap/mapper.js');
  const { candidatePriority } = await import('../../src/traversal/candidate.js');
  const c = toCandidate({
    protocol: 'pcp',
    transport: 'udp',
    gateway: '10.0.0.1',
    internalAddress: '10.0.0.2',
    internalPort: 4000,
    externalAddress: '198.51.100.7',
    externalPort: 4001,
    lifetime: 60,
    expiresAt: Date.now() + 60_000,
  });
  assert.deepEqual([c.type, c.transport, c.address, c.port], ['mapped', 'udp', '198.51.100.7', 4001]);
  assert.ok(c.priority < candidatePriority('host') && c.priority > candidatePriority('srflx'));
});

test('probePortMapping is bounded by its timeout even when the gateway hangs', async () => {
  const f = await fakes('silent', 'hang');
  try {
    const p = await probePortMapping({
      gateway: '127.0.0.1',
      gatewayPort: f.udp.port,
      timeoutMs: 600,
      upnp: { ssdp: { address: '127.0.0.1', port: f.upnp!.ssdpPort, timeoutMs: 400 }, httpTimeoutMs: 5000 },
    });
    assert.deepEqual([p.pcp.answered, p.natpmp.answered, p.upnp.answered], [false, false, false]);
    assert.match(p.upnp.error ?? '', /no answer within 600 ms/);
  } finally {
    await f.close();
  }
});

test('close() does not wait for a renewal stuck on a gateway that went silent', async () => {
  const f = await fakes('pcp');
  // A long schedule: a renewal against a silent gateway would take ~10 s.
  const pm = mapperFor(f.udp, undefined, { retransmit: { initialMs: 2000, attempts: 3 } });
  try {
    await pm.map({ internalPort: 9400, lifetime: 2 });
    f.udp.mode = 'silent';
    await new Promise((r) => setTimeout(r, 1300)); // the renewal at half-life is now in flight
    // Without aborting the renewal, close() would sit behind it for seconds; the guard only catches a hang.
    const r = await Promise.race([pm.close({ timeoutMs: 800 }), timeout(5000)]);
    assert.equal(r.deleted.length, 0);
    assert.equal(r.failed.length, 1, 'the silent gateway could not be told to delete');
  } finally {
    await pm.close();
    await f.close();
  }
});
