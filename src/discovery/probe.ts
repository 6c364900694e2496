/**
 * Probe transactions for netcheck: one Binding request, retransmitted on a short schedule, answered or not within a
 * bounded budget. Why not StunClient (src/stun/client.ts): there "no answer" is an error after the RFC 8489 schedule
 * (500 ms doubling, 39.5 s), and its doubling cannot be capped — at a 1.5 s budget it would send 4 times, too few for
 * verdicts that must hold under 10% loss per link. Here "no answer" is a result (it is how filtering is measured), so
 * probes resolve to `undefined` instead of throwing, and responses are accepted from ANY source address: RFC 5780
 * CHANGE-REQUEST answers come from the server's other address, matched by the transaction id alone.
 */
import net from 'node:net';
import type { DatagramTransport, RemoteInfo } from '../net/datagram.js';
import type { Endpoint } from './classify.js';
import {
  decodeBindingResponse,
  encodeBindingRequest,
  newTransactionId,
  stunFrameLength,
  type BindingRequestOptions,
  type BindingResponse,
} from './binding.js';

/**
 * Retransmission for probes. RFC 8489 §6.2.1 lets a client derive RTO from measured RTTs instead of the 500 ms
 * default; netcheck's whole run must fit in ~3 s, so probes resend every 100 ms (5x a 20 ms RTT) and give up after
 * 1.5 s: 15 sends of a ~70-byte packet, about 1 KB per probe. That many because verdicts rest on answers arriving:
 * with 10% loss on each of 3 links a round trip is lost 47% of the time, and a run has about a dozen probes whose
 * loss would change a verdict; 15 in a row are lost with probability 1e-5.
 */
export interface ProbeSchedule {
  rtoMs: number;
  maxRtoMs: number;
  budgetMs: number;
}

export const PROBE_SCHEDULE: ProbeSchedule = { rtoMs: 100, maxRtoMs: 100, budgetMs: 1500 };

export interface BindingAnswer extends BindingResponse {
  /** Where the response came from (for CHANGE-REQUEST this is the server's other address). */
  from: Endpoint;
  /** Milliseconds from the first send to the answer. */
  rttMs: number;
  /** How many times the request was sent. */
  sends: number;
}

/** Send offsets (ms after the first send) for a schedule: 0, rto, rto+2rto, ... while inside the budget. */
export function sendOffsets(schedule: ProbeSchedule): number[] {
  const out = [0];
  let rto = schedule.rtoMs;
  let t = 0;
  for (let i = 0; i < 32; i++) {
    t += rto;
    if (t >= schedule.budgetMs) break;
    out.push(t);
    rto = Math.min(rto * 2, schedule.maxRtoMs);
  }
  return out;
}

/**
 * Runs Binding transactions over a DatagramTransport it does not own. Ignores everything that is not a Binding
 * response to one of its own transactions.
 */
export class BindingProber {
  readonly transport: DatagramTransport;
  #pending = new Map<string, (res: BindingResponse, from: RemoteInfo) => void>();
  #off: () => void;

  constructor(transport: DatagramTransport) {
    this.transport = transport;
    this.#off = transport.onMessage((msg, rinfo) => {
      // RFC 8489 §5 / RFC 7983: STUN messages start with two zero bits.
      if (msg.length < 20 || msg[0]! > 3) return;
      const res = decodeBindingResponse(msg);
      if (!res) return;
      this.#pending.get(res.transactionId)?.(res, rinfo);
    });
  }

  /**
   * One transaction. The first send happens synchronously inside this call (netcheck relies on that to order the
   * first packets of several sockets). Resolves undefined when the budget passes or `signal` fires.
   */
  request(
    dest: Endpoint,
    options: BindingRequestOptions & { schedule?: ProbeSchedule; signal?: AbortSignal } = {},
  ): Promise<BindingAnswer | undefined> {
    const schedule = options.schedule ?? PROBE_SCHEDULE;
    const txid = newTransactionId(options.legacy);
    const key = txid.toString('hex');
    const packet = encodeBindingRequest(txid, options);
    const started = Date.now();
    return new Promise((resolve) => {
      const timers: NodeJS.Timeout[] = [];
      let sends = 0;
      const finish = (value: BindingAnswer | undefined) => {
        for (const t of timers) clearTimeout(t);
        this.#pending.delete(key);
        options.signal?.removeEventListener('abort', onAbort);
        resolve(value);
      };
      const onAbort = () => finish(undefined);
      if (options.signal?.aborted || this.transport.closed) return resolve(undefined);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(key, (res, from) =>
        finish({ ...res, from: { address: from.address, port: from.port }, rttMs: Date.now() - started, sends }),
      );
      const send = () => {
        sends++;
        this.transport.send(packet, dest.port, dest.address);
      };
      for (const offset of sendOffsets(schedule)) {
        if (offset === 0) send();
        else timers.push(setTimeout(send, offset));
      }
      timers.push(setTimeout(() => finish(undefined), schedule.budgetMs));
    });
  }

  close(): void {
    this.#off();
    this.#pending.clear();
  }
}

/** RFC 8489 §6.2.2: STUN over TCP. Bounded by `timeoutMs` and `signal`; resolves undefined on any failure. */
export interface TcpBindingResult {
  answer?: BindingAnswer;
  localPort?: number;
  error?: string;
}

export function tcpBinding(
  dest: Endpoint,
  options: { localPort?: number; localAddress?: string; timeoutMs: number; signal?: AbortSignal },
): Promise<TcpBindingResult> {
  return new Promise((resolve) => {
    const started = Date.now();
    const txid = newTransactionId();
    const key = txid.toString('hex');
    let localPort: number | undefined;
    let done = false;
    // Binding explicitly (even to port 0) makes libuv set SO_REUSEADDR, so the same local port can then connect to
    // the server's other addresses at the same time — that is what the TCP mapping test needs.
    const socket = net.connect({
      host: dest.address,
      port: dest.port,
      localAddress: options.localAddress ?? (dest.address.includes(':') ? '::' : '0.0.0.0'),
      localPort: options.localPort ?? 0,
    });
    const finish = (result: TcpBindingResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve({ localPort, ...result });
    };
    const onAbort = () => finish({ error: 'aborted' });
    const timer = setTimeout(() => finish({ error: `no answer within ${options.timeoutMs} ms` }), options.timeoutMs);
    if (options.signal?.aborted) return finish({ error: 'aborted' });
    options.signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('error', (err: NodeJS.ErrnoException) => finish({ error: err.code ?? err.message }));
    socket.on('close', () => finish({ error: 'connection closed' }));
    socket.on('connect', () => {
      localPort = socket.localPort;
      socket.write(encodeBindingRequest(txid));
    });
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length > 4096) return finish({ error: 'oversized response' });
      for (;;) {
        const len = stunFrameLength(buf);
        if (len === undefined || buf.length < len) return;
        const frame = buf.subarray(0, len);
        buf = buf.subarray(len);
        const res = decodeBindingResponse(frame);
        if (res?.transactionId === key) {
          return finish({
            answer: { ...res, from: { address: dest.address, port: dest.port }, rttMs: Date.now() - started, sends: 1 },
          });
        }
      }
    });
  });
}
