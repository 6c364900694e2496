import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sharedSecretPassword } from '../../src/relay/auth.js';

const NATPUNCH = ['bin/natpunch.js'];

test('CLI: `natpunch serve --turn --json` + `natpunch turn allocate --json` (UDP, TCP relay) + `natpunch turn credentials`', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'natpunch-turn-cli-'));
  const users = join(dir, 'users');
  writeFileSync(users, 'alice:pw\n');
  const server = spawn(
    process.execPath,
    [
      ...NATPUNCH,
      'serve',
      '--turn',
      '--no-rendezvous',
      '--port',
      '0',
      '--address',
      '127.0.0.1',
      '--users',
      users,
      '--json',
    ],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      const t = setTimeout(() => reject(new Error('serve did not start')), 20_000);
      server.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) {
          clearTimeout(t);
          resolve((JSON.parse(line) as { udp: Array<{ port: number }> }).udp[0]!.port);
        }
      });
      server.once('exit', () => reject(new Error('serve exited')));
    });
    const run = (args: string[]) =>
      spawnSync(process.execPath, [...NATPUNCH, ...args], { encoding: 'utf8', timeout: 30_000 });
    const udp = run(['turn', 'allocate', `127.0.0.1:${port}`, '--user', 'alice', '--password', 'pw', '--json']);
    assert.equal(udp.status, 0, udp.stderr);
    const u = JSON.parse(udp.stdout) as { relayed: string[]; transport: string; lifetime: number };
    assert.match(u.relayed[0]!, /^127\.0\.0\.1:\d+$/);
    assert.equal(u.lifetime, 600);
    const tcp = run([
      'turn',
      'allocate',
      `127.0.0.1:${port}`,
      '--user',
      'alice',
      '--password',
      'pw',
      '--tcp-relay',
      '--json',
    ]);
    assert.equal(tcp.status, 0, tcp.stderr);
    assert.equal((JSON.parse(tcp.stdout) as { relayTransport: string }).relayTransport, 'tcp');
    const bad = run(['turn', 'allocate', `127.0.0.1:${port}`, '--user', 'alice', '--password', 'nope']);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^natpunch: .*401/m);
    assert.equal(bad.stderr.split('\n').filter((l) => l.startsWith('natpunch:')).length, 1, 'one error line, no stack');
    assert.ok(!/\bat .+:\d+:\d+/.test(bad.stderr), 'no stack trace');
    const creds = run(['turn', 'credentials', '--auth-secret', 's3cret', '--user', 'bob', '--ttl', '60', '--json']);
    assert.equal(creds.status, 0, creds.stderr);
    const c = JSON.parse(creds.stdout) as { username: string; password: string };
    assert.match(c.username, /^\d+:bob$/);
    assert.equal(c.password, sharedSecretPassword('s3cret', c.username));
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
});
