// STUN client and server on real loopback sockets (127.0.0.1, 127.0.0.2, ::1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { StunClient, StunTcpClient, stunBinding } from '../../src/stun/client.js';
import { StunServer } from '../../src/stun/server.js';
import {
  attr,
  ChangeRequest,
  checkFingerprint,
  createTransactionId,
  decodeStun,
  encodeStun,
  ErrorCodeAttr,
  longTermKey,
  MappedAddress,
  Nonce,
  nonceWithFeatures,
  Padding,
  PasswordAlgorithmAttr,
  PasswordAlgorithms,
  Realm,
  SecurityFeature,
  StunClass,
  StunMethod,
  UnknownAttributes,
  Username,
  verifyIntegrity,
  verifyIntegritySha256,
  XorMappedAddress,
  ResponsePort,
  coreRegistry,
  uint32Codec,
} from '../../src/wire/stun/index.js';
import { loopbackHosts } from '../helpers/net.js';

type T = NodeDatagramTransport;
const opened: Array<{ close(): void }> = [];
async function udp(address = '127.0.0.1'): Promise<T> {
  const t = await NodeDatagramTransport.bind({ address, port: 0 });
  opened.push(t);
  return t;
}
test.afterEach(() => {
  for (const o of opened.splice(0)) o.close();
});

/** Waits for the next datagram on `t` (bounded). */
function nextDatagram(t: T, ms = 2000): Promise<{ msg: Buffer; rinfo: { address: string; port: number } }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error('no datagram'));
    }, ms);
    const off = t.onMessage((msg, rinfo) => {
      clearTimeout(timer);
      off();
      resolve({ msg, rinfo });
    });
  });
}

// Shorter than the RFC's 39.5 s so a broken test fails fast; retransmissions can still happen on a busy machine,
// so counter assertions below allow for them.
const FAST = { rtoMs: 250, rc: 4, rm: 4 }; // 250 + 500 + 1000 + 1000 ms

test("binding over UDP returns the client's own address as XOR-MAPPED-ADDRESS (IPv4 and IPv6)", async () => {
  for (const host of await loopbackHosts()) {
    const serverSock = await udp(host);
    const server = new StunServer();
    server.attachUdp(serverSock);
    const clientSock = await udp(host);
    const client = new StunClient(clientSock);
    const r = await client.binding({ address: host, port: serverSock.address().port }, FAST);
    assert.equal(r.mapped.address, host);
    assert.equal(r.mapped.port, clientSock.address().port);
    assert.equal(r.software, 'natpunch');
    assert.equal(r.otherAddress, undefined);
    assert.equal(checkFingerprint(r.message), 'valid'); // our requests carry FINGERPRINT, so the response does
    const c = server.counters;
    assert.ok(c.requests >= 1 && c.responses === c.requests && c.errors === 0 && c.drops === 0, JSON.stringify(c));
    client.close();
    server.close();
  }
});

test('RFC 5780 mode: four sockets, CHANGE-REQUEST answered from the right one, OTHER-ADDRESS and RESPONSE-ORIGIN', async () => {
  const a = await udp('127.0.0.1');
  const p = a.address().port;
  let b: T | undefined;
  let ap: T | undefined;
  let bp: T | undefined;
  for (let i = 0; i < 10 && !bp; i++) {
    try {
      b = b ?? (await NodeDatagramTransport.bind({ address: '127.0.0.2', port: p }));
      opened.push(b);
      ap = await NodeDatagramTransport.bind({ address: '127.0.0.1', port: 0 });
      opened.push(ap);
      bp = await NodeDatagramTransport.bind({ address: '127.0.0.2', port: ap.address().port });
      opened.push(bp);
    } catch {
      /* port taken on the other address: try another */
    }
  }
  assert.ok(b && ap && bp, 'could not bind the RFC 5780 socket quartet');
  const p2 = ap.address().port;
  const server = new StunServer();
  server.attachRfc5780({ primary: a, altPort: ap, altIp: b, altBoth: bp });
  const clientSock = await udp();
  const client = new StunClient(clientSock);
  const to = { address: '127.0.0.1', port: p };

  const plain = await client.binding(to, FAST);
  assert.deepEqual(plain.from, to);
  assert.deepEqual(plain.responseOrigin, { family: 'IPv4', address: '127.0.0.1', port: p });
  assert.deepEqual(plain.otherAddress, { family: 'IPv4', address: '127.0.0.2', port: p2 });
  assert.equal(plain.mapped.port, clientSock.address().port);

  const cases = [
    [{ changeIp: true, changePort: true }, '127.0.0.2', p2],
    [{ changeIp: true, changePort: false }, '127.0.0.2', p],
    [{ changeIp: false, changePort: true }, '127.0.0.1', p2],
  ] as const;
  for (const [change, address, port] of cases) {
    const r = await client.binding(to, { ...FAST, matchSource: false, attributes: [attr(ChangeRequest, change)] });
    assert.deepEqual(r.from, { address, port }, JSON.stringify(change));
    assert.deepEqual(r.responseOrigin, { family: 'IPv4', address, port });
  }
  // A request to the alternate socket names the primary as OTHER-ADDRESS.
  const viaAlt = await client.binding({ address: '127.0.0.2', port: p2 }, FAST);
  assert.deepEqual(viaAlt.otherAddress, { family: 'IPv4', address: '127.0.0.1', port: p });

  // RESPONSE-PORT (RFC 5780 §7.5): the answer goes to another port of the requester's address.
  const other = await udp();
  const tid = createTransactionId();
  const got = nextDatagram(other);
  clientSock.send(
    encodeStun({
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: tid,
      attributes: [attr(ResponsePort, other.address().port)],
    }),
    p,
    '127.0.0.1',
  );
  const { msg } = await got;
  assert.deepEqual(Buffer.from(decodeStun(msg).transactionId), Buffer.from(tid));
  client.close();
  server.close();
});

test('without RFC 5780 mode CHANGE-REQUEST is an unknown attribute: 420 with UNKNOWN-ATTRIBUTES', async () => {
  const s = await udp();
  const server = new StunServer();
  server.attachUdp(s);
  const client = new StunClient(await udp());
  const to = { address: '127.0.0.1', port: s.address().port };
  await assert.rejects(
    client.binding(to, {
      ...FAST,
      attributes: [
        attr(ChangeRequest, { changeIp: true, changePort: false }),
        { type: 0x7ff0, value: new Uint8Array(4) },
      ],
    }),
    (e: unknown) => {
      assert.ok(isNatpunchError(e, 'STUN_ERROR_RESPONSE'));
      assert.equal(e.details?.code, 420);
      const resp = e.details?.response as ReturnType<typeof decodeStun>;
      assert.deepEqual(resp.get(UnknownAttributes)?.sort(), [0x0003, 0x7ff0]);
      return true;
    },
  );
  // An unknown method is a 400.
  await assert.rejects(
    client.request(to, { ...FAST, method: 0x0ab }),
    (e: unknown) => isNatpunchError(e, 'STUN_ERROR_RESPONSE') && e.details?.code === 400,
  );
  assert.ok(server.counters.errors >= 2 && server.counters.responses === 0);
  client.close();
  server.close();
});

test('garbage in the STUN range is dropped silently; other first bytes are left alone; legacy RFC 3489 requests are answered', async () => {
  const s = await udp();
  const server = new StunServer();
  server.attachUdp(s);
  const c = await udp();
  const port = s.address().port;
  for (const junk of [Buffer.from([0, 1, 0, 4]), Buffer.alloc(40, 1), Buffer.from('0101000021', 'hex')])
    c.send(junk, port, '127.0.0.1');
  c.send(Buffer.from([0xf0, 1, 2, 3]), port, '127.0.0.1'); // rendezvous byte: not ours
  c.send(Buffer.alloc(24, 0x40), port, '127.0.0.1'); // ChannelData range: not ours
  // A bad FINGERPRINT is dropped too.
  const fp = encodeStun(
    { cls: StunClass.Request, method: StunMethod.Binding, transactionId: createTransactionId() },
    { fingerprint: true },
  );
  fp[fp.length - 1] ^= 0xff;
  c.send(fp, port, '127.0.0.1');
  // RFC 3489 request: 128-bit transaction id, no cookie.
  const tid16 = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  const got = nextDatagram(c);
  c.send(encodeStun({ cls: StunClass.Request, method: StunMethod.Binding, transactionId: tid16 }), port, '127.0.0.1');
  const { msg } = await got;
  const m = decodeStun(msg, { allowLegacy: true });
  assert.ok(m.legacy);
  assert.deepEqual(Buffer.from(msg.subarray(4, 20)), tid16);
  assert.deepEqual(m.get(MappedAddress), { family: 'IPv4', address: '127.0.0.1', port: c.address().port });
  assert.equal(server.counters.drops, 4);
  assert.equal(server.counters.responses, 1);
  server.close();
});

test('no amplification: responses to small requests stay within 3x, PADDING is echoed only up to the bound', async () => {
  const s = await udp();
  const server = new StunServer({ software: 'natpunch test server with a long software name' });
  server.attachUdp(s);
  const c = await udp();
  const port = s.address().port;
  const bare = encodeStun({ cls: StunClass.Request, method: StunMethod.Binding, transactionId: createTransactionId() });
  let got = nextDatagram(c);
  c.send(bare, port, '127.0.0.1');
  let r = (await got).msg;
  assert.ok(r.length <= 3 * bare.length, `${r.length} > 3 x ${bare.length}`);
  assert.ok(decodeStun(r).get(XorMappedAddress)); // SOFTWARE was dropped, the answer was not
  // PADDING is refused without RFC 5780 mode (420), so run a 5780-mode server for it.
  const group = [await udp('127.0.0.1'), await udp('127.0.0.1'), await udp('127.0.0.2'), await udp('127.0.0.2')];
  const s5780 = new StunServer();
  s5780.attachRfc5780({ primary: group[0]!, altPort: group[1]!, altIp: group[2]!, altBoth: group[3]! });
  const padded = encodeStun({
    cls: StunClass.Request,
    method: StunMethod.Binding,
    transactionId: createTransactionId(),
    attributes: [attr(Padding, new Uint8Array(400))],
  });
  got = nextDatagram(c);
  c.send(padded, group[0]!.address().port, '127.0.0.1');
  r = (await got).msg;
  assert.ok(r.length <= 3 * padded.length);
  assert.ok(r.length >= 400, 'response was padded');
  server.close();
  s5780.close();
});

test('retransmits per RFC 8489 §6.2.1 until answered, ignores spoofed sources and bad FINGERPRINTs', async () => {
  const fake = await udp();
  const spoofer = await udp();
  const clientSock = await udp();
  const client = new StunClient(clientSock);
  let seen = 0;
  fake.onMessage((msg, rinfo) => {
    seen++;
    if (seen < 3) return; // lose the first two requests
    const req = decodeStun(msg);
    const ok = encodeStun(
      {
        cls: StunClass.SuccessResponse,
        method: StunMethod.Binding,
        transactionId: req.transactionId,
        attributes: [attr(XorMappedAddress, { family: 'IPv4', address: '192.0.2.9', port: 9 })],
      },
      { fingerprint: true },
    );
    const spoofed = encodeStun({
      cls: StunClass.SuccessResponse,
      method: StunMethod.Binding,
      transactionId: req.transactionId,
      attributes: [attr(XorMappedAddress, { family: 'IPv4', address: '203.0.113.66', port: 66 })],
    });
    const badFp = Buffer.from(ok);
    badFp[badFp.length - 1] ^= 1;
    badFp[27] ^= 1;
    spoofer.send(spoofed, rinfo.port, rinfo.address); // right transaction id, wrong source
    fake.send(badFp, rinfo.port, rinfo.address);
    setTimeout(() => fake.send(ok, rinfo.port, rinfo.address), 20);
  });
  const r = await client.binding({ address: '127.0.0.1', port: fake.address().port }, { rtoMs: 30, rc: 7, rm: 16 });
  assert.ok(seen >= 3); // the first two were "lost"; a slow machine may have sent one more before the answer came
  assert.deepEqual(r.mapped, { family: 'IPv4', address: '192.0.2.9', port: 9 });
  client.close();
});

test('times out with STUN_TIMEOUT after Rc sends, honours the overall deadline and AbortSignal', async () => {
  const silent = await udp();
  let seen = 0;
  const markers: Array<() => void> = [];
  silent.onMessage((m) => {
    if (m.toString() === 'marker') markers.shift()?.();
    else seen++;
  });
  const socket = await udp();
  const client = new StunClient(socket);
  const to = { address: '127.0.0.1', port: silent.address().port };
  // Everything sent before a marker from the same socket has arrived once the marker has (loopback keeps order).
  const drained = () =>
    new Promise<void>((resolve) => {
      markers.push(resolve);
      socket.send(Buffer.from('marker'), to.port, to.address);
    });
  await assert.rejects(client.binding(to, { rtoMs: 10, rc: 3, rm: 2 }), (e: unknown) =>
    isNatpunchError(e, 'STUN_TIMEOUT'),
  );
  await drained();
  assert.equal(seen, 3); // exactly Rc requests
  await assert.rejects(client.binding(to, { timeoutMs: 50 }), (e: unknown) => isNatpunchError(e, 'STUN_TIMEOUT'));
  const ac = new AbortController();
  const p = client.binding(to, { signal: ac.signal });
  setTimeout(() => ac.abort(), 10);
  await assert.rejects(p, (e: unknown) => isNatpunchError(e, 'ABORTED'));
  // An already-aborted signal fails at once (nothing is sent).
  await drained();
  const before = seen;
  await assert.rejects(client.binding(to, { signal: AbortSignal.abort() }), (e: unknown) =>
    isNatpunchError(e, 'ABORTED'),
  );
  await drained();
  assert.equal(seen, before);
  const pending = client.binding(to);
  client.close();
  await assert.rejects(pending, (e: unknown) => isNatpunchError(e, 'ABORTED'));
});

for (const algorithm of ['MD5', 'SHA-256'] as const) {
  test(`long-term credentials: 401 with REALM/NONCE, then an authenticated retry (${algorithm})`, async () => {
    const fake = await udp();
    const realm = 'natpunch.test';
    const nonce =
      algorithm === 'SHA-256' ? nonceWithFeatures(SecurityFeature.PasswordAlgorithms, 'n1') : 'plain-nonce-1';
    const key = longTermKey('alice', realm, 'secret', algorithm);
    const steps: string[] = [];
    const seenTids = new Set<string>();
    fake.onMessage((msg, rinfo) => {
      const req = decodeStun(msg);
      const fresh = !seenTids.has(req.transactionKey); // retransmissions are answered but not recorded twice
      seenTids.add(req.transactionKey);
      const reply = (cls: 2 | 3, attributes: Parameters<typeof encodeStun>[0]['attributes'], sign: boolean) =>
        fake.send(
          encodeStun(
            { cls, method: req.method, transactionId: req.transactionId, attributes },
            sign ? (algorithm === 'SHA-256' ? { integritySha256: key } : { integrity: key }) : {},
          ),
          rinfo.port,
          rinfo.address,
        );
      const signed = algorithm === 'SHA-256' ? verifyIntegritySha256(req, key) : verifyIntegrity(req, key);
      if (!req.has(0x0006)) {
        if (fresh) steps.push('challenge');
        reply(
          StunClass.ErrorResponse,
          [
            attr(ErrorCodeAttr, { code: 401, reason: 'Unauthorized' }),
            attr(Realm, realm),
            attr(Nonce, nonce),
            ...(algorithm === 'SHA-256'
              ? [
                  attr(PasswordAlgorithms, [
                    { algorithm: 2, params: new Uint8Array(0) },
                    { algorithm: 1, params: new Uint8Array(0) },
                  ]),
                ]
              : []),
          ],
          false,
        );
      } else if (signed && req.get(Username) === 'alice' && req.get(Nonce) === nonce) {
        if (fresh) steps.push('ok');
        if (algorithm === 'SHA-256') assert.equal(req.get(PasswordAlgorithmAttr)?.algorithm, 2);
        reply(
          StunClass.SuccessResponse,
          [attr(XorMappedAddress, { family: 'IPv4', address: rinfo.address, port: rinfo.port })],
          true,
        );
      } else {
        // Wrong credentials: a real server answers 401 again with the same realm and nonce.
        if (fresh) steps.push('bad');
        reply(
          StunClass.ErrorResponse,
          [attr(ErrorCodeAttr, { code: 401, reason: 'Unauthorized' }), attr(Realm, realm), attr(Nonce, nonce)],
          false,
        );
      }
    });
    const client = new StunClient(await udp());
    const to = { address: '127.0.0.1', port: fake.address().port };
    const r = await client.binding(to, {
      ...FAST,
      credentials: { kind: 'long-term', username: 'alice', password: 'secret' },
    });
    assert.equal(r.mapped.address, '127.0.0.1');
    // The next request goes authenticated at once (state cached per server).
    await client.binding(to, { ...FAST, credentials: { kind: 'long-term', username: 'alice', password: 'secret' } });
    assert.deepEqual(steps, ['challenge', 'ok', 'ok']);
    // Wrong password: the client gives up with the 401 as soon as the challenge repeats (no endless retry).
    const wrong = new StunClient(await udp());
    await assert.rejects(
      wrong.binding(to, { ...FAST, credentials: { kind: 'long-term', username: 'alice', password: 'nope' } }),
      (e: unknown) => isNatpunchError(e, 'STUN_ERROR_RESPONSE') && e.details?.code === 401,
    );
    client.close();
    wrong.close();
  });
}

test('STUN over TCP: framing, binding through handleTcp with pre-read head bytes, and stunBinding({tcp})', async () => {
  const server = new StunServer();
  const tcp = net.createServer((sock) => {
    // Like serve's dispatcher: read the first chunk, then hand the socket over with it.
    sock.once('data', (head) => server.handleTcp(sock, head));
  });
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  const port = (tcp.address() as net.AddressInfo).port;
  try {
    const client = await StunTcpClient.connect({ address: '127.0.0.1', port });
    const r1 = await client.binding();
    const r2 = await client.binding();
    assert.equal(r1.mapped.address, '127.0.0.1');
    assert.equal(r1.mapped.port, client.socket.localPort);
    assert.equal(r2.mapped.port, client.socket.localPort);
    client.close();
    const r3 = await stunBinding({ host: '127.0.0.1', port }, { tcp: true, timeoutMs: 2000 });
    assert.equal(r3.mapped.port, r3.local.port);
    assert.equal(server.counters.responses, 3);
  } finally {
    server.close();
    await new Promise((r) => tcp.close(r));
  }
});

test('stunBinding over UDP opens and closes its own socket', async () => {
  const s = await udp();
  const server = new StunServer();
  server.attachUdp(s);
  const silent = await udp();
  const r = await stunBinding({ host: '127.0.0.1', port: silent.address().port }, { rtoMs: 50, rc: 2, rm: 2 }).catch(
    (e) => e,
  );
  assert.ok(isNatpunchError(r, 'STUN_TIMEOUT'));
  const ok = await stunBinding({ host: '127.0.0.1', port: s.address().port }, FAST);
  assert.equal(ok.mapped.port, ok.local.port);
  const text = await stunBinding(`127.0.0.1:${s.address().port}`, FAST); // "host:port" strings work too
  assert.equal(text.mapped.port, text.local.port);
  server.close();
});

test('other methods can be served through registerMethod (the hook TURN uses); unregistered they get 400', async () => {
  const s = await udp();
  const server = new StunServer();
  server.attachUdp(s);
  const seen: string[] = [];
  const off = server.registerMethod(0x003, (req, ctx) => {
    seen.push(`${ctx.transport} ${ctx.from.address}`);
    return encodeStun({
      cls: StunClass.SuccessResponse,
      method: req.method,
      transactionId: req.transactionId,
      attributes: [attr(XorMappedAddress, ctx.from)],
    });
  });
  const client = new StunClient(await udp());
  const to = { address: '127.0.0.1', port: s.address().port };
  const r = await client.request(to, { ...FAST, method: 0x003 });
  assert.equal(r.message.method, 0x003);
  assert.deepEqual(seen, ['udp 127.0.0.1']);
  off();
  await assert.rejects(
    client.request(to, { ...FAST, method: 0x003 }),
    (e: unknown) => isNatpunchError(e, 'STUN_ERROR_RESPONSE') && e.details?.code === 400,
  );
  assert.ok(server.counters.responses >= 1 && server.counters.errors >= 1);
  client.close();
  server.close();
});

test('STUN over TCP: a peer that sends non-STUN bytes fails pending requests at once; ChannelData frames reach listeners', async () => {
  const tcp = net.createServer((sock) => {
    sock.once('data', () => {
      // ChannelData frame (RFC 8656 §12.5, padded over TCP), then garbage.
      sock.write(Buffer.from([0x40, 0x01, 0x00, 0x03, 7, 8, 9, 0]));
      setTimeout(() => sock.write(Buffer.from([0xf0, 0, 0, 0])), 20);
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  try {
    const client = await StunTcpClient.connect({ address: '127.0.0.1', port: (tcp.address() as net.AddressInfo).port });
    const frames: Array<[number, number[]]> = [];
    client.onChannelData((ch, data) => frames.push([ch, [...data]]));
    await assert.rejects(client.binding({ timeoutMs: 5000 }), (e: unknown) => isNatpunchError(e, 'STUN_DECODE'));
    assert.deepEqual(frames, [[0x4001, [7, 8, 9]]]);
    assert.ok(client.closed);
    client.close();
  } finally {
    await new Promise((r) => tcp.close(r));
  }
});

test('a response with unknown comprehension-required attributes fails the transaction unless the registry knows them', async () => {
  const fake = await udp();
  fake.onMessage((msg, rinfo) => {
    const req = decodeStun(msg);
    fake.send(
      encodeStun({
        cls: StunClass.SuccessResponse,
        method: req.method,
        transactionId: req.transactionId,
        attributes: [
          attr(XorMappedAddress, { family: 'IPv4', address: rinfo.address, port: rinfo.port }),
          { type: 0x7ff1, value: new Uint8Array(4) },
        ],
      }),
      rinfo.port,
      rinfo.address,
    );
  });
  const to = { address: '127.0.0.1', port: fake.address().port };
  const strict = new StunClient(await udp());
  await assert.rejects(
    strict.binding(to, FAST),
    (e: unknown) => isNatpunchError(e, 'STUN_DECODE') && /0x7ff1/.test(e.message),
  );
  const registry = coreRegistry.extend();
  registry.registerAttribute(0x7ff1, 'TEST-ATTRIBUTE', uint32Codec);
  const aware = new StunClient(await udp(), { registry });
  assert.equal((await aware.binding(to, FAST)).mapped.address, '127.0.0.1');
  strict.close();
  aware.close();
});

test('stunBinding over TCP: one deadline covers connect and transaction, reported as STUN_TIMEOUT', async () => {
  // A TCP server that accepts and never answers.
  const held: net.Socket[] = [];
  const tcp = net.createServer((sock) => {
    held.push(sock);
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  try {
    const port = (tcp.address() as net.AddressInfo).port;
    await assert.rejects(stunBinding({ host: '127.0.0.1', port }, { tcp: true, timeoutMs: 200 }), (e: unknown) =>
      isNatpunchError(e, 'STUN_TIMEOUT'),
    );
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(stunBinding({ host: '127.0.0.1', port }, { tcp: true, signal: ac.signal }), (e: unknown) =>
      isNatpunchError(e, 'ABORTED'),
    );
  } finally {
    held.forEach((s) => s.destroy());
    await new Promise((r) => tcp.close(r));
  }
});
