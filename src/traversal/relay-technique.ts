/**
 * Technique 'relay': the checks and the session through a relay (TURN, RFC 8656, or the rendezvous' peer relay),
 * still end-to-end encrypted (the relay sees only ciphertext). Pairs: our socket → the peer's relayed address, and,
 * with our own allocation, our relay proxies (relay/path.ts) → each of the peer's addresses. Both sides install
 * permissions for the other's addresses on their own allocation (RFC 8656 §9) before checking.
 *
 * The allocation belongs to the Endpoint (shared by its sessions), never to this technique.
 */
import type { RelayPath } from '../relay/path.js';
import { checkedSession, type SessionTuning } from './udp-checks.js';
import type { PathResult, Technique } from './technique.js';
import { NatpunchError } from '../util/errors.js';

/** `relay`: our allocation when the technique runs (it may still be under way when the plan is made). */
export function relayTechnique(
  relay: (signal: AbortSignal) => Promise<RelayPath | null>,
  tuning: SessionTuning,
): Technique {
  return {
    name: 'relay',
    applies: (local, remote) => (local.relay || remote.relay ? true : { skip: 'neither side has a relay allocation' }),
    async run(ctx, signal): Promise<PathResult> {
      const peerUdp = ctx.remote.candidates.filter((c) => c.transport === 'udp' && c.type !== 'predicted');
      const remote = peerUdp.filter((c) => c.type === 'relay');
      const ours = await relay(signal);
      const usable = ours && !ours.closed ? ours : null;
      if (usable) {
        const permitted = await usable.permit(peerUdp, signal);
        remote.push(...(await usable.proxied(peerUdp, permitted)));
      }
      if (remote.length === 0) {
        throw new NatpunchError(
          'PUNCH_FAILED',
          usable ? 'the relay refused permissions for every peer address' : 'no relay candidate on either side',
        );
      }
      const local = ctx.local.candidates.filter((c) => c.transport === 'udp' && c.type !== 'predicted');
      if (usable && !local.some((c) => c.type === 'relay')) local.push(usable.candidate());
      // Every pair here runs through a relay (ours via its proxies, or the peer's relayed address), even when the
      // checks learn the peer peer-reflexively: the session's path is 'relay'.
      return checkedSession({
        technique: 'relay',
        ctx,
        endpoint: ctx.endpoint,
        local,
        remote,
        tuning,
        signal,
        viaRelay: true,
      });
    },
  };
}
