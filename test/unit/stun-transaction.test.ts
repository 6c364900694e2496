// The one transaction engine (src/stun/transaction.ts) under the STUN, TURN and rendezvous clients: RFC 8489 §6.2.1
// retransmission schedule, matching by transaction id, deadlines and aborts. Timers are mocked: no real waiting.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { RFC8489_TIMING, retransmitWaits, TransactionTable } from '../../src/stun/transaction.js';
import { NatpunchError, isNatpunchError } from '../../src/util/errors.js';

const timeout = (sent: number) => new NatpunchError('STUN_TIMEOUT', `no answer after ${sent}`);

test('RFC 8489 §6.2.1 schedule: RTO doubling, Rc = 7 sends, Rm × RTO after the last; 39.5 s in all', () => {
  const waits = retransmitWaits(RFC8489_TIMING);
  assert.deepEqual(waits, [500, 1000, 2000, 4000, 8000, 16000, 8000]);
  assert.equal(
    waits.reduce((a, b) => a + b),
    39_500,
  );
  // The rendezvous' timing: 250 ms, capped at 2 s, no Rm (the last wait is the next doubled RTO).
  assert.deepEqual(retransmitWaits({ rtoMs: 250, rc: 5, maxRtoMs: 2000 }), [250, 500, 1000, 2000, 2000]);
});

test("a request is retransmitted on the schedule and fails with the caller's timeout error after Rc sends", async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const table = new TransactionTable<string, string>();
    let sends = 0;
    const p = table.run('t1', () => sends++, { timing: { rtoMs: 100, rc: 3, rm: 4 }, timeoutError: timeout });
    const result = p.then(
      () => 'resolved',
      (e: unknown) => e,
    );
    assert.equal(sends, 1);
    mock.timers.tick(100);
    assert.equal(sends, 2);
    mock.timers.tick(200);
    assert.equal(sends, 3);
    mock.timers.tick(399);
    assert.equal(table.has('t1'), true, 'still waiting Rm × RTO after the last send');
    mock.timers.tick(1);
    const err = await result;
    assert.ok(isNatpunchError(err, 'STUN_TIMEOUT'));
    assert.match((err as Error).message, /after 3/);
    assert.equal(table.size, 0);
  } finally {
    mock.timers.reset();
  }
});

test('answers match by transaction id; unknown and late answers are ignored; the RTT sample notes the sends', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const table = new TransactionTable<number, string>();
    const a = table.run(1, () => {}, { timing: RFC8489_TIMING, timeoutError: timeout });
    const b = table.run(2, () => {}, { timing: RFC8489_TIMING, timeoutError: timeout });
    assert.equal(table.resolve(3, 'nobody'), false);
    mock.timers.tick(500); // one retransmission of both
    assert.equal(table.resolve(2, 'two'), true);
    assert.equal(table.resolve(2, 'again'), false, 'a duplicate answer finds nothing pending');
    assert.equal(table.resolve(1, 'one'), true);
    const [ra, rb] = await Promise.all([a, b]);
    assert.equal(ra.answer, 'one');
    assert.equal(rb.answer, 'two');
    assert.equal(ra.transmissions, 2);
  } finally {
    mock.timers.reset();
  }
});

test('reliable transports send once and wait for the deadline (the signal); aborts pass NatpunchError reasons through', async () => {
  const table = new TransactionTable<string, string>();
  let sends = 0;
  const deadline = new AbortController();
  const p = table.run('tcp', () => sends++, {
    timing: RFC8489_TIMING,
    reliable: true,
    signal: deadline.signal,
    timeoutError: timeout,
  });
  deadline.abort(new NatpunchError('TIMEOUT', 'deadline'));
  await assert.rejects(p, (e: unknown) => isNatpunchError(e, 'TIMEOUT'));
  assert.equal(sends, 1);

  const plain = new AbortController();
  plain.abort('user');
  await assert.rejects(
    table.run('x', () => {}, { timing: RFC8489_TIMING, signal: plain.signal, timeoutError: timeout }),
    (e: unknown) => isNatpunchError(e, 'ABORTED'),
  );

  table.close(new NatpunchError('SOCKET_CLOSED', 'closed'));
  await assert.rejects(
    table.run('y', () => {}, { timing: RFC8489_TIMING, timeoutError: timeout }),
    (e: unknown) => isNatpunchError(e, 'SOCKET_CLOSED'),
  );
});
