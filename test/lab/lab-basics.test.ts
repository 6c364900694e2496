import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason } from '../../src/lab/index.js';

const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

function rootLinks(): string[] {
  return execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(':')[1]?.trim() ?? '')
    .filter(Boolean)
    .sort();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('NAT lab basics', { skip }, () => {
  let lab: Lab;
  before(async () => {
    lab = await Lab.up();
  });
  after(async () => {
    await lab?.down();
  });

  test('a host behind natA reaches the server and appears as natA\'s public address', async () => {
    const server = await lab.agent('server');
    const { port } = await server.udpBind({ reflect: true });
    const a = await lab.agent('a');
    const { sock } = await a.udpBind();
    const seen = await a.udpReflect(sock, lab.addr('server'), port);
    assert.ok(seen, 'no reflection from the server');
    assert.equal(seen.from, lab.publicAddr('natA'));
    assert.equal(lab.externalAddr('a'), lab.publicAddr('natA'));
    // the server's second address (RFC 5780) answers as well
    const { port: port2 } = await server.udpBind({ reflect: true, address: lab.addrs('server')[1] });
    const seen2 = await a.udpReflect(sock, lab.addrs('server')[1]!, port2);
    assert.equal(seen2?.from, lab.publicAddr('natA'));
  });

  test('traffic addressed outside the lab is dropped inside the internet namespace', async () => {
    const before = await lab.outsideDrops();
    const a = await lab.agent('a');
    const { sock } = await a.udpBind();
    for (let i = 0; i < 3; i++) await a.udpSend(sock, '3.3.3.3', 53, 'must-not-leave');
    const server = await lab.agent('server');
    const { sock: s2 } = await server.udpBind();
    await server.udpSend(s2, '3.3.3.3', 53, 'must-not-leave');
    // count is observed on the internet's drop rule; poll briefly (bounded)
    let drops = 0;
    for (let i = 0; i < 20 && drops < before + 4; i++) {
      drops = await lab.outsideDrops();
      if (drops < before + 4) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(drops >= before + 4, `expected 4 more outside drops, saw ${drops - before}`);
    // and there is no route out of the lab at all: the internet namespace has no default route
    const routes = await lab.exec('internet', ['ip', 'route', 'show', 'default']);
    assert.equal(routes.stdout.trim(), '');
  });
});

describe('NAT lab lifecycle', { skip }, () => {
  test('up then down leaves no namespace, veth or process behind', async () => {
    const linksBefore = rootLinks();
    const lab = await Lab.up({ doubleNat: true, links: { natB: { delayMs: 5 } } });
    const prefix = `np${lab.id}-`;
    const nsDuring = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    assert.ok(nsDuring.includes(`${prefix}natA`));
    const agent = await lab.agent('c');
    const sleeper = lab.spawn('b', ['sleep', '30']);
    const pids = [agent.proc.pid!, sleeper.pid!, ...Object.values(lab.state.delayers).map((d) => d.pid)];
    assert.ok(pids.length >= 3, 'expected a delayer process for the shaped link');
    assert.ok(pids.every(alive));
    assert.deepEqual(rootLinks(), linksBefore, 'the lab must not create links in the root namespace');
    await lab.down();
    const nsAfter = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    assert.ok(!nsAfter.includes(prefix), `namespaces left: ${nsAfter}`);
    assert.deepEqual(rootLinks(), linksBefore);
    for (let i = 0; i < 20 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(pids.filter(alive), [], 'processes left behind');
    assert.ok(!Lab.list().some((s) => s.id === lab.id), 'state file left behind');
  });
});
