// ICMP hole punching is one technique of the planner (src/traversal/planner.ts, icmp-technique.ts): it runs only
// when no rendezvous answered and the caller allows it, and then through the race like every other technique —
// technique-start/-end progress, one 'path' event naming it, a failure that lists what was tried.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { plan, ALL_ON } from '../../src/traversal/planner.js';
import { unknownNat, type NatView } from '../../src/traversal/technique.js';
import { connectWithoutRendezvous, planWithoutRendezvous } from '../../src/traversal/no-rendezvous.js';
import { icmpTechnique } from '../../src/traversal/icmp-technique.js';
import { listenIcmp } from '../../src/traversal/icmp.js';
import { connect, type Progress } from '../../src/natpunch.js';
import { addonStatus } from '../../src/net/native.js';
import { generateKeyPair, keyToId } from '../../src/session/identity.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/log.js';
import type { Session } from '../../src/session/session.js';

const cone: NatView = { ...unknownNat(), kind: 'cone', publicAddress: '203.0.113.5', relay: true };
const techniques = (p: ReturnType<typeof plan>) => p.steps.map((s) => s.technique);

test('with a rendezvous the plan never holds icmp, allowed or not', () => {
  for (const icmp of [false, true]) {
    const p = plan(cone, { ...cone, publicAddress: '198.51.100.5' }, { ...ALL_ON, icmp });
    assert.ok(!techniques(p).includes('icmp'));
    if (icmp)
      assert.match(
        p.skipped.find((s) => s.technique === 'icmp')?.why ?? '',
        /only when the rendezvous cannot be reached/,
      );
  }
});

test('without a rendezvous: icmp alone when allowed; nothing (and why) when not', () => {
  const allowed = planWithoutRendezvous(true);
  assert.deepEqual(techniques(allowed), ['icmp']);
  assert.equal(allowed.steps[0]!.holdMs, 0);
  assert.deepEqual(
    allowed.skipped.map((s) => s.technique),
    ['udp-checks', 'relay'],
  );
  const refused = planWithoutRendezvous(false);
  assert.deepEqual(techniques(refused), []);
  assert.match(refused.skipped.find((s) => s.technique === 'icmp')!.why, /--icmp ADDRESS; needs root/);
});

test('connectWithoutRendezvous without ICMP allowed opens nothing and answers null', async () => {
  assert.equal(await connectWithoutRendezvous({ keyPair: generateKeyPair(), logger: silentLogger }), null);
  assert.equal(icmpTechnique({ server: '192.0.2.1', peerKey: null }).name, 'icmp');
});

const rawReason = (() => {
  if (!addonStatus().available) return 'native addon unavailable';
  if (process.getuid?.() !== 0) return 'raw sockets need root';
  return false;
})();

test(
  'connect() whose rendezvous never answers reaches a `listen --icmp` peer through the planner’s icmp step (loopback)',
  { skip: rawReason, timeout: 60_000 },
  async () => {
    // Loopback only, as test/unit/icmp-punch.test.ts: the server on 127.0.0.1, the client on 127.0.0.3 (also the
    // forged packet's source), the probe address 127.0.0.2 local. Port 9 (discard) has no rendezvous.
    const serverKey = generateKeyPair();
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const listener = await listenIcmp({
      keyPair: serverKey,
      port,
      bindAddress: '127.0.0.1',
      probeAddress: '127.0.0.2',
      intervalMs: 100,
    });
    const events: Progress[] = [];
    let session: Session | undefined;
    try {
      const accepted = once(listener, 'session') as Promise<[Session]>;
      session = await connect({
        keyPair: generateKeyPair(),
        to: keyToId(serverKey.publicKey),
        rendezvous: { host: '127.0.0.1', port: 9 },
        bind: { address: '127.0.0.3' },
        transport: 'udp',
        timeoutMs: 3_000,
        icmp: { server: '127.0.0.1', port, probeAddress: '127.0.0.2', source: '127.0.0.3', timeoutMs: 10_000 },
        onProgress: (p) => events.push(p),
      });
      const [theirs] = await accepted;
      assert.ok(session.remotePublicKey.equals(serverKey.publicKey));
      await theirs.close();
      const phases = events.map((e) =>
        'technique' in e && e.phase.startsWith('technique-') ? `${e.phase}:${e.technique}` : e.phase,
      );
      assert.ok(phases.includes('technique-start:icmp'), phases.join(' '));
      assert.ok(phases.includes('technique-end:icmp'), phases.join(' '));
      const paths = events.filter((e) => e.phase === 'path');
      assert.equal(paths.length, 1, 'exactly one path event');
      assert.equal((paths[0] as { traversal?: string }).traversal, 'icmp');
      assert.deepEqual((paths[0] as { remote: unknown }).remote, { address: '127.0.0.1', port });
    } finally {
      await session?.close();
      await listener.close();
    }
  },
);

test(
  'connect() with no rendezvous answer and no ICMP allowed fails as before, without trying ICMP',
  { timeout: 30_000 },
  async () => {
    const events: Progress[] = [];
    const err = await connect({
      keyPair: generateKeyPair(),
      to: keyToId(generateKeyPair().publicKey),
      rendezvous: { host: '127.0.0.1', port: 9 },
      bind: { address: '127.0.0.1' },
      transport: 'udp',
      timeoutMs: 2_000,
      onProgress: (p) => events.push(p),
    }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isNatpunchError(err), String(err));
    assert.ok(!events.some((e) => 'technique' in e && e.technique === 'icmp'), 'no icmp step');
  },
);
