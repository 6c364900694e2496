// Outcome reports end to end on loopback: counted and acknowledged, bounded per key, off on either side, and passed
// to the observer; operator-assigned names; a server told to drain makes its peers move (MOVE) to the next server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { connectionOutcome } from '../../src/rendezvous/outcome.js';
import type { RendezvousEvent } from '../../src/rendezvous/server.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { Bag, startServer } from './rendezvous-harness.js';

const outcome = () =>
  connectionOutcome({
    connectionId: randomBytes(16),
    role: 'initiator',
    startedAt: Date.now() - 200,
    path: { kind: 'direct' },
    localNat: 'full-cone',
  });

test('report(): counted, acknowledged and observed; bounded per key; report: false sends nothing; reports: false counts nothing', async () => {
  const events: RendezvousEvent[] = [];
  const srv = await startServer({ reportsPerMinute: 2, observer: { onEvent: (e) => events.push(e) } });
  const off = await startServer({ reports: false });
  const bag = new Bag();
  try {
    const c = await bag.client(srv);
    assert.equal(await c.report(outcome()), true);
    assert.equal(await c.report(outcome()), true);
    assert.equal(await c.report(outcome()), false, 'over the per-key rate: acknowledged as not counted');
    assert.deepEqual([srv.server.stats().reports, srv.server.stats().reportsDropped], [2, 1]);
    const seen = events.filter((e) => e.type === 'report');
    assert.equal(seen.length, 2);
    assert.equal(seen[0]!.type === 'report' && seen[0]!.report.localNat, 'full-cone');
    const quiet = await bag.client(srv, { report: false });
    assert.equal(await quiet.report(outcome()), false);
    assert.equal(srv.server.stats().received, 3, 'a client with report: false sends nothing');
    const c2 = await bag.client(off);
    assert.equal(await c2.report(outcome()), false);
    assert.deepEqual([off.server.stats().reports, off.server.stats().reportsDropped], [0, 1]);
  } finally {
    await bag.close();
    await srv.close();
    await off.close();
  }
});

test('operator-assigned names: only the assigned key registers them', async () => {
  const owner = generateKeyPair();
  const srv = await startServer({ reservedNames: { ops: owner.publicKey.toString('hex') } });
  const bag = new Bag();
  try {
    const squatter = await bag.client(srv, { name: 'ops' });
    await assert.rejects(
      squatter.register(),
      (e: unknown) => isNatpunchError(e) && /assigned to another key by the operator/.test(e.message),
    );
    const real = await bag.client(srv, { name: 'ops', keyPair: owner });
    await real.register();
  } finally {
    await bag.close();
    await srv.close();
  }
});

test('drain: registered peers get MOVE and register with their next server; the draining one refuses new registrations', async () => {
  const a = await startServer();
  const b = await startServer();
  const bag = new Bag();
  try {
    const transport = await bag.transport();
    const { RendezvousClient } = await import('../../src/rendezvous/client.js');
    const peer = bag.add(
      new RendezvousClient({
        transport,
        server: [
          { host: '127.0.0.1', port: a.port, tcpPort: a.tcpPort },
          { host: '127.0.0.1', port: b.port, tcpPort: b.tcpPort },
        ],
        keyPair: generateKeyPair(),
        name: 'mover',
        initialRtoMs: 100,
      }),
    );
    await peer.register();
    const changed = once(peer, 'server-changed');
    const registered = new Promise<void>((resolve) =>
      peer.on('registered', () => peer.server.port === b.port && resolve()),
    );
    assert.equal(await a.server.drain(), 1);
    const [where, reason] = (await changed) as [{ port: number }, string];
    assert.deepEqual([where.port, reason], [b.port, 'moved']);
    await registered;
    assert.equal(b.server.stats().registrations, 1);
    const late = await bag.client(a);
    await assert.rejects(late.register(), (e: unknown) => isNatpunchError(e) && /shutting down/.test(e.message));
  } finally {
    await bag.close();
    await a.close();
    await b.close();
  }
});
