// `natpunch lab` from the outside: up, exec, status, down, with the lab remembered between invocations.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { labUnavailableReason } from '../../src/lab/index.js';

const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

const bin = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
// A private state directory: this test's CLI lab never meets a developer's own `natpunch lab up`.
const stateDir = mkdtempSync(join(tmpdir(), 'np-cli-'));

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { env: { ...process.env, NATPUNCH_LAB_DIR: stateDir }, timeout: 60_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('natpunch lab CLI', { skip }, () => {
  after(async () => {
    await cli(['lab', 'down']);
    rmSync(stateDir, { recursive: true, force: true });
  });

  test('up, exec, status and down work across separate invocations', async () => {
    const up = await cli(['lab', 'up', '--a', 'full-cone', '--b', 'symmetric-random', '--delay', '5', '--json']);
    assert.equal(up.code, 0, up.stderr);
    const lab = JSON.parse(up.stdout) as { id: string; nodes: Array<{ name: string; nat?: { type: string } }> };
    assert.equal(lab.nodes.find((n) => n.name === 'natA')?.nat?.type, 'full-cone');
    assert.equal(lab.nodes.find((n) => n.name === 'natB')?.nat?.type, 'symmetric-random');

    const again = await cli(['lab', 'up']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already up/);

    const exec = await cli(['lab', 'exec', 'a', '--', 'ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
    assert.equal(exec.code, 0, exec.stderr);
    assert.match(exec.stdout, /10\.1\.0\.10/);
    const failing = await cli(['lab', 'exec', 'b', '--', 'sh', '-c', 'exit 3']);
    assert.equal(failing.code, 3, 'exit code of the command is passed through');

    const nat = await cli(['lab', 'nat', 'natA', 'udp-blocked', '--stealth']);
    assert.equal(nat.code, 0, nat.stderr);
    assert.match(nat.stderr, /^natA: type udp-blocked, .*stealth true/, 'a readable line, not raw JSON');
    const link = await cli(['lab', 'link', 'a', '--loss', '3', '--json']);
    assert.equal(link.code, 0, link.stderr);
    const linkEvent = JSON.parse(link.stdout) as { event: string; link: string; lossPct: number };
    assert.deepEqual([linkEvent.event, linkEvent.link, linkEvent.lossPct], ['link', 'a', 3]);

    const status = await cli(['lab', 'status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    const st = JSON.parse(status.stdout) as {
      labs: Array<{
        id: string;
        shapedLinks: Record<string, { delayMs: number; lossPct: number }>;
        nodes: Array<{ name: string; nat?: { type: string; stealth: boolean } }>;
      }>;
    };
    assert.equal(st.labs.length, 1);
    assert.equal(st.labs[0]!.id, lab.id);
    assert.equal(st.labs[0]!.shapedLinks.natA?.delayMs, 5);
    assert.equal(st.labs[0]!.shapedLinks.a?.lossPct, 3);
    assert.deepEqual(
      [
        st.labs[0]!.nodes.find((n) => n.name === 'natA')?.nat?.type,
        st.labs[0]!.nodes.find((n) => n.name === 'natA')?.nat?.stealth,
      ],
      ['udp-blocked', true],
    );

    const down = await cli(['lab', 'down', '--json']);
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual((JSON.parse(down.stdout) as { event: string; labs: string[] }).labs, [lab.id]);
    assert.ok(!execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(`np${lab.id}-`));
    const none = await cli(['lab', 'status']);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no lab is up/);
  });
});
