/**
 * Builds the outcome report (wire/rendezvous.ts REPORT) a peer sends after a connection attempt, from what the
 * attempt knows: the session's path or the error, the techniques offered, the NAT types when known. Only
 * enumerations and numbers go in: no address, no payload, no free text.
 *
 *   void rendezvous.report?.(connectionOutcome({ connectionId, role, startedAt, session }));
 */
import type { ConnectionOutcome } from './client.js';
import { isNatpunchError } from '../util/errors.js';
import {
  REPORT_NAT_TYPES,
  REPORT_TECHNIQUES,
  type ReportFailure,
  type ReportNatType,
  type ReportTechnique,
} from '../wire/rendezvous.js';

/** The parts of a session's path an outcome needs (src/session/session.ts SessionPath). */
export interface OutcomePath {
  kind?: 'lan' | 'direct' | 'relay' | string;
  transport?: 'udp' | 'tcp';
  tcpTechnique?: string;
}

export interface OutcomeInput {
  connectionId: Uint8Array;
  role: 'initiator' | 'responder';
  /** Date.now() when the attempt started (connect() called, or the introduction received). */
  startedAt: number;
  /** The established session's path, when it connected. */
  path?: OutcomePath;
  /** Why it failed, when it did. */
  error?: unknown;
  /** Techniques that took part (names from REPORT_TECHNIQUES; others count as "other"). */
  tried?: readonly string[];
  localNat?: string;
  peerNat?: string;
  /** When the first application byte arrived, if the caller knows (default: the authenticated handshake's end). */
  firstByteAt?: number;
  now?: number;
}

function nat(t: string | undefined): ReportNatType {
  return (REPORT_NAT_TYPES as readonly string[]).includes(t ?? '') ? (t as ReportNatType) : 'unknown';
}

export function techniqueName(t: string): ReportTechnique {
  return (REPORT_TECHNIQUES as readonly string[]).includes(t) ? (t as ReportTechnique) : 'other';
}

/** The technique a path was made with. */
export function winningTechnique(path: OutcomePath): ReportTechnique {
  if (path.kind === 'relay') return 'relay';
  if (path.transport === 'tcp') return techniqueName(`tcp-${path.tcpTechnique ?? 'p2pnat'}`);
  if (path.kind === 'lan') return 'lan';
  return 'udp';
}

/** A failure's reason, from natpunch's error codes. */
export function failureReason(err: unknown): ReportFailure {
  if (isNatpunchError(err)) {
    switch (err.code) {
      case 'TIMEOUT':
      case 'PUNCH_FAILED':
        return 'timeout';
      case 'ABORTED':
        return 'aborted';
      case 'HANDSHAKE_FAILED':
        return 'handshake';
      case 'PEER_NOT_FOUND':
        return 'not-found';
      case 'NOT_ALLOWED':
        return 'refused';
      case 'TURN':
      case 'TURN_FORBIDDEN_PEER':
        return 'relay-unavailable';
      default:
        return 'other';
    }
  }
  return 'other';
}

export function connectionOutcome(o: OutcomeInput): ConnectionOutcome {
  const now = o.now ?? Date.now();
  const elapsed = Math.max(0, now - o.startedAt);
  const tried = [...new Set((o.tried ?? []).map(techniqueName))];
  const connected = o.path !== undefined && o.error === undefined;
  const winner = connected ? winningTechnique(o.path!) : undefined;
  if (winner && !tried.includes(winner)) tried.push(winner);
  const reason = connected ? undefined : failureReason(o.error);
  return {
    connectionId: Buffer.from(o.connectionId),
    role: o.role,
    result: connected ? 'connected' : reason === 'aborted' ? 'aborted' : 'failed',
    path: connected ? (o.path!.kind === 'relay' ? 'relay' : 'direct') : 'none',
    localNat: nat(o.localNat),
    peerNat: nat(o.peerNat),
    winner,
    timeToConnectMs: connected ? elapsed : undefined,
    timeToFirstByteMs: connected ? Math.max(0, (o.firstByteAt ?? now) - o.startedAt) : undefined,
    tried,
    failures: connected
      ? []
      : tried.length
        ? tried.map((technique) => ({ technique, reason: reason! }))
        : [{ technique: 'other', reason: reason! }],
  };
}
