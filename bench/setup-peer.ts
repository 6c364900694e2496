// Lab fixture for bench/setup.bench.ts: one peer (a or b) driven over JSON lines, able to run either natpunch or
// hyperdht, so both are measured by the same process in the same namespaces. Times are wall-clock ms (Date.now():
// the namespaces share the machine's clock, so the listener's first-byte time compares with the connector's start).
//   {cmd:'np-listen', trial, server, name, hardNat}   → {type:'listening'}, later {type:'listener-result', trial, sessionAt, firstByteAt, early}
//   {cmd:'np-connect', trial, server, name, hardNat}  → {type:'connect-result', trial, startedAt, connectedAt, phases, pattern, path}
//   {cmd:'ep-listen', trial, server, name, hardNat}   → like np-listen, from a running Endpoint (createEndpoint, issue 16)
//   {cmd:'ep-prepare', trial, server, hardNat}        → {type:'prepared'} (the connecting Endpoint is up: not timed)
//   {cmd:'ep-connect', trial, name}                   → like np-connect, through that Endpoint
//   {cmd:'dht-listen', trial, bootstrap}              → {type:'listening', publicKey}, later {type:'listener-result', ...}
//   {cmd:'dht-prepare', trial, bootstrap}             → {type:'prepared'} (a bootstrapped DHT node, not timed)
//   {cmd:'dht-connect', trial, publicKey}             → {type:'connect-result', trial, startedAt, connectedAt}
//   any failure → {type:'error', trial, side, code, message}. Exits when stdin ends.
// hyperdht only ever talks to the bootstrap nodes given (on the lab's server host): never its public defaults.
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';
import { connect, listen, type Progress } from '../src/natpunch.js';
import { createEndpoint, type Endpoint } from '../src/endpoint/endpoint.js';
import { generateKeyPair } from '../src/session/identity.js';
import type { Session } from '../src/session/session.js';
import type { MuxStream } from '../src/session/mux.js';

const require = createRequire(import.meta.url);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
const DHT = require('hyperdht') as Any;

const out = (m: unknown) => process.stdout.write(`${JSON.stringify(m)}\n`);
const fail = (trial: string, side: string, err: unknown) => {
  const e = err as Error & { code?: string };
  out({ type: 'error', trial, side, code: e?.code ?? 'ERROR', message: e?.message ?? String(err) });
};
const LINGER_MS = 300;
const TIMEOUT_MS = 30_000;
const dhtNodes = new Map<string, Any>();
const endpoints = new Map<string, Endpoint>();
const closers = new Set<() => Promise<unknown>>();

function npListen(m: { trial: string; server: string; name: string; hardNat?: boolean }) {
  const keyPair = generateKeyPair();
  void listen({ keyPair, rendezvous: m.server, name: m.name, ...(m.hardNat ? { hardNat: true } : {}) }).then(
    (listener) => {
      const close = () => listener.close();
      closers.add(close);
      const done = (msg: Record<string, unknown>) => {
        out({ type: 'listener-result', trial: m.trial, ...msg });
        setTimeout(() => void close().finally(() => closers.delete(close)), LINGER_MS * 3).unref();
      };
      const timer = setTimeout(() => fail(m.trial, 'listener', new Error('no session')), TIMEOUT_MS);
      timer.unref();
      listener.once('connection-error', (err: Error) => {
        clearTimeout(timer);
        fail(m.trial, 'listener', err);
      });
      listener.once('session', (s: Session) => {
        clearTimeout(timer);
        onFirstSession(s, done);
      });
      out({ type: 'listening', trial: m.trial });
    },
    (err) => fail(m.trial, 'listener', err),
  );
}

async function npConnect(m: { trial: string; server: string; name: string; hardNat?: boolean }) {
  const keyPair = generateKeyPair();
  const startedAt = Date.now();
  const phases: Record<string, number> = {};
  try {
    const session = await connect({
      keyPair,
      rendezvous: m.server,
      to: m.name,
      timeoutMs: TIMEOUT_MS,
      earlyData: Buffer.from('1'),
      ...(m.hardNat ? { hardNat: true } : {}),
      onProgress: (p: Progress) => {
        phases[p.phase] ??= Date.now() - startedAt;
        // A cold connect introduced a second time (docs/connecting.md): the later offer starts the checks that won.
        if (p.phase === 'offer') phases.lastOffer = Date.now() - startedAt;
        if (process.env.SETUP_EVENTS) console.error(Date.now() - startedAt, JSON.stringify(p).slice(0, 300));
      },
    });
    const connectedAt = Date.now();
    // Early data rode on the first check; after an XX fallback the byte goes on a stream, as an application would.
    if (!session.earlyDataAccepted) session.openStream().write('1');
    out({
      type: 'connect-result',
      trial: m.trial,
      startedAt,
      connectedAt,
      phases,
      pattern: session.handshakePattern,
      path: session.path.kind,
    });
    setTimeout(() => void session.close().catch(() => {}), LINGER_MS * 2).unref();
  } catch (err) {
    fail(m.trial, 'connector', err);
  }
}

/** What the listener reports: when the session came and when its first byte did (early data, else a stream's). */
function onFirstSession(s: Session, done: (msg: Record<string, unknown>) => void): void {
  const sessionAt = Date.now();
  if (s.earlyData) return done({ sessionAt, firstByteAt: sessionAt, early: true, pattern: s.handshakePattern });
  s.once('stream', (st: MuxStream) => {
    st.once('data', () => done({ sessionAt, firstByteAt: Date.now(), early: false, pattern: s.handshakePattern }));
    st.on('error', () => {});
  });
}

async function epListen(m: { trial: string; server: string; name: string; hardNat?: boolean }) {
  try {
    const ep = await createEndpoint({
      keyPair: generateKeyPair(),
      rendezvous: m.server,
      name: m.name,
      ...(m.hardNat ? { hardNat: true } : {}),
    });
    const close = () => ep.close();
    closers.add(close);
    const timer = setTimeout(() => fail(m.trial, 'listener', new Error('no session')), TIMEOUT_MS);
    timer.unref();
    ep.once('connection-error', (err: Error) => {
      clearTimeout(timer);
      fail(m.trial, 'listener', err);
    });
    ep.once('session', (s: Session) => {
      clearTimeout(timer);
      onFirstSession(s, (msg) => {
        out({ type: 'listener-result', trial: m.trial, ...msg });
        setTimeout(() => void close().finally(() => closers.delete(close)), LINGER_MS * 3).unref();
      });
    });
    out({ type: 'listening', trial: m.trial });
  } catch (err) {
    fail(m.trial, 'listener', err);
  }
}

async function epPrepare(m: { trial: string; server: string; hardNat?: boolean }) {
  try {
    const ep = await createEndpoint({
      keyPair: generateKeyPair(),
      rendezvous: m.server,
      ...(m.hardNat ? { hardNat: true } : {}),
    });
    endpoints.set(m.trial, ep);
    closers.add(() => ep.close());
    out({ type: 'prepared', trial: m.trial });
  } catch (err) {
    fail(m.trial, 'connector', err);
  }
}

async function epConnect(m: { trial: string; name: string }) {
  const ep = endpoints.get(m.trial);
  if (!ep) return fail(m.trial, 'connector', new Error('ep-prepare first'));
  const startedAt = Date.now();
  const phases: Record<string, number> = {};
  try {
    const session = await ep.connect(m.name, {
      timeoutMs: TIMEOUT_MS,
      earlyData: Buffer.from('1'),
      onProgress: (p: Progress) => void (phases[p.phase] ??= Date.now() - startedAt),
    });
    const connectedAt = Date.now();
    if (!session.earlyDataAccepted) session.openStream().write('1');
    out({
      type: 'connect-result',
      trial: m.trial,
      startedAt,
      connectedAt,
      phases,
      pattern: session.handshakePattern,
      path: session.path.kind,
    });
    setTimeout(() => {
      endpoints.delete(m.trial);
      void ep.close().catch(() => {});
    }, LINGER_MS * 2).unref();
  } catch (err) {
    fail(m.trial, 'connector', err);
  }
}

function dhtNode(trial: string, bootstrap: string[]): Any {
  // No keep-alive noise between trials; bootstrap only to the lab's nodes.
  const node = new DHT({ bootstrap, connectionKeepAlive: false });
  dhtNodes.set(trial, node);
  closers.add(() => node.destroy());
  return node;
}

async function dhtListen(m: { trial: string; bootstrap: string[] }) {
  try {
    const node = dhtNode(m.trial, m.bootstrap);
    await node.fullyBootstrapped();
    const server = node.createServer();
    server.on('connection', (socket: Any) => {
      const sessionAt = Date.now();
      socket.on('error', () => {});
      socket.once('data', () => {
        out({ type: 'listener-result', trial: m.trial, sessionAt, firstByteAt: Date.now(), early: false });
        setTimeout(() => void node.destroy().catch(() => {}), LINGER_MS * 3).unref();
      });
    });
    const kp = DHT.keyPair();
    await server.listen(kp);
    out({ type: 'listening', trial: m.trial, publicKey: Buffer.from(kp.publicKey).toString('hex') });
  } catch (err) {
    fail(m.trial, 'listener', err);
  }
}

async function dhtPrepare(m: { trial: string; bootstrap: string[] }) {
  try {
    const node = dhtNode(m.trial, m.bootstrap);
    await node.fullyBootstrapped();
    out({ type: 'prepared', trial: m.trial });
  } catch (err) {
    fail(m.trial, 'connector', err);
  }
}

function dhtConnect(m: { trial: string; publicKey: string }) {
  const node = dhtNodes.get(m.trial);
  if (!node) return fail(m.trial, 'connector', new Error('dht-prepare first'));
  const startedAt = Date.now();
  const socket = node.connect(Buffer.from(m.publicKey, 'hex'));
  const timer = setTimeout(() => socket.destroy(new Error(`not open within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  socket.write(Buffer.from('1')); // queued until the stream opens: hyperdht's earliest first byte
  socket.once('open', () => {
    clearTimeout(timer);
    out({ type: 'connect-result', trial: m.trial, startedAt, connectedAt: Date.now() });
    setTimeout(() => void node.destroy().catch(() => {}), LINGER_MS * 2).unref();
  });
  socket.once('error', (err: Error) => {
    clearTimeout(timer);
    fail(m.trial, 'connector', err);
  });
}

out({ type: 'ready' });
for await (const line of createInterface({ input: process.stdin })) {
  let m: Any;
  try {
    m = JSON.parse(line);
  } catch {
    continue;
  }
  if (m.cmd === 'np-listen') npListen(m);
  else if (m.cmd === 'np-connect') void npConnect(m);
  else if (m.cmd === 'ep-listen') void epListen(m);
  else if (m.cmd === 'ep-prepare') void epPrepare(m);
  else if (m.cmd === 'ep-connect') void epConnect(m);
  else if (m.cmd === 'dht-listen') void dhtListen(m);
  else if (m.cmd === 'dht-prepare') void dhtPrepare(m);
  else if (m.cmd === 'dht-connect') dhtConnect(m);
}
await Promise.allSettled([...closers].map((c) => c()));
process.exit(0);
