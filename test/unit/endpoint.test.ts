// The long-lived Endpoint on loopback through serve's rendezvous: one socket carries many sessions to several peers
// in both directions; close() releases them all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startServer } from '../../src/server/serve.js';
import { createEndpoint, type Endpoint } from '../../src/endpoint/endpoint.js';
import type { Session } from '../../src/session/session.js';
import type { MuxStream } from '../../src/session/mux.js';
import { generateKeyPair, keyToId } from '../../src/session/identity.js';

const LOOP = { address: '127.0.0.1' };

function echo(ep: Endpoint): void {
  ep.on('session', (s: Session) => s.on('stream', (st: MuxStream) => st.pipe(st)));
}

async function roundTrip(s: Session): Promise<void> {
  const payload = randomBytes(2048);
  const st = s.openStream();
  const back: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    st.on('data', (c: Buffer) => back.push(c));
    st.once('end', () => resolve());
    st.once('error', reject);
  });
  st.end(payload);
  await done;
  assert.deepEqual(Buffer.concat(back), payload);
}

test('one Endpoint: outgoing sessions to two peers and an incoming one share its single UDP socket', async () => {
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'] });
  const rendezvous = `127.0.0.1:${h.udp[0]!.port}`;
  const eps: Endpoint[] = [];
  try {
    const opts = { bind: LOOP, rendezvous, transport: 'udp' as const, portMapping: false, hardNat: false };
    const hub = await createEndpoint({ keyPair: generateKeyPair(), name: 'hub', ...opts });
    const p1 = await createEndpoint({ keyPair: generateKeyPair(), name: 'p1', ...opts });
    const p2 = await createEndpoint({ keyPair: generateKeyPair(), name: 'p2', ...opts });
    eps.push(hub, p1, p2);
    for (const e of eps) echo(e);
    const port = hub.socket.address().port;
    const s1 = await hub.connect('p1');
    const s2 = await hub.connect('p2');
    const incoming = new Promise<Session>((resolve) => hub.once('session', resolve));
    const s3 = await p1.connect('hub');
    await incoming;
    await Promise.all([roundTrip(s1), roundTrip(s2), roundTrip(s3)]);
    assert.equal(keyToId(s1.remotePublicKey), keyToId(p1.publicKey));
    assert.equal(keyToId(s2.remotePublicKey), keyToId(p2.publicKey));
    assert.equal(hub.allSessions.length, 3, 'two outgoing + one incoming');
    for (const s of hub.allSessions) assert.equal(s.path.local.port, port, "every session on the endpoint's socket");
    await hub.close();
    assert.equal(hub.allSessions.length, 0);
  } finally {
    await Promise.all(eps.map((e) => e.close()));
    await h.close();
  }
});
