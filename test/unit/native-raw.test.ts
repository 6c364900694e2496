import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { RawSocket } from '../../src/net/raw.js';
import { decodeIcmpPacket, encodeEcho, encodeIpv4, IPPROTO_ICMP } from '../../src/wire/icmp.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { addonStatus } from '../../src/net/native.js';

const addon = addonStatus();
const noAddon = !addon.available;
const isRoot = process.getuid?.() === 0;

test(
  'raw ICMP: an echo request to 127.0.0.1 comes back as an echo reply with its source address',
  {
    skip: noAddon
      ? `native addon unavailable: ${addon.available ? '' : addon.reason}`
      : !isRoot
        ? 'needs root (CAP_NET_RAW)'
        : false,
  },
  async () => {
    const sock = RawSocket.open();
    try {
      const identifier = randomInt(1, 0xffff);
      const reply = new Promise<{ from: string; sequence: number; data: string }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no echo reply within 3 s')), 3000);
        sock.onMessage((packet, rinfo) => {
          const d = decodeIcmpPacket(packet);
          if (d?.icmp.kind === 'echo-reply' && d.icmp.identifier === identifier) {
            clearTimeout(timer);
            resolve({ from: rinfo.address, sequence: d.icmp.sequence, data: Buffer.from(d.icmp.data).toString() });
          }
        });
      });
      assert.equal(
        sock.send(encodeEcho({ identifier, sequence: 3, data: Buffer.from('natpunch raw') }), '127.0.0.1'),
        true,
      );
      const got = await reply;
      assert.equal(got.from, '127.0.0.1');
      assert.equal(got.sequence, 3);
      assert.equal(got.data, 'natpunch raw');
    } finally {
      sock.close();
    }
  },
);

test(
  'without CAP_NET_RAW a raw socket fails with NOT_ROOT',
  {
    skip: noAddon
      ? `native addon unavailable: ${addon.available ? '' : addon.reason}`
      : isRoot
        ? 'running as root'
        : false,
  },
  () => {
    assert.throws(
      () => RawSocket.open(),
      (e: unknown) => isNatpunchError(e, 'NOT_ROOT'),
    );
  },
);

test(
  'a closed raw socket refuses to send and close is idempotent',
  {
    skip: noAddon
      ? `native addon unavailable: ${addon.available ? '' : addon.reason}`
      : !isRoot
        ? 'needs root (CAP_NET_RAW)'
        : false,
  },
  () => {
    const sock = RawSocket.open();
    sock.close();
    sock.close();
    assert.throws(
      () => sock.send(encodeEcho({ identifier: 1, sequence: 1 }), '127.0.0.1'),
      (e: unknown) => isNatpunchError(e, 'SOCKET_CLOSED'),
    );
  },
);

test(
  'raw ICMP with IP_HDRINCL: a hand-built IPv4 packet is sent as is and answered',
  {
    skip: noAddon
      ? `native addon unavailable: ${addon.available ? '' : addon.reason}`
      : !isRoot
        ? 'needs root (CAP_NET_RAW)'
        : false,
  },
  async () => {
    // The ICMP hole punching client builds whole packets like this (a forged Time Exceeded quoting another packet).
    const sock = RawSocket.open({ headerIncluded: true });
    try {
      const identifier = randomInt(1, 0xffff);
      const reply = new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no echo reply within 3 s')), 3000);
        sock.onMessage((packet) => {
          const d = decodeIcmpPacket(packet);
          if (d?.icmp.kind === 'echo-reply' && d.icmp.identifier === identifier) {
            clearTimeout(timer);
            resolve(d.ip.ttl);
          }
        });
      });
      const packet = encodeIpv4(
        { source: '127.0.0.1', destination: '127.0.0.1', protocol: IPPROTO_ICMP, ttl: 9, identification: identifier },
        encodeEcho({ identifier, sequence: 1 }),
      );
      assert.equal(sock.send(packet, '127.0.0.1'), true);
      assert.ok((await reply) > 0);
    } finally {
      sock.close();
    }
  },
);
