// Interop with coturn (Debian package `coturn`): its STUN client against `natpunch serve`, and `natpunch stun`
// against its turnserver. Everything runs on loopback; processes are killed by PID.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NATPUNCH, run, startUntilLine, stop, which } from '../helpers/proc.js';
import { startCoturn } from '../helpers/coturn.js';
import { StunClient } from '../../src/stun/client.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { attr, ChangeRequest } from '../../src/wire/stun/index.js';
import { loopbackHosts } from '../helpers/net.js';

const STUNCLIENT = which('turnutils_stunclient');
const TURNSERVER = which('turnserver');
const skipClient = STUNCLIENT ? false : 'turnutils_stunclient not installed (apt-get install coturn)';
const skipServer = TURNSERVER ? false : 'turnserver not installed (apt-get install coturn)';

async function serve(args: string[]) {
  const { child, line } = await startUntilLine(NATPUNCH, ['serve', '--port', '0', '--json', ...args], (l) =>
    l.startsWith('{'),
  );
  return { child, info: JSON.parse(line) };
}

const REFLEXIVE = /UDP reflexive addr: (\S+):(\d+)/g;

test(
  'turnutils_stunclient gets the right mapped address from `natpunch serve` (IPv4 and IPv6)',
  { skip: skipClient },
  async () => {
    for (const host of await loopbackHosts()) {
      const { child, info } = await serve(['--address', host]);
      try {
        const port = info.udp[0].port;
        const r = await run(STUNCLIENT!, ['-p', String(port), host], 20_000);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        const found = [...r.stdout.matchAll(REFLEXIVE)];
        assert.ok(found.length > 0, `no reflexive address in: ${r.stdout}`);
        for (const m of found) {
          assert.equal(m[1], host);
          assert.ok(Number(m[2]) > 0 && Number(m[2]) < 65536);
        }
      } finally {
        assert.equal((await stop(child)).code, 0);
      }
    }
  },
);

test(
  'turnutils_stunclient -f (RFC 5780) against `natpunch serve --alt-address`: origins, other address, mapped address',
  { skip: skipClient },
  async () => {
    const { child, info } = await serve(['--address', '127.0.0.1', '--alt-address', '127.0.0.2', '--alt-port', '0']);
    try {
      const { primary, altBoth } = info.rfc5780;
      const r = await run(STUNCLIENT!, ['-f', '-p', String(primary.port), '127.0.0.1'], 20_000);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const out = r.stdout;
      // First response: from the primary socket, naming the alternate (other IP and port).
      assert.ok(out.includes(`Response origin: : 127.0.0.1:${primary.port}`), out);
      assert.ok(out.includes(`Other addr: : 127.0.0.2:${altBoth.port}`), out);
      // The CHANGE-REQUEST (change IP and port) was answered from the alternate socket.
      assert.ok(out.includes(`Response origin: : 127.0.0.2:${altBoth.port}`), out);
      const found = [...out.matchAll(REFLEXIVE)];
      assert.ok(found.length >= 2, out);
      for (const m of found) assert.equal(m[1], '127.0.0.1');
    } finally {
      assert.equal((await stop(child)).code, 0);
    }
  },
);

test(
  '`natpunch stun` gets a correct answer from coturn turnserver over UDP and TCP',
  { skip: skipServer },
  async () => {
    const coturn = await startCoturn({ stunOnly: true });
    const { port } = coturn;
    try {
      for (const transport of ['udp', 'tcp']) {
        const args = [
          'stun',
          `127.0.0.1:${port}`,
          '--json',
          '--timeout',
          '5000',
          ...(transport === 'tcp' ? ['--tcp'] : []),
        ];
        const r = await run(NATPUNCH, args);
        assert.equal(r.code, 0, r.stderr);
        const j = JSON.parse(r.stdout);
        assert.equal(j.transport, transport);
        assert.deepEqual(j.mapped, { family: 'IPv4', address: '127.0.0.1', port: j.local.port });
        assert.match(j.software, /Coturn/i);
      }
      const plain = await run(NATPUNCH, ['stun', `127.0.0.1:${port}`]);
      assert.equal(plain.code, 0, plain.stderr);
      assert.match(plain.stdout.trim(), /^127\.0\.0\.1:\d+$/);
    } finally {
      await coturn.stop();
    }
  },
);

test(
  'StunClient RFC 5780 probes against coturn with two addresses: OTHER-ADDRESS and CHANGE-REQUEST answers',
  { skip: skipServer },
  async () => {
    const coturn = await startCoturn({ stunOnly: true, alternateAddress: '127.0.0.2' });
    const { port } = coturn;
    const sock = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
    const client = new StunClient(sock);
    try {
      const to = { address: '127.0.0.1', port };
      const first = await client.binding(to, { timeoutMs: 5000 });
      assert.deepEqual(first.mapped, { family: 'IPv4', address: '127.0.0.1', port: sock.address().port });
      assert.deepEqual(first.otherAddress, { family: 'IPv4', address: '127.0.0.2', port: port + 1 });
      const cases = [
        [{ changeIp: true, changePort: true }, '127.0.0.2', port + 1],
        [{ changeIp: false, changePort: true }, '127.0.0.1', port + 1],
        [{ changeIp: true, changePort: false }, '127.0.0.2', port],
      ] as const;
      for (const [change, address, fromPort] of cases) {
        const r = await client.binding(to, {
          timeoutMs: 5000,
          matchSource: false,
          attributes: [attr(ChangeRequest, change)],
        });
        assert.deepEqual(r.from, { address, port: fromPort }, JSON.stringify(change));
      }
    } finally {
      client.close();
      sock.close();
      await coturn.stop();
    }
  },
);
