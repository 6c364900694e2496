#!/usr/bin/env node
// Builds the optional native addon (native/binding.gyp) with node-gyp. Run by `npm ci` / `npm install` through the
// package's "install" script, and by hand with `npm run build:native`.
//
// It NEVER fails the install: when the build cannot run (no compiler, no Node headers, no node-gyp), natpunch works
// without TCP hole punching and raw ICMP, and says why at run time (NatpunchError ADDON_UNAVAILABLE). The reason of
// a failed build is kept in native/build-error.txt so that message can quote it.
// Offline builds: node-gyp needs the Node headers; when none is configured and /usr/include/node/node.h exists
// (Debian's nodejs package), it builds against those (--nodedir=/usr) instead of downloading them.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = join(root, 'native');
const errorFile = join(nativeDir, 'build-error.txt');

if (process.env.NATPUNCH_SKIP_NATIVE_BUILD === '1') {
  console.log('natpunch: NATPUNCH_SKIP_NATIVE_BUILD=1, not building the native addon');
  process.exit(0);
}

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(
      dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  ];
  for (const c of candidates) if (c && existsSync(c)) return [process.execPath, [c]];
  return ['node-gyp', []];
}

// A package from `npm pack` on linux-x64 carries native/prebuilds/linux-x64/natpunch.node (scripts/prebuild-native.mjs).
// Use it when it loads here (same libc, N-API version); build from source otherwise. A checkout has no prebuilds/.
const prebuilt = join(nativeDir, 'prebuilds', `${process.platform}-${process.arch}`, 'natpunch.node');
if (existsSync(prebuilt)) {
  const probe = spawnSync(
    process.execPath,
    ['-e', `process.exit(require(${JSON.stringify(prebuilt)}).abiVersion === 1 ? 0 : 3)`],
    {
      encoding: 'utf8',
    },
  );
  if (probe.status === 0) {
    rmSync(errorFile, { force: true });
    console.log(
      `natpunch: using the prebuilt ${process.platform}-${process.arch} native addon (TCP hole punching and raw ICMP available)`,
    );
    process.exit(0);
  }
  console.log('natpunch: the prebuilt native addon does not load here; building it from source');
}

const [cmd, pre] = findNodeGyp();
const args = [...pre, 'rebuild', `--directory=${nativeDir}`];
const nodedirConfigured = Boolean(process.env.npm_config_nodedir) || process.argv.includes('--nodedir');
if (!nodedirConfigured && existsSync('/usr/include/node/node.h')) args.push('--nodedir=/usr');

const res = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', env: process.env });
if (res.status === 0) {
  rmSync(errorFile, { force: true });
  console.log('natpunch: native addon built (TCP hole punching and raw ICMP available)');
} else {
  const why = res.error ? String(res.error.message) : `node-gyp exited with ${res.status}`;
  const tail = `${res.stdout ?? ''}\n${res.stderr ?? ''}`
    .split('\n')
    .filter((l) => /error|ERR! stack/i.test(l) && !/ERR! (System|command|cwd|node|\$npm|not ok)/.test(l))
    .slice(0, 8)
    .join('\n');
  try {
    writeFileSync(errorFile, `${why}\n${tail}\n`);
  } catch {
    // read-only install location: the run-time message will just lack the detail
  }
  console.warn(`natpunch: the native addon did not build (${why}); TCP hole punching and raw ICMP are disabled.`);
  if (tail) console.warn(tail);
}
process.exit(0);
