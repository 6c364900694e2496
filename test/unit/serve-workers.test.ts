// `natpunch serve --workers N`: several event loops on one SO_REUSEPORT port. STUN is answered by every worker, the
// rendezvous (one registry, main thread) sees every registration whichever worker the kernel would hash it to.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { batchedUnavailableReason } from '../../src/net/batched.js';
import { stunBinding } from '../../src/stun/client.js';
import { NATPUNCH, startUntilLine, stop } from '../helpers/proc.js';
import { Bag } from './rendezvous-harness.js';

const skip = batchedUnavailableReason();
/** Source ports to try: with 2 workers the chance that all land on one is 2^-(n-1). */
const CLIENTS = 24;

test('serve --workers 2: STUN from many source ports is answered by both workers; every rendezvous registration reaches the one registry', { skip }, async () => {
  // --no-relay: the default peer relay keeps serve on one thread (its scopes live with the rendezvous).
  const { child, line } = await startUntilLine(NATPUNCH, ['serve', '--port', '0', '--address', '127.0.0.1', '--workers', '2', '--no-relay', '--json'], (l) => l.startsWith('{'));
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const bag = new Bag();
  try {
    const info = JSON.parse(line) as { udp: Array<{ port: number }>; workers: number; udpImplementation: string };
    assert.equal(info.workers, 2);
    assert.equal(info.udpImplementation, 'batched');
    const port = info.udp[0]!.port;
    for (let i = 0; i < CLIENTS; i++) {
      const r = await stunBinding({ host: '127.0.0.1', port }, { timeoutMs: 3000 });
      assert.equal(r.mapped.port, r.local.port);
    }
    // Each client below has its own source port; a registry per worker would lose about half of them to lookups.
    const names = Array.from({ length: 12 }, (_, i) => `w${i}`);
    for (const name of names) await (await bag.client({ port, tcpPort: port }, { name, tcpFallback: false })).register();
    const looker = await bag.client({ port, tcpPort: port }, { tcpFallback: false });
    for (const name of names) assert.ok((await looker.lookup(name)).publicKey.length > 0, name);
  } finally {
    await bag.close();
    const exit = await stop(child, 'SIGTERM');
    assert.equal(exit.code, 0);
  }
  // Both threads log their STUN counters when they stop; both must have answered some of the CLIENTS bindings.
  const counters = stderr
    .split('\n')
    .filter((l) => l.includes('"serve: stopped"'))
    .map((l) => (JSON.parse(l) as { counters: { responses: number } }).counters.responses);
  assert.equal(counters.length, 2, stderr);
  assert.ok(counters.every((n) => n > 0), `responses per worker: ${counters.join(', ')}`);
});
