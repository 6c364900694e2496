import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addonAvailable, addonStatus, loadAddon } from '../../src/net/native.js';
import { connectFrom } from '../../src/net/tcp.js';
import { RawSocket } from '../../src/net/raw.js';
import { isNatpunchError } from '../../src/util/errors.js';

test('NATPUNCH_NO_ADDON=1 turns the addon off with ADDON_UNAVAILABLE saying why', async () => {
  const saved = process.env.NATPUNCH_NO_ADDON;
  process.env.NATPUNCH_NO_ADDON = '1';
  try {
    assert.equal(addonAvailable(), false);
    const status = addonStatus();
    assert.ok(!status.available && /NATPUNCH_NO_ADDON/.test(status.reason));
    assert.throws(
      () => loadAddon(),
      (e: unknown) => isNatpunchError(e, 'ADDON_UNAVAILABLE') && /TCP hole punching/.test(e.message),
    );
    await assert.rejects(connectFrom({ address: '127.0.0.1', port: 9 }), (e: unknown) =>
      isNatpunchError(e, 'ADDON_UNAVAILABLE'),
    );
    assert.throws(
      () => RawSocket.open(),
      (e: unknown) => isNatpunchError(e, 'ADDON_UNAVAILABLE'),
    );
  } finally {
    if (saved === undefined) delete process.env.NATPUNCH_NO_ADDON;
    else process.env.NATPUNCH_NO_ADDON = saved;
  }
});
