import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseForwardSpec } from '../../src/cli/commands/forward.js';
import { parseTarget } from '../../src/cli/commands/expose.js';
import { resolveAllow } from '../../src/cli/tunnel-output.js';
import { generateKeyPair, keyToId, saveKeyPair } from '../../src/session/identity.js';
import { isNatpunchError } from '../../src/util/errors.js';

const bin = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
function cli(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 30_000 }, (err, _stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
    );
  });
}

test('forward spec: LOCALPORT:PEER:REMOTEPORT and BIND:LOCALPORT:PEER:REMOTEPORT', () => {
  assert.deepEqual(parseForwardSpec('2222:homebox:22'), {
    bind: '127.0.0.1',
    localPort: 2222,
    peer: 'homebox',
    remotePort: 22,
  });
  assert.deepEqual(parseForwardSpec('0.0.0.0:8080:web:80'), {
    bind: '0.0.0.0',
    localPort: 8080,
    peer: 'web',
    remotePort: 80,
  });
  for (const bad of ['2222:homebox', '2222:homebox:0', 'x:homebox:22', '2222::22', '1:2:3:4:5', '2222:homebox:70000']) {
    assert.throws(() => parseForwardSpec(bad), Error, bad);
  }
});

test('expose targets: PORT means localhost; HOST:PORT and [v6]:PORT as given', () => {
  assert.deepEqual(parseTarget('22'), { host: 'localhost', port: 22 });
  assert.deepEqual(parseTarget('10.0.0.5:8080'), { host: '10.0.0.5', port: 8080 });
  assert.deepEqual(parseTarget('[::1]:22'), { host: '::1', port: 22 });
  for (const bad of ['0', '99999', 'host', 'host:0']) assert.throws(() => parseTarget(bad), Error, bad);
});

test('--allow takes hex ids, key files and files of ids; rejects anything else', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'np-allow-'));
  try {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const c = generateKeyPair();
    await saveKeyPair(join(dir, 'a.key'), a);
    writeFileSync(
      join(dir, 'ids'),
      `# friends\n${keyToId(b.publicKey)}\n\n${keyToId(c.publicKey).toUpperCase()}  # carol\n`,
    );
    const got = await resolveAllow([join(dir, 'a.key'), `${join(dir, 'ids')}`, keyToId(a.publicKey)]);
    assert.deepEqual(got, [keyToId(a.publicKey), keyToId(b.publicKey), keyToId(c.publicKey), keyToId(a.publicKey)]);
    assert.equal(await resolveAllow(undefined), undefined);
    writeFileSync(join(dir, 'junk'), 'not a key\n');
    await assert.rejects(resolveAllow([join(dir, 'junk')]), (e) => isNatpunchError(e, 'BAD_ARGUMENT'));
    await assert.rejects(resolveAllow(['nope']), (e) => isNatpunchError(e, 'BAD_ARGUMENT'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CLI: bad arguments are one line on stderr and exit code 1, before any network use', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['expose', '--rendezvous', '127.0.0.1:9'], /nothing to expose/],
    [['expose', '22', '--rendezvous', '127.0.0.1:9', '--allow-dest', '10.0.0.0/99:80'], /bad prefix length/],
    [['forward', '2222:homebox', '--rendezvous', '127.0.0.1:9'], /LOCALPORT:PEER:REMOTEPORT/],
    [
      ['socks', '--via', 'homebox', '--rendezvous', '127.0.0.1:9', '--user', 'alice'],
      /--user and --password go together/,
    ],
  ];
  const results = await Promise.all(cases.map(([args]) => cli(args)));
  results.forEach((r, i) => {
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, cases[i]![1]);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });
});
