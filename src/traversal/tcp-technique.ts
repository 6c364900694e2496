/**
 * TCP hole punching as one Technique (technique.ts) for the planner's race: P2P-NAT with port prediction and STUNT #2,
 * and the sequence-number techniques (STUNT #1, NATBlaster) beside it on their own port, in the order and with the
 * hold-backs tcp-path.ts gives. They are one technique, not three, because they share port P, the peer's candidates
 * and one nomination (the initiator must pick exactly one TCP connection for both sides), and because the order
 * among them follows from the two NATs' TCP behaviour, which only the TCP candidates carry (docs/tcp.md).
 *
 * The Endpoint owns the TCP side (tcp-local.ts: port P, port Q, their STUN connections) and hands it in through
 * `local()`; this module never opens or closes it. It must call TcpLocal.predict() right before it sends its
 * candidates, so the predicted window of a sequential NAT starts after its latest allocation.
 */
import { sleep } from '../util/abort.js';
import { NatpunchError } from '../util/errors.js';
import type { Candidate } from './candidate.js';
import type { Applicability, NatView, PathResult, Technique, TechniqueContext } from './technique.js';
import { punchTcp, tcpCandidatesOf, type TcpSequenceMode } from './tcp-path.js';
import type { TcpLocal } from './tcp-local.js';
import type { SeqChannel } from './tcp-seqpunch.js';
import { sessionOverTcp } from './tcp-session.js';

export interface TcpTechniqueOptions {
  /** The Endpoint's TCP side, or null when it has none (no native addon, transport 'udp'). */
  local(): TcpLocal | null;
  /** STUNT #1 / NATBlaster: 'auto' (default), 'off', or one technique by name (`--tcp-seq`). */
  sequence?: TcpSequenceMode;
  /** The channel carrying SEQ_OFFER messages for this connection (the rendezvous'), or null in direct mode. */
  sequenceChannel?(ctx: TechniqueContext): SeqChannel | null;
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  /** Local clock time both sides start at (the rendezvous' schedule from both RTTs): TCP simultaneous open needs
   *  both SYNs in flight together (RFC 9293 §3.5), unlike the UDP techniques, which punch on introduction. */
  startAt?: number;
}

/** Never wait longer than this for the rendezvous' scheduled start time. */
export const MAX_START_DELAY_MS = 5_000;

/**
 * Whether TCP punching can work between these two sides (decided from the NAT views alone, the same on both sides):
 * it needs TCP on both, and one side whose NAT maps endpoint-independently ('cone', or 'unknown', which costs one
 * failed attempt at worst). Two NATs that both map per destination leave no port to aim at: TCP has no birthday
 * punch (every SYN needs an answer from a listening or connecting socket), which is the UDP hard-NAT technique's job.
 */
export function tcpApplies(local: NatView, remote: NatView): Applicability {
  if (!local.tcp) return { skip: 'no TCP here (the native addon is missing, or transport udp was asked for)' };
  if (!remote.tcp) return { skip: 'the peer offers no TCP candidates (no native addon there, or transport udp)' };
  const perDestination = (n: NatView) => n.kind === 'sequential' || n.kind === 'random';
  if (perDestination(local) && perDestination(remote)) {
    return {
      skip: `both NATs map per destination (${local.kind} here, ${remote.kind} there): TCP needs one endpoint-independent side`,
    };
  }
  return true;
}

/** The TCP technique over the Endpoint's TCP side. */
export function tcpTechnique(options: TcpTechniqueOptions): Technique {
  return {
    name: 'tcp',
    applies: tcpApplies,
    async run(ctx: TechniqueContext, signal: AbortSignal): Promise<PathResult> {
      const local = options.local();
      if (!local)
        throw new NatpunchError(
          'PUNCH_FAILED',
          'tcp: this endpoint has no TCP port (native addon missing or transport udp)',
        );
      const remote: Candidate[] = ctx.remote.candidates;
      if (tcpCandidatesOf(remote).length === 0)
        throw new NatpunchError('PUNCH_FAILED', 'tcp: the peer offered no TCP candidates');
      if (options.startAt !== undefined) {
        const wait = Math.min(MAX_START_DELAY_MS, options.startAt - Date.now());
        if (wait > 0) await sleep(wait, signal);
      }
      const punched = await punchTcp({
        local,
        role: ctx.role,
        remote,
        signal,
        logger: ctx.logger,
        sequence: { mode: options.sequence ?? 'auto', channel: options.sequenceChannel?.(ctx) ?? null },
      });
      ctx.progress({
        phase: 'technique-note',
        technique: 'tcp',
        note: `${punched.technique} connected to ${punched.candidate.type ?? 'prflx'} ${punched.candidate.address}:${punched.candidate.port}`,
        detail: {
          tcpTechnique: punched.technique,
          direction: punched.direction,
          attempts: punched.attempts,
          ms: punched.elapsedMs,
          ...(punched.reason ? { reason: punched.reason } : {}),
        },
      });
      // The initiator claims the race before its handshake, so the responder sees one handshake (technique.ts).
      if (ctx.role === 'initiator' && !(await ctx.claim())) {
        punched.socket.destroy();
        throw new NatpunchError('ABORTED', 'another technique won');
      }
      let session;
      try {
        session = await sessionOverTcp(ctx.role, punched, {
          keyPair: ctx.keyPair,
          peerKey: ctx.peerKey,
          ...(ctx.allow !== undefined ? { allow: ctx.allow } : {}),
          ...(options.keepAliveMs !== undefined ? { keepAliveMs: options.keepAliveMs } : {}),
          ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
          logger: ctx.logger,
          signal,
          transportReason:
            punched.reason ??
            (ctx.local.nat.udp && ctx.remote.nat.udp
              ? 'TCP found a path and UDP did not within the grace time'
              : 'TCP only'),
        });
      } catch (err) {
        if (ctx.role === 'initiator') ctx.unclaim();
        punched.socket.destroy();
        // The peer's port accepted and closed at once: it was not punching TCP for us (e.g. it took another path).
        if (
          err instanceof NatpunchError &&
          err.code === 'HANDSHAKE_FAILED' &&
          /closed during the handshake/.test(err.message)
        ) {
          throw new NatpunchError('PUNCH_FAILED', 'the peer closed the TCP connection before the handshake', {
            cause: err,
          });
        }
        throw err;
      }
      return {
        technique: 'tcp',
        session,
        kind: session.path.kind === 'lan' ? 'lan' : 'direct',
        transport: 'tcp',
        local: { address: punched.socket.localAddress ?? '0.0.0.0', port: punched.socket.localPort ?? local.port },
        remote: { address: punched.candidate.address, port: punched.candidate.port },
      };
    },
  };
}
