import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { getEventListeners, once } from 'node:events';
import { addonStatus, loadAddon } from '../../src/net/native.js';
import { bindReusePort, connectFrom } from '../../src/net/tcp.js';
import { tcpPunch } from '../../src/traversal/tcp-p2pnat.js';
import { isNatpunchError } from '../../src/util/errors.js';

const addon = addonStatus();
const skip = addon.available ? false : addon.reason;
const LO = '127.0.0.1';

function freePort(): number {
  const addon = loadAddon();
  const fd = bindReusePort(LO, 0, addon);
  const port = addon.getSockName(fd).port;
  addon.close(fd);
  return port;
}

function readOnce(s: net.Socket): Promise<string> {
  return Promise.race([
    once(s, 'data').then(([d]) => String(d)),
    new Promise<string>((_, rej) => setTimeout(() => rej(new Error('no data within 5 s')), 5000).unref()),
  ]);
}

test('both peers punch from their rendezvous ports and agree on one connection', { skip }, async () => {
  // A stand-in rendezvous server: each peer's connection to it fixes the port P it then punches from.
  const rendezvous = net.createServer((s) => s.on('error', () => {}));
  rendezvous.listen(0, LO);
  await once(rendezvous, 'listening');
  const rport = (rendezvous.address() as net.AddressInfo).port;
  const ra = await connectFrom({ address: LO, port: rport, localAddress: LO });
  const rb = await connectFrom({ address: LO, port: rport, localAddress: LO });
  const pa = ra.localPort!;
  const pb = rb.localPort!;
  try {
    const [a, b] = await Promise.all([
      tcpPunch({
        localAddress: LO,
        localPort: pa,
        candidates: [{ address: LO, port: pb }],
        role: 'controlling',
        timeoutMs: 8000,
      }),
      tcpPunch({
        localAddress: LO,
        localPort: pb,
        candidates: [{ address: LO, port: pa }],
        role: 'controlled',
        timeoutMs: 8000,
      }),
    ]);
    try {
      // The same TCP connection on both sides (there may have been two; nomination picked one).
      assert.equal(a.socket.localPort, pa);
      assert.equal(a.socket.remotePort, b.socket.localPort);
      assert.equal(b.socket.remotePort, a.socket.localPort);
      a.socket.write('ping');
      assert.equal(await readOnce(b.socket), 'ping');
      b.socket.write('pong');
      assert.equal(await readOnce(a.socket), 'pong');
      // The rendezvous connections on the same ports are untouched.
      assert.equal(ra.destroyed, false);
      assert.equal(rb.destroyed, false);
    } finally {
      a.socket.destroy();
      b.socket.destroy();
    }
  } finally {
    ra.destroy();
    rb.destroy();
    rendezvous.close();
  }
});

test('an unreachable peer ends in PUNCH_FAILED within the time bound, naming the last error', { skip }, async () => {
  const mine = freePort();
  const nobody = freePort(); // nothing listens: every SYN is answered with RST
  await assert.rejects(
    tcpPunch({
      localAddress: LO,
      localPort: mine,
      candidates: [{ address: LO, port: nobody }],
      role: 'controlling',
      timeoutMs: 800,
      retryDelayMs: 50,
    }),
    (e: unknown) =>
      isNatpunchError(e, 'PUNCH_FAILED') && /ECONNREFUSED/.test(e.message) && Number(e.details?.attempts) > 1,
  );
  // The port is free again: nothing was left bound or listening.
  const s = net.createServer().listen(mine, LO);
  await once(s, 'listening');
  s.close();
});

test('punching stops with ABORTED when its signal fires', { skip }, async () => {
  const ac = new AbortController();
  const p = tcpPunch({
    localAddress: LO,
    localPort: freePort(),
    candidates: [{ address: LO, port: freePort() }],
    role: 'controlled',
    signal: ac.signal,
  });
  setTimeout(() => ac.abort(), 100);
  await assert.rejects(p, (e: unknown) => isNatpunchError(e, 'ABORTED'));
});

test(
  'many candidates and many punches on one long-lived signal: its abort listeners stay bounded, no process warning',
  { skip },
  async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    const closers: Array<() => void> = [];
    const ac = new AbortController();
    let most = 0;
    const sample = setInterval(() => (most = Math.max(most, getEventListeners(ac.signal, 'abort').length)), 5);
    try {
      // 24 candidates that answer every SYN with RST (bound, never listening, held for the whole test so no punch
      // can take one of their ports and connect to itself): each retries on its own loop, as a predicted window does.
      const native = loadAddon();
      const held = Array.from({ length: 24 }, () => bindReusePort(LO, 0, native));
      closers.push(() => held.forEach((fd) => native.close(fd)));
      const candidates = held.map((fd) => ({ address: LO, port: native.getSockName(fd).port }));
      const taken = new Set(candidates.map((c) => c.port));
      const localPort = () => {
        for (;;) {
          const p = freePort();
          if (!taken.has(p)) return p;
        }
      };
      for (let i = 0; i < 12; i++) {
        await assert.rejects(
          tcpPunch({
            localAddress: LO,
            localPort: localPort(),
            candidates,
            role: 'controlling',
            timeoutMs: 150,
            retryDelayMs: 10,
            signal: ac.signal,
          }),
          (e: unknown) => isNatpunchError(e, 'PUNCH_FAILED'),
        );
        assert.equal(getEventListeners(ac.signal, 'abort').length, 0, `punch ${i} left a listener on the signal`);
      }
      await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
      assert.ok(most <= 2, `at most 2 abort listeners at once on the caller's signal, saw ${most}`);
      assert.deepEqual(
        warnings.map((w) => w.name),
        [],
      );
    } finally {
      clearInterval(sample);
      process.off('warning', onWarning);
      for (const close of closers) close();
    }
  },
);

test('inbound connections from addresses that are not candidates are dropped', { skip }, async () => {
  const mine = freePort();
  const p = tcpPunch({
    localAddress: LO,
    localPort: mine,
    candidates: [{ address: '127.0.0.2', port: freePort() }],
    role: 'controlled',
    timeoutMs: 1500,
    retryDelayMs: 100,
  });
  const stranger = net.connect({ port: mine, host: LO });
  stranger.on('error', () => {});
  const closed = once(stranger, 'close');
  await assert.rejects(p, (e: unknown) => isNatpunchError(e, 'PUNCH_FAILED'));
  await closed;
});

test('bad arguments are refused before any socket is opened', { skip }, async () => {
  await assert.rejects(tcpPunch({ localPort: 1234, candidates: [], role: 'controlling' }), (e: unknown) =>
    isNatpunchError(e, 'BAD_ARGUMENT'),
  );
  await assert.rejects(
    tcpPunch({ localPort: 0, candidates: [{ address: LO, port: 1 }], role: 'controlling' }),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
  await assert.rejects(
    tcpPunch({ localPort: 1234, candidates: [{ address: 'peer.example', port: 1 }], role: 'controlling' }),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
  await assert.rejects(
    tcpPunch({ localPort: 1234, candidates: [{ address: LO, port: 70000 }], role: 'controlling' }),
    (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
  );
});

test(
  'the controlled side drops a connection whose first byte is not the nomination and keeps waiting',
  { skip },
  async () => {
    const mine = freePort();
    const p = tcpPunch({
      localAddress: LO,
      localPort: mine,
      candidates: [{ address: LO, port: freePort() }],
      role: 'controlled',
      timeoutMs: 4000,
      retryDelayMs: 100,
    });
    // Something at a candidate address that does not speak the nomination: dropped.
    const wrong = net.connect({ port: mine, host: LO });
    wrong.on('error', () => {});
    await once(wrong, 'connect');
    wrong.write('X');
    await once(wrong, 'close');
    // Then the real controlling peer: nominates, and whatever it sends next stays for the session.
    const right = net.connect({ port: mine, host: LO });
    right.on('error', () => {});
    await once(right, 'connect');
    right.write(Buffer.concat([Buffer.from([0xf1]), Buffer.from('session bytes')]));
    const result = await p;
    try {
      assert.equal(result.direction, 'accept');
      assert.equal(result.socket.remotePort, right.localPort);
      assert.equal(await readOnce(result.socket), 'session bytes');
    } finally {
      result.socket.destroy();
      right.destroy();
    }
  },
);

test(
  'controlling side whose nomination another technique already claimed: the punch ends ABORTED, the connection closed',
  { skip },
  async () => {
    const pa = freePort();
    const pb = freePort();
    let asked = 0;
    const b = tcpPunch({
      localAddress: LO,
      localPort: pb,
      candidates: [{ address: LO, port: pa }],
      role: 'controlled',
      timeoutMs: 3000,
    });
    const a = tcpPunch({
      localAddress: LO,
      localPort: pa,
      candidates: [{ address: LO, port: pb }],
      role: 'controlling',
      timeoutMs: 3000,
      claimNomination: () => {
        asked++;
        return false;
      },
    });
    await assert.rejects(a, (err: unknown) => isNatpunchError(err, 'ABORTED'));
    assert.equal(asked, 1);
    // The controlled side never gets the nomination byte: it times out instead of taking the unnominated connection.
    await assert.rejects(b, (err: unknown) => isNatpunchError(err, 'PUNCH_FAILED'));
  },
);

test('connectDelayMs: no SYN before the delay, while the listener already accepts', { skip }, async () => {
  const pa = freePort();
  const pb = freePort();
  const started = Date.now();
  const [a, b] = await Promise.all([
    tcpPunch({
      localAddress: LO,
      localPort: pa,
      candidates: [{ address: LO, port: pb }],
      role: 'controlling',
      timeoutMs: 5000,
      connectDelayMs: 400,
    }),
    tcpPunch({
      localAddress: LO,
      localPort: pb,
      candidates: [{ address: LO, port: pa }],
      role: 'controlled',
      timeoutMs: 5000,
      connectDelayMs: 400,
    }),
  ]);
  try {
    assert.ok(Date.now() - started >= 380, `connected after ${Date.now() - started} ms`);
    assert.equal(a.socket.remotePort, b.socket.localPort);
  } finally {
    a.socket.destroy();
    b.socket.destroy();
  }
});
