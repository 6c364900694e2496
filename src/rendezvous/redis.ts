/**
 * The rendezvous registry and cluster bus on Redis (node-redis), so several `natpunch serve` nodes serve one set of
 * peers (`serve --redis redis://HOST:PORT`).
 *
 * Keys (prefix default "natpunch:"):
 *   peer:<key hex>    STRING  the PeerRecord as JSON, expiring with the registration (PX)
 *   peers             ZSET    key hex → expiresAt: live count, expiry sweep, dashboard listing
 *   name:<name>       STRING  key hex of the name's holder, expiring at the registration's expiry + the name hold
 *   nat:<key hex>     STRING  the peer's self-reported NAT type (outcome reports), expiring with the hold
 *   inbox:<node>      STREAM  pushes for peers held by <node>, read by that node alone (exactly once, in order)
 *   node:<node>       STRING  heartbeat, expiring after 3 beats
 *   report:<conn id>  STRING  an outcome report parked until the other side's arrives at another node (short TTL)
 *   counted:<conn id> STRING  marker: this connection's outcome was counted (a late report is not counted again)
 *
 * Multi-key updates run as Lua scripts (EVALSHA; Redis runs a script atomically, so a name is claimed by one key
 * even when two nodes race). Scripts touch keys they compute from the prefix: a single Redis (or a Sentinel-managed
 * primary) is supported, Redis Cluster is not.
 *
 * Commands are not queued while Redis is unreachable (disableOfflineQueue): requests fail at once and the
 * rendezvous answers them with an error, instead of piling up; node-redis reconnects on its own, and peers'
 * periodic re-registrations refill a Redis that restarted empty.
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { ClusterBus, ClusterPush, ReportMeeting } from './cluster.js';
import {
  DEFAULT_LIST_LIMIT,
  DEFAULT_MAX_PEERS,
  DEFAULT_NAME_HOLD_MS,
  matchesQuery,
  type NameReservation,
  type PeerRecord,
  type PutResult,
  type Registry,
  type RegistryOptions,
} from './registry.js';

export const DEFAULT_REDIS_PREFIX = 'natpunch:';
/** Node heartbeats: written this often, expiring after three missed beats. */
export const NODE_HEARTBEAT_MS = 2_000;
/** Pushes kept per node inbox at most (XADD MAXLEN ~): a node that is gone does not grow Redis forever. */
export const INBOX_MAX_LENGTH = 10_000;
/** A blocked XREAD returns after this long at most, so close() is prompt. */
const INBOX_BLOCK_MS = 1_000;
/** Reconnect backoff: 50 ms doubling to 2 s (node-redis retries forever with this). */
const RECONNECT_MAX_MS = 2_000;
/**
 * A command that gets no answer within this long fails (node-redis `timeout` + `rejectInFlight`): a Redis that hangs
 * turns into "temporarily unavailable" answers instead of requests that never finish. Ample: commands take < 1 ms.
 */
export const REDIS_COMMAND_TIMEOUT_MS = 2_000;
/** Node liveness answers are cached this long (one lookup per node per second, not per introduction). */
const ALIVE_CACHE_MS = 1_000;

/** The part of a node-redis client used here (RESP2 replies: arrays, strings, integers, null). */
interface Client {
  sendCommand(args: string[], options?: { timeout?: number; rejectInFlight?: boolean }): Promise<unknown>;
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  destroy(): void;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'ready', listener: () => void): unknown;
}
type Reply = string | number | null | Reply[];

const PUT_SCRIPT = `
local prefix, hex, json, expires, now, hold, maxPeers, name = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local peerKey, zkey = prefix .. 'peer:' .. hex, prefix .. 'peers'
if name ~= '' then
  local holder = redis.call('GET', prefix .. 'name:' .. name)
  if holder and holder ~= hex then return 'name-taken' end
end
local old = redis.call('GET', peerKey)
if not old then
  if redis.call('ZCOUNT', zkey, '(' .. now, '+inf') >= maxPeers then return 'full' end
else
  local oldName = cjson.decode(old)['name']
  if oldName and oldName ~= name then
    if hold > 0 then redis.call('SET', prefix .. 'name:' .. oldName, hex, 'PX', hold) else redis.call('DEL', prefix .. 'name:' .. oldName) end
  end
end
local ttl = expires - now
if ttl < 1 then ttl = 1 end
redis.call('SET', peerKey, json, 'PX', ttl)
redis.call('ZADD', zkey, expires, hex)
if name ~= '' then redis.call('SET', prefix .. 'name:' .. name, hex, 'PX', ttl + hold) end
return 'ok'
`;

const DELETE_SCRIPT = `
local prefix, hex, hold = ARGV[1], ARGV[2], tonumber(ARGV[3])
local peerKey = prefix .. 'peer:' .. hex
local old = redis.call('GET', peerKey)
redis.call('ZREM', prefix .. 'peers', hex)
if not old then return 0 end
redis.call('DEL', peerKey)
local name = cjson.decode(old)['name']
if name then
  if hold > 0 then redis.call('SET', prefix .. 'name:' .. name, hex, 'PX', hold) else redis.call('DEL', prefix .. 'name:' .. name) end
end
return 1
`;

/** getByName in one round trip: the holder's record, if the holder is registered under that name. */
const BY_NAME_SCRIPT = `
local prefix, name = ARGV[1], ARGV[2]
local holder = redis.call('GET', prefix .. 'name:' .. name)
if not holder then return false end
return redis.call('GET', prefix .. 'peer:' .. holder)
`;

const RESERVATION_SCRIPT = `
local prefix, name = ARGV[1], ARGV[2]
local holder = redis.call('GET', prefix .. 'name:' .. name)
if not holder then return false end
return { holder, redis.call('PTTL', prefix .. 'name:' .. name), redis.call('GET', prefix .. 'peer:' .. holder) or '' }
`;

const RELEASE_SCRIPT = `
local prefix, name, hex = ARGV[1], ARGV[2], ARGV[3]
local nameKey = prefix .. 'name:' .. name
if redis.call('GET', nameKey) ~= hex then return 0 end
redis.call('DEL', nameKey)
local peerKey = prefix .. 'peer:' .. hex
local rec = redis.call('GET', peerKey)
if rec then
  local r = cjson.decode(rec)
  if r['name'] == name then
    r['name'] = nil
    redis.call('SET', peerKey, cjson.encode(r), 'KEEPTTL')
  end
end
return 1
`;

const EXPIRE_SCRIPT = `
local prefix, now = ARGV[1], ARGV[2]
local zkey = prefix .. 'peers'
local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, 1000)
if #gone > 0 then redis.call('ZREM', zkey, unpack(gone)) end
return gone
`;

/** How long a parked report, and the marker of a counted connection, stay (ample for REPORT_MERGE_WAIT_MS). */
export const REPORT_MEETING_TTL_MS = 60_000;

/** ReportMeeting.meet: take the partner's parked report, or park ours, in one atomic step. */
const MEET_SCRIPT = `
local prefix, id, mine, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key, counted = prefix .. 'report:' .. id, prefix .. 'counted:' .. id
if redis.call('EXISTS', counted) == 1 then return {'counted'} end
local other = redis.call('GET', key)
if other then
  redis.call('DEL', key)
  redis.call('SET', counted, '1', 'PX', ttl)
  return {'partner', other}
end
redis.call('SET', key, mine, 'PX', ttl)
return {'parked'}
`;

/** ReportMeeting.reclaim: our parked report back (and the connection marked counted), if no one took it. */
const RECLAIM_SCRIPT = `
local prefix, id, ttl = ARGV[1], ARGV[2], ARGV[3]
if redis.call('DEL', prefix .. 'report:' .. id) == 1 then
  redis.call('SET', prefix .. 'counted:' .. id, '1', 'PX', ttl)
  return 1
end
return 0
`;

/** JSON in Redis; "name" is spelled out because the Lua scripts read it. */
interface StoredRecord {
  k: string;
  name?: string;
  c: PeerRecord['candidates'];
  x: PeerRecord['reflexive'];
  r: boolean;
  ra: number;
  e: number;
  t: number;
  rtt?: number;
  node?: string;
}

function encodeRecord(r: PeerRecord): string {
  const s: StoredRecord = {
    k: r.publicKey.toString('hex'),
    c: r.candidates,
    x: r.reflexive,
    r: r.reachable,
    ra: r.registeredAt,
    e: r.expiresAt,
    t: r.lastTimestamp,
  };
  if (r.name !== undefined) s.name = r.name;
  if (r.rttMs !== undefined) s.rtt = r.rttMs;
  if (r.node !== undefined) s.node = r.node;
  return JSON.stringify(s);
}

function decodeRecord(json: string): PeerRecord | undefined {
  try {
    const s = JSON.parse(json) as StoredRecord;
    const r: PeerRecord = {
      publicKey: Buffer.from(s.k, 'hex'),
      // RELEASE_SCRIPT re-encodes records with Lua's cjson, which writes an empty array as {}.
      candidates: Array.isArray(s.c) ? s.c : [],
      reflexive: s.x,
      reachable: s.r,
      registeredAt: s.ra,
      expiresAt: s.e,
      lastTimestamp: s.t,
    };
    if (s.name !== undefined) r.name = s.name;
    if (s.rtt !== undefined) r.rttMs = s.rtt;
    if (s.node !== undefined) r.node = s.node;
    return r;
  } catch {
    return undefined;
  }
}

export interface RedisBackendOptions extends RegistryOptions {
  /** redis:// or rediss:// URL (user and password in it when the server wants them). */
  url: string;
  /** This node's id (PeerRecord.node, inbox name). Default hostname:pid. */
  nodeId?: string;
  prefix?: string;
  logger?: Logger;
  /** Connection attempt timeout. Default 5 s. */
  connectTimeoutMs?: number;
}

/**
 * One Redis connection pair (commands, and a second one for the blocking inbox read) with the registry and the
 * cluster bus on top. `roundTrips` counts commands sent (benchmarks: Redis round trips per introduction).
 */
export class RedisBackend {
  readonly registry: RedisRegistry;
  readonly cluster: RedisCluster;
  readonly reports: ReportMeeting;
  readonly nodeId: string;
  readonly prefix: string;
  roundTrips = 0;
  #client: Client;
  #reader: Client;
  #shas = new Map<string, string>();
  #closed = false;

  private constructor(options: RedisBackendOptions, client: Client, reader: Client) {
    this.nodeId = options.nodeId ?? `${hostname()}:${process.pid}`;
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    this.#client = client;
    this.#reader = reader;
    this.registry = new RedisRegistry(this, options);
    this.cluster = new RedisCluster(this, reader);
    this.reports = redisReportMeeting(this);
  }

  /** Connects (bounded by connectTimeoutMs; fails with a one-line error naming the URL without its password). */
  static async connect(options: RedisBackendOptions): Promise<RedisBackend> {
    const log = options.logger ?? silentLogger;
    const shown = redactUrl(options.url);
    // Loaded here, not at the top: node-redis adds ~20 MiB to every `serve` that never uses Redis (the default).
    const { createClient } = await import('redis');
    const make = (): Client =>
      createClient({
        url: options.url,
        RESP: 2,
        disableOfflineQueue: true,
        socket: {
          connectTimeout: options.connectTimeoutMs ?? 5_000,
          reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 10), RECONNECT_MAX_MS),
        },
      });
    const client = make();
    const reader = make();
    let lastError = '';
    for (const c of [client, reader]) {
      c.on('error', (err: Error) => {
        if (err.message !== lastError)
          log.warn({ redis: shown, err: err.message }, 'redis: connection error (reconnecting)');
        lastError = err.message;
      });
      c.on('ready', () => {
        if (lastError) log.info({ redis: shown }, 'redis: connected again');
        lastError = '';
      });
    }
    const timeout = options.connectTimeoutMs ?? 5_000;
    try {
      await withTimeout(
        Promise.all([client.connect(), reader.connect()]),
        timeout,
        `cannot connect to Redis at ${shown} within ${timeout} ms`,
      );
    } catch (err) {
      client.destroy();
      reader.destroy();
      if (err instanceof NatpunchError) throw err;
      throw new NatpunchError('BAD_ARGUMENT', `cannot connect to Redis at ${shown}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const backend = new RedisBackend(options, client, reader);
    backend.cluster.start();
    log.info({ redis: shown, node: backend.nodeId }, 'redis: registry and cluster bus ready');
    return backend;
  }

  /** Both connections are up (health checks). */
  get healthy(): boolean {
    return !this.#closed && this.#client.isReady && this.#reader.isReady;
  }

  /** One command; counts a round trip. */
  async command(args: string[]): Promise<Reply> {
    this.roundTrips++;
    return (await this.#client.sendCommand(args, { timeout: REDIS_COMMAND_TIMEOUT_MS, rejectInFlight: true })) as Reply;
  }

  /** Runs a Lua script by its SHA1, loading it on NOSCRIPT (after a Redis restart, say). One round trip usually. */
  async script(source: string, args: string[]): Promise<Reply> {
    let sha = this.#shas.get(source);
    if (!sha) {
      sha = createHash('sha1').update(source).digest('hex');
      this.#shas.set(source, sha);
    }
    try {
      return await this.command(['EVALSHA', sha, '0', ...args]);
    } catch (err) {
      if (!String((err as Error).message).includes('NOSCRIPT')) throw err;
      return this.command(['EVAL', source, '0', ...args]);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.cluster.close();
    for (const c of [this.#client, this.#reader]) {
      try {
        c.destroy();
      } catch {
        // already gone
      }
    }
  }
}

export class RedisRegistry implements Registry {
  readonly maxPeers: number;
  readonly nameHoldMs: number;
  #b: RedisBackend;

  constructor(backend: RedisBackend, options: RegistryOptions) {
    this.#b = backend;
    this.maxPeers = options.maxPeers ?? DEFAULT_MAX_PEERS;
    this.nameHoldMs = options.nameHoldMs ?? DEFAULT_NAME_HOLD_MS;
  }

  get #p(): string {
    return this.#b.prefix;
  }

  async get(publicKey: Buffer, now: number): Promise<PeerRecord | undefined> {
    const json = await this.#b.command(['GET', `${this.#p}peer:${publicKey.toString('hex')}`]);
    const r = typeof json === 'string' ? decodeRecord(json) : undefined;
    return r && r.expiresAt > now ? r : undefined;
  }

  async getByName(name: string, now: number): Promise<PeerRecord | undefined> {
    const json = await this.#b.script(BY_NAME_SCRIPT, [this.#p, name]);
    const r = typeof json === 'string' ? decodeRecord(json) : undefined;
    return r && r.expiresAt > now && r.name === name ? r : undefined;
  }

  async put(record: PeerRecord, now: number): Promise<PutResult> {
    const res = await this.#b.script(PUT_SCRIPT, [
      this.#p,
      record.publicKey.toString('hex'),
      encodeRecord(record),
      String(record.expiresAt),
      String(now),
      String(this.nameHoldMs),
      String(this.maxPeers),
      record.name ?? '',
    ]);
    return res === 'name-taken' || res === 'full' ? res : 'ok';
  }

  async delete(publicKey: Buffer): Promise<boolean> {
    return (await this.#b.script(DELETE_SCRIPT, [this.#p, publicKey.toString('hex'), String(this.nameHoldMs)])) === 1;
  }

  async expire(now: number): Promise<Buffer[]> {
    const gone = await this.#b.script(EXPIRE_SCRIPT, [this.#p, String(now)]);
    return Array.isArray(gone) ? gone.map((h) => Buffer.from(String(h), 'hex')) : [];
  }

  async size(now = Date.now()): Promise<number> {
    return Number(await this.#b.command(['ZCOUNT', `${this.#p}peers`, `(${now}`, '+inf']));
  }

  async reservation(name: string, now: number): Promise<NameReservation | undefined> {
    const res = await this.#b.script(RESERVATION_SCRIPT, [this.#p, name]);
    if (!Array.isArray(res) || res.length < 3) return undefined;
    const [holder, pttl, json] = res as [string, number, string];
    const r = json ? decodeRecord(json) : undefined;
    return {
      publicKey: Buffer.from(holder, 'hex'),
      until: now + Math.max(0, Number(pttl)),
      live: Boolean(r && r.expiresAt > now && r.name === name),
    };
  }

  async release(name: string, publicKey: Buffer): Promise<boolean> {
    return (await this.#b.script(RELEASE_SCRIPT, [this.#p, name, publicKey.toString('hex')])) === 1;
  }

  async list(now: number, options: { limit?: number; query?: string } = {}): Promise<PeerRecord[]> {
    const limit = options.limit ?? DEFAULT_LIST_LIMIT;
    // Scan at most 20 pages of the live set for a query; without one, the first page is the answer.
    const out: PeerRecord[] = [];
    const page = Math.max(limit, 200);
    for (let offset = 0; out.length < limit && offset < page * (options.query ? 20 : 1); offset += page) {
      const ids = await this.#b.command([
        'ZRANGEBYSCORE',
        `${this.#p}peers`,
        `(${now}`,
        '+inf',
        'LIMIT',
        String(offset),
        String(page),
      ]);
      if (!Array.isArray(ids) || ids.length === 0) break;
      const keys = ids.map((h) => `${this.#p}peer:${String(h)}`);
      const nats = ids.map((h) => `${this.#p}nat:${String(h)}`);
      const values = await this.#b.command(['MGET', ...keys, ...nats]);
      if (!Array.isArray(values)) break;
      for (let i = 0; i < ids.length && out.length < limit; i++) {
        const v = values[i];
        const r = typeof v === 'string' ? decodeRecord(v) : undefined;
        if (!r || r.expiresAt <= now || !matchesQuery(r, options.query)) continue;
        const nat = values[ids.length + i];
        if (typeof nat === 'string') r.natType = nat;
        out.push(r);
      }
      if (ids.length < page) break;
    }
    return out;
  }

  async noteNatType(publicKey: Buffer, natType: string): Promise<void> {
    await this.#b.command([
      'SET',
      `${this.#p}nat:${publicKey.toString('hex')}`,
      natType.slice(0, 32),
      'PX',
      String(Math.max(60_000, this.nameHoldMs)),
    ]);
  }
}

export class RedisCluster implements ClusterBus {
  readonly nodeId: string;
  #b: RedisBackend;
  #reader: Client;
  #handlers = new Set<(push: ClusterPush) => void>();
  #lastId = '0-0';
  #alive = new Map<string, { alive: boolean; at: number }>();
  #beat: NodeJS.Timeout | undefined;
  #loop: Promise<void> | undefined;
  #closed = false;
  /** Pushes received and handled (tests, metrics). */
  received = 0;

  constructor(backend: RedisBackend, reader: Client) {
    this.#b = backend;
    this.nodeId = backend.nodeId;
    this.#reader = reader;
  }

  /** Starts the heartbeat and the inbox reader. */
  start(): void {
    const beat = () => {
      this.#b
        .command([
          'SET',
          `${this.#b.prefix}node:${this.nodeId}`,
          String(Date.now()),
          'PX',
          String(NODE_HEARTBEAT_MS * 3),
        ])
        .catch(() => {});
    };
    beat();
    this.#beat = setInterval(beat, NODE_HEARTBEAT_MS);
    this.#beat.unref();
    this.#loop = this.#read();
  }

  async send(node: string, push: ClusterPush): Promise<void> {
    await this.#b.command([
      'XADD',
      `${this.#b.prefix}inbox:${node}`,
      'MAXLEN',
      '~',
      String(INBOX_MAX_LENGTH),
      '*',
      'to',
      push.to,
      'k',
      push.pendingKey,
      't',
      push.kind,
      'b',
      push.bytes.toString('base64'),
      'r',
      String(push.requestBytes),
      ...(push.introduced ? ['i', JSON.stringify(push.introduced)] : []),
    ]);
  }

  onPush(handler: (push: ClusterPush) => void): () => void {
    this.#handlers.add(handler);
    return () => this.#handlers.delete(handler);
  }

  async isAlive(node: string): Promise<boolean> {
    if (node === this.nodeId) return !this.#closed;
    const now = Date.now();
    const cached = this.#alive.get(node);
    if (cached && now - cached.at < ALIVE_CACHE_MS) return cached.alive;
    const alive = (await this.#b.command(['EXISTS', `${this.#b.prefix}node:${node}`])) === 1;
    if (this.#alive.size > 1024) this.#alive.clear();
    this.#alive.set(node, { alive, at: now });
    return alive;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#beat);
    // Gone at once, not after three missed beats: introductions stop being routed here.
    await this.#b.command(['DEL', `${this.#b.prefix}node:${this.nodeId}`]).catch(() => {});
    this.#reader.destroy();
    await this.#loop?.catch(() => {});
  }

  /**
   * The inbox reader: XREAD BLOCK from the last id seen, so every entry is handled once and in stream order. Stream
   * ids grow with Redis' clock, so after a Redis restart (an empty stream) reading on from the last id still sees
   * every new entry. It starts at Redis' clock: pushes sent before this node started were for its predecessor.
   */
  async #read(): Promise<void> {
    const key = `${this.#b.prefix}inbox:${this.nodeId}`;
    try {
      const t = (await this.#b.command(['TIME'])) as [string, string];
      this.#lastId = `${Number(t[0]) * 1000 + Math.floor(Number(t[1]) / 1000)}-0`;
    } catch {
      // Redis went away right after connecting: read from the start of the inbox instead.
    }
    while (!this.#closed) {
      let reply: Reply;
      try {
        if (!this.#reader.isReady) {
          await delay(100);
          continue;
        }
        reply = (await this.#reader.sendCommand([
          'XREAD',
          'COUNT',
          '100',
          'BLOCK',
          String(INBOX_BLOCK_MS),
          'STREAMS',
          key,
          this.#lastId,
        ])) as Reply;
      } catch {
        if (this.#closed) return;
        await delay(100);
        continue;
      }
      if (!Array.isArray(reply)) continue;
      for (const stream of reply) {
        const entries = Array.isArray(stream) ? stream[1] : undefined;
        if (!Array.isArray(entries)) continue;
        for (const entry of entries) {
          if (!Array.isArray(entry)) continue;
          const [id, fields] = entry as [string, Reply[]];
          this.#lastId = String(id);
          const f = new Map<string, string>();
          for (let i = 0; i + 1 < fields.length; i += 2) f.set(String(fields[i]), String(fields[i + 1]));
          const to = f.get('to');
          const bytes = f.get('b');
          const kind = f.get('t');
          if (!to || !bytes || (kind !== 'notify' && kind !== 'seq')) continue;
          const raw = Buffer.from(bytes, 'base64');
          // An entry without 'r' (older node) gets one transmission's worth.
          const requestBytes = Number(f.get('r') ?? raw.length) || raw.length;
          const push: ClusterPush = {
            to,
            pendingKey: f.get('k') ?? to,
            bytes: raw,
            kind,
            requestBytes,
            ...introducedField(f.get('i')),
          };
          this.received++;
          for (const h of this.#handlers) h(push);
        }
      }
    }
  }
}

/** Outcome reports of one connection meeting across nodes (cluster.ts ReportMeeting), base64 in Redis. */
function redisReportMeeting(b: RedisBackend): ReportMeeting {
  const ttl = String(REPORT_MEETING_TTL_MS);
  return {
    async meet(connectionId, report) {
      const r = await b.script(MEET_SCRIPT, [b.prefix, connectionId, report.toString('base64'), ttl]);
      const [kind, other] = Array.isArray(r) ? r : [];
      if (kind === 'partner' && typeof other === 'string') return { kind, report: Buffer.from(other, 'base64') };
      return kind === 'counted' ? { kind } : { kind: 'parked' };
    },
    async reclaim(connectionId) {
      return (await b.script(RECLAIM_SCRIPT, [b.prefix, connectionId, ttl])) === 1;
    },
  };
}

export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '****';
    return u.toString();
  } catch {
    return 'redis://(unparseable URL)';
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new NatpunchError('TIMEOUT', message)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The optional 'i' field of an inbox entry (ClusterPush.introduced); anything malformed is left out. */
function introducedField(text: string | undefined): Pick<ClusterPush, 'introduced'> {
  if (!text) return {};
  try {
    const v = JSON.parse(text) as ClusterPush['introduced'];
    if (!v || !/^[0-9a-f]{64}$/.test(v.key) || !Array.isArray(v.seen)) return {};
    const seen = v.seen
      .filter(
        (e) =>
          (e.transport === 'udp' || e.transport === 'tcp') && typeof e.address === 'string' && Number.isInteger(e.port),
      )
      .slice(0, 4)
      .map((e) => ({ transport: e.transport, address: e.address, port: e.port }));
    return { introduced: { key: v.key, seen } };
  } catch {
    return {};
  }
}
