// The benches measure the compiled server, as an installed package runs it: bin/natpunch.js runs dist/ when it is up
// to date and src/ through tsx otherwise, and tsx adds ~40 MiB of RSS and its own CPU to a server. So a bench that
// starts `natpunch serve` compiles dist/ first when it is missing or older than src/ (tsc, ~10-20 s).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './harness.js';

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Compiles dist/ unless it is newer than every file under src/. Returns how the server will run. */
export function ensureBuilt(): 'dist' {
  const compiled = join(ROOT, 'dist', 'cli', 'main.js');
  if (existsSync(compiled) && statSync(compiled).mtimeMs >= newestMtime(join(ROOT, 'src'))) return 'dist';
  console.error('bench: compiling dist/ (npm run build) so the server runs as installed');
  const r = spawnSync(
    process.execPath,
    [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'],
    {
      cwd: ROOT,
      stdio: 'inherit',
    },
  );
  if (r.status !== 0) throw new Error('npm run build failed: the bench would measure the server through tsx');
  return 'dist';
}
