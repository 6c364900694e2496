// Every command's --json output follows the one rule (docs/cli.md, "Events"): one JSON object a line, each with
// `time` and `event`, on stdout, or on stderr for the commands whose stdout carries data (listen and connect: the
// peer's bytes; keygen without --out: the key file), and nothing else on that stream; failures are
// {"event":"error","code"} there too, with exit code 1. Everything runs on loopback (a `natpunch serve` child).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect as tcpConnect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { generateKeyPair, keyToId, saveKeyPair } from '../../src/session/identity.js';
import { NATPUNCH, stop } from '../helpers/proc.js';

type Event = { time: string; event: string; [field: string]: unknown };

/** The events on one stream; fails the test on any line that is not an event of the schema. */
function events(text: string, what: string): Event[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((line) => {
      let e: unknown;
      try {
        e = JSON.parse(line);
      } catch {
        assert.fail(`${what}: not a JSON line: ${line}`);
      }
      assert.ok(e !== null && typeof e === 'object' && !Array.isArray(e), `${what}: not an object: ${line}`);
      const ev = e as Event;
      assert.equal(typeof ev.event, 'string', `${what}: no event: ${line}`);
      assert.ok(!Number.isNaN(Date.parse(ev.time)) && /^\d{4}-\d\d-\d\dT/.test(ev.time), `${what}: time: ${line}`);
      assert.ok(!('phase' in ev), `${what}: a phase field: ${line}`);
      return ev;
    });
}

const names = (es: Event[]) => es.map((e) => e.event);

/** Runs the CLI to its end without blocking this process. */
function run(args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [NATPUNCH, ...args],
      { timeout: 30_000, env: { ...process.env, NATPUNCH_KEY: '', ...env } },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** A long-running CLI process whose output is watched as it arrives. */
function start(args: string[], stdin: 'pipe' | 'ignore' = 'ignore') {
  const child = spawn(process.execPath, [NATPUNCH, ...args], {
    stdio: [stdin, 'pipe', 'pipe'],
    env: { ...process.env, NATPUNCH_KEY: '' },
  });
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out.stderr += d.toString()));
  return { child, out };
}

/** Resolves with the first event named `name` on the child's `stream`, checked on each chunk it writes (no polling). */
function eventOn(
  p: { child: ChildProcess; out: { stdout: string; stderr: string } },
  stream: 'stdout' | 'stderr',
  name: string,
  ms = 20_000,
): Promise<Event> {
  return new Promise((resolve, reject) => {
    const source = p.child[stream]!;
    const check = () => {
      const complete = p.out[stream].slice(0, p.out[stream].lastIndexOf('\n') + 1);
      const found = events(complete, `${stream} of ${p.child.spawnargs.slice(2, 3).join(' ')}`).find(
        (e) => e.event === name,
      );
      if (found) finish(found);
    };
    const onExit = () => finish(undefined, new Error(`exited before ${name}: ${p.out.stdout} ${p.out.stderr}`));
    const timer = setTimeout(() => finish(undefined, new Error(`no ${name} event: ${p.out[stream]}`)), ms);
    const finish = (e?: Event, err?: Error) => {
      clearTimeout(timer);
      source.off('data', onData);
      p.child.off('exit', onExit);
      if (e) resolve(e);
      else reject(err);
    };
    // Runs after the collector above (registered first), so p.out already holds the chunk.
    const onData = () => {
      try {
        check();
      } catch (err) {
        finish(undefined, err as Error);
      }
    };
    source.on('data', onData);
    p.child.once('exit', onExit);
    check();
  });
}

test('keygen, stun, netcheck, map, trust, forget, turn, serve, lab status', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'natpunch-json-'));
  const serve = start(['serve', '--port', '0', '--address', '127.0.0.1', '--json']);
  const silent = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  try {
    const listening = await eventOn(serve, 'stdout', 'listening');
    const port = (listening.udp as Array<{ port: number }>)[0]!.port;
    const server = `127.0.0.1:${port}`;

    await t.test('keygen: --out → stdout; no --out → the key file on stdout, the event on stderr', async () => {
      let r = await run(['keygen', '--out', join(dir, 'k.json'), '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(names(events(r.stdout, 'keygen --out stdout')), ['key']);
      r = await run(['keygen', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const file = JSON.parse(r.stdout) as { publicKey: string; secretKey: string };
      const [key] = events(r.stderr, 'keygen stderr');
      assert.equal(key!.publicKey, file.publicKey);
    });

    await t.test('stun: the mapped address; a closed port is an error event', async () => {
      let r = await run(['stun', server, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(names(events(r.stdout, 'stun')), ['mapped']);
      r = await run(['stun', '127.0.0.1:1', '--json']);
      assert.equal(r.code, 1);
      assert.deepEqual(
        events(r.stdout, 'stun closed').map((e) => [e.event, e.code]),
        [['error', 'UNREACHABLE']],
      );
    });

    await t.test('netcheck: the report; a silent server adds an error event and exit 1', async () => {
      let r = await run(['netcheck', '--server', server, '--no-port-mapping', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const checked = names(events(r.stdout, 'netcheck'));
      assert.ok(checked.includes('probe'), `${checked}`);
      assert.deepEqual(
        checked.filter((e) => e !== 'probe'),
        ['report'],
      );
      const quiet = `127.0.0.1:${silent.address().port}`;
      r = await run(['netcheck', '--server', quiet, '--no-port-mapping', '--no-tcp', '--timeout', '1500', '--json']);
      assert.equal(r.code, 1);
      assert.deepEqual(
        events(r.stdout, 'netcheck silent')
          .filter((e) => e.event !== 'probe')
          .map((e) => [e.event, e.code]),
        [
          ['report', undefined],
          ['error', 'STUN_TIMEOUT'],
        ],
      );
    });

    await t.test('map: a refused command line is an error event (nothing is sent)', async () => {
      const r = await run(['map', '5000', '--udp', '--tcp', '--json']);
      assert.equal(r.code, 1);
      assert.deepEqual(
        events(r.stdout, 'map').map((e) => [e.event, e.code]),
        [['error', 'BAD_ARGUMENT']],
      );
    });

    await t.test('trust and forget', async () => {
      const file = join(dir, 'known_peers');
      const key = keyToId(generateKeyPair().publicKey);
      let r = await run(['trust', 'alice', key, '--known-peers', file, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(names(events(r.stdout, 'trust')), ['trusted']);
      r = await run(['forget', 'alice', '--known-peers', file, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(names(events(r.stdout, 'forget')), ['forgotten']);
    });

    await t.test('turn serve, turn credentials, serve --print-config, lab status', async () => {
      let r = await run(['turn', 'credentials', '--auth-secret', 's3cret', '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(names(events(r.stdout, 'turn credentials')), ['credentials']);
      const turn = start([
        'turn',
        'serve',
        '--port',
        '0',
        '--address',
        '127.0.0.1',
        '--auth-secret',
        's3cret',
        '--json',
      ]);
      await eventOn(turn, 'stdout', 'listening');
      await stop(turn.child);
      assert.deepEqual(names(events(turn.out.stdout, 'turn serve')), ['listening']);
      r = await run(['serve', '--print-config', '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(names(events(r.stdout, 'serve --print-config')), ['config']);
      // Root or not, one event: the labs on this machine, or the error saying why there can be none.
      r = await run(['lab', 'status', '--json']);
      assert.deepEqual(names(events(r.stdout, 'lab status')), [r.code === 0 ? 'labs' : 'error']);
    });
  } finally {
    silent.close();
    await stop(serve.child);
    await rm(dir, { recursive: true, force: true });
  }
  assert.deepEqual(names(events(serve.out.stdout, 'serve')), ['listening']);
});

test('listen / connect: events on stderr (stdout carries the data), expose / forward / socks: on stdout', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'natpunch-json-'));
  const serve = start(['serve', '--port', '0', '--address', '127.0.0.1', '--json']);
  const echo = createServer((s) => s.pipe(s)).listen(0, '127.0.0.1');
  const procs = [serve];
  try {
    await once(echo, 'listening');
    const listening = await eventOn(serve, 'stdout', 'listening');
    const rv = `127.0.0.1:${(listening.udp as Array<{ port: number }>)[0]!.port}`;
    const bob = generateKeyPair();
    await saveKeyPair(join(dir, 'bob.key'), bob);

    // listen / connect: one line each way; the data is all of stdout, the events all of stderr.
    const l = start(['listen', '--name', 'alice', '--rendezvous', rv, '--allow-any', '--json'], 'pipe');
    procs.push(l);
    await eventOn(l, 'stderr', 'listening');
    l.child.stdin!.end('to bob\n');
    const c = start(['connect', 'alice', '--rendezvous', rv, '--key', join(dir, 'bob.key'), '--json'], 'pipe');
    procs.push(c);
    c.child.stdin!.end('to alice\n');
    const [[cCode], [lCode]] = (await Promise.all([once(c.child, 'exit'), once(l.child, 'exit')])) as [
      [number],
      [number],
    ];
    assert.equal(cCode, 0, c.out.stderr);
    assert.equal(lCode, 0, l.out.stderr);
    assert.equal(c.out.stdout, 'to bob\n');
    assert.equal(l.out.stdout, 'to alice\n');
    const ce = names(events(c.out.stderr, 'connect stderr'));
    const le = names(events(l.out.stderr, 'listen stderr'));
    for (const name of ['gathering', 'path', 'connected', 'pinned']) assert.ok(ce.includes(name), `${name}: ${ce}`);
    for (const name of ['temporary-key', 'registered', 'listening']) assert.ok(le.includes(name), `${name}: ${le}`);
    assert.equal(ce.filter((e) => e === 'path').length, 1, 'the chosen path once');

    // expose / forward / socks: events on stdout, a TCP connection through the forward.
    const exp = start([
      'expose',
      String((echo.address() as AddressInfo).port),
      '--name',
      'home',
      '--allow-any',
      '--rendezvous',
      rv,
      '--json',
    ]);
    procs.push(exp);
    await eventOn(exp, 'stdout', 'exposing');
    await eventOn(exp, 'stdout', 'registered');
    const remotePort = String((echo.address() as AddressInfo).port);
    const fwd = start(['forward', `127.0.0.1:0:home:${remotePort}`, '--rendezvous', rv, '--json']);
    procs.push(fwd);
    const forwarding = await eventOn(fwd, 'stdout', 'forwarding');
    const sock = tcpConnect((forwarding.listen as { port: number }).port, '127.0.0.1');
    sock.end('ping');
    const [echoed] = (await once(sock, 'data')) as [Buffer];
    assert.equal(echoed.toString(), 'ping');
    await eventOn(fwd, 'stdout', 'close');
    const socks = start(['socks', '--listen', '127.0.0.1:0', '--via', 'home', '--rendezvous', rv, '--json']);
    procs.push(socks);
    await eventOn(socks, 'stdout', 'socks-listening');
    for (const p of [exp, fwd, socks]) {
      await stop(p.child, 'SIGINT');
      const es = names(events(p.out.stdout, `${p.child.spawnargs[2]} stdout`));
      assert.ok(es.includes('temporary-key'), `${p.child.spawnargs[2]}: ${es}`);
    }
  } finally {
    for (const p of procs) await stop(p.child);
    echo.close();
    await rm(dir, { recursive: true, force: true });
  }
});
