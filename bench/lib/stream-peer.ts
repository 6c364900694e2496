// One end of a bulk transfer for bench/stream.bench.ts, in its own process:
//
//   stream-peer recv|send tcp|secretstream|natpunch <port> <bytes> <rendezvous-port>
//
// tcp: a plain TCP connection. secretstream: hyperdht's stack, @hyperswarm/secret-stream over a udx-native stream
// (the same libraries natpunch's session uses underneath). natpunch: natpunch.listen()/connect() through a rendezvous
// on <rendezvous-port>, one MuxStream. The receiver prints READY when it can be connected to, then one JSON line
// (bytes, seconds from first to last byte, Mbit/s, its CPU seconds); the sender prints its CPU seconds.
import net from 'node:net';
import { createRequire } from 'node:module';
import { connect, listen } from '../../src/natpunch.js';
import { generateKeyPair } from '../../src/session/identity.js';
import type { MuxStream } from '../../src/session/mux.js';

const require = createRequire(import.meta.url);
const [role, kind, portArg, bytesArg, rdvArg] = process.argv.slice(2) as [string, string, string, string, string];
const PORT = Number(portArg);
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
      process.stdout.write(
        `${JSON.stringify({ bytes: got, seconds, mbitPerSecond: (got * 8) / seconds / 1e6, cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`,
      );
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
  process.stdout.write(`${JSON.stringify({ senderCpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`);
  // Profiling (node --cpu-prof) needs a clean exit: STREAM_PEER_EXIT_MS ends the sender that long after its last write.
  if (process.env.STREAM_PEER_EXIT_MS) setTimeout(() => process.exit(0), Number(process.env.STREAM_PEER_EXIT_MS));
}

const exit = () => setTimeout(() => process.exit(0), 200);

if (kind === 'tcp') {
  if (role === 'recv') {
    const server = net.createServer((s) => receive(s, exit));
    server.listen(PORT, '127.0.0.1', () => process.stdout.write('READY\n'));
  } else {
    const s = net.connect(PORT, '127.0.0.1');
    s.setNoDelay(true);
    await new Promise((r) => s.once('connect', r));
    await send(s);
  }
} else if (kind === 'secretstream') {
  const UDX = require('udx-native');
  const SecretStream = require('@hyperswarm/secret-stream');
  const udx = new UDX();
  const socket = udx.createSocket();
  if (role === 'recv') {
    socket.bind(PORT, '127.0.0.1');
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
    process.stdout.write('READY\n');
  } else {
    socket.bind(0, '127.0.0.1');
    const raw = udx.createStream(2);
    raw.connect(socket, 1, PORT, '127.0.0.1');
    const ss = new SecretStream(true, raw, { keyPair: { publicKey: SENDER.publicKey, secretKey: SENDER.secretKey } });
    await new Promise((r) => ss.once('connect', r));
    await send(ss);
  }
} else if (kind === 'natpunch') {
  const rendezvous = `127.0.0.1:${rdvArg}`;
  if (role === 'recv') {
    const listener = await listen({
      keyPair: RECEIVER,
      rendezvous,
      name: 'bench-recv',
      bind: { address: '127.0.0.1', port: PORT },
      allow: [SENDER.publicKey],
    });
    listener.on('session', (session: { on(e: 'stream', fn: (s: MuxStream) => void): void }) =>
      session.on('stream', (s) => receive(s, exit)),
    );
    process.stdout.write('READY\n');
  } else {
    const session = await connect({ keyPair: SENDER, rendezvous, to: 'bench-recv', bind: { address: '127.0.0.1' } });
    await send(session.openStream());
  }
} else {
  throw new Error(`unknown kind ${kind}`);
}
