/**
 * NATBlaster (Biggadike, Ferullo, Wilson, Perrig, "NATBLASTER: Establishing TCP Connections Between Hosts Behind
 * NATs", ACM SIGCOMM Asia Workshop 2005; Guha & Francis IMC 2005 §3): both peers send a low-TTL SYN (tcp-seq.ts),
 * exchange their SeqOffers (ISN, SYN options, public endpoint) through the rendezvous, and each sends on a raw socket
 * the SYN-ACK the OTHER kernel is waiting for: seq = own ISN, ack = other ISN + 1 (tcp-seqpunch.ts runs it).
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
import { sequencePunch } from './tcp-seqpunch.js';
import type { SeqOffer, SeqResult, SeqSynOptions } from './tcp-seq.js';

export interface NatBlasterOptions extends SeqSynOptions {
  /** Publishes our offer to the peer and returns the peer's (e.g. through the rendezvous server). Bounded by timeoutMs. */
  exchange: (offer: SeqOffer, signal: AbortSignal) => Promise<unknown>;
}

/**
 * NATBlaster from `localPort` to the peer at `remote`. Resolves with the connected socket (which the kernel owns,
 * TTL restored) or rejects with PUNCH_FAILED (details.reason: sequence-rewritten | icmp-abort | no-syn-ack |
 * mapping-mismatch), NOT_ROOT (raw sockets, packet capture), TIMEOUT or ABORTED.
 */
export function natBlaster(options: NatBlasterOptions): Promise<SeqResult> {
  let peer: Promise<unknown> = Promise.reject(new Error('no offer sent'));
  peer.catch(() => {});
  return sequencePunch({
    ...options,
    prefer: 'natblaster',
    channel: {
      send: async ({ offer }, signal) => {
        if (offer) peer = options.exchange(offer, signal);
        return { spoofing: false };
      },
      receive: async () => ({ offer: await peer }),
    },
  });
}
