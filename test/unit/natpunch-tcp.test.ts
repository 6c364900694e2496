/** connect()/listen() with `transport` through `natpunch serve` on loopback (STUN over TCP gives the TCP srflx). */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startServer, type ServerHandle } from '../../src/server/serve.js';
import { connect, listen, type Listener, type Progress } from '../../src/natpunch.js';
import { generateKeyPair } from '../../src/session/identity.js';
import type { Session } from '../../src/session/session.js';
import type { MuxStream } from '../../src/session/mux.js';
import { addonStatus } from '../../src/net/native.js';
import { isNatpunchError } from '../../src/util/errors.js';

const addon = addonStatus();
const skip = addon.available ? false : `native addon unavailable: ${addon.reason}`;
let server: ServerHandle;
let rendezvous: string;

before(async () => {
  server = await startServer({ port: 0, addresses: ['127.0.0.1'] });
  rendezvous = `127.0.0.1:${server.udp[0]!.port}`;
});
after(async () => {
  await server?.close();
});

async function echoListener(
  name: string,
  transport: 'udp' | 'tcp' | 'auto',
): Promise<{ listener: Listener; sessions: Session[] }> {
  const listener = await listen({ keyPair: generateKeyPair(), rendezvous, name, transport });
  const sessions: Session[] = [];
  listener.on('session', (s: Session) => {
    sessions.push(s);
    s.on('stream', (st: MuxStream) => st.pipe(st));
  });
  return { listener, sessions };
}

function echo(session: Session, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const st = session.openStream();
    const chunks: Buffer[] = [];
    st.on('data', (c: Buffer) => chunks.push(c));
    st.once('end', () => resolve(Buffer.concat(chunks).toString()));
    st.once('error', reject);
    st.end(text);
  });
}

test(
  'transport tcp: the session runs over a punched TCP connection; the listener gets exactly that one session',
  { skip },
  async () => {
    const { listener, sessions } = await echoListener('tcp-only', 'auto');
    try {
      const progress: Progress[] = [];
      const session = await connect({
        keyPair: generateKeyPair(),
        rendezvous,
        to: 'tcp-only',
        transport: 'tcp',
        timeoutMs: 15_000,
        onProgress: (p) => progress.push(p),
      });
      try {
        assert.equal(session.transport, 'tcp');
        assert.equal(session.path.transport, 'tcp');
        assert.equal(await echo(session, 'over tcp'), 'over tcp');
        assert.ok(progress.some((p) => p.phase === 'path' && p.type.startsWith('tcp-')));
        assert.equal(sessions.length, 1);
        assert.equal(sessions[0]!.transport, 'tcp');
      } finally {
        await session.close();
      }
    } finally {
      await listener.close();
    }
  },
);

test('transport auto with both sides able: one session on one transport, reason in the path', { skip }, async () => {
  const { listener, sessions } = await echoListener('auto-both', 'auto');
  try {
    const session = await connect({ keyPair: generateKeyPair(), rendezvous, to: 'auto-both', timeoutMs: 15_000 });
    try {
      assert.equal(await echo(session, 'auto'), 'auto');
      assert.ok(session.path.transportReason);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(sessions.filter((s) => !s.closed).length, 1, 'the listener keeps one session');
      assert.equal(sessions.find((s) => !s.closed)!.transport, session.transport);
    } finally {
      await session.close();
    }
  } finally {
    await listener.close();
  }
});

test(
  'transport tcp to a listener on udp only fails with PUNCH_FAILED saying the peer offered no TCP candidates',
  { skip },
  async () => {
    const { listener } = await echoListener('udp-only', 'udp');
    try {
      const err = await connect({
        keyPair: generateKeyPair(),
        rendezvous,
        to: 'udp-only',
        transport: 'tcp',
        timeoutMs: 15_000,
      }).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(isNatpunchError(err, 'PUNCH_FAILED'), String(err));
      assert.match((err as Error).message, /no TCP candidates/);
    } finally {
      await listener.close();
    }
  },
);

test('a bad transport value is BAD_ARGUMENT', async () => {
  const err = await connect({
    keyPair: generateKeyPair(),
    rendezvous,
    to: 'x',
    transport: 'sctp' as never,
    timeoutMs: 5_000,
  }).then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(isNatpunchError(err, 'BAD_ARGUMENT'), String(err));
});
