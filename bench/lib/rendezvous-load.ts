// The rendezvous load process (run by bench/rendezvous.bench.ts inside the bench's network namespace, on its own
// core): real Ed25519-signed REGISTER and CONNECT messages from many source addresses (127.1.x.y, one UDP socket
// each), paced under the server's per-address rate limit (which stays on), counting only the answers that mean
// success: REGISTERED for a registration, the initiator's CONNECT_NOTIFY for an introduction. Responder notifies are
// acknowledged (NOTIFY_ACK) like a real peer does. Errors are counted by code, never as successes.
//
//   rendezvous-load <port> <peers> <addresses> <milestones,comma> <connect-seconds> <connect-per-second>
//
// At each milestone of registered peers it prints `MILESTONE n` and waits for a line on stdin (the bench samples the
// server's RSS meanwhile). It ends with one JSON line.
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { generateKeyPair, sign, type KeyPair } from '../../src/session/identity.js';
import {
  decodeRendezvous,
  encodeRendezvous,
  MAX_CONNECT_NOTIFY_BYTES,
  REGISTER_PAD_BYTES,
} from '../../src/wire/rendezvous.js';

const [port, peers, addresses, milestonesArg, connectSeconds, connectRate] = process.argv
  .slice(2)
  .map((a, i) => (i === 3 ? a : Number(a))) as [number, number, number, string, number, number];
const milestones = String(milestonesArg).split(',').map(Number);
/** Per-address sends per second: below the server's DEFAULT_RATE_PER_SECOND (20) so no honest request is limited. */
const PER_ADDRESS_RATE = 15;
/** Requests in flight at once (registrations), so a slow server is measured, not flooded. */
const WINDOW = 512;
const RETRY_MS = 1000;
/**
 * Peers refresh like real ones: the server forgets a registration after DEFAULT_TTL_MS (90 s), so each peer
 * re-registers after this long. At 100k peers that is ~2,000 signed REGISTERs/s of background load, as in production.
 */
const REFRESH_MS = 45_000;

const stdin = createInterface({ input: process.stdin });
const lines: string[] = [];
let lineWaiter: (() => void) | undefined;
stdin.on('line', (l) => {
  lines.push(l);
  lineWaiter?.();
});
const nextLine = () =>
  new Promise<void>((resolve) => (lines.length ? resolve() : (lineWaiter = resolve))).then(() => void lines.shift());

interface Source {
  socket: dgram.Socket;
  address: string;
  tokens: number;
  last: number;
}

async function openSources(): Promise<Source[]> {
  const out: Source[] = [];
  for (let i = 0; i < addresses; i++) {
    const address = `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`;
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, address, () => resolve());
    });
    socket.setRecvBufferSize(1 << 20);
    out.push({ socket, address, tokens: PER_ADDRESS_RATE, last: Date.now() });
  }
  return out;
}

function take(s: Source, now: number): boolean {
  s.tokens = Math.min(PER_ADDRESS_RATE, s.tokens + ((now - s.last) / 1000) * PER_ADDRESS_RATE);
  s.last = now;
  if (s.tokens < 1) return false;
  s.tokens--;
  return true;
}

const errors: Record<string, number> = {};
let registered = 0;
let introductions = 0;
let notifiesAcked = 0;
const pendingRegister = new Map<number, { peer: number; sentAt: number }>();
const pendingConnect = new Set<number>();

async function main(): Promise<void> {
  const sources = await openSources();
  const keys: KeyPair[] = Array.from({ length: peers }, () => generateKeyPair());
  const sourceOf = (peer: number) => sources[peer % sources.length]!;
  const registeredPeers = new Set<number>();
  /** When each peer's current registration was answered (0: never). */
  const registeredAt = new Float64Array(peers);
  let requestId = 1;

  for (const s of sources) {
    s.socket.on('message', (buf) => {
      let m;
      try {
        m = decodeRendezvous(buf);
      } catch {
        errors.undecodable = (errors.undecodable ?? 0) + 1;
        return;
      }
      if (m.type === 'registered') {
        const p = pendingRegister.get(m.requestId);
        if (p) {
          pendingRegister.delete(m.requestId);
          if (!registeredPeers.has(p.peer)) registered++;
          registeredPeers.add(p.peer);
          registeredAt[p.peer] = Date.now();
        }
      } else if (m.type === 'connect-notify') {
        if (m.role === 'initiator') {
          if (pendingConnect.delete(m.requestId)) introductions++;
        } else {
          // Acks count against this address's budget at the server too (sent even without a token: a lost ack
          // costs the server retransmissions).
          take(s, Date.now());
          s.socket.send(
            encodeRendezvous({ type: 'notify-ack', requestId: m.requestId, connectionId: m.connectionId }),
            port,
            '127.0.0.1',
          );
          notifiesAcked++;
        }
      } else if (m.type === 'error') {
        errors[m.code] = (errors[m.code] ?? 0) + 1;
        pendingRegister.delete(m.requestId);
        pendingConnect.delete(m.requestId);
      } else if (m.type === 'ping') {
        s.socket.send(
          encodeRendezvous({ type: 'pong', requestId: m.requestId, echo: m.time, time: Date.now() }),
          port,
          '127.0.0.1',
        );
      }
    });
  }

  const register = (peer: number, now: number): boolean => {
    const src = sourceOf(peer);
    if (!take(src, now)) return false;
    const id = requestId++;
    const kp = keys[peer]!;
    const msg = encodeRendezvous(
      {
        type: 'register',
        requestId: id,
        publicKey: kp.publicKey,
        reachable: false,
        rttMs: 0,
        candidates: [
          {
            type: 'host',
            transport: 'udp',
            address: src.address,
            port: src.socket.address().port,
            priority: 2130706431,
          },
        ],
        timestamp: now,
        nonce: randomBytes(16),
      },
      kp.secretKey,
      // Padded as natpunch's client pads it, so the answers that follow (REGISTERED, relay credentials, PING) fit.
      { padTo: REGISTER_PAD_BYTES },
    );
    pendingRegister.set(id, { peer, sentAt: now });
    src.socket.send(msg, port, '127.0.0.1');
    return true;
  };

  // Refreshes, from now to the end: the oldest registrations first (a cursor over the peers in registration order).
  let cursor = 0;
  let refreshes = 0;
  const refresher = setInterval(() => {
    const now = Date.now();
    for (let n = 0; n < peers && pendingRegister.size < WINDOW; n++) {
      const at = registeredAt[cursor]!;
      if (at === 0 || now - at < REFRESH_MS) break;
      if (!register(cursor, now)) break;
      registeredAt[cursor] = now; // answered or not, do not resend before the next round
      refreshes++;
      cursor = (cursor + 1) % peers;
    }
  }, 10);

  // Registration: every peer once, retried after RETRY_MS without an answer, WINDOW in flight.
  const t0 = Date.now();
  let next = 0;
  const retry: number[] = [];
  let milestone = 0;
  while (registered < peers) {
    const now = Date.now();
    for (const [id, p] of pendingRegister) {
      if (now - p.sentAt > RETRY_MS) {
        pendingRegister.delete(id);
        retry.push(p.peer);
      }
    }
    while (pendingRegister.size < WINDOW && (retry.length || next < peers)) {
      const peer = retry.length ? retry[retry.length - 1]! : next;
      if (registeredPeers.has(peer)) {
        if (retry.length) retry.pop();
        else next++;
        continue;
      }
      if (!register(peer, now)) break;
      if (retry.length) retry.pop();
      else next++;
    }
    if (milestone < milestones.length && registered >= milestones[milestone]!) {
      process.stdout.write(`MILESTONE ${milestones[milestone]}\n`);
      milestone++;
      await nextLine();
    }
    if (Date.now() - t0 > 600_000) break;
    await new Promise((r) => setTimeout(r, 2));
  }
  const registerSeconds = (Date.now() - t0) / 1000;
  while (milestone < milestones.length) {
    process.stdout.write(`MILESTONE ${milestones[milestone]}\n`);
    milestone++;
    await nextLine();
  }

  // Introductions: initiator i asks for target i+1 (both registered), paced at connectRate, each from its address.
  // Signed before the phase starts (their timestamps stay inside the server's ±30 s window for a phase of up to
  // ~25 s), so signing, ~50 µs each in this process, never limits the offered rate.
  // Each CONNECT carries the time it is planned to be sent (the server accepts ±30 s): signing takes a while on a
  // busy machine, so the plan starts after a generous estimate of it, and shrinks if signing would take over 20 s.
  const calibrate = performance.now();
  for (let i = 0; i < 200; i++) sign(Buffer.alloc(64), keys[0]!.secretKey);
  const signMs = ((performance.now() - calibrate) / 200) * 1.5;
  const planned = Math.min(Math.ceil(connectSeconds * connectRate), Math.floor(20_000 / signMs));
  const signStart = Date.now();
  const sendFrom = signStart + planned * signMs;
  const prepared: Array<{ peer: number; id: number; bytes: Buffer }> = [];
  for (let n = 0; n < planned; n++) {
    const peer = n % peers;
    const src = sourceOf(peer);
    const id = requestId++;
    const kp = keys[peer]!;
    const bytes = encodeRendezvous(
      {
        type: 'connect',
        requestId: id,
        publicKey: kp.publicKey,
        reachable: false,
        target: { key: keys[(peer + 1) % peers]!.publicKey },
        connectionId: randomBytes(16),
        rttMs: 0,
        candidates: [
          {
            type: 'host',
            transport: 'udp',
            address: src.address,
            port: src.socket.address().port,
            priority: 2130706431,
          },
        ],
        timestamp: Math.round(sendFrom + (n / connectRate) * 1000),
        nonce: randomBytes(16),
      },
      kp.secretKey,
      { padTo: MAX_CONNECT_NOTIFY_BYTES },
    );
    prepared.push({ peer, id, bytes });
    // Yield now and then: refreshes, PONGs and acks keep flowing while this signs (a busy machine takes seconds).
    if (n % 256 === 255) await new Promise((r) => setImmediate(r));
  }
  // Background refreshes stop for the introduction phase, so the server's CPU in it is the introductions' (the
  // registration phase above measured memory with them running). The bench samples the server's CPU on this line.
  clearInterval(refresher);
  process.stdout.write('CONNECTS\n');
  await nextLine();
  const cpu0 = process.cpuUsage();
  const c0 = Date.now();
  let sent = 0;
  let skipped = 0;
  while (Date.now() - c0 < connectSeconds * 1000 && sent + skipped < prepared.length) {
    const now = Date.now();
    const due = Math.min(prepared.length, Math.floor(((now - c0) / 1000) * connectRate));
    while (sent + skipped < due) {
      const m = prepared[sent + skipped]!;
      const src = sourceOf(m.peer);
      // Leave a token for the NOTIFY_ACK this address will owe when it is someone's target; an address out of
      // tokens skips this CONNECT (counted) rather than exceed the server's per-address limit.
      if (src.tokens < 2 || !take(src, now)) {
        skipped++;
        continue;
      }
      src.socket.send(m.bytes, port, '127.0.0.1');
      pendingConnect.add(m.id);
      sent++;
    }
    await new Promise((r) => setImmediate(r));
  }
  const connectWall = (Date.now() - c0) / 1000;
  await new Promise((r) => setTimeout(r, 500)); // answers in flight
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(
    `${JSON.stringify({
      registered,
      registerSeconds,
      connectsSent: sent,
      connectsSkipped: skipped,
      signSeconds: (c0 - signStart) / 1000,
      connectsPlanned: planned,
      introductions,
      connectSeconds: connectWall,
      introductionsPerSecond: introductions / connectWall,
      notifiesAcked,
      refreshes,
      errors,
      loadCpuShareDuringConnects: (cpu.user + cpu.system) / 1e6 / (connectWall + 0.5),
    })}\n`,
  );
  for (const s of sources) s.socket.close();
  stdin.close();
}

await main();
