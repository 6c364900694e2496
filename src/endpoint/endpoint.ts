/**
 * The long-lived Endpoint (what hyperdht calls a node, iroh an Endpoint, Tailscale's magicsock a Conn): one UDP
 * socket, one rendezvous registration, the NAT view measured on that socket, the gateway port mapping, the relay
 * allocation and the TCP port (LocalState, local.ts), shared by every session to every peer in both directions.
 *
 *   const ep = await createEndpoint({ keyPair, rendezvous: 'host' , name: 'bob' })
 *   ep.on('session', (s) => ...)            // incoming, each introduction raced by attempt.ts
 *   const s = await ep.connect('alice')     // outgoing: CONNECT at once with the warm candidates, then the race
 *   await ep.close()                        // every session, the registration, mapping, relay, socket
 *
 * connect() / listen() in src/natpunch.ts are one-shot Endpoints.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { ConnectivityChecks, deriveCheckKey } from '../traversal/checks.js';
import { advertFromCandidates } from '../traversal/hardwire.js';
import { pathOf, type SessionTuning } from '../traversal/udp-checks.js';
import type { Candidate } from '../traversal/candidate.js';
import type { NatView, TechniqueName } from '../traversal/technique.js';
import { keyToId } from '../session/identity.js';
import { IkReplayCache } from '../session/handshake-ik.js';
import { peerTarget, verifyPeer, type PeerSpec } from '../identity/verify.js';
import type { PeerPins } from '../identity/known-peers.js';
import { DEFAULT_KEEPALIVE_MS, type Session } from '../session/session.js';
import type { UdxEndpoint } from '../net/udx.js';
import { NatpunchError, isNatpunchError } from '../util/errors.js';
import { sleep, timeoutSignal } from '../util/abort.js';
import { silentLogger, type Logger } from '../util/log.js';
import { resolveTechniques, type ResolvedTechniques } from './defaults.js';
import { LocalState, rendezvousServer } from './local.js';
import { needsNewIntroduction, planFor, runAttempt } from './attempt.js';
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  MAX_CONCURRENT_ATTEMPTS,
  type ConnectOfferLike,
  type ListenOptions,
  type Progress,
  type RendezvousLike,
} from './types.js';

export interface EndpointOptions extends ListenOptions {
  /** Accept introductions (default true). A one-shot connect() turns it off. */
  accept?: boolean;
  /** Register with the rendezvous (default true; a one-shot connect() registers only to get relay credentials). */
  register?: boolean;
  /** Names pinned to keys for connect(name) (ConnectOptions.knownPeers, src/identity/known-peers.ts). */
  knownPeers?: PeerPins;
}

/** After a relayed session moved to a direct path, its relay allocation is released once idle this long (the
 *  upgrade's last relayed packets drain first). */
export const RELAY_RELEASE_IDLE_MS = 5_000;
/**
 * A cold connect's first attempt, planned before our NAT was measured, runs at least this long before a second
 * introduction may replace it: where its checks get through at all they win within a check round trip and a
 * retransmission (checks.ts DEFAULT_INITIAL_RTO_MS), and dropping it after the listener accepted its first flight
 * would leave the listener an unconfirmed session (docs/handshake.md).
 */
export const FIRST_ATTEMPT_GRACE_MS = 300;

/** How long a NAT is assumed to keep a UDP mapping nobody uses (RFC 4787 §4.3 REQ-5: at least 2 minutes). */
const NAT_MAPPING_MEMORY_MS = 120_000;
/**
 * A connector introduced unmeasured twice within this time has finished measuring without a result (a cold connect
 * is introduced again only once its measurement is in, which takes a few seconds at most even under loss).
 */
export const UNMEASURED_AGAIN_MS = 10_000;

/** Notes `key` as seen now in a bounded map (the oldest entry goes first). */
function remember(map: Map<string, number>, key: string): void {
  map.delete(key);
  map.set(key, Date.now());
  if (map.size > MAX_REMEMBERED_PEERS) map.delete(map.keys().next().value!);
}

/** The public address an introduction shows for the peer (its server-reflexive UDP candidate, or its advert's). */
function reflexiveAddress(candidates: readonly Candidate[]): string | null {
  const { advert, rest } = advertFromCandidates(candidates);
  return rest.find((c) => c.type === 'srflx' && c.transport === 'udp')?.address ?? advert?.address ?? null;
}

/** A cold connect's introductions after the first, at most (the first attempt's plus these, bounded by timeoutMs). */
export const MAX_REINTRODUCTIONS = 3;
/** Wait before introducing again after a failed attempt, doubled each time (RFC 8489 §6.2.1 style backoff). */
const REINTRODUCTION_BACKOFF_MS = 250;

/** An attempt that failed for want of packets (punch, handshake timeout), not because the peer said no or proved
 *  another key: worth another introduction. */
function transient(err: unknown): boolean {
  if (isNatpunchError(err, 'PUNCH_FAILED')) return true;
  return isNatpunchError(err, 'HANDSHAKE_FAILED') && !/proved/.test(err.message);
}

/** Techniques a first attempt is never dropped from while they run (see #behindGathering's checkpoint 2). */
const HARD_PUNCHES: readonly TechniqueName[] = ['predict', 'birthday', 'double-random'];

/** Added to a sequential listener's two round trips to the server before a second introduction (its refresh). */
const LISTENER_REFRESH_MARGIN_MS = 50;

/** What a cold connect's attempts differ in (Endpoint#behindGathering). */
interface EarlyAttemptOptions {
  /** Our side as the CONNECT showed it (the first attempt); default: what we know now. */
  localView?: NatView;
  signal?: AbortSignal;
  punchOnOwnSocket?: boolean;
  onClaim?: () => void;
}

/** A promise's outcome as a value (so racing it never leaves a rejection unhandled). */
function settle<T>(p: Promise<T>): Promise<{ session: T } | { error: unknown }> {
  return p.then(
    (session) => ({ session }),
    (error: unknown) => ({ error }),
  );
}

/** The peer answered and refused, or proved another key: a second introduction would hear the same. */
function refused(r: { session: unknown } | { error: unknown } | null): r is { error: unknown } {
  return (
    r !== null &&
    'error' in r &&
    (isNatpunchError(r.error, 'NOT_ALLOWED') || isNatpunchError(r.error, 'HANDSHAKE_FAILED'))
  );
}

function unsettle<T>(r: { session: T } | { error: unknown }): T {
  if ('session' in r) return r.session;
  throw r.error;
}

/** How many peers' latest session times an Endpoint remembers (oldest forgotten first). */
const MAX_REMEMBERED_PEERS = 1_024;

export interface EndpointConnectOptions {
  signal?: AbortSignal;
  /** Up to 1000 bytes inside the first check (Noise IK message 1; see ConnectOptions.earlyData). */
  earlyData?: Uint8Array;
  /** Names pinned to keys (see ConnectOptions.knownPeers). */
  knownPeers?: PeerPins;
  /** Default DEFAULT_CONNECT_TIMEOUT_MS (30 s) for the whole attempt. */
  timeoutMs?: number;
  onProgress?: (p: Progress) => void;
  /** Direct mode: the caller exchanged keys and candidates itself (`peer` must then be the key). */
  candidates?: Candidate[];
  connectionId?: Uint8Array;
}

export interface EndpointEvents {
  session: [session: Session];
  progress: [progress: Progress];
  'connection-error': [error: Error, peer: string];
  close: [];
}

/** Keepalive interval: explicit, else half the measured mapping lifetime, else the session default (15 s). */
export function keepAliveFor(options: { keepAliveMs?: number; mappingLifetimeMs?: number }): number | undefined {
  if (options.keepAliveMs !== undefined) return options.keepAliveMs;
  if (options.mappingLifetimeMs !== undefined && options.mappingLifetimeMs > 0) {
    return Math.max(1_000, Math.min(DEFAULT_KEEPALIVE_MS, Math.floor(options.mappingLifetimeMs / 2)));
  }
  return undefined;
}

/** Trust on first use: the session authenticated the introduced key, so a name seen for the first time is pinned to
 *  it. A pin file that cannot be written does not fail the session (logged). */
async function pinName(pin: (() => Promise<void>) | null, logger: Logger): Promise<void> {
  if (!pin) return;
  try {
    await pin();
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'could not pin the peer name to its key');
  }
}

export class Endpoint extends EventEmitter<EndpointEvents> {
  readonly publicKey: Buffer;
  readonly #local: LocalState;
  readonly #options: EndpointOptions;
  readonly #techniques: ResolvedTechniques;
  readonly #logger: Logger;
  readonly #incoming = new Set<Session>();
  readonly #outgoing = new Set<Session>();
  readonly #attempts = new Set<AbortController>();
  /** Incoming attempts whose connector had not measured its NAT (a cold connect's first introduction), by peer: a
   *  later introduction of that peer with its NAT measured supersedes them (see acceptOffer). */
  readonly #unmeasuredAttempts = new Map<
    string,
    Set<{ ac: AbortController; address: string | null; superseded: boolean }>
  >();
  /** Remembers Noise IK first messages so a replayed one opens no second session (docs/handshake.md). */
  readonly #ikReplay: IkReplayCache;
  /** When each peer's latest incoming session came (bounded): an attempt of that peer's that fails after it was
   *  superseded (see acceptOffer), not an error. */
  readonly #lastSessionAt = new Map<string, number>();
  /** When we last checked toward each peer while it had not measured its NAT (bounded), from our socket: see
   *  acceptOffer's hard punch on its own socket. */
  readonly #checkedUnmeasuredAt = new Map<string, number>();
  #closed = false;
  #onOffer = (offer: ConnectOfferLike) => void this.acceptOffer(offer);

  /** @internal use createEndpoint() */
  constructor(local: LocalState, options: EndpointOptions, techniques: ResolvedTechniques) {
    super();
    this.#local = local;
    this.#options = options;
    this.#techniques = techniques;
    this.#logger = options.logger ?? silentLogger;
    this.publicKey = Buffer.from(options.keyPair.publicKey);
    this.#ikReplay = options.replayCache ?? new IkReplayCache();
    if (options.accept !== false) local.rendezvous?.on('connect-request', this.#onOffer);
  }

  /** The one UDP socket every session of this Endpoint shares. */
  get socket(): UdxEndpoint {
    return this.#local.socket;
  }

  /** Same as `socket` (the name the Listener API used). */
  get endpoint(): UdxEndpoint {
    return this.#local.socket;
  }

  /** Our candidates as offered to peers (host, server-reflexive, TCP, mapped, relayed, hard-NAT advert). */
  get candidates(): Candidate[] {
    return this.#local.candidates();
  }

  get reflexive(): { address: string; port: number } | null {
    return this.#local.reflexive;
  }

  /** Sessions accepted from introductions (the Listener API). */
  get sessions(): ReadonlySet<Session> {
    return this.#incoming;
  }

  /** Every live session, both directions. */
  get allSessions(): Session[] {
    return [...this.#incoming, ...this.#outgoing];
  }

  /** @internal the registration's client; null without a rendezvous. */
  get rendezvous(): RendezvousLike | null {
    return this.#local.rendezvous;
  }

  /** @internal A one-shot connect() whose session went direct no longer needs the relay allocation. */
  async releaseRelay(): Promise<void> {
    await this.#local.releaseRelay();
  }

  /**
   * @internal A one-shot connect()'s relay allocation: released at once when the session is direct; when it is
   * relayed, once the background upgrade moved it to a direct path and the allocation then stayed idle for
   * RELAY_RELEASE_IDLE_MS (a Refresh with lifetime 0, RFC 8656 §7.2).
   */
  releaseRelayOnceDirect(session: Session): void {
    if (session.path.kind !== 'relay') {
      void this.releaseRelay();
      return;
    }
    const onPath = () => {
      if (session.path.kind === 'relay') return;
      session.off('path', onPath);
      const timer = setTimeout(() => void this.releaseRelay(), RELAY_RELEASE_IDLE_MS);
      timer.unref();
      session.once('close', () => clearTimeout(timer));
    };
    session.on('path', onPath);
    session.once('close', () => session.off('path', onPath));
  }

  /** Resolves once the Endpoint takes introductions (it already does when createEndpoint() resolved). */
  async listen(): Promise<void> {
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'the endpoint is closed');
  }

  #progress(p: Progress, extra?: (p: Progress) => void): void {
    this.#options.onProgress?.(p);
    extra?.(p);
    this.emit('progress', p);
  }

  #tuning(): SessionTuning {
    const o = this.#options;
    const keepAliveMs = keepAliveFor(o);
    return {
      ...(keepAliveMs !== undefined ? { keepAliveMs } : {}),
      ...(o.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
      ...(o.reconnectGraceMs !== undefined ? { reconnectGraceMs: o.reconnectGraceMs } : {}),
      ...(o.checkTimeoutMs !== undefined ? { checkTimeoutMs: o.checkTimeoutMs } : {}),
    };
  }

  /** After an attempt on a sequential NAT, publish a fresh predicted window (the attempt used up ports). */
  #refreshAfterAttempt(): void {
    if (this.#local.hard?.advert.kind !== 'sequential' || !this.#local.reflexive || this.#closed) return;
    void this.#local
      .refreshPrediction(rendezvousServer(this.#options.rendezvous))
      .then(() => {
        if (!this.#closed) return this.#local.rendezvous?.register();
      })
      .catch(() => {});
  }

  /**
   * Opens a session to `peer` (a name or key through the rendezvous; with `options.candidates`, direct mode).
   * The CONNECT goes out at once with the warm candidates; the race starts when the peer's answer is in.
   */
  async connect(peer: PeerSpec, options: EndpointConnectOptions = {}): Promise<Session> {
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'the endpoint is closed');
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const { signal, dispose } = timeoutSignal(timeoutMs, options.signal);
    const progress = (p: Progress) => this.#progress(p, options.onProgress);
    const rv = this.#local.rendezvous;
    try {
      let session: Session;
      let pin: (() => Promise<void>) | null = null;
      const target = peerTarget(peer);
      const ik = { ik: options.earlyData ? { earlyData: options.earlyData } : {} };
      if (options.candidates) {
        if (!target.key) throw new NatpunchError('BAD_ARGUMENT', 'direct mode needs the peer key');
        session = await runAttempt({
          role: 'initiator',
          connectionId: options.connectionId ?? randomBytes(16),
          peerKey: target.key,
          remote: options.candidates,
          local: this.#local,
          keyPair: this.#options.keyPair,
          ...(this.#options.natType ? { natType: this.#options.natType } : {}),
          techniques: this.#techniques,
          tuning: { ...this.#tuning(), ...ik },
          ...(this.#options.relayHoldMs !== undefined ? { relayHoldMs: this.#options.relayHoldMs } : {}),
          logger: this.#logger,
          progress,
          signal,
        });
      } else {
        if (!rv)
          throw new NatpunchError(
            'BAD_ARGUMENT',
            'this endpoint has no rendezvous: give the peer candidates (direct mode)',
          );
        // A cold one-shot connect sends its CONNECT before anything else is gathered (the rendezvous sees our
        // reflexive address from the datagram itself); a running Endpoint's candidates are warm already.
        const early = this.#local.gathering;
        if (!early) await this.#local.refreshPrediction(rendezvousServer(this.#options.rendezvous), signal);
        const sentView = this.#local.natView();
        const introduce = async (known?: Buffer): Promise<ConnectOfferLike> => {
          const offer = await rv.requestConnect(known ?? target.lookup, {
            candidates: this.#local.candidates(),
            signal,
          });
          // Identity before any byte goes to the introduced peer (no probe, no handshake): its key must be the one
          // asked for, or the one the name is pinned to. A lying rendezvous then gives a failed connection, never a
          // wrong one. Introduced again, it must be the key we already checked.
          if (known && !offer.peerKey.equals(known))
            throw new NatpunchError('PEER_KEY_MISMATCH', 'introduced again, the rendezvous named another key');
          if (!known) pin = await verifyPeer(target, offer.peerKey, options.knownPeers ?? this.#options.knownPeers);
          progress({
            phase: 'offer',
            peer: keyToId(offer.peerKey),
            ...(offer.peerName ? { peerName: offer.peerName } : {}),
            candidates: offer.candidates,
            role: 'initiator',
            ...(offer.mode ? { mode: offer.mode } : {}),
          });
          return offer;
        };
        const attempt = (offer: ConnectOfferLike, o: EarlyAttemptOptions = {}) =>
          runAttempt({
            role: 'initiator',
            connectionId: offer.connectionId,
            peerKey: offer.peerKey,
            remote: offer.candidates,
            ...(offer.startAt !== undefined ? { startAt: offer.startAt } : {}),
            local: this.#local,
            ...(o.localView ? { localView: o.localView } : {}),
            ...(o.punchOnOwnSocket ? { punchOnOwnSocket: true } : {}),
            ...(o.onClaim ? { onClaim: o.onClaim } : {}),
            keyPair: this.#options.keyPair,
            ...(this.#options.natType ? { natType: this.#options.natType } : {}),
            techniques: this.#techniques,
            tuning: { ...this.#tuning(), ...ik, recover: this.#recover(rv, offer.peerKey) },
            ...(this.#options.relayHoldMs !== undefined ? { relayHoldMs: this.#options.relayHoldMs } : {}),
            logger: this.#logger,
            progress,
            signal: o.signal ?? signal,
          });
        const sentAt = Date.now();
        const offer = await introduce();
        session = early
          ? await this.#behindGathering(
              offer,
              sentView,
              Date.now() - sentAt,
              attempt,
              () => introduce(offer.peerKey),
              signal,
            )
          : await attempt(offer);
      }
      if (this.#closed) {
        await session.close();
        throw new NatpunchError('SOCKET_CLOSED', 'the endpoint closed while connecting');
      }
      this.#outgoing.add(session);
      session.once('close', () => this.#outgoing.delete(session));
      await pinName(pin, this.#logger);
      progress({ phase: 'connected', peer: keyToId(session.remotePublicKey), rttMs: session.path.rttMs });
      return session;
    } catch (err) {
      if (signal.aborted && !options.signal?.aborted && !isNatpunchError(err, 'TIMEOUT')) {
        throw new NatpunchError(
          'TIMEOUT',
          `no session with the peer within ${timeoutMs} ms (${(err as Error).message})`,
          { cause: err, ...(isNatpunchError(err) && err.details ? { details: err.details } : {}) },
        );
      }
      throw err;
    } finally {
      dispose();
      this.#refreshAfterAttempt();
    }
  }

  /**
   * A cold connect (issue 17): the CONNECT left before our NAT was measured, so the peer planned with our NAT as
   * 'unknown'; the first attempt plans from the same view (`sentView`) and starts the moment the offer is in. When
   * the measurement, once in, calls for a technique that attempt lacks (a hard punch: the peer must know our
   * advert) and it has not won by then, it is dropped and we are introduced again with everything gathered.
   *
   * Dropping an attempt whose Noise IK message 1 the listener already accepted would leave the listener a session
   * nobody confirms (docs/handshake.md), so: facing a symmetric listener (its advert says so: a hard punch is likely
   * and plain checks from an unmeasured side rarely meet it), nothing is sent before the measurement decides; facing
   * a cone, the first attempt gets FIRST_ATTEMPT_GRACE before it may be dropped (where its checks get through at all,
   * it wins within that). A CONNECT that had to go over TCP (our UDP is blocked) waits for the relay and is repeated.
   */
  async #behindGathering(
    first: ConnectOfferLike,
    sentView: NatView,
    introductionMs: number,
    attempt: (offer: ConnectOfferLike, o?: EarlyAttemptOptions) => Promise<Session>,
    again: () => Promise<ConnectOfferLike>,
    signal: AbortSignal,
  ): Promise<Session> {
    const planInput = {
      remote: first.candidates,
      local: this.#local,
      techniques: this.#techniques,
      role: 'initiator' as const,
    };
    const viaTcp = first.via === 'tcp';
    const peerKind = planFor(planInput, sentView).remoteNat.kind;
    const waitFirst = viaTcp || peerKind === 'sequential' || peerKind === 'random';
    const drop = new AbortController();
    const startedAt = Date.now();
    let firstStartedAt = startedAt;
    /** Our side as the first attempt plans it: as the CONNECT showed it, or as measured when it waited for that. */
    let firstView = sentView;
    /** The first attempt found a path and runs its handshake: the listener may already hold its session. */
    let firstClaimed = false;
    const startFirst = (view: NatView) => {
      firstStartedAt = Date.now();
      firstView = view;
      return settle(
        attempt(first, {
          localView: view,
          signal: AbortSignal.any([signal, drop.signal]),
          onClaim: () => (firstClaimed = true),
        }),
      );
    };
    let outcome = waitFirst ? null : startFirst(sentView);
    const sentPlan = () => planFor(planInput, sentView).plan;
    const fullPlan = () => planFor(planInput, this.#local.natView()).plan;
    // Checkpoint 1: the NAT measurement.
    const measured = this.#local.whenMeasured(signal).then(() => null);
    const early = outcome ? await Promise.race([outcome, measured]) : null;
    if (early && 'session' in early) return early.session;
    if (refused(early)) throw early.error;
    await (viaTcp ? this.#local.whenGathered(signal) : measured);
    if (signal.aborted) {
      if (!outcome) throw signal.reason;
      return unsettle(await outcome);
    }
    // Nothing at all can work for the pair as measured (e.g. random ↔ random without relay): say so at once, with
    // our NAT as measured, sending nothing.
    if (!outcome && fullPlan().steps.length === 0) return attempt(first);
    if (!needsNewIntroduction(sentPlan(), fullPlan(), early !== null || viaTcp)) {
      // The peer's plan (from the view the CONNECT gave it) has everything ours needs: no second introduction. A
      // first attempt that waited for the measurement plans from it (e.g. a cone facing a random listener: the
      // birthday, planner.ts birthdayWithUnmeasured; the listener aims at the address the CONNECT came from).
      outcome ??= startFirst(this.#local.natView());
      const firstPlan = planFor(planInput, firstView).plan;
      // Checkpoint 2: everything gathered (TCP port, our relay): a way the first attempt lacks, while it has not won
      // (e.g. UDP between the peers dropped, TCP open). A hard punch under way is not dropped for it (its sockets
      // and probes would be spent for nothing): only when it fails does a second introduction bring the rest.
      let done = await Promise.race([outcome, this.#local.whenGathered(signal).then(() => null)]);
      if (done === null && !signal.aborted && firstPlan.steps.some((s) => HARD_PUNCHES.includes(s.technique)))
        done = await outcome;
      if (done && 'session' in done) return done.session;
      if (signal.aborted || refused(done) || !needsNewIntroduction(firstPlan, fullPlan(), true))
        return unsettle(done ?? (await outcome));
    }
    if (outcome) {
      const grace = FIRST_ATTEMPT_GRACE_MS - (Date.now() - firstStartedAt);
      const won =
        grace > 0
          ? await Promise.race([
              outcome,
              sleep(grace, signal).then(
                () => null,
                () => null,
              ),
            ])
          : null;
      if (won && 'session' in won) return won.session;
      // A first attempt whose technique already found a path and runs its handshake is not dropped: the listener
      // may already hold the session (XX completes there one message before here), and dropping it would leave the
      // listener a session nobody uses while we build another. It ends on its own, either way, within its bounds.
      const settled = firstClaimed && !won ? await outcome : won;
      if (settled && 'session' in settled) return settled.session;
      if (refused(settled)) throw settled.error;
      drop.abort(new NatpunchError('ABORTED', 'introduced again, with our NAT measured'));
      // One owner: a session the dropped attempt still completes is closed here, never handed out.
      void outcome.then((r) => ('session' in r ? r.session.close().catch(() => {}) : undefined));
    }
    // A sequential NAT's window must start after TCP's allocations (one counter): wait for those, then observe.
    const sequential = this.#local.hard?.advert.kind === 'sequential';
    if (viaTcp || sequential) await this.#local.whenGathered(signal);
    // A sequential listener republishes its window once its checks toward us took ports of it (acceptOffer): about
    // two of its round trips to the server after it was introduced, when we were (we estimate its RTT by ours).
    if (peerKind === 'sequential') {
      const wait = startedAt + 2 * introductionMs + LISTENER_REFRESH_MARGIN_MS - Date.now();
      if (wait > 0) await sleep(wait, signal);
    }
    // The second introduction, retried like a lost request (RFC 8489 §6.2.1: a bounded count, doubling waits): the
    // CONNECT and its offer are retransmitted by the rendezvous client and server, but the attempt they start can
    // still die of loss (a relay handshake that ran out of time, a punch whose probes were lost) with most of the
    // connect's time left; one more introduction then starts everything afresh.
    for (let n = 0; ; n++) {
      await this.#local.refreshPrediction(rendezvousServer(this.#options.rendezvous), signal);
      const r = await settle(attempt(await again(), { punchOnOwnSocket: (outcome !== null || n > 0) && sequential }));
      if ('session' in r) return r.session;
      if (n + 1 >= MAX_REINTRODUCTIONS || signal.aborted || !transient(r.error)) throw r.error;
      this.#logger.info({ err: (r.error as Error).message, again: n + 1 }, 'introduced again after a failed attempt');
      await sleep(REINTRODUCTION_BACKOFF_MS * 2 ** n, signal);
    }
  }

  /** Re-establishes a UDP path through the rendezvous when the session's dies (NAT rebinding): a fresh introduction
   *  and checks, then the session moves onto the punched pair (Session#migrate). */
  #recover(rv: RendezvousLike, peerKey: Buffer): SessionTuning['recover'] {
    return async (signal) => {
      const again = await rv.requestConnect(peerKey, { candidates: this.#local.candidates(), signal });
      if (!again.peerKey.equals(peerKey))
        throw new NatpunchError('HANDSHAKE_FAILED', 'the rendezvous introduced another key');
      const checks = new ConnectivityChecks({
        transport: this.#local.socket,
        role: 'initiator',
        connectionId: again.connectionId,
        key: deriveCheckKey(again.connectionId, this.#options.keyPair.publicKey, peerKey),
        local: this.#local.candidates().filter((c) => c.transport === 'udp' && c.type !== 'predicted'),
        remote: advertFromCandidates(again.candidates).rest,
        nomination: 'implicit',
        signal,
        logger: this.#logger,
      });
      const r = await checks.run();
      return { address: r.remote.address, port: r.remote.port, path: pathOf(r) };
    };
  }

  /**
   * Handles one introduction (from the rendezvous, or handed over directly in direct mode): the race, then the
   * Noise handshake, `allow`, 'session'. Resolves with the session, or null when the attempt failed.
   */
  async acceptOffer(offer: ConnectOfferLike): Promise<Session | null> {
    if (this.#closed || offer.role !== 'responder') return null;
    const peer = keyToId(offer.peerKey);
    if (this.#attempts.size >= MAX_CONCURRENT_ATTEMPTS) {
      this.#logger.warn({ peer }, 'too many connection attempts in progress; dropping one');
      this.emit(
        'connection-error',
        new NatpunchError('RATE_LIMITED', `more than ${MAX_CONCURRENT_ATTEMPTS} connection attempts in progress`),
        peer,
      );
      return null;
    }
    // A connector that sent no advert may not have measured its NAT yet (a cold connect) and come back with one for
    // a hard punch: the checks we send it now take ports of our predicted window, so a sequential NAT publishes a
    // fresh window as soon as they are out (the second introduction then carries it).
    const unmeasured = advertFromCandidates(offer.candidates).advert === null;
    // Those checks left a mapping toward the peer on a sequential NAT, out of the window we publish: when the peer
    // comes back with its advert, our hard punch runs from a fresh socket, whose first flow takes the window's start.
    const checkedAt = this.#checkedUnmeasuredAt.get(peer);
    const punchOnOwnSocket = !unmeasured && checkedAt !== undefined && Date.now() - checkedAt < NAT_MAPPING_MEMORY_MS;
    // Unmeasured again, moments after an unmeasured introduction: its measurement is in and gave nothing.
    const peerMeasuredNothing = unmeasured && checkedAt !== undefined && Date.now() - checkedAt < UNMEASURED_AGAIN_MS;
    if (unmeasured) remember(this.#checkedUnmeasuredAt, peer);
    const progress = (p: Progress) => {
      this.#progress(p);
      if (unmeasured && p.phase === 'technique-start' && p.technique === 'udp-checks')
        setImmediate(() => this.#refreshAfterAttempt());
    };
    progress({
      phase: 'offer',
      peer,
      ...(offer.peerName ? { peerName: offer.peerName } : {}),
      candidates: offer.candidates,
      role: 'responder',
      ...(offer.mode ? { mode: offer.mode } : {}),
    });
    const ac = new AbortController();
    this.#attempts.add(ac);
    // A cold connector introduced again with its NAT measured dropped its first attempt before it asked
    // (#behindGathering), so ours for that introduction is superseded: stopped now. Left running, its techniques
    // spend sockets and packets on an introduction nobody answers (the birthday's 256 sockets for 8 s) and run
    // beside the new attempt's (under loss its relay step, held back 4 s, started in the middle of the new one).
    const address = reflexiveAddress(offer.candidates);
    if (!unmeasured) this.#supersede(peer, address);
    const mine = { ac, address, superseded: false };
    if (unmeasured) {
      const set = this.#unmeasuredAttempts.get(peer) ?? new Set();
      set.add(mine);
      this.#unmeasuredAttempts.set(peer, set);
    }
    const { signal, dispose } = timeoutSignal(DEFAULT_CONNECT_TIMEOUT_MS, ac.signal);
    const attemptStart = Date.now();
    try {
      const session = await runAttempt({
        role: 'responder',
        connectionId: offer.connectionId,
        peerKey: Buffer.from(offer.peerKey),
        remote: offer.candidates,
        ...(offer.startAt !== undefined ? { startAt: offer.startAt } : {}),
        local: this.#local,
        keyPair: this.#options.keyPair,
        ...(this.#options.natType ? { natType: this.#options.natType } : {}),
        ...(this.#options.allow !== undefined ? { allow: this.#options.allow } : {}),
        techniques: this.#techniques,
        tuning: { ...this.#tuning(), ik: { replay: this.#ikReplay } },
        ...(punchOnOwnSocket ? { punchOnOwnSocket: true } : {}),
        ...(peerMeasuredNothing ? { peerMeasuredNothing: true } : {}),
        ...(this.#options.relayHoldMs !== undefined ? { relayHoldMs: this.#options.relayHoldMs } : {}),
        logger: this.#logger,
        progress,
        signal,
      });
      const surface = (): Session | null => {
        if (this.#closed) {
          void session.close().catch(() => {});
          return null;
        }
        this.#incoming.add(session);
        session.once('close', () => this.#incoming.delete(session));
        remember(this.#lastSessionAt, peer);
        progress({ phase: 'connected', peer, rttMs: session.path.rttMs });
        this.emit('session', session);
        return session;
      };
      // An IK session exists from the connector's message 1 on; it is the connector's only once its first encrypted
      // frame shows it got message 2. Until then it is not surfaced: under loss a message 2 that never arrived left
      // the connector to be introduced again while this side served a session nobody would use (the matrix's
      // seq-rc under 5% loss). A newer introduction of the same peer (#supersede) or the handshake timeout ends it.
      // Except when message 1 carried early data: the connector asked for 0-RTT delivery (TLS 1.3 style, with its
      // caveats, docs/handshake.md), so the session and its early data are surfaced at once, one trip sooner.
      return session.isConfirmed || session.earlyData ? surface() : await untilConfirmed(session, signal, surface);
    } catch (err) {
      // A peer that re-punched to resume an existing session never starts a handshake: not worth an error. Nor is
      // an attempt the peer dropped because it had itself introduced again (a cold connect whose NAT measurement
      // came in after its first CONNECT) and that newer attempt already gave a session.
      const resumed =
        [...this.#incoming].some((s) => s.remotePublicKey.equals(offer.peerKey)) &&
        isNatpunchError(err, 'HANDSHAKE_FAILED');
      const superseded = (this.#lastSessionAt.get(peer) ?? 0) >= attemptStart || mine.superseded;
      this.#logger.info(
        { peer, err: (err as Error).message },
        resumed ? 'resume punch finished' : superseded ? 'superseded attempt ended' : 'incoming connection failed',
      );
      if (!resumed && !superseded && !this.#closed) this.emit('connection-error', err as Error, peer);
      return null;
    } finally {
      dispose();
      this.#attempts.delete(ac);
      const set = this.#unmeasuredAttempts.get(peer);
      if (set?.delete(mine) && set.size === 0) this.#unmeasuredAttempts.delete(peer);
      this.#refreshAfterAttempt();
    }
  }

  /** Stops the attempts of `peer` from an unmeasured introduction from the same public address (acceptOffer). */
  #supersede(peer: string, address: string | null): void {
    const set = this.#unmeasuredAttempts.get(peer);
    if (!set) return;
    for (const a of set) {
      if (a.address !== address) continue;
      a.superseded = true;
      a.ac.abort(new NatpunchError('ABORTED', 'the peer was introduced again, with its NAT measured'));
      set.delete(a);
    }
    if (set.size === 0) this.#unmeasuredAttempts.delete(peer);
  }

  /** Closes every session, the registration, the mapping, the relay allocation and the socket (if it owns it). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#local.rendezvous?.off('connect-request', this.#onOffer);
    for (const a of this.#attempts) a.abort(new NatpunchError('ABORTED', 'endpoint closed'));
    await Promise.all([...this.#incoming, ...this.#outgoing].map((s) => s.close().catch(() => {})));
    await this.#local.close();
    this.emit('close');
  }
}

/** Binds the socket, gathers in parallel (bounded), registers, and starts accepting; resolves when reachable. */
export async function createEndpoint(options: EndpointOptions): Promise<Endpoint> {
  const techniques = resolveTechniques(options, rendezvousServer(options.rendezvous) !== null);
  const logger = options.logger ?? silentLogger;
  const holder: { ep: Endpoint | null; early: Progress[] } = { ep: null, early: [] };
  const local = await LocalState.gather({
    ...options,
    techniques,
    register: options.register !== false && options.rendezvous !== undefined,
    waitForMapping: options.accept !== false && options.portMapping !== undefined && options.portMapping !== false,
    accepting: options.accept !== false,
    // A one-shot connector through a rendezvous sends its CONNECT first and gathers behind it (issue 17); an
    // explicit relay or TCP-only transport is needed before anything can work, so those gather first.
    background:
      options.accept === false &&
      options.rendezvous !== undefined &&
      techniques.transport !== 'tcp' &&
      (techniques.relay === null || techniques.relay === 'auto'),
    logger,
    // Before the Endpoint exists only the caller's callback hears progress.
    progress: (p) => (holder.ep ? holder.ep.emit('progress', p) : undefined, options.onProgress?.(p)),
  });
  const ep = new Endpoint(local, options, techniques);
  holder.ep = ep;
  if (options.signal?.aborted) {
    await ep.close();
    throw new NatpunchError('ABORTED', 'aborted', { cause: options.signal.reason });
  }
  return ep;
}

/**
 * Surfaces `session` from its synchronous 'confirmed' event (so the caller's 'stream' handlers are in place before the
 * confirming frame is dispatched); rejects when it ends unconfirmed. An abort (superseded, timed out) closes it.
 */
function untilConfirmed<T>(session: Session, signal: AbortSignal, surface: () => T): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => void session.close().catch(() => {});
    signal.addEventListener('abort', onAbort, { once: true });
    const done = () => signal.removeEventListener('abort', onAbort);
    session.once('confirmed', () => {
      done();
      resolve(surface());
    });
    session.confirmed.catch((err: unknown) => {
      done();
      reject(err as Error);
    });
    if (signal.aborted) onAbort();
  });
}
