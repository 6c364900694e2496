// Failures a new user meets first: each ends at once with one line that names the problem and its [CODE], exit 1;
// a command line that cannot be parsed exits 2; with --json the error is an event on stdout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { NodeDatagramTransport } from '../../src/net/datagram.js';

const BIN = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));

/** Runs the CLI without blocking this process's event loop (a server may live in it). */
function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { timeout: 30_000, env: { ...process.env, NATPUNCH_KEY: '' } },
      (err, stdout, stderr) =>
        resolve({
          code: err ? Number((err as { code?: number }).code ?? 1) : 0,
          stdout,
          stderr,
          ms: performance.now() - t0,
        }),
    );
  });
}

const oneLine = (stderr: string) =>
  stderr
    .trim()
    .split('\n')
    .filter((l) => !l.includes('temporary key'));

test('natpunch stun to a closed port fails at once (ICMP port unreachable), one line, [UNREACHABLE]', async () => {
  const r = await run(['stun', '127.0.0.1:1']);
  assert.equal(r.code, 1);
  assert.deepEqual(oneLine(r.stderr).length, 1, r.stderr);
  assert.match(r.stderr, /^natpunch: 127\.0\.0\.1:1: port unreachable.*\[UNREACHABLE\]$/m);
  // Not the 5 s timeout: the kernel's ICMP answer ended it (the 1 s target is measured by bench/cli-start).
  assert.ok(r.ms < 4000, `took ${Math.round(r.ms)} ms`);
});

test('natpunch netcheck against a server that never answers exits 1 with one error line', async () => {
  const silent = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  try {
    const r = await run(['netcheck', '--server', `127.0.0.1:${silent.address().port}`, '--no-port-mapping', '-q']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^natpunch: no STUN server answered.*\[STUN_TIMEOUT\]$/m);
  } finally {
    silent.close();
  }
});

test('natpunch socks --listen 99999 is a clean one-line error, not Node internals', async () => {
  const r = await run(['socks', '--listen', '99999', '--via', 'alice', '--rendezvous', '127.0.0.1:1']);
  assert.equal(r.code, 1);
  assert.deepEqual(oneLine(r.stderr), [
    'natpunch: invalid port in "--listen 99999": a port is a number from 0 to 65535 [BAD_ARGUMENT]',
  ]);
});

test('usage errors exit 2; --help exits 0', async () => {
  assert.equal((await run(['stun'])).code, 2);
  assert.equal((await run(['no-such-command'])).code, 2);
  assert.equal((await run(['stun', '--timeout', 'soon', '127.0.0.1'])).code, 2);
  const help = await run(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: natpunch/);
});

test('every failure line ends with its [CODE], also for errors that are not NatpunchErrors', async () => {
  const r = await run(['stun', 'bad host name with spaces:1']);
  assert.equal(r.code, 1);
  assert.match(oneLine(r.stderr)[0]!, /^natpunch: .+ \[[A-Z_]+\]$/);
});
