// The package as a user gets it: `npm pack` (prepack builds dist/ and packs the prebuilt addon), then
// `npm install -g` of the tarball into a temporary prefix with --omit=dev (no tsx, no TypeScript), then the
// installed `natpunch` runs --help, keygen, serve + stun, and a listen/connect exchange, all on loopback.
// Offline when the npm cache holds the dependencies (--prefer-offline).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, existsSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startUntilLine, stop } from '../helpers/proc.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function sh(cmd: string, args: string[], cwd: string, timeout = 240_000) {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    timeout,
    env: { ...process.env, npm_config_update_notifier: 'false' },
  });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return r;
}

test(
  'the packed tarball installs globally without dev dependencies and its natpunch works',
  { timeout: 600_000 },
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'natpunch-pack-'));
    const children: ReturnType<typeof spawn>[] = [];
    t.after(async () => {
      for (const c of children) await stop(c);
      await rm(dir, { recursive: true, force: true });
    });

    // Pack a copy of the checkout: prepack builds dist/, and a dist/ appearing in the checkout itself while other
    // test files run would switch their `natpunch` child processes from src/ (tsx) to a half-written dist/.
    const copy = join(dir, 'checkout');
    const tracked = spawnSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' })
      .stdout.split('\0')
      .filter(Boolean);
    for (const f of tracked) if (existsSync(join(ROOT, f))) cpSync(join(ROOT, f), join(copy, f));
    // The built addon, which prepack ships as the linux-x64 prebuilt (scripts/prebuild-native.mjs), when there is one.
    if (existsSync(join(ROOT, 'native', 'build')))
      cpSync(join(ROOT, 'native', 'build'), join(copy, 'native', 'build'), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'));
    sh(NPM, ['pack', '--pack-destination', dir, '--silent'], copy);
    const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, 'npm pack wrote a tarball');
    const prefix = join(dir, 'prefix');
    sh(
      NPM,
      [
        'install',
        '-g',
        '--prefix',
        prefix,
        '--omit=dev',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        join(dir, tarball),
      ],
      dir,
    );

    const pkg = join(prefix, 'lib', 'node_modules', 'natpunch');
    const bin = join(prefix, 'bin', 'natpunch');
    assert.ok(existsSync(join(pkg, 'dist', 'cli', 'main.js')), 'dist/ is in the package');
    assert.ok(!existsSync(join(pkg, 'src')), 'no TypeScript sources in the package');
    for (const dev of ['tsx', 'esbuild', 'typescript']) {
      assert.ok(
        !existsSync(join(pkg, 'node_modules', dev)) && !existsSync(join(prefix, 'lib', 'node_modules', dev)),
        `${dev} is not installed`,
      );
    }
    for (const file of ['LICENSE', 'CHANGELOG.md', 'README.md'])
      assert.ok(existsSync(join(pkg, file)), `${file} is in the package`);

    // Every subpath export imports from the installed package, with its types beside it.
    const exportsMap = (
      JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as {
        exports: Record<string, string | { types: string }>;
      }
    ).exports;
    const subpaths = Object.keys(exportsMap).filter((k) => k !== './package.json');
    for (const k of subpaths)
      assert.ok(existsSync(join(pkg, (exportsMap[k] as { types: string }).types)), `types of ${k}`);
    const importAll = subpaths
      .map((k) => `await import(${JSON.stringify(k === '.' ? 'natpunch' : `natpunch/${k.slice(2)}`)});`)
      .join('');
    const imported = spawnSync(process.execPath, ['--input-type=module', '-e', importAll], {
      cwd: join(prefix, 'lib'),
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(imported.status, 0, imported.stderr);

    const run = (args: string[]) => spawnSync(bin, args, { cwd: dir, encoding: 'utf8', timeout: 30_000 });
    const help = run(['--help']);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /Usage: natpunch/);
    assert.match(help.stdout, /connect/);

    const keygen = run(['keygen', '--json']);
    assert.equal(keygen.status, 0, keygen.stderr);
    assert.match((JSON.parse(keygen.stdout) as { publicKey: string }).publicKey, /^[0-9a-f]{64}$/);

    const serve = await startUntilLine(bin, ['serve', '--port', '0', '--address', '127.0.0.1', '--json'], (l) =>
      l.includes('"event":"listening"'),
    );
    children.push(serve.child);
    const port = (JSON.parse(serve.line) as { udp: { port: number }[] }).udp[0]!.port;

    const stun = run(['stun', `127.0.0.1:${port}`, '--json']);
    assert.equal(stun.status, 0, stun.stderr);
    assert.equal((JSON.parse(stun.stdout) as { mapped: { address: string } }).mapped.address, '127.0.0.1');

    // listen/connect: each side sends one line and ends its input; both exit 0 with the other's line.
    const rendezvous = `127.0.0.1:${port}`;
    const listener = spawn(bin, ['listen', '--rendezvous', rendezvous, '--name', 'alice'], {
      cwd: dir,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.push(listener);
    let listenOut = '';
    let listenErr = '';
    listener.stdout!.on('data', (d) => (listenOut += d));
    listener.stderr!.on('data', (d) => (listenErr += d));
    await new Promise<void>((resolve, reject) => {
      listener.stderr!.on('data', () => {
        if (/^listening as alice/m.test(listenErr)) resolve();
      });
      listener.once('exit', (code) => reject(new Error(`listen exited with ${code}: ${listenErr}`)));
    });
    listener.stdin!.end('from alice\n');

    const connector = spawn(bin, ['connect', 'alice', '--rendezvous', rendezvous], {
      cwd: dir,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.push(connector);
    let connectOut = '';
    let connectErr = '';
    connector.stdout!.on('data', (d) => (connectOut += d));
    connector.stderr!.on('data', (d) => (connectErr += d));
    connector.stdin!.end('from bob\n');
    const listenerExit = once(listener, 'exit');
    // A connector that fails ends the test at once with its error (the listener would wait for a peer forever).
    const [connectCode] = (await once(connector, 'exit')) as [number];
    assert.equal(connectCode, 0, connectErr);
    const [listenCode] = (await listenerExit) as [number];
    assert.equal(listenCode, 0, listenErr);
    assert.match(connectOut, /from alice/);
    assert.match(listenOut, /from bob/);
  },
);
