// startServer and the `serve` / `stun` commands on loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServer } from '../../src/server/serve.js';
import { batchedUnavailableReason } from '../../src/net/batched.js';
import { stunBinding, StunClient } from '../../src/stun/client.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { NATPUNCH, run, startUntilLine, stop } from '../helpers/proc.js';
import { hasIPv6Loopback, loopbackHosts } from '../helpers/net.js';

for (const udp of ['batched', 'udx', 'dgram'] as const)
  test(
    `startServer (${udp} sockets) answers STUN on UDP and TCP on one port, IPv4 and IPv6, and releases it on close()`,
    { skip: udp === 'batched' ? batchedUnavailableReason() : false },
    async () => {
      const hosts = await loopbackHosts();
      const h = await startServer({ port: 0, addresses: hosts, udp });
      assert.equal(h.udpImplementation, udp);
      try {
        const port = h.udp[0]!.port;
        assert.ok(h.udp.every((e) => e.port === port) && h.tcp.every((e) => e.port === port));
        for (const host of hosts) {
          const u = await stunBinding({ host, port }, { timeoutMs: 3000 });
          assert.equal(u.mapped.port, u.local.port);
          const t = await stunBinding({ host, port }, { tcp: true, timeoutMs: 3000 });
          assert.equal(t.mapped.address, host);
        }
        // A busy machine may cause a retransmission. The default relay answers Binding on the TCP connections it takes.
        assert.ok(h.stun.counters.responses + (h.relay?.turn.stats.tcpBindings ?? 0) >= 2 * hosts.length);
      } finally {
        await h.close();
      }
      // The port is free again.
      const again = await startServer({ port: h.udp[0]!.port, addresses: ['127.0.0.1'], udp });
      await again.close();
    },
  );

test('TCP connections are dispatched by first byte; a registered handler gets its bytes, unknown ones are closed', async () => {
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'] });
  try {
    const port = h.tcp[0]!.port;
    const got = new Promise<Buffer>((resolve) =>
      h.registerTcpHandler(
        (b) => b === 0xf0,
        (sock, head) => {
          let all = head;
          sock.on('data', (d: Buffer) => {
            all = Buffer.concat([all, d]);
            if (all.length >= 6) {
              resolve(all);
              sock.destroy();
            }
          });
          if (all.length >= 6) resolve(all);
        },
      ),
    );
    const c = net.connect(port, '127.0.0.1');
    c.on('error', () => {});
    c.write(Buffer.from([0xf0, 1, 2]));
    setTimeout(() => c.write(Buffer.from([3, 4, 5])), 30);
    assert.deepEqual([...(await got)], [0xf0, 1, 2, 3, 4, 5]);
    c.destroy();
    // 0x99 matches nobody: the connection is closed by the server.
    const d = net.connect(port, '127.0.0.1');
    d.on('error', () => {});
    d.write(Buffer.from([0x99, 0, 0, 0]));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('not closed')), 3000);
      d.on('close', () => {
        clearTimeout(t);
        resolve();
      });
    });
    // STUN still works next to it.
    const r = await stunBinding({ host: '127.0.0.1', port }, { tcp: true, timeoutMs: 3000 });
    assert.equal(r.mapped.address, '127.0.0.1');
  } finally {
    await h.close();
  }
});

test('startServer in RFC 5780 mode (127.0.0.1 + 127.0.0.2) reports and serves the socket quartet', async () => {
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'], altAddress: '127.0.0.2', altPort: 0 });
  const sock = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const client = new StunClient(sock);
  try {
    assert.ok(h.rfc5780);
    const { primary, altBoth } = h.rfc5780;
    const r = await client.binding(primary, { timeoutMs: 3000 });
    assert.deepEqual(r.otherAddress, { family: 'IPv4', ...altBoth });
    assert.equal(h.sockets.length, 4);
  } finally {
    client.close();
    sock.close();
    await h.close();
  }
});

test('startServer refuses bad configurations with BAD_ARGUMENT', async () => {
  await assert.rejects(startServer({ port: 0, addresses: ['not-an-ip'] }), /not an IP address/);
  await assert.rejects(startServer({ port: 0, addresses: ['0.0.0.0'], altAddress: '127.0.0.2' }), /specific --address/);
  await assert.rejects(startServer({ port: 0, addresses: ['127.0.0.1'], altAddress: '::1' }), /same IP family/);
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'], tcp: false });
  await assert.rejects(startServer({ port: h.udp[0]!.port, addresses: ['127.0.0.1'] }), /in use/);
  await h.close();
});

test('`natpunch serve --json` prints one JSON line, `natpunch stun` reads the mapped address, SIGTERM stops it cleanly', async () => {
  const { child, line } = await startUntilLine(
    NATPUNCH,
    ['serve', '--port', '0', '--address', '127.0.0.1', '--json'],
    (l) => l.startsWith('{'),
  );
  try {
    const info = JSON.parse(line);
    assert.equal(info.event, 'listening');
    const port = info.udp[0].port;
    const plain = await run(NATPUNCH, ['stun', `127.0.0.1:${port}`, '--timeout', '5000']);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout.trim(), /^127\.0\.0\.1:\d+$/);
    const json = await run(NATPUNCH, ['stun', `127.0.0.1:${port}`, '--tcp', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const r = JSON.parse(json.stdout);
    assert.equal(r.transport, 'tcp');
    assert.equal(r.mapped.address, '127.0.0.1');
    assert.equal(r.mapped.port, r.local.port);
  } finally {
    const exit = await stop(child, 'SIGTERM');
    assert.equal(exit.code, 0);
  }
  // RFC 5780 mode without a specific primary address: one-line error, non-zero exit.
  const no5780 = await run(NATPUNCH, ['serve', '--port', '0', '--alt-address', '127.0.0.2']);
  assert.notEqual(no5780.code, 0);
  assert.match(no5780.stderr.trim().split('\n').pop()!, /^natpunch: .*--address.*\[BAD_ARGUMENT\]$/);
  const bad = await run(NATPUNCH, ['stun', '127.0.0.1:1', '--timeout', 'soon']);
  assert.notEqual(bad.code, 0);
  assert.equal(bad.stderr.trim().split('\n').length <= 2, true);
});

test('`--address ::` alone is dual-stack: IPv4 clients get their IPv4 address back', async (t) => {
  if (!(await hasIPv6Loopback())) return t.skip('no IPv6 on this machine');
  const h = await startServer({ port: 0, addresses: ['::'] });
  try {
    const port = h.udp[0]!.port;
    for (const tcp of [false, true]) {
      const r = await stunBinding({ host: '127.0.0.1', port }, { tcp, timeoutMs: 3000 });
      assert.deepEqual(r.mapped, { family: 'IPv4', address: '127.0.0.1', port: r.local.port });
    }
  } finally {
    await h.close();
  }
});
