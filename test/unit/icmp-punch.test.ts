import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import {
  decodeIcmp,
  decodeIcmpPacket,
  encodeEcho,
  encodeEchoTimeExceeded,
  encodeIpv4,
  internetChecksum,
  quotedEchoOf,
  ICMP_ECHO_REQUEST,
  ICMP_TIME_EXCEEDED,
  IPPROTO_ICMP,
} from '../../src/wire/icmp.js';
import { once } from 'node:events';
import {
  ICMP_PUNCH_IDENTIFIER,
  ICMP_PUNCH_SEQUENCE,
  IcmpBeacon,
  IcmpKnocker,
  connectIcmp,
  isPunchableSource,
  listenIcmp,
} from '../../src/traversal/icmp.js';
import { addonStatus } from '../../src/net/native.js';
import type { Session } from '../../src/session/session.js';
import type { MuxStream } from '../../src/session/mux.js';
import type { NatpunchError } from '../../src/util/errors.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { NATPUNCH } from '../helpers/proc.js';

const SERVER = '203.0.113.10';
const PROBE = '3.3.3.3';

test('the forged Time Exceeded is type 11 code 0 quoting the 28-byte echo request, every checksum valid', () => {
  const msg = encodeEchoTimeExceeded({
    source: SERVER,
    destination: PROBE,
    identifier: ICMP_PUNCH_IDENTIFIER,
    sequence: ICMP_PUNCH_SEQUENCE,
  });
  assert.equal(msg.length, 8 + 20 + 8);
  assert.equal(msg[0], ICMP_TIME_EXCEEDED);
  assert.equal(msg[1], 0);
  assert.equal(msg.readUInt32BE(4), 0, 'RFC 792: the 32 bits after the checksum are unused (zero)');
  assert.equal(internetChecksum(msg), 0, 'ICMP checksum (RFC 1071)');
  const quoted = msg.subarray(8);
  assert.equal(internetChecksum(quoted.subarray(0, 20)), 0, 'quoted IPv4 header checksum');
  assert.equal(quoted[0], 0x45);
  assert.equal(quoted.readUInt16BE(2), 28, 'total length of the quoted echo request');
  assert.equal(quoted[8], 1, 'TTL as the dropping router saw it');
  assert.equal(quoted[9], IPPROTO_ICMP);
  assert.deepEqual([...quoted.subarray(12, 16)], [203, 0, 113, 10]);
  assert.deepEqual([...quoted.subarray(16, 20)], [3, 3, 3, 3]);
  // The quoted 8 bytes are exactly the server's echo request (pwnat: identifier 0, sequence 0, no data).
  assert.deepEqual(
    quoted.subarray(20),
    encodeEcho({ identifier: ICMP_PUNCH_IDENTIFIER, sequence: ICMP_PUNCH_SEQUENCE }),
  );
  assert.equal(quoted[20], ICMP_ECHO_REQUEST);

  const decoded = decodeIcmp(msg);
  assert.ok(decoded);
  assert.deepEqual(quotedEchoOf(decoded), { source: SERVER, destination: PROBE, identifier: 0, sequence: 0 });
});

test('quotedEchoOf ignores what is not a valid Time Exceeded quoting an echo request', () => {
  const good = encodeEchoTimeExceeded({ source: SERVER, destination: PROBE, identifier: 7, sequence: 9 });
  const corrupt = Buffer.from(good);
  corrupt[30] = 0xff; // inside the quote: the ICMP checksum no longer matches
  assert.equal(quotedEchoOf(decodeIcmp(corrupt)!), null);
  const reassembly = Buffer.from(good);
  reassembly[1] = 1; // code 1: fragment reassembly time exceeded
  reassembly.writeUInt16BE(0, 2);
  reassembly.writeUInt16BE(internetChecksum(reassembly), 2);
  assert.equal(quotedEchoOf(decodeIcmp(reassembly)!), null);
  const echo = encodeEcho({ identifier: 7, sequence: 9 });
  assert.equal(quotedEchoOf(decodeIcmp(echo)!), null);
  for (let n = 0; n < good.length; n++) {
    const d = decodeIcmp(good.subarray(0, n));
    if (d) quotedEchoOf(d); // truncations never throw
  }
  // As received on a raw socket (outer IPv4 header added by the client's kernel or by IP_HDRINCL).
  const packet = encodeIpv4({ source: '192.0.2.10', destination: '10.2.0.10', protocol: IPPROTO_ICMP }, good);
  const p = decodeIcmpPacket(packet);
  assert.ok(p);
  assert.equal(p.ip.source, '192.0.2.10');
  assert.deepEqual(quotedEchoOf(p.icmp), { source: SERVER, destination: PROBE, identifier: 7, sequence: 9 });
});

test('knocks from unspecified, multicast or broadcast sources are not punched to', () => {
  for (const a of ['0.0.0.0', '0.1.2.3', '224.0.0.1', '239.255.255.250', '240.0.0.1', '255.255.255.255', '::1', 'x'])
    assert.equal(isPunchableSource(a), false, a);
  for (const a of ['192.0.2.10', '10.1.0.10', '127.0.0.3', '223.255.255.254'])
    assert.equal(isPunchableSource(a), true, a);
});

test('bad addresses are typed errors before any socket is opened', async () => {
  assert.throws(() => new IcmpKnocker({ server: 'not-an-ip' }), { code: 'BAD_ARGUMENT' });
  assert.throws(() => new IcmpKnocker({ server: SERVER, probeAddress: '::1' }), { code: 'BAD_ARGUMENT' });
  assert.throws(() => new IcmpBeacon({ probeAddress: '3.3.3' }), { code: 'BAD_ARGUMENT' });
  assert.throws(() => new IcmpBeacon({ intervalMs: -5 }), { code: 'BAD_ARGUMENT' });
  await assert.rejects(connectIcmp({ keyPair: generateKeyPair(), server: 'x' }), { code: 'BAD_ARGUMENT' });
});

/** Runs the CLI without CAP_NET_RAW (setpriv drops it from the bounding set: root then lacks it too). */
function withoutRaw(args: string[], user?: string): { status: number | null; stderr: string } {
  const drop = [
    '--bounding-set=-net_raw',
    '--inh-caps=-net_raw',
    ...(user ? [`--reuid=${user}`, '--regid=nogroup', '--clear-groups'] : []),
  ];
  const r = spawnSync('setpriv', [...drop, process.execPath, NATPUNCH, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, HOME: '/tmp' },
  });
  return { status: r.status, stderr: r.stderr };
}

const setprivReason = (() => {
  if (process.getuid?.() !== 0) return 'needs root to drop privileges';
  const r = spawnSync('setpriv', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? false : 'setpriv (util-linux) not installed';
})();

function assertOneLine(r: { status: number | null; stderr: string }): void {
  assert.equal(r.status, 1, r.stderr);
  // Progress lines (punching, technique-start/-end) may come first, as for every planned attempt; the error is one line.
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('natpunch:') && !l.includes('temporary key'));
  assert.equal(errors.length, 1, `one line: ${r.stderr}`);
  assert.match(
    errors[0]!,
    /^natpunch: ICMP hole punching needs a raw socket: run as root or give node CAP_NET_RAW .*\[NOT_ROOT\]$/,
  );
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

test(
  'without CAP_NET_RAW, `listen --icmp` and `connect --icmp` fail with one line, no stack trace',
  { skip: setprivReason },
  () => {
    assertOneLine(withoutRaw(['listen', '--icmp', '--icmp-interval', '1000']));
    assertOneLine(withoutRaw(['connect', '--icmp', SERVER, '--peer-key', 'ab'.repeat(32), '--timeout', '2000']));
  },
);

const nobodyReason = (() => {
  if (setprivReason) return setprivReason;
  const r = spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'test', '-r', NATPUNCH], {
    encoding: 'utf8',
  });
  try {
    accessSync(NATPUNCH, constants.R_OK);
  } catch {
    return 'checkout not readable';
  }
  return r.status === 0 ? false : 'the checkout is not readable by nobody';
})();

test('as user nobody, `listen --icmp` fails with one line, no stack trace', { skip: nobodyReason }, () => {
  assertOneLine(withoutRaw(['listen', '--icmp'], 'nobody'));
});

const rawReason = (() => {
  if (!addonStatus().available) return 'native addon unavailable';
  if (process.getuid?.() !== 0) return 'raw sockets need root';
  return false;
})();

test(
  'on loopback: the listener learns the client from its forged Time Exceeded and both get one authenticated session',
  { skip: rawReason },
  async () => {
    // Loopback only: the server binds 127.0.0.1, the client 127.0.0.3 and writes that as the forged packet's source;
    // the probe address 127.0.0.2 is local (the kernel answers the echo requests, which the beacon ignores).
    const serverKey = generateKeyPair();
    const clientKey = generateKeyPair();
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const progress: string[] = [];
    const listener = await listenIcmp({
      keyPair: serverKey,
      port,
      bindAddress: '127.0.0.1',
      probeAddress: '127.0.0.2',
      intervalMs: 100,
      allow: [clientKey.publicKey],
      onProgress: (p) => progress.push(p.phase === 'icmp-knock' ? `knock ${p.from}` : p.phase),
    });
    try {
      const accepted = once(listener, 'session') as Promise<[Session]>;
      const session = await connectIcmp({
        keyPair: clientKey,
        server: '127.0.0.1',
        port,
        bindAddress: '127.0.0.3',
        source: '127.0.0.3',
        probeAddress: '127.0.0.2',
        peerKey: serverKey.publicKey,
        knockIntervalMs: 100,
        timeoutMs: 10_000,
      });
      const [theirs] = await accepted;
      try {
        assert.ok(session.remotePublicKey.equals(serverKey.publicKey));
        assert.ok(theirs.remotePublicKey.equals(clientKey.publicKey));
        assert.deepEqual(session.path.remote, { address: '127.0.0.1', port });
        assert.ok(progress.includes('knock 127.0.0.3'), progress.join(', '));
        assert.ok(listener.beacon.sent >= 1);
        const stream = session.openStream();
        const [incoming] = (await once(theirs, 'stream')) as [MuxStream];
        // Closing the sessions ends the streams with an error; this test is done with them by then.
        stream.on('error', () => {});
        incoming.on('error', () => {});
        stream.write('ping');
        const [chunk] = (await once(incoming, 'data')) as [Buffer];
        assert.equal(chunk.toString(), 'ping');
        incoming.write('pong');
        const [back] = (await once(stream, 'data')) as [Buffer];
        assert.equal(back.toString(), 'pong');
      } finally {
        await session.close();
      }
    } finally {
      await listener.close();
    }
  },
);

test(
  'on loopback with no listener: connectIcmp fails with PUNCH_FAILED within its timeout, and aborts at once',
  { skip: rawReason },
  async () => {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const started = Date.now();
    await assert.rejects(
      connectIcmp({
        keyPair: generateKeyPair(),
        server: '127.0.0.1',
        port,
        bindAddress: '127.0.0.3',
        probeAddress: '127.0.0.2',
        knockIntervalMs: 200,
        timeoutMs: 1_500,
      }),
      (err: NatpunchError) => err.code === 'PUNCH_FAILED' && /Time Exceeded/.test(err.message),
    );
    assert.ok(Date.now() - started < 5_000);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(
      connectIcmp({
        keyPair: generateKeyPair(),
        server: '127.0.0.1',
        port,
        bindAddress: '127.0.0.3',
        probeAddress: '127.0.0.2',
        timeoutMs: 10_000,
        signal: ac.signal,
      }),
      { code: 'ABORTED' },
    );
  },
);
