import { NatpunchError } from '../util/errors.js';
import type { LabProcess } from './proc.js';

/** Default wait for one agent request's answer. */
export const AGENT_REQUEST_TIMEOUT_MS = 10_000;

export interface UdpDatagram {
  ev: 'udp';
  sock: number;
  from: string;
  port: number;
  data: string;
}

/** What a reflecting UDP socket (`udpBind({reflect: true})`) answers: the source it saw. */
export interface Reflection {
  from: string;
  port: number;
  data: string;
}

/**
 * Client for the probe agent (agent-script.ts) running in a lab namespace: plain UDP/TCP sockets driven over
 * JSON lines. Obtain one with `await lab.agent('a')`; it is closed by `lab.down()` or `agent.close()`.
 */
export class Agent {
  readonly proc: LabProcess;
  readonly host: string;
  #nextId = 1;

  constructor(proc: LabProcess) {
    this.proc = proc;
    this.host = proc.host;
  }

  /** Sends one request and waits for its answer; throws NatpunchError('LAB') carrying the agent's error code. */
  async request<T extends Record<string, unknown> = Record<string, unknown>>(
    op: string,
    args: Record<string, unknown> = {},
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    const id = this.#nextId++;
    this.proc.send({ id, op, ...args });
    const res = await this.proc.next((m) => m.id === id, {
      timeoutMs: opts.timeoutMs ?? AGENT_REQUEST_TIMEOUT_MS,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    if (res.ok !== true) {
      throw new NatpunchError(
        'LAB',
        `agent on ${this.host}: ${op} failed: ${String(res.code)} ${String(res.message ?? '')}`,
        {
          details: { code: res.code },
        },
      );
    }
    return res as T;
  }

  /** Binds a UDP socket (port 0 = any). With `reflect`, it answers every datagram with JSON {from, port, data}. */
  async udpBind(
    opts: { port?: number; address?: string; reflect?: boolean } = {},
  ): Promise<{ sock: number; port: number }> {
    return this.request('udp.bind', { ...opts });
  }

  async udpSend(sock: number, host: string, port: number, data = 'probe'): Promise<void> {
    await this.request('udp.send', { sock, host, port, data });
  }

  /** Sends on a connected socket (see udpConnect); ICMP errors then arrive as `udp.error` events (nextUdpError). */
  async udpSendConnected(sock: number, data = 'probe'): Promise<void> {
    await this.request('udp.send', { sock, data });
  }

  /** Next `udp.error` event (e.g. ECONNREFUSED from an ICMP port unreachable) on a connected socket. */
  nextUdpError(
    sock: number,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<{ ev: 'udp.error'; sock: number; code: string }> {
    return this.proc.next((m) => m.ev === 'udp.error' && m.sock === sock, opts) as Promise<never>;
  }

  /**
   * On a connected socket: sends `tries` datagrams and reports the first socket error the kernel attaches to it
   * (ICMP port/host unreachable → ECONNREFUSED / EHOSTUNREACH), whether it surfaces on a send or as an event;
   * undefined when none arrives within `waitMs`.
   */
  async udpProbeError(
    sock: number,
    opts: { tries?: number; waitMs?: number; data?: string } = {},
  ): Promise<string | undefined> {
    let code: string | undefined;
    for (let i = 0; i < (opts.tries ?? 2) && code === undefined; i++) {
      try {
        await this.udpSendConnected(sock, opts.data ?? 'probe');
      } catch (err) {
        if (err instanceof NatpunchError && err.details?.code) code = String(err.details.code);
        else throw err;
      }
      if (code === undefined) {
        const ev = await this.nextUdpError(sock, { timeoutMs: i === 0 ? 100 : (opts.waitMs ?? 700) }).catch(
          () => undefined,
        );
        code = ev?.code;
      }
    }
    this.proc.drain((m) => m.ev === 'udp.error' && m.sock === sock);
    return code;
  }

  async udpConnect(sock: number, host: string, port: number): Promise<void> {
    await this.request('udp.connect', { sock, host, port });
  }

  /** Next datagram received on `sock` matching `filter`; rejects with TIMEOUT when none arrives in time. */
  nextUdp(
    sock: number,
    filter: (d: UdpDatagram) => boolean = () => true,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<UdpDatagram> {
    return this.proc.next<UdpDatagram & Record<string, unknown>>(
      (m) => m.ev === 'udp' && m.sock === sock && filter(m as unknown as UdpDatagram),
      opts,
    );
  }

  /**
   * Sends `data` to host:port up to `tries` times, `intervalMs` apart, until a datagram comes back from exactly that
   * host:port; returns it, or undefined when nothing came back (bounded: tries × intervalMs).
   */
  async udpExchange(
    sock: number,
    host: string,
    port: number,
    opts: { data?: string; tries?: number; intervalMs?: number } = {},
  ): Promise<UdpDatagram | undefined> {
    const tries = opts.tries ?? 3;
    const intervalMs = opts.intervalMs ?? 500;
    for (let i = 0; i < tries; i++) {
      await this.udpSend(sock, host, port, opts.data ?? 'probe');
      try {
        return await this.nextUdp(sock, (d) => d.from === host && d.port === port, { timeoutMs: intervalMs });
      } catch (err) {
        if (!(err instanceof NatpunchError && err.code === 'TIMEOUT')) throw err;
      }
    }
    return undefined;
  }

  /** udpExchange with a reflecting peer: the external address and port the peer saw, or undefined. */
  async udpReflect(
    sock: number,
    host: string,
    port: number,
    opts: { tries?: number; intervalMs?: number } = {},
  ): Promise<Reflection | undefined> {
    const d = await this.udpExchange(sock, host, port, opts);
    return d ? (JSON.parse(d.data) as Reflection) : undefined;
  }

  /** Datagrams already received on `sock` and not yet consumed (removes them). */
  drainUdp(sock: number): UdpDatagram[] {
    return this.proc.drain((m) => m.ev === 'udp' && m.sock === sock) as unknown as UdpDatagram[];
  }

  async tcpListen(opts: { port?: number; address?: string } = {}): Promise<{ sock: number; port: number }> {
    return this.request('tcp.listen', { ...opts });
  }

  /** Connects; resolves {ok:true, conn, localPort} or {ok:false, code} (ECONNREFUSED, ETIMEDOUT, ...). */
  async tcpConnect(
    host: string,
    port: number,
    opts: { localPort?: number; timeoutMs?: number } = {},
  ): Promise<{ ok: true; conn: number; localPort: number } | { ok: false; code: string }> {
    const timeoutMs = opts.timeoutMs ?? 3000;
    try {
      const r = await this.request<{ conn: number; localPort: number }>(
        'tcp.connect',
        { host, port, timeoutMs, ...(opts.localPort !== undefined ? { localPort: opts.localPort } : {}) },
        { timeoutMs: timeoutMs + AGENT_REQUEST_TIMEOUT_MS },
      );
      return { ok: true, conn: r.conn, localPort: r.localPort };
    } catch (err) {
      if (err instanceof NatpunchError && err.code === 'LAB' && err.details?.code) {
        return { ok: false, code: String(err.details.code) };
      }
      throw err;
    }
  }

  async tcpSend(conn: number, data: string): Promise<void> {
    await this.request('tcp.send', { conn, data });
  }

  async closeSocket(sock: number): Promise<void> {
    await this.request('close', { sock });
  }

  async close(): Promise<void> {
    await this.proc.close();
  }
}
