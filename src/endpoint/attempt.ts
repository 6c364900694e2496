/**
 * One connection attempt, either role, once the introduction is in hand: both sides' NAT views → the plan
 * (traversal/planner.ts) → the race (traversal/race.ts) over the technique modules → the session, its one 'path'
 * event and, when relayed, the background relay → direct upgrade. The Endpoint runs one of these per connect() and
 * per introduction it accepts; everything the attempt opens is released by the race or by the session's close.
 */
import { advertFromCandidates } from '../traversal/hardwire.js';
import { advice, plan as makePlan, type Plan, type PlanSwitches } from '../traversal/planner.js';
import { race } from '../traversal/race.js';
import { hardPunchTechnique } from '../traversal/hard-punch.js';
import { relayTechnique } from '../traversal/relay-technique.js';
import { tcpTechnique } from '../traversal/tcp-technique.js';
import { udpChecksTechnique, type SessionTuning } from '../traversal/udp-checks.js';
import type { Candidate } from '../traversal/candidate.js';
import type { NatView, Technique, TechniqueName } from '../traversal/technique.js';
import type { HardNatAdvert } from '../traversal/predict.js';
import { UdxEndpoint } from '../net/udx.js';
import type { SeqChannel } from '../traversal/tcp-seqpunch.js';
import { decodeSeqOffer, encodeSeqOffer } from '../wire/seq-offer.js';
import { keyToId, type KeyPair } from '../session/identity.js';
import { isAllowed, type Allow, type Session } from '../session/session.js';
import { NatpunchError, isNatpunchError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { ResolvedTechniques } from './defaults.js';
import type { LocalState } from './local.js';
import type { Progress, RendezvousLike } from './types.js';
import { upgradeInBackground } from './upgrade.js';
import { connectionOutcome } from '../rendezvous/outcome.js';

/** Technique names as outcome reports spell them (wire/rendezvous.ts REPORT_TECHNIQUES). */
const REPORT_TECHNIQUE_OF: Record<TechniqueName, string> = {
  'udp-checks': 'udp',
  mapped: 'mapped',
  predict: 'udp-predict',
  birthday: 'birthday',
  'double-random': 'hardnat',
  relay: 'relay',
  tcp: 'tcp-p2pnat',
  icmp: 'icmp',
};

/** A side's NAT as reports name it: the planner knows mapping behaviour (cone or per destination), not filtering. */
function reportNat(v: NatView): string {
  if (!v.udp) return 'udp-blocked';
  return v.kind === 'sequential' || v.kind === 'random' ? 'symmetric' : 'unknown';
}

export interface AttemptInput {
  role: 'initiator' | 'responder';
  connectionId: Uint8Array;
  peerKey: Buffer;
  /** The peer's candidates as the introduction carried them (hard-NAT advert included). */
  remote: Candidate[];
  /** The rendezvous' scheduled start (TCP simultaneous open only; UDP punches on introduction). */
  startAt?: number;
  local: LocalState;
  /** Our side as the introduction showed it to the peer, when that is less than we know by now (a CONNECT sent
   *  before our NAT was measured: both sides must plan from the same two views). Default: local.natView(). */
  localView?: NatView;
  /**
   * Hard punch from a fresh socket, not the Endpoint's: set when an earlier attempt already sent checks to this peer
   * from the Endpoint's socket, so a sequential NAT holds a mapping toward the peer's address for it, out of the
   * predicted window, which a new socket's first flow takes (see onOwnSocket).
   */
  punchOnOwnSocket?: boolean;
  /**
   * Responder: the connector was introduced unmeasured before, moments ago, and is again: a cold connector is
   * introduced again only once its NAT measurement is in, so this one has none (it failed, e.g. under loss) and will
   * not spray. The plan then does not count on it (planner.ts birthdayWithUnmeasured), as the connector's own plan
   * does not: both sides plan alike (the relay's checks need both at the same time).
   */
  peerMeasuredNothing?: boolean;
  keyPair: KeyPair;
  allow?: Allow;
  techniques: ResolvedTechniques;
  tuning: SessionTuning;
  /** This side's NAT type when the caller knows it (netcheck), for the outcome report. */
  natType?: string;
  relayHoldMs?: number;
  logger: Logger;
  progress: (p: Progress) => void;
  signal: AbortSignal;
  /** A technique found a working path and runs its handshake (race.ts onClaim). */
  onClaim?: () => void;
}

/** The rendezvous as the channel of STUNT #1 / NATBlaster offers for one connection (null: it cannot carry them). */
export function seqChannel(
  rv: RendezvousLike | null,
  connectionId: Uint8Array,
  peerKey: Uint8Array,
): SeqChannel | null {
  if (!rv?.exchangeSeqOffer || !rv.awaitSeqOffer) return null;
  const exchange = rv.exchangeSeqOffer.bind(rv);
  const wait = rv.awaitSeqOffer.bind(rv);
  return {
    send: ({ offer, decline }, signal) =>
      exchange({
        connectionId,
        peerKey,
        ...(offer ? { offer: encodeSeqOffer(offer) } : {}),
        ...(decline !== undefined ? { decline } : {}),
        signal,
      }),
    receive: async (signal) => {
      const got = await wait(connectionId, peerKey, signal);
      if (got.decline !== undefined) return { decline: got.decline };
      const offer = got.offer ? decodeSeqOffer(got.offer) : null;
      if (!offer)
        throw new NatpunchError('PUNCH_FAILED', 'the peer sent a malformed sequence offer', {
          details: { reason: 'malformed-offer' },
        });
      return { offer };
    },
  };
}

/** The peer's side as the planner sees it, from the candidates it offered. */
export function peerView(
  candidates: readonly Candidate[],
  advert: ReturnType<typeof advertFromCandidates>['advert'],
): NatView {
  const counts: NatView['candidates'] = {};
  for (const c of candidates) counts[c.type] = (counts[c.type] ?? 0) + 1;
  const srflx = candidates.find((c) => c.type === 'srflx' && c.transport === 'udp');
  return {
    kind: advert?.kind ?? 'unknown',
    delta: advert?.delta ?? null,
    publicAddress: srflx?.address ?? advert?.address ?? null,
    // A peer whose UDP is blocked registered over TCP: the server saw no UDP mapping of it to offer.
    udp:
      srflx !== undefined ||
      advert !== null ||
      candidates.some((c) => c.transport === 'udp' && (c.type === 'mapped' || c.type === 'prflx')) ||
      ((counts.srflx ?? 0) === 0 && !candidates.some((c) => c.transport === 'tcp' && c.type === 'srflx')),
    mapped: (counts.mapped ?? 0) > 0,
    relay: candidates.some((c) => c.type === 'relay' && c.transport === 'udp'),
    tcp: candidates.some((c) => c.transport === 'tcp'),
    candidates: counts,
  };
}

function progress(a: AttemptInput, p: Progress): void {
  a.progress(p);
}

/** What both sides plan for `localView` ↔ the peer's candidates (the first step of runAttempt). */
export function planFor(
  a: Pick<AttemptInput, 'remote' | 'local' | 'techniques' | 'role' | 'peerMeasuredNothing'>,
  localView: NatView = a.local.natView(),
): { plan: Plan; sw: PlanSwitches; remoteNat: NatView; advert: ReturnType<typeof advertFromCandidates>['advert'] } {
  const { advert, rest } = advertFromCandidates(a.remote);
  const remoteNat = peerView(rest, advert);
  const sw: PlanSwitches = {
    hardNat: a.techniques.hardNat !== null && a.local.hard !== null,
    budget: Boolean(a.techniques.hardNat?.budget),
    relay: a.techniques.relay !== null,
    transport: a.local.tcp ? a.techniques.transport : a.techniques.transport === 'tcp' ? 'tcp' : 'udp',
    ...(a.role === 'initiator'
      ? { initiator: 'local' as const }
      : a.peerMeasuredNothing
        ? {}
        : { initiator: 'remote' as const }),
  };
  return { plan: makePlan(localView, remoteNat, sw), sw, remoteNat, advert };
}

/** The hard punches: each needs the peer to know our advert (prediction window, or that we are a cone). */
const NEEDS_OUR_ADVERT: readonly TechniqueName[] = ['predict', 'birthday', 'double-random'];

/**
 * A connector introduced before its NAT was measured (`early`: the plan from the view it sent) must be introduced
 * again when the plan from what it knows now (`full`) has a hard punch the first lacks, or starts the relay at once
 * where the first holds it back (no direct path), or, once the first attempt failed, when the plans differ at all
 * (e.g. TCP or a relay came in since).
 */
export function needsNewIntroduction(early: Plan, full: Plan, firstFailed: boolean): boolean {
  const names = (p: Plan) => new Set(p.steps.map((s) => s.technique));
  const e = names(early);
  const f = names(full);
  if (NEEDS_OUR_ADVERT.some((t) => f.has(t) && !e.has(t))) return true;
  // Nothing direct can work (e.g. random ↔ sequential): the relay at once instead of after the checks' hold-back.
  const relayHold = (p: Plan) => p.steps.find((s) => s.technique === 'relay')?.holdMs;
  if (relayHold(full) === 0 && (relayHold(early) ?? 0) > 0) return true;
  return firstFailed && (e.size !== f.size || [...f].some((t) => !e.has(t)));
}

/**
 * A technique run on a socket of its own (bound like the Endpoint's), closed when it fails or, once it won, with
 * its session. For the hard punch after a first attempt: a sequential NAT keeps the mapping that attempt's checks
 * made from the Endpoint's socket toward the peer, so a probe from that socket would leave from that old port, not
 * from the window we advertised; a fresh socket's first flow takes the window's first port.
 */
function onOwnSocket(t: Technique): Technique {
  return {
    name: t.name,
    applies: t.applies,
    async run(ctx, signal) {
      const bound = ctx.endpoint.address().address;
      const socket = await UdxEndpoint.bind(bound === '0.0.0.0' || bound === '::' ? {} : { address: bound });
      const close = () => void socket.close().catch(() => {});
      try {
        const r = await t.run({ ...ctx, endpoint: socket }, signal);
        if (r.session.closed) close();
        else r.session.once('close', close);
        return r;
      } catch (err) {
        close();
        throw err;
      }
    },
  };
}

/**
 * The adverts a hard punch aims with. A side that has not measured its NAT (planner.ts birthdayWithUnmeasured: a cold
 * connector facing a random NAT) counts as a cone at its server-reflexive address, as the peer's plan assumes.
 */
function punchAdverts(
  a: AttemptInput,
  advert: HardNatAdvert | null,
  rest: readonly Candidate[],
  localNat: NatView,
): { local: HardNatAdvert; peer: HardNatAdvert } | null {
  const srflx = rest.find((c) => c.type === 'srflx' && c.transport === 'udp');
  const peer = advert ?? (srflx ? unmeasured(srflx.address, srflx.port) : null);
  const local =
    a.local.hard?.advert ??
    (localNat.publicAddress !== null ? unmeasured(localNat.publicAddress, a.local.reflexive?.port ?? 0) : null);
  return peer && local ? { local, peer } : null;
}

function unmeasured(address: string, port: number): HardNatAdvert {
  return { kind: 'unknown', delta: null, address, ports: port > 0 ? [port] : [] };
}

/**
 * The one technique whose checks carry the initiator's Noise IK message 1 (docs/handshake.md): the listener commits
 * to a session on message 1, so two techniques carrying it could leave the sides with different sessions. It is
 * the technique expected to win: the birthday where it starts at once (random ↔ cone: most cones filter by address
 * and port, where the plain checks never meet), else the plan's technique that starts at once (plain checks,
 * mapped, prediction). A listener answers IK on any technique: it follows the initiator.
 */
export function ikTechnique(p: Plan): TechniqueName | null {
  const atOnce = p.steps.filter((s) => s.holdMs === 0).map((s) => s.technique);
  if (atOnce.includes('birthday')) return 'birthday';
  return atOnce.find((t) => t === 'udp-checks' || t === 'mapped' || t === 'predict') ?? null;
}

export async function runAttempt(a: AttemptInput): Promise<Session> {
  const { advert, rest } = advertFromCandidates(a.remote);
  const localNat = a.localView ?? a.local.natView();
  const { plan: p, sw, remoteNat } = planFor(a, localNat);
  if (a.relayHoldMs !== undefined)
    for (const s of p.steps) if (s.technique === 'relay' && s.holdMs > 0) s.holdMs = a.relayHoldMs;
  // Techniques that spend many packets (hard punch) or a relay's resources go only to peers `allow` admits; the
  // plain checks are cheap and the handshake refuses a stranger with NOT_ALLOWED, which the peer then hears.
  if (
    a.role === 'responder' &&
    p.steps.some((s) => s.technique !== 'udp-checks' && s.technique !== 'mapped' && s.technique !== 'tcp')
  ) {
    if (!(await isAllowed(a.allow, a.peerKey)))
      throw new NatpunchError('NOT_ALLOWED', `peer ${keyToId(a.peerKey)} is not allowed`);
  }
  const techniques = new Map<TechniqueName, Technique>();
  // Only a sequential NAT hands a fresh socket the window's next port (a cone's advert is the Endpoint's port).
  const ownSocket = a.punchOnOwnSocket === true && a.local.hard?.advert.kind === 'sequential';
  const transportReason =
    a.techniques.transport === 'udp'
      ? null
      : (a.local.tcpUnavailable ??
        (remoteNat.tcp && !localNat.tcp && a.localView
          ? 'TCP not raced: a cold connect introduces itself before its TCP port is gathered, and UDP found the path'
          : null));
  const tuning: SessionTuning = transportReason ? { ...a.tuning, transportReason } : a.tuning;
  const withIk = a.role === 'initiator' ? ikTechnique(p) : null;
  const ik = (t: TechniqueName) => a.role === 'responder' || t === withIk;
  for (const s of p.steps) {
    switch (s.technique) {
      case 'udp-checks':
      case 'mapped':
        techniques.set(s.technique, udpChecksTechnique(s.technique, tuning, ik(s.technique)));
        break;
      case 'predict':
      case 'birthday':
      case 'double-random':
        {
          const adverts = punchAdverts(a, advert, rest, localNat);
          if (!adverts) break; // no address to aim at: the race reports the missing module
          const hard = hardPunchTechnique(
            s.technique,
            {
              ...adverts,
              ...(a.techniques.hardNat?.budget ? { budget: a.techniques.hardNat.budget } : {}),
            },
            // A session on its own socket cannot be recovered through the Endpoint's (see onOwnSocket).
            ownSocket ? { ...tuning, recover: undefined } : tuning,
            ik(s.technique),
          );
          techniques.set(s.technique, ownSocket ? onOwnSocket(hard) : hard);
        }
        break;
      case 'relay':
        techniques.set(
          'relay',
          relayTechnique((signal) => a.local.relayReady(signal), tuning),
        );
        break;
      case 'tcp':
        techniques.set(
          'tcp',
          tcpTechnique({
            local: () => a.local.tcp,
            sequence: a.techniques.tcpSequence,
            sequenceChannel: () => seqChannel(a.local.rendezvous, a.connectionId, a.peerKey),
            ...(a.startAt !== undefined ? { startAt: a.startAt } : {}),
            ...(tuning.keepAliveMs !== undefined ? { keepAliveMs: tuning.keepAliveMs } : {}),
            ...(tuning.idleTimeoutMs !== undefined ? { idleTimeoutMs: tuning.idleTimeoutMs } : {}),
          }),
        );
        break;
      case 'icmp':
        break;
    }
  }
  a.progress({
    phase: 'punching',
    pairs: rest.length,
    plan: p.steps.map((s) => ({ technique: s.technique, holdMs: s.holdMs })),
    local: localNat.kind,
    remote: remoteNat.kind,
  });
  a.logger.info(
    {
      peer: keyToId(a.peerKey),
      local: localNat.kind,
      remote: remoteNat.kind,
      plan: p.steps.map((s) => `${s.technique}@${s.holdMs}`),
      skipped: p.skipped,
    },
    'plan',
  );
  const localCandidates = a.local.candidates().filter((c) => !(c.type === 'predicted' && c.transport === 'udp'));
  const startedAt = Date.now();
  // One signed outcome report per attempt to the rendezvous (counted into its metrics and dashboard): enumerations
  // and timings only, never an address or payload (src/rendezvous/outcome.ts). Best effort, never awaited.
  const report = (outcome: { path?: Session['path']; error?: unknown }) =>
    void a.local.rendezvous
      ?.report?.(
        connectionOutcome({
          connectionId: a.connectionId,
          role: a.role,
          startedAt,
          ...outcome,
          tried: p.steps.map((s) => REPORT_TECHNIQUE_OF[s.technique]),
          localNat: a.natType ?? reportNat(localNat),
          peerNat: reportNat(remoteNat),
        }),
      )
      .catch(() => {});
  let won: Awaited<ReturnType<typeof race>>;
  try {
    won = await race({
      plan: p,
      techniques,
      ctx: {
        role: a.role,
        keyPair: a.keyPair,
        peerKey: a.peerKey,
        connectionId: a.connectionId,
        endpoint: a.local.socket,
        local: { candidates: localCandidates, nat: localNat },
        remote: { candidates: rest, nat: remoteNat },
        ...(a.allow !== undefined ? { allow: a.allow } : {}),
        signalling: null,
        logger: a.logger,
        progress: (e) => a.progress(e),
      },
      signal: a.signal,
      advice: advice(localNat, remoteNat, p, sw),
      ...(a.onClaim ? { onClaim: a.onClaim } : {}),
    });
  } catch (err) {
    // An attempt its caller dropped (e.g. introduced again) did not fail: nothing to report.
    if (!isNatpunchError(a.signal.reason, 'ABORTED')) report({ error: err });
    throw err;
  }
  const session = won.session;
  report({ path: session.path });
  const cp = session.path.candidatePair;
  if (won.transport === 'tcp' && session.path.transportReason)
    progress(a, { phase: 'transport', transport: 'tcp', reason: session.path.transportReason });
  a.progress({
    phase: 'path',
    kind: session.path.kind,
    remote: session.path.remote,
    local: session.path.local,
    transport: won.transport,
    traversal: won.technique,
    type: won.transport === 'tcp' ? `tcp-${cp?.remote?.type ?? 'prflx'}` : (cp?.remote?.type ?? 'prflx'),
    rttMs: session.path.rttMs,
    ...(session.path.tcpTechnique ? { technique: session.path.tcpTechnique } : {}),
    ...(won.reason
      ? { reason: won.reason }
      : session.path.transportReason
        ? { reason: session.path.transportReason }
        : {}),
  });
  if (won.kind === 'relay') {
    upgradeInBackground(
      {
        endpoint: a.local.socket,
        role: a.role,
        connectionId: a.connectionId,
        keyPair: a.keyPair,
        peerKey: a.peerKey,
        local: localCandidates,
        remote: rest,
        logger: a.logger,
        progress: a.progress,
      },
      session,
    );
  }
  return session;
}
