// `natpunch listen` and `natpunch connect` end to end on loopback through a real rendezvous (serve's): netcat style,
// data both ways over one stream, progress on stderr, exit 0 when both directions are done.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { startServer } from '../../src/server/serve.js';
import { generateKeyPair, keyToId, saveKeyPair } from '../../src/session/identity.js';
import { NATPUNCH, stop, waitForOutput } from '../helpers/proc.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function collect(child: ChildProcess) {
  const out: Buffer[] = [];
  let err = '';
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return { stdout: () => Buffer.concat(out), stderr: () => err };
}

test('natpunch listen / connect pipe stdin and stdout both ways through the rendezvous', async () => {
  const server = await startServer({ port: 0, addresses: ['127.0.0.1'] });
  const dir = await mkdtemp(join(tmpdir(), 'natpunch-nc-'));
  const children: ChildProcess[] = [];
  try {
    const port = server.udp[0]!.port;
    const alice = generateKeyPair();
    const bob = generateKeyPair();
    await saveKeyPair(join(dir, 'alice.key'), alice);
    await saveKeyPair(join(dir, 'bob.key'), bob);
    const toBob = randomBytes(300 * 1024);
    const toAlice = randomBytes(200 * 1024);

    const l = spawn(
      process.execPath,
      [
        NATPUNCH,
        'listen',
        '--name',
        'alice',
        '--rendezvous',
        `127.0.0.1:${port}`,
        '--key',
        join(dir, 'alice.key'),
        '--allow',
        keyToId(bob.publicKey),
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    children.push(l);
    const lo = collect(l);
    await waitForOutput(l, lo.stderr, (t) => t.includes('registered:'), 'the listener to register');
    l.stdin!.end(toBob);

    const c = spawn(
      process.execPath,
      [NATPUNCH, 'connect', 'alice', '--rendezvous', `127.0.0.1:${port}`, '--key', join(dir, 'bob.key')],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    children.push(c);
    const co = collect(c);
    c.stdin!.end(toAlice);

    const timer = setTimeout(() => children.forEach((ch) => ch.kill('SIGKILL')), 30_000);
    const [[cCode], [lCode]] = (await Promise.all([once(c, 'exit'), once(l, 'exit')])) as [[number], [number]];
    clearTimeout(timer);
    assert.equal(cCode, 0, co.stderr());
    assert.equal(lCode, 0, lo.stderr());
    assert.equal(sha(co.stdout()), sha(toBob), 'listener stdin → connect stdout');
    assert.equal(sha(lo.stdout()), sha(toAlice), 'connect stdin → listener stdout');
    // Progress lines on stderr, in order.
    const progress = co.stderr();
    for (const step of ['gathering:', 'punching:', 'path chosen:', 'connected:'])
      assert.ok(progress.includes(step), `${step} in ${progress}`);
    assert.ok(progress.indexOf('punching:') < progress.indexOf('path chosen:'));
    assert.match(progress, /rtt \d+ ms/);
  } finally {
    for (const ch of children) await stop(ch);
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
});
