import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UpnpIgdClient, parseDeviceDescription, parseSsdpAnswer, ssdpSearch } from '../../src/portmap/upnp.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { FakeUpnpGateway, type UpnpMode } from '../helpers/fake-gateway.js';

async function withFake(mode: UpnpMode, fn: (g: FakeUpnpGateway) => Promise<void>): Promise<void> {
  const g = await FakeUpnpGateway.start(mode);
  try {
    await fn(g);
  } finally {
    await g.close();
  }
}

const discover = (g: FakeUpnpGateway, extra: Record<string, unknown> = {}) =>
  UpnpIgdClient.discover({
    gateway: '127.0.0.1',
    ssdp: { address: '127.0.0.1', port: g.ssdpPort, timeoutMs: 1500 },
    httpTimeoutMs: 1000,
    ...extra,
  });

test('UPnP: SSDP (to a loopback fake) → description → WANIPConnection:1 actions', async () => {
  await withFake('v1', async (g) => {
    const c = await discover(g);
    assert.ok(g.searches >= 1 && g.searches <= 4, 'M-SEARCH is bounded');
    assert.equal(c.serviceType, 'urn:schemas-upnp-org:service:WANIPConnection:1');
    assert.equal(c.device.service.controlUrl, `http://127.0.0.1:${g.httpPort}/ctl/IPConn`);
    assert.equal(await c.getExternalIPAddress(), '198.51.100.88');
    const m = {
      externalPort: 5555,
      transport: 'udp' as const,
      internalPort: 5000,
      internalClient: '127.0.0.1',
      description: 'natpunch <test> & co',
      leaseDuration: 60,
    };
    await c.addPortMapping(m);
    const e = await c.getSpecificPortMappingEntry(m);
    assert.deepEqual(e, {
      internalClient: '127.0.0.1',
      internalPort: 5000,
      enabled: true,
      description: 'natpunch <test> & co',
      leaseDuration: 60,
    });
    await c.deletePortMapping(m);
    assert.equal(await c.getSpecificPortMappingEntry(m), undefined);
    await assert.rejects(
      c.deletePortMapping(m),
      (err) =>
        isNatpunchError(err, 'PORTMAP') && /NoSuchEntryInArray/.test(err.message) && err.details?.upnpErrorCode === 714,
    );
    await assert.rejects(
      c.addAnyPortMapping(m),
      (err) => isNatpunchError(err, 'PORTMAP') && err.details?.upnpErrorCode === 401,
    );
  });
});

test('UPnP IGDv2: AddAnyPortMapping returns the reserved port', async () => {
  await withFake('v2', async (g) => {
    const c = await discover(g);
    assert.ok(c.isV2);
    assert.equal(
      await c.addAnyPortMapping({
        externalPort: 7000,
        transport: 'tcp',
        internalPort: 7000,
        internalClient: '127.0.0.1',
        description: 'x',
        leaseDuration: 30,
      }),
      7000,
    );
  });
});

test('UPnP: SOAP faults become clear messages (718 ConflictInMappingEntry)', async () => {
  await withFake('conflict', async (g) => {
    const c = await discover(g);
    await assert.rejects(
      c.addPortMapping({
        externalPort: 1,
        transport: 'udp',
        internalPort: 1,
        internalClient: '127.0.0.1',
        description: '',
        leaseDuration: 1,
      }),
      (e) =>
        isNatpunchError(e, 'PORTMAP') &&
        /already mapped to another host/.test(e.message) &&
        e.details?.upnpErrorCode === 718,
    );
  });
});

test('UPnP hostile gateways: bad XML, DTD, huge description, redirect, foreign control URL → clear PORTMAP errors', async () => {
  const cases: Array<[UpnpMode, RegExp]> = [
    ['bad-xml', /not valid XML/],
    ['dtd', /DTD/],
    ['huge', /cap/],
    ['redirect', /redirect/],
    ['foreign-control-url', /points away from the gateway/],
  ];
  for (const [mode, re] of cases) {
    await withFake(mode, async (g) => {
      await assert.rejects(discover(g, { maxDescriptionBytes: 64 * 1024 }), (e) => {
        assert.ok(isNatpunchError(e, 'PORTMAP'), `${mode}: ${String(e)}`);
        assert.match(e.message, re, mode);
        return true;
      });
    });
  }
});

test('UPnP: a gateway that never answers HTTP → TIMEOUT within the request timeout', async () => {
  await withFake('hang', async (g) => {
    await assert.rejects(
      discover(g, { httpTimeoutMs: 300 }),
      (e) => isNatpunchError(e, 'TIMEOUT') && /did not answer within 300 ms/.test(e.message),
    );
  });
});

test('UPnP: SSDP answers pointing at another host are ignored; no answer → TIMEOUT', async () => {
  await withFake('v1', async (g) => {
    g.locationHost = '192.0.2.55';
    const answers = await ssdpSearch({ address: '127.0.0.1', port: g.ssdpPort, timeoutMs: 400 });
    assert.ok(g.searches > 0);
    assert.deepEqual(answers, []);
    await assert.rejects(discover(g, { ssdp: { address: '127.0.0.1', port: g.ssdpPort, timeoutMs: 400 } }), (e) =>
      isNatpunchError(e, 'TIMEOUT'),
    );
  });
});

test('SSDP answer and description parsing', () => {
  assert.equal(
    parseSsdpAnswer('HTTP/1.1 200 OK\r\nLOCATION: http://10.0.0.1:5000/d.xml\r\nST: x\r\n\r\n', '10.0.0.1')?.location,
    'http://10.0.0.1:5000/d.xml',
  );
  assert.equal(parseSsdpAnswer('HTTP/1.1 200 OK\r\nLOCATION: http://10.0.0.9/d.xml\r\n\r\n', '10.0.0.1'), undefined);
  assert.equal(parseSsdpAnswer('NOTIFY * HTTP/1.1\r\nLOCATION: http://10.0.0.1/d.xml\r\n\r\n', '10.0.0.1'), undefined);
  assert.equal(parseSsdpAnswer('HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n', '10.0.0.1'), undefined);
  const ppp = `<root><URLBase>http://10.0.0.1:80/base/</URLBase><device><deviceList><device><deviceList><device><serviceList>
    <service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType><controlURL>ppp</controlURL></service>
    <service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>/ip</controlURL></service>
  </serviceList></device></deviceList></device></deviceList></device></root>`;
  const s = parseDeviceDescription(ppp, 'http://10.0.0.1:80/desc.xml');
  assert.deepEqual(
    s.map((x) => x.controlUrl),
    ['http://10.0.0.1/ip', 'http://10.0.0.1/base/ppp'],
  );
  assert.throws(
    () => parseDeviceDescription('<root><device/></root>', 'http://10.0.0.1/'),
    (e) => isNatpunchError(e, 'PORTMAP'),
  );
  assert.throws(
    () => parseDeviceDescription('<html></html>', 'http://10.0.0.1/'),
    (e) => isNatpunchError(e, 'PORTMAP'),
  );
});

test('UPnP: a description trickled byte by byte is cut off by the whole-exchange timeout', async () => {
  await withFake('trickle', async (g) => {
    await assert.rejects(discover(g, { httpTimeoutMs: 400 }), (e) => isNatpunchError(e, 'TIMEOUT'));
  });
});

test('UPnP: a SOAP answer that is not XML gives a clear PORTMAP error', async () => {
  await withFake('bad-soap', async (g) => {
    const c = await discover(g);
    await assert.rejects(
      c.getExternalIPAddress(),
      (e) => isNatpunchError(e, 'PORTMAP') && /GetExternalIPAddress answer is not valid XML/.test(e.message),
    );
  });
});
