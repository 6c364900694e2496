import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { NodeDatagramTransport, type DatagramListener, type DatagramTransport } from '../../src/net/datagram.js';
import type { RendezvousClient, SeqOfferEvent } from '../../src/rendezvous/client.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { CONNECTION_RECORD_TTL_MS } from '../../src/rendezvous/server.js';
import { decodeRendezvous, encodeRendezvous, MessageType, type RendezvousMessage } from '../../src/wire/rendezvous.js';
import { decodeSeqOffer, encodeSeqOffer } from '../../src/wire/seq-offer.js';
import { Bag, once, startServer, waitFor } from './rendezvous-harness.js';

function offer(publicAddress: string, isn: number): Buffer {
  return encodeSeqOffer({
    private: { address: '127.0.0.1', port: 40000 + (isn % 1000) },
    public: { address: publicAddress, port: 50000 + (isn % 1000) },
    isn,
    window: 64240,
    options: { mss: 1460, windowScale: 7, sackPermitted: true, timestamps: { value: isn ^ 0x5555, echo: 0 } },
  });
}

const bounded = (ms = 5000) => AbortSignal.timeout(ms);

/** Runs `fn` with a fresh server and a bag of clients, closing both afterwards whatever happens. */
async function withServer(
  options: Parameters<typeof startServer>[0],
  fn: (srv: Awaited<ReturnType<typeof startServer>>, bag: Bag) => Promise<void>,
): Promise<void> {
  const srv = await startServer(options);
  const bag = new Bag();
  try {
    await fn(srv, bag);
  } finally {
    await bag.close();
    await srv.close();
  }
}

/**
 * The server accepts a SEQ_OFFER only between the two keys a CONNECT introduced, for that CONNECT's connection id:
 * `initiator` asks to be introduced to `responder` (which must be registered) and the id is returned. The responder
 * also receives a 'connect-request', which these tests ignore.
 */
async function introduce(initiator: RendezvousClient, responder: RendezvousClient | Uint8Array): Promise<Buffer> {
  const offer = await initiator.requestConnect(
    responder instanceof Uint8Array ? responder : responder.keyPair.publicKey,
  );
  return offer.connectionId;
}

/** Two clients of `srv`, both registered. */
async function registeredPair(
  srv: Awaited<ReturnType<typeof startServer>>,
  bag: Bag,
): Promise<{ alice: RendezvousClient; bob: RendezvousClient }> {
  const alice = await bag.client(srv);
  const bob = await bag.client(srv);
  await alice.register();
  await bob.register();
  return { alice, bob };
}

/**
 * `waiter` waits before `sender` sends its offer, then answers with its own, which `sender` fetches afterwards: each
 * gets the other's bytes intact, and the server tells both `spoofing`.
 */
async function crossOffers(
  sender: RendezvousClient,
  waiter: RendezvousClient,
  cid: Buffer,
  isns: [number, number],
  spoofing: boolean,
): Promise<void> {
  const waits = waiter.awaitSeqOffer(cid, sender.keyPair.publicKey, bounded());
  assert.deepEqual(
    await sender.exchangeSeqOffer({
      connectionId: cid,
      peerKey: waiter.keyPair.publicKey,
      offer: offer('127.0.0.1', isns[0]),
    }),
    { spoofing },
  );
  assert.ok((await waits).offer?.equals(offer('127.0.0.1', isns[0])));
  assert.deepEqual(
    await waiter.exchangeSeqOffer({
      connectionId: cid,
      peerKey: sender.keyPair.publicKey,
      offer: offer('127.0.0.1', isns[1]),
    }),
    { spoofing },
  );
  assert.ok(
    (await sender.awaitSeqOffer(cid, waiter.keyPair.publicKey, bounded())).offer?.equals(offer('127.0.0.1', isns[1])),
  );
}

/** A client-side transport that can drop or duplicate incoming datagrams of one rendezvous message type. */
class Tamper implements DatagramTransport {
  dropped = 0;
  constructor(
    readonly inner: NodeDatagramTransport,
    readonly type: number,
    readonly action: 'drop-first' | 'duplicate',
  ) {}
  send(msg: Uint8Array, port: number, address: string): void {
    this.inner.send(msg, port, address);
  }
  onMessage(listener: DatagramListener): () => void {
    return this.inner.onMessage((msg, rinfo) => {
      const ours = msg[0] === 0xf0 && msg[2] === this.type;
      if (ours && this.action === 'drop-first' && this.dropped === 0) {
        this.dropped++;
        return;
      }
      listener(msg, rinfo);
      if (ours && this.action === 'duplicate') listener(Buffer.from(msg), rinfo);
    });
  }
  address() {
    return this.inner.address();
  }
  get closed() {
    return this.inner.closed;
  }
}

test('two registered peers exchange sequence offers both ways: bytes intact, event, awaitSeqOffer before and after arrival', async () => {
  await withServer({}, async (srv, bag) => {
    const { alice, bob } = await registeredPair(srv, bag);
    const connectionId = await introduce(alice, bob);
    const offerA = offer('127.0.0.1', 1111);
    const offerB = offer('127.0.0.1', 2222);

    // Alice waits before Bob's offer exists; Bob's arrives after.
    const aliceWaits = alice.awaitSeqOffer(connectionId, bob.keyPair.publicKey, bounded());
    const bobEvent = once<SeqOfferEvent>(bob, 'seq-offer');
    assert.deepEqual(await alice.exchangeSeqOffer({ connectionId, peerKey: bob.keyPair.publicKey, offer: offerA }), {
      spoofing: false,
    });
    const ev = await bobEvent;
    assert.ok(ev.connectionId.equals(connectionId));
    assert.ok(ev.peerKey.equals(alice.keyPair.publicKey));
    assert.ok(ev.offer?.equals(offerA));
    assert.equal(ev.decline, undefined);
    // Bob asks after it arrived: answered from the store.
    const atBob = await bob.awaitSeqOffer(connectionId, alice.keyPair.publicKey, bounded());
    assert.ok(atBob.offer?.equals(offerA));
    assert.deepEqual(decodeSeqOffer(atBob.offer!), decodeSeqOffer(offerA));

    assert.deepEqual(await bob.exchangeSeqOffer({ connectionId, peerKey: alice.keyPair.publicKey, offer: offerB }), {
      spoofing: false,
    });
    const atAlice = await aliceWaits;
    assert.ok(atAlice.offer?.equals(offerB));
    assert.equal(atAlice.decline, undefined);

    // Another connection's offer does not answer a wait for this one; aborting rejects with the signal's reason.
    const ac = new AbortController();
    const other = bob.awaitSeqOffer(randomBytes(16), alice.keyPair.publicKey, ac.signal);
    const reason = new Error('stop waiting');
    ac.abort(reason);
    await assert.rejects(other, (e: unknown) => e === reason);

    const st = srv.server.stats();
    assert.equal(st.seqOffers, 2);
    assert.equal(st.seqForwarded, 2);
    assert.equal(st.seqSpoofed, 0);
    assert.equal(st.seqRefused, 0);
    // Both forwards were acknowledged (nothing left to retransmit).
    await waitFor(() => srv.server.stats().pendingNotifies === 0);
  });
});

test('a decline is carried with its reason; close() rejects pending waits with SOCKET_CLOSED', async () => {
  await withServer({}, async (srv, bag) => {
    const { alice, bob } = await registeredPair(srv, bag);
    const connectionId = await introduce(alice, bob);
    const reason = 'no raw sockets: not root — déclinée';
    const waiting = alice.awaitSeqOffer(connectionId, bob.keyPair.publicKey, bounded());
    assert.deepEqual(await bob.exchangeSeqOffer({ connectionId, peerKey: alice.keyPair.publicKey, decline: reason }), {
      spoofing: false,
    });
    assert.deepEqual(await waiting, { decline: reason });
    // An overlong reason is cut to 200 bytes of UTF-8, not refused.
    const cid2 = await introduce(alice, bob);
    await bob.exchangeSeqOffer({ connectionId: cid2, peerKey: alice.keyPair.publicKey, decline: 'é'.repeat(150) });
    const cut = await alice.awaitSeqOffer(cid2, bob.keyPair.publicKey, bounded());
    assert.equal(cut.decline, 'é'.repeat(100));
    // Bad arguments are refused before anything is sent.
    const bad = (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT');
    await assert.rejects(alice.exchangeSeqOffer({ connectionId, peerKey: bob.keyPair.publicKey }), bad);
    await assert.rejects(
      alice.exchangeSeqOffer({ connectionId, peerKey: bob.keyPair.publicKey, offer: Buffer.alloc(31) }),
      bad,
    );
    await assert.rejects(
      alice.exchangeSeqOffer({
        connectionId,
        peerKey: bob.keyPair.publicKey,
        offer: offer('127.0.0.1', 1),
        decline: 'x',
      }),
      bad,
    );
    await assert.rejects(
      alice.exchangeSeqOffer({ connectionId: Buffer.alloc(15), peerKey: bob.keyPair.publicKey, decline: 'x' }),
      bad,
    );

    const pending = bob.awaitSeqOffer(randomBytes(16), alice.keyPair.publicKey, bounded());
    bob.close();
    await assert.rejects(pending, (e: unknown) => isNatpunchError(e, 'SOCKET_CLOSED'));
    await assert.rejects(bob.awaitSeqOffer(randomBytes(16), alice.keyPair.publicKey, bounded()), (e: unknown) =>
      isNatpunchError(e, 'SOCKET_CLOSED'),
    );
  });
});

test('an offer is PEER_NOT_FOUND unless it is between the two keys a CONNECT introduced, for that connection id', async () => {
  await withServer({}, async (srv, bag) => {
    const alice = await bag.client(srv);
    const bob = await bag.client(srv);
    const carol = await bag.client(srv);
    await alice.register();
    await bob.register();
    await carol.register();
    let bobEvents = 0;
    bob.on('seq-offer', () => bobEvents++);
    const cid = await introduce(alice, bob);
    const notFound = (e: unknown) => isNatpunchError(e, 'PEER_NOT_FOUND');
    // A connection id the server never introduced, between two registered keys, either way.
    await assert.rejects(
      alice.exchangeSeqOffer({
        connectionId: randomBytes(16),
        peerKey: bob.keyPair.publicKey,
        offer: offer('127.0.0.1', 5),
      }),
      notFound,
    );
    await assert.rejects(
      bob.exchangeSeqOffer({ connectionId: randomBytes(16), peerKey: alice.keyPair.publicKey, decline: 'x' }),
      notFound,
    );
    // ...nor to a key nobody registered.
    await assert.rejects(
      alice.exchangeSeqOffer({ connectionId: randomBytes(16), peerKey: generateKeyPair().publicKey, decline: 'x' }),
      notFound,
    );
    // A third key, registered, for a real connection id: to either party.
    await assert.rejects(
      carol.exchangeSeqOffer({ connectionId: cid, peerKey: bob.keyPair.publicKey, offer: offer('127.0.0.1', 6) }),
      notFound,
    );
    await assert.rejects(
      carol.exchangeSeqOffer({ connectionId: cid, peerKey: alice.keyPair.publicKey, decline: 'x' }),
      notFound,
    );
    // A party of the connection naming a third key as its peer.
    await assert.rejects(
      alice.exchangeSeqOffer({ connectionId: cid, peerKey: carol.keyPair.publicKey, offer: offer('127.0.0.1', 7) }),
      notFound,
    );
    let st = srv.server.stats();
    assert.equal(st.seqRefused, 6);
    assert.equal(st.seqForwarded, 0);
    // The introduced pair itself still gets through, and bob heard nothing of the refused ones.
    await alice.exchangeSeqOffer({ connectionId: cid, peerKey: bob.keyPair.publicKey, offer: offer('127.0.0.1', 8) });
    assert.ok((await bob.awaitSeqOffer(cid, alice.keyPair.publicKey, bounded())).offer?.equals(offer('127.0.0.1', 8)));
    assert.equal(bobEvents, 1);
    st = srv.server.stats();
    assert.equal(st.seqForwarded, 1);
    assert.equal(st.seqRefused, 6);
  });
});

test('the connection record expires: an offer after CONNECTION_RECORD_TTL_MS is PEER_NOT_FOUND', async () => {
  let skew = 0;
  // A long replay window so the clients' timestamps stay acceptable once the server's clock jumps ahead.
  await withServer(
    {
      now: () => Date.now() + skew,
      replayWindowMs: 10 * CONNECTION_RECORD_TTL_MS,
      ttlMs: 10 * CONNECTION_RECORD_TTL_MS,
    },
    async (srv, bag) => {
      const alice = await bag.client(srv);
      const bob = await bag.client(srv);
      await bob.register();
      const cid = await introduce(alice, bob);
      skew = CONNECTION_RECORD_TTL_MS - 1000; // still inside: accepted
      assert.deepEqual(
        await alice.exchangeSeqOffer({ connectionId: cid, peerKey: bob.keyPair.publicKey, decline: 'early' }),
        { spoofing: false },
      );
      skew = CONNECTION_RECORD_TTL_MS + 1000;
      await assert.rejects(
        alice.exchangeSeqOffer({ connectionId: cid, peerKey: bob.keyPair.publicKey, offer: offer('127.0.0.1', 9) }),
        (e: unknown) => isNatpunchError(e, 'PEER_NOT_FOUND') && /no connection with this id/.test((e as Error).message),
      );
      assert.equal(srv.server.stats().seqForwarded, 1);
      assert.equal(srv.server.stats().seqRefused, 1);
    },
  );
});

test("an initiator that never registered (requestConnect only) receives the responder's offer and sends its own", async () => {
  await withServer({}, async (srv, bag) => {
    const alice = await bag.client(srv); // never registers
    const bob = await bag.client(srv);
    await bob.register();
    const cid = await introduce(alice, bob);
    await crossOffers(bob, alice, cid, [501, 502], false);
    const st = srv.server.stats();
    assert.equal(st.seqForwarded, 2);
    assert.equal(st.seqRefused, 0);
    await waitFor(() => srv.server.stats().pendingNotifies === 0); // alice acked the forward it got
  });
});

test('with a spoofer, the server spoofs once per pair whose offers name the addresses they came from, and never otherwise', async () => {
  const calls: Array<[unknown, unknown]> = [];
  const spoofer = {
    spoof(a: unknown, b: unknown): Promise<number> {
      calls.push([a, b]);
      return Promise.resolve(2);
    },
  };
  // Everything here comes from and goes to 127.0.0.1: four introductions and nine offers (each charged to the sender
  // and to the target's IP, plus the acks) would overrun the default per-IP bucket, which is not under test here.
  await withServer({ spoofer, rateLimit: { perSecond: 1000, burst: 1000 } }, async (srv, bag) => {
    const { alice, bob } = await registeredPair(srv, bag);

    // Both offers' public address is 127.0.0.1, where both requests come from: spoofed exactly once.
    const cid = await introduce(alice, bob);
    const offerA = offer('127.0.0.1', 3001);
    const offerB = offer('127.0.0.1', 3002);
    assert.deepEqual(
      await alice.exchangeSeqOffer({ connectionId: cid, peerKey: bob.keyPair.publicKey, offer: offerA }),
      { spoofing: true },
    );
    assert.equal(calls.length, 0); // one offer is not a pair
    assert.deepEqual(
      await bob.exchangeSeqOffer({ connectionId: cid, peerKey: alice.keyPair.publicKey, offer: offerB }),
      { spoofing: true },
    );
    await waitFor(() => calls.length >= 1);
    assert.deepEqual(calls[0], [decodeSeqOffer(offerA), decodeSeqOffer(offerB)]);
    // A later offer from either side for the same connection starts a new wait, not a second spoof.
    await alice.exchangeSeqOffer({
      connectionId: cid,
      peerKey: bob.keyPair.publicKey,
      offer: offer('127.0.0.1', 3003),
    });
    await alice.ping();
    assert.equal(calls.length, 1);
    assert.equal(srv.server.stats().seqSpoofed, 1);

    // An offer naming another public address is not eligible (that sender hears spoofing: false): no spoofing.
    const cid2 = await introduce(alice, bob);
    assert.deepEqual(
      await alice.exchangeSeqOffer({
        connectionId: cid2,
        peerKey: bob.keyPair.publicKey,
        offer: offer('192.0.2.10', 3004),
      }),
      { spoofing: false },
    );
    assert.deepEqual(
      await bob.exchangeSeqOffer({
        connectionId: cid2,
        peerKey: alice.keyPair.publicKey,
        offer: offer('127.0.0.1', 3005),
      }),
      { spoofing: true },
    );
    // A decline is never eligible, and does not complete a spoofed pair.
    const cid3 = await introduce(alice, bob);
    assert.deepEqual(
      await alice.exchangeSeqOffer({ connectionId: cid3, peerKey: bob.keyPair.publicKey, decline: 'no' }),
      { spoofing: false },
    );
    assert.deepEqual(
      await bob.exchangeSeqOffer({
        connectionId: cid3,
        peerKey: alice.keyPair.publicKey,
        offer: offer('127.0.0.1', 3006),
      }),
      { spoofing: true },
    );
    // Undecodable offer bytes are forwarded (the peers judge them) but never spoofed for.
    const cid4 = await introduce(alice, bob);
    assert.deepEqual(
      await alice.exchangeSeqOffer({
        connectionId: cid4,
        peerKey: bob.keyPair.publicKey,
        offer: Buffer.alloc(32, 0xff),
      }),
      { spoofing: false },
    );
    await alice.ping();
    await bob.ping();
    assert.equal(calls.length, 1);
    assert.equal(srv.server.stats().seqSpoofed, 1);
  });
});

test('a spoofer that throws or rejects is logged, never crashes the server', async () => {
  let n = 0;
  const spoofer = {
    spoof(): Promise<number> {
      n++;
      if (n === 1) throw new Error('boom');
      return Promise.reject(new Error('raw socket gone'));
    },
  };
  await withServer({ spoofer }, async (srv, bag) => {
    const { alice, bob } = await registeredPair(srv, bag);
    for (let i = 0; i < 2; i++) {
      const cid = await introduce(alice, bob);
      await alice.exchangeSeqOffer({
        connectionId: cid,
        peerKey: bob.keyPair.publicKey,
        offer: offer('127.0.0.1', 10 + i),
      });
      await bob.exchangeSeqOffer({
        connectionId: cid,
        peerKey: alice.keyPair.publicKey,
        offer: offer('127.0.0.1', 20 + i),
      });
    }
    await waitFor(() => n === 2);
    assert.ok((await alice.ping()) >= 0);
    assert.equal(srv.server.stats().internalErrors, 0);
  });
});

test('a lost forward is retransmitted until acked; a duplicated one is announced once', async () => {
  await withServer({ notifyRtoMs: 50 }, async (srv, bag) => {
    const alice = await bag.client(srv);
    const lossy = new Tamper(await bag.transport(), MessageType.SEQ_OFFER, 'drop-first');
    const bob = await bag.client(srv, { transport: lossy });
    await alice.register();
    await bob.register();
    let events = 0;
    bob.on('seq-offer', () => events++);
    const cid = await introduce(alice, bob);
    await alice.exchangeSeqOffer({ connectionId: cid, peerKey: bob.keyPair.publicKey, offer: offer('127.0.0.1', 7) });
    const got = await bob.awaitSeqOffer(cid, alice.keyPair.publicKey, bounded());
    assert.ok(got.offer?.equals(offer('127.0.0.1', 7)));
    assert.equal(lossy.dropped, 1);
    await waitFor(() => srv.server.stats().pendingNotifies === 0); // the retransmission was acked
    assert.equal(events, 1);
    assert.equal(srv.server.stats().seqForwarded, 1);

    // Every copy is acked, but the event fires once.
    const dup = new Tamper(await bag.transport(), MessageType.SEQ_OFFER, 'duplicate');
    const carol = await bag.client(srv, { transport: dup });
    await carol.register();
    let carolEvents = 0;
    carol.on('seq-offer', () => carolEvents++);
    const cid2 = await introduce(alice, carol);
    await alice.exchangeSeqOffer({ connectionId: cid2, peerKey: carol.keyPair.publicKey, decline: 'busy' });
    assert.deepEqual(await carol.awaitSeqOffer(cid2, alice.keyPair.publicKey, bounded()), { decline: 'busy' });
    await waitFor(() => srv.server.stats().pendingNotifies === 0);
    await carol.ping();
    assert.equal(carolEvents, 1);
  });
});

test('a server that retransmits to a peer that never acks gives up after notifyMaxTransmissions', async () => {
  await withServer({ notifyRtoMs: 20, notifyMaxTransmissions: 3 }, async (srv, bag) => {
    // A raw "peer" registers and never acks: it sees exactly notifyMaxTransmissions identical copies.
    const key = generateKeyPair();
    const t = await bag.transport();
    const copies: Buffer[] = [];
    t.onMessage((msg) => {
      if (msg[0] === 0xf0 && msg[2] === MessageType.SEQ_OFFER) copies.push(Buffer.from(msg));
      if (msg[0] === 0xf0 && msg[2] === MessageType.PING) {
        const m = decodeRendezvous(msg) as Extract<RendezvousMessage, { type: 'ping' }>;
        t.send(
          encodeRendezvous({ type: 'pong', requestId: m.requestId, echo: m.time, time: Date.now() }),
          srv.port,
          '127.0.0.1',
        );
      }
    });
    const reg = encodeRendezvous(
      { type: 'register', requestId: 1, publicKey: key.publicKey, reachable: false, rttMs: 0, candidates: [] },
      key.secretKey,
    );
    t.send(reg, srv.port, '127.0.0.1');
    await waitFor(() => srv.server.stats().registrations === 1);
    const alice = await bag.client(srv);
    await alice.register();
    // The raw peer does not ack the CONNECT_NOTIFY either: it is retransmitted and given up too (not counted here).
    await alice.exchangeSeqOffer({
      connectionId: await introduce(alice, key.publicKey),
      peerKey: key.publicKey,
      offer: offer('127.0.0.1', 9),
    });
    await waitFor(() => srv.server.stats().pendingNotifies === 0);
    assert.equal(copies.length, 3);
    assert.ok(copies.every((c) => c.equals(copies[0]!)));
    // What arrives is alice's own signed message, verbatim.
    const m = decodeRendezvous(copies[0]!);
    assert.equal(m.type, 'seq-offer');
    assert.ok(
      m.type === 'seq-offer' && m.publicKey.equals(alice.keyPair.publicKey) && m.offer?.equals(offer('127.0.0.1', 9)),
    );
  });
});

test('over TCP (UDP blocked): offers are forwarded down the TCP connection and answered', async () => {
  const calls: unknown[] = [];
  await withServer({ spoofer: { spoof: async (a, b) => (calls.push([a, b]), 2) } }, async (srv, bag) => {
    const dead = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    const deadPort = dead.address().port;
    dead.close();
    const walled = await bag.client(
      { port: deadPort, tcpPort: srv.tcpPort },
      { initialRtoMs: 50, maxTransmissions: 2 },
    );
    assert.equal((await walled.register()).via, 'tcp');
    const open = await bag.client(srv);
    await open.register();
    const cid = await introduce(open, walled);
    await crossOffers(open, walled, cid, [41, 42], true);
    await waitFor(() => calls.length === 1);
    assert.equal(walled.via, 'tcp');
  });
});

test("a client drops garbage, forged and misaddressed seq-offers from its server, and strangers' valid ones", async () => {
  // A fake rendezvous server: answers PING so the client knows its address, records NOTIFY_ACKs.
  const fake = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const bag = new Bag();
  try {
    const acks: number[] = [];
    fake.onMessage((msg, rinfo) => {
      let m: RendezvousMessage;
      try {
        m = decodeRendezvous(msg);
      } catch {
        return;
      }
      if (m.type === 'ping')
        fake.send(
          encodeRendezvous({ type: 'pong', requestId: m.requestId, echo: m.time, time: Date.now() }),
          rinfo.port,
          rinfo.address,
        );
      if (m.type === 'notify-ack') acks.push(m.requestId);
    });
    const transport = await bag.transport();
    const c = await bag.client({ port: fake.address().port, tcpPort: 1 }, { transport, tcpFallback: false });
    assert.ok((await c.ping()) >= 0);
    let events = 0;
    c.on('seq-offer', () => events++);
    const to = transport.address().port;
    const sender = generateKeyPair();
    const mallory = generateKeyPair();
    const cid = randomBytes(16);
    const base = {
      type: 'seq-offer' as const,
      publicKey: sender.publicKey,
      connectionId: cid,
      peerKey: c.keyPair.publicKey,
      offer: offer('127.0.0.1', 77),
    };
    const good = encodeRendezvous({ ...base, requestId: 5 }, sender.secretKey);
    const forged = encodeRendezvous({ ...base, requestId: 1 }, mallory.secretKey); // claims sender's key
    const flipped = Buffer.from(encodeRendezvous({ ...base, requestId: 2 }, sender.secretKey));
    flipped[flipped.length - 70] = flipped[flipped.length - 70]! ^ 1; // inside the offer: signature fails
    const misaddressed = encodeRendezvous({ ...base, requestId: 3, peerKey: mallory.publicKey }, sender.secretKey);
    const garbage = [
      Buffer.from([0xf0, 1, MessageType.SEQ_OFFER, 0, 0, 0, 4]),
      Buffer.concat([Buffer.from([0xf0, 1, MessageType.SEQ_OFFER]), randomBytes(300)]),
      good.subarray(0, good.length - 1),
    ];
    for (const b of [forged, flipped, misaddressed, ...garbage]) fake.send(b, to, '127.0.0.1');
    // The same valid message from a stranger's port is not the server speaking: ignored.
    const stranger = await bag.transport();
    stranger.send(encodeRendezvous({ ...base, requestId: 6 }, sender.secretKey), to, '127.0.0.1');
    assert.ok((await c.ping()) >= 0);
    fake.send(good, to, '127.0.0.1');
    await waitFor(() => acks.length >= 1);
    assert.equal(events, 1);
    assert.deepEqual(acks, [5]); // only the good one was acknowledged
    const got = await c.awaitSeqOffer(cid, sender.publicKey, bounded());
    assert.ok(got.offer?.equals(offer('127.0.0.1', 77)));
  } finally {
    await bag.close();
    fake.close();
  }
});

test(
  '`natpunch serve --spoof`: its rendezvous answers spoofing:true and spoofs a pair with the real raw-socket spoofer (loopback)',
  { skip: process.getuid?.() !== 0 ? 'needs root (raw socket)' : false },
  async (t) => {
    const { addonAvailable } = await import('../../src/net/native.js');
    if (!addonAvailable()) return t.skip('native addon not built');
    const { spawn } = await import('node:child_process');
    const bin = new URL('../../bin/natpunch.js', import.meta.url).pathname;
    const child = spawn(
      process.execPath,
      [
        bin,
        'serve',
        '--spoof',
        '--json',
        '--port',
        '0',
        '--spoof-port',
        '0',
        '--address',
        '127.0.0.1',
        '--udp',
        'dgram',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const bag = new Bag();
    try {
      await waitFor(() => stdout.includes('\n') || child.exitCode !== null, 20_000, 50);
      const listening = JSON.parse(stdout.split('\n')[0]!) as {
        udp: Array<{ port: number }>;
        rendezvousSpoof: boolean;
        spoof: { port: number };
      };
      assert.equal(listening.rendezvousSpoof, true);
      const port = listening.udp[0]!.port;
      const alice = await bag.client({ port, tcpPort: port });
      const bob = await bag.client({ port, tcpPort: port });
      await alice.register();
      await bob.register();
      const cid = await introduce(alice, bob);
      assert.deepEqual(
        await alice.exchangeSeqOffer({
          connectionId: cid,
          peerKey: bob.keyPair.publicKey,
          offer: offer('127.0.0.1', 61),
        }),
        { spoofing: true },
      );
      assert.deepEqual(
        await bob.exchangeSeqOffer({
          connectionId: cid,
          peerKey: alice.keyPair.publicKey,
          offer: offer('127.0.0.1', 62),
        }),
        { spoofing: true },
      );
      assert.ok(
        (await alice.awaitSeqOffer(cid, bob.keyPair.publicKey, bounded())).offer?.equals(offer('127.0.0.1', 62)),
      );
      await bag.close();
      // The bounded SYN-ACK schedule is short; stop the server and read its final counters.
      await new Promise((r) => setTimeout(r, 500));
      child.kill('SIGTERM');
      assert.equal(await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 10_000))]), 0);
      assert.match(stderr, /"seqSpoofed":1\b/);
      assert.doesNotMatch(stderr, /spoofing failed/);
    } finally {
      await bag.close();
      if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
    }
  },
);
