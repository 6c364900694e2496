/**
 * Mapped candidates in listen() / connect() (issue 9): a listener behind a symmetric-random NAT whose gateway
 * (miniupnpd on natA) maps ports is reached directly by a connector behind another symmetric-random NAT, through
 * the 'mapped' candidate the listener offered; closing the listener deletes the mapping from the router.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Lab, labUnavailableReason, type LabProcess } from '../../src/lab/index.js';
import { Miniupnpd } from './fixtures/miniupnpd.js';
import { cliEvent } from './fixtures/cli-event.js';

const skip =
  labUnavailableReason() ??
  (existsSync('/usr/sbin/miniupnpd') ? undefined : 'miniupnpd is not installed (apt-get install miniupnpd-nftables)');
if (skip) console.log(`# port-mapping session lab test skipped: ${skip}`);

const STUN = fileURLToPath(new URL('./fixtures/stun-responder.ts', import.meta.url));
const SERVE = fileURLToPath(new URL('./fixtures/serve-node.ts', import.meta.url));
const CLI = fileURLToPath(new URL('../../bin/natpunch.js', import.meta.url));
const PEER = fileURLToPath(new URL('./fixtures/rendezvous-session-peer.ts', import.meta.url));
/** The STUN responder miniupnpd asks keeps 3478; the rendezvous runs next to it. */
const RV_PORT = 3479;

type Json = Record<string, unknown>;

describe('port mapping in listen() / connect() with miniupnpd on the lab router', { skip }, () => {
  let lab: Lab;
  let gw: Miniupnpd;
  const procs: LabProcess[] = [];

  before(async () => {
    lab = await Lab.up({ nat: { natA: 'port-restricted-cone', natB: 'port-restricted-cone' } });
    const stun = lab.node('server', STUN, [lab.addr('server'), '3478']);
    procs.push(stun);
    await stun.next((m) => m.type === 'ready');
    const rv = lab.node('server', SERVE, [String(RV_PORT)]);
    procs.push(rv);
    await rv.next((m) => m.type === 'ready', { timeoutMs: 15_000 });
    gw = new Miniupnpd(lab, 'natA', {
      stunHost: lab.addr('server'),
      lanPrefix: `${lab.addr('a').split('.').slice(0, 3).join('.')}.0/24`,
    });
    // miniupnpd checks its address with STUN at start, while natA is still a cone NAT (see portmap-miniupnpd).
    await gw.start();
    await lab.setNat('natA', 'symmetric-random');
    await lab.setNat('natB', 'symmetric-random');
  });

  after(async () => {
    for (const p of procs) await p.close().catch(() => {});
    await gw?.dispose().catch(() => {});
    await lab?.down();
  });

  test('a symmetric-random peer reaches a mapped symmetric-random listener directly; close deletes the mapping', async () => {
    const aAddr = lab.addr('a');
    const rv = `${lab.addr('server')}:${RV_PORT}`;
    const listener = lab.node('a', PEER, ['listen', '--rendezvous', rv, '--name', 'mapped', '--port-mapping']);
    procs.push(listener);
    const mapped = await listener.next((m) => m.ev === 'port-mapping' || m.ev === 'fatal', { timeoutMs: 15_000 });
    assert.equal(
      mapped.ok,
      true,
      `${JSON.stringify(mapped)}\n${listener.stderr}\nminiupnpd: ${gw.proc?.stderr.slice(-1500)}`,
    );
    const external = mapped.external as { address: string; port: number };
    assert.equal(external.address, lab.publicAddr('natA'));
    const listening = await listener.next((m) => m.ev === 'listening' || m.ev === 'fatal', { timeoutMs: 15_000 });
    assert.equal(listening.ev, 'listening', JSON.stringify(listening));
    const port = listening.port as number;
    const offered = (listening.candidates as Json[]).find((c) => c.type === 'mapped');
    assert.deepEqual(
      offered && { address: offered.address, port: offered.port },
      external,
      JSON.stringify(listening.candidates),
    );
    assert.ok(await gw.hasDnat(aAddr, port), `no DNAT rule for ${aAddr}:${port}:\n${await gw.rules()}`);

    const connector = lab.node('b', PEER, ['connect', '--rendezvous', rv]);
    procs.push(connector);
    const ready = await connector.next((m) => m.ev === 'ready', { timeoutMs: 15_000 });
    connector.send({ cmd: 'connect', to: 'mapped' });
    const connected = await connector.next((m) => m.ev === 'connected' || m.ev === 'error', { timeoutMs: 25_000 });
    assert.equal(connected.ev, 'connected', JSON.stringify(connected));
    const path = connected.path as { kind: string; remote: Json; candidatePair: { remote: Json } };
    assert.equal(path.kind, 'direct', JSON.stringify(path));
    assert.equal(path.candidatePair.remote.type, 'mapped', JSON.stringify(path));
    assert.deepEqual(path.remote, external);
    const session = await listener.next((m) => m.ev === 'session', { timeoutMs: 15_000 });
    assert.equal(connected.peer, listening.key);
    assert.equal(session.peer, ready.key);
    // 256 KiB to the listener, its SHA-256 back over the same stream.
    connector.send({ cmd: 'send', size: 256 * 1024 });
    assert.equal((await connector.next((m) => m.ev === 'echo' || m.ev === 'error', { timeoutMs: 15_000 })).ok, true);

    // The listener closes (SIGTERM → listener.close()): the mapping is deleted on the router.
    await connector.close();
    listener.kill('SIGTERM');
    const exit = await Promise.race([
      listener.exited,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`listener did not exit: ${listener.stderr}`)), 10_000),
      ),
    ]);
    assert.equal(exit.code, 0, listener.stderr);
    assert.equal(await gw.hasDnat(aAddr, port), false, `rule left behind:\n${await gw.rules()}`);
    assert.equal(gw.lease(port), undefined);
  });

  test('`natpunch listen --port-mapping --json` reports the mapping and deletes it on Ctrl-C', async () => {
    const rv = `${lab.addr('server')}:${RV_PORT}`;
    const cli = lab.node('a', CLI, ['listen', '--rendezvous', rv, '--name', 'cli', '--port-mapping', '--json']);
    procs.push(cli);
    const line = (event: string): Promise<Json> => cliEvent(cli, event, 15_000);
    const mapped = await line('port-mapping');
    assert.equal(mapped.ok, true, JSON.stringify(mapped));
    const gathering = await line('gathering');
    const port = (gathering.local as { port: number }).port;
    await line('listening');
    assert.ok(await gw.hasDnat(lab.addr('a'), port), `no DNAT rule for port ${port}:\n${await gw.rules()}`);
    cli.kill('SIGINT');
    await Promise.race([
      cli.exited,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`listen did not exit: ${cli.stderr}`)), 10_000),
      ),
    ]);
    assert.equal(await gw.hasDnat(lab.addr('a'), port), false, `rule left behind:\n${await gw.rules()}`);
    assert.equal(gw.lease(port), undefined);
  });

  test('control: without port mapping the same pair of symmetric-random NATs gets no session', async () => {
    const rv = `${lab.addr('server')}:${RV_PORT}`;
    // Port mapping and the relay are on by default: the control turns both off.
    const listener = lab.node('a', PEER, [
      'listen',
      '--rendezvous',
      rv,
      '--name',
      'unmapped',
      '--no-port-mapping',
      '--no-relay',
    ]);
    procs.push(listener);
    const listening = await listener.next((m) => m.ev === 'listening' || m.ev === 'fatal', { timeoutMs: 15_000 });
    assert.equal(listening.ev, 'listening', JSON.stringify(listening));
    assert.equal(
      (listening.candidates as Json[]).some((c) => c.type === 'mapped'),
      false,
    );
    const connector = lab.node('b', PEER, ['connect', '--rendezvous', rv, '--no-port-mapping', '--no-relay']);
    procs.push(connector);
    await connector.next((m) => m.ev === 'ready', { timeoutMs: 15_000 });
    connector.send({ cmd: 'connect', to: 'unmapped' });
    const r = await connector.next((m) => m.ev === 'connected' || m.ev === 'error', { timeoutMs: 30_000 });
    assert.equal(r.ev, 'error', JSON.stringify(r));
    await connector.close();
    await listener.close();
  });
});
