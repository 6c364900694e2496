/**
 * The TCP sequence-number techniques as one strategy with a signalling channel: connect({ transport: 'tcp' }) runs it
 * through the rendezvous (SEQ_OFFER messages), natBlaster() through a caller's exchange function.
 *
 * Both peers send their low-TTL SYN (tcp-seq.ts openSeqSyn) and publish the resulting SeqOffer. The rendezvous
 * answers whether it will spoof STUNT #1 SYN-ACKs for us (`natpunch serve --spoof`, and only when both offers name
 * the address their request came from). Which of the two techniques completes the connection is then decided the
 * same way on both sides without another round trip:
 *   - STUNT #1 when the server spoofs: we wait SEQ_PUNCH_DEFAULTS.spoofGraceMs for the spoofed SYN-ACK;
 *   - NATBlaster otherwise, or when the spoof did not come within the grace (the server spoofs only when BOTH offers
 *     were eligible, and we learn only our own eligibility): each peer sends the SYN-ACK the other waits for on a raw
 *     socket. A SYN-ACK arriving twice (spoofed and crafted) is harmless: the second is a duplicate to the kernel.
 * A peer that cannot take part (no root, no addon, no TCP server-reflexive candidate) publishes a decline instead of
 * an offer, so the other side fails at once with the reason instead of waiting for its timeout.
 */
import { NatpunchError } from '../util/errors.js';
import { sleep, timeoutSignal } from '../util/abort.js';
import { silentLogger } from '../util/log.js';
import { loadAddon } from '../net/native.js';
import type { RawSocket } from '../net/raw.js';
import {
  craftSynAck,
  openCraftSocket,
  openSeqSyn,
  parseSeqOffer,
  sendOnSchedule,
  TCP_SEQ_DEFAULTS,
  type SeqOffer,
  type SeqResult,
  type SeqSyn,
  type SeqSynOptions,
  type SeqTechnique,
} from './tcp-seq.js';

/** 'auto': STUNT #1 when the rendezvous spoofs for this connection, else NATBlaster. */
export type SeqPreference = 'auto' | SeqTechnique;

export const SEQ_PUNCH_DEFAULTS = {
  /**
   * How long after the peer's offer we wait for a spoofed SYN-ACK before sending our own. The server spoofs as soon
   * as the second offer is in, and repeats at 300 ms (TCP_SEQ_DEFAULTS.synAckScheduleMs), so one repeat fits.
   */
  spoofGraceMs: 1_000,
} as const;

/** How offers travel between the peers (the rendezvous in connect(); a caller's function in natBlaster()). */
export interface SeqChannel {
  /** Publishes our offer, or why we do not take part. Resolves with whether the server will spoof for us. */
  send(p: { offer?: SeqOffer; decline?: string }, signal: AbortSignal): Promise<{ spoofing: boolean }>;
  /** The peer's offer (validated here) or its decline. */
  receive(signal: AbortSignal): Promise<{ offer?: unknown; decline?: string }>;
}

export interface SeqPunchOptions extends SeqSynOptions {
  channel: SeqChannel;
  prefer?: SeqPreference;
  spoofGraceMs?: number;
}

/** Tells the peer we will not take part (best effort: the peer then fails at once instead of timing out). */
export async function declineSequencePunch(channel: SeqChannel, reason: string, signal: AbortSignal): Promise<void> {
  await channel.send({ decline: reason.slice(0, 200) }, signal).catch(() => undefined);
}

/** Converts our own timeout into PUNCH_FAILED (the caller's abort and explained failures pass unchanged). */
export function seqTimeoutError(
  err: unknown,
  what: string,
  timeoutMs: number,
  own: AbortSignal,
  caller?: AbortSignal,
): unknown {
  if (own.aborted && !caller?.aborted && !(err instanceof NatpunchError && err.code === 'PUNCH_FAILED')) {
    return new NatpunchError(
      'PUNCH_FAILED',
      `${what}: no connection within ${timeoutMs} ms (${(err as Error).message})`,
      {
        cause: err,
        details: { reason: 'no-syn-ack' },
      },
    );
  }
  return err;
}

/**
 * Runs STUNT #1 / NATBlaster from `localPort` to the peer at `remote` (see the module comment). Resolves with the
 * connected socket (kernel-owned, TTL restored) and the technique that completed it; rejects with PUNCH_FAILED
 * (details.reason: peer-declined | no-spoofing | mapping-mismatch | sequence-rewritten | icmp-abort | no-syn-ack),
 * NOT_ROOT / ADDON_UNAVAILABLE (after declining to the peer), TIMEOUT or ABORTED.
 */
export async function sequencePunch(options: SeqPunchOptions): Promise<SeqResult> {
  const started = Date.now();
  const prefer = options.prefer ?? 'auto';
  const log = options.logger ?? silentLogger;
  const timeoutMs = options.timeoutMs ?? TCP_SEQ_DEFAULTS.timeoutMs;
  const { signal, dispose } = timeoutSignal(timeoutMs, options.signal);
  const sending = new AbortController();
  let syn: SeqSyn | undefined;
  let raw: RawSocket | undefined;
  try {
    try {
      const addon = options.addon ?? loadAddon('TCP sequence-number techniques');
      syn = await openSeqSyn({ ...options, addon, signal });
      if (prefer !== 'stunt1') raw = openCraftSocket(addon);
    } catch (err) {
      await declineSequencePunch(options.channel, (err as Error).message, signal);
      throw err;
    }
    const { spoofing } = await options.channel.send({ offer: syn.offer }, signal);
    if (prefer === 'stunt1' && !spoofing) {
      throw new NatpunchError(
        'PUNCH_FAILED',
        'STUNT #1 needs a rendezvous that spoofs (natpunch serve --spoof) and an offer naming the address the server sees us at',
        { details: { reason: 'no-spoofing' } },
      );
    }
    const answer = await options.channel.receive(signal);
    if (answer.decline !== undefined) {
      throw new NatpunchError(
        'PUNCH_FAILED',
        `the peer does not take part in STUNT #1 / NATBlaster: ${answer.decline}`,
        { details: { reason: 'peer-declined' } },
      );
    }
    const peer = parseSeqOffer(answer.offer);
    if (peer.public.address !== options.remote.address || peer.public.port !== options.remote.port) {
      throw new NatpunchError(
        'PUNCH_FAILED',
        `the peer's offer names ${peer.public.address}:${peer.public.port} but our SYN went to ${options.remote.address}:${options.remote.port}`,
        { details: { reason: 'mapping-mismatch' } },
      );
    }
    const established = syn.established();
    established.catch(() => {});
    let technique: SeqTechnique = spoofing && prefer !== 'natblaster' ? 'stunt1' : 'natblaster';
    if (technique === 'stunt1' && prefer === 'auto') {
      const grace = sleep(options.spoofGraceMs ?? SEQ_PUNCH_DEFAULTS.spoofGraceMs, signal).then(() => false);
      const spoofed = await Promise.race([
        established.then(
          () => true,
          () => true,
        ),
        grace,
      ]);
      if (!spoofed) technique = 'natblaster';
    }
    if (technique === 'natblaster' && raw) {
      // Same 5-tuple as our SYN, so our NAT translates it like the SYN (tcp-natblaster.ts explains why).
      const packet = craftSynAck(syn.offer, peer, syn.offer.private, peer.public);
      log.debug({ isn: syn.offer.isn, peerIsn: peer.isn }, 'natblaster: sending the SYN-ACK the peer waits for');
      // The peer may still need a repeat after OUR socket is up (its SYN-ACK reached us, ours may have been lost), so
      // the bounded schedule keeps running after we return; the raw socket closes when it ends.
      const owned = raw;
      raw = undefined;
      const stop = AbortSignal.any([options.signal ?? new AbortController().signal, sending.signal]);
      void sendOnSchedule(owned, [{ packet, to: peer.public.address }], TCP_SEQ_DEFAULTS.synAckScheduleMs, stop, true)
        .catch(() => 0)
        .finally(() => owned.close());
    }
    const socket = await established;
    return {
      socket,
      offer: syn.offer,
      peerOffer: peer,
      technique,
      guarded: syn.guarded,
      elapsedMs: Date.now() - started,
    };
  } catch (err) {
    sending.abort();
    throw seqTimeoutError(
      err,
      prefer === 'auto' ? 'STUNT #1 / NATBlaster' : prefer === 'stunt1' ? 'STUNT #1' : 'NATBlaster',
      timeoutMs,
      signal,
      options.signal,
    );
  } finally {
    raw?.close();
    await syn?.close();
    dispose();
  }
}
