/**
 * A session through hard NATs in one call (direct mode: the caller did the signalling and exchanged adverts,
 * predict.ts advertiseHardNat()): the hard-punch technique (hard-punch.ts) outside a race — HardPunch (birthday.ts)
 * finds the socket and 5-tuple that work, then the checks and the Noise handshake run over exactly that socket.
 * A birthday socket that won is closed with the session. Session establishment only: never the public API.
 */
import type { DoubleRandomBudget, HardPunchResult, HardStrategy } from './birthday.js';
import { hardTechnique } from './planner.js';
import type { HardNatAdvert } from './predict.js';
import { hardPunchSession } from './hard-punch.js';
import { unknownNat } from './technique.js';
import type { UdxEndpoint } from '../net/udx.js';
import type { KeyPair } from '../session/identity.js';
import type { Session } from '../session/session.js';
import { isNatpunchError, NatpunchError } from '../util/errors.js';
import { timeoutSignal } from '../util/abort.js';
import { silentLogger, type Logger } from '../util/log.js';

/** Checks + handshake after the punch (the path is known to work by then). */
export const DEFAULT_HARD_SESSION_TIMEOUT_MS = 15_000;

export interface HardSessionOptions {
  role: 'initiator' | 'responder';
  keyPair: KeyPair;
  peerKey: Uint8Array;
  /** The same 16 bytes on both sides. */
  connectionId: Uint8Array;
  /** The socket our advert was measured on (cone / sequential sides punch from it). Not closed here. */
  endpoint: UdxEndpoint;
  local: HardNatAdvert;
  peer: HardNatAdvert;
  /** Opt-in random ↔ random budget (off by default: such pairs fail at once with PUNCH_FAILED). */
  budget?: DoubleRandomBudget;
  onEstimate?: (e: { strategy: HardStrategy; success: number; budget: DoubleRandomBudget }) => void;
  punchTimeoutMs?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
  logger?: Logger;
}

/** PUNCH_FAILED from the hard punch itself (refused up front, or nothing found within its time). */
export function isHardPunchFailure(err: unknown): err is NatpunchError {
  return isNatpunchError(err, 'PUNCH_FAILED') && err.details?.stage === 'hard-punch';
}

export async function hardSession(options: HardSessionOptions): Promise<{ session: Session; punch: HardPunchResult }> {
  const t = hardTechnique(options.local.kind, options.peer.kind, Boolean(options.budget));
  // Cone ↔ cone asks for no hard punch, but a caller may still want one: prediction aims at the srflx ports.
  const name =
    typeof t === 'string'
      ? (t as 'predict' | 'birthday' | 'double-random')
      : options.local.kind === 'random' || options.peer.kind === 'random'
        ? 'double-random'
        : 'predict';
  const { signal, dispose } = timeoutSignal(
    (options.timeoutMs ?? DEFAULT_HARD_SESSION_TIMEOUT_MS) + (options.budget?.seconds ?? 8) * 1000,
    options.signal,
  );
  try {
    const { path, punch } = await hardPunchSession(
      name,
      {
        local: options.local,
        peer: options.peer,
        ...(options.budget ? { budget: options.budget } : {}),
        ...(options.punchTimeoutMs !== undefined ? { punchTimeoutMs: options.punchTimeoutMs } : {}),
        ...(options.onEstimate ? { onEstimate: options.onEstimate } : {}),
      },
      { ...(options.timeoutMs !== undefined ? { checkTimeoutMs: Math.min(options.timeoutMs, 10_000) } : {}) },
      {
        role: options.role,
        keyPair: options.keyPair,
        peerKey: Buffer.from(options.peerKey),
        connectionId: options.connectionId,
        endpoint: options.endpoint,
        local: { candidates: [], nat: unknownNat() },
        remote: { candidates: [], nat: unknownNat() },
        signalling: null,
        logger: options.logger ?? silentLogger,
        progress: () => {},
        claim: async () => true,
        unclaim: () => {},
      },
      signal,
    );
    return { session: path.session, punch };
  } catch (err) {
    if (isNatpunchError(err, 'ABORTED') && signal.reason instanceof NatpunchError && signal.reason.code === 'TIMEOUT')
      throw signal.reason;
    throw err;
  } finally {
    dispose();
  }
}
