/**
 * The one request/response transaction engine: every STUN-style client (STUN, TURN, rendezvous) and the port-mapping
 * clients (NAT-PMP, PCP: src/portmap/common.ts udpTransaction) retransmit through it.
 *
 * RFC 8489 §6.2.1: over an unreliable transport a request is sent, then retransmitted after RTO, 2·RTO, 4·RTO, ...
 * until Rc requests have gone out; after the last one the client waits Rm·RTO and then fails the transaction.
 * §6.2.2: over a reliable transport (TCP, TLS) the request is sent once and only the caller's deadline bounds it.
 * Responses are matched to requests by transaction id (§6.3.3; the caller decides what counts as a valid answer
 * before it calls resolve()). Each caller brings its own timing: STUN uses the RFC's defaults, TURN bounds them with a
 * 10 s deadline, the rendezvous starts at 250 ms and caps the RTO (its server answers from memory).
 *
 * The table owns timers only: the caller owns the socket (`send` is a callback). close() fails what is pending.
 */
import { NatpunchError } from '../util/errors.js';

/** Per-caller retransmission timing (RFC 8489 §6.2.1). */
export interface RetransmitTiming {
  /** Initial retransmission timeout, ms (RFC: 500 ms, or an RTT estimate). */
  rtoMs: number;
  /** Requests sent at most, first included (RFC: Rc = 7). */
  rc: number;
  /** The wait after the last request is Rm × the initial RTO (RFC: Rm = 16). Absent: the next doubled RTO. */
  rm?: number;
  /** Cap on any one wait (absent: none). */
  maxRtoMs?: number;
  /** ± fraction of random jitter on each wait (RFC 6887 §8.1.1's RAND for PCP; STUN uses none). */
  jitter?: number;
}

/** RFC 8489 §6.2.1's defaults: a transaction without an answer fails after 39.5 s. */
export const RFC8489_TIMING: Readonly<RetransmitTiming> = Object.freeze({ rtoMs: 500, rc: 7, rm: 16 });

export interface TransactionOptions {
  timing: RetransmitTiming;
  /** Reliable transport (§6.2.2): one send, no retransmission, no failure by count; only `signal` ends it. */
  reliable?: boolean;
  /** Ends the transaction with its reason when that is a NatpunchError (deadlines), else with `onAbort`'s error. */
  signal?: AbortSignal;
  /** The error for a transaction that ran out of retransmissions. */
  timeoutError: (sent: number, elapsedMs: number) => Error;
  /** The error for an aborted transaction whose signal reason is not a NatpunchError. Default ABORTED. */
  abortError?: (reason: unknown) => Error;
}

export interface TransactionResult<A> {
  answer: A;
  /** From the first transmission to the answer, ms. */
  rttMs: number;
  /** Requests sent (1: the RTT sample is unambiguous, RFC 6298 §3 / Karn). */
  transmissions: number;
}

interface Pending<A> {
  resolve: (answer: A) => void;
  reject: (err: Error) => void;
}

/** The waits between sends and after the last one, ms: §6.2.1's schedule for `timing`. */
export function retransmitWaits(timing: RetransmitTiming): number[] {
  const cap = timing.maxRtoMs ?? Infinity;
  const waits: number[] = [];
  for (let sent = 1; sent <= timing.rc; sent++) {
    const doubled = Math.min(timing.rtoMs * 2 ** (sent - 1), cap);
    waits.push(sent < timing.rc || timing.rm === undefined ? doubled : Math.min(timing.rtoMs * timing.rm, cap));
  }
  return waits;
}

/** Outstanding transactions keyed by transaction id (STUN: the 96-bit id as text; rendezvous: the request id). */
export class TransactionTable<K, A> {
  readonly #pending = new Map<K, Pending<A>>();
  #closedWith: Error | null = null;

  get size(): number {
    return this.#pending.size;
  }

  has(key: K): boolean {
    return this.#pending.has(key);
  }

  /**
   * Runs one transaction: `send` now and on the retransmission schedule, until resolve(key) delivers the answer, the
   * schedule runs out (timeoutError), the signal aborts, or reject(key)/close() fails it.
   */
  run(key: K, send: () => void, options: TransactionOptions): Promise<TransactionResult<A>> {
    return new Promise<TransactionResult<A>>((resolve, reject) => {
      if (this.#closedWith) return reject(this.#closedWith);
      if (this.#pending.has(key))
        return reject(new NatpunchError('BAD_ARGUMENT', 'a transaction with this id is already running'));
      const signal = options.signal;
      const abortError = (reason: unknown): Error =>
        reason instanceof NatpunchError
          ? reason
          : (options.abortError?.(reason) ?? new NatpunchError('ABORTED', 'request aborted', { cause: reason }));
      if (signal?.aborted) return reject(abortError(signal.reason));
      const waits = options.reliable ? [] : retransmitWaits(options.timing);
      const started = performance.now();
      let sent = 0;
      let timer: NodeJS.Timeout | undefined;
      const finish = () => {
        clearTimeout(timer);
        this.#pending.delete(key);
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        finish();
        reject(abortError(signal!.reason));
      };
      const transmit = () => {
        try {
          send();
        } catch (err) {
          finish();
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        sent++;
        if (options.reliable) return;
        timer = setTimeout(
          () => {
            if (sent < waits.length) transmit();
            else {
              finish();
              reject(options.timeoutError(sent, Math.round(performance.now() - started)));
            }
          },
          options.timing.jitter
            ? waits[sent - 1]! * (1 + (Math.random() * 2 - 1) * options.timing.jitter)
            : waits[sent - 1],
        );
      };
      this.#pending.set(key, {
        resolve: (answer) => {
          finish();
          resolve({ answer, rttMs: performance.now() - started, transmissions: sent });
        },
        reject: (err) => {
          finish();
          reject(err);
        },
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      transmit();
    });
  }

  /** Delivers the answer to the transaction `key`; false when none is pending (unknown, late or duplicate). */
  resolve(key: K, answer: A): boolean {
    const p = this.#pending.get(key);
    if (!p) return false;
    p.resolve(answer);
    return true;
  }

  /** Fails the transaction `key` (e.g. a response the caller cannot accept); false when none is pending. */
  reject(key: K, err: Error): boolean {
    const p = this.#pending.get(key);
    if (!p) return false;
    p.reject(err);
    return true;
  }

  /** Fails every pending transaction for which `which` (default: all) is true. */
  rejectAll(err: Error, which: (key: K) => boolean = () => true): void {
    for (const [key, p] of [...this.#pending]) if (which(key)) p.reject(err);
  }

  /** Fails what is pending and refuses new transactions with `err`. */
  close(err: Error): void {
    this.#closedWith ??= err;
    this.rejectAll(err);
  }
}
