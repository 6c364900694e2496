// The README's quick start, run as written: the lines between the quick-start markers in README.md are taken
// literally (so they cannot drift from what is tested); only the placeholders the README names change (HOST becomes
// 127.0.0.1, port 3478 a free port), and `natpunch` is this checkout's bin/natpunch.js on PATH. The server line runs
// in the background; the two peer lines run together and must both exit 0 within 5 s, each printing the other's line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stop } from '../helpers/proc.js';
import { freePort } from '../helpers/net.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The shell lines of the README's quick-start block, comments stripped. */
export async function quickStartLines(): Promise<string[]> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const block = /<!-- quick-start[^>]*-->\s*```sh\n([\s\S]*?)```\s*<!-- \/quick-start -->/.exec(readme);
  assert.ok(block, 'README.md has a quick-start block between <!-- quick-start --> markers');
  return block[1]!
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter(Boolean);
}

test(
  'the README quick start runs as written on loopback: both peers exchange their lines and exit 0 within 5 s',
  { timeout: 120_000 },
  async (t) => {
    const lines = await quickStartLines();
    assert.equal(lines.length, 3, `server, listen, connect: ${lines.join(' | ')}`);
    const port = await freePort();
    const local = (line: string) => line.replaceAll('HOST', '127.0.0.1').replaceAll('3478', String(port));
    const [serveLine, listenLine, connectLine] = lines.map(local) as [string, string, string];
    assert.match(serveLine, /^natpunch serve\b/);
    assert.match(listenLine, /\| natpunch listen\b/);
    assert.match(connectLine, /\| natpunch connect\b/);

    const pathDir = await mkdtemp(join(tmpdir(), 'natpunch-quickstart-'));
    t.after(() => rm(pathDir, { recursive: true, force: true }));
    await symlink(join(ROOT, 'bin', 'natpunch.js'), join(pathDir, 'natpunch'));
    const env = { ...process.env, PATH: `${pathDir}:${process.env.PATH}`, NATPUNCH_KEY: '' };
    const children: ChildProcess[] = [];
    t.after(async () => {
      for (const c of children) await stop(c);
    });
    // `exec` so the shell's PID is natpunch's and stop() reaches it.
    const sh = (line: string) => {
      const child = spawn('sh', ['-c', line.startsWith('natpunch ') ? `exec ${line}` : line], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: false,
      });
      children.push(child);
      let out = '';
      let err = '';
      child.stdout!.on('data', (d) => (out += d));
      child.stderr!.on('data', (d) => (err += d));
      return { child, out: () => out, err: () => err };
    };
    const waitFor = (p: ReturnType<typeof sh>, re: RegExp, what: string) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${what}: no ${re} within 20 s\n${p.out()}\n${p.err()}`)),
          20_000,
        );
        const check = () => {
          if (re.test(p.out() + p.err())) {
            clearTimeout(timer);
            resolve();
          }
        };
        p.child.stdout!.on('data', check);
        p.child.stderr!.on('data', check);
        p.child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`${what} exited with ${code}\n${p.out()}\n${p.err()}`));
        });
        check();
      });

    const server = sh(serveLine);
    await waitFor(server, /natpunch serve: STUN on/, 'serve');
    const listener = sh(listenLine);
    await waitFor(listener, /^listening as alice/m, 'listen');

    const t0 = performance.now();
    const connector = sh(connectLine);
    const listenerExit = once(listener.child, 'exit');
    // A connector that fails ends the test at once with its error (the listener would wait for a peer forever).
    const [connectCode] = (await once(connector.child, 'exit')) as [number];
    assert.equal(connectCode, 0, connector.err());
    const [listenCode] = (await listenerExit) as [number];
    const ms = performance.now() - t0;
    assert.equal(listenCode, 0, listener.err());
    assert.equal(connector.out(), 'hi bob\n');
    assert.equal(listener.out(), 'hi alice\n');
    assert.ok(ms < 5000, `the exchange took ${Math.round(ms)} ms`);
    // One printer, each event once: no progress line is printed twice (`path chosen` used to be).
    for (const side of [connector, listener]) {
      const lines = side.err().split('\n').filter(Boolean);
      assert.equal(new Set(lines).size, lines.length, side.err());
    }
  },
);
