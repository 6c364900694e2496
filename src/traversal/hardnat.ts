/**
 * A session through hard NATs in one call (direct mode: the caller did the signalling and exchanged adverts,
 * predict.ts advertiseHardNat()): HardPunch (birthday.ts) finds the socket and 5-tuple that work, then connect() /
 * listen() run their authenticated checks and the Noise handshake over exactly that socket, so the winner carries
 * the session. A birthday socket that won is closed with the session.
 */
import type { Candidate } from './candidate.js';
import { candidatePriority } from './candidate.js';
import { deriveCheckKey } from './checks.js';
import { HardPunch, type DoubleRandomBudget, type HardPunchResult, type HardStrategy } from './birthday.js';
import type { HardNatAdvert } from './predict.js';
import { connect, listen, type ListenOptions } from '../natpunch.js';
import type { UdxEndpoint } from '../net/udx.js';
import type { KeyPair } from '../session/identity.js';
import type { Session } from '../session/session.js';
import { isNatpunchError, NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';

/** Checks + handshake after the punch (the path is known to work by then). */
export const DEFAULT_HARD_SESSION_TIMEOUT_MS = 15_000;

export interface HardSessionOptions {
  role: 'initiator' | 'responder';
  keyPair: KeyPair;
  peerKey: Uint8Array;
  /** The same 16 bytes on both sides. */
  connectionId: Uint8Array;
  /** Responder: the parent listener's Noise IK replay cache (docs/handshake.md), so a replay is one everywhere. */
  replayCache?: ListenOptions['replayCache'];
  /** Initiator: early data for Noise IK message 1 (ConnectOptions.earlyData). */
  earlyData?: Uint8Array;
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

/**
 * PUNCH_FAILED from the hard punch itself (refused up front, e.g. random ↔ random without a budget, or nothing found
 * within its time), as opposed to the checks / handshake over a punched path: connect() and the listener fall back
 * to the normal attempt (through a TURN relay) on these only.
 */
export function isHardPunchFailure(err: unknown): err is NatpunchError {
  return isNatpunchError(err, 'PUNCH_FAILED') && err.details?.stage === 'hard-punch';
}

function punchStage(err: unknown): unknown {
  if (!isNatpunchError(err, 'PUNCH_FAILED')) return err;
  return new NatpunchError('PUNCH_FAILED', err.message, { cause: err, details: { ...err.details, stage: 'hard-punch' } });
}

export async function hardSession(options: HardSessionOptions): Promise<{ session: Session; punch: HardPunchResult }> {
  const logger = options.logger ?? silentLogger;
  let punch: HardPunch;
  try {
    punch = new HardPunch({
      role: options.role,
      key: deriveCheckKey(options.connectionId, options.keyPair.publicKey, options.peerKey),
      endpoint: options.endpoint,
      local: options.local.kind,
      remote: { address: options.peer.address, kind: options.peer.kind, ports: options.peer.ports },
      ...(options.budget ? { budget: options.budget } : {}),
      ...(options.onEstimate ? { onEstimate: options.onEstimate } : {}),
      ...(options.punchTimeoutMs !== undefined ? { timeoutMs: options.punchTimeoutMs } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      logger,
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
  const won = r.ownsEndpoint ? r.endpoint : null;
  const candidates: Candidate[] = r.remotes.map((x) => ({ type: 'prflx', transport: 'udp', address: x.address, port: x.port, priority: candidatePriority('prflx') }));
  const timeoutMs = options.timeoutMs ?? DEFAULT_HARD_SESSION_TIMEOUT_MS;
  try {
    let session: Session;
    if (options.role === 'initiator') {
      session = await connect({
        keyPair: options.keyPair, endpoint: r.endpoint, connectionId: options.connectionId,
        peer: { publicKey: options.peerKey, candidates }, timeoutMs, logger, ...(options.signal ? { signal: options.signal } : {}),
        ...(options.earlyData ? { earlyData: options.earlyData } : {}),
      });
      session.once('close', () => {
        punch.close();
        void won?.close().catch(() => {});
      });
    } else {
      const listener = await listen({
        keyPair: options.keyPair, endpoint: r.endpoint, allow: [Buffer.from(options.peerKey)], logger, ...(options.replayCache ? { replayCache: options.replayCache } : {}),
      });
      const accepted = await listener.acceptOffer({ connectionId: Buffer.from(options.connectionId), role: 'responder', peerKey: Buffer.from(options.peerKey), candidates });
      if (!accepted) {
        await listener.close();
        throw new NatpunchError('HANDSHAKE_FAILED', 'hard-punched path found, but no session came up over it');
      }
      session = accepted;
      session.once('close', () => {
        punch.close();
        void listener.close().finally(() => won?.close().catch(() => {}));
      });
    }
    return { session, punch: r };
  } catch (err) {
    punch.close();
    await won?.close().catch(() => {});
    throw err;
  }
}
