/**
 * STUNT #1 (Guha & Francis, "Characterization and Measurement of TCP Traversal through NATs and Firewalls", IMC 2005
 * §3): both peers send a low-TTL SYN (tcp-seq.ts) and tell the rendezvous server their SeqOffers; the server, which
 * can spoof source addresses, sends each peer the SYN-ACK the other peer would have sent, with the other peer's public
 * endpoint as source. It arrives at our NAT in the reply direction of the flow our SYN opened (a SYN-ACK answering a
 * SYN: every NAT accepts that), each kernel answers with an ACK and both sockets are ESTABLISHED.
 *
 * Spoofing needs a server on a network without source-address validation (BCP 38 / RFC 2827 filtering stops it on
 * most of the Internet), root for the raw socket, and trust: the server can inject SYN-ACKs. natpunch ships it as an
 * opt-in lab/research capability (`natpunch serve --spoof`), off by default.
 */
import { timeoutSignal } from '../util/abort.js';
import { loadAddon, type NativeAddon } from '../net/native.js';
import type { RawSocket } from '../net/raw.js';
import { seqTimeoutError } from './tcp-seqpunch.js';
import {
  craftSynAck,
  openCraftSocket,
  openSeqSyn,
  parseSeqOffer,
  sendOnSchedule,
  TCP_SEQ_DEFAULTS,
  type SeqOffer,
  type SeqResult,
  type SeqSynOptions,
} from './tcp-seq.js';

export interface Stunt1Options extends SeqSynOptions {
  /** Hands our offer to the spoofing server (with whatever identifies the pairing); resolves once delivered. */
  exchange: (offer: SeqOffer, signal: AbortSignal) => Promise<unknown>;
}

/** STUNT #1, peer side: resolves with the connected socket, or rejects like natBlaster(). */
export async function stunt1(options: Stunt1Options): Promise<SeqResult> {
  const started = Date.now();
  const addon = options.addon ?? loadAddon('STUNT #1');
  const { signal, dispose } = timeoutSignal(options.timeoutMs ?? TCP_SEQ_DEFAULTS.timeoutMs, options.signal);
  const syn = await openSeqSyn({ ...options, addon, signal });
  try {
    await options.exchange(syn.offer, signal);
    const socket = await syn.established();
    return { socket, offer: syn.offer, technique: 'stunt1', guarded: syn.guarded, elapsedMs: Date.now() - started };
  } catch (err) {
    throw seqTimeoutError(err, 'STUNT #1', options.timeoutMs ?? TCP_SEQ_DEFAULTS.timeoutMs, signal, options.signal);
  } finally {
    await syn.close();
    dispose();
  }
}

/**
 * The server side of STUNT #1: spoofs, for a pair of offers, the SYN-ACK each peer waits for (source = the other
 * peer's public endpoint, destination = its own public endpoint). Owns one raw socket; close() releases it.
 */
export class SynAckSpoofer {
  #raw: RawSocket;

  private constructor(raw: RawSocket) {
    this.#raw = raw;
  }

  /** NOT_ROOT without CAP_NET_RAW. */
  static open(options: { addon?: NativeAddon } = {}): SynAckSpoofer {
    return new SynAckSpoofer(openCraftSocket(options.addon ?? loadAddon('STUNT #1 spoofing')));
  }

  /** The two spoofed packets for a pair (exposed for tests and inspection). */
  static packets(a: SeqOffer, b: SeqOffer): Array<{ packet: Buffer; to: string }> {
    return [
      { packet: craftSynAck(b, a, b.public, a.public), to: a.public.address },
      { packet: craftSynAck(a, b, a.public, b.public), to: b.public.address },
    ];
  }

  /** Sends both SYN-ACKs on the bounded schedule (TCP_SEQ_DEFAULTS.synAckScheduleMs). Returns packets sent. */
  async spoof(
    a: unknown,
    b: unknown,
    options: { signal?: AbortSignal; scheduleMs?: readonly number[] } = {},
  ): Promise<number> {
    const pa = parseSeqOffer(a);
    const pb = parseSeqOffer(b);
    const { signal, dispose } = timeoutSignal(
      10_000 + (options.scheduleMs ?? TCP_SEQ_DEFAULTS.synAckScheduleMs).at(-1)!,
      options.signal,
    );
    try {
      return await sendOnSchedule(
        this.#raw,
        SynAckSpoofer.packets(pa, pb),
        options.scheduleMs ?? TCP_SEQ_DEFAULTS.synAckScheduleMs,
        signal,
        true,
      );
    } finally {
      dispose();
    }
  }

  close(): void {
    this.#raw.close();
  }
}
