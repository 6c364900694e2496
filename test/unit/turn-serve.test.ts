import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { startServer } from '../../src/server/serve.js';
import { stunBinding } from '../../src/stun/client.js';
import { attachTurn } from '../../src/relay/attach.js';
import { TurnServer } from '../../src/relay/server.js';
import { TurnClient } from '../../src/relay/client.js';
import { UsersFileStore } from '../../src/relay/auth.js';
import { A, Cls, Method, StunBuilder, errorInfo, parseStun } from '../../src/relay/message.js';
import { turnRegistry } from '../../src/wire/turn.js';

test("TURN shares serve's port with STUN: Binding still answered, each TURN request gets exactly one answer, TCP too", async () => {
  const handle = await startServer({
    port: 0,
    addresses: ['127.0.0.1'],
    stun: { registry: turnRegistry },
    relay: false,
  });
  const turn = new TurnServer({
    credentials: new UsersFileStore('alice:pw\n'),
    relayAddress: '127.0.0.1',
    allowPeers: ['127.0.0.0/8'],
  });
  const detach = attachTurn(handle, turn);
  const port = handle.udp[0]!.port;
  const sock = dgram.createSocket('udp4');
  try {
    const b = await stunBinding({ host: '127.0.0.1', port }, { timeoutMs: 2000 });
    assert.ok(b);
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    const replies: Buffer[] = [];
    sock.on('message', (m) => replies.push(m));
    sock.send(
      new StunBuilder(Method.Allocate, Cls.Request, randomBytes(12))
        .add(A.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]))
        .finish(),
      port,
      '127.0.0.1',
    );
    for (let i = 0; i < 100 && replies.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 300)); // a second answer (STUN's 400) would come right behind
    assert.equal(replies.length, 1, "one answer (TURN's 401), no 400 from STUN");
    assert.equal(errorInfo(parseStun(replies[0]!)!)?.code, 401);

    const tcp = await TurnClient.connectTcp({
      server: { address: '127.0.0.1', port },
      username: 'alice',
      password: 'pw',
      timeoutMs: 2000,
    });
    const alloc = await tcp.allocate();
    assert.equal(alloc.relayed[0]!.address, '127.0.0.1');
    await tcp.close();
    const udpBinding = await stunBinding({ host: '127.0.0.1', port }, { timeoutMs: 2000 });
    assert.ok(udpBinding);
  } finally {
    sock.close();
    detach();
    turn.close();
    await handle.close();
  }
});
