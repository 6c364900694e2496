import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { connect, listen, type Listener } from '../../src/natpunch.js';
import { generateKeyPair, type KeyPair } from '../../src/session/identity.js';
import type { MuxStream } from '../../src/session/mux.js';
import { Session, streamIdsFor } from '../../src/session/session.js';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';
import { ConnectivityChecks, deriveCheckKey, MAX_CHECK_BYTES } from '../../src/traversal/checks.js';
import { IkInitiator, IkPayload, IkReplayCache, MAX_EARLY_DATA_BYTES } from '../../src/session/handshake-ik.js';
import { IkListenerAttempt } from '../../src/session/ik-attempt.js';
import { UdxEndpoint } from '../../src/net/udx.js';
import { isNatpunchError } from '../../src/util/errors.js';

const LOOPBACK = { address: '127.0.0.1' };

function host(port: number): Candidate {
  return { type: 'host', transport: 'udp', address: '127.0.0.1', port, priority: candidatePriority('host') };
}

function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

async function udpSocket(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

/** Check packets (0xF1): kind, whether a handshake payload rides on it, and that payload's first byte. */
function probeInfo(b: Buffer): { kind: number; payloadType: number | null } | null {
  if (b.length < 48 || b[0] !== 0xf1) return null;
  const kind = b[1]!;
  if (!(b[2]! & 2)) return { kind, payloadType: null };
  let at = 32;
  if (kind === 2 || kind === 4) at += b[at] === 4 ? 7 : 19;
  return { kind, payloadType: b[at + 2] ?? null };
}

/**
 * A UDP relay between the connector and the listener that records every datagram: the listener sees the connector
 * at the relay's address, and the test can replay what it recorded from anywhere.
 */
async function tap(listenerPort: number) {
  const s = await udpSocket();
  const fromConnector: Buffer[] = [];
  let connector: { address: string; port: number } | null = null;
  s.on('message', (msg, rinfo) => {
    if (rinfo.port === listenerPort) {
      if (connector) s.send(msg, connector.port, connector.address);
      return;
    }
    connector = { address: rinfo.address, port: rinfo.port };
    fromConnector.push(Buffer.from(msg));
    s.send(msg, listenerPort, '127.0.0.1');
  });
  return { port: s.address().port, fromConnector, close: () => new Promise<void>((r) => s.close(() => r())) };
}

/** A UDP path in front of the listener that loses every check response carrying IK message 2, and nothing else. */
async function losesMessage2(listenerPort: number): Promise<{ s: dgram.Socket; dropped: () => number }> {
  const s = await udpSocket();
  let connector: { address: string; port: number } | null = null;
  let dropped = 0;
  s.on('message', (msg, rinfo) => {
    if (rinfo.port === listenerPort) {
      const p = probeInfo(msg);
      if (p?.kind === 2 && p.payloadType === IkPayload.IK2) dropped++;
      else if (connector) s.send(msg, connector.port, connector.address);
      return;
    }
    connector = { address: rinfo.address, port: rinfo.port };
    s.send(msg, listenerPort, '127.0.0.1');
  });
  return { s, dropped: () => dropped };
}

/** Direct mode through the tap: the test plays the rendezvous for both sides. */
async function connectThroughTap(
  listener: Listener,
  ka: KeyPair,
  peerKey: Uint8Array,
  tapPort: number,
  extra: Record<string, unknown> = {},
) {
  const connectionId = randomBytes(16);
  const accepted = listener.acceptOffer({
    connectionId,
    role: 'responder',
    peerKey: ka.publicKey,
    candidates: [host(tapPort)],
  });
  const session = await connect({
    keyPair: ka,
    bind: LOOPBACK,
    connectionId,
    peer: { publicKey: peerKey, candidates: [host(tapPort)] },
    timeoutMs: 8000,
    ...extra,
  });
  return { session, accepted: await accepted, connectionId };
}

test('a normal session over Noise IK: the handshake rides on the checks, early data arrives, data flows both ways', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK, allow: [ka.publicKey] });
  const t = await tap(listener.endpoint.address().port);
  try {
    const early = Buffer.from('GET / first bytes');
    const { session: sa, accepted: sb } = await connectThroughTap(listener, ka, kb.publicKey, t.port, {
      earlyData: early,
    });
    assert.ok(sb);
    assert.equal(sa.handshakePattern, 'IK');
    assert.equal(sb.handshakePattern, 'IK');
    assert.ok(sa.remotePublicKey.equals(kb.publicKey));
    assert.ok(sb.remotePublicKey.equals(ka.publicKey));
    assert.equal(sa.earlyDataAccepted, true);
    assert.ok(sb.earlyData?.equals(early));
    // Nothing but check packets went out before the session: message 1 rode on them, and it is not plaintext.
    const first = t.fromConnector.map(probeInfo).find((p) => p?.kind === 1);
    assert.equal(first?.payloadType, IkPayload.IK1);
    assert.ok(!t.fromConnector.some((b) => b.includes(early)), 'early data must be encrypted');

    const toB = randomBytes(256 * 1024);
    const toA = randomBytes(256 * 1024);
    sb.on('stream', (s: MuxStream) => {
      void readAll(s).then((got) => s.end(Buffer.concat([got.subarray(0, 16), toA])));
    });
    const st = sa.openStream();
    st.end(toB);
    const back = await readAll(st);
    assert.ok(back.subarray(0, 16).equals(toB.subarray(0, 16)));
    assert.ok(back.subarray(16).equals(toA));
    assert.equal(await sa.ping(), sa.path.rttMs);
    await sa.close();
  } finally {
    await listener.close();
    await t.close();
  }
});

test('a replayed first flight is refused: it opens no second session and its early data is delivered once', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK, checkTimeoutMs: 1500 });
  const t = await tap(listener.endpoint.address().port);
  const attacker = await udpSocket();
  const seen: Array<{ kind: number; payloadType: number | null }> = [];
  attacker.on('message', (m) => {
    const p = probeInfo(m);
    if (p) seen.push(p);
  });
  const sessions: Session[] = [];
  listener.on('session', (s: Session) => sessions.push(s));
  const errors: Error[] = [];
  listener.on('connection-error', (e: Error) => errors.push(e));
  try {
    const early = Buffer.from('transfer 100 coins to bob');
    const {
      session: sa,
      accepted: sb,
      connectionId,
    } = await connectThroughTap(listener, ka, kb.publicKey, t.port, { earlyData: early });
    assert.equal(sb?.handshakePattern, 'IK');
    assert.ok(sb?.earlyData?.equals(early));
    const flight = t.fromConnector.find((b) => probeInfo(b)?.payloadType === IkPayload.IK1);
    assert.ok(flight, 'the tap recorded the first flight');

    // 1. Replayed into the same attempt (its checks still linger) from another address: answered, but never with
    //    message 2 (only ELSEWHERE), and no session.
    attacker.send(flight, listener.endpoint.address().port, '127.0.0.1');
    const deadline = Date.now() + 2000;
    while (!seen.some((p) => p.kind === 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(
      seen.filter((p) => p.kind === 2).map((p) => p.payloadType),
      [IkPayload.ELSEWHERE],
    );

    // 2. A rendezvous that re-introduces the same connection id (the only way the check key and prologue match again)
    //    gets the replay into a new attempt: no answer at all, no session, the attempt fails.
    seen.length = 0;
    const second = listener.acceptOffer({
      connectionId,
      role: 'responder',
      peerKey: ka.publicKey,
      candidates: [host(attacker.address().port)],
    });
    for (let i = 0; i < 5; i++) {
      attacker.send(flight, listener.endpoint.address().port, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await second, null);
    // The first attempt's checks may still linger (same connection id) and say ELSEWHERE; nobody sends message 2.
    assert.ok(
      seen.filter((p) => p.kind === 2).every((p) => p.payloadType === IkPayload.ELSEWHERE),
      JSON.stringify(seen),
    );
    assert.ok(
      seen.some((p) => p.kind === 1),
      'the new attempt did run its own checks',
    );
    assert.equal(sessions.length, 1);
    assert.equal(sessions.filter((s) => s.earlyData !== null).length, 1);
    assert.equal(errors.length, 1);
    await sa.close();
  } finally {
    attacker.close();
    await listener.close();
    await t.close();
  }
});

test('a listener whose key differs from the pinned one is refused before any data is accepted', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const mallory = generateKeyPair();
  // A lying rendezvous points A at mallory with bob's key and gives mallory the connection id: she passes the checks
  // (their key is derived from public values) and runs the IK responder with her own key.
  const ep = await UdxEndpoint.bind(LOOPBACK);
  const packets: Buffer[] = [];
  ep.onMessage((m) => packets.push(Buffer.from(m)));
  const connectionId = randomBytes(16);
  const early = Buffer.from('secret early data for bob only');
  let checks: ConnectivityChecks | null = null;
  let ik: IkListenerAttempt | null = null;
  let impostor: Promise<Session> | null = null;
  try {
    const attempt = connect({
      keyPair: ka,
      bind: LOOPBACK,
      connectionId,
      earlyData: early,
      peer: { publicKey: kb.publicKey, candidates: [host(ep.address().port)] },
      timeoutMs: 8000,
      onProgress: (p) => {
        if (p.phase !== 'gathering') return;
        ik = new IkListenerAttempt({
          keyPair: mallory,
          connectionId,
          peerKey: ka.publicKey,
          replay: new IkReplayCache(),
        });
        const c = new ConnectivityChecks({
          transport: ep,
          role: 'responder',
          connectionId,
          key: deriveCheckKey(connectionId, ka.publicKey, kb.publicKey),
          local: [],
          remote: [host(p.local.port)],
          timeoutMs: 5000,
          nomination: 'implicit',
          handshake: ik.handshake,
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
    const imp = ik as IkListenerAttempt | null;
    assert.equal(imp?.accepted, false, 'mallory could not accept message 1');
    assert.ok(
      packets.some((b) => probeInfo(b)?.payloadType === IkPayload.IK1),
      'message 1 reached her',
    );
    assert.ok(!packets.some((b) => b.includes(early)), 'she never saw the early data in clear');
    const impErr = await (impostor as Promise<Session> | null)?.then(
      (s) => (void s.close(), null),
      (e: unknown) => e,
    );
    assert.ok(impErr, 'her XX responder got no session either');
  } finally {
    (checks as ConnectivityChecks | null)?.close();
    await ep.close();
  }
});

test('an older listener (checks without a handshake) still works: the connector falls back to XX', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const ep = await UdxEndpoint.bind(LOOPBACK);
  const connectionId = randomBytes(16);
  let checks: ConnectivityChecks | null = null;
  let responder: Promise<Session> | null = null;
  try {
    const sa = await connect({
      keyPair: ka,
      bind: LOOPBACK,
      connectionId,
      earlyData: Buffer.from('x'),
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
        responder = Session.establish({
          endpoint: ep,
          isInitiator: false,
          keyPair: kb,
          udxStream,
          localStreamId: ids.responder,
          remoteStreamId: ids.initiator,
          handshakeTimeoutMs: 5000,
        });
      },
    });
    const sb = await (responder as unknown as Promise<Session>);
    assert.equal(sa.handshakePattern, 'XX');
    assert.equal(sa.earlyDataAccepted, false);
    assert.equal(sb.handshakePattern, 'XX');
    const st = sa.openStream();
    const got = once(sb, 'stream') as Promise<[MuxStream]>;
    st.end('hi');
    const [s] = await got;
    assert.equal((await readAll(s)).toString(), 'hi');
    await sa.close();
    await sb.close().catch(() => {});
  } finally {
    (checks as ConnectivityChecks | null)?.close();
    await ep.close();
  }
});

test('a listener that refuses the key says so in message 2: NOT_ALLOWED on both sides, no session', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK, allow: [] });
  const t = await tap(listener.endpoint.address().port);
  const errors: Error[] = [];
  listener.on('connection-error', (e: Error) => errors.push(e));
  try {
    const err = await connectThroughTap(listener, ka, kb.publicKey, t.port).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isNatpunchError(err, 'NOT_ALLOWED'), String(err));
    while (errors.length === 0) await new Promise((r) => setTimeout(r, 10));
    assert.ok(isNatpunchError(errors[0], 'NOT_ALLOWED'));
  } finally {
    await listener.close();
    await t.close();
  }
});

test('IK message 1 from a clock outside the window is declined (XX fallback), and the replay cache stays bounded', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const a = await UdxEndpoint.bind(LOOPBACK);
  const b = await UdxEndpoint.bind(LOOPBACK);
  const cid = randomBytes(16);
  const key = deriveCheckKey(cid, ka.publicKey, kb.publicKey);
  const ini = new IkInitiator({
    keyPair: ka,
    remoteKey: kb.publicKey,
    connectionId: cid,
    now: () => Date.now() - 10 * 60_000,
  });
  const res = new IkListenerAttempt({
    keyPair: kb,
    connectionId: cid,
    peerKey: ka.publicKey,
    replay: new IkReplayCache(),
  });
  const ca = new ConnectivityChecks({
    transport: a,
    role: 'initiator',
    connectionId: cid,
    key,
    local: [],
    remote: [host(b.address().port)],
    nomination: 'implicit',
    handshake: ini,
  });
  const cb = new ConnectivityChecks({
    transport: b,
    role: 'responder',
    connectionId: cid,
    key,
    local: [],
    remote: [host(a.address().port)],
    nomination: 'implicit',
    handshake: res.handshake,
  });
  try {
    cb.run().catch(() => {});
    await ca.run();
    assert.equal(ini.state.state, 'declined');
    assert.match((ini.state as { reason: string }).reason, /clocks/);
    assert.equal(res.accepted, false);
  } finally {
    ca.close();
    cb.close();
    await a.close();
    await b.close();
  }
  const cache = new IkReplayCache({ maxEntries: 2, memoryMs: 1000 });
  assert.equal(cache.admit(Buffer.alloc(32, 1), 0), 'fresh');
  assert.equal(cache.admit(Buffer.alloc(32, 1), 10), 'replay');
  assert.equal(cache.admit(Buffer.alloc(32, 2), 20), 'fresh');
  assert.equal(cache.admit(Buffer.alloc(32, 3), 30), 'full', 'never forgets early to make room');
  assert.equal(cache.admit(Buffer.alloc(32, 3), 1001), 'fresh', 'expired entries make room');
});

test('early data is bounded so a check stays within the path MTU', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const ini = new IkInitiator({
    keyPair: ka,
    remoteKey: kb.publicKey,
    connectionId: randomBytes(16),
    earlyData: Buffer.alloc(MAX_EARLY_DATA_BYTES),
  });
  assert.ok(32 + 2 + ini.message1.length + 16 <= MAX_CHECK_BYTES - 44, `${ini.message1.length}`);
  assert.throws(
    () =>
      new IkInitiator({
        keyPair: ka,
        remoteKey: kb.publicKey,
        connectionId: randomBytes(16),
        earlyData: Buffer.alloc(MAX_EARLY_DATA_BYTES + 1),
      }),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
});

test('one IK state per attempt: a retransmitted message 1 gets the same message 2, early data is accepted once, a second listener attempt drops the replay', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const cid = randomBytes(16);
  const cache = new IkReplayCache();
  const ini = new IkInitiator({
    keyPair: ka,
    remoteKey: kb.publicKey,
    connectionId: cid,
    earlyData: Buffer.from('once'),
  });
  const accepted: Array<Buffer | null> = [];
  const responder = () =>
    new IkListenerAttempt({ keyPair: kb, connectionId: cid, peerKey: ka.publicKey, replay: cache });
  const first = responder();
  const from = { address: '127.0.0.1', port: 1111 };
  const r1 = await first.handshake.onRequest(ini.message1, from);
  const r2 = await first.handshake.onRequest(ini.message1, from);
  const other = await first.handshake.onRequest(ini.message1, { address: '127.0.0.1', port: 2222 });
  assert.equal(r1?.payload?.[0], IkPayload.IK2);
  assert.equal(r1?.select, true);
  assert.ok(r2?.payload && Buffer.from(r2.payload).equals(Buffer.from(r1!.payload!)), 'the same message 2 again');
  assert.equal(other?.payload?.[0], IkPayload.ELSEWHERE);
  const s = first.session({ endpoint: await UdxEndpoint.bind(LOOPBACK), keyPair: kb, ownsEndpoint: true });
  accepted.push(s?.earlyData ?? null);
  assert.equal(first.session({ endpoint: undefined as never, keyPair: kb }), null, 'the session is handed out once');
  assert.deepEqual(
    accepted.map((b) => b?.toString()),
    ['once'],
  );
  // Another message 1 in the same attempt is dropped.
  const ini2 = new IkInitiator({ keyPair: ka, remoteKey: kb.publicKey, connectionId: cid });
  assert.equal(await first.handshake.onRequest(ini2.message1, from), null);
  // The same message 1 in a new attempt of the same listener (same connection id: a lying rendezvous): no answer.
  assert.equal(await responder().handshake.onRequest(ini.message1, from), null);
  // The initiator completes from message 2 and ignores a forged one.
  assert.equal(ini.onResponse(Buffer.concat([Buffer.from([IkPayload.IK2]), randomBytes(50)])), 'ignore');
  assert.equal(ini.onResponse(Buffer.from(r1!.payload!)), 'nominate');
  assert.equal(ini.state.state, 'complete');
  await s!.close();
});

test('an IK listener session the initiator never confirms ends with HANDSHAKE_FAILED', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const cid = randomBytes(16);
  const ini = new IkInitiator({ keyPair: ka, remoteKey: kb.publicKey, connectionId: cid });
  const res = new IkListenerAttempt({
    keyPair: kb,
    connectionId: cid,
    peerKey: ka.publicKey,
    replay: new IkReplayCache(),
  });
  const silent = await udpSocket(); // message 1 "came from" here; nobody answers the session
  try {
    await res.handshake.onRequest(ini.message1, { address: '127.0.0.1', port: silent.address().port });
    const s = res.session({
      endpoint: await UdxEndpoint.bind(LOOPBACK),
      keyPair: kb,
      ownsEndpoint: true,
      handshakeTimeoutMs: 300,
    });
    assert.ok(s);
    const [err] = (await once(s, 'close')) as [Error];
    assert.ok(isNatpunchError(err, 'HANDSHAKE_FAILED'), String(err));
  } finally {
    silent.close();
  }
});

test("listeners sharing a replay cache (listen({ replayCache })) treat each other's first flights as replays", async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const replayCache = new IkReplayCache();
  const first = await listen({ keyPair: kb, bind: LOOPBACK, replayCache });
  const second = await listen({ keyPair: kb, bind: LOOPBACK, replayCache, checkTimeoutMs: 1000 });
  const t = await tap(first.endpoint.address().port);
  const attacker = await udpSocket();
  const answers: Array<number | null> = [];
  attacker.on('message', (m) => {
    const p = probeInfo(m);
    if (p?.kind === 2) answers.push(p.payloadType);
  });
  const opened: Session[] = [];
  second.on('session', (s: Session) => opened.push(s));
  second.on('connection-error', () => {});
  try {
    const { session: sa, connectionId } = await connectThroughTap(first, ka, kb.publicKey, t.port, {
      earlyData: Buffer.from('pay once'),
    });
    const flight = t.fromConnector.find((b) => probeInfo(b)?.payloadType === IkPayload.IK1)!;
    const attempt = second.acceptOffer({
      connectionId,
      role: 'responder',
      peerKey: ka.publicKey,
      candidates: [host(attacker.address().port)],
    });
    for (let i = 0; i < 3; i++) {
      attacker.send(flight, second.endpoint.address().port, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await attempt, null);
    assert.deepEqual(answers, [], 'the second listener never answers the replayed first flight');
    assert.equal(opened.length, 0);
    await sa.close();
  } finally {
    attacker.close();
    await first.close();
    await second.close();
    await t.close();
  }
});

test('an older connector (checks without a handshake, then XX) still gets a session from a new listener', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK });
  const ep = await UdxEndpoint.bind(LOOPBACK);
  const connectionId = randomBytes(16);
  const checks = new ConnectivityChecks({
    transport: ep,
    role: 'initiator',
    connectionId,
    key: deriveCheckKey(connectionId, ka.publicKey, kb.publicKey),
    local: [],
    remote: listener.candidates,
    timeoutMs: 5000,
    nomination: 'implicit',
  });
  try {
    const accepted = listener.acceptOffer({
      connectionId,
      role: 'responder',
      peerKey: ka.publicKey,
      candidates: [host(ep.address().port)],
    });
    const r = await checks.run();
    const ids = streamIdsFor(connectionId);
    const sa = await Session.establish({
      endpoint: ep,
      isInitiator: true,
      keyPair: ka,
      remote: r.remote,
      localStreamId: ids.initiator,
      remoteStreamId: ids.responder,
      expectedRemoteKey: kb.publicKey,
    });
    const sb = await accepted;
    assert.equal(sa.handshakePattern, 'XX');
    assert.equal(sb?.handshakePattern, 'XX');
    assert.equal(sb?.earlyData, null);
    await sa.close();
  } finally {
    checks.close();
    await listener.close();
    await ep.close();
  }
});

test('a listener surfaces an IK session only once the connector confirmed it: a lost message 2 leaves no session', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK, allow: [ka.publicKey] });
  const { s, dropped } = await losesMessage2(listener.endpoint.address().port);
  const surfaced: Session[] = [];
  listener.on('session', (x: Session) => surfaced.push(x));
  try {
    const connectionId = randomBytes(16);
    const accepted = listener.acceptOffer({
      connectionId,
      role: 'responder',
      peerKey: ka.publicKey,
      candidates: [host(s.address().port)],
    });
    await assert.rejects(
      connect({
        keyPair: ka,
        bind: LOOPBACK,
        connectionId,
        peer: { publicKey: kb.publicKey, candidates: [host(s.address().port)] },
        timeoutMs: 2000,
      }),
    );
    assert.ok(dropped() > 0, 'message 1 was accepted and answered');
    assert.equal(surfaced.length, 0, 'no session the connector never confirmed');
    await listener.close();
    assert.equal(await accepted, null);
  } finally {
    await listener.close();
    s.close();
  }
});

test("the IK responder's session: 'confirmed' fires before the confirming frame's stream is dispatched", async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK, allow: [ka.publicKey] });
  const t = await tap(listener.endpoint.address().port);
  try {
    const order: string[] = [];
    listener.on('session', (sb: Session) => {
      order.push(`session confirmed=${sb.isConfirmed}`);
      sb.on('stream', (st: MuxStream) => {
        order.push('stream');
        st.pipe(st);
      });
    });
    const { session: sa, accepted: sb } = await connectThroughTap(listener, ka, kb.publicKey, t.port);
    assert.equal(sb?.handshakePattern, 'IK');
    const st = sa.openStream();
    const echoed = readAll(st);
    st.end(Buffer.from('first'));
    assert.equal((await echoed).toString(), 'first');
    assert.deepEqual(order, ['session confirmed=true', 'stream']);
    await sa.close();
  } finally {
    await listener.close();
    await t.close();
  }
});

test('`await listener.acceptOffer()` then a stream handler: the stream the connector opened right away is not missed', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK, allow: [ka.publicKey] });
  try {
    for (let i = 0; i < 5; i++) {
      const connectionId = randomBytes(16);
      const port = listener.endpoint.address().port;
      const accepted = listener.acceptOffer({
        connectionId,
        role: 'responder',
        peerKey: ka.publicKey,
        candidates: [host(port)],
      });
      const sa = await connect({
        keyPair: ka,
        bind: LOOPBACK,
        connectionId,
        peer: { publicKey: kb.publicKey, candidates: [host(port)] },
        timeoutMs: 5000,
      });
      // The stream goes out right behind the connector's first frame (its PING), in the same turn.
      const st = sa.openStream();
      st.end(Buffer.from(`hello ${i}`));
      const sb = await accepted;
      assert.ok(sb);
      assert.equal(sb.handshakePattern, 'IK');
      const got = await new Promise<Buffer>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the stream never reached the listener')), 3000);
        sb.once('stream', (s: MuxStream) => void readAll(s).then((b) => (clearTimeout(timer), resolve(b))));
      });
      assert.equal(got.toString(), `hello ${i}`);
      await sa.close();
    }
  } finally {
    await listener.close();
  }
});

test('early data asks for 0-RTT: that session is surfaced on message 1, before the connector confirmed it', async () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listener = await listen({ keyPair: kb, bind: LOOPBACK, allow: [ka.publicKey] });
  // Loses every check response carrying message 2: the connector never confirms.
  const { s } = await losesMessage2(listener.endpoint.address().port);
  try {
    const connectionId = randomBytes(16);
    const surfaced = new Promise<Session>((resolve) => listener.once('session', resolve));
    void listener.acceptOffer({
      connectionId,
      role: 'responder',
      peerKey: ka.publicKey,
      candidates: [host(s.address().port)],
    });
    const early = Buffer.from('0-RTT');
    const failed = connect({
      keyPair: ka,
      bind: LOOPBACK,
      connectionId,
      peer: { publicKey: kb.publicKey, candidates: [host(s.address().port)] },
      earlyData: early,
      timeoutMs: 1500,
    }).then(
      () => false,
      () => true,
    );
    const sb = await surfaced;
    assert.ok(sb.earlyData?.equals(early));
    assert.equal(sb.isConfirmed, false);
    assert.equal(await failed, true);
  } finally {
    await listener.close();
    s.close();
  }
});
