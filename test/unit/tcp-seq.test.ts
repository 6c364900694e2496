import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { SpoofService, submitStunt1Offer } from '../../src/server/spoof.js';
import { craftSynAck, parseSeqOffer, type SeqOffer } from '../../src/traversal/tcp-seq.js';
import { SynAckSpoofer } from '../../src/traversal/tcp-stunt1.js';
import { decodeIpv4 } from '../../src/wire/icmp.js';
import { decodeIpv4Tcp, tcpChecksumValid, TCP_ACK, TCP_SYN } from '../../src/wire/tcp.js';
import { isNatpunchError } from '../../src/util/errors.js';

const A: SeqOffer = {
  private: { address: '10.1.0.10', port: 40000 },
  public: { address: '198.51.100.10', port: 40000 },
  isn: 0xfffffffe,
  window: 64240,
  options: { mss: 1460, sackPermitted: true, timestamps: { value: 1000, echo: 0 }, windowScale: 10 },
};
const B: SeqOffer = {
  private: { address: '10.2.0.10', port: 50000 },
  public: { address: '203.0.113.10', port: 51000 },
  isn: 7,
  window: 65535,
  options: { mss: 1400, timestamps: { value: 2000, echo: 0 }, windowScale: 7 },
};

test('NATBlaster SYN-ACK: our private endpoint to the peer public one, seq = our ISN, ack = peer ISN + 1, checksums right', () => {
  const pkt = craftSynAck(A, B, A.private, B.public);
  const d = decodeIpv4Tcp(pkt)!;
  assert.equal(decodeIpv4(pkt)!.header.checksumValid, true);
  assert.equal(tcpChecksumValid(pkt.subarray(20), '10.1.0.10', '203.0.113.10'), true);
  assert.equal(d.ip.source, '10.1.0.10');
  assert.equal(d.ip.destination, '203.0.113.10');
  assert.equal(d.ip.ttl, 64);
  assert.equal(d.tcp.sourcePort, 40000);
  assert.equal(d.tcp.destinationPort, 51000);
  assert.equal(d.tcp.flags, TCP_SYN | TCP_ACK);
  assert.equal(d.tcp.seq, 0xfffffffe);
  assert.equal(d.tcp.ack, 8);
  // SACK only if both offered it (B did not); timestamps echo B's TSval
  assert.deepEqual(d.tcp.options, { mss: 1460, timestamps: { value: 1000, echo: 2000 }, windowScale: 10 });
});

test('STUNT #1 packets: each peer gets the other peer public endpoint as source', () => {
  const [toA, toB] = SynAckSpoofer.packets(A, B);
  const a = decodeIpv4Tcp(toA!.packet)!;
  const b = decodeIpv4Tcp(toB!.packet)!;
  assert.equal(toA!.to, '198.51.100.10');
  assert.deepEqual(
    [a.ip.source, a.tcp.sourcePort, a.ip.destination, a.tcp.destinationPort],
    ['203.0.113.10', 51000, '198.51.100.10', 40000],
  );
  assert.deepEqual([a.tcp.seq, a.tcp.ack], [7, 0xffffffff]);
  assert.deepEqual(
    [b.ip.source, b.tcp.sourcePort, b.ip.destination, b.tcp.destinationPort],
    ['198.51.100.10', 40000, '203.0.113.10', 51000],
  );
  assert.deepEqual([b.tcp.seq, b.tcp.ack], [0xfffffffe, 8]);
});

test('offers are validated: JSON round trip accepted, bad fields rejected with BAD_ARGUMENT', () => {
  assert.deepEqual(parseSeqOffer(JSON.parse(JSON.stringify(A))), A);
  const bad: unknown[] = [
    null,
    'x',
    { ...A, isn: -1 },
    { ...A, isn: 2 ** 32 },
    { ...A, window: 70000 },
    { ...A, public: { address: '::1', port: 1 } },
    { ...A, private: { address: '10.0.0.1', port: 0 } },
    { ...A, options: { windowScale: 15 } },
    { ...A, options: { timestamps: { value: 'x', echo: 0 } } },
  ];
  for (const b of bad)
    assert.throws(
      () => parseSeqOffer(b),
      (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
      JSON.stringify(b),
    );
});

test('spoof service: pairs two offers from their own addresses, refuses foreign addresses and garbage', async () => {
  const spoofed: Array<[unknown, unknown]> = [];
  const service = await SpoofService.start({
    host: '127.0.0.1',
    spoofer: { spoof: async (a, b) => (spoofed.push([a, b]), 2), close: () => {} },
  });
  try {
    const server = service.address();
    const local = (o: SeqOffer, port: number): SeqOffer => ({ ...o, public: { address: '127.0.0.1', port } });
    const first = await submitStunt1Offer({ server, pair: 'aabbccdd', offer: local(A, 1111) });
    assert.equal(first, 'waiting');
    const second = await submitStunt1Offer({ server, pair: 'aabbccdd', offer: local(B, 2222) });
    assert.equal(second, 'spoofed');
    assert.equal(spoofed.length, 1);
    assert.deepEqual((spoofed[0]![0] as SeqOffer).public, { address: '127.0.0.1', port: 1111 });
    // An offer naming another public address than the request's source is refused (no reflection to third parties).
    await assert.rejects(
      submitStunt1Offer({ server, pair: 'aabbccdd', offer: A }),
      /not the address this request came from/,
    );
    await assert.rejects(submitStunt1Offer({ server, pair: 'NOT-HEX', offer: local(A, 1) }), /pair must be/);
    // Garbage and over-long lines get an error line, never a crash.
    for (const junk of ['{nope\n', `${'x'.repeat(5000)}\n`]) {
      const reply = await new Promise<string>((resolve) => {
        const s = net.connect(server.port, '127.0.0.1', () => s.write(junk));
        let got = '';
        s.on('data', (d) => (got += d));
        s.on('close', () => resolve(got));
        s.on('error', () => resolve(got));
      });
      assert.match(reply, /"ok":false/);
    }
    assert.equal(spoofed.length, 1);
  } finally {
    await service.close();
  }
});

test(
  '`natpunch serve --spoof` refuses to run without root, saying why',
  { skip: process.getuid?.() === 0 ? false : 'needs root to drop to an unprivileged user' },
  async () => {
    const { spawnSync } = await import('node:child_process');
    const bin = new URL('../../bin/natpunch.js', import.meta.url).pathname;
    const r = spawnSync(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, bin, 'serve', '--spoof', '--port', '0'],
      {
        encoding: 'utf8',
        timeout: 20_000,
      },
    );
    if (r.error) return; // no setpriv here: nothing to check
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--spoof .*run as root.*\[NOT_ROOT\]/);
  },
);
