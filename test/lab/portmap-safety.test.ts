/**
 * Network safety of the port-mapping default (issue 16): the test runner sets NATPUNCH_PORT_MAPPING=0, and with it a
 * default connect() / listen() on loopback sends no PCP, NAT-PMP or SSDP packet anywhere. Proven in a private
 * network namespace holding only `lo` and a veth to a second private namespace playing the default gateway (it
 * runs no mapping service; nothing is linked to the machine's real network, so even a failing run reaches nothing
 * real), with tcpdump on that link. The control run (NATPUNCH_PORT_MAPPING=1 in the same namespace) shows the capture
 * does see the mapper's requests when mapping is on.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { labUnavailableReason } from '../../src/lab/index.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/default-connect.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');
const hasTcpdump = spawnSync('sh', ['-c', 'command -v tcpdump'], { encoding: 'utf8' }).status === 0;
const skip = labUnavailableReason() ?? (hasTcpdump ? undefined : 'tcpdump not installed');
if (skip) console.log(`# port-mapping safety test skipped: ${skip}`);

const ID = randomBytes(3).toString('hex');
const NS = `np${ID}-pmsafe`;
/** The "gateway": a second private namespace at the other end of a veth pair (nothing else is linked to either). */
const GW = `np${ID}-pmgw`;
const ip = (...args: string[]) => {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
};

/** Runs the fixture in the namespace with `mapping` as NATPUNCH_PORT_MAPPING; returns what tcpdump saw on the link to the gateway. */
async function capture(mapping: '0' | '1'): Promise<{ packets: string[]; result: string }> {
  const dump = spawn(
    'ip',
    ['netns', 'exec', NS, 'tcpdump', '-i', 'gw0', '-n', '-l', 'udp port 5351 or udp port 5350 or udp port 1900'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  dump.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  // tcpdump says "listening on dummy0" on stderr once it captures.
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('tcpdump did not start')), 10_000);
    dump.stderr.setEncoding('utf8').on('data', (c: string) => {
      if (!c.includes('listening on')) return;
      clearTimeout(t);
      resolve();
    });
  });
  try {
    const env = { ...process.env, NATPUNCH_PORT_MAPPING: mapping };
    const r = spawnSync('ip', ['netns', 'exec', NS, process.execPath, '--import', TSX, FIXTURE], {
      encoding: 'utf8',
      env,
      timeout: 60_000,
    });
    await new Promise((res) => setTimeout(res, 300));
    return { packets: out.split('\n').filter(Boolean), result: `${r.stdout}${r.stderr}` };
  } finally {
    dump.kill('SIGTERM');
    await new Promise((res) => dump.once('exit', res));
  }
}

describe('port mapping on by default never leaves loopback in tests', { skip }, () => {
  before(() => {
    ip('netns', 'add', NS);
    ip('netns', 'add', GW);
    ip('-n', NS, 'link', 'set', 'lo', 'up');
    ip('-n', NS, 'link', 'add', 'gw0', 'type', 'veth', 'peer', 'name', 'gw1', 'netns', GW);
    ip('-n', NS, 'addr', 'add', '10.254.0.2/24', 'dev', 'gw0');
    ip('-n', NS, 'link', 'set', 'gw0', 'up');
    ip('-n', GW, 'addr', 'add', '10.254.0.1/24', 'dev', 'gw1');
    ip('-n', GW, 'link', 'set', 'gw1', 'up');
    ip('-n', NS, 'route', 'add', 'default', 'via', '10.254.0.1');
  });
  after(() => {
    spawnSync('ip', ['netns', 'del', NS]);
    spawnSync('ip', ['netns', 'del', GW]);
  });

  test('NATPUNCH_PORT_MAPPING=0 (the test runner): a default connect() on loopback sends no PCP, NAT-PMP or SSDP', async () => {
    const { packets, result } = await capture('0');
    assert.match(result, /"ok":true/, result);
    assert.deepEqual(packets, [], 'nothing towards a gateway');
  });

  test('control: with NATPUNCH_PORT_MAPPING=1 the capture sees the mapper asking the (stand-in) gateway', async () => {
    const { packets, result } = await capture('1');
    assert.match(result, /"ok":true/, result);
    assert.ok(
      packets.some((p) => /10\.254\.0\.1\.5351|239\.255\.255\.250\.1900/.test(p)),
      `captured: ${packets.join('\n')}`,
    );
  });
});
