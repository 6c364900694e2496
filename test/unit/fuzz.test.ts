// The fuzz harness the suite runs (issue 18): every parser natpunch has gets FUZZ_COUNT (default 50,000) mutants of
// valid messages. No crash, no hang, and nothing thrown but the NatpunchError codes each API documents. The
// rendezvous server also gets validly signed mutants (mutated, then signed again, so they pass the signature check)
// and must keep its invariants: no handler failure, no answer larger than its request. Deterministic per seed: a
// failure names FUZZ_SEED to replay it. scripts/fuzz.ts runs 1M per parser against a live `serve`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NatpunchError } from '../../src/util/errors.js';
import type { DatagramListener, DatagramTransport } from '../../src/net/datagram.js';
import { checkFingerprint, decodeStun, StunFramer, verifyIntegrity } from '../../src/wire/stun/index.js';
import { turnRegistry } from '../../src/wire/turn.js';
import * as relayMsg from '../../src/relay/message.js';
import { decodeChannelDataUdp, streamFrameSize, TurnStreamFramer } from '../../src/wire/channel-data.js';
import {
  decodeRendezvous,
  isSignedMessage,
  TcpFrameDecoder,
  frameTcp,
  verifyRendezvous,
} from '../../src/wire/rendezvous.js';
import { RendezvousServer } from '../../src/rendezvous/server.js';
import { decodeSeqOffer } from '../../src/wire/seq-offer.js';
import { decodePcpRequest, decodePcpResponse } from '../../src/wire/pcp.js';
import { decodeNatPmpRequest, decodeNatPmpResponse } from '../../src/wire/natpmp.js';
import * as socks5 from '../../src/tunnel/socks5.js';
import { decodeTunnelReply, decodeTunnelRequest } from '../../src/tunnel/wire.js';
import { Mux, type FrameSink } from '../../src/session/mux.js';
import { decodeIcmpPacket, decodeIcmp, decodeIpv4 } from '../../src/wire/icmp.js';
import { decodeIpv4Tcp, decodeTcp } from '../../src/wire/tcp.js';
import { mutate, resignedMutant, Rng, seedFromEnv } from '../helpers/fuzz.js';
import * as seeds from '../helpers/fuzz-seeds.js';

const COUNT = Number(process.env.FUZZ_COUNT ?? 50_000);
/** Validly signed mutants cost two Ed25519 operations each; fewer of them keep the file near a minute. */
const SIGNED_COUNT = Number(process.env.FUZZ_SIGNED_COUNT ?? 10_000);
const SEED = seedFromEnv();

function nameSeed(name: string): number {
  let h = SEED;
  for (const ch of name) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

/**
 * Feeds `count` mutants of `seedList` to `parse`. Anything thrown must be a NatpunchError with one of `codes`
 * ([] = must never throw).
 */
function fuzzParser(
  name: string,
  seedList: Buffer[],
  parse: (b: Buffer, rng: Rng) => void,
  codes: string[],
  opts: { keep?: number; count?: number } = {},
): void {
  test(`fuzz ${name}: ${opts.count ?? COUNT} mutants, ${codes.length ? `only ${codes.join('/')} thrown` : 'never a throw'}`, () => {
    const rng = new Rng(nameSeed(name));
    const count = opts.count ?? COUNT;
    for (let i = 0; i < count; i++) {
      const b = i < seedList.length ? seedList[i]! : mutate(rng, rng.pick(seedList), seedList, opts.keep ?? 0);
      try {
        parse(b, rng);
      } catch (err) {
        if (err instanceof NatpunchError && codes.includes(err.code)) continue;
        assert.fail(
          `${name}: ${(err as Error)?.stack ?? String(err)}\ninput ${b.toString('hex')}\nreplay with FUZZ_SEED=${SEED}`,
        );
      }
    }
  });
}

/** Splits `b` into random chunks and pushes them. */
function chunks(b: Buffer, rng: Rng, push: (c: Buffer) => void): void {
  for (let o = 0; o < b.length;) {
    const n = 1 + rng.int(b.length - o);
    push(b.subarray(o, o + n));
    o += n;
  }
}

// --- STUN and TURN ---------------------------------------------------------------------------------------------
const stunAndTurn = [...seeds.stunSeeds(), ...seeds.turnSeeds()];
const key = Buffer.alloc(16, 7);

fuzzParser(
  'STUN decode (every attribute decoder, TURN registry)',
  stunAndTurn,
  (b) => {
    const m = decodeStun(b, { allowLegacy: true });
    m.unknownComprehensionRequired(turnRegistry);
    checkFingerprint(m);
    verifyIntegrity(m, key);
    m.decodeAll(turnRegistry);
  },
  ['STUN_DECODE'],
);

fuzzParser(
  'STUN over TCP framing (RFC 8489 §6.2.2)',
  stunAndTurn,
  (b, rng) => {
    const f = new StunFramer();
    chunks(Buffer.concat([b, b]), rng, (c) => f.push(c));
  },
  ['STUN_DECODE'],
);

fuzzParser(
  'TURN server message parser (relay/message.ts)',
  stunAndTurn,
  (b) => {
    const m = relayMsg.parseStun(b);
    if (!m) return;
    relayMsg.errorInfo(m);
    relayMsg.attrXorAddresses(m, relayMsg.A.XOR_PEER_ADDRESS);
    relayMsg.attrText(m, relayMsg.A.USERNAME);
    relayMsg.attrUint32(m, relayMsg.A.LIFETIME);
    relayMsg.fingerprintOk(m);
    relayMsg.integrityKind(m);
    relayMsg.verifyIntegrity(m, key);
  },
  [],
);

fuzzParser(
  'ChannelData (RFC 8656 §12.4) over UDP and in streams',
  [...seeds.channelDataSeeds(), ...stunAndTurn.slice(0, 2)],
  (b, rng) => {
    decodeChannelDataUdp(b);
    streamFrameSize(b, 0);
    const f = new TurnStreamFramer(2048);
    chunks(Buffer.concat([b, b]), rng, (c) => f.push(c, () => {}));
  },
  [],
);

// --- rendezvous ------------------------------------------------------------------------------------------------
const rv = seeds.rendezvousSeeds();

fuzzParser(
  'rendezvous decode (every message type)',
  rv.all,
  (b) => {
    const m = decodeRendezvous(b);
    if (isSignedMessage(m)) verifyRendezvous(m);
  },
  ['RENDEZVOUS_DECODE'],
  { keep: 1 },
);

fuzzParser(
  'rendezvous validly signed mutants decode and verify',
  rv.signed.map((s) => s.bytes),
  (_b, rng) => {
    const s = rng.pick(rv.signed);
    const bytes = resignedMutant(rng, s.bytes, s.key.secretKey, s.keyAt);
    const m = decodeRendezvous(bytes);
    if (!isSignedMessage(m) || verifyRendezvous(m)) return;
    // It decoded but does not verify: only possible when the mutant's fields ended early and the tail of the real
    // signature happened to be zero bytes, read as padding (the decoder took the wrong 64 bytes as the signature).
    const padding = bytes.length - m.signedPart!.length - 64;
    assert.ok(
      padding > 0 && bytes.subarray(bytes.length - padding).every((x) => x === 0),
      `a re-signed mutant that decodes must verify: ${bytes.toString('hex')}`,
    );
  },
  ['RENDEZVOUS_DECODE'],
  { count: SIGNED_COUNT },
);

fuzzParser(
  'rendezvous TCP framing',
  rv.all.map((b) => frameTcp(b)),
  (b, rng) => {
    const d = new TcpFrameDecoder();
    chunks(b, rng, (c) => {
      for (const f of d.push(c)) {
        try {
          decodeRendezvous(f);
        } catch (err) {
          if (!(err instanceof NatpunchError && err.code === 'RENDEZVOUS_DECODE')) throw err;
        }
      }
    });
  },
  ['RENDEZVOUS_DECODE'],
);

/** An in-process datagram path into the server (synchronous delivery, replies recorded by destination). */
class Direct implements DatagramTransport {
  readonly closed = false;
  #listener: DatagramListener | null = null;
  sent: Array<{ port: number; bytes: number }> = [];
  send(msg: Uint8Array, port: number): void {
    this.sent.push({ port, bytes: msg.length });
  }
  onMessage(listener: DatagramListener): () => void {
    this.#listener = listener;
    return () => (this.#listener = null);
  }
  address() {
    return { address: '192.0.2.1', port: 3478, family: 'IPv4' };
  }
  deliver(msg: Buffer, port: number): void {
    this.#listener!(msg, { address: '198.51.100.2', port, family: 'IPv4' });
  }
}

test(`fuzz the rendezvous server: ${SIGNED_COUNT} mutants (half validly signed), no handler failure, no answer larger than its request`, async () => {
  const rng = new Rng(nameSeed('server'));
  // Rate limits off so every mutant reaches the handlers; short push schedule.
  const server = new RendezvousServer({ rateLimit: { perSecond: 1e9, burst: 1e9 }, notifyRtoMs: 1, maxPeers: 1000 });
  const t = new Direct();
  server.attach(t);
  try {
    // Registered peers the mutants can name (as a registered peer would be: from port 9, its own source).
    for (const s of rv.signed.filter((x) => x.bytes[2] === 0x01)) t.deliver(s.bytes, 9);
    await new Promise((r) => setImmediate(r));
    for (let i = 0; i < SIGNED_COUNT; i++) {
      let bytes: Buffer;
      if (i % 2) {
        const s = rng.pick(rv.signed);
        bytes = resignedMutant(rng, s.bytes, s.key.secretKey, s.keyAt);
      } else {
        bytes = mutate(rng, rng.pick(rv.all), rv.all, 1);
      }
      const port = 10_000 + (i % 50_000);
      t.sent = [];
      t.deliver(bytes, port);
      await new Promise((r) => setImmediate(r)); // the handlers' registry awaits
      const back = t.sent.filter((x) => x.port === port).reduce((n, x) => n + x.bytes, 0);
      if (back > bytes.length)
        assert.fail(`answered ${back} B to a ${bytes.length} B request ${bytes.toString('hex')} (FUZZ_SEED=${SEED})`);
    }
    assert.equal(server.stats().internalErrors, 0, `handler failures (FUZZ_SEED=${SEED})`);
  } finally {
    server.close();
  }
});

// --- port mapping ------------------------------------------------------------------------------------------------
fuzzParser(
  'PCP requests and responses (RFC 6887)',
  seeds.pcpSeeds(),
  (b) => {
    decodePcpRequest(b);
  },
  ['PORTMAP'],
);
fuzzParser(
  'PCP responses (RFC 6887)',
  seeds.pcpSeeds(),
  (b) => {
    decodePcpResponse(b);
  },
  ['PORTMAP'],
);
fuzzParser(
  'NAT-PMP requests and responses (RFC 6886)',
  seeds.natPmpSeeds(),
  (b) => {
    try {
      decodeNatPmpRequest(b);
    } finally {
      decodeNatPmpResponse(b);
    }
  },
  ['PORTMAP'],
);

// --- tunnels -----------------------------------------------------------------------------------------------------
fuzzParser(
  'SOCKS5 (RFC 1928, RFC 1929)',
  seeds.socksSeeds(),
  (b) => {
    for (const decode of [
      socks5.decodeGreeting,
      socks5.decodeAuthRequest,
      socks5.decodeRequest,
      socks5.decodeReply,
      (x: Buffer) => socks5.decodeAddress(x, 0),
    ]) {
      try {
        decode(b);
      } catch (err) {
        if (!(err instanceof NatpunchError && err.code === 'SOCKS_PROTOCOL')) throw err;
      }
    }
  },
  ['SOCKS_PROTOCOL'],
);

fuzzParser(
  'tunnel headers (src/tunnel/wire.ts)',
  seeds.tunnelSeeds(),
  (b) => {
    try {
      decodeTunnelRequest(b);
    } finally {
      decodeTunnelReply(b);
    }
  },
  ['TUNNEL_PROTOCOL', 'SOCKS_PROTOCOL'],
);

// --- session frames ---------------------------------------------------------------------------------------------
test(`fuzz session frames (src/session/mux.ts): ${COUNT} mutants into one mux, never a throw`, () => {
  const sink: FrameSink = { writeFrame: () => true, waitDrain: async () => {}, closed: false };
  const list = seeds.muxSeeds();
  const rng = new Rng(nameSeed('mux'));
  let mux = new Mux(sink, { isInitiator: true, window: 4096, maxStreams: 16 });
  const wire = (m: Mux) => {
    m.on('protocol-error', () => {});
    m.on('stream', (s: NodeJS.ReadableStream & { destroy(): void }) => {
      s.on('error', () => {});
      s.resume();
    });
    for (const ev of ['datagram', 'ping', 'pong', 'hello', 'reject', 'goodbye', 'resume']) m.on(ev, () => {});
  };
  wire(mux);
  for (let i = 0; i < COUNT; i++) {
    const b = i < list.length ? list[i]! : mutate(rng, rng.pick(list), list);
    try {
      mux.onFrame(b);
    } catch (err) {
      assert.fail(`mux frame ${b.toString('hex')}: ${(err as Error).stack} (FUZZ_SEED=${SEED})`);
    }
    if (i % 5000 === 4999) {
      // A fresh mux now and then, so later frames also meet one without streams or a pending resume.
      mux = new Mux(sink, { isInitiator: rng.int(2) === 0, window: 4096, maxStreams: 16 });
      wire(mux);
    }
  }
});

// --- raw packets (ICMP and TCP hole punching read them from raw sockets) ---------------------------------------
fuzzParser(
  'IPv4 / ICMP / TCP packets and the TCP sequence offer',
  [...seeds.packetSeeds(), Buffer.alloc(32, 1)],
  (b) => {
    decodeIpv4(b);
    decodeIcmp(b);
    decodeIcmpPacket(b);
    decodeTcp(b);
    decodeIpv4Tcp(b);
    decodeSeqOffer(b);
  },
  [],
);
