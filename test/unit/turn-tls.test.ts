import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TurnServer } from '../../src/relay/server.js';
import { TurnClient } from '../../src/relay/client.js';
import { UsersFileStore } from '../../src/relay/auth.js';
import { listenTurnTls } from '../../src/relay/tls.js';

const haveOpenssl = spawnSync('sh', ['-c', 'command -v openssl']).status === 0;

test(
  'TURN over TLS (turns:): allocation, relayed datagrams and an RFC 6062 TCP connection',
  { skip: haveOpenssl ? false : 'openssl not installed' },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'natpunch-turns-'));
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
        '/CN=localhost',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    assert.equal(gen.status, 0, 'openssl made a self-signed certificate');
    const turn = new TurnServer({
      credentials: new UsersFileStore('alice:pw\n'),
      relayAddress: '127.0.0.1',
      allowPeers: ['127.0.0.0/8'],
    });
    const tlsHandle = await listenTurnTls(turn, { addresses: ['127.0.0.1'], port: 0, certFile: cert, keyFile: key });
    const peer = dgram.createSocket('udp4');
    await new Promise<void>((r) => peer.bind(0, '127.0.0.1', r));
    peer.on('message', (m, r) => peer.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
    const echo = net.createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const server = { address: '127.0.0.1', port: tlsHandle.endpoints[0]!.port };
    const opts = { server, username: 'alice', password: 'pw', timeoutMs: 3000, tls: { ca: readFileSync(cert) } };
    const udpRelay = await TurnClient.connectTls(opts);
    const tcpRelay = await TurnClient.connectTls(opts);
    let stream: net.Socket | null = null;
    try {
      await udpRelay.allocate();
      const got = new Promise<Buffer>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('nothing came back over TLS')), 3000);
        udpRelay.onData((d) => {
          clearTimeout(t);
          resolve(Buffer.from(d));
        });
      });
      udpRelay.send(Buffer.from('over tls'), { address: '127.0.0.1', port: peer.address().port });
      assert.equal(String(await got), 'echo:over tls');

      await tcpRelay.allocate({ transport: 'tcp' });
      stream = await tcpRelay.connectPeer({ address: '127.0.0.1', port: (echo.address() as net.AddressInfo).port });
      stream.write('tcp allocation over tls');
      const [echoed] = await Promise.race([
        once(stream, 'data'),
        new Promise<never>((_, j) => setTimeout(() => j(new Error('no echo')), 3000)),
      ]);
      assert.equal(String(echoed), 'tcp allocation over tls');

      // A client that does not trust the certificate cannot connect.
      await assert.rejects(TurnClient.connectTls({ ...opts, tls: {} }), /certificate|self.signed/i);
    } finally {
      stream?.destroy();
      await udpRelay.close();
      await tcpRelay.close();
      await tlsHandle.close();
      turn.close();
      peer.close();
      echo.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
