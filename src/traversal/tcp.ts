/**
 * Technique 'tcp': the one slot TCP has in the race. It calls the TCP session functions (tcp-session.ts, owned by
 * the TCP work): punchTcp() — P2P-NAT simultaneous open, then when that fails the sequence techniques (STUNT #1 with
 * `serve --spoof`, NATBlaster) on their own schedule so a P2P-NAT attempt does not defeat them — and the Noise
 * handshake over the punched connection. TCP simultaneous open needs both SYNs in flight together, so this
 * technique (unlike the UDP ones) waits for the rendezvous' scheduled start time.
 */
import { punchTcp, sessionOverTcp, tcpCandidatesOf, type TcpLocal, type TcpSequenceMode } from './tcp-session.js';
import type { SeqChannel } from './tcp-seqpunch.js';
import type { PathResult, Technique } from './technique.js';
import type { SessionTuning } from './udp-checks.js';
import { sleep } from '../util/abort.js';
import { NatpunchError } from '../util/errors.js';

/** Never wait longer than this for the rendezvous' scheduled start time. */
export const MAX_START_DELAY_MS = 5_000;

export interface TcpSetup {
  local: TcpLocal;
  sequence: { mode: TcpSequenceMode; channel: SeqChannel | null };
  /** Local clock time both sides start at (the rendezvous' schedule, from both RTTs). */
  startAt?: number;
  transportReason?: string;
}

export function tcpTechnique(setup: TcpSetup, tuning: SessionTuning): Technique {
  return {
    name: 'tcp',
    applies: (local, remote) => (local.tcp && remote.tcp ? true : { skip: 'a side offered no TCP candidates' }),
    async run(ctx, signal): Promise<PathResult> {
      if (tcpCandidatesOf(ctx.remote.candidates).length === 0) throw new NatpunchError('PUNCH_FAILED', 'the peer offered no TCP candidates');
      if (setup.startAt !== undefined) {
        const wait = Math.min(MAX_START_DELAY_MS, setup.startAt - Date.now());
        if (wait > 0) await sleep(wait, signal);
      }
      const punched = await punchTcp({ local: setup.local, role: ctx.role, remote: ctx.remote.candidates, signal, logger: ctx.logger, sequence: setup.sequence });
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
          ...(tuning.keepAliveMs !== undefined ? { keepAliveMs: tuning.keepAliveMs } : {}),
          ...(tuning.idleTimeoutMs !== undefined ? { idleTimeoutMs: tuning.idleTimeoutMs } : {}),
          logger: ctx.logger,
          signal,
          transportReason: setup.transportReason ?? (ctx.local.nat.udp && ctx.remote.nat.udp ? 'TCP found a path and UDP did not within the grace time' : 'TCP only'),
        });
      } catch (err) {
        if (ctx.role === 'initiator') ctx.unclaim();
        punched.socket.destroy();
        // The peer's port accepted and closed at once: it was not punching TCP for us (e.g. it took another path).
        if (err instanceof NatpunchError && err.code === 'HANDSHAKE_FAILED' && /closed during the handshake/.test(err.message)) {
          throw new NatpunchError('PUNCH_FAILED', 'the peer closed the TCP connection before the handshake', { cause: err });
        }
        throw err;
      }
      const p = session.path;
      return {
        technique: 'tcp', session, kind: p.kind === 'lan' ? 'lan' : 'direct', transport: 'tcp', local: p.local, remote: p.remote,
        ...(punched.reason ? { reason: punched.reason } : {}),
      };
    },
  };
}
