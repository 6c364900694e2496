/**
 * The operator's side of `natpunch serve`, composed around the services: the registry backend (memory, or Redis
 * with the cluster bus), metrics and dashboard state, the admin endpoint, health and readiness, and the drain on
 * SIGTERM (stop accepting, tell registered peers to move, release relay allocations, exit within a bound).
 */
import { hostname } from 'node:os';
import type { ClusterBus } from '../rendezvous/cluster.js';
import { RedisBackend } from '../rendezvous/redis.js';
import type { Registry } from '../rendezvous/registry.js';
import {
  DEFAULT_RATE_BURST,
  DEFAULT_RATE_PER_SECOND,
  type RendezvousEvent,
  type RendezvousObserver,
  type RendezvousServerOptions,
} from '../rendezvous/server.js';
import type { TurnStats } from '../relay/server.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { Activity } from './activity.js';
import type { AdminHandle, HealthReport } from './admin.js';
import type { ServeMetrics } from './metrics.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_NAME_HOLD_MS } from './options.js';
import type { ServerHandle } from './serve.js';
import type { StunCounterSource } from './stun-counters.js';

/** The settings this module reads (a subset of ServeSettings, src/server/options.ts). */
export interface OperationsSettings {
  port?: number;
  redis?: string | undefined;
  nodeId?: string | undefined;
  nameHold?: number;
  reserveName?: Record<string, string> | undefined;
  reports?: boolean;
  registrationRefresh?: number;
  registrationTtl?: number;
  rateLimit?: number;
  rateBurst?: number;
  admin?: string | undefined;
  adminToken?: string | undefined;
  drainTimeout?: number;
}

/** Whatever TURN server runs beside (it owns allocations; close() releases them). */
export interface TurnLike {
  readonly stats: TurnStats;
}

export class ServeOperations {
  /**
   * Metrics and dashboard state exist only with the admin endpoint (--admin), the one place they can be read:
   * without it they cost every serve prom-client and its default collectors, up to 10,000 remembered
   * introductions and a call per rendezvous event, for nobody (issue 20). Loaded in prepare().
   */
  readonly metrics: ServeMetrics | undefined;
  readonly activity: Activity | undefined;
  readonly nodeId: string;
  readonly redis: RedisBackend | undefined;
  #settings: OperationsSettings;
  #log: Logger;
  #handle: ServerHandle | undefined;
  #turn: TurnLike | undefined;
  #stun: StunCounterSource | undefined;
  #admin: AdminHandle | undefined;
  #draining = false;
  #closed = false;

  private constructor(
    settings: OperationsSettings,
    log: Logger,
    nodeId: string,
    redis: RedisBackend | undefined,
    observed: { metrics: ServeMetrics; activity: Activity } | undefined,
  ) {
    this.#settings = settings;
    this.#log = log;
    this.nodeId = nodeId;
    this.redis = redis;
    this.metrics = observed?.metrics;
    this.activity = observed?.activity;
    if (redis) this.metrics?.setSources({ redis, reports: redis.reports });
  }

  /** Connects to Redis when configured (bounded; a one-line error when it cannot). */
  static async prepare(settings: OperationsSettings, logger: Logger = silentLogger): Promise<ServeOperations> {
    const nodeId = settings.nodeId ?? `${hostname()}:${settings.port ? settings.port : `pid${process.pid}`}`;
    const redis = settings.redis
      ? await RedisBackend.connect({
          url: settings.redis,
          nodeId,
          nameHoldMs: settings.nameHold ?? DEFAULT_NAME_HOLD_MS,
          logger,
        })
      : undefined;
    let observed: { metrics: ServeMetrics; activity: Activity } | undefined;
    if (settings.admin) {
      const [{ ServeMetrics }, { Activity }] = await Promise.all([import('./metrics.js'), import('./activity.js')]);
      observed = { metrics: new ServeMetrics(), activity: new Activity() };
    }
    return new ServeOperations(settings, logger, nodeId, redis, observed);
  }

  /** What the rendezvous server needs from operations: registry/cluster, name policy, reports, observer. */
  rendezvousOptions(): Pick<
    RendezvousServerOptions,
    | 'registry'
    | 'cluster'
    | 'nameHoldMs'
    | 'reservedNames'
    | 'reports'
    | 'observer'
    | 'refreshIntervalMs'
    | 'ttlMs'
    | 'rateLimit'
  > {
    const out: ReturnType<ServeOperations['rendezvousOptions']> = {
      nameHoldMs: this.#settings.nameHold ?? DEFAULT_NAME_HOLD_MS,
      reports: this.#settings.reports ?? true,
    };
    if (this.metrics && this.activity) {
      const observers: RendezvousObserver[] = [this.metrics, this.activity];
      out.observer = {
        onEvent: (e: RendezvousEvent) => {
          for (const o of observers) o.onEvent(e);
        },
      };
    }
    if (this.#settings.reserveName) out.reservedNames = this.#settings.reserveName;
    if (this.#settings.registrationRefresh !== undefined) out.refreshIntervalMs = this.#settings.registrationRefresh;
    if (this.#settings.registrationTtl !== undefined) out.ttlMs = this.#settings.registrationTtl;
    if (this.#settings.rateLimit !== undefined || this.#settings.rateBurst !== undefined) {
      out.rateLimit = {
        perSecond: this.#settings.rateLimit ?? DEFAULT_RATE_PER_SECOND,
        burst: this.#settings.rateBurst ?? DEFAULT_RATE_BURST,
      };
    }
    if (this.redis) {
      out.registry = this.redis.registry as Registry;
      out.cluster = this.redis.cluster as ClusterBus;
    }
    return out;
  }

  /** Once the services run: metrics read them, and the admin endpoint starts when configured. */
  async attach(handle: ServerHandle, turn?: TurnLike, stun?: StunCounterSource): Promise<AdminHandle | undefined> {
    this.#handle = handle;
    this.#turn = turn;
    this.#stun = stun ?? handle.stun;
    this.metrics?.setSources({
      stun: this.#stun,
      ...(handle.rendezvous ? { rendezvous: handle.rendezvous } : {}),
      ...(turn ? { turn } : {}),
    });
    if (this.#settings.admin && this.metrics && this.activity) {
      const { startAdmin } = await import('./admin.js');
      this.#admin = await startAdmin(
        {
          listen: this.#settings.admin,
          ...(this.#settings.adminToken ? { token: this.#settings.adminToken } : {}),
          logger: this.#log,
        },
        {
          metrics: this.metrics,
          activity: this.activity,
          ...(handle.rendezvous ? { registry: handle.rendezvous.registry } : {}),
          health: () => this.health(),
          ready: () => this.ready(),
          summary: () => this.summary(),
        },
      );
    }
    return this.#admin;
  }

  get admin(): AdminHandle | undefined {
    return this.#admin;
  }

  /** Liveness: fails while Redis is unreachable (with --redis): the node cannot serve its peers then. */
  health(): HealthReport {
    const checks: HealthReport['checks'] = { process: { ok: !this.#closed } };
    if (this.redis)
      checks.redis = this.redis.healthy ? { ok: true } : { ok: false, detail: 'unreachable; reconnecting' };
    return { ok: Object.values(checks).every((c) => c.ok), checks };
  }

  /** Readiness: healthy, listening, and not draining (load balancers stop sending new peers). */
  ready(): HealthReport {
    const h = this.health();
    const checks = {
      ...h.checks,
      listening: { ok: Boolean(this.#handle) },
      draining: { ok: !this.#draining, ...(this.#draining ? { detail: 'shutting down' } : {}) },
    };
    return { ok: Object.values(checks).every((c) => c.ok), checks };
  }

  async summary(): Promise<Record<string, unknown>> {
    const rv = this.#handle?.rendezvous;
    const stats = rv?.stats();
    let registrations: number | null = null;
    try {
      registrations = rv ? await rv.registry.size(Date.now()) : null;
    } catch {
      // Redis away: unknown (health says why)
    }
    return {
      nodeId: this.nodeId,
      redis: this.redis ? { healthy: this.redis.healthy } : null,
      draining: this.#draining,
      registrations,
      localPeers: stats?.peers ?? null,
      lookups: stats?.lookups ?? null,
      rateLimited: stats?.rateLimited ?? null,
      stunRequests: this.#stun?.counters.requests ?? null,
      turn: this.#turn ? { ...this.#turn.stats } : null,
    };
  }

  /**
   * Drain: readiness fails, registrations are refused, every registered peer is told to move (MOVE). Resolves
   * when the MOVEs are out. The caller then closes TURN (releasing allocations) and the services.
   */
  async drain(): Promise<number> {
    if (this.#draining) return 0;
    this.#draining = true;
    const rv = this.#handle?.rendezvous;
    const moved = rv
      ? await rv.drain({ signal: AbortSignal.timeout(this.#settings.drainTimeout ?? DEFAULT_DRAIN_TIMEOUT_MS) })
      : 0;
    this.#log.info({ moved }, 'serve: draining; registered peers told to move');
    return moved;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.metrics?.close();
    await this.#admin?.close();
    await this.redis?.close();
  }
}
