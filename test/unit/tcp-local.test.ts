/**
 * Our TCP side against a real `natpunch serve` on loopback: port P's server-reflexive candidate over STUN/TCP, port Q
 * for the sequence techniques where raw sockets are allowed, and no prediction without a NAT (ports preserved).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { addonStatus } from '../../src/net/native.js';
import { startServer, type ServerHandle } from '../../src/server/serve.js';
import { isSeqPortCandidate, openTcpLocal, rawSocketDenied, seqPortOf } from '../../src/traversal/tcp-local.js';
import { measureTcpAllocation } from '../../src/traversal/tcp-predict.js';

const addon = addonStatus();
const skip = addon.available ? false : `native addon unavailable: ${addon.reason}`;
let server: ServerHandle;
let port: number;

before(async () => {
  server = await startServer({ port: 0, addresses: ['127.0.0.1'] });
  port = server.tcp[0]!.port;
});
after(async () => {
  await server?.close();
});

test(
  'port P gets its server-reflexive candidate; port Q is offered exactly when raw sockets are allowed',
  { skip },
  async () => {
    const local = await openTcpLocal({ hostAddresses: ['127.0.0.1'], stun: { host: '127.0.0.1', port } });
    try {
      assert.deepEqual(local.srflx, { address: '127.0.0.1', port: local.port });
      const q = local.candidates.filter(isSeqPortCandidate);
      if (rawSocketDenied() === null) {
        assert.equal(q.length, 1);
        assert.ok(local.seq && local.seq.port !== local.port);
        assert.deepEqual(seqPortOf(local.candidates), local.seq.srflx);
      } else {
        assert.equal(q.length, 0);
        assert.equal(local.seq, null);
      }
      // No NAT: P kept its number, so there is nothing to predict (and nothing is measured).
      assert.deepEqual(await local.predict(), []);
      assert.equal(local.prediction, null);
      // Not behind a NAT: no STUNT #2 TTL.
      assert.equal(await local.lowTtl(), null);
    } finally {
      local.close();
    }
  },
);

test('sequencePort false: no port Q even where raw sockets are allowed', { skip }, async () => {
  const local = await openTcpLocal({
    hostAddresses: ['127.0.0.1'],
    stun: { host: '127.0.0.1', port },
    sequencePort: false,
  });
  try {
    assert.equal(local.seq, null);
    assert.equal(local.candidates.filter(isSeqPortCandidate).length, 0);
  } finally {
    local.close();
  }
});

test('the allocation of fresh connections on loopback is preserving: no prediction', async () => {
  const r = await measureTcpAllocation({ server: { address: '127.0.0.1', port } });
  assert.equal(r.report.pattern, 'preserving');
  assert.equal(r.report.samples.length, 3);
  assert.equal(r.prediction, null);
});

test('a server that does not answer: the measurement ends within its bound with TIMEOUT', async () => {
  const net = await import('node:net');
  const silent = net.createServer(() => {}); // accepts, never answers STUN
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  try {
    const started = Date.now();
    await assert.rejects(
      measureTcpAllocation({
        server: { address: '127.0.0.1', port: (silent.address() as { port: number }).port },
        timeoutMs: 300,
      }),
      (err: Error & { code?: string }) => err.code === 'TIMEOUT' || /time/i.test(err.message),
    );
    assert.ok(Date.now() - started < 5_000);
  } finally {
    silent.close();
  }
});
