// Start-up time: `natpunch --help` imports no command and none of the library; a client command's import graph
// leaves out the heavy server-side and lab modules (bench/cli-start.bench.ts measures the time itself).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
// A module-loading hook that names every module the process loads (ESM and, through tsx, TypeScript).
const TRACE = `data:text/javascript,${encodeURIComponent(`
import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent('export async function load(url, ctx, next) { if (!url.startsWith("node:")) process.stderr.write("LOADED " + url + "\\\\n"); return next(url, ctx); }'));
`)}`;

/** The repository-relative modules (src/ or dist/, without extension) and package names a CLI run loads. */
function loaded(args: string[]): { ours: string[]; packages: string[] } {
  const r = spawnSync(process.execPath, ['--import', TRACE, BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  const urls = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('LOADED '))
    .map((l) => fileURLToPath(l.slice(7).split('?')[0]!));
  const ours = urls
    .filter((p) => p.startsWith(ROOT) && !p.includes('node_modules'))
    .map((p) =>
      p
        .slice(ROOT.length)
        .replace(/^(src|dist)\//, '')
        .replace(/\.(ts|js)$/, ''),
    );
  const packages = urls
    .filter((p) => p.includes('/node_modules/'))
    .map((p) => p.split('/node_modules/').pop()!.split('/').slice(0, 1).join('/'));
  return { ours, packages: [...new Set(packages)] };
}

test('natpunch --help lists the commands without importing any command or the library', () => {
  const { ours } = loaded(['--help']);
  const unexpected = ours.filter(
    (m) =>
      !['bin/natpunch', 'cli/main', 'cli/commands/index', 'cli/util', 'cli/event-stream', 'util/errors'].includes(m),
  );
  assert.deepEqual(unexpected, []);
});

test('connect and stun leave the lab, the UPnP XML parser, the TURN server and the rendezvous server out', () => {
  for (const args of [
    ['connect', '--help'],
    ['stun', '--help'],
  ]) {
    const { ours, packages } = loaded(args);
    assert.ok(ours.includes(`cli/commands/${args[0]}`), `${args[0]} was loaded: ${ours.join(' ')}`);
    const heavy = ours.filter((m) =>
      /^(lab\/|portmap\/upnp|relay\/server|rendezvous\/server|server\/|discovery\/netcheck)/.test(m),
    );
    assert.deepEqual(heavy, [], `${args.join(' ')} loads ${heavy.join(', ')}`);
    assert.ok(!packages.includes('fast-xml-parser'), `${args.join(' ')} loads fast-xml-parser`);
  }
});

test('serve without --admin leaves the metrics, the dashboard state and prom-client out', async () => {
  const { spawn } = await import('node:child_process');
  const child = spawn(
    process.execPath,
    ['--import', TRACE, BIN, 'serve', '--address', '127.0.0.1', '--port', '0', '--json'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('"listening"')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`serve exited (${code}): ${err}`)));
    });
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  const urls = err.split('\n').filter((l) => l.startsWith('LOADED '));
  assert.ok(
    urls.some((u) => /rendezvous\/server\.(ts|js)/.test(u)),
    'the rendezvous server was loaded',
  );
  const unwanted = urls.filter((u) =>
    /server\/(metrics|admin|dashboard|activity)\.(ts|js)|node_modules\/prom-client\//.test(u),
  );
  assert.deepEqual(unwanted, []);
});
