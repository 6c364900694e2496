import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { UdxEndpoint } from '../../src/net/udx.js';
import { ConnectivityChecks, deriveCheckKey } from '../../src/traversal/checks.js';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';
import { isNatpunchError, type NatpunchError } from '../../src/util/errors.js';

function host(port: number, address = '127.0.0.1'): Candidate {
  return { type: 'host', transport: 'udp', address, port, priority: candidatePriority('host') };
}
function srflx(port: number): Candidate {
  return { type: 'srflx', transport: 'udp', address: '127.0.0.1', port, priority: candidatePriority('srflx') };
}

/** A socket that swallows everything: a candidate behind a firewall that never answers. */
async function blackhole() {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  s.on('message', () => {});
  return { port: s.address().port, close: () => new Promise<void>((r) => s.close(() => r())) };
}

test('both sides find and agree on the working pair; a blocked candidate is reported as unanswered', async () => {
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const hole = await blackhole();
  const cid = randomBytes(16);
  const key = deriveCheckKey(cid, randomBytes(32), randomBytes(32));
  const aCands = [host(a.address().port)];
  // B's "best" candidate is unreachable; the srflx one works.
  const bCands = [host(hole.port), srflx(b.address().port)];
  const ca = new ConnectivityChecks({
    transport: a,
    role: 'initiator',
    connectionId: cid,
    key,
    local: aCands,
    remote: bCands,
    timeoutMs: 5000,
  });
  const cb = new ConnectivityChecks({
    transport: b,
    role: 'responder',
    connectionId: cid,
    key,
    local: bCands,
    remote: aCands,
    timeoutMs: 5000,
  });
  try {
    const [ra, rb] = await Promise.all([ca.run(), cb.run()]);
    assert.deepEqual(ra.remote, { address: '127.0.0.1', port: b.address().port });
    assert.deepEqual(rb.remote, { address: '127.0.0.1', port: a.address().port });
    assert.equal(ra.kind, 'direct');
    assert.equal(ra.remoteCandidate.type, 'srflx');
    assert.equal(rb.kind, 'lan');
    assert.deepEqual(ra.mapped, { address: '127.0.0.1', port: a.address().port });
    assert.equal(ra.localCandidate?.type, 'host');
    const blocked = ra.tried.find((t) => t.remote === `127.0.0.1:${hole.port}`);
    assert.ok(blocked && blocked.responses === 0);
  } finally {
    ca.close();
    cb.close();
    await hole.close();
    await a.close();
    await b.close();
  }
});

test('a peer we were told nothing about is learned as peer-reflexive and nominated', async () => {
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const cid = randomBytes(16);
  const key = randomBytes(32);
  // The responder has no candidates for the initiator (say its NAT mapped it unpredictably).
  const ca = new ConnectivityChecks({
    transport: a,
    role: 'initiator',
    connectionId: cid,
    key,
    local: [],
    remote: [host(b.address().port)],
    timeoutMs: 5000,
  });
  const cb = new ConnectivityChecks({
    transport: b,
    role: 'responder',
    connectionId: cid,
    key,
    local: [],
    remote: [],
    timeoutMs: 5000,
  });
  try {
    const [ra, rb] = await Promise.all([ca.run(), cb.run()]);
    assert.equal(ra.remote.port, b.address().port);
    assert.equal(rb.remote.port, a.address().port);
    assert.equal(rb.remoteCandidate.type, 'prflx');
  } finally {
    ca.close();
    cb.close();
    await a.close();
    await b.close();
  }
});

test('probes with the wrong key are ignored: PUNCH_FAILED lists every candidate tried', async () => {
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const hole = await blackhole();
  const cid = randomBytes(16);
  const ca = new ConnectivityChecks({
    transport: a,
    role: 'initiator',
    connectionId: cid,
    key: randomBytes(32),
    local: [],
    remote: [host(b.address().port), host(hole.port)],
    timeoutMs: 800,
  });
  const cb = new ConnectivityChecks({
    transport: b,
    role: 'responder',
    connectionId: cid,
    key: randomBytes(32),
    local: [],
    remote: [host(a.address().port)],
    timeoutMs: 800,
  });
  try {
    const [ra, rb] = await Promise.allSettled([ca.run(), cb.run()]);
    assert.equal(ra.status, 'rejected');
    const err = (ra as PromiseRejectedResult).reason as NatpunchError;
    assert.ok(isNatpunchError(err, 'PUNCH_FAILED'), String(err));
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${b.address().port}`));
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${hole.port}`));
    assert.equal((err.details?.tried as unknown[]).length, 2);
    assert.equal(rb.status, 'rejected');
    assert.ok(isNatpunchError((rb as PromiseRejectedResult).reason, 'PUNCH_FAILED'));
  } finally {
    ca.close();
    cb.close();
    await hole.close();
    await a.close();
    await b.close();
  }
});

test('an abort signal stops the checks with ABORTED; bad candidates are skipped, not sent to', async () => {
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const ac = new AbortController();
  const bad: Candidate[] = [
    { type: 'host', transport: 'udp', address: 'not-an-ip', port: 1, priority: 1 },
    { type: 'host', transport: 'udp', address: '127.0.0.1', port: 70000, priority: 1 },
    { type: 'host', transport: 'tcp', address: '127.0.0.1', port: 9, priority: 1 },
  ];
  const ca = new ConnectivityChecks({
    transport: a,
    role: 'initiator',
    connectionId: 'c',
    key: randomBytes(32),
    local: [],
    remote: bad,
    signal: ac.signal,
  });
  try {
    const p = ca.run();
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(p, (e: unknown) => isNatpunchError(e, 'ABORTED'));
    assert.ok(ca.report().every((t) => t.state === 'skipped' && t.requests === 0));
  } finally {
    ca.close();
    await a.close();
  }
});

test('two connections on the same sockets do not cross: each nominates its own peer', async () => {
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const c = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const k1 = randomBytes(32);
  const k2 = randomBytes(32);
  // a talks to b (connection 1) and to c (connection 2) at the same time; b's and c's candidates are both listed.
  const all = [host(b.address().port), host(c.address().port)];
  const ab = new ConnectivityChecks({
    transport: a,
    role: 'initiator',
    connectionId: 'one',
    key: k1,
    local: [],
    remote: all,
    timeoutMs: 5000,
  });
  const ac2 = new ConnectivityChecks({
    transport: a,
    role: 'initiator',
    connectionId: 'two',
    key: k2,
    local: [],
    remote: all,
    timeoutMs: 5000,
  });
  const bb = new ConnectivityChecks({
    transport: b,
    role: 'responder',
    connectionId: 'one',
    key: k1,
    local: [],
    remote: [host(a.address().port)],
    timeoutMs: 5000,
  });
  const cc = new ConnectivityChecks({
    transport: c,
    role: 'responder',
    connectionId: 'two',
    key: k2,
    local: [],
    remote: [host(a.address().port)],
    timeoutMs: 5000,
  });
  try {
    const [r1, r2] = await Promise.all([ab.run(), ac2.run(), bb.run(), cc.run()]);
    assert.equal(r1.remote.port, b.address().port);
    assert.equal(r2.remote.port, c.address().port);
  } finally {
    for (const x of [ab, ac2, bb, cc]) x.close();
    await Promise.all([a.close(), b.close(), c.close()]);
  }
});

test('a handshake payload rides on requests and responses; a payload whose length field lies is dropped; one too big for a check is refused', async () => {
  const { createHmac } = await import('node:crypto');
  const { MAX_CHECK_BYTES } = await import('../../src/traversal/checks.js');
  const a = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const b = await UdxEndpoint.bind({ address: '127.0.0.1' });
  const cid = randomBytes(16);
  const key = randomBytes(32);
  const seen: string[] = [];
  const hello = Buffer.from('hello, responder');
  const ca = new ConnectivityChecks({
    transport: a,
    role: 'initiator',
    connectionId: cid,
    key,
    local: [],
    remote: [host(b.address().port)],
    nomination: 'implicit',
    timeoutMs: 3000,
    handshake: {
      requestPayload: () => hello,
      onRequest: () => null,
      onResponse: (p) => (seen.push(`response:${p?.toString()}`), p?.toString() === 'welcome' ? 'nominate' : 'ignore'),
    },
  });
  const cb = new ConnectivityChecks({
    transport: b,
    role: 'responder',
    connectionId: cid,
    key,
    local: [],
    remote: [host(a.address().port)],
    nomination: 'implicit',
    timeoutMs: 3000,
    handshake: {
      requestPayload: () => null,
      onRequest: (p) => (seen.push(`request:${p.toString()}`), { payload: Buffer.from('welcome'), select: true }),
      onResponse: () => 'plain',
    },
  });
  const raw = dgram.createSocket('udp4');
  await new Promise<void>((r) => raw.bind(0, '127.0.0.1', () => r()));
  try {
    const [ra, rb] = await Promise.all([ca.run(), cb.run()]);
    assert.equal(ra.remote.port, b.address().port);
    assert.equal(rb.remote.port, a.address().port);
    assert.ok(seen.includes(`request:${hello}`) && seen.includes('response:welcome'), seen.join());
    // A correctly MACed request whose payload length field says more than the datagram holds: no answer.
    const tag = (await import('node:crypto'))
      .createHash('sha256')
      .update('natpunch check tag')
      .update(cid)
      .digest()
      .subarray(0, 16);
    const body = Buffer.alloc(32 + 2 + 4);
    body[0] = 0xf1;
    body[1] = 1;
    body[2] = 1 | 2;
    tag.copy(body, 4);
    randomBytes(12).copy(body, 20);
    body.writeUInt16BE(200, 32);
    const pkt = Buffer.concat([body, createHmac('sha256', key).update(body).digest().subarray(0, 16)]);
    let answered = false;
    raw.on('message', () => (answered = true));
    raw.send(pkt, b.address().port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(answered, false);
    // (Late retransmissions of A's request may still arrive under load: they carry hello. Nothing else got through.)
    assert.ok(
      seen.every((x) => x === `request:${hello}` || x === 'response:welcome'),
      seen.join(),
    );
    assert.throws(
      () =>
        new ConnectivityChecks({
          transport: a,
          role: 'initiator',
          connectionId: cid,
          key,
          local: [],
          remote: [],
          handshake: {
            requestPayload: () => Buffer.alloc(MAX_CHECK_BYTES),
            onRequest: () => null,
            onResponse: () => 'plain',
          },
        }),
      (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
    );
  } finally {
    raw.close();
    ca.close();
    cb.close();
    await a.close();
    await b.close();
  }
});
