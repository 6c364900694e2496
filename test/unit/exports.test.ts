// The package's subpath exports follow the source folders: every entry in package.json "exports" names a built file
// and its types, both compiled from src/<folder>/index.ts; the lab is reachable only as natpunch/lab.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { join } from 'node:path';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  exports: Record<string, string | { types: string; import: string }>;
};

const entries = Object.entries(pkg.exports).filter(
  (e): e is [string, { types: string; import: string }] => typeof e[1] !== 'string',
);

test('every subpath export has types and a module compiled from src/', async () => {
  assert.ok(entries.length >= 10);
  for (const [name, target] of entries) {
    assert.match(target.import, /^\.\/dist\/.+\.js$/, name);
    assert.equal(target.types, target.import.replace(/\.js$/, '.d.ts'), `${name}: types next to the module`);
    const source = join(ROOT, target.import.replace(/^\.\/dist\//, 'src/').replace(/\.js$/, '.ts'));
    assert.ok(existsSync(source), `${name}: ${source} exists`);
    const mod = (await import(pathToFileURL(source).href)) as Record<string, unknown>;
    assert.ok(Object.keys(mod).length > 0, `${name} exports something`);
  }
});

test('the issue-named subpaths exist, and the lab is not in the root export', async () => {
  for (const name of ['.', './stun', './turn', './portmap', './lab', './rendezvous'])
    assert.ok(pkg.exports[name], name);
  const root = (await import(pathToFileURL(join(ROOT, 'src', 'index.ts')).href)) as Record<string, unknown>;
  assert.equal(root.Lab, undefined);
  assert.equal(typeof root.connect, 'function');
  const lab = (await import(pathToFileURL(join(ROOT, 'src', 'lab', 'index.ts')).href)) as Record<string, unknown>;
  assert.equal(typeof lab.Lab, 'function');
  const stun = (await import(pathToFileURL(join(ROOT, 'src', 'stun', 'index.ts')).href)) as Record<string, unknown>;
  assert.equal(typeof stun.StunServer, 'function');
  assert.equal(typeof stun.encodeStun, 'function');
  const turn = (await import(pathToFileURL(join(ROOT, 'src', 'relay', 'index.ts')).href)) as Record<string, unknown>;
  assert.equal(typeof turn.TurnServer, 'function');
});
