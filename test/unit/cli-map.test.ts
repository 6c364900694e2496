import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// Only argument errors here: each is rejected before any packet is sent. The lab test drives real mappings.
const CLI = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });

test('natpunch map rejects bad arguments with one line and exit code 1, before touching the network', () => {
  for (const [args, re] of [
    [['map', '0'], /PORT must be an integer from 1 to 65535/],
    [['map', '70000'], /PORT must be an integer/],
    [['map', '5000', '--udp', '--tcp'], /choose one of --udp and --tcp \[BAD_ARGUMENT\]/],
    [['map', '5000', '--protocol', 'smtp'], /Allowed choices are pcp, natpmp, upnp/],
    [['map', '5000', '--lifetime', '0'], /--lifetime must be an integer from 1 to 604800/],
    [['map', '5000', '--gateway', 'router.lan'], /gateway "router.lan" is not an IP address \[BAD_ARGUMENT\]/],
  ] as const) {
    const r = run([...args]);
    assert.notEqual(r.status, 0, args.join(' '));
    assert.match(r.stderr, re, args.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('natpunch map --help lists the flags the issue names', () => {
  const r = run(['map', '--help']);
  assert.equal(r.status, 0);
  for (const flag of ['<PORT>', '--udp', '--tcp', '--lifetime <S>', '--protocol <P>', '--gateway <IP>', '--json']) {
    assert.ok(r.stdout.includes(flag), flag);
  }
});
