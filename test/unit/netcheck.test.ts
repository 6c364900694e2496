/**
 * netcheck against natpunch's StunServer on loopback: RFC 5780 mode on 127.0.0.1 + 127.0.0.2 (four UDP sockets and
 * TCP on all four addresses), plain mode, and a dead server. Loopback has no NAT, so the truth is "open internet".
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { StunServer } from '../../src/stun/server.js';
import { netcheck, parseServer, verdictOf, mappingFromServers, type NatReport } from '../../src/discovery/netcheck.js';
import {
  decodeBindingResponse,
  encodeBindingRequest,
  newTransactionId,
  PROBE_SOFTWARE,
} from '../../src/discovery/binding.js';
import { sendOffsets, PROBE_SCHEDULE } from '../../src/discovery/probe.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { netcheckReport } from '../helpers/netcheck-json.js';

interface Running {
  server: StunServer;
  port: number;
  altPort: number;
  close(): Promise<void>;
}

/** Binds a UDP socket and a TCP listener on the same free port of `address` (retrying a few ports). */
async function bindPair(address: string, port = 0): Promise<{ udp: NodeDatagramTransport; tcp: net.Server }> {
  const udp = await NodeDatagramTransport.bind({ address, port });
  const tcp = net.createServer();
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(udp.address().port, address, () => resolve());
  });
  return { udp, tcp };
}

/** natpunch's StunServer in RFC 5780 mode on (127.0.0.1, 127.0.0.2) × (port, altPort), UDP and TCP. */
async function startRfc5780(): Promise<Running> {
  for (let attempt = 0; ; attempt++) {
    const opened: Array<{ udp: NodeDatagramTransport; tcp: net.Server }> = [];
    try {
      const p = await bindPair('127.0.0.1');
      opened.push(p);
      const port = p.udp.address().port;
      opened.push(await bindPair('127.0.0.1'));
      const altPort = opened[1]!.udp.address().port;
      opened.push(await bindPair('127.0.0.2', port));
      opened.push(await bindPair('127.0.0.2', altPort));
      const server = new StunServer();
      server.attachRfc5780({
        primary: opened[0]!.udp,
        altPort: opened[1]!.udp,
        altIp: opened[2]!.udp,
        altBoth: opened[3]!.udp,
      });
      for (const o of opened) o.tcp.on('connection', (s) => server.handleTcp(s));
      return {
        server,
        port,
        altPort,
        close: async () => {
          server.close();
          for (const o of opened) {
            o.udp.close();
            await new Promise((r) => o.tcp.close(() => r(undefined)));
          }
        },
      };
    } catch (err) {
      for (const o of opened) {
        o.udp.close();
        o.tcp.close();
      }
      if (attempt >= 5) throw err;
    }
  }
}

async function startPlain(address: string): Promise<{ port: number; close(): Promise<void> }> {
  const { udp, tcp } = await bindPair(address);
  const server = new StunServer();
  server.attachUdp(udp);
  tcp.on('connection', (s) => server.handleTcp(s));
  return {
    port: udp.address().port,
    close: async () => {
      server.close();
      udp.close();
      await new Promise((r) => tcp.close(() => r(undefined)));
    },
  };
}

const quick = { portMapping: false } as const;

test('RFC 5780 server on loopback: open internet, every field determined that loopback can determine', async () => {
  const srv = await startRfc5780();
  try {
    const r = await netcheck({ servers: [`127.0.0.1:${srv.port}`], ...quick });
    assert.equal(r.version, 1);
    assert.equal(r.servers.length, 1);
    assert.equal(r.servers[0]!.reachable, true);
    assert.equal(r.servers[0]!.rfc5780, true);
    assert.deepEqual(r.servers[0]!.otherAddress, { address: '127.0.0.2', port: srv.altPort });
    assert.equal(r.udp.blocked, false);
    assert.equal(r.udp.behindNat, false);
    assert.equal(r.udp.publicAddress?.address, '127.0.0.1');
    assert.equal(r.udp.publicAddress?.port, r.udp.localAddress?.port);
    assert.equal(r.udp.mapping, 'endpoint-independent');
    assert.equal(r.udp.filtering, 'endpoint-independent');
    assert.equal(r.udp.classic, 'open-internet');
    assert.equal(r.udp.allocation.pattern, 'preserving');
    assert.equal(r.udp.allocation.samples.length, 5);
    assert.equal(r.udp.hairpinning, null, 'nothing to hairpin without a NAT');
    assert.equal(r.udp.alg, false);
    assert.equal(r.udp.lifetime, null);
    assert.equal(r.tcp.publicAddress?.address, '127.0.0.1');
    assert.equal(r.tcp.behindNat, false);
    assert.equal(r.tcp.mapping, 'endpoint-independent');
    assert.equal(r.difficulty, 'none');
    assert.match(r.verdict, /^Open internet/);
    const whats = r.undetermined.map((u) => u.what).sort();
    assert.deepEqual(whats, ['ipv6', 'portMapping', 'udp.hairpinning']);
    for (const u of r.undetermined) assert.ok(u.why.length > 5, u.what);
    // The counters prove the filtering tests really reached the server (and were answered from elsewhere).
    assert.ok(srv.server.counters.responses >= 10);
  } finally {
    await srv.close();
  }
});

test('report shape is stable: every field present, JSON round-trips, null rather than missing', async () => {
  const srv = await startRfc5780();
  try {
    const r = await netcheck({ servers: [`127.0.0.1:${srv.port}`], ...quick, tcp: false });
    const round = JSON.parse(JSON.stringify(r)) as NatReport;
    assert.deepEqual(round, r, 'nothing is lost in JSON (no undefined fields)');
    assert.deepEqual(Object.keys(r).sort(), [
      'difficulty',
      'durationMs',
      'ipv6',
      'portMapping',
      'servers',
      'startedAt',
      'tcp',
      'udp',
      'undetermined',
      'verdict',
      'version',
    ]);
    assert.deepEqual(Object.keys(r.udp).sort(), [
      'alg',
      'allocation',
      'behindNat',
      'blocked',
      'classic',
      'filtering',
      'hairpinning',
      'lifetime',
      'localAddress',
      'mapping',
      'publicAddress',
      'publicAddresses',
    ]);
    assert.deepEqual(Object.keys(r.tcp).sort(), ['behindNat', 'mapping', 'publicAddress']);
    assert.deepEqual(r.tcp, { publicAddress: null, behindNat: null, mapping: 'unknown' });
    assert.ok(r.undetermined.some((u) => u.what === 'tcp'));
    assert.deepEqual(r.portMapping, { gateway: null, natPmp: null, pcp: null, upnp: null });
  } finally {
    await srv.close();
  }
});

test('dead server: bounded, reports UDP blocked and says the server could not be reached', async () => {
  // A bound socket that never answers: nothing listens for TCP on that port either.
  const silent = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  try {
    const t0 = Date.now();
    const r = await netcheck({ servers: [`127.0.0.1:${silent.address().port}`], ...quick });
    assert.ok(Date.now() - t0 < 5000, 'bounded by the default timeout');
    assert.equal(r.servers[0]!.reachable, false);
    assert.equal(r.udp.blocked, true);
    assert.equal(r.udp.classic, 'udp-blocked');
    assert.equal(r.difficulty, 'blocked');
    assert.match(r.verdict, /UDP blocked or STUN server unreachable/);
    assert.equal(r.udp.mapping, 'unknown');
    assert.equal(r.tcp.publicAddress, null);
    assert.ok(r.undetermined.some((u) => u.what === 'tcp'));
  } finally {
    silent.close();
  }
});

test('--timeout is a hard bound: a short one ends the run early with partial results', async () => {
  const silent = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  try {
    const t0 = Date.now();
    const r = await netcheck({ servers: [`127.0.0.1:${silent.address().port}`], ...quick, timeoutMs: 300 });
    assert.ok(Date.now() - t0 < 1500);
    assert.equal(r.udp.blocked, null, 'a cut-short run does not claim UDP is blocked');
    assert.ok(r.undetermined.some((u) => u.what === 'run'));
  } finally {
    silent.close();
  }
});

test('caller abort throws ABORTED', async () => {
  const silent = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  try {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(
      netcheck({ servers: [`127.0.0.1:${silent.address().port}`], ...quick, signal: ac.signal }),
      (e) => isNatpunchError(e, 'ABORTED'),
    );
  } finally {
    silent.close();
  }
});

test('two plain servers: mapping by comparison, filtering undetermined with the reason', async () => {
  const s1 = await startPlain('127.0.0.1');
  const s2 = await startPlain('127.0.0.2');
  try {
    const r = await netcheck({ servers: [`127.0.0.1:${s1.port}`, `127.0.0.2:${s2.port}`], ...quick });
    assert.equal(
      r.servers.every((s) => s.reachable && !s.rfc5780),
      true,
    );
    assert.equal(r.udp.mapping, 'endpoint-independent');
    assert.equal(r.udp.filtering, 'unknown');
    assert.match(r.undetermined.find((u) => u.what === 'udp.filtering')?.why ?? '', /not in RFC 5780 mode/);
    assert.equal(r.tcp.mapping, 'endpoint-independent', 'TCP mapping compared across the two servers');
    // No NAT, filtering unknown: the classic name needs filtering.
    assert.equal(r.udp.classic, 'unknown');
  } finally {
    await s1.close();
    await s2.close();
  }
});

test('one plain server: mapping and filtering undetermined, with reasons', async () => {
  const s1 = await startPlain('127.0.0.1');
  try {
    const r = await netcheck({ servers: [`127.0.0.1:${s1.port}`], ...quick, tcp: false });
    assert.equal(r.udp.mapping, 'unknown');
    assert.equal(r.udp.filtering, 'unknown');
    assert.match(r.undetermined.find((u) => u.what === 'udp.mapping')?.why ?? '', /RFC 5780/);
    assert.equal(r.difficulty, 'unknown');
  } finally {
    await s1.close();
  }
});

test('lifetime search against the RFC 5780 server (RESPONSE-PORT): alive through a short bound', async () => {
  const srv = await startRfc5780();
  try {
    const r = await netcheck({
      servers: [`127.0.0.1:${srv.port}`],
      ...quick,
      tcp: false,
      lifetime: true,
      lifetimeMaxMs: 2500,
    });
    assert.ok(r.udp.lifetime, JSON.stringify(r.undetermined));
    assert.equal(r.udp.lifetime.expiredByS, null, 'no NAT: nothing expires');
    assert.equal(r.udp.lifetime.aliveAtS, 2.5);
  } finally {
    await srv.close();
  }
});

test('mapping from plain servers: same IP different port separates address- from address-and-port-dependent', () => {
  const notes: string[] = [];
  const why = (w: string, r: string) => notes.push(`${w}: ${r}`);
  const S = (a: string, p: number) => ({ address: a, port: p });
  assert.equal(
    mappingFromServers(
      [
        { server: S('1.1.1.1', 1), mapped: S('9.9.9.9', 5) },
        { server: S('2.2.2.2', 1), mapped: S('9.9.9.9', 5) },
      ],
      why,
    ),
    'endpoint-independent',
  );
  assert.equal(
    mappingFromServers(
      [
        { server: S('1.1.1.1', 1), mapped: S('9.9.9.9', 5) },
        { server: S('1.1.1.1', 2), mapped: S('9.9.9.9', 6) },
      ],
      why,
    ),
    'address-and-port-dependent',
  );
  assert.equal(
    mappingFromServers(
      [
        { server: S('1.1.1.1', 1), mapped: S('9.9.9.9', 5) },
        { server: S('1.1.1.1', 2), mapped: S('9.9.9.9', 5) },
        { server: S('2.2.2.2', 1), mapped: S('9.9.9.9', 7) },
      ],
      why,
    ),
    'address-dependent',
  );
  notes.length = 0;
  assert.equal(
    mappingFromServers(
      [
        { server: S('1.1.1.1', 1), mapped: S('9.9.9.9', 5) },
        { server: S('2.2.2.2', 1), mapped: S('9.9.9.9', 6) },
      ],
      why,
    ),
    'address-and-port-dependent',
  );
  assert.equal(notes.length, 1, 'the conservative guess is reported as such');
});

test('verdict lines name the NAT and the way through', () => {
  const base = {
    blocked: false,
    mapping: 'address-and-port-dependent',
    filtering: 'address-and-port-dependent',
    classic: 'symmetric',
    hairpinning: null,
  } as const;
  const v = (udp: object) =>
    verdictOf({
      udp: { ...base, allocation: { pattern: 'random', delta: null, samples: [] }, ...udp } as never,
      tcp: { publicAddress: null } as never,
    });
  assert.equal(v({}).verdict, 'Hard NAT: symmetric, random ports — direct UDP only with birthday punching or relay');
  assert.match(
    v({ allocation: { pattern: 'sequential', delta: 2, samples: [] } }).verdict,
    /sequential ports \(delta \+2\).*port prediction/,
  );
  assert.equal(
    v({ classic: 'full-cone', mapping: 'endpoint-independent', filtering: 'endpoint-independent' }).difficulty,
    'easy',
  );
  assert.equal(v({ blocked: true, classic: 'udp-blocked' }).difficulty, 'blocked');
});

test('server parsing: host, host:port, [v6]:port, bare v6; bad input is a typed error', () => {
  assert.deepEqual(parseServer('stun.example'), { host: 'stun.example', port: undefined });
  assert.deepEqual(parseServer('192.0.2.1:3479'), { host: '192.0.2.1', port: 3479 });
  assert.deepEqual(parseServer('[2001:db8::1]:3478'), { host: '2001:db8::1', port: 3478 });
  assert.deepEqual(parseServer('2001:db8::1'), { host: '2001:db8::1' });
  for (const bad of ['host:0', 'host:70000', 'a:b:c', 'host:x']) {
    assert.throws(
      () => parseServer(bad),
      (e) => isNatpunchError(e, 'BAD_ARGUMENT'),
      bad,
    );
  }
});

test('probe codec: CHANGE-REQUEST / RESPONSE-PORT encode; decoding garbage never throws', () => {
  const tid = newTransactionId();
  const req = encodeBindingRequest(tid, { changeIp: true, changePort: true, responsePort: 4321 });
  assert.equal(req.readUInt16BE(0), 0x0001);
  const software = 4 + Math.ceil(Buffer.byteLength(PROBE_SOFTWARE) / 4) * 4;
  assert.equal(req.readUInt16BE(2), 8 + 8 + software + 8, 'CHANGE-REQUEST + RESPONSE-PORT + SOFTWARE + FINGERPRINT');
  assert.equal(req.readUInt32BE(4), 0x2112a442);
  assert.equal(req.readUInt16BE(20), 0x0003);
  assert.equal(req.readUInt32BE(24), 0x6);
  assert.equal(req.readUInt16BE(28), 0x0027);
  assert.equal(req.readUInt16BE(32), 4321);
  assert.equal(req.readUInt16BE(36), 0x8022);
  assert.equal(req.readUInt16BE(36 + software), 0x8028);
  const legacyId = newTransactionId(true);
  const legacy = encodeBindingRequest(legacyId, { legacy: true });
  assert.equal(legacy.length, 20, 'RFC 3489 request: header only');
  assert.notEqual(legacy.readUInt32BE(4), 0x2112a442);
  assert.deepEqual(legacy.subarray(4, 20), legacyId);
  for (let i = 0; i < 20000; i++) {
    const len = Math.floor(Math.random() * 80);
    const buf = Buffer.alloc(len);
    for (let j = 0; j < len; j++) buf[j] = Math.floor(Math.random() * 256);
    if (len >= 8 && i % 2) {
      buf[0] = 0x01;
      buf[1] = 0x01;
      buf.writeUInt32BE(0x2112a442, 4);
    }
    decodeBindingResponse(buf);
  }
  assert.deepEqual(
    sendOffsets(PROBE_SCHEDULE),
    [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400],
  );
});

test('CLI: natpunch netcheck --json prints the report; the table ends with the verdict; bad flags exit 2', async () => {
  const srv = await startRfc5780();
  const bin = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
  try {
    const run = (args: string[]) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        // spawnSync would block the server living in this process: run it asynchronously.
        import('node:child_process').then(({ execFile }) => {
          execFile(process.execPath, [bin, ...args], { timeout: 20_000 }, (err, stdout, stderr) =>
            resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
          );
        });
      });
    const server = `127.0.0.1:${srv.port}`;
    const j = await run(['netcheck', '--server', server, '--json', '--no-port-mapping']);
    assert.equal(j.status, 0, j.stderr);
    // --json: probe events, then the report, one JSON line each on stdout; nothing human on stderr.
    const report = netcheckReport(j.stdout);
    assert.equal(report.udp.classic, 'open-internet');
    assert.equal(j.stderr, '');
    const t = await run(['netcheck', '--server', server, '--no-port-mapping', '-q']);
    assert.equal(t.status, 0, t.stderr);
    assert.match(t.stdout, /mapping\s+endpoint-independent/);
    assert.match(t.stdout, /Open internet/);
    assert.equal(t.stderr, '');
    const bad = await run(['netcheck', '--server', server, '--timeout', 'soon']);
    assert.equal(bad.status, 2, 'a usage error exits 2');
    assert.equal(bad.stderr.trim().split('\n').length, 1);
    const none = await run(['netcheck']);
    assert.equal(none.status, 2, 'no --server is a usage error');
  } finally {
    await srv.close();
  }
  void spawnSync;
});

test('IPv6: a server with an IPv6 address gives the IPv6 public address (loopback ::1: no NAT)', async () => {
  const v4 = await startRfc5780();
  const v6 = await startPlain('::1');
  try {
    const r = await netcheck({ servers: [`127.0.0.1:${v4.port}`, `[::1]:${v6.port}`], ...quick, tcp: false });
    assert.equal(r.ipv6.publicAddress?.address, '::1');
    assert.equal(r.ipv6.behindNat, false);
    const s6 = r.servers.find((s) => s.family === 6);
    assert.equal(s6?.reachable, true);
    assert.equal(r.udp.classic, 'open-internet', 'the IPv4 verdict still comes from the RFC 5780 server');
    assert.ok(!r.undetermined.some((u) => u.what === 'ipv6'));
  } finally {
    await v4.close();
    await v6.close();
  }
});
