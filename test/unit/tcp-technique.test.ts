/**
 * The TCP technique (src/traversal/tcp-technique.ts) as the planner's race runs it: applies() from two NAT views, and
 * run() on both sides of one connection over loopback (real reuseport ports from the native addon, real Noise
 * session), the session carrying a stream both ways.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { addonStatus } from '../../src/net/native.js';
import type { UdxEndpoint } from '../../src/net/udx.js';
import { generateKeyPair } from '../../src/session/identity.js';
import type { MuxStream } from '../../src/session/mux.js';
import { silentLogger } from '../../src/util/log.js';
import { unknownNat, type NatView, type TechniqueContext, type TechniqueEvent } from '../../src/traversal/technique.js';
import { openTcpLocal } from '../../src/traversal/tcp-local.js';
import { tcpApplies, tcpTechnique } from '../../src/traversal/tcp-technique.js';

const addon = addonStatus();
const skip = addon.available ? false : `native addon unavailable: ${addon.reason}`;
const view = (kind: NatView['kind'], tcp = true): NatView => ({ ...unknownNat(), kind, tcp });

test('applies: TCP on both sides and at least one endpoint-independent NAT; otherwise the reason', () => {
  assert.equal(tcpApplies(view('cone'), view('sequential')), true);
  assert.equal(tcpApplies(view('random'), view('unknown')), true);
  assert.equal(tcpApplies(view('cone'), view('cone')), true);
  assert.match(
    (tcpApplies(view('sequential'), view('random')) as { skip: string }).skip,
    /both NATs map per destination/,
  );
  assert.match((tcpApplies(view('cone', false), view('cone')) as { skip: string }).skip, /no TCP here/);
  assert.match((tcpApplies(view('cone'), view('cone', false)) as { skip: string }).skip, /peer offers no TCP/);
});

test(
  'run on both sides over loopback: one authenticated TCP session, data both ways, the winner noted',
  { skip },
  async () => {
    const [la, lb] = await Promise.all([
      openTcpLocal({ hostAddresses: ['127.0.0.1'] }),
      openTcpLocal({ hostAddresses: ['127.0.0.1'] }),
    ]);
    const a = generateKeyPair();
    const b = generateKeyPair();
    const connectionId = randomBytes(16);
    const events: TechniqueEvent[] = [];
    const ctx = (
      role: 'initiator' | 'responder',
      self = role === 'initiator' ? la : lb,
      peer = role === 'initiator' ? lb : la,
    ): TechniqueContext => ({
      role,
      keyPair: role === 'initiator' ? a : b,
      peerKey: (role === 'initiator' ? b : a).publicKey,
      connectionId,
      endpoint: undefined as unknown as UdxEndpoint, // the TCP technique never touches the UDP socket
      local: { candidates: self.candidates, nat: view('unknown') },
      remote: { candidates: peer.candidates, nat: view('unknown') },
      signalling: null,
      logger: silentLogger,
      progress: (e) => events.push(e),
      // The only technique in this race: its claim is always granted.
      claim: async () => true,
      unclaim: () => {},
    });
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 15_000);
    try {
      const [ra, rb] = await Promise.all([
        tcpTechnique({ local: () => la }).run(ctx('initiator'), ac.signal),
        tcpTechnique({ local: () => lb }).run(ctx('responder'), ac.signal),
      ]);
      try {
        assert.equal(ra.technique, 'tcp');
        assert.equal(ra.transport, 'tcp');
        assert.deepEqual(ra.session.remotePublicKey, b.publicKey);
        assert.deepEqual(rb.session.remotePublicKey, a.publicKey);
        rb.session.once('stream', (st: MuxStream) => st.pipe(st));
        const st = ra.session.openStream();
        const payload = randomBytes(64 * 1024);
        const back = new Promise<Buffer>((resolve) => {
          const chunks: Buffer[] = [];
          st.on('data', (c: Buffer) => chunks.push(c));
          st.once('end', () => resolve(Buffer.concat(chunks)));
        });
        st.end(payload);
        assert.ok((await back).equals(payload));
        assert.ok(events.some((e) => e.phase === 'technique-note' && /p2pnat connected/.test(e.note)));
      } finally {
        await Promise.all([ra.session.close(), rb.session.close()]);
      }
    } finally {
      clearTimeout(timer);
      la.close();
      lb.close();
    }
  },
);

test('run without a TCP side fails at once with the reason', async () => {
  const t = tcpTechnique({ local: () => null });
  await assert.rejects(t.run({} as TechniqueContext, new AbortController().signal), /no TCP port/);
});
