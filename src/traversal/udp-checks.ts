/**
 * Technique 'udp-checks' (and 'mapped', the same checks when a side's gateway mapped a port): ICE-style connectivity
 * checks (checks.ts, RFC 8445 §7) between both sides' candidates, then the Noise handshake over the first pair that
 * worked. Also the session establishment every other UDP technique ends with (checkedSession(): hard-punch.ts runs
 * it over the punched socket, relay-technique.ts over the relay's proxies) — techniques never call the public API.
 *
 * Initiator: checks until a pair works (implicit nomination: the session's first packet nominates, saving a round
 * trip), claim the race, then the handshake. Responder: checks, and a UDX stream waiting (unconnected) for the
 * initiator's first packet from an address that passed an authenticated check.
 */
import { createHash } from 'node:crypto';
import { ConnectivityChecks, deriveCheckKey, DEFAULT_CHECK_TIMEOUT_MS, type CheckResult } from './checks.js';
import type { Candidate } from './candidate.js';
import type { PathResult, Technique, TechniqueContext, TechniqueName } from './technique.js';
import type { UdxEndpoint } from '../net/udx.js';
import { Session, streamIdsFor, DEFAULT_HANDSHAKE_TIMEOUT_MS, type SessionPath } from '../session/session.js';
import { NatpunchError } from '../util/errors.js';
import type { IkReplayCache } from '../session/handshake-ik.js';
import { initiatorIk, initiatorIkSession, IkListenerAttempt } from '../session/ik-attempt.js';

/** Session knobs every technique passes on (connect()/listen() options). */
export interface SessionTuning {
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  reconnectGraceMs?: number;
  checkTimeoutMs?: number;
  /** Initiator over UDP: how to find a new path when this one dies (a fresh introduction; see Session). */
  recover?: (signal: AbortSignal) => Promise<{ address: string; port: number; path?: Partial<SessionPath> }>;
  /** Why the session runs on UDP when TCP could not even be tried (e.g. no native addon): the session reports it. */
  transportReason?: string;
  /** Noise IK in the checks (docs/handshake.md): the connector's early data; the listener's replay cache. */
  ik?: { earlyData?: Uint8Array; replay?: IkReplayCache };
}

/**
 * The connection id a technique running next to others uses for its checks and streams, so two techniques on the
 * same socket never answer each other's probes or streams ('udp-checks' keeps the introduction's id as is).
 */
export function techniqueConnectionId(connectionId: Uint8Array, technique: TechniqueName): Uint8Array {
  if (technique === 'udp-checks' || technique === 'mapped') return connectionId;
  return createHash('sha256').update(connectionId).update(`natpunch technique ${technique}`).digest().subarray(0, 16);
}

/**
 * Direct, LAN or relayed. Through a relay when either end of the nominated pair is a relayed address — or when the
 * checks ran over relayed pairs only (`viaRelay`, the relay technique): there the peer is often learned
 * peer-reflexively (RFC 8445 §7.3.1.3), from one of our relay's loopback proxies or from a relayed address it did
 * not advertise, and we may not yet know how it saw us (no localCandidate). A prflx candidate names how the address
 * was learned, not the path: such a pair still runs through the relay.
 */
export function pathKindOf(r: CheckResult, viaRelay = false): SessionPath['kind'] {
  if (viaRelay || r.remoteCandidate.type === 'relay' || r.localCandidate?.type === 'relay') return 'relay';
  return r.kind;
}

export function pathOf(r: CheckResult, viaRelay = false): Partial<SessionPath> {
  return {
    kind: pathKindOf(r, viaRelay),
    candidatePair: { local: r.localCandidate, remote: r.remoteCandidate },
    rttMs: r.rttMs,
  };
}

/** Why the session runs over UDP when TCP was raced too (session.path.transportReason). */
function reasonOf(ctx: TechniqueContext, tuning: SessionTuning): { transportReason?: string } {
  if (tuning.transportReason) return { transportReason: tuning.transportReason };
  return ctx.local.nat.tcp && ctx.remote.nat.tcp
    ? { transportReason: 'UDP found a path first (preferred over TCP)' }
    : {};
}

export interface CheckedSessionOptions {
  technique: TechniqueName;
  ctx: TechniqueContext;
  /** The socket to check and run the session on (the Endpoint's, or a birthday socket). */
  endpoint: UdxEndpoint;
  local: Candidate[];
  remote: Candidate[];
  tuning: SessionTuning;
  signal: AbortSignal;
  /** Resources the session needs (released once when it closes, or by the race if it lost). */
  release?: () => void;
  /** Every pair checked goes through a relay (the relay technique): the path is relayed whatever the pair's types. */
  viaRelay?: boolean;
  /**
   * Run Noise IK inside the checks (docs/handshake.md; XX after them stays the fallback). Only the one technique of
   * a plan that starts at once uses it: an IK handshake completes inside the checks, before the race's claim, so
   * two IK techniques could leave the two sides holding different sessions.
   */
  ik?: boolean;
}

function toResult(o: CheckedSessionOptions, session: Session): PathResult {
  const p = session.path;
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    o.release?.();
  };
  session.once('close', release);
  return {
    technique: o.technique,
    session,
    kind: p.kind === 'relay' ? 'relay' : p.kind === 'lan' ? 'lan' : 'direct',
    transport: 'udp',
    local: p.local,
    remote: p.remote,
    release,
  };
}

/** Checks, then the Noise handshake on the first pair that worked (either role). */
export async function checkedSession(o: CheckedSessionOptions): Promise<PathResult> {
  const { ctx, tuning } = o;
  const id = techniqueConnectionId(ctx.connectionId, o.technique);
  const ids = streamIdsFor(id);
  const initiatorIkState =
    o.ik && ctx.role === 'initiator'
      ? initiatorIk({
          keyPair: ctx.keyPair,
          peerKey: ctx.peerKey,
          connectionId: id,
          ...(tuning.ik?.earlyData ? { earlyData: tuning.ik.earlyData } : {}),
        })
      : null;
  const listenerIk =
    o.ik && ctx.role === 'responder' && tuning.ik?.replay
      ? new IkListenerAttempt({
          keyPair: ctx.keyPair,
          connectionId: id,
          peerKey: ctx.peerKey,
          replay: tuning.ik.replay,
          ...(ctx.allow !== undefined ? { allow: ctx.allow } : {}),
        })
      : null;
  const handshake = initiatorIkState ?? listenerIk?.handshake;
  const checks = new ConnectivityChecks({
    ...(handshake ? { handshake } : {}),
    transport: o.endpoint,
    role: ctx.role,
    connectionId: id,
    key: deriveCheckKey(id, ctx.keyPair.publicKey, ctx.peerKey),
    local: o.local,
    remote: o.remote,
    nomination: 'implicit',
    signal: o.signal,
    logger: ctx.logger,
    ...(tuning.checkTimeoutMs !== undefined ? { timeoutMs: tuning.checkTimeoutMs } : {}),
  });
  const common = {
    endpoint: o.endpoint,
    keyPair: ctx.keyPair,
    ...(tuning.keepAliveMs !== undefined ? { keepAliveMs: tuning.keepAliveMs } : {}),
    ...(tuning.idleTimeoutMs !== undefined ? { idleTimeoutMs: tuning.idleTimeoutMs } : {}),
    ...(tuning.reconnectGraceMs !== undefined ? { reconnectGraceMs: tuning.reconnectGraceMs } : {}),
    ownsEndpoint: false,
    logger: ctx.logger,
    signal: o.signal,
  };
  try {
    if (ctx.role === 'initiator') {
      const r = await checks.run();
      // Message 2 came back: the responder committed to this pair (docs/handshake.md, "Path choice with IK").
      const decided = initiatorIkState?.state.state === 'complete';
      if (!(await ctx.claim(decided))) throw new NatpunchError('ABORTED', 'another technique won');
      try {
        const path = { ...pathOf(r, o.viaRelay), ...reasonOf(ctx, tuning) };
        // IK completed inside the checks: the session is up already; else (an older or declining peer) XX now.
        const ik = initiatorIkState
          ? initiatorIkSession(initiatorIkState, {
              ...common,
              connectionId: id,
              peerKey: ctx.peerKey,
              remote: r.remote,
              path,
              ...(tuning.recover ? { recover: tuning.recover } : {}),
            })
          : null;
        const session =
          ik ??
          (await Session.establish({
            ...common,
            isInitiator: true,
            remote: r.remote,
            localStreamId: ids.initiator,
            remoteStreamId: ids.responder,
            expectedRemoteKey: ctx.peerKey,
            path,
            ...(tuning.recover ? { recover: tuning.recover } : {}),
          }));
        return toResult(o, session);
      } catch (err) {
        ctx.unclaim();
        throw err;
      }
    }
    const xx = new AbortController();
    const udx = o.endpoint.acceptStream(ids.responder, ids.initiator, (address, port) =>
      checks.isValidated(address, port),
    );
    let result: CheckResult | null = null;
    udx.once('connect', () => {
      result = checks.select(udx.remoteHost!, udx.remotePort);
    });
    const checksDone = checks.run().then(
      (r) => {
        const s = listenerIk?.session({ ...common, path: { ...pathOf(r, o.viaRelay), ...reasonOf(ctx, tuning) } });
        return s ?? new Promise<never>(() => {}); // XX: the session comes from Session.establish below
      },
      (err: unknown) => {
        udx.destroy();
        throw err;
      },
    );
    const session = Session.establish({
      ...common,
      isInitiator: false,
      udxStream: udx,
      localStreamId: ids.responder,
      remoteStreamId: ids.initiator,
      ...(ctx.allow !== undefined ? { allow: ctx.allow } : {}),
      handshakeTimeoutMs: (tuning.checkTimeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS) + DEFAULT_HANDSHAKE_TIMEOUT_MS,
      path: () =>
        result
          ? { ...pathOf(result, o.viaRelay), ...reasonOf(ctx, tuning) }
          : o.viaRelay
            ? { kind: 'relay' as const }
            : {},
      signal: AbortSignal.any([o.signal, xx.signal]),
    });
    const won = await Promise.race([session, checksDone, ...(listenerIk ? [listenerIk.refused] : [])]);
    if (won.handshakePattern === 'IK') {
      xx.abort(new NatpunchError('ABORTED', 'the session runs on Noise IK'));
      udx.destroy();
    }
    return toResult(o, won);
  } catch (err) {
    checks.close();
    o.release?.();
    throw err;
  }
}

/** The plain checks between both sides' candidates on the Endpoint's socket. */
export function udpChecksTechnique(name: 'udp-checks' | 'mapped', tuning: SessionTuning, ik = true): Technique {
  return {
    name,
    applies: () => true,
    run: (ctx, signal) =>
      checkedSession({
        technique: name,
        ctx,
        endpoint: ctx.endpoint,
        local: ctx.local.candidates.filter(
          (c) => c.transport === 'udp' && c.type !== 'relay' && c.type !== 'predicted',
        ),
        remote: ctx.remote.candidates.filter(
          (c) => c.transport === 'udp' && c.type !== 'relay' && c.type !== 'predicted',
        ),
        tuning,
        signal,
        ik,
      }),
  };
}
