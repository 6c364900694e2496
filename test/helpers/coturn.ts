// coturn's turnserver (Debian package `coturn`) for interop tests and benchmarks: one launcher. It listens on
// loopback only, is ready when it answers a STUN Binding request (bounded wait), and is stopped by PID.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stunBinding } from '../../src/stun/client.js';
import { freePort } from './net.js';

/** How long one start attempt may take to answer a Binding request. */
export const COTURN_READY_MS = 10_000;
/** Start attempts (a fresh port each time: another process may take the free port first). */
const START_ATTEMPTS = 3;
/** SIGTERM, then SIGKILL after this long. */
const STOP_GRACE_MS = 3000;

export interface CoturnOptions {
  /** --stun-only: STUN Binding only, no TURN and no credentials. */
  stunOnly?: boolean;
  /** RFC 5780: a second listening IP on loopback (e.g. 127.0.0.2); the alternate port is port + 1. */
  alternateAddress?: string;
  /** TURN long-term credentials (--lt-cred-mech, one user); relaying is from 127.0.0.1 and to loopback peers. */
  user?: { username: string; password: string };
  /** The realm for `user` (default 'natpunch.test'). */
  realm?: string;
  /** Relay port range (--min-port / --max-port); coturn's default range when absent. */
  relayPorts?: { min: number; max: number };
  /** Listening port is picked below this (default 65000, which leaves room for the RFC 5780 port + 1). */
  portBelow?: number;
  /** Wraps the command line, e.g. to pin it with taskset. The wrapper must exec in place so the PID is the server's. */
  wrap?: (cmd: string, args: string[]) => [string, string[]];
  /** Bound on each attempt's readiness wait (default COTURN_READY_MS). */
  readyMs?: number;
}

export interface Coturn {
  /** UDP and TCP listening port on 127.0.0.1. */
  port: number;
  pid: number;
  child: ChildProcess;
  /** The server's log and output so far, for failure messages. */
  log(): string;
  /** Kills by PID (SIGTERM, SIGKILL after 3 s), waits for the exit and removes its files. Safe to call twice. */
  stop(): Promise<void>;
}

function isLoopback(address: string): boolean {
  return address === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address);
}

function argsFor(o: CoturnOptions, port: number, dir: string): string[] {
  const args = [
    '-n', // no configuration file: every setting is on this command line
    '--listening-ip',
    '127.0.0.1',
    '--listening-port',
    String(port),
    '--no-cli',
    '--no-tls',
    '--no-dtls',
    '--no-stdout-log',
    '--simple-log',
    '--log-file',
    join(dir, 'turnserver.log'),
    '--pidfile',
    join(dir, 'turnserver.pid'),
    '--userdb',
    join(dir, 'turndb'),
  ];
  if (o.alternateAddress) args.push('--listening-ip', o.alternateAddress, '--alt-listening-port', String(port + 1));
  if (o.stunOnly) args.push('--stun-only');
  if (o.user) {
    args.push(
      '--lt-cred-mech',
      '--user',
      `${o.user.username}:${o.user.password}`,
      '--realm',
      o.realm ?? 'natpunch.test',
    );
    args.push('--relay-ip', '127.0.0.1', '--allow-loopback-peers');
  }
  if (o.relayPorts) args.push('--min-port', String(o.relayPorts.min), '--max-port', String(o.relayPorts.max));
  return args;
}

/** Kills `child` by PID and waits (bounded by the SIGKILL) for it to exit. */
async function killByPid(child: ChildProcess): Promise<void> {
  const pid = child.pid;
  if (!pid || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  const kill = (signal: NodeJS.Signals) => {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  };
  kill('SIGTERM');
  const t = setTimeout(() => kill('SIGKILL'), STOP_GRACE_MS);
  await exited;
  clearTimeout(t);
}

async function startOnce(o: CoturnOptions): Promise<Coturn | string> {
  const port = await freePort(o.portBelow);
  const dir = mkdtempSync(join(tmpdir(), 'natpunch-coturn-'));
  const [cmd, args] = (o.wrap ?? ((c, a) => [c, a]))('turnserver', argsFor(o, port, dir));
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d: Buffer) => (output = (output + d.toString()).slice(-8000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.on('error', (e) => keep(Buffer.from(String(e))));
  const log = () => {
    let file = '';
    try {
      file = readFileSync(join(dir, 'turnserver.log'), 'utf8').slice(-8000);
    } catch {
      // not written (yet)
    }
    return file + output;
  };
  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= killByPid(child).then(() => rmSync(dir, { recursive: true, force: true })));
  const deadline = Date.now() + (o.readyMs ?? COTURN_READY_MS);
  while (Date.now() < deadline && child.exitCode === null && child.signalCode === null && child.pid) {
    try {
      await stunBinding({ host: '127.0.0.1', port }, { timeoutMs: 250 });
      return { port, pid: child.pid, child, log, stop };
    } catch {
      await new Promise((r) => setTimeout(r, 50)); // not up yet (a refused port fails at once)
    }
  }
  const why = `turnserver on 127.0.0.1:${port} did not answer a Binding request (exit ${child.exitCode ?? child.signalCode ?? 'none'}): ${log().slice(-2000)}`;
  await stop();
  return why;
}

/** Starts turnserver on 127.0.0.1 with `options`; rejects when it does not answer within the bounded waits. */
export async function startCoturn(options: CoturnOptions = {}): Promise<Coturn> {
  if (options.alternateAddress && !isLoopback(options.alternateAddress)) {
    throw new Error(`coturn test servers listen on loopback only, not ${options.alternateAddress}`);
  }
  let why = '';
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    const started = await startOnce(options);
    if (typeof started !== 'string') return started;
    why = started;
  }
  throw new Error(why);
}
