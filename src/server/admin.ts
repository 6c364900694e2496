/**
 * The admin HTTP endpoint of `natpunch serve` (`--admin ADDR:PORT`, off by default): Prometheus metrics, health and
 * readiness checks for orchestrators, and the live dashboard (one page, updated over Server-Sent Events, HTML
 * Living Standard §9.2).
 *
 * Safe by default: a bare port listens on 127.0.0.1 only; another address must be given explicitly, and then an
 * `--admin-token` should be (a warning is logged without one). With a token every path but /healthz and /readyz
 * needs it: `Authorization: Bearer TOKEN` (scrapers), or once `?token=TOKEN` in a browser, which sets an HttpOnly
 * SameSite=Strict cookie. Only GET/HEAD; bounded connections and SSE clients; no third-party content.
 */
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import http from 'node:http';
import { isIP } from 'node:net';
import type { Registry } from '../rendezvous/registry.js';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { Activity } from './activity.js';
import { dashboardHtml } from './dashboard.js';
import type { ServeMetrics } from './metrics.js';

export const DEFAULT_ADMIN_HOST = '127.0.0.1';
export const MAX_ADMIN_CONNECTIONS = 64;
export const MAX_SSE_CLIENTS = 16;
/** SSE: a full state at most this often, and a comment line as keep-alive in between. */
export const SSE_INTERVAL_MS = 1_000;
/** Peers a /api/peers answer holds at most. */
export const MAX_PEERS_LISTED = 500;
const COOKIE = 'natpunch_admin';

export interface HealthReport {
  ok: boolean;
  checks: Record<string, { ok: boolean; detail?: string }>;
}

export interface AdminSources {
  metrics: ServeMetrics;
  activity: Activity;
  /** The registry (peer list); absent without the rendezvous. */
  registry?: Registry;
  /** Liveness: the process works (and, with --redis, reaches Redis). */
  health(): HealthReport;
  /** Readiness: listening, not draining, dependencies up. */
  ready(): HealthReport;
  /** Summary numbers and facts for the dashboard (node id, counters, relay traffic). */
  summary(): Promise<Record<string, unknown>>;
}

export interface AdminOptions {
  /** "PORT" (loopback), "ADDR:PORT" or "[v6]:PORT". */
  listen: string;
  token?: string;
  logger?: Logger;
}

export interface AdminHandle {
  readonly address: string;
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** Parses --admin: a bare port means loopback. */
export function parseAdminAddress(text: string): { host: string; port: number } {
  const t = text.trim();
  let host = DEFAULT_ADMIN_HOST;
  let portText = t;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(t);
  if (v6) {
    host = v6[1]!;
    portText = v6[2]!;
  } else if (t.includes(':')) {
    const i = t.lastIndexOf(':');
    host = t.slice(0, i);
    portText = t.slice(i + 1);
  }
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port < 0 || port > 65535)
    throw new NatpunchError('BAD_ARGUMENT', `--admin: "${text}" is not PORT or ADDRESS:PORT`);
  if (host === 'localhost') host = DEFAULT_ADMIN_HOST;
  if (!isIP(host)) throw new NatpunchError('BAD_ARGUMENT', `--admin: "${host}" is not an IP address`);
  return { host, port };
}

function isLoopback(host: string): boolean {
  return host === '::1' || host.startsWith('127.');
}

function sameSecret(a: string, b: string): boolean {
  // Hash first: timingSafeEqual needs equal lengths, and the length must not leak either.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

function cookieToken(req: http.IncomingMessage): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === COOKIE) return decodeURIComponent(v.join('='));
  }
  return undefined;
}

export async function startAdmin(options: AdminOptions, sources: AdminSources): Promise<AdminHandle> {
  const log = options.logger ?? silentLogger;
  const { host, port } = parseAdminAddress(options.listen);
  const token = options.token || undefined;
  if (!isLoopback(host) && !token) {
    log.warn(
      { admin: `${host}:${port}` },
      'admin endpoint listens beyond loopback without --admin-token: anyone who reaches it sees metrics and peers',
    );
  }
  const sse = new Set<http.ServerResponse>();
  let closed = false;

  const headers = (type: string, extra: Record<string, string> = {}) => ({
    'content-type': type,
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    ...extra,
  });
  const send = (
    res: http.ServerResponse,
    status: number,
    type: string,
    body: string,
    extra: Record<string, string> = {},
  ) => {
    res.writeHead(status, headers(type, extra));
    res.end(res.req.method === 'HEAD' ? undefined : body);
  };
  const json = (res: http.ServerResponse, status: number, value: unknown) =>
    send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));

  const authorized = (req: http.IncomingMessage, url: URL): { ok: boolean; setCookie?: string } => {
    if (!token) return { ok: true };
    const auth = req.headers.authorization;
    if (auth?.startsWith('Bearer ') && sameSecret(auth.slice(7), token)) return { ok: true };
    const c = cookieToken(req);
    if (c !== undefined && sameSecret(c, token)) return { ok: true };
    const q = url.searchParams.get('token');
    if (q !== null && sameSecret(q, token))
      return { ok: true, setCookie: `${COOKIE}=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/` };
    return { ok: false };
  };

  const state = async () => ({
    at: Date.now(),
    summary: await sources.summary(),
    activity: sources.activity.snapshot(),
    health: sources.health(),
  });

  const server = http.createServer({ requestTimeout: 10_000, headersTimeout: 10_000 }, (req, res) => {
    void handle(req, res).catch((err: unknown) => {
      log.warn({ err }, 'admin: request failed');
      if (!res.headersSent) json(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  });
  server.maxConnections = MAX_ADMIN_CONNECTIONS;

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return send(res, 405, 'text/plain', 'only GET and HEAD\n', { allow: 'GET, HEAD' });
    // Health checks answer without the token: orchestrators probe them, and they reveal nothing but up/down.
    if (url.pathname === '/healthz' || url.pathname === '/readyz') {
      const h = url.pathname === '/healthz' ? sources.health() : sources.ready();
      return json(res, h.ok ? 200 : 503, h);
    }
    const auth = authorized(req, url);
    if (!auth.ok)
      return send(
        res,
        401,
        'text/plain',
        'admin token required (Authorization: Bearer TOKEN, or ?token=TOKEN once in a browser)\n',
        { 'www-authenticate': 'Bearer' },
      );
    const cookie: Record<string, string> = auth.setCookie ? { 'set-cookie': auth.setCookie } : {};
    switch (url.pathname) {
      case '/metrics':
        return send(res, 200, sources.metrics.contentType, await sources.metrics.text(), cookie);
      case '/': {
        if (auth.setCookie) {
          // Drop the token from the address bar (and from history) once the cookie holds it.
          res.writeHead(303, headers('text/plain', { ...cookie, location: '/' }));
          return void res.end();
        }
        const nonce = randomBytes(16).toString('base64');
        return send(res, 200, 'text/html; charset=utf-8', dashboardHtml(nonce), {
          ...cookie,
          'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
        });
      }
      case '/api/state':
        return json(res, 200, await state());
      case '/api/peers': {
        const limit = Math.min(MAX_PEERS_LISTED, Math.max(1, Number(url.searchParams.get('limit') ?? 200) || 200));
        const q = (url.searchParams.get('q') ?? '').toLowerCase().slice(0, 64);
        const now = Date.now();
        const list = sources.registry ? await sources.registry.list(now, { limit, ...(q ? { query: q } : {}) }) : [];
        return json(res, 200, {
          peers: list.map((r) => ({
            key: r.publicKey.toString('hex'),
            name: r.name ?? null,
            natType: r.natType ?? null,
            reachable: r.reachable,
            node: r.node ?? null,
            via: r.reflexive.transport,
            // The newest REGISTER's signed timestamp (the peer keeps it on the server's clock): when it was last seen.
            lastSeen: r.lastTimestamp,
            registeredAt: r.registeredAt,
            expiresAt: r.expiresAt,
          })),
        });
      }
      case '/events': {
        if (sse.size >= MAX_SSE_CLIENTS) return send(res, 503, 'text/plain', 'too many dashboard viewers\n');
        res.writeHead(200, headers('text/event-stream; charset=utf-8', { ...cookie, connection: 'keep-alive' }));
        sse.add(res);
        let pendingPeers = false;
        const push = async () => {
          if (res.writableEnded || closed) return;
          res.write(`event: state\ndata: ${JSON.stringify(await state())}\n\n`);
          if (pendingPeers) {
            pendingPeers = false;
            res.write('event: peers\ndata: {}\n\n');
          }
        };
        const timer = setInterval(() => void push().catch(() => res.destroy()), SSE_INTERVAL_MS);
        const off = sources.activity.onChange((what) => {
          if (what === 'peers') pendingPeers = true;
        });
        res.on('close', () => {
          clearInterval(timer);
          off();
          sse.delete(res);
        });
        await push();
        return;
      }
      default:
        return send(res, 404, 'text/plain', 'not found\n', cookie);
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new NatpunchError(
          'BAD_ARGUMENT',
          `--admin: cannot listen on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'the port is in use' : err.message}`,
        ),
      ),
    );
    server.listen({ host, port }, () => resolve());
  });
  const addr = server.address() as { address: string; port: number };
  const shown = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  log.info(
    { admin: `${shown}:${addr.port}`, token: Boolean(token) },
    'admin endpoint listening (/metrics, /healthz, /readyz, dashboard at /)',
  );
  return {
    address: addr.address,
    port: addr.port,
    url: `http://${shown}:${addr.port}/`,
    async close() {
      if (closed) return;
      closed = true;
      for (const r of sse) r.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
