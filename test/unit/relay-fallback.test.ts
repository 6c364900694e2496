// openRendezvousRelay (src/relay/path.ts): a client whose UDP to the relay goes unanswered reaches it over TCP, and
// over TLS when only that is open; a client whose rendezvous runs over TCP does not try UDP at all.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TurnServer } from '../../src/relay/server.js';
import { UsersFileStore } from '../../src/relay/auth.js';
import { listenTurnTls } from '../../src/relay/tls.js';
import { openRendezvousRelay, RELAY_UDP_ATTEMPT_MS } from '../../src/relay/path.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A TURN server reachable over TCP only (no UDP socket on its port: datagrams there go unanswered). */
async function tcpOnlyTurn(): Promise<{ turn: TurnServer; port: number }> {
  const turn = new TurnServer({ credentials: new UsersFileStore('alice:pw\n'), relayAddress: '127.0.0.1' });
  cleanups.push(() => turn.close());
  const srv = net.createServer((s) => turn.handleTcp(s));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanups.push(() => srv.close());
  return { turn, port: (srv.address() as net.AddressInfo).port };
}

test('UDP unanswered: the relay is reached over TCP after the bounded UDP attempt', async () => {
  const { turn, port } = await tcpOnlyTurn();
  const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  cleanups.push(() => transport.close());
  const started = Date.now();
  const path = await openRendezvousRelay({
    transport,
    credentials: { host: '127.0.0.1', port, username: 'alice', password: 'pw' },
    udpAttemptMs: 300,
  });
  cleanups.push(() => path.close());
  assert.equal(path.relayed.address, '127.0.0.1');
  assert.equal(turn.stats.allocations, 1);
  assert.ok(Date.now() - started >= 300, 'UDP was tried first');
  assert.ok(RELAY_UDP_ATTEMPT_MS <= 2000);
});

test('rendezvous over TCP (UDP blocked): TCP straight away, no UDP attempt', async () => {
  const { turn, port } = await tcpOnlyTurn();
  const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  cleanups.push(() => transport.close());
  let udpSent = 0;
  const send = transport.send.bind(transport);
  transport.send = (...args: Parameters<typeof transport.send>) => {
    udpSent++;
    return send(...args);
  };
  // A UDP attempt would take udpAttemptMs (an hour here) before TCP: this resolving at all shows none was made.
  const path = await openRendezvousRelay({
    transport,
    credentials: { host: '127.0.0.1', port, username: 'alice', password: 'pw' },
    rendezvousVia: 'tcp',
    udpAttemptMs: 3_600_000,
  });
  cleanups.push(() => path.close());
  assert.equal(udpSent, 0);
  assert.equal(turn.stats.allocations, 1);
});

const haveOpenssl = spawnSync('sh', ['-c', 'command -v openssl']).status === 0;

test(
  'UDP and plain TCP closed: the relay is reached over TLS on the port the rendezvous announced, its certificate checked against the rendezvous host name',
  { skip: haveOpenssl ? false : 'openssl not installed' },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'natpunch-relay-tls-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    const gen = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '2',
        '-subj',
        '/CN=relay.test',
        '-addext',
        'subjectAltName=DNS:relay.test',
      ],
      { stdio: 'ignore' },
    );
    assert.equal(gen.status, 0);
    const turn = new TurnServer({ credentials: new UsersFileStore('alice:pw\n'), relayAddress: '127.0.0.1' });
    cleanups.push(() => turn.close());
    const tls = await listenTurnTls(turn, { addresses: ['127.0.0.1'], port: 0, certFile: cert, keyFile: key });
    cleanups.push(() => tls.close());
    // A port nothing listens on (UDP unanswered, TCP refused).
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const closedPort = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    cleanups.push(() => transport.close());
    const options = {
      transport,
      credentials: {
        host: '127.0.0.1',
        port: closedPort,
        tlsPort: tls.endpoints[0]!.port,
        username: 'alice',
        password: 'pw',
      },
      udpAttemptMs: 300,
      tls: { ca: readFileSync(cert) },
    };
    // The certificate names relay.test, not 127.0.0.1: without the rendezvous' host name the check fails.
    await assert.rejects(openRendezvousRelay(options), /tls: /);
    const path = await openRendezvousRelay({ ...options, serverName: 'relay.test' });
    cleanups.push(() => path.close());
    assert.equal(turn.stats.allocations, 1);
  },
);

test('nothing reachable: one error naming every way tried', async () => {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const closedPort = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  cleanups.push(() => transport.close());
  await assert.rejects(
    openRendezvousRelay({
      transport,
      credentials: { host: '127.0.0.1', port: closedPort, username: 'alice', password: 'pw' },
      udpAttemptMs: 300,
    }),
    (e: Error & { code?: string }) => e.code === 'TURN' && /udp: .*tcp: /.test(e.message),
  );
});
