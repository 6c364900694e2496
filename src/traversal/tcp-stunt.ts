/**
 * TTL discovery for STUNT #2 low-TTL SYNs (Guha & Francis, IMC 2005; Eppinger, "TCP connections for P2P apps",
 * 2005): how many hops away is the outermost NAT in front of us?
 *
 * Method: SYNs with TTL 1, 2, ... to our OWN public address (the server-reflexive address the rendezvous saw). While
 * the TTL is too small the SYN expires at a router inside our network, which answers ICMP Time Exceeded (RFC 792;
 * read on a raw ICMP socket when we have CAP_NET_RAW, and also reported by the kernel to the connecting socket as
 * EHOSTUNREACH). At TTL = n the SYN reaches the NAT that owns the public address, which is the packet's destination
 * and answers itself (RST, or nothing when it filters): n is the number of hops to pass, and a SYN with TTL n + 1
 * leaves a mapping in every NAT of ours and expires at the first router beyond them.
 *
 * Caveat (documented in docs/tcp.md §3): the low-TTL SYN must expire at a router between the two NATs. When the peer's
 * NAT is the very next hop, it receives the SYN as addressed to itself and answers RST, which closes our mapping;
 * P2P-NAT (plain SYNs with retries) is the technique for that case.
 */
import os from 'node:os';
import { NatpunchError } from '../util/errors.js';
import { throwIfAborted } from '../util/abort.js';
import { silentLogger, type Logger } from '../util/log.js';
import { loadAddon, type NativeAddon } from '../net/native.js';
import { RawSocket } from '../net/raw.js';
import { startConnect } from '../net/tcp.js';
import { decodeIcmpPacket } from '../wire/icmp.js';

export const TTL_DISCOVERY_DEFAULTS = {
  /** Home networks rarely nest NATs more than 2-3 deep; 8 bounds the probes (8 SYNs at most). */
  maxTtl: 8,
  /** Wait per probe for Time Exceeded / RST; a LAN router answers in well under a millisecond. */
  probeTimeoutMs: 1_000,
  /** Destination port of the probes on our own NAT: discard (RFC 863), not a port a NAT maps. */
  probePort: 9,
  /** How long a discovered hop count is trusted for the same network. */
  cacheMaxAgeMs: 10 * 60_000,
} as const;

export type HopOutcome = 'time-exceeded' | 'unreachable' | 'reached' | 'silent';

export interface HopProbe {
  ttl: number;
  outcome: HopOutcome;
  /** The router that sent Time Exceeded (known when the raw ICMP socket was available). */
  router?: string;
  errno?: string;
}

export interface NatHops {
  /** Hops up to and including our outermost NAT (0: the public address is our own, no NAT). */
  natHops: number;
  /** TTL for STUNT #2 SYNs: passes all our NATs, expires right after. */
  lowTtl: number;
  hops: HopProbe[];
  /** True when Time Exceeded was read on a raw ICMP socket (router addresses known). */
  viaIcmp: boolean;
}

export interface DiscoverNatHopsOptions {
  /** Our public (server-reflexive) address, as the rendezvous server saw it. */
  publicAddress: string;
  /** Local address to send from; default the wildcard. */
  localAddress?: string;
  maxTtl?: number;
  probeTimeoutMs?: number;
  probePort?: number;
  /** A raw ICMP socket to read Time Exceeded on; default: open one when permitted, else rely on socket errors. */
  raw?: RawSocket | false;
  signal?: AbortSignal;
  logger?: Logger;
  addon?: NativeAddon;
}

function isLocalAddress(address: string): boolean {
  if (address.startsWith('127.')) return true;
  for (const list of Object.values(os.networkInterfaces())) {
    for (const i of list ?? []) if (i.address === address) return true;
  }
  return false;
}

/** Finds how many hops our outermost NAT is away (see the module comment for the method). */
export async function discoverNatHops(options: DiscoverNatHopsOptions): Promise<NatHops> {
  const addon = options.addon ?? loadAddon('TTL discovery');
  const log = options.logger ?? silentLogger;
  const target = options.publicAddress;
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(target)) {
    throw new NatpunchError(
      'BAD_ARGUMENT',
      `TTL discovery needs our public IPv4 address (got ${JSON.stringify(target)})`,
    );
  }
  const maxTtl = options.maxTtl ?? TTL_DISCOVERY_DEFAULTS.maxTtl;
  const probeTimeoutMs = options.probeTimeoutMs ?? TTL_DISCOVERY_DEFAULTS.probeTimeoutMs;
  const port = options.probePort ?? TTL_DISCOVERY_DEFAULTS.probePort;
  throwIfAborted(options.signal);
  if (isLocalAddress(target)) return { natHops: 0, lowTtl: 1, hops: [], viaIcmp: false };

  let raw: RawSocket | undefined;
  let ownsRaw = false;
  if (options.raw) raw = options.raw;
  else if (options.raw !== false) {
    try {
      raw = RawSocket.open({ addon });
      ownsRaw = true;
    } catch (err) {
      log.debug({ err }, 'ttl discovery: no raw ICMP socket, using socket errors only');
    }
  }

  const hops: HopProbe[] = [];
  try {
    for (let ttl = 1; ttl <= maxTtl; ttl++) {
      throwIfAborted(options.signal);
      const probe = await probeOnce(addon, raw, {
        target,
        port,
        ttl,
        localAddress: options.localAddress,
        probeTimeoutMs,
        signal: options.signal,
      });
      hops.push(probe);
      log.debug(probe, 'ttl discovery probe');
      if (probe.outcome === 'reached' || probe.outcome === 'silent') {
        return { natHops: ttl, lowTtl: Math.min(255, ttl + 1), hops, viaIcmp: raw !== undefined };
      }
    }
  } finally {
    if (ownsRaw) raw?.close();
  }
  throw new NatpunchError('PUNCH_FAILED', `TTL discovery: ${target} not reached within ${maxTtl} hops`, {
    details: { hops },
  });
}

async function probeOnce(
  addon: NativeAddon,
  raw: RawSocket | undefined,
  p: { target: string; port: number; ttl: number; localAddress?: string; probeTimeoutMs: number; signal?: AbortSignal },
): Promise<HopProbe> {
  const pc = startConnect({
    address: p.target,
    port: p.port,
    ttl: p.ttl,
    localAddress: p.localAddress,
    timeoutMs: p.probeTimeoutMs,
    signal: p.signal,
    addon,
  });
  const localPort = pc.local.port;
  let router: string | undefined;
  let unreachable = false;
  let stopRaw = () => {};
  const icmpSeen = new Promise<void>((resolve) => {
    if (!raw) return;
    stopRaw = raw.onMessage((packet, rinfo) => {
      const d = decodeIcmpPacket(packet);
      if (!d || (d.icmp.kind !== 'time-exceeded' && d.icmp.kind !== 'dest-unreachable') || !d.icmp.quoted) return;
      const q = d.icmp.quoted;
      // RFC 792: the quote holds our SYN's IP header + ports; a NAT on the way back restores our own address/port.
      if (q.header.destination !== p.target || q.destinationPort !== p.port || q.sourcePort !== localPort) return;
      if (d.icmp.kind === 'time-exceeded') router = rinfo.address;
      else unreachable = true;
      resolve();
    });
  });
  try {
    const outcome = await Promise.race([
      pc.done.then(
        (socket) => {
          socket.destroy();
          return 'reached' as const;
        },
        (err: NatpunchError) => {
          if (err.code === 'ABORTED') throw err;
          const errno = String(err.details?.errno ?? err.code);
          if (errno === 'ECONNREFUSED') return 'reached' as const; // the NAT itself answered RST
          if (errno === 'TIMEOUT' || err.code === 'TIMEOUT') return 'silent' as const;
          return errno; // EHOSTUNREACH / ENETUNREACH: an ICMP error reached the socket
        },
      ),
      icmpSeen.then(() => 'icmp' as const),
    ]);
    if (raw && router === undefined && !unreachable && (outcome === 'EHOSTUNREACH' || outcome === 'ENETUNREACH')) {
      // The socket heard of the ICMP error first; give the raw socket a moment to deliver its copy (the router).
      await Promise.race([icmpSeen, new Promise((r) => setTimeout(r, 100))]);
    }
    if (router !== undefined) return { ttl: p.ttl, outcome: 'time-exceeded', router };
    if (outcome === 'reached' || outcome === 'silent') return { ttl: p.ttl, outcome };
    if (unreachable || outcome === 'icmp') return { ttl: p.ttl, outcome: 'unreachable' };
    // Without a raw socket the kernel's EHOSTUNREACH is all we know: Time Exceeded and Host Unreachable look alike.
    return { ttl: p.ttl, outcome: outcome === 'EHOSTUNREACH' ? 'time-exceeded' : 'unreachable', errno: outcome };
  } finally {
    stopRaw();
    pc.cancel();
  }
}

/**
 * Remembers discovered hop counts per network (local address + public address), so STUNT #2 does not repeat the
 * probes for every connection. Owned by whoever creates it; holds no timers.
 */
export class NatHopCache {
  #entries = new Map<string, { value: NatHops; at: number }>();
  readonly maxAgeMs: number;

  constructor(maxAgeMs: number = TTL_DISCOVERY_DEFAULTS.cacheMaxAgeMs) {
    this.maxAgeMs = maxAgeMs;
  }

  static networkKey(localAddress: string | undefined, publicAddress: string): string {
    return `${localAddress ?? '*'}|${publicAddress}`;
  }

  get(key: string, now = Date.now()): NatHops | undefined {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    if (now - e.at > this.maxAgeMs) {
      this.#entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key: string, value: NatHops, now = Date.now()): void {
    this.#entries.set(key, { value, at: now });
  }

  clear(): void {
    this.#entries.clear();
  }

  /** discoverNatHops through the cache. */
  async discover(options: DiscoverNatHopsOptions): Promise<NatHops & { cached: boolean }> {
    const key = NatHopCache.networkKey(options.localAddress, options.publicAddress);
    const hit = this.get(key);
    if (hit) return { ...hit, cached: true };
    const value = await discoverNatHops(options);
    this.set(key, value);
    return { ...value, cached: false };
  }
}
