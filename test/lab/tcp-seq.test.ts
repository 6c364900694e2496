/**
 * TCP sequence-number techniques (STUNT #1, NATBlaster) across real Linux NATs (src/lab). Each peer is a child
 * process in its namespace (fixtures/tcp-seq-peer.ts); a reflector on the lab's server stands in for the rendezvous
 * (it tells each peer its public TCP endpoint) and the test carries the SeqOffers between the peers / to the
 * spoofer, as the rendezvous server would.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type NatOptions } from '../../src/lab/index.js';
import { addonStatus } from '../../src/net/native.js';
import { SeqDriver, type Attempt } from './fixtures/tcp-seq-driver.js';

const addon = addonStatus();
const skip = labUnavailableReason() || (addon.available ? false : `native addon unavailable: ${addon.reason}`);

/** A NAT that drops an inbound SYN following an outbound SYN but lets the SYN-ACK in (and forwards ICMP errors). */
const SYN_AFTER_SYN: NatOptions = { type: 'port-restricted-cone', stealth: true, dropSynAfterSyn: true };

describe('TCP sequence-number techniques in the NAT lab', { skip }, () => {
  let lab: Lab;
  let driver: SeqDriver;
  const log: string[] = [];
  const note = (what: string, o: Attempt) =>
    log.push(
      `${what}: ${o.ok ? `ok (${o.elapsedMs} ms)` : `failed (${o.reasons.join(', ')}: ${String(o.a.message ?? o.b.message ?? '')})`}`,
    );

  before(async () => {
    lab = await Lab.up();
    driver = new SeqDriver(lab);
    await driver.start();
  });
  after(async () => {
    if (log.length) console.log(`# TCP sequence-number techniques\n${log.map((l) => `#   ${l}`).join('\n')}`);
    await lab?.down();
  });

  async function both(o: NatOptions): Promise<void> {
    await lab.setNat('natA', o);
    await lab.setNat('natB', o);
  }

  test('on two NATs that drop a SYN following an outbound SYN, P2P-NAT and STUNT #2 fail', async () => {
    await both(SYN_AFTER_SYN);
    for (const t of ['p2pnat', 'stunt2'] as const) {
      const o = await driver.attempt(t);
      note(`${t} across drop-SYN-after-SYN NATs`, o);
      assert.equal(o.ok, false, `${t} should not connect: ${JSON.stringify(o)}`);
    }
  });

  test('STUNT #1 connects across two such NATs (server-spoofed SYN-ACKs); 20 kB both ways intact, twice', async () => {
    await both(SYN_AFTER_SYN);
    for (let i = 0; i < 2; i++) {
      const o = await driver.attempt('stunt1');
      note(`stunt1 across drop-SYN-after-SYN NATs, trial ${i + 1}`, o);
      assert.ok(o.ok, JSON.stringify(o));
      // one connection: each side's remote is the other's public endpoint
      assert.equal((o.b.remote as { address: string }).address, lab.publicAddr('natA'));
      assert.equal((o.a.remote as { address: string }).address, lab.publicAddr('natB'));
      assert.equal(o.a.guarded, true, 'the ICMP guard kept the socket in SYN_SENT');
    }
  });

  test('without the ICMP guard the forwarded Time Exceeded aborts the SYN_SENT socket; a NAT that does not forward it needs no guard', async () => {
    await both(SYN_AFTER_SYN);
    const aborted = await driver.attempt('stunt1', 4_000, { icmpGuard: false });
    note('stunt1 without the ICMP guard, NATs forwarding ICMP errors', aborted);
    assert.equal(aborted.ok, false);
    assert.ok(aborted.reasons.includes('icmp-abort'), JSON.stringify(aborted));
    await both({ ...SYN_AFTER_SYN, forwardIcmpErrors: false });
    const quiet = await driver.attempt('stunt1', 6_000, { icmpGuard: false });
    note('stunt1 without the ICMP guard, NATs not forwarding ICMP errors', quiet);
    assert.ok(quiet.ok, JSON.stringify(quiet));
    assert.equal(quiet.a.guarded, false);
  });

  test('NATBlaster connects across two such NATs when they translate an outbound SYN-ACK after an outbound SYN', async () => {
    await both({ ...SYN_AFTER_SYN, translateOutboundSynAck: true });
    for (let i = 0; i < 2; i++) {
      const o = await driver.attempt('natblaster');
      note(`natblaster across drop-SYN-after-SYN NATs that translate the SYN-ACK, trial ${i + 1}`, o);
      assert.ok(o.ok, JSON.stringify(o));
      assert.equal((o.b.remote as { address: string }).address, lab.publicAddr('natA'));
    }
  });

  test('NATBlaster fails on plain Linux conntrack NATs: the outbound SYN-ACK is INVALID there and is not translated', async () => {
    await both(SYN_AFTER_SYN);
    const o = await driver.attempt('natblaster', 4_000);
    note('natblaster across plain (conntrack) drop-SYN-after-SYN NATs', o);
    assert.equal(o.ok, false);
    assert.deepEqual(o.reasons, ['no-syn-ack', 'no-syn-ack']);
  });

  test('a NAT that rewrites TCP sequence numbers makes STUNT #1 and NATBlaster fail, and the reason says so', async () => {
    await both({ ...SYN_AFTER_SYN, translateOutboundSynAck: true, rewriteTcpSequence: true });
    for (const t of ['stunt1', 'natblaster'] as const) {
      const o = await driver.attempt(t, 4_000);
      note(`${t} across sequence-rewriting NATs`, o);
      assert.equal(o.ok, false);
      // The first host to get its (wrong) SYN-ACK names the rewrite; its RST may close the other NAT's entry first.
      assert.ok(o.reasons.includes('sequence-rewritten'), JSON.stringify(o));
      const msg = [o.a, o.b].map((m) => String(m.message)).find((m) => m.includes('rewrites TCP sequence numbers'));
      assert.match(msg ?? '', /off by 2147483648/);
    }
  });

  test('ordinary TCP (P2P-NAT between cones) still works through the sequence-rewriting NAT', async () => {
    await lab.setNat('natA', { type: 'full-cone', rewriteTcpSequence: true });
    await lab.setNat('natB', { type: 'port-restricted-cone', rewriteTcpSequence: true });
    const o = await driver.attempt('p2pnat');
    note('p2pnat full-cone ↔ port-restricted, both rewriting sequence numbers', o);
    assert.ok(o.ok, JSON.stringify(o));
  });
});
