// Default-deny (issue 18): `expose` refuses to start without --allow / --allow-file / --allow-any; `listen` without
// either warns in one line; keygen's directories are 0700 and an existing ~/.natpunch is tightened.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../../src/server/serve.js';
import { generateKeyPair, keyToId } from '../../src/session/identity.js';
import { exposeAllow } from '../../src/cli/commands/expose.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { NATPUNCH, stop, waitForOutput } from '../helpers/proc.js';

const run = (args: string[], env: NodeJS.ProcessEnv = process.env) =>
  spawnSync(process.execPath, [NATPUNCH, ...args], { encoding: 'utf8', timeout: 20_000, env });

test('expose without an allow option exits 1 with a one-line error naming the three options', () => {
  const r = run(['expose', '22', '--rendezvous', '127.0.0.1:9']);
  assert.equal(r.status, 1);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(
    r.stderr,
    /admits no one by default: give --allow KEY \(repeatable\), --allow-file FILE, or --allow-any/,
  );
  const both = run([
    'expose',
    '22',
    '--rendezvous',
    '127.0.0.1:9',
    '--allow-any',
    '--allow',
    keyToId(generateKeyPair().publicKey),
  ]);
  assert.equal(both.status, 1);
  assert.match(both.stderr, /--allow-any contradicts/);
  const help = run(['expose', '--help']);
  assert.match(help.stdout, /--allow-file/);
  assert.match(help.stdout, /--allow-any/);
});

test('expose allow options: repeatable --allow, --allow-file (key file or key list), --allow-any', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'natpunch-allow-'));
  try {
    const [a, b, c] = [0, 1, 2].map(() => keyToId(generateKeyPair().publicKey));
    await writeFile(join(dir, 'list'), `# team\n${b}\n${c.toUpperCase()}\n`);
    assert.deepEqual(await exposeAllow({ allow: [a], allowFile: [join(dir, 'list')] }), [a, b, c]);
    assert.equal(await exposeAllow({ allowAny: true }), undefined);
    const none = await exposeAllow({}).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isNatpunchError(none, 'BAD_ARGUMENT'));
    const missing = await exposeAllow({ allowFile: [join(dir, 'nope')] }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isNatpunchError(missing, 'BAD_ARGUMENT'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

async function listenStderr(args: string[], port: number): Promise<string> {
  const child = spawn(
    process.execPath,
    [NATPUNCH, 'listen', '--rendezvous', `127.0.0.1:${port}`, '--transport', 'udp', ...args],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  try {
    // The warning, when any, is printed before this line.
    await waitForOutput(
      child,
      () => err,
      (t) => t.includes('listening as'),
      'listen to start',
    );
    return err;
  } finally {
    await stop(child);
  }
}

test('listen: one warning line unless --allow or --allow-any', async () => {
  const server = await startServer({ port: 0, addresses: ['127.0.0.1'] });
  try {
    const port = server.udp[0]!.port;
    const open = await listenStderr([], port);
    assert.equal(open.split('\n').filter((l) => l.includes('any key may connect')).length, 1, open);
    assert.match(open, /natpunch: warning: any key may connect: restrict with --allow KEY, or pass --allow-any/);
    const any = await listenStderr(['--allow-any'], port);
    assert.ok(!any.includes('warning'), any);
    const allowed = await listenStderr(['--allow', keyToId(generateKeyPair().publicKey)], port);
    assert.ok(!allowed.includes('warning'), allowed);
  } finally {
    await server.close();
  }
});

test('keygen --out: new directories 0700, key 0600; an existing 0755 ~/.natpunch is tightened with a note', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'natpunch-keygen-'));
  try {
    let r = run(['keygen', '--out', join(dir, 'new', 'key.json'), '--json']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal((await stat(join(dir, 'new'))).mode & 0o777, 0o700);
    assert.equal((await stat(join(dir, 'new', 'key.json'))).mode & 0o777, 0o600);
    const home = join(dir, 'home');
    await mkdir(home, { mode: 0o755 });
    await chmod(home, 0o755);
    r = run(['keygen', '--out', join(home, 'key.json')], { ...process.env, NATPUNCH_HOME: home });
    assert.equal(r.status, 0, r.stderr);
    assert.equal((await stat(home)).mode & 0o777, 0o700);
    assert.match(r.stderr, /mode 755; changed to 700/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
