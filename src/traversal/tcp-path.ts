/**
 * How natpunch punches a TCP connection to a peer, and in what order (docs/tcp.md explains the choices):
 *
 *   1. P2P-NAT on port P (tcp-p2pnat.ts; Ford, Srisuresh, Kegel, USENIX 2005 §4) to every TCP candidate of the peer,
 *      its predicted window expanded (tcp-predict.ts). One side opens its NAT with guarded low-TTL SYNs (STUNT #2,
 *      Guha & Francis, IMC 2005) and the other holds back TCP_OPENER_HOLDBACK_MS (stuntOpening()), so NATs that
 *      answer unsolicited SYNs at once (RFC 5382 §4.3 REQ-4 asks them to wait 6 s; many send RST straight away) do
 *      not close the mapping the first SYN made.
 *   2. The sequence-number techniques, STUNT #1 (with `natpunch serve --spoof`) and NATBlaster (tcp-seqpunch.ts),
 *      for NATs that drop every inbound SYN. When both peers offered a port Q (tcp-local.ts) they run on Q beside
 *      P2P-NAT, starting TCP_SEQ_HOLDBACK_MS later (happy-eyeballs style): Q's 5-tuple has never seen P2P-NAT's SYNs,
 *      so a crossing SYN cannot have left the NAT's entry in SYN_SENT2 with another sequence number. Without Q (an
 *      older peer) they run on P after P2P-NAT failed, as before.
 *   Both sides must use the same connection: the initiator nominates exactly one (the nomination byte of
 *   tcp-p2pnat.ts, written on whichever technique's connection it takes first) and the responder takes the one
 *   that carries it (RFC 8445 §8.1.1 controlling / controlled roles).
 * Sequential (address-dependent) NATs skip the sequence techniques: they need the public endpoint the rendezvous saw
 * to be the one the peer sees, which such a NAT does not give.
 */
import { isIP } from 'node:net';
import type net from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { sleep } from '../util/abort.js';
import type { Logger } from '../util/log.js';
import type { SessionPath } from '../session/session.js';
import { candidateKey, type Candidate } from './candidate.js';
import {
  tcpPunch,
  TCP_NOMINATION_BYTE,
  TCP_PUNCH_DEFAULTS,
  type TcpPunchCandidate,
  type TcpPunchResult,
} from './tcp-p2pnat.js';
import { installIcmpGuard, type SeqTechnique } from './tcp-seq.js';
import { declineSequencePunch, sequencePunch, type SeqChannel } from './tcp-seqpunch.js';
import { expandTcpPredictions, tcpPredictionOf } from './tcp-predict.js';
import { isSeqPortCandidate, rawSocketDenied, seqPortOf, type Endpoint, type TcpLocal } from './tcp-local.js';

/**
 * Without port Q (an older peer), P2P-NAT gets this long before the sequence-number techniques take over on P: a
 * cone pair punches in well under a second (bench/results/tcp-punch.md), and one SYN retransmission (1 s) fits.
 */
export const TCP_P2PNAT_BEFORE_SEQ_MS = 8_000;
/**
 * One run of the sequence-number techniques: the offers cross in one rendezvous round trip, and the SYN-ACK
 * schedule ends 5 s later (TCP_SEQ_DEFAULTS.synAckScheduleMs): nothing arriving after 10 s will.
 */
export const TCP_SEQ_STEP_TIMEOUT_MS = 10_000;
/**
 * On port Q the sequence-number techniques start this long after P2P-NAT (happy eyeballs, RFC 8305 §5 uses 250 ms
 * between address families): P2P-NAT, which needs no raw sockets, no packet capture and no spoofing server, connects
 * cone pairs within it (STUNT #2 hold-back included), and the techniques cost a raw socket, a capture and an nft
 * table on each side plus a spoofing round on the server.
 */
export const TCP_SEQ_HOLDBACK_MS = 1_000;
/**
 * STUNT #2 inside P2P-NAT: the side that does not open waits this long before its first SYN, so the opener's low-TTL
 * SYN has left (the opener's TTL discovery starts at gathering and is cached; the offers reach both sides within
 * the rendezvous' start skew). An earlier SYN is not lost: dropped, it is retransmitted on the same 5-tuple; refused
 * (RST), the next attempt follows TCP_PUNCH_DEFAULTS.retryDelayMs later.
 */
export const TCP_OPENER_HOLDBACK_MS = 300;

/**
 * Which TCP techniques connect()/listen() use. 'auto': P2P-NAT, with STUNT #1 (when the rendezvous spoofs) or
 * NATBlaster beside it where this host may use raw sockets; 'off': P2P-NAT only; 'natblaster' / 'stunt1': that
 * technique only (both peers should say the same).
 */
export type TcpSequenceMode = 'auto' | 'off' | SeqTechnique;
export const TCP_SEQUENCE_MODES: readonly TcpSequenceMode[] = ['auto', 'off', 'natblaster', 'stunt1'];

export interface TcpAttemptOptions {
  local: TcpLocal;
  /** initiator = P2P-NAT's controlling side (it nominates the connection and starts the Noise handshake). */
  role: 'initiator' | 'responder';
  remote: Candidate[];
  signal: AbortSignal;
  logger?: Logger;
  timeoutMs?: number;
  /** The sequence-number techniques: mode (default 'off' here) and the rendezvous channel carrying the offers. */
  sequence?: { mode: TcpSequenceMode; channel: SeqChannel | null };
}

/** A punched TCP connection and the technique that made it. */
export interface TcpPathResult extends TcpPunchResult {
  technique: NonNullable<SessionPath['tcpTechnique']>;
  /** How this technique came to win, when worth telling: P2P-NAT's failure, or that we opened with STUNT #2. */
  reason?: string;
}

/**
 * The peer's IPv4 TCP candidates for P2P-NAT: its predicted window (tcp-predict.ts) expanded into one candidate per
 * port, its port Q (tcp-local.ts) left out.
 */
export function tcpCandidatesOf(remote: Candidate[]): Candidate[] {
  const expanded = expandTcpPredictions(
    remote.filter((c) => c.transport === 'tcp' && isIP(c.address) === 4 && !isSeqPortCandidate(c)),
  );
  // One attempt per endpoint: a window offered twice (or overlapping a srflx) must not make two connects from P to
  // the same endpoint, which the kernel refuses for the second one (the 4-tuple is taken).
  const seen = new Set<string>();
  return expanded.filter((c) => !seen.has(candidateKey(c)) && Boolean(seen.add(candidateKey(c))));
}

/**
 * STUNT #2 inside P2P-NAT (Guha & Francis, IMC 2005 §3): when a NAT answers an unsolicited SYN with RST at once
 * (RFC 5382 §4.3 REQ-4 asks for silence for 6 s, precisely for simultaneous open; many NATs do not wait) the crossing SYNs of plain P2P-NAT must both be in flight at once, or the first one's RST closes
 * the mapping its sender's NAT just made. So one side opens: it sends its SYNs with a TTL that passes its own NAT and
 * expires before the peer's, which leaves its NAT's entry in SYN_SENT without any RST; the other side holds back its
 * first SYN by TCP_OPENER_HOLDBACK_MS and then walks in through that entry (simultaneous open at the opener's socket,
 * RFC 9293 §3.5). Who opens:
 *   - the side with endpoint-independent (cone) mapping when the other one offered a predicted window: its SYNs open
 *     the whole window, the sequential side's SYN lands on one of those ports;
 *   - the responder when neither offered a window; nobody when both did (UDP's hard-NAT punch is for that pair).
 */
export function stuntOpening(p: {
  role: 'initiator' | 'responder';
  weSequential: boolean;
  peerSequential: boolean;
}): 'we-open' | 'peer-opens' | 'none' {
  if (p.weSequential && p.peerSequential) return 'none';
  if (p.peerSequential) return 'we-open';
  if (p.weSequential) return 'peer-opens';
  return p.role === 'responder' ? 'we-open' : 'peer-opens';
}

/**
 * The opener's low TTL, with the Time Exceeded those SYNs draw dropped on this host (a forwarded one would abort our
 * SYN_SENT socket, tcp-seq.ts installIcmpGuard). null (plain P2P-NAT) when the TTL is unknown, we are not behind a
 * NAT, or the guard cannot be installed (it needs CAP_NET_ADMIN and nft): an unguarded low-TTL socket would be
 * aborted and the peer's SYN would meet our listener, whose SYN-ACK a tracking NAT drops (tcp-p2pnat.ts).
 */
async function openWithLowTtl(
  o: TcpAttemptOptions,
  candidates: Candidate[],
): Promise<{ lowTtl: number; unguard: () => Promise<void> } | null> {
  const remote = candidates.find((c) => c.type !== 'host');
  if (!remote) return null;
  const lowTtl = await o.local.lowTtl(o.signal);
  if (lowTtl === null) return null;
  try {
    const unguard = await installIcmpGuard({ address: remote.address, port: 0 }, o.local.port);
    o.logger?.debug({ lowTtl, remote: remote.address }, 'tcp: STUNT #2, opening our NAT with low-TTL SYNs');
    return { lowTtl, unguard };
  } catch (err) {
    o.logger?.info(
      { err: (err as Error).message },
      'tcp: no ICMP guard (needs root and nft); P2P-NAT without STUNT #2',
    );
    return null;
  }
}

/** P2P-NAT from port P (with STUNT #2 when we open). */
async function p2pnat(
  o: TcpAttemptOptions,
  candidates: Candidate[],
  p: { signal: AbortSignal; timeoutMs?: number; claimNomination?: () => boolean },
): Promise<TcpPathResult> {
  const opening = stuntOpening({
    role: o.role,
    weSequential: o.local.prediction !== null,
    peerSequential: o.remote.some((c) => tcpPredictionOf(c) !== null),
  });
  const stunt = opening === 'we-open' ? await openWithLowTtl({ ...o, signal: p.signal }, candidates) : null;
  try {
    const r = await tcpPunch({
      localPort: o.local.port,
      candidates,
      role: o.role === 'initiator' ? 'controlling' : 'controlled',
      listener: o.local.listener,
      signal: p.signal,
      ...(stunt
        ? { lowTtl: stunt.lowTtl, lowTtlFor: (c: TcpPunchCandidate) => c.type !== 'host', icmpGuarded: true }
        : {}),
      ...(opening === 'peer-opens' ? { connectDelayMs: TCP_OPENER_HOLDBACK_MS } : {}),
      ...(p.timeoutMs !== undefined ? { timeoutMs: p.timeoutMs } : {}),
      ...(p.claimNomination ? { claimNomination: p.claimNomination } : {}),
      ...(o.logger ? { logger: o.logger } : {}),
    });
    return {
      ...r,
      technique: 'p2pnat',
      ...(stunt ? { reason: `we opened our NAT first with low-TTL SYNs (STUNT #2, TTL ${stunt.lowTtl})` } : {}),
    };
  } finally {
    await stunt?.unguard();
  }
}

/**
 * Punches a TCP connection to the peer (both roles), in the order the module comment gives. Resolves with the
 * connection both sides agreed on; rejects PUNCH_FAILED saying what each technique found.
 */
export async function punchTcp(o: TcpAttemptOptions): Promise<TcpPathResult> {
  let candidates = tcpCandidatesOf(o.remote);
  if (o.local.prediction) {
    // Behind a sequential NAT every SYN to a new endpoint takes the next port of the window we offered: the SYN to the
    // peer's public endpoint goes first so it gets one of the likeliest ports (host candidates of a peer on another
    // LAN lead nowhere, and each would take a port before it).
    candidates = [...candidates.filter((c) => c.type !== 'host'), ...candidates.filter((c) => c.type === 'host')];
  }
  if (candidates.length === 0) {
    throw new NatpunchError(
      'PUNCH_FAILED',
      'the peer offered no TCP candidates (it runs without the native addon, or with --transport udp)',
    );
  }
  const mode = o.sequence?.mode ?? 'off';
  const channel = o.sequence?.channel ?? null;
  if (mode === 'off' || !channel)
    return p2pnat(o, candidates, {
      signal: o.signal,
      ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
    });
  const peerQ = seqPortOf(o.remote);
  const separate = o.local.seq && peerQ ? { local: o.local.seq, remote: peerQ } : null;
  // Without raw sockets the techniques cannot run here: P2P-NAT keeps its whole budget and the peer hears why.
  const denied = rawSocketDenied();
  if (mode === 'auto' && separate) return raceOnSeparatePorts(o, channel, candidates, separate, denied);
  if (mode === 'auto') {
    const budget = denied
      ? (o.timeoutMs ?? TCP_PUNCH_DEFAULTS.timeoutMs)
      : Math.min(o.timeoutMs ?? TCP_P2PNAT_BEFORE_SEQ_MS, TCP_P2PNAT_BEFORE_SEQ_MS);
    try {
      return await p2pnat(o, candidates, { signal: o.signal, timeoutMs: budget });
    } catch (err) {
      if (o.signal.aborted || !(err instanceof NatpunchError) || err.code !== 'PUNCH_FAILED') throw err;
      const why = `P2P-NAT failed (${err.message})`;
      o.logger?.info({ err: err.message }, 'tcp: P2P-NAT failed; trying the sequence-number techniques');
      return await sequenceStep(o, {
        channel,
        candidates,
        denied,
        prefer: 'auto',
        why,
        separate: null,
        signal: o.signal,
      });
    }
  }
  const r = await sequenceStep(o, {
    channel,
    candidates,
    denied,
    prefer: mode,
    why: `--tcp-seq ${mode}`,
    separate,
    signal: o.signal,
  });
  return separate ? await nominate(r, o.role, () => true, o.signal) : r;
}

/**
 * 'auto' with port Q on both sides: P2P-NAT on P and, TCP_SEQ_HOLDBACK_MS later, the sequence techniques on Q; the
 * initiator nominates the first connection either one yields (claim), the loser is cancelled and its socket closed.
 */
async function raceOnSeparatePorts(
  o: TcpAttemptOptions,
  channel: SeqChannel,
  candidates: Candidate[],
  separate: { local: { port: number; srflx: Endpoint }; remote: Endpoint },
  denied: string | null,
): Promise<TcpPathResult> {
  const loser = new AbortController();
  const signal = AbortSignal.any([o.signal, loser.signal]);
  let claimed = false;
  const claim = () => (claimed ? false : (claimed = true));
  const sequential = o.local.prediction !== null || o.remote.some((c) => tcpPredictionOf(c) !== null);
  const viaP2pnat = p2pnat(o, candidates, {
    signal,
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
    claimNomination: claim,
  });
  const viaSeq = sequential
    ? Promise.reject(
        new NatpunchError(
          'PUNCH_FAILED',
          'STUNT #1 / NATBlaster not tried: a sequential NAT maps the flow to the peer to another port than the rendezvous saw',
          { details: { reason: 'sequence-not-applicable' } },
        ),
      )
    : sleep(TCP_SEQ_HOLDBACK_MS, signal)
        .then(() => sequenceStep(o, { channel, candidates, denied, prefer: 'auto', why: null, separate, signal }))
        .then((r) => nominate(r, o.role, claim, signal))
        .then((r) => ({
          ...r,
          reason: `P2P-NAT had found no path when ${r.technique === 'stunt1' ? 'STUNT #1' : 'NATBlaster'} connected on its own port`,
        }));
  let winner: TcpPathResult | undefined;
  try {
    winner = await Promise.any([viaP2pnat, viaSeq]);
    return winner;
  } catch (err) {
    const [p2p, seq] = (err as AggregateError).errors as Error[];
    if (o.signal.aborted) throw p2p;
    throw new NatpunchError('PUNCH_FAILED', `P2P-NAT failed (${p2p?.message}); ${seq?.message}`, {
      cause: err,
      details: { ...((seq as NatpunchError | undefined)?.details ?? {}) },
    });
  } finally {
    loser.abort(new NatpunchError('ABORTED', 'another TCP technique connected first'));
    for (const p of [viaP2pnat, viaSeq])
      void p.then(
        (r) => r !== winner && r.socket.destroy(),
        () => {},
      );
  }
}

/**
 * A sequence-technique connection on port Q becomes THE connection only through the nomination: the initiator claims
 * it (false: P2P-NAT's connection was nominated first) and writes the nomination byte; the responder waits for that
 * byte (reading exactly one, so the session's first bytes stay in the socket).
 */
async function nominate(
  r: TcpPathResult,
  role: 'initiator' | 'responder',
  claim: () => boolean,
  signal: AbortSignal,
): Promise<TcpPathResult> {
  if (role === 'initiator') {
    if (!claim()) {
      r.socket.destroy();
      throw new NatpunchError('ABORTED', 'another TCP connection was nominated first');
    }
    r.socket.write(Buffer.from([TCP_NOMINATION_BYTE]));
    return r;
  }
  const socket: net.Socket = r.socket;
  return await new Promise<TcpPathResult>((resolve, reject) => {
    const done = (err?: Error) => {
      socket.off('readable', onReadable);
      socket.off('close', onClose);
      signal.removeEventListener('abort', onAbort);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(r);
    };
    const onReadable = () => {
      const b = socket.read(1) as Buffer | null;
      if (b === null) return;
      done(
        b[0] === TCP_NOMINATION_BYTE
          ? undefined
          : new NatpunchError(
              'PUNCH_FAILED',
              'the peer sent something else than the nomination on the sequence-technique connection',
            ),
      );
    };
    const onClose = () =>
      done(new NatpunchError('ABORTED', 'the peer closed the sequence-technique connection (it nominated another)'));
    const onAbort = () => done(new NatpunchError('ABORTED', 'another TCP connection was nominated'));
    socket.on('readable', onReadable);
    socket.once('close', onClose);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}

async function sequenceStep(
  o: TcpAttemptOptions,
  s: {
    channel: SeqChannel;
    candidates: Candidate[];
    denied: string | null;
    prefer: 'auto' | SeqTechnique;
    /** Prefix of failure messages (what came before), or null. */
    why: string | null;
    /** Port Q on both sides, or null: the techniques run on P toward the peer's srflx. */
    separate: { local: { port: number; srflx: Endpoint }; remote: Endpoint } | null;
    signal: AbortSignal;
  },
): Promise<TcpPathResult> {
  const prefix = (m: string) => (s.why ? `${s.why}; ${m}` : m);
  const remoteCandidate = s.separate
    ? ({
        type: 'srflx',
        transport: 'tcp',
        address: s.separate.remote.address,
        port: s.separate.remote.port,
        priority: 0,
      } satisfies Candidate)
    : (s.candidates.find((c) => c.type === 'srflx') ?? null);
  const own = s.separate ? s.separate.local.srflx : o.local.srflx;
  const localPort = s.separate ? s.separate.local.port : o.local.port;
  const veto =
    (s.denied ? `no raw sockets here (${s.denied})` : null) ??
    (!own ? 'no server-reflexive TCP endpoint here (STUN over TCP to the rendezvous failed)' : null) ??
    (!remoteCandidate ? 'the peer offered no server-reflexive TCP candidate' : null);
  if (veto || !own || !remoteCandidate) {
    await declineSequencePunch(s.channel, veto ?? 'not applicable', s.signal);
    throw new NatpunchError('PUNCH_FAILED', prefix(`STUNT #1 / NATBlaster not tried: ${veto}`), {
      details: { reason: 'sequence-not-applicable' },
    });
  }
  let lowTtl: number;
  try {
    lowTtl = (
      await o.local.hops.discover({
        publicAddress: own.address,
        signal: s.signal,
        ...(o.logger ? { logger: o.logger } : {}),
      })
    ).lowTtl;
  } catch (err) {
    await declineSequencePunch(s.channel, `TTL discovery failed: ${(err as Error).message}`, s.signal);
    throw err;
  }
  try {
    const r = await sequencePunch({
      localPort,
      publicEndpoint: own,
      remote: { address: remoteCandidate.address, port: remoteCandidate.port },
      lowTtl,
      channel: s.channel,
      prefer: s.prefer,
      timeoutMs: TCP_SEQ_STEP_TIMEOUT_MS,
      signal: s.signal,
      ...(o.logger ? { logger: o.logger } : {}),
    });
    return {
      socket: r.socket,
      candidate: remoteCandidate,
      direction: 'connect',
      attempts: 1,
      elapsedMs: r.elapsedMs,
      technique: r.technique,
      ...(s.why ? { reason: s.why } : {}),
    };
  } catch (err) {
    if (err instanceof NatpunchError && err.code === 'PUNCH_FAILED') {
      throw new NatpunchError('PUNCH_FAILED', prefix(err.message), { cause: err, details: err.details });
    }
    throw err;
  }
}
