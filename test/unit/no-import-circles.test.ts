// No import circles in src/ (the architecture's rule; issue 16 broke the last one: the hard punch called the public
// connect()/listen()). madge reads the TypeScript imports and lists every cycle it finds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = fileURLToPath(new URL('../..', import.meta.url));

test('src/ has no import circles (madge --circular)', async () => {
  const madge = fileURLToPath(new URL('../../node_modules/madge/bin/cli.js', import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, [madge, '--circular', '--json', '--extensions', 'ts', 'src'], { cwd: root, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
  const cycles = JSON.parse(stdout) as string[][];
  assert.deepEqual(cycles.map((c) => c.join(' → ')), [], 'import cycles');
});
