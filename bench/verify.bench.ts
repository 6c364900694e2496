// Ed25519 verification per operation: libsodium (sodium-native crypto_sign_verify_detached, what the rendezvous uses)
// against node:crypto (OpenSSL) on the same 200-byte message, interleaved in rounds. Writes bench/results/verify.*.
import { createPublicKey, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { generateKeyPair, sign, verify as sodiumVerify } from '../src/session/identity.js';
import { machine, writeResults } from './lib/report.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const OPS = Number(process.env.BENCH_OPS ?? 2000);

function spkiFromRaw(raw: Uint8Array): KeyObject {
  // RFC 8410 §4: SubjectPublicKeyInfo for Ed25519 is a fixed 12-byte prefix and the 32-byte key.
  const prefix = Buffer.from('302a300506032b6570032100', 'hex');
  return createPublicKey({ key: Buffer.concat([prefix, raw]), format: 'der', type: 'spki' });
}

function perOpUs(fn: () => boolean): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < OPS; i++) if (!fn()) throw new Error('verification failed');
  return Number(process.hrtime.bigint() - t0) / 1e3 / OPS;
}

const start = machine();
const kp = generateKeyPair();
const msg = Buffer.alloc(200, 7);
const sig = sign(msg, kp.secretKey);
const keyObject = spkiFromRaw(kp.publicKey);
const runs: Array<{ round: number; sodium_us: number; node_us: number; node_import_us: number }> = [];
for (let round = 0; round < ROUNDS; round++) {
  const sodium_us = perOpUs(() => sodiumVerify(sig, msg, kp.publicKey));
  const node_us = perOpUs(() => nodeVerify(null, msg, keyObject, sig));
  // The server sees a different key per message: node:crypto then pays a key import each time.
  const node_import_us = perOpUs(() => nodeVerify(null, msg, spkiFromRaw(kp.publicKey), sig));
  runs.push({ round, sodium_us, node_us, node_import_us });
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const summary = {
  sodium_us_median: med(runs.map((r) => r.sodium_us)),
  node_us_median: med(runs.map((r) => r.node_us)),
  node_import_us_median: med(runs.map((r) => r.node_import_us)),
};
writeResults('verify', {
  title: 'Ed25519 verification per operation',
  start,
  config: { rounds: ROUNDS, opsPerRound: OPS, messageBytes: msg.length },
  summary,
  runs,
  table: [
    ['implementation', 'µs per verify (median of rounds)'],
    ['sodium-native crypto_sign_verify_detached', summary.sodium_us_median.toFixed(1)],
    ['node:crypto verify, key imported once', summary.node_us_median.toFixed(1)],
    ['node:crypto verify, key imported per message', summary.node_import_us_median.toFixed(1)],
  ],
});
