/**
 * portMapping in connect() / listen() on loopback: a "gateway" that never answers (a silent UDP socket on
 * 127.0.0.1, PCP and NAT-PMP only — nothing leaves the machine) makes gathering give up within its bound,
 * report it, and carry on: the session still comes up over the host candidates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { connect, listen, DEFAULT_PORT_MAPPING_TIMEOUT_MS, type Progress } from '../../src/natpunch.js';
import { generateKeyPair } from '../../src/session/identity.js';
import type { Session } from '../../src/session/session.js';
import { candidatePriority } from '../../src/traversal/candidate.js';

test('portMapping with a gateway that never answers: reported, bounded, and the session still connects', async () => {
  const silent = dgram.createSocket('udp4');
  let requests = 0;
  silent.on('message', () => requests++);
  silent.bind(0, '127.0.0.1');
  await once(silent, 'listening');
  const portMapping = {
    gateway: '127.0.0.1',
    gatewayPort: silent.address().port,
    protocols: ['pcp', 'natpmp'] as const,
  };
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const listenerProgress: Progress[] = [];
  const listener = await listen({
    keyPair: kb,
    bind: { address: '127.0.0.1' },
    allow: [ka.publicKey],
    portMapping,
    onProgress: (p) => listenerProgress.push(p),
  });
  let session: Session | null = null;
  try {
    const lp = listenerProgress.find((p) => p.phase === 'port-mapping');
    assert.ok(lp && lp.phase === 'port-mapping' && !lp.ok, JSON.stringify(listenerProgress));
    // Either the probes' own schedule (1.75 s) or our bound ends it.
    assert.match(lp.error ?? '', new RegExp(`no answer|within ${DEFAULT_PORT_MAPPING_TIMEOUT_MS} ms`));
    assert.equal(
      listener.candidates.some((c) => c.type === 'mapped'),
      false,
    );
    assert.ok(requests > 0, 'the mapper asked the (loopback) gateway');

    const connectionId = randomBytes(16);
    const phases: string[] = [];
    let accepted: Promise<Session | null> | null = null;
    session = await connect({
      keyPair: ka,
      bind: { address: '127.0.0.1' },
      connectionId,
      transport: 'udp',
      timeoutMs: 10_000,
      portMapping,
      peer: { publicKey: kb.publicKey, candidates: listener.candidates },
      onProgress: (p) => {
        phases.push(p.phase);
        if (p.phase === 'gathering') {
          const host = {
            type: 'host' as const,
            transport: 'udp' as const,
            address: '127.0.0.1',
            port: p.local.port,
            priority: candidatePriority('host'),
          };
          accepted = listener.acceptOffer({
            connectionId,
            role: 'responder',
            peerKey: ka.publicKey,
            candidates: [host],
          });
        }
      },
    });
    // A connecting side maps in the background (it never delays the connection): its report may come later.
    assert.deepEqual(
      phases.filter((p) => !p.startsWith('technique-') && p !== 'port-mapping'),
      ['gathering', 'punching', 'path', 'connected'],
    );
    assert.ok(await accepted);
    assert.equal(session.path.candidatePair?.remote?.type, 'host');
  } finally {
    await session?.close();
    await listener.close();
    silent.close();
  }
});
