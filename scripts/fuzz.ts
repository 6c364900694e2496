#!/usr/bin/env node
// Long fuzz run against a live server (issue 18): 1,000,000 mutants per parser family (STUN, TURN, ChannelData,
// rendezvous, validly signed rendezvous) sent over UDP to `natpunch serve`, with a health check every
// HEALTH_EVERY datagrams: a STUN Binding and a rendezvous PING from a clean socket must be answered within
// HEALTH_TIMEOUT_MS throughout. Exit 1 when a check fails or (in-process server) a handler failed.
//
//   node --import tsx scripts/fuzz.ts [--count N] [--seed S] [--family NAME] [--target HOST:PORT [--allow-remote]]
//
// Without --target it starts `serve` in-process on 127.0.0.1 (STUN + rendezvous + TURN with a shared secret),
// with the rendezvous rate limits raised so mutants reach the handlers. A --target must be a server you run:
// anything but loopback also needs --allow-remote. Sending is paced and bounded by count.
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { startServer } from '../src/server/serve.js';
import { attachTurn } from '../src/relay/attach.js';
import { TurnServer } from '../src/relay/server.js';
import { SharedSecretStore } from '../src/relay/auth.js';
import { turnRegistry } from '../src/wire/turn.js';
import { encodeStun, StunClass, StunMethod, attr, Software } from '../src/wire/stun/index.js';
import { encodeRendezvous, PONG_BYTES } from '../src/wire/rendezvous.js';
import { mutate, resignedMutant, Rng, seedFromEnv } from '../test/helpers/fuzz.js';
import * as seeds from '../test/helpers/fuzz-seeds.js';

const HEALTH_EVERY = 20_000;
const HEALTH_TIMEOUT_MS = 2_000;
/** Datagrams sent before yielding to the event loop (and to the in-process server). */
const BATCH = 500;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const count = Number(arg('--count') ?? 1_000_000);
const seed = arg('--seed') !== undefined ? Number(arg('--seed')) >>> 0 : seedFromEnv();
const targetText = arg('--target');
if (!Number.isInteger(count) || count < 1) throw new Error('--count must be a positive integer');

async function main(): Promise<number> {
  let target: { host: string; port: number };
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  let turn: TurnServer | undefined;
  if (targetText) {
    const i = targetText.lastIndexOf(':');
    target = { host: targetText.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(targetText.slice(i + 1)) };
    if (!isIP(target.host)) throw new Error('--target needs an IP address and port');
    const loopback = target.host === '::1' || target.host.startsWith('127.');
    if (!loopback && !process.argv.includes('--allow-remote'))
      throw new Error(`${target.host} is not loopback: fuzz only servers you run, and say so with --allow-remote`);
  } else {
    server = await startServer({
      port: 0,
      addresses: ['127.0.0.1'],
      stun: { registry: turnRegistry },
      rendezvous: { rateLimit: { perSecond: 1e9, burst: 1e9 } },
    });
    turn = new TurnServer({
      credentials: new SharedSecretStore(['fuzz-secret']),
      relayAddress: '127.0.0.1',
      allowPeers: ['127.0.0.0/8'],
    });
    attachTurn(server, turn);
    target = { host: '127.0.0.1', port: server.udp[0]!.port };
  }
  const type = target.host.includes(':') ? 'udp6' : 'udp4';
  const attacker = dgram.createSocket(type);
  const health = dgram.createSocket(type);
  attacker.on('message', () => {});
  await Promise.all([new Promise<void>((r) => attacker.bind(0, r)), new Promise<void>((r) => health.bind(0, r))]);

  /** A STUN Binding and a rendezvous PING from a clean socket, both answered in time ('' when fine, else what is
   *  missing). Three tries: a datagram lost while the server's receive queue overflows is not a failure. */
  async function healthy(): Promise<string> {
    let missing = '';
    for (let attempt = 0; attempt < 3; attempt++) {
      missing = await healthOnce();
      if (!missing) return '';
    }
    return missing;
  }

  async function healthOnce(): Promise<string> {
    const tid = randomBytes(12);
    const binding = encodeStun({
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: tid,
      attributes: [attr(Software, 'natpunch fuzz health check')],
    });
    const pingId = randomBytes(4).readUInt32BE(0);
    const ping = encodeRendezvous({ type: 'ping', requestId: pingId, time: Date.now() }, undefined, {
      padTo: PONG_BYTES,
    });
    let gotStun = false;
    let gotPong = false;
    return new Promise<string>((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        health.off('message', onMessage);
        resolve(
          ok
            ? ''
            : [gotStun ? '' : 'no STUN Binding response', gotPong ? '' : 'no rendezvous PONG']
                .filter(Boolean)
                .join(', '),
        );
      };
      const onMessage = (m: Buffer) => {
        if (m.length >= 20 && m[0]! < 4 && m.subarray(8, 20).equals(tid)) gotStun = true;
        if (m[0] === 0xf0 && m[2] === 0x09 && m.readUInt32BE(3) === pingId) gotPong = true;
        if (gotStun && gotPong) done(true);
      };
      const timer = setTimeout(() => done(false), HEALTH_TIMEOUT_MS);
      health.on('message', onMessage);
      health.send(binding, target.port, target.host);
      health.send(ping, target.port, target.host);
    });
  }

  const rv = seeds.rendezvousSeeds();
  const stun = seeds.stunSeeds();
  const turnSeeds = seeds.turnSeeds();
  const channel = seeds.channelDataSeeds();
  const families: Array<{ name: string; next: (rng: Rng) => Buffer }> = [
    { name: 'STUN', next: (rng) => mutate(rng, rng.pick(stun), stun) },
    { name: 'TURN', next: (rng) => mutate(rng, rng.pick(turnSeeds), turnSeeds) },
    { name: 'ChannelData', next: (rng) => mutate(rng, rng.pick(channel), channel) },
    { name: 'rendezvous', next: (rng) => mutate(rng, rng.pick(rv.all), rv.all, 1) },
    {
      name: 'rendezvous, validly signed',
      next: (rng) => {
        const s = rng.pick(rv.signed);
        return resignedMutant(rng, s.bytes, s.key.secretKey, s.keyAt);
      },
    },
  ];
  console.log(`fuzzing ${target.host}:${target.port}: ${count} datagrams per family, seed ${seed}`);
  let failed = false;
  try {
    const before = await healthy();
    if (before) throw new Error(`the server does not answer before fuzzing: ${before}`);
    const only = arg('--family');
    for (const f of families.filter((x) => only === undefined || x.name === only)) {
      const rng = new Rng(seed ^ (f.name.length * 0x9e3779b1));
      const started = Date.now();
      let checks = 0;
      for (let i = 0; i < count;) {
        for (const end = Math.min(count, i + BATCH); i < end; i++) {
          const b = f.next(rng);
          if (b.length > 0 && b.length <= 65_507) attacker.send(b, target.port, target.host);
        }
        await new Promise((r) => setImmediate(r));
        if (i % HEALTH_EVERY < BATCH || i === count) {
          checks++;
          const missing = await healthy();
          if (missing) {
            console.error(`${f.name}: the server stopped answering after ${i} datagrams: ${missing} (seed ${seed})`);
            failed = true;
            break;
          }
        }
      }
      const s = ((Date.now() - started) / 1000).toFixed(1);
      console.log(
        `${f.name}: ${failed ? 'FAILED' : 'ok'}, ${count} datagrams in ${s} s, ${checks} health checks answered`,
      );
      if (failed) break;
    }
    if (server) {
      const st = server.rendezvous!.stats();
      console.log(
        `in-process server: rendezvous internal errors ${st.internalErrors}, malformed ${st.malformed}, bad signatures ${st.badSignature}; STUN drops ${server.stun.counters.drops}`,
      );
      if (st.internalErrors > 0) failed = true;
    }
  } finally {
    attacker.close();
    health.close();
    turn?.close();
    await server?.close();
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`fuzz: ${(err as Error).message}`);
    process.exit(1);
  },
);
