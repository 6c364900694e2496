// Interop with coturn (Debian package `coturn`, installed by .ci/run): its turnutils_uclient exercises
// `natpunch serve --turn`, and natpunch's TurnClient talks to coturn's turnserver. Everything runs on 127.0.0.1.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { TurnClient } from '../../src/relay/client.js';
import { startCoturn } from '../helpers/coturn.js';
import { freePort } from '../helpers/net.js';
import { stop } from '../helpers/proc.js';

const haveCoturn =
  spawnSync('sh', ['-c', 'command -v turnserver && command -v turnutils_uclient && command -v turnutils_peer'])
    .status === 0;
const skip = haveCoturn ? false : 'coturn is not installed (apt-get install coturn)';
const dir = mkdtempSync(join(tmpdir(), 'natpunch-turn-'));
const procs: ChildProcess[] = [];

after(() => {
  for (const p of procs) {
    if (p.exitCode !== null || p.signalCode !== null || !p.pid) continue;
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

function track(p: ChildProcess): ChildProcess {
  procs.push(p);
  return p;
}

/** Starts `natpunch serve --turn` on a random port; resolves with the port from its --json "listening" line. */
async function startNatpunch(args: string[]): Promise<{ proc: ChildProcess; port: number }> {
  const proc = track(
    spawn(
      process.execPath,
      ['bin/natpunch.js', 'serve', '--turn', '--port', '0', '--address', '127.0.0.1', '--json', ...args],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    ),
  );
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`natpunch serve did not start: ${err}`)), 20_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (!line) return;
      clearTimeout(t);
      const info = JSON.parse(line) as { udp: Array<{ port: number }>; turn: { relayAddress: string } | null };
      if (!info.turn) reject(new Error('serve --turn did not report TURN'));
      resolve(info.udp[0]!.port);
    });
    proc.once('exit', (code) => reject(new Error(`natpunch serve exited with ${code}: ${err}`)));
  });
  return { proc, port };
}

interface UclientResult {
  sent: number;
  received: number;
  lost: number | null;
  output: string;
}

/** Runs turnutils_uclient to completion (bounded) and reads its closing totals. */
async function uclient(args: string[]): Promise<UclientResult> {
  const proc = track(spawn('turnutils_uclient', args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  let output = '';
  proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const t = setTimeout(() => proc.kill('SIGKILL'), 60_000);
  await once(proc, 'exit');
  clearTimeout(t);
  const totals = [...output.matchAll(/start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)/g)].pop();
  const lost = /Total lost packets (\d+)/.exec(output);
  return {
    sent: Number(totals?.[1] ?? 0),
    received: Number(totals?.[2] ?? 0),
    lost: lost ? Number(lost[1]) : null,
    output,
  };
}

test(
  'coturn turnutils_uclient against natpunch: UDP channels, Send indications, TCP, TCP relay (RFC 6062), client-to-client',
  { skip },
  async (t) => {
    const users = join(dir, 'users');
    writeFileSync(users, 'alice:wonderland\n');
    // Relaying to 127.0.0.1 is denied by default; the test allows exactly loopback.
    const { proc, port } = await startNatpunch([
      '--users',
      users,
      '--relay-address',
      '127.0.0.1',
      '--allow-peer',
      '127.0.0.0/8',
    ]);
    const peerPort = await freePort();
    const peer = track(spawn('turnutils_peer', ['-L', '127.0.0.1', '-p', String(peerPort)], { stdio: 'ignore' }));
    try {
      const common = [
        '-u',
        'alice',
        '-w',
        'wonderland',
        '-p',
        String(port),
        '-e',
        '127.0.0.1',
        '-r',
        String(peerPort),
        '-n',
        '15',
        '-m',
        '2',
        '-l',
        '120',
        '-z',
        '5',
      ];
      const modes: Array<[string, string[]]> = [
        ['UDP, channels', []],
        ['UDP, Send/Data indications', ['-s']],
        ['UDP, DONT-FRAGMENT', ['-g']],
        ['TCP to the server', ['-t']],
        ['TCP relay (RFC 6062)', ['-T']],
        ['client-to-client through two allocations', ['-y']],
      ];
      for (const [name, flags] of modes) {
        await t.test(name, async () => {
          const r = await uclient([...flags, ...common, '127.0.0.1']);
          assert.ok(r.sent > 0, `uclient sent nothing:\n${r.output.slice(-2000)}`);
          assert.equal(r.received, r.sent, `all packets come back:\n${r.output.slice(-2000)}`);
          assert.equal(r.lost, 0, r.output.slice(-2000));
        });
      }
    } finally {
      await stop(peer);
      await stop(proc);
    }
  },
);

test(
  'coturn turnutils_uclient with time-limited shared-secret credentials (-W) against natpunch --auth-secret',
  { skip },
  async () => {
    const { proc, port } = await startNatpunch([
      '--auth-secret',
      'north-secret',
      '--relay-address',
      '127.0.0.1',
      '--allow-peer',
      '127.0.0.0/8',
    ]);
    try {
      const r = await uclient([
        '-W',
        'north-secret',
        '-u',
        'carol',
        '-p',
        String(port),
        '-y',
        '-n',
        '10',
        '-m',
        '1',
        '-z',
        '5',
        '127.0.0.1',
      ]);
      assert.ok(r.sent > 0, r.output.slice(-2000));
      assert.equal(r.received, r.sent, r.output.slice(-2000));
      // And a wrong secret gets nowhere.
      const bad = await uclient([
        '-W',
        'wrong-secret',
        '-u',
        'carol',
        '-p',
        String(port),
        '-y',
        '-n',
        '3',
        '-m',
        '1',
        '127.0.0.1',
      ]);
      assert.equal(bad.received, 0);
    } finally {
      await stop(proc);
    }
  },
);

test(
  'natpunch TurnClient against coturn turnserver: allocate, permission, channel, data round trip (UDP and TCP)',
  { skip },
  async () => {
    const minPort = 40000 + Math.floor(Math.random() * 20000);
    const server = await startCoturn({
      user: { username: 'alice', password: 'wonderland' },
      relayPorts: { min: minPort, max: minPort + 200 },
    });
    track(server.child);
    const port = server.port;
    const peer = dgram.createSocket('udp4');
    await new Promise<void>((r) => peer.bind(0, '127.0.0.1', r));
    peer.on('message', (m, r) => peer.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
    const peerAddr = { address: '127.0.0.1', port: peer.address().port };
    const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    try {
      // Wait (bounded) for coturn to answer.
      let client: TurnClient | null = null;
      for (let i = 0; i < 40 && !client; i++) {
        const c = new TurnClient({
          server: { address: '127.0.0.1', port },
          username: 'alice',
          password: 'wonderland',
          transport,
          timeoutMs: 800,
        });
        try {
          await c.allocate();
          client = c;
        } catch {
          await c.close();
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      assert.ok(client, 'coturn answered an Allocate');
      const alloc = client.allocation!;
      assert.ok(alloc.relayed[0]!.port >= minPort && alloc.relayed[0]!.port <= minPort + 200);
      const receive = () =>
        new Promise<Buffer>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error('no data back through coturn')), 3000);
          const off = client!.onData((d) => {
            clearTimeout(t);
            off();
            resolve(Buffer.from(d));
          });
        });
      await client.createPermission([peerAddr]);
      let back = receive();
      peer.send(Buffer.from('unsolicited-but-permitted'), alloc.relayed[0]!.port, '127.0.0.1');
      assert.equal(String(await back), 'unsolicited-but-permitted', 'Data indication from coturn');
      await client.bindChannel(peerAddr);
      back = receive();
      client.send(Buffer.from('over channel'), peerAddr);
      assert.equal(String(await back), 'echo:over channel', 'ChannelData both ways through coturn');
      await client.close();

      const tcp = await TurnClient.connectTcp({
        server: { address: '127.0.0.1', port },
        username: 'alice',
        password: 'wonderland',
        timeoutMs: 3000,
      });
      try {
        await tcp.allocate();
        const got = new Promise<Buffer>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error('no TCP-framed data back through coturn')), 3000);
          tcp.onData((d) => {
            clearTimeout(t);
            resolve(Buffer.from(d));
          });
        });
        tcp.send(Buffer.from('tcp framed, odd size'), peerAddr);
        assert.equal(String(await got), 'echo:tcp framed, odd size');
      } finally {
        await tcp.close();
      }
    } finally {
      transport.close();
      peer.close();
      await server.stop();
    }
  },
);
