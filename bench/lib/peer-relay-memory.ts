/**
 * Heap bytes per key of the peer relay's state (issue 20: the rendezvous' 100k-peer memory budget). In-process,
 * no sockets: a PeerRelay issues credentials to N random keys; the live heap with it is compared, after forced
 * collections, with the live heap once it is dropped (comparing with the heap before it was made is off by the
 * megabytes of code and feedback the run itself compiles or flushes). Heap bytes do not depend on machine load, so this number is quotable on a busy host.
 *
 *   node --expose-gc --import tsx bench/lib/peer-relay-memory.ts [keys=100000] [--introduce]
 *
 * Two workloads: every key from its own source address (the per-source credential limiter holds a bucket each,
 * up to its bound), and all keys from 64 sources with the rate limit raised (the per-key state alone). 1 in 10
 * keys registers over IPv6. --introduce also introduces consecutive pairs (the lazily made introduction maps).
 */
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { PeerRelay } from '../../src/relay/peer-relay.js';
import type { Endpoint } from '../../src/wire/rendezvous.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

function settle(): number {
  for (let i = 0; i < 4; i++) gc!();
  return process.memoryUsage().heapUsed;
}

function endpointOf(i: number, sources: number): Endpoint {
  const s = i % sources;
  const port = 1024 + (i % 60_000);
  if (i % 10 === 9)
    return { transport: 'udp', address: `2001:db8:${(s >> 16).toString(16)}:${(s & 0xffff).toString(16)}::1`, port };
  return {
    transport: i % 7 === 0 ? 'tcp' : 'udp',
    address: `198.${(s >> 16) & 255}.${(s >> 8) & 255}.${s & 255}`,
    port,
  };
}

function run(keys: number, sources: number, ratePerMinute: number | undefined, introduce: boolean) {
  // Key material made outside the relay: it is the caller's (the registry's), not the relay's.
  const material = Array.from({ length: keys }, () => randomBytes(32));
  const seen = material.map((_, i) => endpointOf(i, sources));
  let pr: PeerRelay | null = new PeerRelay({
    port: 3478,
    maxKeys: keys + 1,
    secret: 'bench',
    ...(ratePerMinute ? { credentialRatePerMinute: ratePerMinute } : {}),
  });
  const now = Date.now();
  let issued = 0;
  for (let i = 0; i < keys; i++) if (pr.issue(material[i]!, seen[i]!, false, now + i)) issued++;
  if (introduce) {
    for (let i = 0; i + 1 < keys; i += 2) {
      pr.introduce(material[i]!, [seen[i]!], material[i + 1]!, [seen[i + 1]!], now + keys);
    }
  }
  const held = pr.size;
  // What the relay retains: the live heap with it, less the live heap once it is dropped (the inputs stay alive).
  const withRelay = settle();
  pr = null;
  const without = settle();
  if (material.length + seen.length < 0) console.log('unreachable');
  return {
    keys,
    sources,
    ratePerMinute: ratePerMinute ?? 'default',
    introduce,
    held,
    issued,
    perKey: Math.round((withRelay - without) / held),
  };
}

const keys = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 100_000);
const introduce = process.argv.includes('--introduce');
const rows = [run(keys, keys, undefined, introduce), run(keys, 64, 1_000_000_000, introduce)];
console.log(JSON.stringify({ node: process.version, loadavg: loadavg(), rows }, null, 2));
for (const r of rows) {
  console.log(
    `${r.keys} keys from ${r.sources} sources${r.introduce ? ', introduced in pairs' : ''}: ${r.perKey} B per key (${r.held} held, ${r.issued} issued)`,
  );
}
