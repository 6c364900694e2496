// Names pinned to keys on the client (issue 18): known_peers (trust on first use), trust/forget, --peer-key, and the
// attacker's view: a rendezvous that answers "alice" with mallory's registration gets no byte to mallory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile, mkdir, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, listen, type Listener } from '../../src/natpunch.js';
import { UdxEndpoint } from '../../src/net/udx.js';
import { KnownPeers } from '../../src/identity/known-peers.js';
import { ensurePrivateDir } from '../../src/identity/home.js';
import { MemoryRegistry, type PeerRecord } from '../../src/rendezvous/registry.js';
import { generateKeyPair, keyToId, type KeyPair } from '../../src/session/identity.js';
import type { Session } from '../../src/session/session.js';
import { isNatpunchError, type NatpunchError } from '../../src/util/errors.js';
import { startServer } from './rendezvous-harness.js';
import { NATPUNCH, waitForOutput } from '../helpers/proc.js';

const LOOPBACK = { address: '127.0.0.1' };

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'natpunch-known-'));
}

test('known_peers: first use pins, the same key passes, another key is refused with both keys and the fix', async () => {
  const dir = await tempDir();
  try {
    const file = join(dir, 'sub', 'known_peers');
    const peers = new KnownPeers({ file });
    const a = generateKeyPair().publicKey;
    const m = generateKeyPair().publicKey;
    assert.equal(await peers.check('alice', a), 'new');
    await peers.remember('alice', a);
    assert.equal((await stat(file)).mode & 0o777, 0o600, 'the pin file is 0600');
    assert.equal((await stat(join(dir, 'sub'))).mode & 0o777, 0o700, 'a directory it creates is 0700');
    assert.equal(await peers.check('alice', a), 'pinned');
    const err = (await peers.check('alice', m).then(
      () => null,
      (e: unknown) => e,
    )) as NatpunchError;
    assert.ok(isNatpunchError(err, 'PEER_KEY_CHANGED'), String(err));
    assert.ok(err.message.includes(keyToId(a)) && err.message.includes(keyToId(m)), 'both keys shown');
    assert.ok(err.message.includes(`natpunch trust alice ${keyToId(m)}`), 'how to accept the change');
    assert.ok(err.message.includes('natpunch forget alice'));
    assert.ok(!err.message.includes('\n'), 'one line');
    // remember() never replaces an existing pin; trust() does, forget() removes.
    await peers.remember('alice', m);
    assert.equal((await peers.get('alice'))?.key, keyToId(a));
    assert.equal(await peers.trust('alice', keyToId(m)), keyToId(a));
    assert.equal(await peers.check('alice', m), 'pinned');
    assert.equal(await peers.forget('alice'), keyToId(m));
    assert.equal(await peers.forget('alice'), null);
    assert.equal(await peers.check('alice', a), 'new');
    // A hand-edited file with a bad line is an error naming the line, not a silently ignored pin.
    await writeFile(file, `# comment\nbob ${keyToId(a)}\nbroken line here\n`);
    const bad = await peers.check('bob', a).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isNatpunchError(bad, 'BAD_ARGUMENT') && /known_peers:3/.test(bad.message), String(bad));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('~/.natpunch: created 0700; an existing 0755 one is tightened with a warning', async () => {
  const dir = await tempDir();
  try {
    const home = join(dir, '.natpunch');
    const warnings: string[] = [];
    assert.equal(await ensurePrivateDir(home, (l) => warnings.push(l)), false);
    assert.equal((await stat(home)).mode & 0o777, 0o700);
    await chmod(home, 0o755);
    assert.equal(await ensurePrivateDir(home, (l) => warnings.push(l)), true);
    assert.equal((await stat(home)).mode & 0o777, 0o700);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /mode 755; changed to 700/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** A rendezvous whose registry answers lookups for `victim` with `impostor`'s registration while `lie` is on. */
class LyingRegistry extends MemoryRegistry {
  lie: { victim: string; impostor: Buffer } | null = null;
  override async getByName(name: string, now: number): Promise<PeerRecord | undefined> {
    if (this.lie && name === this.lie.victim) return this.get(this.lie.impostor, now);
    return super.getByName(name, now);
  }
}

/** Everything an endpoint sends, by destination port. */
function recordSends(ep: UdxEndpoint): number[] {
  const ports: number[] = [];
  const send = ep.send.bind(ep);
  ep.send = (msg, port, address, ttl) => {
    ports.push(port);
    send(msg, port, address, ttl);
  };
  return ports;
}

async function named(kp: KeyPair, name: string, port: number): Promise<Listener> {
  const l = await listen({
    keyPair: kp,
    name,
    rendezvous: { host: '127.0.0.1', port },
    bind: LOOPBACK,
    transport: 'udp',
  });
  l.on('session', (s: Session) => s.on('stream', (st: NodeJS.ReadWriteStream) => st.pipe(st)));
  return l;
}

test('attacker: a rendezvous that substitutes mallory\'s key for "alice" → PEER_KEY_CHANGED, and no byte reaches mallory', async () => {
  const registry = new LyingRegistry();
  const srv = await startServer({ registry });
  const dir = await tempDir();
  const alice = generateKeyPair();
  const mallory = generateKeyPair();
  const bob = generateKeyPair();
  const knownPeers = new KnownPeers({ file: join(dir, 'known_peers') });
  const la = await named(alice, 'alice', srv.port);
  const lm = await named(mallory, 'mallory', srv.port);
  const mallorySessions: Session[] = [];
  lm.on('session', (s: Session) => mallorySessions.push(s));
  try {
    // First contact through the honest rendezvous: the session works and "alice" is pinned to alice's key.
    const first = await connect({
      keyPair: bob,
      to: 'alice',
      rendezvous: { host: '127.0.0.1', port: srv.port },
      bind: LOOPBACK,
      transport: 'udp',
      knownPeers,
    });
    assert.equal(keyToId(first.remotePublicKey), keyToId(alice.publicKey));
    await first.close();
    assert.equal((await knownPeers.get('alice'))?.key, keyToId(alice.publicKey));
    assert.match(
      await readFile(join(dir, 'known_peers'), 'utf8'),
      new RegExp(`^alice ${keyToId(alice.publicKey)}$`, 'm'),
    );

    // Now the rendezvous lies. Bob's socket is ours so every datagram it sends is seen.
    registry.lie = { victim: 'alice', impostor: mallory.publicKey };
    const ep = await UdxEndpoint.bind(LOOPBACK);
    const sent = recordSends(ep);
    try {
      const err = await connect({
        keyPair: bob,
        to: 'alice',
        rendezvous: { host: '127.0.0.1', port: srv.port },
        endpoint: ep,
        transport: 'udp',
        knownPeers,
      }).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(isNatpunchError(err, 'PEER_KEY_CHANGED'), String(err));
      assert.ok(
        (err as Error).message.includes(keyToId(mallory.publicKey)) &&
          (err as Error).message.includes(keyToId(alice.publicKey)),
      );
      // The rendezvous' ports: its own, and port + 1 where it answers STUN for the NAT measurement, which a cold
      // connect runs behind its CONNECT (docs/connecting.md).
      assert.ok(
        sent.length > 0 && sent.every((p) => p === srv.port || p === srv.port + 1),
        `bob sent only to the rendezvous (ports ${[...new Set(sent)].join(', ')}; mallory is on ${lm.endpoint.address().port})`,
      );
      assert.ok(!sent.includes(lm.endpoint.address().port));
    } finally {
      await ep.close();
    }

    // An explicit key pins the rendezvous path too (no known_peers needed): PEER_KEY_MISMATCH, nothing to mallory.
    const ep2 = await UdxEndpoint.bind(LOOPBACK);
    const sent2 = recordSends(ep2);
    try {
      const err = await connect({
        keyPair: bob,
        to: { name: 'alice', key: alice.publicKey },
        rendezvous: { host: '127.0.0.1', port: srv.port },
        endpoint: ep2,
        transport: 'udp',
      }).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(isNatpunchError(err, 'PEER_KEY_MISMATCH'), String(err));
      assert.ok(
        sent2.every((p) => p === srv.port || p === srv.port + 1),
        `ports ${[...new Set(sent2)].join(', ')}`,
      );
    } finally {
      await ep2.close();
    }
    assert.equal(mallorySessions.length, 0);

    // The pin still holds; after the user accepts mallory's key on purpose (`trust`), the same lie connects.
    await knownPeers.trust('alice', mallory.publicKey);
    const s = await connect({
      keyPair: bob,
      to: 'alice',
      rendezvous: { host: '127.0.0.1', port: srv.port },
      bind: LOOPBACK,
      transport: 'udp',
      knownPeers,
    });
    assert.equal(keyToId(s.remotePublicKey), keyToId(mallory.publicKey));
    await s.close();
  } finally {
    await la.close();
    await lm.close();
    await srv.close();
    await rm(dir, { recursive: true, force: true });
  }
});

/** The named fields of a JSON event (the CLI's event printer adds e.g. `time`). */
function pick(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, o[k]]));
}

test('natpunch trust / forget: --json, --known-peers, --help, one-line errors', async () => {
  const dir = await tempDir();
  try {
    const file = join(dir, 'kp');
    const key = keyToId(generateKeyPair().publicKey);
    const run = (args: string[]) =>
      spawnSync(process.execPath, [NATPUNCH, ...args], { encoding: 'utf8', timeout: 20_000 });
    let r = run(['trust', 'alice', key, '--known-peers', file, '--json']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(pick(JSON.parse(r.stdout), ['event', 'name', 'key', 'previousKey', 'file']), {
      event: 'trusted',
      name: 'alice',
      key,
      previousKey: null,
      file,
    });
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    r = run(['forget', 'alice', '--known-peers', file, '--json']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(pick(JSON.parse(r.stdout), ['event', 'name', 'removedKey', 'file']), {
      event: 'forgotten',
      name: 'alice',
      removedKey: key,
      file,
    });
    r = run(['forget', 'alice', '--known-peers', file]);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /alice was not pinned/);
    r = run(['trust', 'alice', 'nothex', '--known-peers', file]);
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /not a peer key/);
    for (const cmd of ['trust', 'forget']) {
      r = run([cmd, '--help']);
      assert.equal(r.status, 0);
      assert.match(r.stdout, /--known-peers/);
      assert.match(r.stdout, /--json/);
    }
    // The default file lives in NATPUNCH_HOME (tests never touch the user's ~/.natpunch).
    const home = join(dir, 'home');
    await mkdir(home);
    r = spawnSync(process.execPath, [NATPUNCH, 'trust', 'bob', key, '--json'], {
      encoding: 'utf8',
      timeout: 20_000,
      env: { ...process.env, NATPUNCH_HOME: home },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).file, join(home, 'known_peers'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test(
  'CLI: connect NAME refuses a key other than the pinned one (one line, both keys, the fix); after forget it pins anew',
  { timeout: 90_000 },
  async () => {
    const { startServer: startServe } = await import('../../src/server/serve.js');
    const { spawn } = await import('node:child_process');
    const server = await startServe({ port: 0, addresses: ['127.0.0.1'] });
    const dir = await tempDir();
    const children: Array<import('node:child_process').ChildProcess> = [];
    try {
      const rv = `127.0.0.1:${server.udp[0]!.port}`;
      const file = join(dir, 'known_peers');
      const alice = generateKeyPair();
      const { saveKeyPair } = await import('../../src/session/identity.js');
      await saveKeyPair(join(dir, 'alice.key'), alice);
      const l = spawn(
        process.execPath,
        [
          NATPUNCH,
          'listen',
          '--name',
          'alice',
          '--rendezvous',
          rv,
          '--key',
          join(dir, 'alice.key'),
          '--allow-any',
          '--transport',
          'udp',
        ],
        { stdio: ['pipe', 'pipe', 'pipe'] },
      );
      children.push(l);
      let lerr = '';
      l.stderr!.on('data', (d: Buffer) => (lerr += d.toString()));
      await waitForOutput(
        l,
        () => lerr,
        (t) => t.includes('registered:'),
        'the listener to register',
      );
      l.stdin!.end('from alice\n');

      const someone = keyToId(generateKeyPair().publicKey);
      // Asynchronous: the rendezvous runs in this process and must keep serving while the CLI runs.
      const run = (args: string[]) =>
        new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
          const c = spawn(process.execPath, [NATPUNCH, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
          children.push(c);
          let stdout = '';
          let stderr = '';
          c.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
          c.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
          c.once('exit', (status) => resolve({ status, stdout, stderr }));
          c.stdin!.end('from bob\n');
        });
      assert.equal((await run(['trust', 'alice', someone, '--known-peers', file])).status, 0);
      const refused = await run(['connect', 'alice', '--rendezvous', rv, '--known-peers', file, '--transport', 'udp']);
      assert.equal(refused.status, 1, refused.stderr);
      const last = refused.stderr.trim().split('\n').at(-1)!;
      assert.match(last, /\[PEER_KEY_CHANGED\]$/);
      assert.ok(last.includes(someone) && last.includes(keyToId(alice.publicKey)), last);
      assert.ok(last.includes(`natpunch trust alice ${keyToId(alice.publicKey)}`), last);

      assert.equal((await run(['forget', 'alice', '--known-peers', file])).status, 0);
      const ok = await run(['connect', 'alice', '--rendezvous', rv, '--known-peers', file, '--transport', 'udp']);
      assert.equal(ok.status, 0, ok.stderr);
      assert.equal(ok.stdout, 'from alice\n');
      assert.match(ok.stderr, /pinned "alice" to key [0-9a-f]{64}/);
      assert.equal((await new KnownPeers({ file }).get('alice'))?.key, keyToId(alice.publicKey));
    } finally {
      for (const c of children) c.kill('SIGKILL');
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test(
  "the ICMP fallback of connect by name needs the name's key (given or pinned): no unauthenticated fallback",
  { timeout: 60_000 },
  async () => {
    // Nothing listens on the discard port: the rendezvous is unreachable, so connect() would fall back to ICMP.
    const err = await connect({
      keyPair: generateKeyPair(),
      to: 'alice',
      rendezvous: { host: '127.0.0.1', port: 9 },
      bind: LOOPBACK,
      transport: 'udp',
      icmp: { server: '127.0.0.1' },
      timeoutMs: 20_000,
    }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isNatpunchError(err, 'PEER_KEY_MISMATCH'), String(err));
    assert.match((err as Error).message, /ICMP hole punching cannot check who "alice" is/);
  },
);
