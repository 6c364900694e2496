#!/usr/bin/env node
// Run by `npm pack` / `npm publish` (prepack): copies the addon built in this checkout to
// native/prebuilds/<platform>-<arch>/natpunch.node so the package carries a binary for this platform. The N-API
// addon (NAPI_VERSION 8) loads on every Node version from 20 on; the install script (build-native.mjs) uses it when
// it loads and builds from native/src otherwise. Other platforms build on install as before.
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const built = join(root, 'native', 'build', 'Release', 'natpunch.node');
const prebuilds = join(root, 'native', 'prebuilds');
const target = join(prebuilds, `${process.platform}-${process.arch}`);

rmSync(prebuilds, { recursive: true, force: true });
if (!existsSync(built)) {
  console.warn(
    'natpunch: no native addon built here (npm run build:native); the package ships without a prebuilt binary',
  );
  process.exit(0);
}
mkdirSync(target, { recursive: true });
copyFileSync(built, join(target, 'natpunch.node'));
console.log(`natpunch: packing the prebuilt ${process.platform}-${process.arch} native addon`);
