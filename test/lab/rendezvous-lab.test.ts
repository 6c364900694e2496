// The rendezvous across real NATs (lab namespaces): the server sees each peer's NAT mapping, hands it to the other
// side, and that is enough for both to reach each other directly; a peer whose NAT blocks UDP gets there over TCP.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type LabProcess } from '../../src/lab/index.js';

const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

const FIXTURE = new URL('./fixtures/rendezvous-node.ts', import.meta.url).pathname;
const PORT = 3478;

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON lines of the peer fixtures, read field by field in assertions
type Json = Record<string, any>;

describe('rendezvous through NATs', { skip }, () => {
  let lab: Lab;
  let server: LabProcess;
  before(async () => {
    lab = await Lab.up({ nat: { natA: 'port-restricted-cone', natB: 'port-restricted-cone' } });
    server = lab.node('server', FIXTURE, ['server', '--port', String(PORT)]);
    await server.next((m) => m.ev === 'ready', { timeoutMs: 15_000 });
  });
  after(async () => {
    await lab?.down();
  });

  async function peer(host: string, name: string, extra: string[] = []): Promise<{ proc: LabProcess; reg: Json }> {
    const proc = lab.node(host, FIXTURE, [
      'peer',
      '--server',
      `${lab.addr('server')}:${PORT}`,
      '--name',
      name,
      ...extra,
    ]);
    const m = await proc.next((x) => x.ev === 'registered' || x.ev === 'error' || x.ev === 'fatal', {
      timeoutMs: 15_000,
    });
    assert.equal(m.ev, 'registered', JSON.stringify(m));
    return { proc, reg: m };
  }

  test('behind port-restricted cone NATs: srflx is the NAT mapping, both sides get it, and probes get through', async () => {
    const a = await peer('a', 'alice');
    const b = await peer('b', 'bob');
    try {
      assert.equal(a.reg.reg.reflexive.address, lab.publicAddr('natA'));
      assert.equal(b.reg.reg.reflexive.address, lab.publicAddr('natB'));
      assert.equal(a.reg.reg.via, 'udp');
      a.proc.send({ cmd: 'connect', to: 'bob' });
      const offer = (await a.proc.next((m) => m.ev === 'offer' || m.ev === 'error', { timeoutMs: 10_000 }))
        .offer as Json;
      const notify = (await b.proc.next((m) => m.ev === 'notify', { timeoutMs: 10_000 })).offer as Json;
      assert.equal(offer.connectionId, notify.connectionId);
      assert.equal(offer.mode, 'punch');
      const aSrflx = { address: lab.publicAddr('natA'), port: a.reg.reg.reflexive.port };
      const bSrflx = { address: lab.publicAddr('natB'), port: b.reg.reg.reflexive.port };
      assert.ok(
        notify.candidates.some(
          (c: Json) => c.type === 'srflx' && c.address === aSrflx.address && c.port === aSrflx.port,
        ),
        JSON.stringify(notify.candidates),
      );
      assert.ok(
        offer.candidates.some(
          (c: Json) => c.type === 'srflx' && c.address === bSrflx.address && c.port === bSrflx.port,
        ),
        JSON.stringify(offer.candidates),
      );
      // Private addresses are offered too (for same-LAN peers).
      assert.ok(notify.candidates.some((c: Json) => c.type === 'host' && c.address === lab.addr('a')));
      // Both start probing at the scheduled time from the registered socket: each hears the other through its NAT.
      const pa = await a.proc.next((m) => m.ev === 'probe', { timeoutMs: 10_000 });
      const pb = await b.proc.next((m) => m.ev === 'probe', { timeoutMs: 10_000 });
      assert.deepEqual(pa.from, bSrflx);
      assert.deepEqual(pb.from, aSrflx);
    } finally {
      await a.proc.close();
      await b.proc.close();
    }
  });

  test('a NAT that blocks UDP: the peer registers over TCP and still receives connect requests', async () => {
    await lab.setNat('natA', 'udp-blocked');
    const a = await peer('a', 'walled');
    const b = await peer('b', 'open');
    try {
      assert.equal(a.reg.reg.via, 'tcp');
      assert.equal(a.reg.reg.reflexive.transport, 'tcp');
      assert.equal(a.reg.reg.reflexive.address, lab.publicAddr('natA'));
      b.proc.send({ cmd: 'connect', to: 'walled' });
      const offer = await b.proc.next((m) => m.ev === 'offer' || m.ev === 'error', { timeoutMs: 10_000 });
      assert.equal(offer.ev, 'offer', JSON.stringify(offer));
      const notify = (await a.proc.next((m) => m.ev === 'notify', { timeoutMs: 10_000 })).offer as Json;
      assert.equal(notify.via, 'tcp');
      assert.equal(notify.peerName, 'open');
    } finally {
      await a.proc.close();
      await b.proc.close();
      await lab.setNat('natA', 'port-restricted-cone');
    }
  });

  test('connection reversal: a peer behind a full-cone NAT flagged reachable only listens; the other connects', async () => {
    await lab.setNat('natA', 'full-cone');
    const a = await peer('a', 'cone', ['--reachable']);
    const b = await peer('b', 'dialer');
    try {
      assert.equal(a.reg.reg.reachable, true);
      b.proc.send({ cmd: 'connect', to: 'cone' });
      const offer = (await b.proc.next((m) => m.ev === 'offer', { timeoutMs: 10_000 })).offer as Json;
      const notify = (await a.proc.next((m) => m.ev === 'notify', { timeoutMs: 10_000 })).offer as Json;
      assert.equal(offer.mode, 'connect');
      assert.equal(notify.mode, 'await');
      // a sent nothing towards b, yet b's probes arrive through natA (full cone: the registration's mapping is open).
      const heard = await a.proc.next((m) => m.ev === 'probe', { timeoutMs: 10_000 });
      assert.deepEqual(heard.from, { address: lab.publicAddr('natB'), port: b.reg.reg.reflexive.port });
    } finally {
      await a.proc.close();
      await b.proc.close();
      await lab.setNat('natA', 'port-restricted-cone');
    }
  });
});

describe('sessions through the rendezvous across NATs', { skip }, () => {
  const SESSION_FIXTURE = new URL('./fixtures/rendezvous-session-peer.ts', import.meta.url).pathname;
  let lab: Lab;
  before(async () => {
    lab = await Lab.up({ nat: { natA: 'port-restricted-cone', natB: 'port-restricted-cone' } });
  });
  after(async () => {
    await lab?.down();
  });

  test('connect by name through NATs; the rendezvous restarts: the session carries on and the listener re-registers by itself', async () => {
    const startRendezvous = async () => {
      const p = lab.node('server', FIXTURE, ['server', '--port', String(PORT), '--refresh', '1000']);
      await p.next((m) => m.ev === 'ready', { timeoutMs: 15_000 });
      return p;
    };
    const rv = `${lab.addr('server')}:${PORT}`;
    let server = await startRendezvous();
    const bob = lab.node('b', SESSION_FIXTURE, ['listen', '--rendezvous', rv, '--name', 'bob']);
    const alice = lab.node('a', SESSION_FIXTURE, ['connect', '--rendezvous', rv]);
    const carol = lab.node('a2', SESSION_FIXTURE, ['connect', '--rendezvous', rv]);
    try {
      const listening = await bob.next((m) => m.ev === 'listening' || m.ev === 'fatal' || m.ev === 'error', {
        timeoutMs: 15_000,
      });
      assert.equal(listening.ev, 'listening', JSON.stringify(listening));
      assert.equal((listening.reflexive as Json).address, lab.publicAddr('natB'));
      await alice.next((m) => m.ev === 'ready', { timeoutMs: 15_000 });
      alice.send({ cmd: 'connect', to: 'bob' });
      const connected = await alice.next((m) => m.ev === 'connected' || m.ev === 'error', { timeoutMs: 25_000 });
      assert.equal(connected.ev, 'connected', JSON.stringify(connected));
      assert.equal(connected.peer, listening.key);
      assert.equal((connected.path as Json).remote.address, lab.publicAddr('natB'), 'a direct path through natB');
      alice.send({ cmd: 'send', size: 512 * 1024 });
      assert.equal((await alice.next((m) => m.ev === 'echo' || m.ev === 'error', { timeoutMs: 15_000 })).ok, true);

      // The rendezvous goes away: the established session does not need it.
      await server.close();
      alice.send({ cmd: 'send', size: 256 * 1024 });
      assert.equal((await alice.next((m) => m.ev === 'echo' || m.ev === 'error', { timeoutMs: 15_000 })).ok, true);

      // A fresh rendezvous (empty registry) on the same address: bob re-registers by himself, over UDP from his
      // punching socket (if his retransmissions straddled the restart he may pass through TCP for a moment).
      server = await startRendezvous();
      let record: Json | null = null;
      for (let i = 0; i < 60 && record?.transport !== 'udp'; i++) {
        server.send({ cmd: 'lookup', name: 'bob' });
        record = (await server.next((m) => m.ev === 'record', { timeoutMs: 5000 })).reflexive as Json | null;
        if (record?.transport !== 'udp') await new Promise((res) => setTimeout(res, 250));
      }
      assert.deepEqual(record, {
        transport: 'udp',
        address: lab.publicAddr('natB'),
        port: (listening.reflexive as Json).port,
      });
      // So carol, a new peer, finds and reaches him.
      await carol.next((m) => m.ev === 'ready', { timeoutMs: 15_000 });
      carol.send({ cmd: 'connect', to: 'bob' });
      const reached = await carol.next((m) => m.ev === 'connected' || m.ev === 'error', { timeoutMs: 25_000 });
      assert.equal(reached.ev, 'connected', JSON.stringify(reached));
      carol.send({ cmd: 'send', size: 64 * 1024 });
      assert.equal((await carol.next((m) => m.ev === 'echo' || m.ev === 'error', { timeoutMs: 15_000 })).ok, true);
    } finally {
      await Promise.all([alice.close(), carol.close(), bob.close(), server.close()]);
    }
  });
});
