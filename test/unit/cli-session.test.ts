import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, stat, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseKeyPair } from '../../src/session/identity.js';

const BIN = new URL('../../bin/natpunch.js', import.meta.url).pathname;

function run(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, ...env },
  });
}

test('natpunch keygen --out writes a 0600 key file, refuses to overwrite, --json prints the id', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'natpunch-keygen-'));
  try {
    const file = join(dir, 'alice.key');
    const r = run(['keygen', '--out', file, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { publicKey: string; file: string };
    assert.match(out.publicKey, /^[0-9a-f]{64}$/);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const kp = parseKeyPair(await readFile(file, 'utf8'), file);
    assert.equal(kp.publicKey.toString('hex'), out.publicKey);
    const again = run(['keygen', '--out', file]);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /refusing to overwrite.*\[BAD_ARGUMENT\]/);
    assert.equal(again.stderr.trim().split('\n').length, 1, 'one line');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('natpunch keygen without --out prints a key file that NATPUNCH_KEY accepts', () => {
  const r = run(['keygen']);
  assert.equal(r.status, 0, r.stderr);
  const kp = parseKeyPair(r.stdout, 'stdout');
  assert.match(r.stderr, new RegExp(`public key: ${kp.publicKey.toString('hex')}`));
});

test('natpunch listen rejects a malformed --allow key with one line and exit 1', () => {
  const r = run(['listen', '--name', 'alice', '--rendezvous', '127.0.0.1:1', '--allow', 'nothex'], {
    NATPUNCH_KEY: '',
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--allow: "nothex" is not a peer key.*\[BAD_ARGUMENT\]/);
});

test('natpunch connect with a bad key file fails with one line', () => {
  const r = run(['connect', 'alice', '--rendezvous', '127.0.0.1:1', '--key', '/nonexistent/key']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /cannot read key file \/nonexistent\/key/);
});
