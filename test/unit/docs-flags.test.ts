// Every CLI flag the documentation mentions exists: flags on a `natpunch CMD [SUB] ...` line must be in that command's
// --help; any other `--flag` in README.md or docs/*.md (outside lines that run another tool) must belong to some
// natpunch command. The help text is what commander prints, so the check follows the real definitions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'bin', 'natpunch.js');
const SUBCOMMANDS: Record<string, string[]> = {
  turn: ['serve', 'allocate', 'credentials'],
  lab: ['up', 'exec', 'nat', 'link', 'status', 'down'],
};
/** Lines that run another program: their flags are that program's. */
const OTHER_TOOL =
  /(^|[`\s|$#])(npm|npx|node|curl|ssh|ip|nc|git|tsx|sysctl|iptables|nft|turnutils_\w+|turnserver|ncat|socat|dig|tcpdump|docker|systemctl|useradd)\s/;
/** Flags the docs name that belong to other programs, on lines the pattern above cannot tell apart. */
const NOT_NATPUNCH = new Set([
  '--no-name', // the placeholder in docs/operator.md's table of option spellings
  '--env-file', // docker run, on a continuation line
  '--expose-gc', // node, in docs/performance.md
  '--max-semi-space-size', // node (NODE_OPTIONS), in docs/performance.md
  '--max-old-space-size',
  '--semi-space-growth-factor', // V8's, tried and rejected in docs/performance.md
  '--cpu-prof', // node's profiler flags, in docs/performance.md
  '--cpu-prof-dir',
  '--target', // the fuzz harness script, in docs/security.md
]);

function helpFlags(args: string[]): Promise<Set<string>> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [BIN, ...args, '--help'], { timeout: 30_000 }, (err, stdout) => {
      if (err) return reject(new Error(`natpunch ${args.join(' ')} --help: ${err.message}`));
      resolve(new Set([...stdout.matchAll(/--[a-z0-9][a-z0-9-]*/g)].map((m) => m[0])));
    }),
  );
}

async function docs(): Promise<Array<{ file: string; text: string }>> {
  const files = [
    'README.md',
    ...(await readdir(join(ROOT, 'docs'))).filter((f) => f.endsWith('.md')).map((f) => join('docs', f)),
  ];
  return Promise.all(files.map(async (file) => ({ file, text: await readFile(join(ROOT, file), 'utf8') })));
}

test('every CLI flag mentioned in README.md and docs/*.md exists in the CLI', async () => {
  const top = await helpFlags([]);
  const commands = [
    ...(
      await new Promise<string>((resolve) => execFile(process.execPath, [BIN, '--help'], (_e, out) => resolve(out)))
    ).matchAll(/^ {2}([a-z]+)\b/gm),
  ]
    .map((m) => m[1]!)
    .filter((c) => c !== 'help');
  assert.ok(commands.includes('connect') && commands.includes('serve'), commands.join(' '));
  const flags = new Map<string, Set<string>>();
  for (const c of commands) {
    flags.set(c, await helpFlags([c]));
    for (const sub of SUBCOMMANDS[c] ?? []) flags.set(`${c} ${sub}`, await helpFlags([c, sub]));
  }
  const all = new Set([...top, ...[...flags.values()].flatMap((s) => [...s])]);

  const missing: string[] = [];
  for (const { file, text } of await docs()) {
    text.split('\n').forEach((line, i) => {
      const where = `${file}:${i + 1}`;
      // Flags after `natpunch CMD [SUB]` on this line belong to that command (up to a pipe, `;`, `&&` or a backtick).
      for (const m of line.matchAll(/natpunch ([a-z]+)(?: ([a-z]+))?([^|;`&]*)/g)) {
        const key = m[2] && flags.has(`${m[1]} ${m[2]}`) ? `${m[1]} ${m[2]}` : m[1]!;
        const known = flags.get(key);
        if (!known) continue; // prose ("natpunch finds out ...")
        for (const f of m[3]!.matchAll(/(?<![\w-])--[a-z0-9][a-z0-9-]*/g)) {
          if (!known.has(f[0]) && !top.has(f[0])) missing.push(`${where}: natpunch ${key} ${f[0]}`);
        }
      }
      if (OTHER_TOOL.test(line)) return;
      for (const f of line.matchAll(/(?<![\w-])--[a-z0-9][a-z0-9-]*/g))
        if (!all.has(f[0]) && !NOT_NATPUNCH.has(f[0])) missing.push(`${where}: ${f[0]}`);
    });
  }
  assert.deepEqual([...new Set(missing)], []);
});

test('the README stays short (at most 300 lines); the rest lives in docs/', async () => {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  assert.ok(readme.split('\n').length <= 300, `README.md has ${readme.split('\n').length} lines`);
});
