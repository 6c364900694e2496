/**
 * TCP hole punching.
 *
 * P2P-NAT (Ford, Srisuresh, Kegel, "Peer-to-Peer Communication Across Network Address Translators", USENIX 2005 §4;
 * RFC 5128 §4): each peer keeps its rendezvous connection on local port P and, from the same P, connects to every
 * endpoint the other peer offered (public and private) while also listening on P. A SYN that finds no mapping in
 * the peer's NAT is dropped or answered with RST; the attempt is then retried after a short delay. Once both NATs
 * hold a mapping, a SYN gets through: either it reaches the listener (connect on one side, accept on the other) or
 * both SYNs cross and each reaches a socket in SYN_SENT (simultaneous open, RFC 9293 §3.5 figure 7), which yields
 * ONE connection that is the "connect" result on both sides.
 *
 * STUNT #2 (Guha & Francis, "Characterization and Measurement of TCP Traversal through NATs and Firewalls", IMC
 * 2005): a side given `lowTtl` sends SYNs whose TTL passes its own NAT(s) but expires before the peer's NAT (so no
 * RST comes back), which leaves a mapping in its NAT; the peer's ordinary SYN is then let in. The TTL comes from
 * discoverNatHops() (tcp-stunt.ts). Right after the low-TTL SYN has left, the socket's TTL is raised again, so when
 * the peer's SYN meets it still in SYN_SENT (the router's ICMP Time Exceeded did not come back: many NATs drop it)
 * the SYN-ACK of the simultaneous open travels all the way and carries the sequence number the NAT saw. When the
 * Time Exceeded does come back, Linux aborts the connect (EHOSTUNREACH) and the peer's SYN lands on the listener
 * instead, whose SYN-ACK has a fresh sequence number: a NAT that tracks TCP windows (Linux conntrack) drops that
 * SYN-ACK as invalid (measured in the lab; see docs/tcp.md §4), which is what NATBlaster/STUNT #1 address.
 *
 * Several connections may complete at once (one per candidate, or connect + accept). Both sides must use the same
 * one, so the `controlling` side takes the first, writes one nomination byte on it and closes the rest; the
 * `controlled` side keeps every connection until one carries the nomination byte (RFC 8445 §8.1.1 uses the same
 * roles for ICE). Who the peer is gets proved later by the session handshake, never by this layer.
 */
import { isIP } from 'node:net';
import type net from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { timeoutSignal } from '../util/abort.js';
import { silentLogger, type Logger } from '../util/log.js';
import { loadAddon, type NativeAddon } from '../net/native.js';
import { listenReusePort, startConnect, type PendingConnect } from '../net/tcp.js';
import type { Candidate } from './candidate.js';

/** Defaults, tuned in the lab (tcp-punch lab test): SYN retransmission is 1 s in Linux, so we retry faster. */
export const TCP_PUNCH_DEFAULTS = {
  /** Whole punch, both directions and all candidates. */
  timeoutMs: 15_000,
  /** One connect attempt; the first SYN retransmission (RFC 6298 §2: initial RTO 1 s) fits in it. */
  attemptTimeoutMs: 3_000,
  /** Pause after an RST / unreachable before sending the next SYN. */
  retryDelayMs: 200,
  /** Attempts per candidate. */
  maxAttempts: 40,
  /** STUNT #2: pause before the next low-TTL SYN when the last one's connect failed (ICMP Time Exceeded). */
  stuntRefreshMs: 1_000,
  /** Guarded STUNT #2: one low-TTL SYN's life, below the first SYN retransmission (RFC 6298 §2: initial RTO 1 s). */
  guardedStuntLifetimeMs: 900,
} as const;

/** First byte the controlling side writes on the chosen connection; natpunch's probe byte (src/net/demux.ts). */
export const TCP_NOMINATION_BYTE = 0xf1;

export type TcpPunchRole = 'controlling' | 'controlled';

export type TcpPunchCandidate = Pick<Candidate, 'address' | 'port'> & Partial<Pick<Candidate, 'type' | 'priority'>>;

export interface TcpPunchOptions {
  /** Local port P: the one of the rendezvous connection (made with connectFrom) so the NAT mapping is shared. */
  localPort: number;
  /** Local address to bind; default 0.0.0.0. */
  localAddress?: string;
  /** The peer's endpoints (server-reflexive, host, predicted...). */
  candidates: TcpPunchCandidate[];
  role: TcpPunchRole;
  /** STUNT #2: send SYNs with this TTL (from discoverNatHops) and accept the peer's SYN instead of connecting. */
  lowTtl?: number;
  /** Which candidates get the low TTL (default: all of them). */
  lowTtlFor?: (c: TcpPunchCandidate) => boolean;
  /**
   * STUNT #2 with the Time Exceeded for our SYNs dropped on this host (tcp-seq.ts installIcmpGuard): the socket stays
   * in SYN_SENT, so each low-TTL SYN is renewed before the kernel's first retransmission (initial RTO 1 s, RFC 6298
   * §2), which would leave with the restored TTL, reach the peer's NAT and, when that NAT answers RST, close the
   * mapping the low-TTL SYN opened.
   */
  icmpGuarded?: boolean;
  /** Wait this long before our first SYN while already listening (the peer opens its NAT first; see tcp-session.ts). */
  connectDelayMs?: number;
  /**
   * Controlling side: asked right before a connection is nominated; false means another technique's connection won
   * the nomination (tcp-session.ts runs the sequence-number techniques beside P2P-NAT) and the punch ends ABORTED.
   */
  claimNomination?: () => boolean;
  /** Accept inbound connections from the candidates' IP addresses only (default) or from anywhere. */
  acceptFrom?: 'candidates' | 'any';
  /** Listener already open on P (reuseport); by default one is opened and closed again. */
  listener?: net.Server;
  /**
   * false: do not listen on P, only connect. Then a connection can only come from our SYN reaching the peer's
   * listener or from SYNs crossing (simultaneous open); tests use it to exercise simultaneous open deliberately.
   */
  listen?: boolean;
  timeoutMs?: number;
  attemptTimeoutMs?: number;
  retryDelayMs?: number;
  maxAttempts?: number;
  signal?: AbortSignal;
  logger?: Logger;
  addon?: NativeAddon;
}

export interface TcpPunchResult {
  socket: net.Socket;
  /** The candidate the connection runs to (type 'prflx' when the peer came from an endpoint it had not offered). */
  candidate: TcpPunchCandidate;
  /** 'connect': our SYN made it (or both crossed: simultaneous open); 'accept': the peer's SYN reached our listener. */
  direction: 'connect' | 'accept';
  /** SYNs sent (connect attempts, all candidates). */
  attempts: number;
  elapsedMs: number;
}

function key(address: string, port: number): string {
  return `${address.replace(/^::ffff:/, '')}:${port}`;
}

/** Runs P2P-NAT (or STUNT #2 with lowTtl) and resolves with the one connection both sides agreed on. */
export async function tcpPunch(options: TcpPunchOptions): Promise<TcpPunchResult> {
  const addon = options.addon ?? loadAddon('TCP hole punching');
  const log = options.logger ?? silentLogger;
  if (options.candidates.length === 0) throw new NatpunchError('BAD_ARGUMENT', 'tcpPunch needs at least one candidate');
  for (const c of options.candidates) {
    if (isIP(c.address) === 0 || !Number.isInteger(c.port) || c.port < 1 || c.port > 65535) {
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `tcpPunch: candidate ${JSON.stringify(c.address)}:${c.port} is not a numeric IP address and port`,
      );
    }
  }
  if (!Number.isInteger(options.localPort) || options.localPort < 1 || options.localPort > 65535) {
    throw new NatpunchError('BAD_ARGUMENT', `tcpPunch needs the local port in use (got ${options.localPort})`);
  }
  const timeoutMs = options.timeoutMs ?? TCP_PUNCH_DEFAULTS.timeoutMs;
  const attemptTimeoutMs = options.attemptTimeoutMs ?? TCP_PUNCH_DEFAULTS.attemptTimeoutMs;
  const retryDelayMs = options.retryDelayMs ?? TCP_PUNCH_DEFAULTS.retryDelayMs;
  const maxAttempts = options.maxAttempts ?? TCP_PUNCH_DEFAULTS.maxAttempts;
  const localAddress = options.localAddress ?? '0.0.0.0';
  const started = Date.now();
  const candidateAddresses = new Set(options.candidates.map((c) => c.address.replace(/^::ffff:/, '')));
  const byKey = new Map(options.candidates.map((c) => [key(c.address, c.port), c]));

  const listen = options.listen ?? true;
  const listener = !listen
    ? undefined
    : (options.listener ?? (await listenReusePort({ address: localAddress, port: options.localPort, addon })));
  const ownsListener = listen && !options.listener;
  const { signal, dispose } = timeoutSignal(timeoutMs, options.signal);

  let settled = false;
  let attempts = 0;
  const pending = new Set<PendingConnect>();
  const waiting = new Set<net.Socket>(); // connections not (yet) nominated
  const connectedKeys = new Set<string>();
  const lastError = new Map<string, string>();
  /** Pauses between SYNs, ended by finish(): every candidate runs its own loop, and one abort listener per loop on
   *  the caller's signal would fan out past Node's 10 (MaxListenersExceededWarning) with a predicted window. */
  const pauses = new Set<() => void>();
  const pause = (ms: number) =>
    new Promise<boolean>((resolve) => {
      if (settled) return resolve(false);
      const end = (ok: boolean) => {
        clearTimeout(timer);
        pauses.delete(stop);
        resolve(ok);
      };
      const stop = () => end(false);
      const timer = setTimeout(() => end(!settled), ms);
      pauses.add(stop);
    });

  return await new Promise<TcpPunchResult>((resolve, reject) => {
    const finish = (result: TcpPunchResult | NatpunchError) => {
      if (settled) return;
      settled = true;
      listener?.off('connection', onAccept);
      for (const p of pending) p.cancel();
      pending.clear();
      for (const stop of [...pauses]) stop();
      for (const s of waiting)
        if (!(result instanceof NatpunchError) && s === result.socket) continue;
        else s.destroy();
      waiting.clear();
      if (ownsListener) listener?.close();
      signal.removeEventListener('abort', onAbort);
      dispose();
      if (result instanceof NatpunchError) reject(result);
      else resolve(result);
    };

    const onAbort = () => {
      const reason = signal.reason;
      if (reason instanceof NatpunchError && reason.code === 'TIMEOUT') {
        const tried = [...lastError].map(([k, e]) => `${k} ${e}`).join(', ');
        finish(
          new NatpunchError(
            'PUNCH_FAILED',
            `TCP hole punching found no path within ${timeoutMs} ms (${attempts} SYNs; ${tried || 'no answer'})`,
            {
              details: { attempts, lastError: Object.fromEntries(lastError) },
            },
          ),
        );
      } else {
        finish(new NatpunchError('ABORTED', 'TCP hole punching aborted', { cause: reason }));
      }
    };
    signal.addEventListener('abort', onAbort, { once: true });

    const win = (socket: net.Socket, candidate: TcpPunchCandidate, direction: 'connect' | 'accept') => {
      waiting.delete(socket);
      socket.removeAllListeners('error');
      socket.removeAllListeners('close');
      log.debug({ candidate, direction, attempts }, 'tcp punch: connection chosen');
      finish({ socket, candidate, direction, attempts, elapsedMs: Date.now() - started });
    };

    const onConnection = (socket: net.Socket, candidate: TcpPunchCandidate, direction: 'connect' | 'accept') => {
      if (settled) {
        socket.destroy();
        return;
      }
      const k = key(socket.remoteAddress ?? '', socket.remotePort ?? 0);
      connectedKeys.add(k);
      waiting.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        waiting.delete(socket);
        connectedKeys.delete(k);
      });
      log.debug({ candidate, direction }, 'tcp punch: connection up');
      if (options.role === 'controlling') {
        if (options.claimNomination && !options.claimNomination()) {
          // Another technique's connection was nominated first (tcp-session.ts races them): this one is not used.
          finish(new NatpunchError('ABORTED', 'another TCP connection was nominated'));
          return;
        }
        socket.write(Buffer.from([TCP_NOMINATION_BYTE]));
        win(socket, candidate, direction);
        return;
      }
      // controlled: wait for the nomination byte; read exactly one byte so whatever follows stays for the session.
      const onReadable = () => {
        if (settled) return;
        const b = socket.read(1) as Buffer | null;
        if (b === null) return;
        socket.off('readable', onReadable);
        if (b[0] === TCP_NOMINATION_BYTE) win(socket, candidate, direction);
        else socket.destroy();
      };
      socket.on('readable', onReadable);
    };

    const onAccept = (socket: net.Socket) => {
      const address = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
      if ((options.acceptFrom ?? 'candidates') === 'candidates' && !candidateAddresses.has(address)) {
        log.debug({ address, port: socket.remotePort }, 'tcp punch: inbound connection from a stranger dropped');
        socket.destroy();
        return;
      }
      const known = byKey.get(key(address, socket.remotePort ?? 0));
      onConnection(socket, known ?? { type: 'prflx', address, port: socket.remotePort ?? 0 }, 'accept');
    };
    listener?.on('connection', onAccept);

    const defaultTtl = options.lowTtl === undefined ? undefined : systemDefaultTtl(addon);
    const attempt = async (
      candidate: TcpPunchCandidate,
      ttl: number | undefined,
      lifetimeMs: number,
    ): Promise<net.Socket | null> => {
      const k = key(candidate.address, candidate.port);
      let pc: PendingConnect;
      try {
        pc = startConnect({
          address: candidate.address,
          port: candidate.port,
          localAddress,
          localPort: options.localPort,
          ttl,
          ttlAfterSyn: ttl === undefined ? undefined : defaultTtl,
          timeoutMs: lifetimeMs,
          // No signal per SYN: the punch's one abort listener ends them all (finish() cancels what is pending).
          addon,
        });
      } catch (err) {
        lastError.set(k, (err as { details?: { errno?: string } }).details?.errno ?? (err as Error).message);
        return null;
      }
      attempts++;
      pending.add(pc);
      try {
        return await pc.done;
      } catch (err) {
        const e = err as NatpunchError;
        lastError.set(k, e.code === 'TCP_CONNECT' ? String(e.details?.errno) : e.code);
        return null;
      } finally {
        pending.delete(pc);
      }
    };

    const runCandidate = async (candidate: TcpPunchCandidate) => {
      const k = key(candidate.address, candidate.port);
      const stunt = options.lowTtl !== undefined && (options.lowTtlFor?.(candidate) ?? true);
      // Guarded STUNT #2 renews its SYN before the first retransmission (see icmpGuarded); attempts then are cheap.
      const guarded = stunt && options.icmpGuarded === true;
      const lifetimeMs = guarded ? TCP_PUNCH_DEFAULTS.guardedStuntLifetimeMs : attemptTimeoutMs;
      if (options.connectDelayMs && !(await pause(options.connectDelayMs))) return;
      for (let n = 0; n < (guarded ? Math.ceil(timeoutMs / lifetimeMs) : maxAttempts) && !settled; n++) {
        if (connectedKeys.has(k)) return; // an accepted connection already holds this 4-tuple
        const socket = await attempt(candidate, stunt ? options.lowTtl : undefined, lifetimeMs);
        if (socket) {
          onConnection(socket, candidate, 'connect');
          return;
        }
        if (settled) return;
        if (guarded && lastError.get(k) === 'TIMEOUT') continue; // our SYN_SENT socket lapsed unanswered: renew at once
        if (!(await pause(stunt ? TCP_PUNCH_DEFAULTS.stuntRefreshMs : retryDelayMs))) return;
      }
    };

    // A socket bound to an IPv4 address cannot reach an IPv6 candidate (and vice versa): those are skipped.
    const localFamily = isIP(localAddress);
    for (const c of options.candidates) {
      if (isIP(c.address) !== localFamily) {
        lastError.set(key(c.address, c.port), `skipped (local address ${localAddress} is IPv${localFamily})`);
        continue;
      }
      void runCandidate(c);
    }
  });
}

/** The TTL a new socket gets (net.ipv4.ip_default_ttl), read from a throw-away socket. */
function systemDefaultTtl(addon: NativeAddon): number {
  const fd = addon.tcpSocket(4);
  try {
    return addon.getTtl(fd);
  } finally {
    addon.close(fd);
  }
}
