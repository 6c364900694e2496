import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
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

/** Running (a zombie waiting to be reaped by init counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
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

  test("a host behind natA reaches the server and appears as natA's public address", async () => {
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

  test('lab.node runs a script in a namespace with JSON lines both ways; nodeCode runs a snippet', async () => {
    const fixture = new URL('./fixtures/echo-peer.ts', import.meta.url).pathname;
    const server = lab.node('server', fixture, ['srv']);
    const ready = await server.next((m) => m.type === 'ready');
    assert.equal(ready.name, 'srv');
    const peer = lab.node('b', fixture, ['b']);
    await peer.next((m) => m.type === 'ready');
    peer.send({ send: 'hello', host: lab.addr('server'), port: ready.port });
    const seen = await server.next((m) => m.type === 'datagram');
    assert.equal(seen.from, lab.publicAddr('natB'));
    const echo = await peer.next((m) => m.type === 'datagram');
    assert.equal(echo.text, 'echo:hello');
    await peer.close();
    await server.close();
    assert.equal(peer.running, false);

    const snippet = lab.nodeCode(
      'a2',
      "import os from 'node:os'; console.log(JSON.stringify({ ifs: Object.keys(os.networkInterfaces()) }));",
    );
    const msg = await snippet.next();
    assert.deepEqual((msg.ifs as string[]).sort(), ['eth0', 'lo']);
    const r = await lab.exec('a2', ['sh', '-c', 'echo out; echo err >&2; exit 4']);
    assert.deepEqual(r, { stdout: 'out\n', stderr: 'err\n', code: 4 });
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

describe('NAT lab crash clean-up', { skip }, () => {
  test('Lab.cleanupAll() removes the namespaces and processes of a lab whose owner was killed', async () => {
    const { spawn } = await import('node:child_process');
    const { writeFileSync, mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'np-crash-'));
    const script = join(dir, 'crash.mts');
    const labUrl = new URL('../../src/lab/index.ts', import.meta.url).href;
    writeFileSync(
      script,
      `import { Lab } from ${JSON.stringify(labUrl)};
const lab = await Lab.up({ links: { natA: { delayMs: 5 } } });
const agent = await lab.agent('b');
console.log(JSON.stringify({ id: lab.id, pids: [agent.proc.pid, ...Object.values(lab.state.delayers).map((d) => d.pid)] }));
setInterval(() => {}, 1000);
`,
    );
    const tsx = import.meta.resolve('tsx');
    const child = spawn(process.execPath, ['--import', tsx, script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let buf = '';
        const timer = setTimeout(() => reject(new Error('crash script did not start')), 30_000);
        child.stdout!.on('data', (d: Buffer) => {
          buf += d.toString();
          if (buf.includes('\n')) {
            clearTimeout(timer);
            resolve(buf.split('\n')[0]!);
          }
        });
        child.once('exit', () => reject(new Error('crash script exited early')));
      });
      const { id, pids } = JSON.parse(line) as { id: string; pids: number[] };
      child.kill('SIGKILL'); // no down(), no exit hook: a crash
      await new Promise((r) => child.once('exit', r));
      assert.ok(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(`np${id}-`), 'leftovers expected');
      const removed = await Lab.cleanupAll({ detached: false });
      assert.ok(removed.includes(id), `cleanupAll removed ${removed.join(', ')}`);
      assert.ok(!execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(`np${id}-`));
      for (let i = 0; i < 20 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(pids.filter(alive), []);
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('NAT lab custom topology', { skip }, () => {
  test('a declarative topology: nested NATs, a public host with an address outside its link prefix', async () => {
    const lab = await Lab.up({
      topology: {
        routers: {
          isp: { on: 'internet', wan: '203.0.113.50/24', lan: '10.50.0.0/16', nat: { type: 'full-cone' } },
          home: { on: 'isp', lan: '10.60.0.0/24', nat: 'symmetric-random' },
        },
        hosts: {
          pub: { on: 'internet', addrs: ['198.51.100.7/24', '192.0.2.77/24'] },
          laptop: { on: 'home' },
        },
      },
    });
    try {
      assert.deepEqual(lab.routers.sort(), ['home', 'isp']);
      assert.equal(lab.addr('laptop'), '10.60.0.10');
      assert.equal(lab.publicAddr('home'), '10.50.0.10');
      assert.equal(lab.externalAddr('laptop'), '203.0.113.50');
      assert.equal(lab.nat('home').type, 'symmetric-random');
      const pub = await lab.agent('pub');
      const laptop = await lab.agent('laptop');
      const { sock } = await laptop.udpBind();
      for (const addr of lab.addrs('pub')) {
        const { port } = await pub.udpBind({ reflect: true, address: addr });
        const seen = await laptop.udpReflect(sock, addr, port);
        assert.equal(seen?.from, '203.0.113.50', `via ${addr}`);
      }
    } finally {
      await lab.down();
    }
  });
});
