import { test } from 'node:test';
import { Lab } from '/work/wt/endpoint/src/lab/index.js';
test('x', async () => {
  const lab = await Lab.up();
  try {
    const serve = lab.node('server', '/work/wt/endpoint/bin/natpunch.js', ['serve', '--json']);
    await serve.next((m) => m.event === 'listening', { timeoutMs: 30_000 });
    const rv = `${lab.addr('server')}:3478`;
    const hub = lab.node('a', '/work/wt/endpoint/test/lab/fixtures/many-sessions-peer.ts', ['hub', rv]);
    console.log(JSON.stringify(await hub.next((m) => m.type === 'ready', { timeoutMs: 30_000 })));
    const peers = lab.node('b', '/work/wt/endpoint/test/lab/fixtures/many-sessions-peer.ts', ['peers', rv, '10', '5']);
    try { console.log(JSON.stringify(await peers.next((m) => m.type === 'connected', { timeoutMs: 200_000 }))); } catch (e) { console.log('ERR', (e as Error).message); }
    console.log(peers.stderr.slice(-3000)); console.log('HUB', hub.stderr.slice(-3000));
  } finally { await lab.down(); }
});
