import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { PacketCapture } from '../../src/net/capture.js';
import { addonStatus } from '../../src/net/native.js';
import { startConnect } from '../../src/net/tcp.js';
import { decodeIpv4Tcp, TCP_SYN } from '../../src/wire/tcp.js';

const addon = addonStatus();
const isRoot = process.getuid?.() === 0;
const skip = !addon.available
  ? `native addon unavailable: ${addon.reason}`
  : !isRoot
    ? 'needs root (CAP_NET_RAW)'
    : false;

test(
  'packet capture (filtered on the port in the kernel) sees the kernel SYN of our own connect as an outgoing packet',
  { skip },
  async () => {
    const server = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const capture = PacketCapture.open({ tcpPort: port });
    const other = PacketCapture.open({ tcpPort: port === 65535 ? 1 : port + 1 });
    let otherSaw = 0;
    other.onPacket((packet) => {
      const d = decodeIpv4Tcp(packet);
      if (d && (d.tcp.destinationPort === port || d.tcp.sourcePort === port)) otherSaw++;
    });
    try {
      const seen = new Promise<{ isn: number; sport: number; mss?: number; ts: boolean }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no SYN captured within 3 s')), 3000);
        capture.onPacket((packet, outgoing) => {
          const d = decodeIpv4Tcp(packet);
          if (!outgoing || !d || d.tcp.destinationPort !== port || d.tcp.flags !== TCP_SYN) return;
          clearTimeout(timer);
          resolve({
            isn: d.tcp.seq,
            sport: d.tcp.sourcePort,
            mss: d.tcp.options.mss,
            ts: d.tcp.options.timestamps !== undefined,
          });
        });
      });
      const pc = startConnect({ address: '127.0.0.1', port, timeoutMs: 3000 });
      const syn = await seen;
      const socket = await pc.done;
      assert.equal(syn.sport, socket.localPort);
      assert.ok(syn.mss && syn.mss > 0, 'the SYN carries an MSS option');
      assert.equal(syn.ts, true, 'Linux sends timestamps by default (net.ipv4.tcp_timestamps=1)');
      socket.destroy();
      assert.equal(
        otherSaw,
        0,
        "a capture filtered on another port (kernel BPF) sees none of this connection's segments",
      );
    } finally {
      other.close();
      capture.close();
      server.close();
    }
  },
);
