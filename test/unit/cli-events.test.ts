// The CLI's one event schema and printer (src/cli/events.ts): --json lines carry time and event; human lines come
// from the same events, each printed once, and an event the printer has no format for is still a readable line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createPrinter, errorEvent, humanLine, toEvent } from '../../src/cli/events.js';
import { NatpunchError } from '../../src/util/errors.js';

function sink(): { stream: Writable; lines: () => string[] } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  });
  return { stream, lines: () => text.split('\n').filter(Boolean) };
}

test('--json: one line per event with time and event; library { phase } objects become { event }', () => {
  const out = sink();
  const print = createPrinter({ json: true, jsonOut: out.stream });
  print({ phase: 'punching', pairs: 2 });
  print({ event: 'open', conn: 1, target: '127.0.0.1:22' });
  const [a, b] = out.lines().map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(a!.event, 'punching');
  assert.equal(a!.pairs, 2);
  assert.equal(a!.phase, undefined);
  assert.match(String(a!.time), /^\d{4}-\d\d-\d\dT/);
  assert.equal(b!.event, 'open');
});

test('human output prints a repeated identical event once (path chosen, session closed)', () => {
  const out = sink();
  const print = createPrinter({ humanOut: out.stream });
  const path = { phase: 'path', kind: 'lan', remote: { address: '127.0.0.1', port: 5000 }, type: 'host', rttMs: 3 };
  print(path);
  print(path);
  print({ event: 'session-closed', peer: 'a'.repeat(64), error: null });
  print({ event: 'session-closed', peer: 'a'.repeat(64), error: null });
  assert.deepEqual(out.lines(), [
    'path chosen: lan via host 127.0.0.1:5000, rtt 3 ms',
    `session with ${'a'.repeat(16)}… closed`,
  ]);
});

test('hard-NAT, hard-punch, transport and unknown events print readable lines, never raw JSON', () => {
  const lines = [
    { phase: 'hard-nat', kind: 'symmetric-sequential', delta: 1, ports: [40000, 40001] },
    { phase: 'hard-punch', local: 'symmetric-random', peer: 'port-restricted', strategy: 'birthday', probesSent: 300 },
    { phase: 'transport', transport: 'udp', reason: 'no native addon' },
    {
      event: 'technique-started',
      technique: 'udp-checks',
      remote: { address: '192.0.2.1', port: 9 },
      nested: { a: 1 },
    },
  ].map((e) => humanLine(toEvent(e))!);
  for (const l of lines) assert.doesNotMatch(l, /[{}"]/, l);
  assert.equal(lines[3], 'technique-started: technique udp-checks, remote 192.0.2.1:9, nested a 1');
});

test('errors are events: { event: "error", code, message }', () => {
  const e = toEvent(errorEvent(new NatpunchError('RATE_LIMITED', 'slow down\nmore'), 'ERROR'));
  assert.equal(e.event, 'error');
  assert.equal(e.code, 'RATE_LIMITED');
  assert.equal(e.message, 'slow down');
  assert.equal(humanLine(e), 'natpunch: slow down [RATE_LIMITED]');
});
