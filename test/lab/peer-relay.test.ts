// The default relay in the NAT lab: `natpunch serve` with no options (serve-node.ts) runs the relay in peer-relay
// mode, and peers whose NAT blocks all UDP reach it over TCP (their rendezvous runs over TCP, so the relay does
// too), relayed sessions verified with data both ways. Issue 16: udp-blocked ↔ port-restricted and udp-blocked ↔
// udp-blocked must connect through the default server.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type LabProcess } from '../../src/lab/index.js';

const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

const SERVE = fileURLToPath(new URL('./fixtures/serve-node.ts', import.meta.url));
const PEER = fileURLToPath(new URL('./fixtures/rendezvous-session-peer.ts', import.meta.url));
const PORT = 3478;
type Json = Record<string, unknown>;

describe('default serve relays for peers behind UDP-blocking NATs', { skip }, () => {
  let lab: Lab;
  let server: LabProcess;
  let rv: string;
  before(async () => {
    lab = await Lab.up();
    server = lab.node('server', SERVE, [String(PORT)]);
    await server.next((m) => m.type === 'ready', { timeoutMs: 20_000 });
    rv = `${lab.addr('server')}:${PORT}`;
  });
  after(async () => {
    await lab?.down();
  });

  /**
   * No flags: the defaults (the relay is on by default). `udpOnly`: no TCP punching, so a connection between a
   * UDP-blocked and another NAT can only be the relay.
   */
  async function pair(name: string, udpOnly = false): Promise<{ listenerPath: Json; connectorPath: Json }> {
    const extra = udpOnly ? ['--transport', 'udp'] : [];
    const listener = lab.node('b', PEER, ['listen', '--rendezvous', rv, '--name', name, ...extra]);
    const connector = lab.node('a', PEER, ['connect', '--rendezvous', rv, ...extra]);
    try {
      const l = await listener.next((m) => m.ev === 'listening' || m.ev === 'fatal', { timeoutMs: 30_000 });
      assert.equal(l.ev, 'listening', JSON.stringify(l));
      await connector.next((m) => m.ev === 'ready', { timeoutMs: 20_000 });
      connector.send({ cmd: 'connect', to: name });
      const c = await connector.next((m) => m.ev === 'connected' || m.ev === 'error', { timeoutMs: 40_000 });
      assert.equal(c.ev, 'connected', JSON.stringify(c));
      const s = await listener.next((m) => m.ev === 'session', { timeoutMs: 10_000 });
      connector.send({ cmd: 'send', size: 256 * 1024 });
      const echo = await connector.next((m) => m.ev === 'echo' || m.ev === 'error', { timeoutMs: 30_000 });
      assert.equal(
        echo.ok,
        true,
        `the listener got every byte (its SHA-256 came back over the session): ${JSON.stringify(echo)}`,
      );
      return { listenerPath: s.path as Json, connectorPath: c.path as Json };
    } finally {
      await connector.close();
      await listener.close();
    }
  }

  test('udp-blocked ↔ port-restricted, UDP only: connects through the default relay (reached over TCP), data verified', async () => {
    await lab.setNat('natA', 'udp-blocked');
    await lab.setNat('natB', 'port-restricted-cone');
    const r = await pair('pr', true);
    assert.equal(r.connectorPath.kind, 'relay', JSON.stringify(r));
  });

  test('port-restricted ↔ udp-blocked (the listener walled), UDP only: connects through the default relay, data verified', async () => {
    await lab.setNat('natA', 'port-restricted-cone');
    await lab.setNat('natB', 'udp-blocked');
    const r = await pair('walled', true);
    assert.equal(r.listenerPath.kind, 'relay', JSON.stringify(r));
  });

  test('udp-blocked ↔ port-restricted with no flags: connects (TCP punching or the relay), data verified', async () => {
    await lab.setNat('natA', 'udp-blocked');
    await lab.setNat('natB', 'port-restricted-cone');
    await pair('pr-default');
  });

  test('udp-blocked ↔ udp-blocked with no flags: both relay over TCP, relay to relay, data verified', async () => {
    await lab.setNat('natA', 'udp-blocked');
    await lab.setNat('natB', 'udp-blocked');
    const r = await pair('both');
    assert.equal(r.connectorPath.kind, 'relay');
    assert.equal(r.listenerPath.kind, 'relay');
  });
});
