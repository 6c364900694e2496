// STUN Binding load generator (child process of stun.bench.ts): keeps `window` requests in flight on each of
// `sockets` UDP sockets, counts answered requests during the measurement window, and reports one JSON line.
// Every send loop is bounded by the run's duration; lost requests are re-sent after LOSS_MS.
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';

const [host = '127.0.0.1', portText = '3478', socketsText = '4', windowText = '32', warmupText = '1000', durationText = '5000', serverPidText = '0'] =
  process.argv.slice(2);
const port = Number(portText);
const nSockets = Number(socketsText);
const window = Number(windowText);
const warmupMs = Number(warmupText);
const durationMs = Number(durationText);
const serverPid = Number(serverPidText);
const LOSS_MS = 200;
/** USER_HZ: /proc reports CPU time in these ticks; 100 on every mainstream Linux build (getconf CLK_TCK). */
const CLOCK_TICKS_PER_SECOND = 100;

function cpuTicks(pid: number): number {
  if (!pid) return 0;
  try {
    // /proc/PID/stat: fields 14 and 15 are utime and stime in clock ticks (the comm field may contain spaces).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}

let measuring = false;
let stopped = false;
let answered = 0;
let losses = 0;

const sockets: dgram.Socket[] = [];
const slots: Array<{ sock: dgram.Socket; buf: Buffer; seq: number; sentAt: number }> = [];

function send(slot: number): void {
  const s = slots[slot]!;
  s.seq = (s.seq + 1) >>> 0;
  s.buf.writeUInt32BE(s.seq, 12);
  s.sentAt = performance.now();
  s.sock.send(s.buf, port, host);
}

for (let i = 0; i < nSockets; i++) {
  const sock = dgram.createSocket('udp4');
  sock.on('error', () => {});
  sock.on('message', (msg) => {
    if (stopped || msg.length < 20) return;
    const slot = msg.readUInt32BE(8);
    const s = slots[slot];
    if (!s || s.sock !== sock || msg.readUInt32BE(12) !== s.seq) return; // stale or foreign
    if (measuring) answered++;
    send(slot);
  });
  sockets.push(sock);
}
await Promise.all(sockets.map((s) => new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))));
for (const s of sockets) {
  try {
    s.setRecvBufferSize(4 * 1024 * 1024);
  } catch {
    /* capped */
  }
}
for (let i = 0; i < nSockets * window; i++) {
  // RFC 8489 §6: a bare 20-byte Binding request; transaction id = slot, sequence, constant.
  const buf = Buffer.alloc(20);
  buf.writeUInt16BE(0x0001, 0);
  buf.writeUInt32BE(0x2112a442, 4);
  buf.writeUInt32BE(i, 8);
  buf.writeUInt32BE(0x6e617470, 16);
  slots.push({ sock: sockets[i % nSockets]!, buf, seq: 0, sentAt: 0 });
}
slots.forEach((_, i) => send(i));
const lossTimer = setInterval(() => {
  const now = performance.now();
  slots.forEach((s, i) => {
    if (now - s.sentAt > LOSS_MS) {
      losses++;
      send(i);
    }
  });
}, 50);

await new Promise((r) => setTimeout(r, warmupMs));
const t0 = performance.now();
const cpu0 = process.cpuUsage();
const s0 = cpuTicks(serverPid);
losses = 0;
measuring = true;
await new Promise((r) => setTimeout(r, durationMs));
measuring = false;
stopped = true;
const elapsed = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
const serverTicks = cpuTicks(serverPid) - s0;
clearInterval(lossTimer);
sockets.forEach((s) => s.close());
process.stdout.write(
  `${JSON.stringify({
    answered,
    seconds: elapsed,
    rate: answered / elapsed,
    losses,
    generatorCpu: (cpu.user + cpu.system) / 1e6 / elapsed,
    serverCpu: serverPid ? serverTicks / CLOCK_TICKS_PER_SECOND / elapsed : null,
  })}\n`,
);
