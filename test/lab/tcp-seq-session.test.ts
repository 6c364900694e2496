/**
 * STUNT #1 and NATBlaster as strategies of connect({ transport: 'tcp' }) through the real rendezvous: the offers
 * travel as SEQ_OFFER messages, `natpunch serve --spoof` spoofs the STUNT #1 SYN-ACKs itself, and the punched socket
 * carries the same Noise session as every other path (512 KiB hashed both ways). The NATs drop an inbound SYN that
 * follows an outbound SYN (src/lab/nat.ts dropSynAfterSyn), so P2P-NAT finds nothing and the techniques, which run
 * beside it on a port of their own (src/traversal/tcp-path.ts), connect.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type LabProcess, type NatOptions } from '../../src/lab/index.js';
import { addonStatus } from '../../src/net/native.js';
import { intactBothWays, tcpSessionTrial, type SessionTrial } from './fixtures/tcp-session-trial.js';
import { cliEvent, tokenBothWays } from './fixtures/cli-event.js';

const CLI = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
/** `natpunch serve --spoof` (STUNT #1 spoofing rendezvous) and a plain `natpunch serve` beside it. */
const SPOOF_PORT = 3478;
const PLAIN_PORT = 3490;
const SIZE = 512 * 1024;
const addon = addonStatus();
const skip = labUnavailableReason() || (addon.available ? false : `native addon unavailable: ${addon.reason}`);

const setprivMissing = spawnSync('setpriv', ['--version']).status === 0 ? false : 'setpriv (util-linux) not installed';
const SYN_AFTER_SYN: NatOptions = { type: 'port-restricted-cone', stealth: true, dropSynAfterSyn: true };

interface Path {
  transport?: string;
  kind: string;
  remote: { address: string };
  tcpTechnique?: string;
}

describe('STUNT #1 and NATBlaster inside connect({ transport: "tcp" }) in the NAT lab', { skip }, () => {
  let lab: Lab;
  const log: string[] = [];

  before(async () => {
    lab = await Lab.up();
    const spoof = lab.spawn('server', [
      process.execPath,
      CLI,
      'serve',
      '--spoof',
      '--json',
      '--port',
      String(SPOOF_PORT),
      '--address',
      lab.addr('server'),
    ]);
    await spoof.next((m) => m.event === 'listening', { timeoutMs: 20_000 });
    const plain = lab.node('server', fileURLToPath(new URL('./fixtures/serve-node.ts', import.meta.url)), [
      String(PLAIN_PORT),
    ]);
    await plain.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  });
  after(async () => {
    if (log.length)
      console.log(`# TCP sequence-number techniques through connect()\n${log.map((l) => `#   ${l}`).join('\n')}`);
    await lab?.down(); // kills every process it spawned
  });

  async function nats(o: NatOptions): Promise<void> {
    await lab.setNat('natA', o);
    await lab.setNat('natB', o);
  }

  const trial = (port: number, extra: string[] = []) => tcpSessionTrial(lab, port, { size: SIZE, extra });

  function dataBothWays(t: SessionTrial): void {
    assert.equal(t.c.type, 'result', `connecting side: ${t.c.code} ${t.c.message}`);
    assert.equal(t.l.type, 'result');
    assert.ok(intactBothWays(t), 'each side got exactly what the other sent');
  }

  test('a spoofing rendezvous: P2P-NAT finds nothing, STUNT #1 connects, the Noise session runs over the socket', async () => {
    await nats(SYN_AFTER_SYN);
    const t = await trial(SPOOF_PORT);
    log.push(
      `spoofing rendezvous, drop-SYN-after-SYN NATs: ${t.c.type === 'result' ? (t.c.path as Path).tcpTechnique : `failed: ${String(t.c.message)}`}`,
    );
    dataBothWays(t);
    const cp = t.c.path as Path;
    const lp = t.l.path as Path;
    assert.equal(cp.transport, 'tcp');
    assert.equal(cp.tcpTechnique, 'stunt1');
    assert.equal(lp.tcpTechnique, 'stunt1');
    assert.equal(cp.remote.address, lab.publicAddr('natB'));
    const path = t.progress.find((p) => p.phase === 'path');
    assert.equal(path?.technique, 'stunt1');
    // Both peers offered port Q, so STUNT #1 ran there beside P2P-NAT instead of after its failure (tcp-path.ts).
    assert.match(String(path?.reason), /P2P-NAT had found no path when STUNT #1 connected/);
  });

  test('NATs that drop inbound SYNs after tracking them: `--tcp-seq auto` with a spoofing rendezvous connects by STUNT #1 on its own 5-tuple', async () => {
    // P2P-NAT's SYNs cross in the NATs' connection tracking (SYN_SENT2, the peer's sequence number recorded) before the
    // forward filter drops them; a STUNT #1 SYN-ACK on that same 5-tuple would be invalid there.
    await nats({ type: 'port-restricted-cone', stealth: true, dropInboundSyn: true });
    const t = await trial(SPOOF_PORT, ['--tcp-seq', 'auto']);
    log.push(
      `forward-filter SYN drop, auto: ${t.c.type === 'result' ? `${(t.c.path as Path).tcpTechnique} in ${t.elapsedMs} ms` : `failed: ${String(t.c.message)}`}`,
    );
    dataBothWays(t);
    assert.equal((t.c.path as Path).tcpTechnique, 'stunt1');
    assert.equal((t.l.path as Path).tcpTechnique, 'stunt1');
  });

  test('a plain rendezvous and NATs that translate an outbound SYN-ACK: NATBlaster connects after P2P-NAT fails', async () => {
    await nats({ ...SYN_AFTER_SYN, translateOutboundSynAck: true });
    const t = await trial(PLAIN_PORT);
    log.push(
      `plain rendezvous, NATs translating the SYN-ACK: ${t.c.type === 'result' ? (t.c.path as Path).tcpTechnique : `failed: ${String(t.c.message)}`}`,
    );
    dataBothWays(t);
    assert.equal((t.c.path as Path).tcpTechnique, 'natblaster');
    assert.equal((t.l.path as Path).tcpTechnique, 'natblaster');
  });

  test('`natpunch listen/connect --transport tcp --tcp-seq natblaster`: the CLI goes straight to NATBlaster; lines both ways', async () => {
    await nats({ ...SYN_AFTER_SYN, translateOutboundSynAck: true });
    const name = `seqcli-${randomBytes(4).toString('hex')}`;
    const rv = `${lab.addr('server')}:${PLAIN_PORT}`;
    const flags = ['--rendezvous', rv, '--transport', 'tcp', '--tcp-seq', 'natblaster', '--json'];
    const l = lab.node('b', CLI, ['listen', '--name', name, ...flags]);
    let c: LabProcess | null = null;
    try {
      await cliEvent(l, 'listening');
      c = lab.node('a', CLI, ['connect', name, ...flags]);
      await tokenBothWays(c, l);
      const path = await cliEvent(c, 'path');
      assert.equal(path.technique, 'natblaster', c.stderr);
      assert.match(String(path.reason), /--tcp-seq natblaster/);
      log.push(`CLI --tcp-seq natblaster: ${String(path.technique)} via ${String(path.type)}`);
    } finally {
      await Promise.all([c?.close(), l.close()]);
    }
  });

  test(
    'a listener without CAP_NET_RAW declines: the connector fails at once with its reason instead of waiting',
    { skip: setprivMissing },
    async () => {
      await nats(SYN_AFTER_SYN);
      const t = await tcpSessionTrial(lab, SPOOF_PORT, {
        listenerWrap: ['setpriv', '--bounding-set=-net_raw', '--inh-caps=-net_raw'],
      });
      log.push(`listener without CAP_NET_RAW: ${String(t.c.message)}`);
      assert.equal(t.c.type, 'error');
      assert.equal(t.c.code, 'PUNCH_FAILED');
      assert.match(
        String(t.c.message),
        /P2P-NAT failed .*the peer does not take part in STUNT #1 \/ NATBlaster: no raw sockets here/,
      );
    },
  );

  test('NATs that rewrite TCP sequence numbers: connect fails and says why, as the literature says it must', async () => {
    await nats({ ...SYN_AFTER_SYN, translateOutboundSynAck: true, rewriteTcpSequence: true });
    const t = await trial(SPOOF_PORT);
    log.push(`sequence-rewriting NATs: ${t.c.type === 'result' ? 'connected?!' : String(t.c.message)}`);
    assert.equal(t.c.type, 'error');
    assert.equal(t.c.code, 'PUNCH_FAILED');
    assert.match(String(t.c.message), /P2P-NAT failed/);
    // The first host to get its (wrong) SYN-ACK names the rewrite; its RST may end the other side's attempt first.
    const messages = [t.c.message, t.l.message].map(String);
    assert.ok(
      messages.some((m) => /rewrites TCP sequence numbers/.test(m)),
      messages.join(' | '),
    );
  });
});
