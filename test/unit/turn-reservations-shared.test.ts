// TURN port reservations shared by serve's worker threads (src/server/reservations.ts): a port reserved by one
// worker can be redeemed by another, exactly once, and stays held (unbindable) until then.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { batchedUnavailableReason } from '../../src/net/batched.js';
import { createReservationTable, SharedReservations } from '../../src/server/reservations.js';

const skip = batchedUnavailableReason();

async function bound(port = 0): Promise<dgram.Socket | null> {
  const s = dgram.createSocket('udp4');
  try {
    s.bind(port, '127.0.0.1');
    await once(s, 'listening');
    return s;
  } catch {
    s.close();
    return null;
  }
}

test(
  'a port held by one worker is redeemed by another once; it cannot be bound meanwhile; expired holds are released',
  { skip },
  async () => {
    const table = createReservationTable();
    const a = new SharedReservations<dgram.Socket>(table, 1);
    const b = new SharedReservations<dgram.Socket>(table, 2);
    const sock = (await bound())!;
    const port = sock.address().port;
    assert.equal(a.hold('00112233aabbccdd', sock, Date.now() + 30_000), true);
    assert.equal(b.size, 1);
    // Held: nobody else can take the port.
    const intruder = dgram.createSocket('udp4');
    const err = once(intruder, 'error');
    intruder.bind(port, '127.0.0.1');
    assert.equal(((await err)[0] as NodeJS.ErrnoException).code, 'EADDRINUSE');
    intruder.close();
    // Another worker redeems it and gets a socket on that very port.
    const got = await b.take('00112233aabbccdd', Date.now(), (_address, p) => bound(p));
    assert.ok(got);
    assert.equal(got.address().port, port);
    got.close();
    assert.equal(await a.take('00112233aabbccdd', Date.now(), (_address, p) => bound(p)), null, 'only once');
    assert.equal(a.size, 0);
    // An expired hold is swept by whichever worker sweeps, and its port is free again.
    const s2 = (await bound())!;
    const p2 = s2.address().port;
    assert.equal(a.hold('0000000000000001', s2, Date.now() - 1), true);
    b.sweep(Date.now());
    assert.equal(a.size, 0);
    const again = await bound(p2);
    assert.ok(again, 'the port is free after the sweep');
    again.close();
    // close() releases only the closing worker's holds.
    const s3 = (await bound())!;
    assert.equal(a.hold('0000000000000002', s3, Date.now() + 30_000), true);
    b.close();
    assert.equal(a.size, 1);
    a.close();
    assert.equal(a.size, 0);
  },
);
