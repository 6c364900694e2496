#!/usr/bin/env node
// Runs the compiled CLI (dist/) whenever it is built and up to date; that is what an installed package has, and it
// starts fast. In a source checkout where dist/ is missing or older than a file under src/, the TypeScript runs
// directly through tsx (a devDependency) so an edit takes effect without a build. `npm run build` makes the checkout
// start as fast as the package. NATPUNCH_FROM_SOURCE=1 forces tsx, NATPUNCH_FROM_SOURCE=0 forces dist/.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = join(import.meta.dirname, '..');
const compiled = join(root, 'dist', 'cli', 'main.js');
const sourceDir = join(root, 'src');

/** Newest modification time under dir (ms); ~200 stat calls, a few milliseconds. */
function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    const t = entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs;
    if (t > newest) newest = t;
  }
  return newest;
}

function useSource() {
  const forced = process.env.NATPUNCH_FROM_SOURCE;
  if (forced === '1') return true;
  if (forced === '0' || !existsSync(sourceDir)) return false;
  if (!existsSync(compiled)) return true;
  return newestMtime(sourceDir) > statSync(compiled).mtimeMs;
}

if (useSource()) {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write(
      'natpunch: dist/ is missing or older than src/ and tsx is not installed; run `npm run build`\n',
    );
    process.exit(1);
  }
  register();
  await import(pathToFileURL(join(sourceDir, 'cli', 'main.ts')).href);
} else {
  await import(pathToFileURL(compiled).href);
}
