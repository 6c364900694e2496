/**
 * Sessions over TCP hole punching through the real rendezvous (`natpunch serve` in the lab's server namespace):
 * connect({ transport: 'tcp' }) between cone NAT pairs carries the Noise session and its streams; `auto` keeps a
 * working path; without the native addon `auto` falls back to UDP and says why, and `tcp` fails ADDON_UNAVAILABLE.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type LabProcess, type NatOptions, type NatType } from '../../src/lab/index.js';
import { addonStatus } from '../../src/net/native.js';
import { tcpSessionTrial, type SessionTrial } from './fixtures/tcp-session-trial.js';
import { cliEvent, tokenBothWays } from './fixtures/cli-event.js';

const FIXTURE = new URL('./fixtures/tcp-session-peer.ts', import.meta.url).pathname;
const CLI = new URL('../../bin/natpunch.js', import.meta.url).pathname;
const RV_PORT = 3478;
const SIZE = 512 * 1024;
const labSkip = labUnavailableReason();
const addon = addonStatus();
const tcpSkip = labSkip || (addon.available ? false : `native addon unavailable: ${addon.reason}`);

type NatSpec = NatType | NatOptions;
const label = (n: NatSpec) => (typeof n === 'string' ? n : `${n.type}${n.stealth ? ' (drops unsolicited SYNs)' : ''}`);

describe('sessions over TCP hole punching through the rendezvous in the NAT lab', { skip: labSkip }, () => {
  let lab: Lab;
  const procs: LabProcess[] = [];

  before(async () => {
    lab = await Lab.up();
    const serve = lab.node('server', new URL('./fixtures/serve-node.ts', import.meta.url).pathname, [String(RV_PORT)]);
    await serve.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
  });
  after(async () => {
    await lab?.down(); // kills every process it spawned
  });

  async function trial(
    from: 'a' | 'b',
    to: string,
    transport: string,
    opts: { noAddon?: boolean; nat?: [NatSpec, NatSpec]; extra?: string[] } = {},
  ): Promise<SessionTrial> {
    if (opts.nat) {
      await lab.setNat('natA', opts.nat[0]);
      await lab.setNat('natB', opts.nat[1]);
    }
    const t = await tcpSessionTrial(lab, RV_PORT, {
      from,
      transport,
      size: SIZE,
      ...(opts.extra ? { extra: opts.extra } : {}),
      ...(opts.noAddon ? { env: { ...process.env, NATPUNCH_NO_ADDON: '1' } } : {}),
    });
    if (t.c.type !== 'result')
      console.log(
        `# ${from}→${to} ${transport} failed; connector: ${JSON.stringify(t.c)} ${JSON.stringify(t.progress)}; listener: ${JSON.stringify(t.l)}`,
      );
    return t;
  }

  function dataBothWays(t: SessionTrial): void {
    assert.equal(t.c.type, 'result', `connecting side: ${t.c.code} ${t.c.message}`);
    assert.equal(t.l.type, 'result');
    assert.equal(t.l.gotHash, t.c.sentHash, 'listener got what the connector sent');
    assert.equal(t.c.gotHash, t.l.sentHash, 'connector got what the listener sent');
  }

  // The cone pairs P2P-NAT handles (test/lab/tcp-punch.test.ts has the full matrix; port-restricted on both sides
  // works when the NATs drop unsolicited SYNs silently, through simultaneous open, and fails when they answer RST).
  const pairs: Array<[NatSpec, NatSpec, 'a' | 'b']> = [
    ['full-cone', 'restricted-cone', 'a'],
    ['restricted-cone', 'port-restricted-cone', 'b'],
    [{ type: 'port-restricted-cone', stealth: true }, { type: 'port-restricted-cone', stealth: true }, 'a'],
  ];
  for (const [na, nb, from] of pairs) {
    const to = from === 'a' ? 'b' : 'a';
    test(
      `transport tcp from ${from} (behind ${label(from === 'a' ? na : nb)}) to ${to} (behind ${label(from === 'a' ? nb : na)}): the session runs over TCP, data hashed both ways`,
      { skip: tcpSkip },
      async () => {
        const t = await trial(from, to, 'tcp', { nat: [na, nb] });
        dataBothWays(t);
        assert.equal(t.c.transport, 'tcp');
        assert.equal(t.l.transport, 'tcp');
        const path = t.c.path as { transport: string; kind: string; remote: { address: string } };
        assert.equal(path.transport, 'tcp');
        assert.equal(path.kind, 'direct');
        assert.equal(path.remote.address, lab.publicAddr(to === 'b' ? 'natB' : 'natA'));
      },
    );
  }

  // STUNT #2 inside connect(): NATs that answer an unsolicited SYN with RST defeat plain P2P-NAT unless both SYNs are
  // in flight at once (test/lab/tcp-punch.test.ts); the responder opens its NAT with guarded low-TTL SYNs and the
  // initiator walks in after a short hold-back, in either direction.
  for (const from of ['a', 'b'] as const) {
    test(
      `transport tcp from ${from} across two port-restricted NATs that answer RST: STUNT #2 opens, data both ways`,
      { skip: tcpSkip },
      async () => {
        const t = await trial(from, from === 'a' ? 'b' : 'a', 'tcp', {
          nat: ['port-restricted-cone', 'port-restricted-cone'],
          extra: ['--tcp-seq', 'off'],
        });
        dataBothWays(t);
        assert.equal(t.c.transport, 'tcp');
        assert.equal((t.c.path as { tcpTechnique?: string }).tcpTechnique, 'p2pnat');
      },
    );
  }

  // Port prediction (src/traversal/tcp-predict.ts): the symmetric side measures its NAT's TCP allocation right before
  // it offers candidates and offers the window of next ports; the port-restricted side punches every port of it, so
  // its NAT lets in the symmetric side's SYN from whichever port that SYN got.
  for (const from of ['a', 'b'] as const) {
    test(
      `transport tcp from ${from} between symmetric-sequential (a) and port-restricted (b): connects by port prediction, data both ways`,
      { skip: tcpSkip },
      async () => {
        const t = await trial(from, from === 'a' ? 'b' : 'a', 'tcp', {
          nat: ['symmetric-sequential', 'port-restricted-cone'],
        });
        dataBothWays(t);
        assert.equal(t.c.transport, 'tcp');
        assert.equal(t.l.transport, 'tcp');
        // b (behind the port-restricted NAT) reached a at one of the predicted ports.
        const bPath = (from === 'b' ? t.c.path : t.l.path) as {
          kind: string;
          candidatePair: { remote: { type: string; address: string } };
        };
        assert.equal(bPath.kind, 'direct');
        assert.equal(bPath.candidatePair.remote.type, 'predicted');
        assert.equal(bPath.candidatePair.remote.address, lab.publicAddr('natA'));
      },
    );
  }

  test(
    '`natpunch listen/connect --transport tcp` between symmetric-sequential and port-restricted: lines both ways over a predicted port',
    { skip: tcpSkip },
    async () => {
      await lab.setNat('natA', 'symmetric-sequential');
      await lab.setNat('natB', 'port-restricted-cone');
      const name = `pred-${randomBytes(4).toString('hex')}`;
      const flags = ['--rendezvous', `${lab.addr('server')}:${RV_PORT}`, '--transport', 'tcp', '--json'];
      const l = lab.node('a', CLI, ['listen', '--name', name, ...flags]);
      procs.push(l);
      await cliEvent(l, 'listening');
      const c = lab.node('b', CLI, ['connect', name, ...flags]);
      procs.push(c);
      try {
        await tokenBothWays(c, l);
        const path = await cliEvent(c, 'path');
        assert.equal(path.type, 'tcp-predicted', c.stderr);
        assert.equal(path.technique, 'p2pnat');
      } finally {
        await Promise.all([c.close(), l.close()]);
      }
    },
  );

  test(
    'transport auto across port-restricted cones: one session on a working path, the choice reported',
    { skip: tcpSkip },
    async () => {
      const t = await trial('b', 'a', 'auto', { nat: ['port-restricted-cone', 'port-restricted-cone'] });
      dataBothWays(t);
      assert.equal(t.c.transport, t.l.transport, 'both ends on the same transport');
      const reason = (t.c.path as { transportReason?: string }).transportReason;
      assert.ok(reason && reason.length > 0, 'the reason for the transport is reported');
      console.log(`# auto chose ${String(t.c.transport)}: ${reason}`);
    },
  );

  test(
    'transport auto when UDP between the peers is dropped: the session runs over TCP and says why',
    { skip: tcpSkip },
    async () => {
      // Host a drops UDP to natB's public address (nftables in a's namespace; the rendezvous stays reachable).
      const nft = async (args: string[]) => {
        const r = await lab.exec('a', ['nft', ...args]);
        assert.equal(r.code, 0, `nft ${args.join(' ')}: ${r.stderr}`);
      };
      await nft(['add', 'table', 'inet', 'tcpsess']);
      try {
        await nft(['add', 'chain', 'inet', 'tcpsess', 'out', '{ type filter hook output priority 0 ; }']);
        await nft([
          'add',
          'rule',
          'inet',
          'tcpsess',
          'out',
          'ip',
          'daddr',
          lab.publicAddr('natB'),
          'meta',
          'l4proto',
          'udp',
          'drop',
        ]);
        const t = await trial('a', 'b', 'auto', { nat: ['full-cone', 'restricted-cone'] });
        dataBothWays(t);
        assert.equal(t.c.transport, 'tcp');
        assert.equal(t.l.transport, 'tcp');
        assert.match(String((t.c.path as { transportReason?: string }).transportReason), /UDP (failed|did not within)/);
        // Exactly one 'path' event names the transport (src/endpoint/attempt.ts).
        assert.equal(t.progress.filter((p) => p.phase === 'path').length, 1);
        assert.ok(t.progress.some((p) => p.phase === 'path' && p.transport === 'tcp'));
      } finally {
        await nft(['delete', 'table', 'inet', 'tcpsess']).catch(() => {});
      }
    },
  );

  test('NATPUNCH_NO_ADDON=1: auto falls back to UDP and reports why', async () => {
    const t = await trial('a', 'b', 'auto', { noAddon: true, nat: ['port-restricted-cone', 'port-restricted-cone'] });
    dataBothWays(t);
    assert.equal(t.c.transport, 'udp');
    assert.equal(t.l.transport, 'udp');
    // The Endpoint says why at gathering, in the 'transport' progress event (TCP was never raced, so the session's
    // path carries no transport choice to explain).
    assert.ok(
      t.progress.some(
        (p) =>
          p.phase === 'transport' &&
          p.transport === 'udp' &&
          /TCP hole punching unavailable.*NATPUNCH_NO_ADDON=1.*using UDP/.test(String(p.reason)),
      ),
    );
  });

  test('NATPUNCH_NO_ADDON=1: transport tcp fails with ADDON_UNAVAILABLE', async () => {
    const name = `tcp-${randomBytes(4).toString('hex')}`;
    const c = lab.node(
      'a',
      FIXTURE,
      [
        'connect',
        '--rendezvous',
        `${lab.addr('server')}:${RV_PORT}`,
        '--name',
        name,
        '--transport',
        'tcp',
        '--size',
        '1',
      ],
      {
        env: { ...process.env, NATPUNCH_NO_ADDON: '1' },
      },
    );
    procs.push(c);
    const r = await c.next((m) => m.type === 'result' || m.type === 'error', { timeoutMs: 30_000 });
    await c.close();
    assert.equal(r.type, 'error');
    assert.equal(r.code, 'ADDON_UNAVAILABLE');
  });
});
