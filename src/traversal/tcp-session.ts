/**
 * The TCP path of connect()/listen(): our TCP side (tcp-local.ts: port P, its candidates, port Q), the punch
 * (tcp-path.ts: P2P-NAT with STUNT #2, port prediction, the sequence-number techniques) and the session's Noise
 * handshake over the punched connection (Session.establishTcp).
 */
import type { Logger } from '../util/log.js';
import type { KeyPair } from '../session/identity.js';
import { Session, type Allow, type SessionPath } from '../session/session.js';
import { candidatePriority, type Candidate } from './candidate.js';
import type { TcpPathResult } from './tcp-path.js';

export {
  openTcpLocal,
  rawSocketDenied,
  TCP_GATHER_AUTO_TIMEOUT_MS,
  TCP_GATHER_TIMEOUT_MS,
  TCP_MAPPING_REFRESH_MS,
} from './tcp-local.js';
export type { TcpLocal, TcpLocalOptions } from './tcp-local.js';
export {
  punchTcp,
  stuntOpening,
  tcpCandidatesOf,
  TCP_OPENER_HOLDBACK_MS,
  TCP_P2PNAT_BEFORE_SEQ_MS,
  TCP_SEQ_HOLDBACK_MS,
  TCP_SEQ_STEP_TIMEOUT_MS,
  TCP_SEQUENCE_MODES,
} from './tcp-path.js';
export type { TcpAttemptOptions, TcpPathResult, TcpSequenceMode } from './tcp-path.js';

export interface TcpSessionSetup {
  keyPair: KeyPair;
  peerKey: Buffer;
  allow?: Allow;
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  logger?: Logger;
  signal: AbortSignal;
  transportReason?: string;
}

/** The Noise handshake over a punched TCP connection. */
export function sessionOverTcp(
  role: 'initiator' | 'responder',
  punched: TcpPathResult,
  o: TcpSessionSetup,
): Promise<Session> {
  const c = punched.candidate;
  const remote: Candidate = {
    type: c.type ?? 'prflx',
    transport: 'tcp',
    address: c.address,
    port: c.port,
    priority: c.priority ?? candidatePriority('prflx'),
  };
  const path: Partial<SessionPath> = {
    kind: remote.type === 'host' ? 'lan' : 'direct',
    candidatePair: { local: null, remote },
    rttMs: null,
    tcpTechnique: punched.technique,
    ...(o.transportReason ? { transportReason: o.transportReason } : {}),
  };
  return Session.establishTcp({
    socket: punched.socket,
    isInitiator: role === 'initiator',
    keyPair: o.keyPair,
    ...(role === 'initiator' ? { expectedRemoteKey: o.peerKey } : {}),
    ...(o.allow !== undefined ? { allow: o.allow } : {}),
    ...(o.keepAliveMs !== undefined ? { keepAliveMs: o.keepAliveMs } : {}),
    ...(o.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
    ...(o.logger ? { logger: o.logger } : {}),
    path,
    signal: o.signal,
  });
}
