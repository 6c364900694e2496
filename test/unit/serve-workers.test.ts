// `natpunch serve --workers N`: several event loops on one SO_REUSEPORT port. STUN is answered by every worker, the
// rendezvous (one registry, main thread) sees every registration whichever worker the kernel would hash it to.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../helpers/net.js';
import { batchedUnavailableReason } from '../../src/net/batched.js';
import { stunBinding } from '../../src/stun/client.js';
import { NATPUNCH, startUntilLine, stop } from '../helpers/proc.js';
import { Bag } from './rendezvous-harness.js';
import { TurnClient } from '../../src/relay/client.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';

const skip = batchedUnavailableReason();
/** Source ports to try: with 2 workers the chance that all land on one is 2^-(n-1). */
const CLIENTS = 24;

/** Both threads log their STUN counters when they stop; both must have answered some of the CLIENTS bindings. */
function bothThreadsAnswered(stderr: string): void {
  const answered = stderr
    .split('\n')
    .filter((l) => l.includes('"serve: stopped"'))
    .map((l) => (JSON.parse(l) as { counters: { responses: number } }).counters.responses);
  assert.equal(answered.length, 2, stderr);
  assert.ok(
    answered.every((n) => n > 0),
    `responses per thread: ${answered.join(', ')}`,
  );
}

test(
  'serve --workers 2: STUN from many source ports is answered by both workers; every rendezvous registration reaches the one registry',
  { skip },
  async () => {
    // --no-relay: here every UDP datagram but the rendezvous's is spread by the kernel's hash (TURN in any worker).
    const { child, line } = await startUntilLine(
      NATPUNCH,
      ['serve', '--port', '0', '--address', '127.0.0.1', '--workers', '2', '--no-relay', '--json'],
      (l) => l.startsWith('{'),
    );
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const bag = new Bag();
    try {
      const info = JSON.parse(line) as { udp: Array<{ port: number }>; workers: number; udpImplementation: string };
      assert.equal(info.workers, 2);
      assert.equal(info.udpImplementation, 'batched');
      const port = info.udp[0]!.port;
      for (let i = 0; i < CLIENTS; i++) {
        const r = await stunBinding({ host: '127.0.0.1', port }, { timeoutMs: 3000 });
        assert.equal(r.mapped.port, r.local.port);
      }
      // Each client below has its own source port; a registry per worker would lose about half of them to lookups.
      const names = Array.from({ length: 12 }, (_, i) => `w${i}`);
      for (const name of names)
        await (await bag.client({ port, tcpPort: port }, { name, tcpFallback: false })).register();
      const looker = await bag.client({ port, tcpPort: port }, { tcpFallback: false });
      for (const name of names) assert.ok((await looker.lookup(name)).publicKey.length > 0, name);
    } finally {
      await bag.close();
      const exit = await stop(child, 'SIGTERM');
      assert.equal(exit.code, 0);
    }
    bothThreadsAnswered(stderr);
  },
);

test(
  'default serve (peer relay on) --workers 2: Binding requests spread over both threads, every peer-relay allocation is served by the main thread, /metrics sums both',
  { skip },
  async () => {
    const { child, line } = await startUntilLine(
      NATPUNCH,
      ['serve', '--port', '0', '--address', '127.0.0.1', '--workers', '2', '--admin', '127.0.0.1:0', '--json'],
      (l) => l.startsWith('{'),
    );
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const bag = new Bag();
    const turnClients: TurnClient[] = [];
    const transports: NodeDatagramTransport[] = [];
    try {
      const info = JSON.parse(line) as {
        udp: Array<{ port: number }>;
        workers: number;
        admin: string;
        relay: { peerRelay: boolean } | null;
      };
      assert.equal(info.workers, 2, 'the peer relay no longer keeps serve on one thread');
      assert.equal(info.relay?.peerRelay, true);
      const port = info.udp[0]!.port;
      for (let i = 0; i < CLIENTS; i++) await stunBinding({ host: '127.0.0.1', port }, { timeoutMs: 3000 });
      // Each allocation comes from its own source port: about half would hash to the worker, which runs no relay.
      for (let i = 0; i < 8; i++) {
        const peer = await bag.client({ port, tcpPort: port }, { tcpFallback: false });
        await peer.register();
        const cred = peer.turnCredentials ?? (await once(peer, 'turn-credentials'))[0];
        const transport = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
        transports.push(transport);
        const turn = new TurnClient({
          transport,
          server: { address: '127.0.0.1', port },
          username: cred.username,
          password: cred.password,
        });
        turnClients.push(turn);
        const alloc = await turn.allocate();
        assert.ok(alloc.relayed.length > 0, `allocation ${i}`);
      }
      // Workers post their counters once a second; poll /metrics (bounded) until every Binding is counted.
      let bindings = 0;
      for (let i = 0; i < 50 && bindings < CLIENTS; i++) {
        const text = await (await fetch(new URL('metrics', info.admin))).text();
        bindings = Number(/stun_responses_total\{method="binding"\} (\d+)/.exec(text)?.[1] ?? 0);
        if (bindings < CLIENTS) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(bindings >= CLIENTS, `metrics count ${bindings} Binding responses of ${CLIENTS}`);
    } finally {
      for (const t of turnClients) await t.close();
      for (const t of transports) t.close();
      await bag.close();
      const exit = await stop(child, 'SIGTERM');
      assert.equal(exit.code, 0);
    }
    bothThreadsAnswered(stderr);
  },
);

const haveCoturnTools =
  spawnSync('sh', ['-c', 'command -v turnutils_uclient && command -v turnutils_peer']).status === 0;

test(
  "serve --turn --workers 2 with coturn's turnutils_uclient: RTP/RTCP pairs (RESERVATION-TOKEN across workers) relay every packet",
  { skip: skip ?? (haveCoturnTools ? false : 'coturn tools not installed') },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'natpunch-workers-'));
    const users = join(dir, 'users');
    writeFileSync(users, 'alice:wonderland\n');
    const { child, line } = await startUntilLine(
      NATPUNCH,
      [
        'serve',
        '--turn',
        '--no-relay',
        '--workers',
        '2',
        '--port',
        '0',
        '--address',
        '127.0.0.1',
        '--users',
        users,
        '--relay-address',
        '127.0.0.1',
        '--allow-peer',
        '127.0.0.0/8',
        '--json',
      ],
      (l) => l.startsWith('{'),
    );
    const peerPort = await freePort();
    const peer = spawn('turnutils_peer', ['-L', '127.0.0.1', '-p', String(peerPort)], { stdio: 'ignore' });
    try {
      const info = JSON.parse(line) as { udp: Array<{ port: number }>; workers: number };
      assert.equal(info.workers, 2);
      // Without -c, every client allocates an RTP port with EVEN-PORT + R and its RTCP port with the RESERVATION-TOKEN,
      // from another client port: with 8 clients some tokens are redeemed by the other worker.
      const uc = spawn(
        'turnutils_uclient',
        [
          '-u',
          'alice',
          '-w',
          'wonderland',
          '-p',
          String(info.udp[0]!.port),
          '-e',
          '127.0.0.1',
          '-r',
          String(peerPort),
          '-n',
          '10',
          '-m',
          '8',
          '-l',
          '100',
          '-z',
          '5',
          '127.0.0.1',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      uc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      uc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const t = setTimeout(() => uc.kill('SIGKILL'), 60_000);
      await once(uc, 'exit');
      clearTimeout(t);
      const totals = [...out.matchAll(/tot_send_msgs=(\d+), tot_recv_msgs=(\d+)/g)].pop();
      assert.ok(totals && Number(totals[1]) > 0, out.slice(-1500));
      assert.equal(Number(totals[2]), Number(totals[1]), out.slice(-1500));
      assert.doesNotMatch(out, /error 508/, 'no Insufficient Capacity: every reservation token was honoured');
    } finally {
      peer.kill('SIGTERM');
      await stop(child, 'SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
