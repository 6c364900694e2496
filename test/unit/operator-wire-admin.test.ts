// Outcome reports, name releases, ACK and MOVE on the wire; the admin endpoint's defaults (loopback, token); the
// dashboard matrix merging both sides' reports of one connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Activity } from '../../src/server/activity.js';
import { parseAdminAddress, startAdmin } from '../../src/server/admin.js';
import { ServeMetrics } from '../../src/server/metrics.js';
import { connectionOutcome } from '../../src/rendezvous/outcome.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { NatpunchError } from '../../src/util/errors.js';
import {
  decodeRendezvous,
  encodeRendezvous,
  verifyRendezvous,
  MAX_REPORT_FAILURES,
  MAX_REPORT_TECHNIQUES,
  REPORT_TECHNIQUES,
  type ReportMessage,
} from '../../src/wire/rendezvous.js';
import { parsePrometheus } from '../helpers/prom.js';

test('REPORT: signed, round-trips, carries only enumerations and numbers, and is bounded (≤ 191 bytes)', () => {
  const kp = generateKeyPair();
  const outcome = connectionOutcome({
    connectionId: randomBytes(16),
    role: 'initiator',
    startedAt: 1000,
    now: 1420,
    path: { kind: 'direct', transport: 'udp' },
    tried: ['udp', 'relay', 'mapped', 'some-new-technique'],
    localNat: 'symmetric',
    peerNat: 'full-cone',
  });
  const bytes = encodeRendezvous({ ...outcome, type: 'report', requestId: 7, publicKey: kp.publicKey }, kp.secretKey);
  const m = decodeRendezvous(bytes) as ReportMessage;
  assert.equal(m.type, 'report');
  assert.ok(verifyRendezvous(m));
  assert.deepEqual(
    {
      result: m.result,
      path: m.path,
      localNat: m.localNat,
      peerNat: m.peerNat,
      winner: m.winner,
      ttc: m.timeToConnectMs,
      tried: m.tried,
    },
    {
      result: 'connected',
      path: 'direct',
      localNat: 'symmetric',
      peerNat: 'full-cone',
      winner: 'udp',
      ttc: 420,
      tried: ['udp', 'relay', 'mapped', 'other'],
    },
  );
  // The largest possible report.
  const big = encodeRendezvous(
    {
      ...outcome,
      type: 'report',
      requestId: 1,
      publicKey: kp.publicKey,
      tried: Array.from({ length: 40 }, (_, i) => REPORT_TECHNIQUES[i % REPORT_TECHNIQUES.length]!),
      failures: Array.from({ length: 40 }, () => ({ technique: 'udp' as const, reason: 'timeout' as const })),
    },
    kp.secretKey,
  );
  assert.equal(big.length, 7 + 32 + 16 + 24 + 6 + 8 + 1 + MAX_REPORT_TECHNIQUES + 1 + 2 * MAX_REPORT_FAILURES + 64);
  assert.ok(big.length <= 191);
  // Tampering breaks the signature.
  const bad = Buffer.from(bytes);
  bad[7 + 32 + 16 + 24 + 1] ^= 1; // the result byte
  const t = decodeRendezvous(bad) as ReportMessage;
  assert.equal(verifyRendezvous(t), false);
  // A failure: reasons from error codes.
  const failed = connectionOutcome({
    connectionId: randomBytes(16),
    role: 'responder',
    startedAt: 0,
    error: new NatpunchError('PUNCH_FAILED', 'x'),
    tried: ['udp'],
  });
  assert.deepEqual(
    [failed.result, failed.path, failed.failures],
    ['failed', 'none', [{ technique: 'udp', reason: 'timeout' }]],
  );
});

test('RELEASE_NAME, ACK and MOVE round-trip; ACK is never larger than what it answers', () => {
  const kp = generateKeyPair();
  const rel = encodeRendezvous(
    { type: 'release-name', requestId: 3, publicKey: kp.publicKey, name: 'alice' },
    kp.secretKey,
  );
  const m = decodeRendezvous(rel);
  assert.ok(m.type === 'release-name' && m.name === 'alice' && verifyRendezvous(m));
  const ack = encodeRendezvous({ type: 'ack', requestId: 3, status: 1 });
  assert.equal(ack.length, 8);
  assert.ok(ack.length < rel.length);
  assert.deepEqual(decodeRendezvous(ack), { type: 'ack', requestId: 3, status: 1 });
  assert.deepEqual(
    decodeRendezvous(encodeRendezvous({ type: 'move', requestId: 9, reason: 'draining', retryAfterMs: 5000 })),
    { type: 'move', requestId: 9, reason: 'draining', retryAfterMs: 5000 },
  );
  assert.throws(() => decodeRendezvous(Buffer.concat([ack, Buffer.from([1])])), /malformed|trailing|padding/);
});

test("dashboard matrix: the two reports of one connection count once, placed by both sides' own NAT types", () => {
  const a = new Activity();
  const kp = generateKeyPair();
  const cid = randomBytes(16);
  const report = (role: 'initiator' | 'responder', localNat: string) =>
    ({
      ...connectionOutcome({ connectionId: cid, role, startedAt: 0, now: 300, path: { kind: 'relay' }, localNat }),
      type: 'report',
      requestId: 1,
      publicKey: kp.publicKey,
      timestamp: 0,
      nonce: Buffer.alloc(16),
    }) as ReportMessage;
  a.onEvent({ type: 'report', report: report('initiator', 'symmetric') });
  assert.deepEqual(
    a.snapshot().matrix.map((c) => c.pair),
    ['symmetric/unknown'],
  );
  a.onEvent({ type: 'report', report: report('responder', 'full-cone') });
  const [cell] = a.snapshot().matrix;
  assert.deepEqual(
    {
      pair: cell!.pair,
      attempts: cell!.attempts,
      relayed: cell!.relayed,
      directShare: cell!.directShare,
      medianMs: cell!.medianMs,
    },
    { pair: 'full-cone/symmetric', attempts: 1, relayed: 1, directShare: 0, medianMs: 300 },
  );
});

test('admin: a bare port is loopback; with a token, /metrics needs it and health checks do not', async () => {
  assert.deepEqual(parseAdminAddress('9478'), { host: '127.0.0.1', port: 9478 });
  assert.deepEqual(parseAdminAddress('[::1]:9478'), { host: '::1', port: 9478 });
  assert.throws(() => parseAdminAddress('example.com:9478'), /not an IP address/);
  const metrics = new ServeMetrics();
  const admin = await startAdmin(
    { listen: '0', token: 's3cret' },
    {
      metrics,
      activity: new Activity(),
      health: () => ({ ok: true, checks: {} }),
      ready: () => ({ ok: false, checks: { draining: { ok: false } } }),
      summary: async () => ({}),
    },
  );
  try {
    assert.equal(admin.address, '127.0.0.1');
    const get = (path: string, headers: Record<string, string> = {}) =>
      fetch(`${admin.url}${path.slice(1)}`, { headers, redirect: 'manual' });
    assert.equal((await get('/metrics')).status, 401);
    assert.equal((await get('/metrics', { authorization: 'Bearer wrong' })).status, 401);
    const ok = await get('/metrics', { authorization: 'Bearer s3cret' });
    assert.equal(ok.status, 200);
    assert.ok(parsePrometheus(await ok.text()).some((s) => s.name === 'process_cpu_user_seconds_total'));
    assert.equal((await get('/healthz')).status, 200);
    assert.equal((await get('/readyz')).status, 503);
    const login = await get('/?token=s3cret');
    assert.equal(login.status, 303);
    const cookie = login.headers.get('set-cookie') ?? '';
    assert.match(cookie, /HttpOnly; SameSite=Strict/);
    const page = await get('/', { cookie: cookie.split(';')[0]! });
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'nonce-/);
    assert.equal((await fetch(admin.url, { method: 'POST' })).status, 405);
  } finally {
    await admin.close();
  }
});

test('--rendezvous a,b: a failover list; ports default to 3478; a bad port is one clear error', async () => {
  const { parseRendezvousList } = await import('../../src/rendezvous/client.js');
  assert.deepEqual(parseRendezvousList('rdv-1.example.net,10.0.0.2:4000,[2001:db8::1]:5000, [::1]', 3478), [
    { host: 'rdv-1.example.net', port: 3478 },
    { host: '10.0.0.2', port: 4000 },
    { host: '2001:db8::1', port: 5000 },
    { host: '::1', port: 3478 },
  ]);
  assert.throws(() => parseRendezvousList('a:99999', 3478), /bad rendezvous port in "a:99999"/);
  assert.throws(() => parseRendezvousList(' , ', 3478), /no rendezvous server given/);
});
