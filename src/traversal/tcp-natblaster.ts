/**
 * NATBlaster (Biggadike, Ferullo, Wilson, Perrig, "NATBLASTER: Establishing TCP Connections Between Hosts Behind
 * NATs", ACM SIGCOMM Asia Workshop 2005; Guha & Francis IMC 2005 §3): both peers send a low-TTL SYN (tcp-seq.ts),
 * exchange their SeqOffers (ISN, SYN options, public endpoint) through the rendezvous, and each sends on a raw socket
 * the SYN-ACK the OTHER kernel is waiting for: seq = own ISN, ack = other ISN + 1.
 *
 * Which addresses the crafted SYN-ACK carries: it must reach the peer's NAT as if from our public endpoint, i.e. it
 * must be translated by OUR NAT as part of the flow our SYN opened. So it carries our SYN's own source (private
 * address and port) and the peer's public endpoint as destination — the same 5-tuple as our SYN — and our NAT
 * rewrites the source exactly as it did for the SYN. Spoofing our NAT's public address instead does not work: a
 * Linux router drops packets arriving with one of its own addresses as source (martian, unless accept_local).
 * Whether our NAT translates it at all is the NAT's business: Linux conntrack classifies a SYN-ACK in the original
 * direction of an entry in SYN_SENT as INVALID ("client can't send SYN and then SYN/ACK"), and an invalid packet is
 * not NATed — it leaves with the private source and dies. So NATBlaster needs a NAT that forwards (translates) an
 * outbound SYN-ACK after an outbound SYN; the lab models both kinds (src/lab/nat.ts `outboundSynAck`).
 *
 * The local kernel never sees the crafted packet (raw sockets send straight to the IP layer), so it does not answer
 * it; the peer's ACK arriving before our own SYN-ACK is silently dropped by our SYN_SENT socket (RFC 9293 §3.10.7.3:
 * an ACK without SYN in SYN-SENT is discarded when acceptable), so nothing sends RST.
 */
import type net from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { timeoutSignal } from '../util/abort.js';
import { silentLogger } from '../util/log.js';
import { loadAddon } from '../net/native.js';
import type { RawSocket } from '../net/raw.js';
import { craftSynAck, openCraftSocket, openSeqSyn, parseSeqOffer, sendOnSchedule, TCP_SEQ_DEFAULTS, type SeqOffer, type SeqSynOptions } from './tcp-seq.js';

export interface NatBlasterOptions extends SeqSynOptions {
  /** Publishes our offer to the peer and returns the peer's (e.g. through the rendezvous server). Bounded by timeoutMs. */
  exchange: (offer: SeqOffer, signal: AbortSignal) => Promise<unknown>;
}

export interface SeqResult {
  socket: net.Socket;
  offer: SeqOffer;
  peerOffer?: SeqOffer;
  guarded: boolean;
  elapsedMs: number;
}

/**
 * NATBlaster from `localPort` to the peer at `remote`. Resolves with the connected socket (which the kernel owns,
 * TTL restored) or rejects with PUNCH_FAILED (details.reason: sequence-rewritten | icmp-abort | no-syn-ack |
 * mapping-mismatch), NOT_ROOT (raw sockets, packet capture), TIMEOUT or ABORTED.
 */
export async function natBlaster(options: NatBlasterOptions): Promise<SeqResult> {
  const started = Date.now();
  const addon = options.addon ?? loadAddon('NATBlaster');
  const log = options.logger ?? silentLogger;
  const { signal, dispose } = timeoutSignal(options.timeoutMs ?? TCP_SEQ_DEFAULTS.timeoutMs, options.signal);
  let raw: RawSocket | undefined;
  const syn = await openSeqSyn({ ...options, addon, signal });
  const sending = new AbortController();
  try {
    raw = openCraftSocket(addon);
    const peer = parseSeqOffer(await options.exchange(syn.offer, signal));
    if (peer.public.address !== options.remote.address || peer.public.port !== options.remote.port) {
      throw new NatpunchError(
        'PUNCH_FAILED',
        `the peer's offer names ${peer.public.address}:${peer.public.port} but our SYN went to ${options.remote.address}:${options.remote.port}`,
        { details: { reason: 'mapping-mismatch' } },
      );
    }
    // Same 5-tuple as our SYN, so our NAT translates it like the SYN (see the module comment).
    const packet = craftSynAck(syn.offer, peer, syn.offer.private, peer.public);
    log.debug({ isn: syn.offer.isn, peerIsn: peer.isn }, 'natblaster: sending the SYN-ACK the peer waits for');
    // The peer may still need a repeat after OUR socket is up (its SYN-ACK reached us, ours may have been lost), so
    // the bounded schedule keeps running after we return; the raw socket closes when it ends.
    const owned = raw;
    raw = undefined;
    void sendOnSchedule(owned, [{ packet, to: peer.public.address }], TCP_SEQ_DEFAULTS.synAckScheduleMs, AbortSignal.any([options.signal ?? new AbortController().signal, sending.signal]), true)
      .catch(() => 0)
      .finally(() => owned.close());
    const socket = await syn.established();
    return { socket, offer: syn.offer, peerOffer: peer, guarded: syn.guarded, elapsedMs: Date.now() - started };
  } catch (err) {
    sending.abort();
    if (signal.aborted && !options.signal?.aborted && !(err instanceof NatpunchError && err.code === 'PUNCH_FAILED')) {
      throw new NatpunchError('PUNCH_FAILED', `NATBlaster: no connection within ${options.timeoutMs ?? TCP_SEQ_DEFAULTS.timeoutMs} ms (${(err as Error).message})`, {
        cause: err,
        details: { reason: 'no-syn-ack' },
      });
    }
    throw err;
  } finally {
    raw?.close();
    await syn.close();
    dispose();
  }
}
