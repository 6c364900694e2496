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
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [madge, '--circular', '--json', '--extensions', 'ts', 'src'],
    { cwd: root, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
  );
  const cycles = JSON.parse(stdout) as string[][];
  assert.deepEqual(
    cycles.map((c) => c.join(' → ')),
    [],
    'import cycles',
  );
});

test('connect() and listen() stay thin wrappers over a one-shot Endpoint (≤ 40 lines each)', async () => {
  const { readFile } = await import('node:fs/promises');
  const src = await readFile(new URL('../../src/natpunch.ts', import.meta.url), 'utf8');
  for (const name of ['connect', 'listen']) {
    const start = src.indexOf(`export async function ${name}(`);
    assert.ok(start >= 0, name);
    const end = src.indexOf('\n}\n', start);
    const lines = src.slice(start, end + 2).split('\n').length;
    assert.ok(lines <= 40, `${name}() is ${lines} lines`);
  }
});
