/**
 * netcheck: what does the NAT in front of this host do? Runs the discovery probes as a plan — independent probes in
 * parallel, dependent ones chained on what they need, every wait bounded — and returns one typed NatReport that
 * later code feeds into the choice of punching strategy.
 *
 * The plan (t = 0 is when every UDP socket is bound):
 *   t=0  in this order, back to back: Test I from the main socket S1 to every server (RFC 5780 §4.3 / plain STUN),
 *        a Binding from the hairpin helper socket H, the two filtering tests from fresh sockets F1/F2 (RFC 5780 §4.4:
 *        CHANGE-REQUEST ip+port, port only), then one Binding each from N fresh allocation sockets (their first
 *        packets leave consecutively, so a sequential NAT hands them consecutive ports). In parallel: Test I over
 *        TCP, IPv6 Test I, the port-mapping presence probe.
 *   Test I answered → Tests II and III from S1 towards OTHER-ADDRESS (RFC 5780 §4.3); TCP to the other addresses
 *        from the same local port; hairpin exchange between S1 and H once both have mapped addresses (§4.7).
 *   Optional (`lifetime`): binding lifetime search (RFC 5780 §4.6 with RESPONSE-PORT, see lifetime.ts).
 * Filtering sockets never send anywhere else, so the alternate address' answers test the filter and nothing else.
 */
import dns from 'node:dns/promises';
import net from 'node:net';
import os from 'node:os';
import { setMaxListeners } from 'node:events';
import { randomBytes } from 'node:crypto';
import { NodeDatagramTransport, type DatagramTransport } from '../net/datagram.js';
import { FirstByte } from '../net/demux.js';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { timeoutSignal } from '../util/abort.js';
import { analyseAllocation, type AllocationPattern } from './allocation.js';
import {
  classicName,
  classifyFiltering,
  classifyMapping,
  sameEndpoint,
  type ClassicNatType,
  type Endpoint,
  type FilteringBehaviour,
  type MappingBehaviour,
} from './classify.js';
import { measureLifetime, type LifetimeResult } from './lifetime.js';
import { probePortMappingPresence, type PortMappingPresence } from './portmap-probe.js';
import { BindingProber, PROBE_SCHEDULE, tcpBinding, type BindingAnswer, type ProbeSchedule } from './probe.js';

/** RFC 8489 §18.6 / RFC 5780 §9: the default STUN port. */
export const DEFAULT_STUN_PORT = 3478;
/** Hard cap on a run without --lifetime; the plan itself ends in ~1.5 s plus a few RTTs. */
export const NETCHECK_DEFAULT_TIMEOUT_MS = 5000;
/** Fresh sockets for the allocation pattern; 5 give 4 steps, enough to tell a steady delta from chance. */
export const ALLOCATION_SAMPLES = 5;
/** TCP probes' shared bound: Test I over TCP plus the second round to the other addresses (a lost SYN costs Linux
 * 1 s before it retries, so under heavy loss TCP may end undetermined rather than stretch the run). */
export const TCP_BUDGET_MS = 2000;
/** The second TCP round always gets at least this long (one connect + answer at a few hundred ms RTT). */
export const TCP_MIN_SECOND_ROUND_MS = 500;
/** Hairpin probes: sent at these offsets until one arrives; the exchange gives up at HAIRPIN_BUDGET_MS. */
export const HAIRPIN_SENDS_MS = [0, 100, 250, 400, 550, 700, 850, 1000, 1150];
export const HAIRPIN_BUDGET_MS = 1400;
/** DNS resolution of --server names. */
export const RESOLVE_TIMEOUT_MS = 1500;
/** Lifetime search default upper bound: RFC 4787 REQ-5 says a mapping must live at least 2 min (5 min recommended). */
export const LIFETIME_DEFAULT_MAX_MS = 330_000;

export interface NetcheckServer {
  host: string;
  port?: number;
}

export interface NetcheckProgress {
  probe:
    | 'resolve'
    | 'udp'
    | 'mapping'
    | 'filtering'
    | 'allocation'
    | 'hairpin'
    | 'tcp'
    | 'ipv6'
    | 'port-mapping'
    | 'lifetime';
  state: 'start' | 'done';
  detail?: string;
}

export interface NetcheckOptions {
  /** STUN servers: "host", "host:port", "[v6]:port" or objects. One RFC 5780 server, or two or more plain ones. */
  servers: Array<string | NetcheckServer>;
  /** Measure the mapping lifetime (takes minutes; off by default). */
  lifetime?: boolean;
  /** Upper bound of the lifetime search. */
  lifetimeMaxMs?: number;
  /** Hard bound on the run (excluding the lifetime search). */
  timeoutMs?: number;
  /** Probe the default gateway for NAT-PMP/PCP and the LAN for UPnP IGD (default true). */
  portMapping?: boolean;
  /** Gateway to ask instead of the default route's. */
  gateway?: string;
  /** Probe STUN over TCP (default true). */
  tcp?: boolean;
  allocationSamples?: number;
  /** Local IPv4 address to bind probe sockets to (default all). */
  localAddress?: string;
  /** Retransmission schedule for UDP probes (tests may shorten it). */
  schedule?: ProbeSchedule;
  signal?: AbortSignal;
  logger?: Logger;
  onProgress?: (event: NetcheckProgress) => void;
}

export type Difficulty = 'none' | 'easy' | 'hard' | 'blocked' | 'unknown';

/** The report. Every field is always present; `null` means "not determined" and `undetermined` says why. */
export interface NatReport {
  version: 1;
  startedAt: string;
  durationMs: number;
  servers: Array<{
    host: string;
    address: string | null;
    port: number;
    family: 4 | 6 | null;
    reachable: boolean;
    rfc5780: boolean;
    otherAddress: Endpoint | null;
    software: string | null;
    rttMs: number | null;
    mappedAddress: Endpoint | null;
  }>;
  udp: {
    blocked: boolean | null;
    localAddress: Endpoint | null;
    publicAddress: Endpoint | null;
    publicAddresses: Endpoint[];
    behindNat: boolean | null;
    mapping: MappingBehaviour;
    filtering: FilteringBehaviour;
    classic: ClassicNatType;
    allocation: {
      pattern: AllocationPattern;
      delta: number | null;
      samples: Array<{ local: number; external: number }>;
    };
    hairpinning: boolean | null;
    alg: boolean | null;
    lifetime: LifetimeResult | null;
  };
  tcp: {
    publicAddress: Endpoint | null;
    behindNat: boolean | null;
    mapping: MappingBehaviour;
  };
  ipv6: {
    publicAddress: Endpoint | null;
    behindNat: boolean | null;
  };
  portMapping: PortMappingPresence;
  difficulty: Difficulty;
  verdict: string;
  undetermined: Array<{ what: string; why: string }>;
}

interface ResolvedServer {
  host: string;
  port: number;
  v4?: string;
  v6?: string;
  error?: string;
}

/** Parses "host", "host:port", "[v6]:port" and bare IPv6. */
export function parseServer(input: string | NetcheckServer): NetcheckServer {
  if (typeof input !== 'string') return input;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(input);
  if (v6) return { host: v6[1]!, port: v6[2] ? checkPort(v6[2], input) : undefined };
  if (net.isIPv6(input)) return { host: input };
  const m = /^([^:]+)(?::(\d+))?$/.exec(input);
  if (!m) throw new NatpunchError('BAD_ARGUMENT', `invalid server "${input}": use HOST, HOST:PORT or [IPv6]:PORT`);
  return { host: m[1]!, port: m[2] ? checkPort(m[2], input) : undefined };
}

function checkPort(text: string, context: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new NatpunchError('BAD_ARGUMENT', `invalid port in server "${context}"`);
  }
  return port;
}

async function resolveServer(s: NetcheckServer, signal: AbortSignal): Promise<ResolvedServer> {
  const port = s.port ?? DEFAULT_STUN_PORT;
  if (net.isIPv4(s.host)) return { host: s.host, port, v4: s.host };
  if (net.isIPv6(s.host)) return { host: s.host, port, v6: s.host };
  try {
    const lookup = dns.lookup(s.host, { all: true });
    const addrs = await Promise.race([
      lookup,
      new Promise<never>((_, reject) => {
        const t = setTimeout(
          () => reject(new Error(`DNS timed out after ${RESOLVE_TIMEOUT_MS} ms`)),
          RESOLVE_TIMEOUT_MS,
        );
        signal.addEventListener(
          'abort',
          () => {
            clearTimeout(t);
            reject(new Error('aborted'));
          },
          { once: true },
        );
        lookup.then(
          () => clearTimeout(t),
          () => clearTimeout(t),
        );
      }),
    ]);
    return {
      host: s.host,
      port,
      v4: addrs.find((a) => a.family === 4)?.address,
      v6: addrs.find((a) => a.family === 6)?.address,
    };
  } catch (err) {
    return { host: s.host, port, error: (err as Error).message };
  }
}

/** Addresses of this host's interfaces: a mapped address among them means no NAT on the path. */
function localAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(os.networkInterfaces())) for (const i of list ?? []) out.add(i.address);
  return out;
}

function isLocal(e: Endpoint, localPort: number, locals: Set<string>): boolean {
  return e.port === localPort && locals.has(e.address);
}

/** The external endpoint of an answer: XOR-MAPPED-ADDRESS, else the legacy MAPPED-ADDRESS. */
function mappedOf(a?: BindingAnswer): Endpoint | undefined {
  return a?.xorMapped ?? a?.mapped;
}

const HAIRPIN_TOKEN_LEN = 16;

/**
 * Runs netcheck. Never throws for network conditions (they become `undetermined` entries and verdicts); throws
 * BAD_ARGUMENT for bad input and ABORTED when `signal` fires.
 */
export async function netcheck(options: NetcheckOptions): Promise<NatReport> {
  if (!options.servers?.length) throw new NatpunchError('BAD_ARGUMENT', 'netcheck needs at least one --server');
  const parsed = options.servers.map(parseServer);
  const log = options.logger ?? silentLogger;
  const progress = (e: NetcheckProgress) => {
    log.debug(e, 'netcheck progress');
    try {
      options.onProgress?.(e);
    } catch {
      // a progress callback must not break the run
    }
  };
  const schedule = options.schedule ?? PROBE_SCHEDULE;
  const started = Date.now();
  const startedAt = new Date(started).toISOString();
  const deadline = timeoutSignal(options.timeoutMs ?? NETCHECK_DEFAULT_TIMEOUT_MS, options.signal);
  const signal = deadline.signal;
  // Every concurrent probe listens for the deadline.
  setMaxListeners(200, signal);
  const undetermined: NatReport['undetermined'] = [];
  const why = (what: string, reason: string) => undetermined.push({ what, why: reason });
  const owned: Array<{ close(): void }> = [];
  const bindUdp = async (type: 'udp4' | 'udp6') => {
    const t = await NodeDatagramTransport.bind({ type, address: type === 'udp4' ? options.localAddress : undefined });
    owned.push(t);
    const prober = new BindingProber(t);
    owned.push(prober);
    return { t, prober };
  };

  try {
    progress({ probe: 'resolve', state: 'start' });
    const resolved = await Promise.all(parsed.map((s) => resolveServer(s, signal)));
    for (const r of resolved) if (r.error) why(`server ${r.host}`, `could not resolve: ${r.error}`);
    progress({ probe: 'resolve', state: 'done' });
    const v4Servers = resolved.filter((r) => r.v4).map((r) => ({ host: r.host, ep: { address: r.v4!, port: r.port } }));
    const v6Servers = resolved.filter((r) => r.v6).map((r) => ({ host: r.host, ep: { address: r.v6!, port: r.port } }));
    const locals = localAddresses();

    // ---- sockets ----------------------------------------------------------------------------------------------
    const nAlloc = Math.max(0, Math.min(options.allocationSamples ?? ALLOCATION_SAMPLES, 16));
    const haveV4 = v4Servers.length > 0;
    const [s1, helper, f1, f2, ...alloc] = haveV4
      ? await Promise.all(Array.from({ length: 4 + nAlloc }, () => bindUdp('udp4')))
      : [];
    const primary = v4Servers[0]?.ep;

    // ---- t=0: first packets, in a fixed order (see header) -------------------------------------------------------
    progress({ probe: 'udp', state: 'start' });
    const testI = s1 ? v4Servers.map((s) => s1.prober.request(s.ep, { schedule, signal })) : [];
    // ALG check (RFC 5780 §4.9): the same socket asks again the RFC 3489 way, whose answer carries a plain
    // MAPPED-ADDRESS (modern servers put only XOR-MAPPED-ADDRESS in modern answers).
    const legacyI =
      s1 && primary ? s1.prober.request(primary, { legacy: true, schedule, signal }) : Promise.resolve(undefined);
    const helperI =
      helper && primary ? helper.prober.request(primary, { schedule, signal }) : Promise.resolve(undefined);
    if (f1 && primary) progress({ probe: 'filtering', state: 'start' });
    const filterBoth =
      f1 && primary
        ? f1.prober.request(primary, { changeIp: true, changePort: true, schedule, signal })
        : Promise.resolve(undefined);
    const filterPort =
      f2 && primary ? f2.prober.request(primary, { changePort: true, schedule, signal }) : Promise.resolve(undefined);
    if (f1 && primary)
      void Promise.all([filterBoth, filterPort]).then(() => progress({ probe: 'filtering', state: 'done' }));
    if (alloc.length && primary) progress({ probe: 'allocation', state: 'start' });
    const allocAnswers = primary ? alloc.map((a) => a!.prober.request(primary, { schedule, signal })) : [];

    // ---- independent probes in parallel ---------------------------------------------------------------------------
    const portMapP: Promise<PortMappingPresence> =
      options.portMapping === false
        ? Promise.resolve({ gateway: null, natPmp: null, pcp: null, upnp: null })
        : (progress({ probe: 'port-mapping', state: 'start' }),
          probePortMappingPresence({ gateway: options.gateway, signal }).then((r) => {
            progress({ probe: 'port-mapping', state: 'done' });
            return r;
          }));

    const ipv6P = (async (): Promise<
      NatReport['ipv6'] & { answer?: BindingAnswer; server?: (typeof v6Servers)[0] }
    > => {
      const server = v6Servers[0];
      if (!server) return { publicAddress: null, behindNat: null };
      progress({ probe: 'ipv6', state: 'start' });
      let sock;
      try {
        sock = await bindUdp('udp6');
      } catch {
        return { publicAddress: null, behindNat: null, server };
      }
      const answer = await sock.prober.request(server.ep, { schedule, signal });
      progress({ probe: 'ipv6', state: 'done' });
      const mapped = mappedOf(answer);
      return {
        publicAddress: mapped ?? null,
        behindNat: mapped ? !isLocal(mapped, sock.t.address().port, locals) : null,
        answer,
        server,
      };
    })();

    // Test I results gate everything below.
    const testIDone = Promise.all(testI).then((answers) => {
      progress({ probe: 'udp', state: 'done' });
      return answers;
    });
    const firstAnswer = async (): Promise<{ answer: BindingAnswer; index: number } | undefined> => {
      const answers = await testIDone;
      const index = answers.findIndex((a) => a?.ok && mappedOf(a));
      return index < 0 ? undefined : { answer: answers[index]!, index };
    };

    // Mapping: RFC 5780 §4.3 Tests II and III from S1 (only when the primary speaks RFC 5780).
    const mappingP = (async () => {
      const answers = await testIDone;
      const a1 = answers[0];
      const other = a1?.ok ? a1.otherAddress : undefined;
      if (!s1 || !a1 || !other || !mappedOf(a1)) return { a1, x2: undefined, x3: undefined, other };
      progress({ probe: 'mapping', state: 'start' });
      const [x2, x3] = await Promise.all([
        s1.prober.request({ address: other.address, port: primary!.port }, { schedule, signal }),
        s1.prober.request(other, { schedule, signal }),
      ]);
      progress({ probe: 'mapping', state: 'done' });
      return { a1, x2, x3, other };
    })();

    // Hairpinning (RFC 5780 §4.7, RFC 4787 REQ-9): S1 and H send tokens to their own and each other's mapped
    // addresses; any token that comes back proves the NAT hairpins. Sending to the peer's mapped address first also
    // opens our own filter towards it, so address-and-port-dependent filtering does not hide a working hairpin.
    const hairpinP = (async (): Promise<boolean | null> => {
      const [first, h] = await Promise.all([firstAnswer(), helperI]);
      const x1 = first && first.index === 0 ? mappedOf(first.answer) : undefined;
      const xh = mappedOf(h);
      if (!s1 || !helper || !x1 || !xh) return null;
      if (isLocal(x1, s1.t.address().port, locals)) return null;
      progress({ probe: 'hairpin', state: 'start' });
      const token = randomBytes(HAIRPIN_TOKEN_LEN);
      const packet = Buffer.concat([Buffer.from([FirstByte.PROBE]), token]);
      const result = await new Promise<boolean>((resolve) => {
        const timers: NodeJS.Timeout[] = [];
        const offs: Array<() => void> = [];
        const finish = (v: boolean) => {
          for (const t of timers) clearTimeout(t);
          for (const off of offs) off();
          signal.removeEventListener('abort', onAbort);
          resolve(v);
        };
        const onAbort = () => finish(false);
        signal.addEventListener('abort', onAbort, { once: true });
        const listen = (t: DatagramTransport) =>
          offs.push(
            t.onMessage((msg) => {
              if (msg.length === packet.length && msg[0] === FirstByte.PROBE && token.equals(msg.subarray(1)))
                finish(true);
            }),
          );
        listen(s1.t);
        listen(helper.t);
        const send = () => {
          s1.t.send(packet, xh.port, xh.address);
          helper.t.send(packet, x1.port, x1.address);
          s1.t.send(packet, x1.port, x1.address);
          helper.t.send(packet, xh.port, xh.address);
        };
        for (const at of HAIRPIN_SENDS_MS) timers.push(setTimeout(send, at));
        timers.push(setTimeout(() => finish(false), HAIRPIN_BUDGET_MS));
      });
      progress({ probe: 'hairpin', state: 'done', detail: String(result) });
      return signal.aborted && !result ? null : result;
    })();

    // TCP: Test I over TCP, then the same local port towards the other addresses (or the other servers).
    const tcpP = (async () => {
      if (options.tcp === false || !primary)
        return {
          t1: undefined,
          t2: undefined,
          t3: undefined,
          localPort: undefined,
          others: [] as Array<Endpoint | undefined>,
          why: 'TCP probe disabled or no IPv4 server',
        };
      progress({ probe: 'tcp', state: 'start' });
      // One budget for both TCP rounds, so a slow connect cannot stretch the run.
      const tcpDeadline = Date.now() + TCP_BUDGET_MS;
      const first = await tcpBinding(primary, { timeoutMs: TCP_BUDGET_MS, signal, localAddress: options.localAddress });
      const t1 = first.answer;
      if (!t1 || !first.localPort) {
        progress({ probe: 'tcp', state: 'done' });
        return {
          t1,
          t2: undefined,
          t3: undefined,
          localPort: first.localPort,
          others: [],
          why: `STUN over TCP to ${primary.address}:${primary.port}: ${first.error ?? 'no answer'}`,
        };
      }
      const udpOther = (await testIDone)[0]?.otherAddress;
      const other = t1.otherAddress ?? udpOther;
      const again = (dest: Endpoint) =>
        tcpBinding(dest, {
          localPort: first.localPort,
          timeoutMs: Math.max(TCP_MIN_SECOND_ROUND_MS, tcpDeadline - Date.now()),
          signal,
          localAddress: options.localAddress,
        }).then((r) => r.answer);
      let t2: BindingAnswer | undefined;
      let t3: BindingAnswer | undefined;
      let others: Array<BindingAnswer | undefined> = [];
      if (other) {
        [t2, t3] = await Promise.all([again({ address: other.address, port: primary.port }), again(other)]);
      } else {
        others = await Promise.all(v4Servers.slice(1).map((s) => again(s.ep)));
      }
      progress({ probe: 'tcp', state: 'done' });
      return {
        t1,
        t2,
        t3,
        localPort: first.localPort,
        others: others.map(mappedOf),
        why: undefined as string | undefined,
      };
    })();

    const [answers, mappingR, hairpinning, tcpR, ipv6R, portMapping, fBoth, fPort, allocR, legacyA] = await Promise.all(
      [
        testIDone,
        mappingP,
        hairpinP,
        tcpP,
        ipv6P,
        portMapP,
        filterBoth,
        filterPort,
        Promise.all(allocAnswers).then((r) => {
          if (allocAnswers.length) progress({ probe: 'allocation', state: 'done' });
          return r;
        }),
        legacyI,
      ],
    );
    if (options.signal?.aborted)
      throw new NatpunchError('ABORTED', 'netcheck aborted', { cause: options.signal.reason });
    const timedOut = signal.aborted;
    if (timedOut)
      why('run', `hit the ${options.timeoutMs ?? NETCHECK_DEFAULT_TIMEOUT_MS} ms limit; results may be partial`);

    // ---- servers -----------------------------------------------------------------------------------------------
    const servers: NatReport['servers'] = resolved.map((r) => {
      const i4 = v4Servers.findIndex((s) => s.host === r.host && s.ep.port === r.port && s.ep.address === r.v4);
      const a = i4 >= 0 ? answers[i4] : r.v6 && ipv6R.server?.ep.address === r.v6 ? ipv6R.answer : undefined;
      const address = r.v4 ?? r.v6 ?? null;
      return {
        host: r.host,
        address,
        port: r.port,
        family: r.v4 ? 4 : r.v6 ? 6 : null,
        reachable: !!a,
        rfc5780: !!a?.otherAddress,
        otherAddress: a?.otherAddress ?? null,
        software: a?.software ?? null,
        // Karn's rule (RFC 6298 §3): an answer to a retransmitted request does not say which send it answers.
        rttMs: a && a.sends === 1 ? a.rttMs : null,
        mappedAddress: mappedOf(a) ?? null,
      };
    });
    for (const [i, a] of answers.entries()) {
      if (a && !a.ok)
        why(
          `server ${v4Servers[i]!.host}`,
          `answered with error ${a.error?.code ?? '?'} ${a.error?.reason ?? ''}`.trim(),
        );
    }

    // ---- UDP -----------------------------------------------------------------------------------------------------
    const x1 = mappedOf(answers[0]?.ok ? answers[0] : undefined);
    // Any answer on any probe socket proves UDP gets through (under loss Test I alone may go unanswered).
    const anyAnswer = [...answers, legacyA, fBoth, fPort, ...allocR].some((a) => a !== undefined);
    const udpBlocked = !haveV4 ? null : anyAnswer ? false : timedOut ? null : true;
    const publicAddresses: Endpoint[] = [];
    const addPublic = (e?: Endpoint) => {
      if (e && !publicAddresses.some((p) => sameEndpoint(p, e))) publicAddresses.push(e);
    };
    for (const a of answers) addPublic(mappedOf(a?.ok ? a : undefined));
    addPublic(mappedOf(mappingR.x2));
    addPublic(mappedOf(mappingR.x3));
    const s1Port = s1?.t.address().port;
    const behindNat = x1 && s1Port !== undefined ? !isLocal(x1, s1Port, locals) : null;

    // Mapping behaviour.
    let mapping: MappingBehaviour = 'unknown';
    const isRfc5780 = !!mappingR.other;
    if (udpBlocked) {
      why('udp.mapping', 'no UDP answer from any server');
    } else if (!haveV4) {
      why('udp', 'no IPv4 server given');
    } else if (isRfc5780) {
      mapping = classifyMapping(x1, mappedOf(mappingR.x2), mappedOf(mappingR.x3));
      if (mapping === 'unknown')
        why('udp.mapping', `no answer from the server's other address ${mappingR.other!.address} (Tests II/III)`);
    } else {
      mapping = mappingFromServers(
        v4Servers.map((s, i) => ({ server: s.ep, mapped: mappedOf(answers[i]?.ok ? answers[i] : undefined) })),
        why,
      );
    }

    // Filtering behaviour (RFC 5780 §4.4).
    let filtering: FilteringBehaviour = 'unknown';
    if (!udpBlocked && haveV4) {
      if (!isRfc5780) {
        why(
          'udp.filtering',
          answers[0]
            ? `server ${v4Servers[0]!.host} is not in RFC 5780 mode (no OTHER-ADDRESS), so nothing can answer from another address; run one server with an alternate address (natpunch serve --alt-address)`
            : `no answer from the primary server ${v4Servers[0]!.host}`,
        );
      } else {
        const other = mappingR.other!;
        const check = (
          a: BindingAnswer | undefined,
          wantIp: string,
          wantPort: number,
          name: string,
        ): boolean | undefined => {
          if (!a) return timedOut ? undefined : false;
          if (!a.ok) {
            why(
              'udp.filtering',
              `server rejected CHANGE-REQUEST (${name}): ${a.error?.code ?? ''} ${a.error?.reason ?? ''}`.trim(),
            );
            return undefined;
          }
          if (a.from.address !== wantIp || a.from.port !== wantPort) {
            why(
              'udp.filtering',
              `server ignored CHANGE-REQUEST (${name}): answered from ${a.from.address}:${a.from.port}`,
            );
            return undefined;
          }
          return true;
        };
        const both = check(fBoth, other.address, other.port, 'ip+port');
        const port = check(fPort, primary!.address, other.port, 'port');
        filtering = classifyFiltering(both, both ? undefined : port);
        if (filtering === 'unknown' && !undetermined.some((u) => u.what === 'udp.filtering')) {
          why('udp.filtering', 'the filtering tests did not finish');
        }
      }
    }

    const classic = classicName({
      udpBlocked: udpBlocked === true,
      behindNat: behindNat ?? undefined,
      mapping,
      filtering,
    });
    if (classic === 'unknown' && !udpBlocked) why('udp.classic', 'needs both mapping and filtering behaviour');

    // Allocation pattern.
    const samples: Array<{ local: number; external: number }> = [];
    allocR.forEach((a, i) => {
      const m = mappedOf(a?.ok ? a : undefined);
      if (m) samples.push({ local: alloc[i]!.t.address().port, external: m.port });
    });
    const allocation = analyseAllocation(samples);
    if (allocation.pattern === 'unknown' && !udpBlocked && haveV4) {
      why('udp.allocation', `only ${samples.length} of ${alloc.length} fresh sockets got an answer`);
    }

    // Hairpinning.
    if (hairpinning === null && !udpBlocked && haveV4) {
      why(
        'udp.hairpinning',
        behindNat === false ? 'not behind a NAT: nothing to hairpin' : 'no mapped address to send to',
      );
    }

    // ALG (RFC 5780 §4.9): an ALG that rewrites addresses in payloads changes MAPPED-ADDRESS but cannot recognise the
    // XOR'd copy, so the two disagree.
    let alg: boolean | null = null;
    const withBoth = [...answers, mappingR.x2, mappingR.x3].find((a) => a?.ok && a.mapped && a.xorMapped);
    const x1Xor = answers[0]?.ok ? answers[0].xorMapped : undefined;
    if (withBoth) alg = !sameEndpoint(withBoth.mapped, withBoth.xorMapped);
    else if (x1Xor && legacyA?.ok && legacyA.mapped) alg = !sameEndpoint(legacyA.mapped, x1Xor);
    else if (anyAnswer) why('udp.alg', 'no answer carried a plain MAPPED-ADDRESS to compare with XOR-MAPPED-ADDRESS');

    // ---- TCP -----------------------------------------------------------------------------------------------------
    const t1 = mappedOf(tcpR.t1);
    let tcpMapping: MappingBehaviour = 'unknown';
    if (tcpR.why) why('tcp', tcpR.why);
    else if (t1) {
      if (tcpR.t2 || tcpR.t3) {
        tcpMapping = classifyMapping(t1, mappedOf(tcpR.t2), mappedOf(tcpR.t3));
        if (tcpMapping === 'unknown' && tcpR.t2) {
          // Servers that take TCP on their primary port only (natpunch serve) answer Test II but not Test III.
          tcpMapping = 'address-and-port-dependent';
          why(
            'tcp.mapping',
            "no STUN-over-TCP answer on the server's other port, so address-dependent and address-and-port-dependent mapping look the same; reported the harder one",
          );
        } else if (tcpMapping === 'unknown')
          why('tcp.mapping', "no STUN-over-TCP answer from the server's other address");
      } else if (tcpR.others.length) {
        tcpMapping = mappingFromServers(
          [
            { server: primary!, mapped: t1 },
            ...tcpR.others.map((m, i) => ({ server: v4Servers[i + 1]!.ep, mapped: m })),
          ],
          (what, reason) => why(what.replace('udp', 'tcp'), reason),
        );
      } else {
        why(
          'tcp.mapping',
          'no second TCP destination: the server gave no OTHER-ADDRESS over TCP or UDP and there is only one server',
        );
      }
    }
    const tcpBehindNat = t1 && tcpR.localPort ? !isLocal(t1, tcpR.localPort, locals) : null;

    // ---- IPv6 ----------------------------------------------------------------------------------------------------
    if (!v6Servers.length) why('ipv6', 'no server with an IPv6 address given');
    else if (!ipv6R.publicAddress) why('ipv6', `no answer over IPv6 from ${v6Servers[0]!.host}`);

    if (options.portMapping === false) why('portMapping', 'probe disabled');
    else if (!portMapping.gateway) why('portMapping', 'no IPv4 default gateway found');

    // ---- lifetime (opt-in) ---------------------------------------------------------------------------------------
    let lifetime: LifetimeResult | null = null;
    if (options.lifetime) {
      if (!primary || udpBlocked || !x1) why('udp.lifetime', 'needs a UDP answer from the server');
      else {
        progress({ probe: 'lifetime', state: 'start' });
        const r = await measureLifetime({
          server: primary,
          maxMs: options.lifetimeMaxMs ?? LIFETIME_DEFAULT_MAX_MS,
          localAddress: options.localAddress,
          schedule,
          signal: options.signal,
          onStep: (detail) => progress({ probe: 'lifetime', state: 'start', detail }),
        });
        progress({ probe: 'lifetime', state: 'done' });
        if (options.signal?.aborted)
          throw new NatpunchError('ABORTED', 'netcheck aborted', { cause: options.signal.reason });
        if ('why' in r) why('udp.lifetime', r.why);
        else lifetime = r;
      }
    }

    const report: NatReport = {
      version: 1,
      startedAt,
      durationMs: 0,
      servers,
      udp: {
        blocked: udpBlocked,
        localAddress: s1 ? { address: s1.t.address().address, port: s1.t.address().port } : null,
        publicAddress: x1 ?? null,
        publicAddresses,
        behindNat,
        mapping,
        filtering,
        classic,
        allocation: { pattern: allocation.pattern, delta: allocation.delta ?? null, samples: allocation.samples },
        hairpinning,
        alg,
        lifetime,
      },
      tcp: { publicAddress: t1 ?? null, behindNat: tcpBehindNat, mapping: tcpMapping },
      ipv6: { publicAddress: ipv6R.publicAddress, behindNat: ipv6R.behindNat },
      portMapping,
      difficulty: 'unknown',
      verdict: '',
      undetermined,
    };
    const v = verdictOf(report);
    report.difficulty = v.difficulty;
    report.verdict = v.verdict;
    report.durationMs = Date.now() - started;
    return report;
  } finally {
    for (const o of owned.reverse()) {
      try {
        o.close();
      } catch {
        // closing is best effort
      }
    }
    deadline.dispose();
  }
}

/**
 * Mapping from plain servers (Tailscale-netcheck style): the same socket asked several servers; if every server saw
 * the same external endpoint the mapping is endpoint-independent. Servers that share an IP but differ in port
 * separate address-dependent from address-and-port-dependent; with only different IPs the two look the same and the
 * harder one is reported.
 */
export function mappingFromServers(
  seen: Array<{ server: Endpoint; mapped?: Endpoint }>,
  why: (what: string, reason: string) => void,
): MappingBehaviour {
  const ok = seen.filter((s) => s.mapped);
  if (ok.length < 2) {
    why(
      'udp.mapping',
      seen.length < 2
        ? 'one plain STUN server (no OTHER-ADDRESS): give a server in RFC 5780 mode or two or more servers'
        : 'fewer than two servers answered',
    );
    return 'unknown';
  }
  const distinctIps = new Set(ok.map((s) => s.server.address)).size;
  const allSame = ok.every((s) => sameEndpoint(s.mapped, ok[0]!.mapped));
  if (allSame) {
    if (distinctIps >= 2) return 'endpoint-independent';
    why('udp.mapping', 'the answering servers share one IP address: address-dependent mapping cannot be ruled out');
    return 'unknown';
  }
  // Some differ. Did two servers on the same IP (different ports) see different endpoints?
  let portMatters = false;
  let sameIpSamePort = false;
  for (const a of ok) {
    for (const b of ok) {
      if (a === b || a.server.address !== b.server.address || a.server.port === b.server.port) continue;
      if (sameEndpoint(a.mapped, b.mapped)) sameIpSamePort = true;
      else portMatters = true;
    }
  }
  if (portMatters) return 'address-and-port-dependent';
  if (sameIpSamePort) return 'address-dependent';
  why(
    'udp.mapping',
    'servers on different IPs saw different mappings; telling address-dependent from address-and-port-dependent needs two servers on one IP — reported the harder one',
  );
  return 'address-and-port-dependent';
}

/** The one-line verdict and a coarse difficulty class for strategy choice. */
export function verdictOf(r: Pick<NatReport, 'udp' | 'tcp'>): { difficulty: Difficulty; verdict: string } {
  const v = baseVerdict(r);
  // An ALG that rewrites addresses breaks protocols that carry them in the clear; XOR'd and encrypted ones pass.
  if (r.udp.alg === true) v.verdict += ' (an ALG rewrites addresses in payloads)';
  return v;
}

function baseVerdict(r: Pick<NatReport, 'udp' | 'tcp'>): { difficulty: Difficulty; verdict: string } {
  const u = r.udp;
  const hairpin = u.hairpinning === true ? ', hairpins' : u.hairpinning === false ? ', no hairpin' : '';
  if (u.blocked) {
    return {
      difficulty: 'blocked',
      verdict: r.tcp.publicAddress
        ? 'UDP blocked: only TCP reaches out — direct TCP or relay over TCP'
        : 'UDP blocked or STUN server unreachable — no direct path; relay over TCP/TLS if anything',
    };
  }
  switch (u.classic) {
    case 'open-internet':
      return { difficulty: 'none', verdict: 'Open internet: no NAT, no inbound filtering — directly reachable' };
    case 'symmetric-udp-firewall':
      return {
        difficulty: 'easy',
        verdict: 'No NAT, but a firewall filters inbound UDP — direct UDP with hole punching',
      };
    case 'full-cone':
      return {
        difficulty: 'easy',
        verdict: `Easy NAT: full cone (endpoint-independent mapping and filtering${hairpin}) — direct UDP, even unsolicited`,
      };
    case 'restricted-cone':
      return {
        difficulty: 'easy',
        verdict: `Easy NAT: restricted cone (address-dependent filtering${hairpin}) — direct UDP with hole punching`,
      };
    case 'port-restricted-cone':
      return {
        difficulty: 'easy',
        verdict: `Easy NAT: port-restricted cone (address-and-port-dependent filtering${hairpin}) — direct UDP with hole punching`,
      };
    case 'symmetric': {
      const a = u.allocation;
      if (a.pattern === 'sequential') {
        const d = a.delta ?? 0;
        return {
          difficulty: 'hard',
          verdict: `Hard NAT: symmetric, sequential ports (delta ${d > 0 ? '+' : ''}${d}${hairpin}) — direct UDP with port prediction or relay`,
        };
      }
      if (a.pattern === 'preserving') {
        return {
          difficulty: 'hard',
          verdict: `Hard NAT: symmetric, port-preserving${hairpin} — direct UDP with port prediction or relay`,
        };
      }
      return {
        difficulty: 'hard',
        verdict: `Hard NAT: symmetric, ${a.pattern === 'random' ? 'random' : 'unpredictable'} ports${hairpin} — direct UDP only with birthday punching or relay`,
      };
    }
    default:
      break;
  }
  if (u.mapping === 'endpoint-independent') {
    return {
      difficulty: 'easy',
      verdict: 'Easy NAT: endpoint-independent mapping (filtering undetermined) — direct UDP with hole punching',
    };
  }
  if (u.mapping === 'address-dependent' || u.mapping === 'address-and-port-dependent') {
    return {
      difficulty: 'hard',
      verdict: `Hard NAT: ${u.mapping} mapping (filtering undetermined) — port prediction, birthday punching or relay`,
    };
  }
  return { difficulty: 'unknown', verdict: 'Undetermined: not enough answers to name the NAT (see "undetermined")' };
}
