/**
 * The lab probe agent: a tiny process run inside a lab namespace (see Lab.agent()). It owns plain UDP and TCP
 * sockets and is driven by JSON lines on stdin; it answers and reports events as JSON lines on stdout.
 * No natpunch logic here on purpose: it is the "plain probe" the lab tests use to observe NAT behaviour.
 *
 * Requests carry an `id`; the answer is `{id, ok: true, ...}` or `{id, ok: false, code, message}`.
 *   {op:'udp.bind', port?, address?, reflect?}   -> {sock, port}  reflect: answer every datagram with
 *                                                   JSON {from, port, data} (what a STUN server tells you)
 *   {op:'udp.send', sock, host, port, data}
 *   {op:'udp.connect', sock, host, port}          (connected sockets surface ICMP errors as udp.error events)
 *   {op:'tcp.listen', port?, address?}          -> {sock, port}
 *   {op:'tcp.connect', host, port, localPort?, timeoutMs?} -> {conn, localPort}  or ok:false code ECONNREFUSED...
 *   {op:'tcp.send', conn, data}
 *   {op:'close', sock}                            closes a socket, listener or connection
 * Events: {ev:'udp', sock, from, port, data}, {ev:'udp.error', sock, code}, {ev:'tcp.accept', sock, conn, from, port},
 *         {ev:'tcp.data', conn, data}, {ev:'tcp.close', conn}
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { createInterface } from 'node:readline';

type Req = Record<string, unknown> & { id?: unknown; op?: unknown };

const udp = new Map<number, dgram.Socket>();
const servers = new Map<number, net.Server>();
const conns = new Map<number, net.Socket>();
let nextId = 1;

function out(msg: unknown): void {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

function str(v: unknown, name: string): string {
  if (typeof v !== 'string') throw Object.assign(new Error(`${name} must be a string`), { code: 'BAD_ARGUMENT' });
  return v;
}
function num(v: unknown, name: string, dflt?: number): number {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw Object.assign(new Error(`${name} must be an integer`), { code: 'BAD_ARGUMENT' });
  }
  return v;
}

function trackConn(conn: net.Socket): number {
  const id = nextId++;
  conns.set(id, conn);
  conn.setEncoding('utf8');
  conn.on('data', (data: string) => out({ ev: 'tcp.data', conn: id, data }));
  conn.on('error', () => {});
  conn.on('close', () => {
    conns.delete(id);
    out({ ev: 'tcp.close', conn: id });
  });
  return id;
}

async function handle(req: Req): Promise<Record<string, unknown>> {
  switch (req.op) {
    case 'udp.bind': {
      const sock = dgram.createSocket('udp4');
      const id = nextId++;
      const reflect = req.reflect === true;
      sock.on('message', (msg, rinfo) => {
        const data = msg.toString('utf8');
        out({ ev: 'udp', sock: id, from: rinfo.address, port: rinfo.port, data });
        if (reflect)
          sock.send(JSON.stringify({ from: rinfo.address, port: rinfo.port, data }), rinfo.port, rinfo.address);
      });
      sock.on('error', (err: NodeJS.ErrnoException) =>
        out({ ev: 'udp.error', sock: id, code: err.code ?? err.message }),
      );
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(num(req.port, 'port', 0), typeof req.address === 'string' ? req.address : undefined, () => {
          sock.off('error', reject);
          resolve();
        });
      });
      udp.set(id, sock);
      return { sock: id, port: sock.address().port };
    }
    case 'udp.send': {
      const sock = udp.get(num(req.sock, 'sock'));
      if (!sock) throw Object.assign(new Error('no such socket'), { code: 'BAD_ARGUMENT' });
      const data = Buffer.from(typeof req.data === 'string' ? req.data : '');
      await new Promise<void>((resolve, reject) => {
        const cb = (err: Error | null) => (err ? reject(err) : resolve());
        if (req.host === undefined) sock.send(data, cb);
        else sock.send(data, num(req.port, 'port'), str(req.host, 'host'), cb);
      });
      return {};
    }
    case 'udp.connect': {
      const sock = udp.get(num(req.sock, 'sock'));
      if (!sock) throw Object.assign(new Error('no such socket'), { code: 'BAD_ARGUMENT' });
      await new Promise<void>((resolve) => sock.connect(num(req.port, 'port'), str(req.host, 'host'), resolve));
      return {};
    }
    case 'tcp.listen': {
      const server = net.createServer();
      const id = nextId++;
      server.on('connection', (conn) => {
        const c = trackConn(conn);
        out({ ev: 'tcp.accept', sock: id, conn: c, from: conn.remoteAddress, port: conn.remotePort });
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(num(req.port, 'port', 0), typeof req.address === 'string' ? req.address : '0.0.0.0', () => {
          server.off('error', reject);
          resolve();
        });
      });
      servers.set(id, server);
      return { sock: id, port: (server.address() as net.AddressInfo).port };
    }
    case 'tcp.connect': {
      const timeoutMs = num(req.timeoutMs, 'timeoutMs', 3000);
      const conn = net.connect({
        host: str(req.host, 'host'),
        port: num(req.port, 'port'),
        ...(req.localPort !== undefined ? { localPort: num(req.localPort, 'localPort') } : {}),
      });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          conn.destroy();
          reject(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }));
        }, timeoutMs);
        conn.once('connect', () => {
          clearTimeout(timer);
          resolve();
        });
        conn.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      const id = trackConn(conn);
      return { conn: id, localPort: conn.localPort };
    }
    case 'tcp.send': {
      const conn = conns.get(num(req.conn, 'conn'));
      if (!conn) throw Object.assign(new Error('no such connection'), { code: 'BAD_ARGUMENT' });
      conn.write(typeof req.data === 'string' ? req.data : '');
      return {};
    }
    case 'close': {
      const id = num(req.sock, 'sock');
      udp.get(id)?.close();
      udp.delete(id);
      servers.get(id)?.close();
      servers.delete(id);
      conns.get(id)?.destroy();
      conns.delete(id);
      return {};
    }
    default:
      throw Object.assign(new Error(`unknown op ${String(req.op)}`), { code: 'BAD_ARGUMENT' });
  }
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let req: Req;
  try {
    req = JSON.parse(line) as Req;
    if (req === null || typeof req !== 'object') throw new Error('not an object');
  } catch {
    out({ ok: false, code: 'BAD_JSON', message: 'request is not a JSON object' });
    return;
  }
  handle(req).then(
    (res) => out({ id: req.id, ok: true, ...res }),
    (err: NodeJS.ErrnoException) => out({ id: req.id, ok: false, code: err.code ?? 'ERROR', message: err.message }),
  );
});
// stdin closed: the lab (or test) is done with us.
rl.on('close', () => process.exit(0));
out({ ev: 'ready', pid: process.pid });
