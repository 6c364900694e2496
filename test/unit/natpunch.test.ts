import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import dgram from 'node:dgram';
import { createHash, randomBytes } from 'node:crypto';
import { connect, listen, type Listener } from '../../src/natpunch.js';
import { generateKeyPair, keyToId, type KeyPair } from '../../src/session/identity.js';
import type { MuxStream } from '../../src/session/mux.js';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';
import { ConnectivityChecks, deriveCheckKey } from '../../src/traversal/checks.js';
import { Session, streamIdsFor } from '../../src/session/session.js';
import { UdxEndpoint } from '../../src/net/udx.js';
import { isNatpunchError } from '../../src/util/errors.js';

const LOOPBACK = { address: '127.0.0.1' };

function host(port: number): Candidate {
  return { type: 'host', transport: 'udp', address: '127.0.0.1', port, priority: candidatePriority('host') };
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

/** Direct mode: the test plays the rendezvous, handing each side the other's key, candidates and connection id. */
async function directConnect(
  listener: Listener,
  ka: KeyPair,
  peerKey: Uint8Array,
  extra: Record<string, unknown> = {},
) {
  const connectionId = randomBytes(16);
  let accepted: Promise<Session | null> | null = null;
  const session = connect({
    keyPair: ka,
    bind: LOOPBACK,
    connectionId,
    peer: { publicKey: peerKey, candidates: listener.candidates },
    timeoutMs: 8000,
    onProgress: (p) => {
      if (p.phase === 'gathering') {
        accepted = listener.acceptOffer({
          connectionId,
          role: 'responder',
          peerKey: ka.publicKey,
          candidates: [host(p.local.port)],
        });
      }
    },
    ...extra,
  });
  const [s, a] = await Promise.allSettled([
    session,
    (async () => {
      while (!accepted) await new Promise((r) => setTimeout(r, 5));
      return accepted;
    })(),
  ]);
  return { session: s, accepted: a.status === 'fulfilled' ? a.value : null };
}

test('connect/listen in direct mode: authenticated session, LAN path, data hashed both ways', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK, allow: [ka.publicKey] });
  try {
    const sessions: Session[] = [];
    listener.on('session', (s: Session) => sessions.push(s));
    const { session, accepted } = await directConnect(listener, ka, kb.publicKey);
    assert.equal(session.status, 'fulfilled', String((session as PromiseRejectedResult).reason));
    const sa = (session as PromiseFulfilledResult<Session>).value;
    assert.ok(accepted);
    assert.equal(sessions.length, 1);
    const sb = sessions[0]!;
    assert.equal(keyToId(sa.remotePublicKey), keyToId(kb.publicKey));
    assert.equal(keyToId(sb.remotePublicKey), keyToId(ka.publicKey));
    assert.equal(sa.path.kind, 'lan');
    assert.equal(sa.path.remote.port, listener.endpoint.address().port);
    assert.equal(sa.path.candidatePair?.remote?.type, 'host');

    const toB = randomBytes(1024 * 1024);
    const toA = randomBytes(1024 * 1024);
    sb.on('stream', (s: MuxStream) => {
      void readAll(s).then((got) => s.end(Buffer.concat([Buffer.from(sha(got)), toA])));
    });
    const st = sa.openStream();
    st.end(toB);
    const back = await readAll(st);
    assert.equal(back.subarray(0, 64).toString(), sha(toB));
    assert.equal(sha(back.subarray(64)), sha(toA));
    await sa.close();
  } finally {
    await listener.close();
  }
});

test('an impostor that passes the checks (colluding with the rendezvous) is refused at the handshake', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const mallory = generateKeyPair();
  // A lying rendezvous sends A to mallory's socket with bob's key and tells mallory the connection id, so mallory
  // can compute the probe key and win the checks; she cannot prove bob's static key in the Noise handshake.
  const ep = await UdxEndpoint.bind(LOOPBACK);
  const connectionId = randomBytes(16);
  try {
    let checks: ConnectivityChecks | null = null;
    let impostor: Promise<Session> | null = null;
    const attempt = connect({
      keyPair: ka,
      bind: LOOPBACK,
      connectionId,
      peer: { publicKey: kb.publicKey, candidates: [host(ep.address().port)] },
      timeoutMs: 8000,
      onProgress: (p) => {
        if (p.phase !== 'gathering') return;
        const c = new ConnectivityChecks({
          transport: ep,
          role: 'responder',
          connectionId,
          key: deriveCheckKey(connectionId, ka.publicKey, kb.publicKey),
          local: [],
          remote: [host(p.local.port)],
          timeoutMs: 5000,
          nomination: 'implicit',
        });
        checks = c;
        c.run().catch(() => {});
        const ids = streamIdsFor(connectionId);
        const udxStream = ep.acceptStream(ids.responder, ids.initiator, (address, port) =>
          c.isValidated(address, port),
        );
        impostor = Session.establish({
          endpoint: ep,
          isInitiator: false,
          keyPair: mallory,
          udxStream,
          localStreamId: ids.responder,
          remoteStreamId: ids.initiator,
          handshakeTimeoutMs: 5000,
        });
        impostor.catch(() => {});
      },
    });
    const err = await attempt.then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isNatpunchError(err, 'HANDSHAKE_FAILED'), String(err));
    assert.match((err as Error).message, /not the key we meant to reach/);
    (checks as ConnectivityChecks | null)?.close();
    await (impostor as Promise<Session> | null)?.then(
      (s) => s.close(),
      () => {},
    );
  } finally {
    await ep.close();
  }
});

test('a rendezvous that swaps keys gets nowhere: the probe key does not match and the punch fails', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const meant = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK, checkTimeoutMs: 800 });
  try {
    const { session } = await directConnect(listener, ka, meant.publicKey, { checkTimeoutMs: 800 });
    assert.equal(session.status, 'rejected');
    assert.ok(
      isNatpunchError((session as PromiseRejectedResult).reason, 'PUNCH_FAILED'),
      String((session as PromiseRejectedResult).reason),
    );
  } finally {
    await listener.close();
  }
});

test('a key outside the allow list gets NOT_ALLOWED; the listener reports a connection error', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK, allow: [generateKeyPair().publicKey] });
  try {
    const errors = once(listener, 'connection-error');
    const { session } = await directConnect(listener, ka, kb.publicKey);
    assert.equal(session.status, 'rejected');
    assert.ok(
      isNatpunchError((session as PromiseRejectedResult).reason, 'NOT_ALLOWED'),
      String((session as PromiseRejectedResult).reason),
    );
    const [err, peer] = (await errors) as [Error, string];
    assert.ok(isNatpunchError(err, 'NOT_ALLOWED'));
    assert.equal(peer, keyToId(ka.publicKey));
  } finally {
    await listener.close();
  }
});

test('an unreachable peer fails fast with PUNCH_FAILED naming the candidates tried', async () => {
  const hole = dgram.createSocket('udp4');
  await new Promise<void>((r) => hole.bind(0, '127.0.0.1', () => r()));
  hole.on('message', () => {});
  try {
    const err = await connect({
      keyPair: generateKeyPair(),
      bind: LOOPBACK,
      checkTimeoutMs: 700,
      peer: { publicKey: generateKeyPair().publicKey, candidates: [host(hole.address().port)] },
    }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isNatpunchError(err, 'PUNCH_FAILED'), String(err));
    assert.match((err as Error).message, new RegExp(`127\\.0\\.0\\.1:${hole.address().port}`));
  } finally {
    await new Promise<void>((r) => hole.close(() => r()));
  }
});

test('keepalives follow a measured mapping lifetime (half of it, within 1 s .. 15 s) unless set explicitly', async () => {
  const { keepAliveFor } = await import('../../src/natpunch.js');
  assert.equal(keepAliveFor({}), undefined);
  assert.equal(keepAliveFor({ mappingLifetimeMs: 20_000 }), 10_000);
  assert.equal(keepAliveFor({ mappingLifetimeMs: 300_000 }), 15_000);
  assert.equal(keepAliveFor({ mappingLifetimeMs: 1_000 }), 1_000);
  assert.equal(keepAliveFor({ mappingLifetimeMs: 20_000, keepAliveMs: 3_000 }), 3_000);
});
