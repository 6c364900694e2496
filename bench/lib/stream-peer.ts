// One end of a bulk transfer for bench/stream.bench.ts (loopback) and bench/stream-lab.bench.ts (NAT lab), in its own
// process:
//
//   stream-peer recv|send tcp|secretstream|secretstream-buf|natpunch <port> <bytes> <rendezvous-port> [<host> [<rendezvous-host>]]
//
// tcp: a plain TCP connection. secretstream: hyperdht's stack, @hyperswarm/secret-stream over a udx-native stream
// (the same libraries natpunch's session uses underneath), with the kernel's default socket buffers as hyperdht
// leaves them; secretstream-buf: the same with natpunch's socket buffers (SOCKET_BUFFER_BYTES), to tell what of a
// difference is the buffers and what the stacks. natpunch: natpunch.listen()/connect() through a rendezvous
// at <rendezvous-host>:<rendezvous-port>, one MuxStream. <host> is the receiver's address (default 127.0.0.1): the
// receiver binds it, the sender connects to it. Output is JSON lines: the receiver prints {"event":"ready"} when it
// can be connected to, then {"event":"result"} (bytes, seconds from first to last byte, Mbit/s, its CPU seconds, the
// UDX stream's counters); the sender prints {"event":"sent"} (its CPU seconds) once its last write was accepted and
// {"event":"sender-udx"} once the peer acknowledged everything (or after 5 s).
import net from 'node:net';
import { createRequire } from 'node:module';
import { connect, listen } from '../../src/natpunch.js';
import { generateKeyPair } from '../../src/session/identity.js';
import type { MuxStream } from '../../src/session/mux.js';
import { SOCKET_BUFFER_BYTES } from '../../src/net/udx.js';

const require = createRequire(import.meta.url);

/**
 * Every udx-native stream this process creates (both stacks use the same module instance), so each side can report
 * what the transport underneath did: MTU reached, packets, retransmits, RTOs. A difference in these between the
 * stacks is a difference in how they set UDX up, not in their per-byte work.
 */
const udxStreams: Array<Record<string, number>> = [];
{
  const UdxStreamClass = require('udx-native/lib/stream.js') as { prototype: { connect(...a: unknown[]): unknown } };
  const connect = UdxStreamClass.prototype.connect;
  UdxStreamClass.prototype.connect = function (this: Record<string, number>, ...a: unknown[]) {
    udxStreams.push(this);
    return connect.apply(this, a);
  };
}
/** The busiest stream: the data stream (natpunch's set-up streams are tiny). */
function busiest(): Record<string, number> | undefined {
  const load = (x: Record<string, number>) => x.packetsTransmitted! + x.packetsReceived!;
  return [...udxStreams].sort((x, y) => load(y) - load(x))[0];
}
function udxStats(): Record<string, number> | null {
  const s = busiest();
  if (!s) return null;
  return {
    mtu: s.mtu!,
    rttMs: s.rtt!,
    cwnd: s.cwnd!,
    packetsTransmitted: s.packetsTransmitted!,
    packetsReceived: s.packetsReceived!,
    bytesTransmitted: s.bytesTransmitted!,
    retransmits: s.retransmits!,
    fastRecoveries: s.fastRecoveries!,
    rtoCount: s.rtoCount!,
  };
}
const [role, kind, portArg, bytesArg, rdvArg, hostArg, rdvHostArg] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string,
  string | undefined,
  string | undefined,
];
const PORT = Number(portArg);
const HOST = hostArg ?? '127.0.0.1';
const RDV_HOST = rdvHostArg ?? '127.0.0.1';
const emit = (event: string, fields: Record<string, unknown> = {}) =>
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
const TOTAL = Number(bytesArg);
const CHUNK = 64 * 1024;
/** Fixed seeds: the receiver admits exactly the sender's key (natpunch's default-deny). */
const SENDER = generateKeyPair(Buffer.alloc(32, 1));
const RECEIVER = generateKeyPair(Buffer.alloc(32, 2));

interface Readable {
  on(event: 'data', fn: (d: Uint8Array) => void): unknown;
}

function receive(stream: Readable, done: () => void): void {
  let got = 0;
  let t0 = 0;
  const cpu0 = process.cpuUsage();
  stream.on('data', (d: Uint8Array) => {
    if (got === 0) t0 = performance.now();
    got += d.length;
    if (got >= TOTAL) {
      const seconds = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      emit('result', {
        bytes: got,
        seconds,
        mbitPerSecond: (got * 8) / seconds / 1e6,
        cpuSeconds: (cpu.user + cpu.system) / 1e6,
        userSeconds: cpu.user / 1e6,
        udx: udxStats(),
      });
      done();
    }
  });
}

interface Writable {
  write(b: Buffer): boolean;
  once(event: 'drain', fn: () => void): unknown;
}

async function send(stream: Writable): Promise<void> {
  const chunk = Buffer.alloc(CHUNK, 0x5a);
  const cpu0 = process.cpuUsage();
  for (let sent = 0; sent < TOTAL; sent += CHUNK) {
    if (!stream.write(chunk)) await new Promise<void>((r) => stream.once('drain', r));
  }
  const cpu = process.cpuUsage(cpu0);
  emit('sent', { senderCpuSeconds: (cpu.user + cpu.system) / 1e6, senderUserSeconds: cpu.user / 1e6 });
  // The transport's counters once the peer has acknowledged everything (retransmits happen after the last write).
  const until = Date.now() + 5_000;
  const s0 = busiest();
  while (s0 && (s0.inflight ?? 0) > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  emit('sender-udx', { udx: udxStats() });
  // Profiling (node --cpu-prof) needs a clean exit: STREAM_PEER_EXIT_MS ends the sender that long after its last write.
  if (process.env.STREAM_PEER_EXIT_MS) setTimeout(() => process.exit(0), Number(process.env.STREAM_PEER_EXIT_MS));
}

const exit = () => setTimeout(() => process.exit(0), 200);

if (kind === 'tcp') {
  if (role === 'recv') {
    const server = net.createServer((s) => receive(s, exit));
    server.listen(PORT, HOST, () => emit('ready'));
  } else {
    const t0 = performance.now();
    const s = net.connect(PORT, HOST);
    s.setNoDelay(true);
    await new Promise((r) => s.once('connect', r));
    // The three-way handshake's round trip: shows the lab link's delay held for this run.
    emit('path', { kind: 'tcp', connectMs: performance.now() - t0 });
    await send(s);
  }
} else if (kind === 'secretstream' || kind === 'secretstream-buf') {
  const UDX = require('udx-native');
  const SecretStream = require('@hyperswarm/secret-stream');
  const udx = new UDX();
  const socket = udx.createSocket();
  const buffers = () => {
    if (kind !== 'secretstream-buf') return;
    socket.setRecvBufferSize(SOCKET_BUFFER_BYTES);
    socket.setSendBufferSize(SOCKET_BUFFER_BYTES);
  };
  if (role === 'recv') {
    socket.bind(PORT, HOST);
    buffers();
    // Connects itself to whoever sends the first packet for stream id 1 (as hyperdht's holepuncher does).
    const raw = udx.createStream(1, {
      firewall: (sock: unknown, port: number, host: string) => {
        raw.connect(sock, 2, port, host);
        return false;
      },
    });
    const ss = new SecretStream(false, raw, {
      keyPair: { publicKey: RECEIVER.publicKey, secretKey: RECEIVER.secretKey },
    });
    receive(ss, exit);
    emit('ready');
  } else {
    socket.bind(0, HOST === '127.0.0.1' ? HOST : '0.0.0.0');
    buffers();
    const raw = udx.createStream(2);
    raw.connect(socket, 1, PORT, HOST);
    const ss = new SecretStream(true, raw, { keyPair: { publicKey: SENDER.publicKey, secretKey: SENDER.secretKey } });
    await new Promise((r) => ss.once('connect', r));
    await send(ss);
  }
} else if (kind === 'natpunch') {
  const rendezvous = `${RDV_HOST}:${rdvArg}`;
  if (role === 'recv') {
    const listener = await listen({
      keyPair: RECEIVER,
      rendezvous,
      name: 'bench-recv',
      bind: { address: HOST, port: PORT },
      allow: [SENDER.publicKey],
    });
    listener.on('session', (session: { on(e: 'stream', fn: (s: MuxStream) => void): void }) =>
      session.on('stream', (s) => receive(s, exit)),
    );
    emit('ready');
  } else {
    const session = await connect({
      keyPair: SENDER,
      rendezvous,
      to: 'bench-recv',
      ...(HOST === '127.0.0.1' ? { bind: { address: HOST } } : {}),
    });
    // Which path the session took (a relayed start would measure the relay, not the session).
    emit('path', { kind: session.path.kind, remote: session.path.remote, rttMs: session.path.rttMs });
    await send(session.openStream());
  }
} else {
  throw new Error(`unknown kind ${kind}`);
}
