// `natpunch netcheck --json` output as tests read it: probe events, then the report event, one JSON line each.
import assert from 'node:assert/strict';
import type { NatReport } from '../../src/discovery/netcheck.js';

/** The report event of a successful `netcheck --json` run, after checking that probe events came before it. */
export function netcheckReport(stdout: string): NatReport {
  const events = stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { event: string });
  assert.ok(
    events.some((e) => e.event === 'probe'),
    'probe events',
  );
  assert.equal(events.at(-1)!.event, 'report', 'the report is the last line');
  return events.at(-1) as unknown as NatReport;
}
