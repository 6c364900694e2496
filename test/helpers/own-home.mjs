// Loaded into every test process (scripts/test.mjs passes it with --import): each test file gets a natpunch home of
// its own. The CLIs pin peer names to keys in $NATPUNCH_HOME/known_peers (trust on first use, src/identity), and test
// files reuse names like "alice" with fresh keys: one home shared by the whole run made a later file's `connect alice`
// refuse the key an earlier file had pinned. Never the user's own ~/.natpunch either.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const home = mkdtempSync(join(tmpdir(), 'natpunch-test-home-'));
process.env.NATPUNCH_HOME = home;
process.once('exit', () => rmSync(home, { recursive: true, force: true }));
