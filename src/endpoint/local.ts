/**
 * What an Endpoint knows and holds about its own side, gathered in parallel when it starts and kept warm while it
 * runs: the socket, the rendezvous registration, host candidates, the NAT measurement (hard-NAT advert), the TCP
 * port, the relay allocation and the gateway port mapping. One owner: LocalState.close() releases all of it.
 *
 * Nothing here waits on anything it does not need: port mapping runs in the background (a gateway that never
 * answers costs nothing); the measurement, TCP gathering and relay allocation run side by side, each bounded.
 */
import { isIP } from 'node:net';
import { lookup } from 'node:dns/promises';
import { networkInterfaces } from 'node:os';
import { UdxEndpoint } from '../net/udx.js';
import { RendezvousClient, parseRendezvousList, type TurnCredentials } from '../rendezvous/client.js';
import { RelayPath, openRendezvousRelay, parseRelaySpec } from '../relay/path.js';
import { addonStatus } from '../net/native.js';
import { advertToCandidates, gatherHardNat, type HardNatOptions } from '../traversal/hardwire.js';
import { reobserve, predictPorts, type HardNatAdvert } from '../traversal/predict.js';
import { candidatePriority, dedupeCandidates, type Candidate } from '../traversal/candidate.js';
import { openTcpLocal, TCP_GATHER_AUTO_TIMEOUT_MS, type TcpLocal } from '../traversal/tcp-session.js';
import type { NatView } from '../traversal/technique.js';
import type { PortMapper, PortMapperOptions } from '../portmap/mapper.js';
import { NatpunchError } from '../util/errors.js';
import { timeoutSignal } from '../util/abort.js';
import type { Logger } from '../util/log.js';
import {
  DEFAULT_RENDEZVOUS_PORT,
  type CommonOptions,
  type Progress,
  type RendezvousFactory,
  type RendezvousLike,
  type TransportMode,
} from './types.js';
import type { ResolvedTechniques } from './defaults.js';

/** Port mapping: how long the gateway gets to map the port (RFC 6887 §8.1.1 and RFC 6886 §3.1 retransmit longer;
 *  a gateway that maps at all answers within a few round trips). It runs in the background either way. */
export const DEFAULT_PORT_MAPPING_TIMEOUT_MS = 2_000;
/** Port mapping: SSDP search window inside that bound (UPnP Device Architecture 1.1 §1.3.2, MX). */
const PORT_MAPPING_SSDP_MS = 1_200;
/** relay 'auto': how long after REGISTERED to wait for the TURN credentials the server sends right behind it. */
export const AUTO_RELAY_WAIT_MS = 1_000;
/** ... at least this, and twice the measured RTT to the server (the two datagrams may be reordered or paced). */
const AUTO_RELAY_MIN_WAIT_MS = 150;
/** ... and while the server announced them (REGISTERED credentialsFollow) and the client is asking again for ones that
 *  were lost (rendezvous/client.ts CREDENTIAL_WAIT_MS: three asks within ~2 s plus round trips). */
const AUTO_RELAY_PENDING_WAIT_MS = 3_000;
/** Default NAT measurement bound when hardNat was not asked for explicitly. A server without STUN on port + 1 costs
 *  only one observation's timeout (predict.ts OBSERVE_TIMEOUT_MS, 1.5 s: the measurement then fails and the planner
 *  treats our NAT as unknown); the bound matters on lossy links, where the measurement's ~7 transactions need
 *  retransmissions (the lab's 5 %-per-link loss made a 2.5 s bound fail often). */
const DEFAULT_MEASURE_BOUND_MS = 5_000;

/** `p`, or earlier when `signal` fires (never rejects). */
function untilAborted(p: Promise<void>, signal?: AbortSignal): Promise<void> {
  if (!signal) return p;
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      signal.removeEventListener('abort', done);
      resolve();
    };
    signal.addEventListener('abort', done, { once: true });
    void p.then(done, done);
  });
}

/** Every server of a rendezvous spec ("a,b" or a list: failover order); null for a factory or none. */
export function rendezvousList(spec: CommonOptions['rendezvous']): Array<{ host: string; port: number }> | null {
  if (!spec || typeof spec === 'function') return null;
  if (typeof spec === 'string') return parseRendezvousList(spec, DEFAULT_RENDEZVOUS_PORT);
  return (Array.isArray(spec) ? spec : [spec]).map((s) => ({ host: s.host, port: s.port ?? DEFAULT_RENDEZVOUS_PORT }));
}

/** The (first) rendezvous as host and port when given as addresses or names, else null (a factory, or none). */
export function rendezvousServer(spec: CommonOptions['rendezvous']): { host: string; port: number } | null {
  return rendezvousList(spec)?.[0] ?? null;
}

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/**
 * Host candidates for a socket: its bound address, or for a wildcard bind the non-internal interface addresses
 * (with `loopback`, only 127.0.0.1: a rendezvous on loopback means both peers are on this machine).
 */
export function defaultCandidates(endpoint: UdxEndpoint, opts: { loopback?: boolean } = {}): Candidate[] {
  const { address, port } = endpoint.address();
  if (address !== '0.0.0.0' && address !== '::')
    return [{ type: 'host', transport: 'udp', address, port, priority: candidatePriority('host') }];
  if (opts.loopback)
    return [{ type: 'host', transport: 'udp', address: '127.0.0.1', port, priority: candidatePriority('host') }];
  const out: Candidate[] = [];
  let pref = 65535;
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) {
      if (i.internal || i.family !== 'IPv4') continue;
      out.push({
        type: 'host',
        transport: 'udp',
        address: i.address,
        port,
        priority: candidatePriority('host', pref--),
      });
    }
  }
  return dedupeCandidates(out);
}

function makeRendezvous(
  spec: NonNullable<CommonOptions['rendezvous']>,
  init: Parameters<RendezvousFactory>[0],
): RendezvousLike {
  if (typeof spec === 'function') return spec(init);
  const server = rendezvousList(spec)!;
  for (const s of server) {
    if (!Number.isInteger(s.port) || s.port <= 0 || s.port > 65535)
      throw new NatpunchError('BAD_ARGUMENT', `bad rendezvous port in ${JSON.stringify(spec)}`);
  }
  return new RendezvousClient({
    transport: init.transport,
    server,
    keyPair: init.keyPair,
    ...(init.name !== undefined ? { name: init.name } : {}),
    candidates: init.candidates,
    logger: init.logger,
    ...(init.report === false ? { report: false } : {}),
  });
}

export interface GatherOptions extends CommonOptions {
  name?: string;
  techniques: ResolvedTechniques;
  /** Register now (a listener, an Endpoint; a one-shot connect only to get relay credentials). */
  register: boolean;
  /** Wait (bounded) for the gateway mapping before resolving: a listener that asked for port mapping explicitly. */
  waitForMapping: boolean;
  /**
   * An Endpoint that accepts introductions (default): wait for the relay and publish everything gathered in its
   * registration. A one-shot connector does neither: its CONNECT carries its candidates, and the relay allocation
   * finishes in the background (the planner holds the relay back anyway) unless UDP is blocked, when it is the way.
   */
  accepting: boolean;
  /**
   * A one-shot connector's CONNECT goes first (issue 17): gather() resolves once the socket is bound and the
   * rendezvous client exists, and everything else (registration for relay credentials, NAT measurement, TCP, relay,
   * port mapping) runs behind it; whenMeasured() / whenGathered() say when it is in. Failures there are logged,
   * never fatal: the introduction does not depend on them.
   */
  background?: boolean;
  signal?: AbortSignal;
  logger: Logger;
  progress: (p: Progress) => void;
}

/** Our side, warm. Built by LocalState.gather(); closed once by its owner (the Endpoint). */
export class LocalState {
  readonly socket: UdxEndpoint;
  readonly rendezvous: RendezvousLike | null;
  readonly transport: TransportMode;
  #ownsSocket: boolean;
  #host: Candidate[];
  #tcp: TcpLocal | null = null;
  /** TCP port prediction's window candidate (tcp-local.ts predict()), refreshed before each offer. */
  #tcpPredicted: Candidate[] = [];
  /** Why TCP is not in the race at all (no addon, gathering failed), for session.path.transportReason. */
  #tcpUnavailable: string | null = null;
  #hard: {
    advert: HardNatAdvert;
    candidates: Candidate[];
    opts: HardNatOptions;
    srflx: { address: string; port: number };
  } | null = null;
  #relay: RelayPath | null = null;
  /** The relay allocation still under way (a one-shot connector does not wait for it). */
  #relayPending: Promise<void> | null = null;
  #mapper: PortMapper | null = null;
  #reflexive: { address: string; port: number } | null = null;
  /** Background gathering (GatherOptions.background): the NAT measurement alone, and everything. */
  #measured: Promise<void> = Promise.resolve();
  #gathered: Promise<void> = Promise.resolve();
  #gathering = false;
  #closed = false;
  #log: Logger;

  private constructor(
    socket: UdxEndpoint,
    ownsSocket: boolean,
    host: Candidate[],
    rv: RendezvousLike | null,
    transport: TransportMode,
    log: Logger,
  ) {
    this.socket = socket;
    this.#ownsSocket = ownsSocket;
    this.#host = host;
    this.rendezvous = rv;
    this.transport = transport;
    this.#log = log;
  }

  /** Binds (unless given a socket), then gathers everything in parallel, each part bounded (in the background when
   *  `o.background`: then this resolves as soon as the socket and the rendezvous client are there). */
  static async gather(o: GatherOptions): Promise<LocalState> {
    const ownsSocket = !o.endpoint;
    const socket = o.endpoint ?? (await UdxEndpoint.bind(o.bind ?? {}));
    let state: LocalState | null = null;
    try {
      o.progress({ phase: 'gathering', local: socket.address() });
      const server = rendezvousServer(o.rendezvous);
      const host =
        o.candidates ?? defaultCandidates(socket, { loopback: server !== null && isLoopbackHost(server.host) });
      const self: { state: LocalState | null } = { state: null };
      const rv = o.rendezvous
        ? makeRendezvous(o.rendezvous, {
            transport: socket,
            keyPair: o.keyPair,
            ...(o.name !== undefined ? { name: o.name } : {}),
            candidates: () => self.state?.candidates() ?? host,
            logger: o.logger,
            ...(o.report === false ? { report: false } : {}),
          })
        : null;
      state = self.state = new LocalState(socket, ownsSocket, host, rv, o.techniques.transport, o.logger);
      if (o.background) state.#gatherBehind(server, o);
      else await state.#gatherAll(server, o).done;
      return state;
    } catch (err) {
      if (state) await state.close();
      else if (ownsSocket) await socket.close().catch(() => {});
      throw err;
    }
  }

  /**
   * Background gathering: starts once the current turn's work is done (the caller's CONNECT leaves first: the
   * rendezvous sees our reflexive address from that datagram itself), never fails the Endpoint.
   */
  #gatherBehind(server: { host: string; port: number } | null, o: GatherOptions): void {
    this.#gathering = true;
    // Its progress stops with the Endpoint: a connect() that already failed (e.g. PEER_KEY_CHANGED) or whose session
    // closed says nothing after its last word.
    const quietAfterClose: GatherOptions = { ...o, progress: (p) => void (this.#closed || o.progress(p)) };
    const started = new Promise<void>((resolve) => setImmediate(resolve)).then(() =>
      this.#closed ? null : this.#gatherAll(server, quietAfterClose),
    );
    const quiet = (err: unknown) => {
      if (!this.#closed) this.#log.info({ err: (err as Error).message }, 'gathering behind the CONNECT failed');
    };
    this.#measured = started.then((g) => g?.measured).catch(() => {});
    this.#gathered = started
      .then((g) => g?.done)
      .catch(quiet)
      .finally(() => (this.#gathering = false));
  }

  /**
   * Everything in parallel, each part bounded; `done` rejects when a part the caller cannot go without fails (the
   * registration of an Endpoint that accepts, an explicit relay). `measured`: the NAT measurement alone.
   */
  #gatherAll(
    server: { host: string; port: number } | null,
    o: GatherOptions,
  ): { measured: Promise<void>; done: Promise<void> } {
    const rv = this.rendezvous;
    const t = o.techniques;
    const registered =
      rv && o.register
        ? rv.register(o.signal).then((r) => {
            this.#reflexive = { address: r.reflexive.address, port: r.reflexive.port };
            return r;
          })
        : null;
    // Everything below runs side by side; only the registration failing is fatal (a listener must be reachable).
    const jobs: Array<Promise<unknown>> = [];
    if (registered) jobs.push(registered);
    const measure = t.hardNat && (server || t.hardNat.stun) ? t.hardNat : null;
    let tcpJob: Promise<void>;
    let measured: Promise<void> = Promise.resolve();
    if (o.background) {
      // Behind a CONNECT the measurement goes first: it decides whether the introduction must be repeated with a
      // hard-NAT advert (Endpoint.connect). TCP follows it, never beside it (one counter, see below); a sequential
      // NAT's window is measured again after TCP, right before it is offered (refreshPrediction()).
      measured = measure ? this.#gatherHard(measure, server, o, o.hardNat === undefined) : measured;
      tcpJob = t.transport !== 'udp' ? measured.then(() => this.#gatherTcp(t.transport, server, o)) : measured;
      jobs.push(tcpJob);
    } else {
      // TCP first, then the NAT measurement: a sequential NAT may count TCP and UDP mappings with one counter, so
      // the predicted window must be measured after the TCP mapping exists, never beside it.
      tcpJob = t.transport !== 'udp' ? this.#gatherTcp(t.transport, server, o) : Promise.resolve();
      jobs.push(tcpJob);
      if (measure) {
        measured = tcpJob.catch(() => {}).then(() => this.#gatherHard(measure, server, o, o.hardNat === undefined));
        jobs.push(measured);
      }
    }
    if (t.relay) {
      const relayJob = this.#openRelay(t.relay, rv, registered, o);
      relayJob.catch(() => {}); // observed below or by the jobs; never an unhandled rejection
      this.#relayPending = relayJob
        .then(
          () => {},
          () => {},
        )
        .finally(() => (this.#relayPending = null));
      // An explicit relay is waited for (failing to open it is an error the caller should see). Behind a CONNECT
      // 'everything gathered' includes it: a sequential NAT's window is observed after its flow exists.
      if (o.accepting || o.background || !registered || t.relay !== 'auto') jobs.push(relayJob);
      else jobs.push(registered.then((r) => ((r as { via?: string }).via === 'tcp' ? relayJob : undefined)));
      // A node that took over after a failover issues credentials for its own relay: follow them there.
      if (t.relay === 'auto' && rv instanceof RendezvousClient)
        rv.on('turn-credentials', (c: TurnCredentials) => this.#followRelay(c, rv));
    }
    // Port mapping never delays a connection; a listener that asked for it explicitly waits for it (bounded) so
    // its first registration already offers the mapped candidate.
    if (t.portMapping) {
      const mapped = this.#mapInBackground(t.portMapping, o);
      if (o.waitForMapping) jobs.push(mapped);
    }
    const done = (async () => {
      const results = await Promise.allSettled(jobs);
      const fatal = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (fatal) throw fatal.reason;
      // Transport tcp: the UDP measurement took fresh ports after TCP's window was measured (many sequential NATs
      // count both with one counter), so measure TCP again: the window we offer must start after our latest
      // allocation (tcp-predict.ts). With UDP on, the UDP window stays the latest: its hard punch runs first.
      if (this.#tcp && this.#hard && t.transport === 'tcp' && !this.#closed)
        this.#tcpPredicted = await this.#tcp.predict(o.signal ? { signal: o.signal } : {});
      if (registered) {
        // Publish what gathering found (adverts, TCP, relay) with the registration the server introduces us by.
        if (o.accepting && (this.#hard || this.#tcp || this.#relay)) await rv!.register(o.signal);
        o.progress({ phase: 'registered', reflexive: this.#reflexive! });
      }
    })();
    return { measured: measured.catch(() => {}), done };
  }

  /** Background gathering still under way (GatherOptions.background). */
  get gathering(): boolean {
    return this.#gathering;
  }

  /** Resolves once the NAT measurement is in (or failed), or when `signal` fires. */
  whenMeasured(signal?: AbortSignal): Promise<void> {
    return untilAborted(this.#measured, signal);
  }

  /** Resolves once everything gathered in the background is in (or failed), or when `signal` fires. */
  whenGathered(signal?: AbortSignal): Promise<void> {
    return untilAborted(this.#gathered, signal);
  }

  async #gatherTcp(
    mode: TransportMode,
    server: { host: string; port: number } | null,
    o: GatherOptions,
  ): Promise<void> {
    const status = addonStatus();
    if (!status.available) {
      if (mode === 'tcp')
        throw new NatpunchError('ADDON_UNAVAILABLE', `TCP transport unavailable: ${status.reason}`, {
          details: { reason: status.reason },
        });
      this.#tcpUnavailable = `TCP hole punching unavailable (${status.reason}); using UDP`;
      o.progress({ phase: 'transport', transport: 'udp', reason: this.#tcpUnavailable });
      return;
    }
    try {
      this.#tcp = await openTcpLocal({
        hostAddresses: this.#host.filter((c) => c.type === 'host').map((c) => c.address),
        ...(server ? { stun: server } : {}),
        ...(mode === 'auto' ? { timeoutMs: TCP_GATHER_AUTO_TIMEOUT_MS } : {}),
        // --tcp-seq off: no port Q for the sequence techniques (tcp-local.ts).
        ...(o.techniques.tcpSequence === 'off' ? { sequencePort: false } : {}),
        ...(o.signal ? { signal: o.signal } : {}),
        logger: o.logger,
      });
      if (this.#closed) this.#tcp.close();
      else this.#tcpPredicted = await this.#tcp.predict(o.signal ? { signal: o.signal } : {});
    } catch (err) {
      if (mode === 'tcp' || o.signal?.aborted) throw err;
      this.#tcpUnavailable = `TCP unavailable (${(err as Error).message}); using UDP`;
      o.progress({ phase: 'transport', transport: 'udp', reason: this.#tcpUnavailable });
    }
  }

  async #gatherHard(
    opts: HardNatOptions,
    server: { host: string; port: number } | null,
    o: GatherOptions,
    byDefault: boolean,
  ): Promise<void> {
    try {
      const bounded =
        byDefault && opts.measureTimeoutMs === undefined
          ? { ...opts, measureTimeoutMs: DEFAULT_MEASURE_BOUND_MS }
          : opts;
      // Behind a CONNECT (to the rendezvous' host and port, the first STUN server) the mapping exists already; it
      // left before this started when no name had to be resolved first (gather(): the next turn of the event loop).
      const mapped = o.background === true && server !== null && isIP(server.host) !== 0;
      const g = await gatherHardNat(this.socket, bounded, server, o.signal, mapped);
      const marker = g.candidates[0]!;
      this.#hard = { ...g, opts, srflx: { address: marker.address, port: marker.port } };
      o.logger.info({ kind: g.advert.kind, delta: g.advert.delta, ports: g.advert.ports.length }, 'hard NAT advert');
      o.progress({ phase: 'hard-nat', kind: g.advert.kind, delta: g.advert.delta, ports: g.advert.ports });
    } catch (err) {
      if (o.signal?.aborted) throw err;
      o.logger.info({ err: (err as Error).message }, 'NAT measurement failed; the planner treats our NAT as unknown');
    }
  }

  async #openRelay(
    spec: NonNullable<ResolvedTechniques['relay']>,
    rv: RendezvousLike | null,
    registered: Promise<unknown> | null,
    o: GatherOptions,
  ): Promise<void> {
    try {
      if (spec instanceof RelayPath) {
        this.#relay = spec;
      } else if (spec === 'auto') {
        if (!(rv instanceof RendezvousClient)) return;
        await (registered ?? rv.register(o.signal));
        const wait = rv.credentialsPending
          ? AUTO_RELAY_PENDING_WAIT_MS
          : Math.min(AUTO_RELAY_WAIT_MS, Math.max(AUTO_RELAY_MIN_WAIT_MS, 2 * (rv.rttMs ?? 0)));
        if (!rv.turnCredentials) {
          await new Promise<void>((resolve) => {
            const done = () => {
              clearTimeout(timer);
              rv.off('turn-credentials', done);
              resolve();
            };
            const timer = setTimeout(done, wait);
            rv.on('turn-credentials', done);
          });
        }
        const c = rv.turnCredentials;
        if (!c) {
          o.progress({ phase: 'relay', ok: false, error: 'the rendezvous offered no relay credentials' });
          return;
        }
        // UDP from our socket, else TCP (always when the rendezvous itself runs over TCP: UDP is blocked), else TLS.
        this.#relay = await openRendezvousRelay({
          transport: this.socket,
          credentials: c,
          rendezvousVia: rv.via,
          serverName: rv.server.host,
          ...(o.signal ? { signal: o.signal } : {}),
          logger: o.logger,
        });
      } else {
        const s = typeof spec === 'string' ? parseRelaySpec(spec) : spec;
        this.#relay = await RelayPath.open({
          transport: this.socket,
          ...s,
          ...(o.signal ? { signal: o.signal } : {}),
          logger: o.logger,
        });
      }
      if (this.#closed) await this.#relay.close();
      else
        o.progress({
          phase: 'relay',
          ok: true,
          relayed: { address: this.#relay.relayed.address, port: this.#relay.relayed.port },
          via: rv instanceof RendezvousClient && rv.via === 'tcp' ? 'tcp' : 'udp',
        });
    } catch (err) {
      if (o.signal?.aborted) throw err;
      const explicit = spec !== 'auto';
      o.logger.info({ err: (err as Error).message }, 'relay allocation failed; going on without');
      o.progress({ phase: 'relay', ok: false, error: (err as Error).message });
      if (explicit) throw err;
    }
  }

  /** Port mapping never delays anything: it runs in the background and, once mapped, updates the registration. */
  #mapInBackground(spec: PortMapperOptions, o: GatherOptions): Promise<void> {
    return (async () => {
      const { PortMapper } = await import('../portmap/mapper.js');
      if (this.#closed) return;
      const mapper = new PortMapper({
        logger: o.logger,
        ...spec,
        upnp: { ...spec.upnp, ssdp: { timeoutMs: PORT_MAPPING_SSDP_MS, ...spec.upnp?.ssdp } },
      });
      const t = timeoutSignal(DEFAULT_PORT_MAPPING_TIMEOUT_MS);
      try {
        const m = await mapper.map({ internalPort: this.socket.address().port, transport: 'udp' }, t.signal);
        if (this.#closed) return void (await mapper.close());
        this.#mapper = mapper;
        o.progress({
          phase: 'port-mapping',
          ok: true,
          protocol: m.protocol,
          gateway: m.gateway,
          external: { address: m.externalAddress, port: m.externalPort },
        });
        if (this.#reflexive && this.rendezvous) void this.rendezvous.register().catch(() => {});
      } catch (err) {
        await mapper.close();
        const error = t.signal.aborted
          ? `no mapping within ${DEFAULT_PORT_MAPPING_TIMEOUT_MS} ms`
          : (err as Error).message;
        this.#log.info({ err: error }, 'port mapping unavailable; going on without');
        o.progress({ phase: 'port-mapping', ok: false, error });
      } finally {
        t.dispose();
      }
    })();
  }

  get tcpUnavailable(): string | null {
    return this.#tcpUnavailable;
  }

  get tcp(): TcpLocal | null {
    return this.#tcp;
  }

  /**
   * Failover: the rendezvous client moved to another node (it stopped answering, or drained), which hands out its
   * own relay credentials. The allocation we hold lives on the node we left — dead, or releasing everything as it
   * drains — so open one on the new node and register again to offer it; without this, a pair that needs the relay
   * fails once both peers moved. Credentials refreshed by the same node change nothing.
   */
  #followRelay(c: TurnCredentials, rv: RendezvousClient): void {
    const old = this.#relay;
    if (this.#closed || this.#relayPending || !old) return;
    const at = old.client.server;
    if (at.address === c.host && (at.port === c.port || at.port === c.tlsPort)) return;
    this.#relayPending = (async () => {
      try {
        const fresh = await openRendezvousRelay({
          transport: this.socket,
          credentials: c,
          rendezvousVia: rv.via,
          serverName: rv.server.host,
          logger: this.#log,
        });
        if (this.#closed || this.#relay !== old) return void (await fresh.close());
        this.#relay = fresh;
        void old.close().catch(() => {});
        this.#log.info(
          { relayed: fresh.relayed, server: rv.server },
          'relay: allocation moved to the new rendezvous node',
        );
        void rv.register().catch(() => {});
      } catch (err) {
        this.#log.info({ err: (err as Error).message }, 'relay: no allocation on the new rendezvous node');
      }
    })().finally(() => (this.#relayPending = null));
  }

  /** A one-shot connect whose session went direct releases the allocation at once (Refresh 0, RFC 8656 §7.2). */
  async releaseRelay(): Promise<void> {
    const r = this.#relay;
    this.#relay = null;
    await r?.close().catch(() => {});
  }

  /** The relay allocation once it is there (waits for one still under way, bounded by the caller's signal). */
  async relayReady(signal?: AbortSignal): Promise<RelayPath | null> {
    const pending = this.#relayPending;
    // untilAborted removes its abort listener when the allocation settles first: one signal serves many calls.
    if (pending) await untilAborted(pending, signal);
    return this.relay;
  }

  get relay(): RelayPath | null {
    return this.#relay && !this.#relay.closed ? this.#relay : null;
  }

  get hard(): { advert: HardNatAdvert; opts: HardNatOptions } | null {
    return this.#hard;
  }

  get reflexive(): { address: string; port: number } | null {
    return this.#reflexive;
  }

  /** Our candidates as offered (host, TCP, hard-NAT advert, gateway mapping, relay). */
  candidates(): Candidate[] {
    const mapped: Candidate[] = (this.#mapper?.mappings ?? []).map((m) => ({
      type: 'mapped',
      transport: m.transport,
      address: m.externalAddress,
      port: m.externalPort,
      priority: candidatePriority('mapped'),
    }));
    const relay = this.relay ? [this.relay.candidate()] : [];
    // The hard-NAT marker stands at our srflx address (hardwire.ts): listing the srflx too would make dedupe (here,
    // in the client and at the server) drop the marker, and with it the advert.
    const srflx: Candidate[] =
      this.#reflexive && !this.#hard
        ? [
            {
              type: 'srflx',
              transport: 'udp',
              address: this.#reflexive.address,
              port: this.#reflexive.port,
              priority: candidatePriority('srflx'),
            },
          ]
        : [];
    // The hard-NAT marker and window are 'predicted' candidates of equal address: dedupe keeps them apart by port.
    return [
      ...dedupeCandidates([
        ...this.#host,
        ...(this.#tcp?.candidates ?? []),
        ...this.#tcpPredicted,
        ...mapped,
        ...srflx,
        ...relay,
      ]),
      ...(this.#hard?.candidates ?? []),
    ];
  }

  /** Our side as the planner sees it. */
  natView(): NatView {
    const c = this.candidates();
    const counts: NatView['candidates'] = {};
    for (const x of c) counts[x.type] = (counts[x.type] ?? 0) + 1;
    const via = this.rendezvous instanceof RendezvousClient ? this.rendezvous.registration?.via : undefined;
    return {
      kind: this.#hard?.advert.kind ?? 'unknown',
      delta: this.#hard?.advert.delta ?? null,
      publicAddress: this.#hard?.srflx.address ?? this.#reflexive?.address ?? null,
      udp: via !== 'tcp',
      mapped: (counts.mapped ?? 0) > 0,
      relay: this.relay !== null || this.#relayPending !== null,
      tcp: this.#tcp !== null,
      candidates: counts,
    };
  }

  /**
   * A sequential NAT hands out the next ports to whatever flow comes next: before a hard punch, observe the latest
   * mapping again (one Binding from a fresh socket) so the advertised window starts right after it.
   */
  async refreshPrediction(server: { host: string; port: number } | null, signal?: AbortSignal): Promise<void> {
    // TCP's window first (it measures with fresh TCP mappings), the UDP one last: the latest allocation before ours.
    if (this.#tcp && this.#tcp.prediction) this.#tcpPredicted = await this.#tcp.predict(signal ? { signal } : {});
    const h = this.#hard;
    if (!h || h.advert.kind !== 'sequential' || h.advert.delta === null) return;
    const stun =
      h.opts.stun?.[0] ??
      (server
        ? { address: isIP(server.host) ? server.host : (await lookup(server.host)).address, port: server.port }
        : null);
    if (!stun) return;
    try {
      const bind = this.socket.address().address;
      const latest = await reobserve(stun, {
        ...(signal ? { signal } : {}),
        ...(bind !== '0.0.0.0' && bind !== '::' ? { bindAddress: bind } : {}),
      });
      const advert: HardNatAdvert = {
        ...h.advert,
        address: latest.address,
        ports: predictPorts(latest.port, h.advert.delta),
      };
      this.#hard = { ...h, advert, candidates: advertToCandidates(advert, h.srflx) };
    } catch (err) {
      if (signal?.aborted) throw err;
      this.#log.debug({ err: (err as Error).message }, 'prediction refresh failed; keeping the last window');
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.rendezvous?.close();
    this.#tcp?.close();
    await this.#relay?.close().catch(() => {});
    await this.#mapper?.close().catch(() => {});
    if (this.#ownsSocket) await this.socket.close().catch(() => {});
  }
}
