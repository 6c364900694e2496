/**
 * Prometheus metrics for `natpunch serve` (prom-client, text exposition format 0.0.4), on the admin endpoint's
 * /metrics. Names follow coturn where it has one (`turn_total_allocations`, `turn_traffic_*`, `stun_*`); the rest
 * are `natpunch_*`. Counters the services already keep (STUN, rendezvous, TURN stats) are read at scrape time;
 * per-event ones (lookups, introductions, outcome reports) are counted from the rendezvous observer.
 * Every label takes values from a closed set (methods known to the STUN registry, enumerations of the wire format),
 * so no client can make the label space grow.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry as PromRegistry } from 'prom-client';
import type { RendezvousEvent, RendezvousObserver, RendezvousServer } from '../rendezvous/server.js';
import type { StunCounterSource } from './stun-counters.js';
import type { TurnStats } from '../relay/server.js';
import { decodeRendezvous, hex, type ReportMessage } from '../wire/rendezvous.js';
import type { ReportMeeting } from '../rendezvous/cluster.js';
import { natPair } from './activity.js';

/** What the metrics read at scrape time; each is optional (a service that is off has no metrics). */
export interface MetricSources {
  /** The STUN server's counters (summed over the worker threads with serve --workers). */
  stun?: StunCounterSource;
  rendezvous?: RendezvousServer;
  turn?: { readonly stats: TurnStats };
  /** Redis connection state, with --redis. */
  redis?: { readonly healthy: boolean };
  /** With several nodes: where a connection's two reports meet when they reach different nodes (Redis). */
  reports?: ReportMeeting;
}

/** Time-to-connect buckets (seconds): a LAN connects in milliseconds, a relayed fallback in up to ~30 s. */
export const TIME_TO_CONNECT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 30];
/** How long the cluster-wide registration count (one Redis call) is reused between scrapes. */
const SIZE_CACHE_MS = 1_000;
const SEEN_CONNECTIONS = 10_000;
/**
 * A connection's first report waits this long for the other side's, so the NAT pair is labelled with both sides'
 * own NAT types (each knows its own best); a report whose partner never comes is counted alone.
 */
export const REPORT_MERGE_WAIT_MS = 5_000;

type Labels<K extends string> = Partial<Record<K, string | number>>;

export class ServeMetrics implements RendezvousObserver {
  readonly registry = new PromRegistry();
  #sources: MetricSources;
  #seen = new Set<string>();
  /** First reports waiting for their partner; `parked`: also offered to the other nodes (sources.reports). */
  #waiting = new Map<string, { report: ReportMessage; at: number; parked?: boolean }>();
  #flushTimer: NodeJS.Timeout;
  #lookups: Counter<'result'>;
  #introductions: Counter<'result'>;
  #refused: Counter<'request' | 'code'>;
  #outcomes: Counter<'technique' | 'nat_pair' | 'result' | 'path'>;
  #failures: Counter<'technique' | 'reason'>;
  #ttc: Histogram<'nat_pair' | 'path'>;
  #size: { value: number; at: number } = { value: 0, at: 0 };

  constructor(sources: MetricSources = {}) {
    this.#sources = sources;
    this.#flushTimer = setInterval(() => this.#flush(Date.now() - REPORT_MERGE_WAIT_MS), 1000);
    this.#flushTimer.unref();
    const reg = this.registry;
    collectDefaultMetrics({ register: reg });
    const self = this;

    /** A counter that mirrors a number kept elsewhere, read at scrape time. */
    const mirror = <K extends string>(
      name: string,
      help: string,
      labelNames: K[],
      read: () => Array<[Labels<K>, number]>,
    ) =>
      new Counter<K>({
        name,
        help,
        labelNames,
        registers: [reg],
        collect() {
          this.reset();
          for (const [labels, v] of read()) if (v > 0) this.inc(labels as never, v);
        },
      });
    const gauge = <K extends string>(
      name: string,
      help: string,
      labelNames: K[],
      read: () => Array<[Labels<K>, number]> | Promise<Array<[Labels<K>, number]>>,
    ) =>
      new Gauge<K>({
        name,
        help,
        labelNames,
        registers: [reg],
        async collect() {
          this.reset();
          for (const [labels, v] of await read()) this.set(labels as never, v);
        },
      });

    // ── STUN (RFC 8489), per method ───────────────────────────────────────────────────────────────────────────
    const perMethod = (field: 'requests' | 'responses' | 'errors'): Array<[Labels<'method'>, number]> => {
      const stun = self.#sources.stun;
      if (!stun) return [];
      return [...stun.byMethod].map(([m, t]) => [{ method: methodLabel(stun.methodName(m)) }, t[field]]);
    };
    mirror(
      'stun_requests_total',
      'STUN requests received, by method (Binding, and TURN methods when the relay runs)',
      ['method'],
      () => perMethod('requests'),
    );
    mirror('stun_responses_total', 'STUN success responses sent, by method', ['method'], () => perMethod('responses'));
    mirror('stun_errors_total', 'STUN error responses sent, by method', ['method'], () => perMethod('errors'));
    mirror(
      'stun_dropped_total',
      'STUN-range datagrams dropped (malformed, bad FINGERPRINT, over the amplification bound)',
      [],
      () => [[{}, self.#sources.stun?.counters.drops ?? 0]],
    );

    // ── rendezvous ────────────────────────────────────────────────────────────────────────────────────────────
    const rv = () => self.#sources.rendezvous?.stats();
    gauge('natpunch_rendezvous_registrations', 'Registered peers (all nodes, when they share Redis)', [], async () => [
      [{}, await self.#registrations()],
    ]);
    gauge('natpunch_rendezvous_local_peers', 'Peers whose channel this node holds', [], () => [[{}, rv()?.peers ?? 0]]);
    gauge(
      'natpunch_rendezvous_pending_notifications',
      'Introductions waiting for the responder to acknowledge',
      [],
      () => [[{}, rv()?.pendingNotifies ?? 0]],
    );
    mirror(
      'natpunch_rendezvous_registrations_total',
      'Accepted REGISTERs: new registrations and refreshes',
      ['result'],
      () => {
        const s = rv();
        return s
          ? [
              [{ result: 'new' }, s.registrations],
              [{ result: 'refresh' }, s.refreshes],
            ]
          : [];
      },
    );
    mirror(
      'natpunch_rendezvous_unregistrations_total',
      'Registrations that ended: withdrawn by the peer or expired',
      ['reason'],
      () => {
        const s = rv();
        return s
          ? [
              [{ reason: 'unregister' }, s.unregistrations],
              [{ reason: 'expired' }, s.expired],
            ]
          : [];
      },
    );
    mirror(
      'natpunch_rendezvous_messages_total',
      'Rendezvous messages received, and those refused before handling',
      ['result'],
      () => {
        const s = rv();
        if (!s) return [];
        return [
          [{ result: 'received' }, s.received],
          [{ result: 'malformed' }, s.malformed],
          [{ result: 'bad_signature' }, s.badSignature],
          [{ result: 'stale' }, s.stale],
          [{ result: 'replay' }, s.replays],
          [{ result: 'unknown_type' }, s.unknownType],
        ];
      },
    );
    mirror(
      'natpunch_rendezvous_rate_limited_total',
      'Messages refused by the per-address rate limit (sources and push destinations)',
      [],
      () => [[{}, rv()?.rateLimited ?? 0]],
    );
    mirror('natpunch_rendezvous_notifications_total', 'CONNECT_NOTIFY pushes to responders', ['result'], () => {
      const s = rv();
      if (!s) return [];
      return [
        [{ result: 'sent' }, s.notifySent],
        [{ result: 'retransmitted' }, s.notifyRetransmits],
        [{ result: 'acked' }, s.notifyAcked],
        [{ result: 'given_up' }, s.notifyGivenUp],
      ];
    });
    mirror('natpunch_rendezvous_names_released_total', 'Names released early by their key (RELEASE_NAME)', [], () => [
      [{}, rv()?.namesReleased ?? 0],
    ]);
    mirror(
      'natpunch_cluster_pushes_total',
      'Introductions handed to the node holding the responder, and received from other nodes',
      ['direction'],
      () => {
        const s = rv();
        return s
          ? [
              [{ direction: 'sent' }, s.remoteIntroductions],
              [{ direction: 'delivered' }, s.remoteDelivered],
            ]
          : [];
      },
    );
    this.#lookups = new Counter({
      name: 'natpunch_rendezvous_lookups_total',
      help: 'LOOKUPs, by result',
      labelNames: ['result'],
      registers: [reg],
    });
    this.#introductions = new Counter({
      name: 'natpunch_rendezvous_introductions_total',
      help: 'CONNECT requests: introduced here (local) or through the node holding the peer (remote), or refused (by error code)',
      labelNames: ['result'],
      registers: [reg],
    });
    this.#refused = new Counter({
      name: 'natpunch_rendezvous_refused_total',
      help: 'Requests answered with an ERROR, by request and code',
      labelNames: ['request', 'code'],
      registers: [reg],
    });
    gauge('natpunch_redis_up', '1 while the Redis connections are up (only with --redis)', [], () =>
      self.#sources.redis ? [[{}, self.#sources.redis.healthy ? 1 : 0]] : [],
    );

    // ── TURN relay (RFC 8656), coturn names ───────────────────────────────────────────────────────────────────
    const turn = () => self.#sources.turn?.stats;
    gauge('turn_total_allocations', 'Current TURN allocations', [], () => [[{}, turn()?.allocations ?? 0]]);
    gauge('turn_tcp_allocations', 'Current RFC 6062 TCP connections through allocations', [], () => [
      [{}, turn()?.tcpAllocations ?? 0],
    ]);
    mirror('turn_allocations_created_total', 'TURN allocations created', [], () => [
      [{}, turn()?.allocationsTotal ?? 0],
    ]);
    mirror(
      'turn_traffic_packets_total',
      'Relayed packets: client → peer (to_peer) and peer → client (to_client)',
      ['direction'],
      () => {
        const t = turn();
        return t
          ? [
              [{ direction: 'to_peer' }, t.packetsToPeer],
              [{ direction: 'to_client' }, t.packetsToClient],
            ]
          : [];
      },
    );
    mirror('turn_traffic_bytes_total', 'Relayed bytes, by direction', ['direction'], () => {
      const t = turn();
      return t
        ? [
            [{ direction: 'to_peer' }, t.bytesToPeer],
            [{ direction: 'to_client' }, t.bytesToClient],
          ]
        : [];
    });
    mirror(
      'turn_permission_denied_total',
      'Relayed data dropped or refused: no permission, denied peer address, bandwidth cap, unbound channel',
      ['reason'],
      () => {
        const t = turn();
        if (!t) return [];
        return [
          [{ reason: 'no_permission' }, t.droppedNoPermission],
          [{ reason: 'denied_peer' }, t.deniedPeers],
          [{ reason: 'bandwidth' }, t.droppedBandwidth],
          [{ reason: 'no_channel' }, t.droppedNoChannel],
        ];
      },
    );
    mirror('turn_auth_failures_total', 'TURN requests refused for credentials (401/441)', [], () => [
      [{}, turn()?.authFailures ?? 0],
    ]);
    mirror('turn_rate_limited_total', 'TURN requests refused by rate limits', [], () => [
      [{}, turn()?.rateLimited ?? 0],
    ]);

    // ── punch outcomes reported by peers (REPORT) ─────────────────────────────────────────────────────────────
    mirror(
      'natpunch_punch_reports_total',
      'Outcome reports received: counted, or dropped (off, or over the per-key rate)',
      ['result'],
      () => {
        const s = rv();
        return s
          ? [
              [{ result: 'counted' }, s.reports],
              [{ result: 'dropped' }, s.reportsDropped],
            ]
          : [];
      },
    );
    this.#outcomes = new Counter({
      name: 'natpunch_punch_outcomes_total',
      help: 'Connection attempts (one per connection, from the first of its reports) by winning technique, NAT pair, result and path',
      labelNames: ['technique', 'nat_pair', 'result', 'path'],
      registers: [reg],
    });
    this.#failures = new Counter({
      name: 'natpunch_punch_technique_failures_total',
      help: 'Techniques that failed within attempts, by reason',
      labelNames: ['technique', 'reason'],
      registers: [reg],
    });
    this.#ttc = new Histogram({
      name: 'natpunch_punch_time_to_connect_seconds',
      help: 'Time from the start of connect() to an authenticated session, by NAT pair and path',
      labelNames: ['nat_pair', 'path'],
      buckets: TIME_TO_CONNECT_BUCKETS,
      registers: [reg],
    });
  }

  /** Adds or replaces sources (services start one after another). */
  setSources(sources: MetricSources): void {
    this.#sources = { ...this.#sources, ...sources };
  }

  onEvent(e: RendezvousEvent): void {
    switch (e.type) {
      case 'lookup':
        this.#lookups.inc({ result: e.found ? 'found' : 'not_found' });
        return;
      case 'introduction':
        this.#introductions.inc({ result: e.remote ? 'remote' : 'local' });
        return;
      case 'refused':
        this.#refused.inc({ request: e.request, code: e.code.toLowerCase() });
        if (e.request === 'connect') this.#introductions.inc({ result: e.code.toLowerCase() });
        return;
      case 'report': {
        const r = e.report;
        if (r.result === 'aborted') return;
        const id = hex(r.connectionId);
        if (this.#seen.has(id)) return;
        const first = this.#waiting.get(id);
        if (first) {
          this.#waiting.delete(id);
          this.#count(id, first.report, r);
          // Both reports came here: take back the copy offered to the other nodes (and mark the connection counted).
          if (this.#sources.reports) void this.#sources.reports.reclaim(id).catch(() => {});
          return;
        }
        this.#waiting.set(id, { report: r, at: Date.now() });
        if (this.#waiting.size > SEEN_CONNECTIONS) {
          const [oldId, oldest] = this.#waiting.entries().next().value!;
          this.#waiting.delete(oldId);
          this.#count(oldId, oldest.report);
        }
        this.#meet(id, r);
        return;
      }
      default:
        return;
    }
  }

  /** Counts one connection from its first report, completed by the other side's when it came. */
  #count(id: string, r: ReportMessage, other?: ReportMessage): void {
    this.#markSeen(id);
    const nats = { initiator: 'unknown', responder: 'unknown' };
    for (const x of other ? [other, r] : [r]) {
      // Each side's own NAT type wins over what the other side guessed.
      const peerRole = x.role === 'initiator' ? 'responder' : 'initiator';
      if (nats[peerRole] === 'unknown') nats[peerRole] = x.peerNat;
    }
    for (const x of other ? [r, other] : [r]) if (x.localNat !== 'unknown') nats[x.role] = x.localNat;
    const pair = natPair(nats.initiator, nats.responder);
    this.#outcomes.inc({ technique: r.winner ?? 'none', nat_pair: pair, result: r.result, path: r.path });
    for (const f of r.failures) this.#failures.inc({ technique: f.technique, reason: f.reason });
    if (r.result === 'connected' && r.timeToConnectMs !== undefined)
      this.#ttc.observe({ nat_pair: pair, path: r.path }, r.timeToConnectMs / 1000);
  }

  /**
   * Several nodes: the peers of a connection report to the nodes they registered with, often two different ones.
   * The first report is offered to the others (sources.reports): whichever node holds the second one counts the
   * merged outcome, once for the cluster. Redis unavailable: counted here alone at flush, as on a single node.
   */
  #meet(id: string, r: ReportMessage): void {
    const meeting = this.#sources.reports;
    if (!meeting || !r.signedPart || !r.signature) return;
    meeting.meet(id, Buffer.concat([r.signedPart, r.signature])).then(
      (m) => {
        const w = this.#waiting.get(id);
        if (!w || w.report !== r) return; // merged here or flushed meanwhile
        if (m.kind === 'parked') {
          w.parked = true;
          return;
        }
        this.#waiting.delete(id);
        if (m.kind === 'counted') return this.#markSeen(id);
        this.#count(id, r, decodeReport(m.report));
      },
      () => {},
    );
  }

  #markSeen(id: string): void {
    this.#seen.add(id);
    if (this.#seen.size > SEEN_CONNECTIONS) this.#seen.delete(this.#seen.values().next().value!);
  }

  /** Counts first reports that waited since before `cutoff` without their partner. */
  #flush(cutoff: number): void {
    for (const [id, w] of this.#waiting) {
      if (w.at > cutoff) break; // insertion order is arrival order
      this.#waiting.delete(id);
      const meeting = this.#sources.reports;
      if (!w.parked || !meeting) {
        this.#count(id, w.report);
        continue;
      }
      // Still parked: no node took it, so it is counted here alone; taken: the node holding the partner counted it.
      this.#markSeen(id);
      meeting.reclaim(id).then(
        (mine) => mine && this.#count(id, w.report),
        () => this.#count(id, w.report),
      );
    }
  }

  /** Counts whatever still waits and stops the timer. */
  close(): void {
    clearInterval(this.#flushTimer);
    this.#flush(Infinity);
  }

  /** The exposition text for /metrics. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  async #registrations(): Promise<number> {
    const rv = this.#sources.rendezvous;
    if (!rv) return 0;
    const now = Date.now();
    if (now - this.#size.at < SIZE_CACHE_MS) return this.#size.value;
    try {
      this.#size = { value: await rv.registry.size(now), at: now };
    } catch {
      // Redis away: report the last value (natpunch_redis_up says why it is stale).
    }
    return this.#size.value;
  }
}

/** "Binding" → "binding", "CreatePermission" → "create_permission"; unknown numbers collapse to "other". */
function methodLabel(name: string): string {
  if (name.startsWith('0x')) return 'other';
  return name
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9_]/g, '_')
    .toLowerCase();
}

/** A report another node parked (its wire bytes), decoded — and so validated — again; undefined when it is not one. */
function decodeReport(bytes: Buffer): ReportMessage | undefined {
  try {
    const m = decodeRendezvous(bytes);
    return m.type === 'report' ? m : undefined;
  } catch {
    return undefined;
  }
}
