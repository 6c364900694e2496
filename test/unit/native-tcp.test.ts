import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { addonStatus, loadAddon, POLL_WRITABLE } from '../../src/net/native.js';
import { bindReusePort, connectFrom, getTtl, listenReusePort, setTtl, startConnect } from '../../src/net/tcp.js';
import { isNatpunchError } from '../../src/util/errors.js';

// The addon is built by `npm ci`. When it is missing, the first test fails and says why; the rest are skipped.
const status = addonStatus();
const strictSkip = process.env.NATPUNCH_NO_ADDON === '1' ? 'NATPUNCH_NO_ADDON=1' : false;
const skip = strictSkip || (status.available ? false : `native addon unavailable: ${status.reason}`);
const LO = '127.0.0.1';

function readOnce(s: net.Socket): Promise<string> {
  return Promise.race([
    once(s, 'data').then(([d]) => String(d)),
    new Promise<string>((_, rej) => setTimeout(() => rej(new Error('no data within 5 s')), 5000).unref()),
  ]);
}

async function echoServer(): Promise<net.Server> {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.on('data', (d) => s.write(`echo:${d}`));
  });
  server.listen(0, LO);
  await once(server, 'listening');
  return server;
}

test('the addon loads in this checkout (built by npm ci)', { skip: strictSkip }, () => {
  assert.ok(status.available, status.available ? '' : status.reason);
});

test('two reuseport sockets bind the same port; a plain Node listener on it refuses them', { skip }, async () => {
  const addon = loadAddon();
  const a = bindReusePort(LO, 0, addon);
  const port = addon.getSockName(a).port;
  const b = bindReusePort(LO, port, addon);
  try {
    assert.equal(addon.getSockName(b).port, port);
  } finally {
    addon.close(a);
    addon.close(b);
  }
  // SO_REUSEPORT is opt-in on every socket sharing the port: a normal listener keeps it to itself.
  const plain = net.createServer().listen(0, LO);
  await once(plain, 'listening');
  const held = (plain.address() as net.AddressInfo).port;
  try {
    assert.throws(
      () => bindReusePort(LO, held, addon),
      (e: unknown) => isNatpunchError(e, 'ADDRESS_IN_USE'),
    );
  } finally {
    plain.close();
  }
});

test('connects from the port a listener holds; the listener still accepts on it', { skip }, async () => {
  const listener = await listenReusePort({ address: LO, port: 0 });
  const port = (listener.address() as net.AddressInfo).port;
  const accepted: net.Socket[] = [];
  listener.on('connection', (s) => {
    accepted.push(s);
    s.on('data', (d) => s.write(`listener:${d}`));
  });
  const remote = await echoServer();
  const sockets: net.Socket[] = [];
  try {
    const out = await connectFrom({
      address: LO,
      port: (remote.address() as net.AddressInfo).port,
      localAddress: LO,
      localPort: port,
    });
    sockets.push(out);
    assert.equal(out.localPort, port);
    out.write('hi');
    assert.equal(await readOnce(out), 'echo:hi');

    // The same port keeps accepting inbound connections while the outgoing one is up.
    const inbound = net.connect(port, LO);
    sockets.push(inbound);
    await once(inbound, 'connect');
    inbound.write('x');
    assert.equal(await readOnce(inbound), 'listener:x');
    assert.equal(accepted.length, 1);
  } finally {
    for (const s of [...sockets, ...accepted]) s.destroy();
    listener.close();
    remote.close();
  }
});

test(
  'TCP simultaneous open: a SYN reaching a socket in SYN_SENT yields one connection carrying data both ways',
  { skip },
  async () => {
    const addon = loadAddon();
    // A and B both hold a port and will connect to each other. To make the open simultaneous on loopback (where a SYN
    // is delivered at once), B's first SYN must be lost: A's port has a listener whose accept queue is full, and
    // Linux drops a SYN for a full queue silently. B is then in SYN_SENT when A's SYN arrives, and the kernel
    // matches that SYN to B's connecting socket (4-tuple lookup before the listener), answering SYN-ACK
    // (RFC 9293 §3.5, figure 7).
    const fdA = bindReusePort(LO, 0, addon);
    const portA = addon.getSockName(fdA).port;
    addon.close(fdA);
    const listenA = bindReusePort(LO, portA, addon);
    addon.listen(listenA, 0);
    const filler = startConnect({ address: LO, port: portA, localAddress: LO });
    const fillerSocket = await filler.done; // sits in A's accept queue, never accepted: the queue is now full
    const cleanup: Array<() => void> = [() => fillerSocket.destroy(), () => addon.close(listenA)];
    try {
      const fdB = bindReusePort(LO, 0, addon);
      const portB = addon.getSockName(fdB).port;
      addon.close(fdB);

      const b = startConnect({ address: LO, port: portA, localAddress: LO, localPort: portB, timeoutMs: 8000 });
      cleanup.push(() => b.cancel());
      // B's SYN was dropped: no error, still connecting.
      assert.equal(addon.getPeerName(b.fd), null);
      assert.equal(addon.socketError(b.fd), null);

      const a = startConnect({ address: LO, port: portB, localAddress: LO, localPort: portA, timeoutMs: 8000 });
      cleanup.push(() => a.cancel());
      const [sa, sb] = await Promise.all([a.done, b.done]);
      cleanup.push(
        () => sa.destroy(),
        () => sb.destroy(),
      );
      assert.equal(sa.localPort, portA);
      assert.equal(sa.remotePort, portB);
      assert.equal(sb.localPort, portB);
      assert.equal(sb.remotePort, portA);
      sa.write('from A');
      sb.write('from B');
      const [atA, atB] = await Promise.all([readOnce(sa), readOnce(sb)]);
      assert.equal(atA, 'from B');
      assert.equal(atB, 'from A');
    } finally {
      for (const f of cleanup.reverse()) f();
    }
  },
);

test('a refused connect rejects with TCP_CONNECT / ECONNREFUSED, an aborted one with ABORTED', { skip }, async () => {
  const addon = loadAddon();
  const fd = bindReusePort(LO, 0, addon);
  const closedPort = addon.getSockName(fd).port; // bound, not listening: the kernel answers RST
  try {
    await assert.rejects(connectFrom({ address: LO, port: closedPort }), (e: unknown) => {
      return isNatpunchError(e, 'TCP_CONNECT') && e.details?.errno === 'ECONNREFUSED';
    });
  } finally {
    addon.close(fd);
  }
  // TEST-NET-1 would leave the machine; instead abort before the kernel has answered anything.
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(connectFrom({ address: LO, port: 9, signal: ac.signal }), (e: unknown) =>
    isNatpunchError(e, 'ABORTED'),
  );
});

test('TTL is set and read back on a raw fd and on an adopted net.Socket', { skip }, async () => {
  const addon = loadAddon();
  const fd = addon.tcpSocket(4);
  try {
    setTtl(fd, 3);
    assert.equal(getTtl(fd), 3);
    assert.throws(
      () => setTtl(fd, 0),
      (e: unknown) => isNatpunchError(e, 'BAD_ARGUMENT'),
    );
  } finally {
    addon.close(fd);
  }
  const remote = await echoServer();
  const s = await connectFrom({
    address: LO,
    port: (remote.address() as net.AddressInfo).port,
    ttl: 5,
    ttlAfterSyn: 17,
  });
  try {
    assert.equal(getTtl(s), 17);
    setTtl(s, 42);
    assert.equal(getTtl(s), 42);
    s.write('still works');
    assert.equal(await readOnce(s), 'echo:still works');
  } finally {
    s.destroy();
    remote.close();
  }
});

test('FdWatcher reports writability of a fresh socket and can be closed from its own callback', { skip }, async () => {
  const addon = loadAddon();
  const remote = await echoServer();
  const fd = addon.tcpSocket(4);
  try {
    addon.connect(fd, LO, (remote.address() as net.AddressInfo).port);
    const events = await new Promise<number>((resolve) => {
      const w = new addon.FdWatcher(fd, (_status, ev) => {
        w.close();
        resolve(ev);
      });
      w.start(POLL_WRITABLE);
    });
    assert.ok(events & POLL_WRITABLE);
    assert.equal(addon.socketError(fd), null);
  } finally {
    addon.close(fd);
    remote.close();
  }
});

test('IPv6: a reuseport listener on ::1 and an outgoing connection from its port', { skip }, async () => {
  let listener: net.Server;
  try {
    listener = await listenReusePort({ address: '::1', port: 0 });
  } catch (err) {
    if (/EADDRNOTAVAIL|EAFNOSUPPORT/.test(String((err as Error).message))) return; // no IPv6 loopback here
    throw err;
  }
  const port = (listener.address() as net.AddressInfo).port;
  const remote = net.createServer((s) => s.on('data', (d) => s.write(`v6:${d}`)));
  remote.listen(0, '::1');
  await once(remote, 'listening');
  const s = await connectFrom({
    address: '::1',
    port: (remote.address() as net.AddressInfo).port,
    localAddress: '::1',
    localPort: port,
    ttl: 7,
  });
  try {
    assert.equal(s.localPort, port);
    assert.equal(getTtl(s), 7); // IPV6_UNICAST_HOPS
    s.write('x');
    assert.equal(await readOnce(s), 'v6:x');
  } finally {
    s.destroy();
    listener.close();
    remote.close();
  }
});
