/**
 * Techniques 'predict', 'birthday' and 'double-random': the hard-NAT punch (birthday.ts HardPunch, strategies by both
 * sides' mapping kinds) finds the socket and 5-tuple that work, then checkedSession() (udp-checks.ts) runs the
 * authenticated checks and the Noise handshake over exactly that socket. A birthday socket that won is closed with
 * the session. Needs both sides' adverts (predict.ts HardNatAdvert, carried as candidates: hardwire.ts).
 */
import { HardPunch, type DoubleRandomBudget, type HardPunchResult, type HardStrategy } from './birthday.js';
import { candidatePriority, type Candidate } from './candidate.js';
import { deriveCheckKey } from './checks.js';
import type { HardNatAdvert } from './predict.js';
import { checkedSession, techniqueConnectionId, type SessionTuning } from './udp-checks.js';
import type { PathResult, Technique, TechniqueContext } from './technique.js';
import { NatpunchError } from '../util/errors.js';

export interface HardPunchSetup {
  local: HardNatAdvert;
  peer: HardNatAdvert;
  /** Opt-in random ↔ random budget. */
  budget?: DoubleRandomBudget;
  punchTimeoutMs?: number;
  onEstimate?: (e: { strategy: HardStrategy; success: number; budget: DoubleRandomBudget }) => void;
}

/** The hard punch, then checks + handshake over the socket it found; also returns what the punch did. */
export async function hardPunchSession(
  name: 'predict' | 'birthday' | 'double-random',
  setup: HardPunchSetup,
  tuning: SessionTuning,
  ctx: TechniqueContext,
  signal: AbortSignal,
  ik = name === 'predict',
): Promise<{ path: PathResult; punch: HardPunchResult }> {
  const id = techniqueConnectionId(ctx.connectionId, name);
  let punch: HardPunch;
  try {
    punch = new HardPunch({
      role: ctx.role,
      key: deriveCheckKey(id, ctx.keyPair.publicKey, ctx.peerKey),
      endpoint: ctx.endpoint,
      local: setup.local.kind,
      remote: { address: setup.peer.address, kind: setup.peer.kind, ports: setup.peer.ports },
      ...(setup.budget ? { budget: setup.budget } : {}),
      onEstimate: (e) => {
        setup.onEstimate?.(e);
        ctx.progress({
          phase: 'technique-note',
          technique: name,
          note: 'success estimate',
          detail: { strategy: e.strategy, success: e.success },
        });
      },
      ...(setup.punchTimeoutMs !== undefined ? { timeoutMs: setup.punchTimeoutMs } : {}),
      signal,
      logger: ctx.logger,
    });
  } catch (err) {
    throw punchStage(err); // refused up front (planHardPunch)
  }
  let r: HardPunchResult;
  try {
    r = await punch.run();
  } catch (err) {
    punch.close();
    throw punchStage(err);
  }
  ctx.progress({
    phase: 'technique-note',
    technique: name,
    note: 'punched',
    detail: { strategy: r.strategy, probesSent: r.probesSent },
  });
  const won = r.ownsEndpoint ? r.endpoint : null;
  const remote: Candidate[] = r.remotes.map((x) => ({
    type: 'prflx',
    transport: 'udp',
    address: x.address,
    port: x.port,
    priority: candidatePriority('prflx'),
  }));
  const path = await checkedSession({
    technique: name,
    ctx,
    endpoint: r.endpoint,
    local: [],
    remote,
    tuning,
    signal,
    // Noise IK in these checks when this is the attempt's IK technique (src/endpoint/attempt.ts ikTechnique: one
    // per attempt on the initiator; a listener answers IK wherever it comes), else XX after them.
    ik,
    release: () => {
      punch.close();
      void won?.close().catch(() => {});
    },
  });
  return { path, punch: r };
}

/** PUNCH_FAILED from the punch itself (as opposed to the checks / handshake over a punched path). */
function punchStage(err: unknown): unknown {
  if (!(err instanceof NatpunchError) || err.code !== 'PUNCH_FAILED') return err;
  return new NatpunchError('PUNCH_FAILED', err.message, {
    cause: err,
    details: { ...err.details, stage: 'hard-punch' },
  });
}

export function hardPunchTechnique(
  name: 'predict' | 'birthday' | 'double-random',
  setup: HardPunchSetup,
  tuning: SessionTuning,
  ik = name === 'predict',
): Technique {
  return {
    name,
    applies: () => true,
    run: async (ctx, signal) => (await hardPunchSession(name, setup, tuning, ctx, signal, ik)).path,
  };
}
