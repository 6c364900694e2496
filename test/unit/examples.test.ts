// Every program in examples/ runs as its header says, on loopback: a `serve` composition in this process is the
// rendezvous and STUN server. The examples import `natpunch` by name; the natpunch-source export condition maps
// that to src/ (no build). Waits are on the programs' output lines, bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect as tcpConnect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../src/server/serve.js';
import { TurnClient } from '../../src/relay/client.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { stop } from '../helpers/proc.js';

const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));

interface Running {
  child: ChildProcess;
  /** Resolves with the first stdout line matching `re` (rejects if the program exits first or after `ms`). */
  line(re: RegExp, ms?: number): Promise<string>;
  exit(): Promise<number | null>;
  output(): string;
}

function example(name: string, args: string[], t: { after: (fn: () => Promise<unknown>) => void }): Running {
  const child = spawn(
    process.execPath,
    ['--conditions=natpunch-source', '--import', 'tsx', join(EXAMPLES, name), ...args],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  t.after(() => stop(child));
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return {
    child,
    output: () => `${out}\n(stderr)\n${err}`,
    exit: () => exited,
    line: (re, ms = 20_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: no line ${re} within ${ms} ms\n${out}\n${err}`)), ms);
        const check = () => {
          const hit = out.split('\n').find((l) => re.test(l));
          if (hit !== undefined) {
            clearTimeout(timer);
            child.stdout!.off('data', check);
            resolve(hit);
          }
        };
        child.stdout!.on('data', check);
        check();
        void exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`${name} exited with ${code} before ${re}\n${out}\n${err}`));
        });
      }),
  };
}

async function rendezvous(t: { after: (fn: () => Promise<unknown>) => void }): Promise<string> {
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'] });
  t.after(() => h.close());
  return `127.0.0.1:${h.udp[0]!.port}`;
}

test('examples/echo-peer.ts: the asking peer gets its line echoed back by name', async (t) => {
  const rv = await rendezvous(t);
  const server = example('echo-peer.ts', ['serve', '--rendezvous', rv, '--name', 'echo'], t);
  await server.line(/^echo peer "echo" is [0-9a-f]{64}$/);
  const ask = example('echo-peer.ts', ['ask', '--rendezvous', rv, '--name', 'echo', 'hello there'], t);
  assert.equal(await ask.exit(), 0, ask.output());
  assert.match(ask.output(), /echo from [0-9a-f]{16}… over (lan|direct): hello there/);
});

test('examples/file-copy.ts: a file arrives byte for byte and both sides print the same SHA-256', async (t) => {
  const rv = await rendezvous(t);
  const dir = await mkdtemp(join(tmpdir(), 'natpunch-example-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const input = randomBytes(3 * 1024 * 1024 + 17);
  await writeFile(join(dir, 'in.bin'), input);
  const digest = createHash('sha256').update(input).digest('hex');
  const receiver = example(
    'file-copy.ts',
    ['receive', '--rendezvous', rv, '--name', 'inbox', '--out', join(dir, 'out.bin')],
    t,
  );
  await receiver.line(/^receiving as "inbox"/);
  const sender = example('file-copy.ts', ['send', '--rendezvous', rv, '--name', 'inbox', join(dir, 'in.bin')], t);
  assert.equal(await sender.exit(), 0, sender.output());
  assert.equal(await receiver.exit(), 0, receiver.output());
  assert.match(sender.output(), new RegExp(`sha256 ${digest}; the receiver wrote the same bytes`));
  assert.match(receiver.output(), new RegExp(`sha256 ${digest}`));
  assert.ok((await readFile(join(dir, 'out.bin'))).equals(input));
});

test('examples/expose-ssh.ts: the allowed key reaches the exposed TCP service through the forwarded port', async (t) => {
  const rv = await rendezvous(t);
  const dir = await mkdtemp(join(tmpdir(), 'natpunch-example-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  // The "SSH" service: a TCP server that greets and echoes.
  const sockets = new Set<import('node:net').Socket>();
  const service = createServer((s) => {
    sockets.add(s);
    s.write('SSH-2.0-example\r\n');
    s.pipe(s);
  });
  service.listen(0, '127.0.0.1');
  await once(service, 'listening');
  t.after(async () => {
    for (const s of sockets) s.destroy();
    service.close();
  });
  const servicePort = (service.address() as AddressInfo).port;

  const keygen = example('expose-ssh.ts', ['keygen', join(dir, 'laptop.key')], t);
  const laptopKey = (await keygen.line(/^[0-9a-f]{64}$/)).trim();
  const home = example(
    'expose-ssh.ts',
    ['expose', '--rendezvous', rv, '--name', 'home', '--port', String(servicePort), '--allow', laptopKey],
    t,
  );
  await home.line(/^exposing 127\.0\.0\.1:\d+ as "home"/);
  const laptop = example(
    'expose-ssh.ts',
    [
      'forward',
      '--rendezvous',
      rv,
      '--name',
      'home',
      '--port',
      String(servicePort),
      '--local',
      '0',
      '--key',
      join(dir, 'laptop.key'),
    ],
    t,
  );
  const fwd = /^forwarding 127\.0\.0\.1:(\d+) to home:\d+$/.exec(await laptop.line(/^forwarding /))!;
  const socket = tcpConnect(Number(fwd[1]), '127.0.0.1');
  t.after(async () => socket.destroy());
  let got = '';
  socket.setEncoding('utf8').on('data', (d: string) => (got += d));
  socket.write('ping\n');
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(new Error(`no echo through the tunnel: ${JSON.stringify(got)}\n${home.output()}\n${laptop.output()}`)),
      20_000,
    );
    socket.on('data', () => {
      if (got.includes('ping\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  assert.ok(got.startsWith('SSH-2.0-example\r\n'));
});

test('examples/turn-webrtc.ts: the printed iceServers credentials allocate a relayed address', async (t) => {
  const turn = example(
    'turn-webrtc.ts',
    [
      '--secret',
      'example-secret',
      '--address',
      '127.0.0.1',
      '--port',
      '0',
      '--relay-address',
      '127.0.0.1',
      '--allow-peer',
      '127.0.0.0/8',
    ],
    t,
  );
  const config = JSON.parse(await turn.line(/^\{"iceServers"/)) as {
    iceServers: { urls: string[]; username: string; credential: string }[];
  };
  const ice = config.iceServers[0]!;
  const url = /^turn:([\d.]+):(\d+)\?transport=udp$/.exec(ice.urls[0]!)!;
  assert.ok(url, ice.urls[0]);
  const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  t.after(async () => transport.close());
  const client = new TurnClient({
    server: { address: url[1]!, port: Number(url[2]) },
    username: ice.username,
    password: ice.credential,
    transport,
  });
  t.after(async () => client.close());
  const allocation = await client.allocate();
  assert.equal(allocation.relayed[0]!.address, '127.0.0.1');
});

test('examples/netcheck-report.ts: a readable report from a loopback server; exit 1 when the server is silent', async (t) => {
  const h = await startServer({ port: 0, addresses: ['127.0.0.1'], altAddress: '127.0.0.2' });
  t.after(() => h.close());
  const report = example('netcheck-report.ts', [`127.0.0.1:${h.udp[0]!.port}`], t);
  assert.equal(await report.exit(), 0, report.output());
  assert.match(report.output(), /^verdict: +\S/m);
  assert.match(report.output(), /^public UDP: +127\.0\.0\.1:\d+/m);
  assert.match(report.output(), /^mapping: +endpoint-independent/m);

  const silent = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  t.after(async () => silent.close());
  const dead = example('netcheck-report.ts', [`127.0.0.1:${silent.address().port}`], t);
  assert.equal(await dead.exit(), 1, dead.output());
});
