/**
 * A connection attempt with no introduction: the rendezvous never answered (or none was given). There are no
 * candidates and no NAT views, so the planner (planner.ts, `rendezvous: false`) can offer only what needs none of
 * them — ICMP hole punching (icmp-technique.ts) when the caller allows it — and the race (race.ts) runs that plan as
 * it runs every other: technique-start/-end progress, one 'path' event, an error that says what was tried.
 *
 * Ownership: the socket bound on the agreed port is this attempt's until a session wins; the session owns it then
 * (closing the session releases the port). On failure it is closed here.
 */
import { UdxEndpoint } from '../net/udx.js';
import type { Session } from '../session/session.js';
import type { KeyPair } from '../session/identity.js';
import { keyToId } from '../session/identity.js';
import { NatpunchError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { candidatePriority, type Candidate } from './candidate.js';
import { ALL_ON, plan, type Plan } from './planner.js';
import { race } from './race.js';
import { unknownNat, type TechniqueEvent, type TechniqueName } from './technique.js';

/** Progress of an attempt without a rendezvous: the same shapes as the Endpoint's (endpoint/types.ts Progress). */
export type NoRendezvousProgress =
  | TechniqueEvent
  | { phase: 'punching'; pairs: number; plan: Array<{ technique: TechniqueName; holdMs: number }> }
  | {
      phase: 'path';
      kind: 'direct';
      remote: { address: string; port: number };
      local: { address: string; port: number };
      transport: 'udp';
      traversal: TechniqueName;
      type: string;
      rttMs: number | null;
    }
  | { phase: 'connected'; peer: string; rttMs: number | null };

export interface NoRendezvousOptions {
  keyPair: KeyPair;
  /**
   * ICMP hole punching, when the caller allows it (absent: not allowed): the peer's public address and the key it
   * must prove (null: any key), and the knobs of icmp-technique.ts.
   */
  icmp?: {
    server: string;
    peerKey: Uint8Array | null;
    port?: number;
    probeAddress?: string;
    source?: string;
    timeoutMs?: number;
    /** Local address of the socket on the agreed port. Default 0.0.0.0. */
    bindAddress?: string;
  };
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  logger: Logger;
  onProgress?: (p: NoRendezvousProgress) => void;
}

/** What the planner allows without an introduction (steps empty: nothing; the caller reports its own error). */
export function planWithoutRendezvous(icmpAllowed: boolean): Plan {
  return plan(unknownNat(), unknownNat(), { ...ALL_ON, icmp: icmpAllowed, rendezvous: false });
}

/**
 * Runs the planner's no-rendezvous plan; resolves with the session, or with null when the plan is empty (the caller
 * then throws why the rendezvous failed). Rejects with the race's error when every step failed.
 */
export async function connectWithoutRendezvous(o: NoRendezvousOptions): Promise<Session | null> {
  const p = planWithoutRendezvous(o.icmp !== undefined);
  if (p.steps.length === 0 || !o.icmp) return null;
  o.logger.info({ plan: p.steps.map((s) => s.technique), server: o.icmp.server }, 'no rendezvous: plan');
  const { icmpTechnique } = await import('./icmp-technique.js');
  const { DEFAULT_ICMP_PUNCH_PORT, ICMP_CONNECTION_ID } = await import('./icmp.js');
  const port = o.icmp.port ?? DEFAULT_ICMP_PUNCH_PORT;
  const signal = o.signal ?? new AbortController().signal;
  const endpoint = await UdxEndpoint.bind({ address: o.icmp.bindAddress ?? '0.0.0.0', port });
  const remote: Candidate = {
    type: 'icmp',
    transport: 'udp',
    address: o.icmp.server,
    port,
    priority: candidatePriority('icmp'),
  };
  o.onProgress?.({
    phase: 'punching',
    pairs: 1,
    plan: p.steps.map((s) => ({ technique: s.technique, holdMs: s.holdMs })),
  });
  try {
    const won = await race({
      plan: p,
      techniques: new Map([
        [
          'icmp',
          icmpTechnique({
            server: o.icmp.server,
            peerKey: o.icmp.peerKey,
            port,
            ...(o.icmp.probeAddress !== undefined ? { probeAddress: o.icmp.probeAddress } : {}),
            ...(o.icmp.source !== undefined ? { source: o.icmp.source } : {}),
            ...(o.icmp.timeoutMs !== undefined ? { timeoutMs: o.icmp.timeoutMs } : {}),
            ...(o.keepAliveMs !== undefined ? { keepAliveMs: o.keepAliveMs } : {}),
            ...(o.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
          }),
        ],
      ]),
      ctx: {
        role: 'initiator',
        keyPair: o.keyPair,
        // Without an introduction there is no peer key to carry here; the icmp technique checks its own (peerKey).
        peerKey: Buffer.from(o.icmp.peerKey ?? []),
        connectionId: ICMP_CONNECTION_ID,
        endpoint,
        local: { candidates: [], nat: unknownNat() },
        remote: { candidates: [remote], nat: unknownNat([remote]) },
        signalling: null,
        logger: o.logger,
        progress: (e) => o.onProgress?.(e),
      },
      signal,
      advice: [
        'a reachable rendezvous (natpunch serve) gives every other technique a chance',
        "ICMP needs the peer's NAT to forward ICMP Time Exceeded for its echo requests (docs/traversal.md)",
      ],
    });
    const session = won.session;
    o.onProgress?.({
      phase: 'path',
      kind: 'direct',
      remote: session.path.remote,
      local: session.path.local,
      transport: 'udp',
      traversal: won.technique,
      type: session.path.candidatePair?.remote?.type ?? 'icmp',
      rttMs: session.path.rttMs,
    });
    o.onProgress?.({ phase: 'connected', peer: keyToId(session.remotePublicKey), rttMs: session.path.rttMs });
    return session;
  } catch (err) {
    await endpoint.close().catch(() => {});
    if (err instanceof NatpunchError) throw err;
    throw new NatpunchError('PUNCH_FAILED', `ICMP hole punching failed: ${(err as Error).message}`, { cause: err });
  }
}
