/**
 * ICMP hole punching: reaching a server behind a NAT with no third party (autonomous NAT traversal, Müller, Evans,
 * Grothoff, Kamkar, IEEE P2P 2010; the pwnat tool), then running natpunch's authenticated Noise session over UDP.
 *
 *   server (behind NAT)                      its NAT                               client (knows the NAT's address)
 *   echo request → probe address (3.3.3.3) ──► conntrack: ICMP query, id I (RFC 5508 §3.1); the probe is never answered
 *                                              ◄── forged Time Exceeded quoting that echo request (RFC 792)
 *   ◄── forwarded: the quote matches the query mapping (RFC 5508 §4.1 ICMP error forwarding)
 *   learns the client's address, punches UDP to it ──► (opens the NAT) ◄── the client's UDP checks to NAT:port
 *   connectivity checks (checks.ts), then the Noise XX session; the server accepts only allowed keys.
 *
 * Packet choices (pwnat's): the echo request has identifier 0, sequence 0 and no data (28 bytes of IP + ICMP); the
 * client quotes exactly that datagram (IP header with TTL 1 + the 8-byte echo header) so the quote is what a router
 * on the path would send. The UDP port is agreed beforehand (default 2222, pwnat's): the server punches from it to
 * the client's address at the same port, the client sends from it to the server's NAT at that port.
 *
 * Which NATs let it through (test/lab/icmp-punch.test.ts; docs/traversal.md "ICMP hole punching"): the server's NAT must keep the
 * echo identifier and forward ICMP errors for query mappings (Linux does, whatever its UDP mapping behaviour); a NAT
 * that randomises ICMP identifiers or filters inbound ICMP errors defeats it. A client behind a Linux NAT fails
 * unless the server's NAT is a full cone: its NAT finds no flow for the quote (conntrack `invalid`) and drops it or
 * forwards it untranslated (the server then learns a private address).
 *
 * Abuse bound: a forged knock makes the server send at most one attempt's checks (12 small UDP packets) to the
 * knocking address, one attempt at a time, and the same address is ignored for RETRY_AFTER_MS after a failure.
 *
 * Limits: one attempt (and one session) at a time per listener, since the connection id and the UDX stream ids are
 * derived from fixed values both sides know (there is no channel to agree on more before the first packet).
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { isIPv4 } from 'node:net';
import { NatpunchError, isNatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { timeoutSignal } from '../util/abort.js';
import { IPPROTO_ICMP, IPPROTO_RAW, RawSocket } from '../net/raw.js';
import { UdxEndpoint } from '../net/udx.js';
import { decodeIcmpPacket, encodeEcho, encodeEchoTimeExceeded, encodeIpv4, quotedEchoOf } from '../wire/icmp.js';
import { Session, streamIdsFor, type Allow } from '../session/session.js';
import { keyToId, type KeyPair } from '../session/identity.js';
import { ConnectivityChecks, deriveCheckKey, type CheckResult } from './checks.js';
import { candidatePriority, type Candidate } from './candidate.js';

/** pwnat's probe address: a public address nobody answers, so the NAT keeps the query mapping open. */
export const DEFAULT_ICMP_PROBE_ADDRESS = '3.3.3.3';
/** Echo requests per second: 1. Linux keeps an ICMP query mapping 30 s (nf_conntrack_icmp_timeout), RFC 5508 §3.2
 *  asks for at least 60 s, so 1 s keeps it open with ample margin at 28 bytes a second. */
export const DEFAULT_ICMP_INTERVAL_MS = 1_000;
/** Rate limit: never more than 10 echo requests a second, whatever the caller asks. */
export const MIN_ICMP_INTERVAL_MS = 100;
/** pwnat's choices for the echo request (identifier / sequence; RFC 792 lets the sender pick both). */
export const ICMP_PUNCH_IDENTIFIER = 0;
export const ICMP_PUNCH_SEQUENCE = 0;
/** pwnat's UDP port; both sides use it unless told otherwise. */
export const DEFAULT_ICMP_PUNCH_PORT = 2222;
/** The client re-sends its forged Time Exceeded this often while it waits (one echo interval of the server is 1 s). */
export const DEFAULT_ICMP_KNOCK_INTERVAL_MS = 500;
/** connectIcmp() as a whole. */
export const DEFAULT_ICMP_CONNECT_TIMEOUT_MS = 20_000;
/** The UDP check phase of one attempt (both sides). */
export const ICMP_CHECK_TIMEOUT_MS = 12_000;
/** After a failed attempt, knocks from the same address are ignored this long. */
const RETRY_AFTER_MS = 2_000;
/** Bound on the remembered failed addresses (forged knocks from many sources cannot grow memory). */
const MAX_COOLDOWN_ENTRIES = 1_024;

/** Fixed connection id: both ends derive the check key and the UDX stream ids from it. */
export const ICMP_CONNECTION_ID = createHash('sha256')
  .update('natpunch icmp hole punching v1')
  .digest()
  .subarray(0, 16);

/** The checks only need to recognise each other's probes (the client may not know the server's key yet, the server
 *  never knows the client's beforehand); the Noise handshake that follows authenticates both peers. */
const NO_KEY = new Uint8Array(32);
function checkKey(): Buffer {
  return deriveCheckKey(ICMP_CONNECTION_ID, NO_KEY, NO_KEY);
}

function clampInterval(ms: number | undefined, fallback: number): number {
  const v = ms ?? fallback;
  if (!Number.isFinite(v) || v <= 0)
    throw new NatpunchError('BAD_ARGUMENT', `ICMP interval must be a positive number of ms (got ${String(ms)})`);
  return Math.max(MIN_ICMP_INTERVAL_MS, v);
}

function checkIpv4(address: string, what: string): void {
  if (!isIPv4(address))
    throw new NatpunchError('BAD_ARGUMENT', `${what} must be an IPv4 address (got "${String(address).slice(0, 80)}")`);
}

/**
 * Whether a knock's source can be a client: not unspecified (0.0.0.0/8), multicast (224.0.0.0/4), reserved or
 * limited broadcast (240.0.0.0/4; RFC 1122 §3.2.1.3, RFC 5771, RFC 1112 §4). A forged knock from such a source would
 * otherwise make the server send checks there.
 */
export function isPunchableSource(address: string): boolean {
  if (!isIPv4(address)) return false;
  const first = Number(address.split('.')[0]);
  return first !== 0 && first < 224;
}

/** Opens the raw socket ICMP hole punching needs, with a one-line reason when it cannot. */
function openRaw(headerIncluded: boolean): RawSocket {
  try {
    return headerIncluded
      ? RawSocket.open({ protocol: IPPROTO_RAW, headerIncluded: true })
      : RawSocket.open({ protocol: IPPROTO_ICMP });
  } catch (err) {
    if (isNatpunchError(err, 'NOT_ROOT')) {
      throw new NatpunchError(
        'NOT_ROOT',
        'ICMP hole punching needs a raw socket: run as root or give node CAP_NET_RAW (`setcap cap_net_raw+ep $(which node)`)',
        { cause: err },
      );
    }
    if (isNatpunchError(err, 'ADDON_UNAVAILABLE')) {
      throw new NatpunchError('ADDON_UNAVAILABLE', `ICMP hole punching needs the native addon: ${err.message}`, {
        cause: err,
      });
    }
    throw err;
  }
}

export interface IcmpBeaconOptions {
  probeAddress?: string;
  intervalMs?: number;
  identifier?: number;
  sequence?: number;
  logger?: Logger;
}

/** A client the server heard of through a forwarded Time Exceeded. */
export interface IcmpKnock {
  /** Outer source of the Time Exceeded: the client's address as it reached us. */
  address: string;
  /** Source in the quoted echo request (our address as our NAT translated it back: our own address). */
  quotedSource: string;
}

/**
 * Server side: sends echo requests to the probe address on a fixed interval and reports every Time Exceeded that
 * quotes one of them ('knock' events with IcmpKnock). Needs root / CAP_NET_RAW.
 */
export class IcmpBeacon extends EventEmitter {
  readonly probeAddress: string;
  readonly intervalMs: number;
  readonly identifier: number;
  readonly sequence: number;
  #raw: RawSocket;
  #timer: NodeJS.Timeout | null = null;
  #off: (() => void) | null = null;
  #log: Logger;
  #sent = 0;
  #closed = false;

  constructor(options: IcmpBeaconOptions = {}) {
    super();
    this.probeAddress = options.probeAddress ?? DEFAULT_ICMP_PROBE_ADDRESS;
    checkIpv4(this.probeAddress, 'the ICMP probe address');
    this.intervalMs = clampInterval(options.intervalMs, DEFAULT_ICMP_INTERVAL_MS);
    this.identifier = options.identifier ?? ICMP_PUNCH_IDENTIFIER;
    this.sequence = options.sequence ?? ICMP_PUNCH_SEQUENCE;
    this.#log = options.logger ?? silentLogger;
    this.#raw = openRaw(false);
  }

  /** Echo requests sent so far. */
  get sent(): number {
    return this.#sent;
  }

  start(): this {
    if (this.#closed || this.#timer) return this;
    this.#off = this.#raw.onMessage((packet) => this.#onPacket(packet));
    this.#probe();
    this.#timer = setInterval(() => this.#probe(), this.intervalMs);
    return this;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#off?.();
    this.#raw.close();
    this.removeAllListeners('knock');
  }

  #probe(): void {
    // RFC 792 Echo: identifier and sequence fixed (pwnat), no data; the kernel adds the IPv4 header.
    const echo = encodeEcho({ identifier: this.identifier, sequence: this.sequence });
    try {
      if (this.#raw.send(echo, this.probeAddress)) this.#sent++;
    } catch (err) {
      this.#log.debug({ err: (err as Error).message }, 'echo request not sent');
    }
  }

  #onPacket(packet: Buffer): void {
    const decoded = decodeIcmpPacket(packet);
    if (!decoded) return;
    const quoted = quotedEchoOf(decoded.icmp);
    // RFC 792 Time Exceeded quoting our own echo request: same probe address, identifier and sequence.
    if (
      !quoted ||
      quoted.destination !== this.probeAddress ||
      quoted.identifier !== this.identifier ||
      quoted.sequence !== this.sequence
    )
      return;
    if (!isPunchableSource(decoded.ip.source)) return;
    const knock: IcmpKnock = { address: decoded.ip.source, quotedSource: quoted.source };
    this.#log.debug(knock, 'Time Exceeded quoting our echo request');
    this.emit('knock', knock);
  }
}

export interface IcmpKnockerOptions {
  /** The server's public (NAT) address: where the forged Time Exceeded goes, and the quoted echo's source. */
  server: string;
  probeAddress?: string;
  identifier?: number;
  sequence?: number;
  /** Outer IPv4 source to write (IP_HDRINCL), e.g. the client's own public address behind a NAT; default: the
   *  kernel picks the outgoing interface's address. */
  source?: string;
}

/** Client side: forges the Time Exceeded a router on the path to the probe address would have sent the server. */
export class IcmpKnocker {
  #raw: RawSocket;
  #packet: Buffer;
  #server: string;
  #sent = 0;

  constructor(options: IcmpKnockerOptions) {
    checkIpv4(options.server, 'the server address');
    const probe = options.probeAddress ?? DEFAULT_ICMP_PROBE_ADDRESS;
    checkIpv4(probe, 'the ICMP probe address');
    if (options.source !== undefined) checkIpv4(options.source, 'the ICMP source address');
    this.#server = options.server;
    const message = encodeEchoTimeExceeded({
      source: options.server,
      destination: probe,
      identifier: options.identifier ?? ICMP_PUNCH_IDENTIFIER,
      sequence: options.sequence ?? ICMP_PUNCH_SEQUENCE,
    });
    // RFC 791 §3.1 outer header only when we must choose the source; otherwise the kernel writes it.
    this.#packet =
      options.source !== undefined
        ? encodeIpv4({ source: options.source, destination: options.server, protocol: IPPROTO_ICMP }, message)
        : message;
    this.#raw = openRaw(options.source !== undefined);
  }

  get sent(): number {
    return this.#sent;
  }

  /** The bytes sent on the raw socket (ICMP message, or IPv4 + ICMP with a chosen source). */
  get packet(): Buffer {
    return this.#packet;
  }

  knock(): boolean {
    const ok = this.#raw.send(this.#packet, this.#server);
    if (ok) this.#sent++;
    return ok;
  }

  close(): void {
    this.#raw.close();
  }
}

function sessionFor(
  endpoint: UdxEndpoint,
  result: CheckResult,
  o: {
    initiator: boolean;
    keyPair: KeyPair;
    peerKey?: Uint8Array;
    allow?: Allow;
    keepAliveMs?: number;
    idleTimeoutMs?: number;
    logger: Logger;
    signal: AbortSignal;
    ownsEndpoint: boolean;
  },
): Promise<Session> {
  const ids = streamIdsFor(ICMP_CONNECTION_ID);
  return Session.establish({
    endpoint,
    isInitiator: o.initiator,
    keyPair: o.keyPair,
    remote: result.remote,
    localStreamId: o.initiator ? ids.initiator : ids.responder,
    remoteStreamId: o.initiator ? ids.responder : ids.initiator,
    ...(o.initiator
      ? o.peerKey
        ? { expectedRemoteKey: o.peerKey }
        : {}
      : o.allow !== undefined
        ? { allow: o.allow }
        : {}),
    path: {
      kind: result.kind,
      candidatePair: { local: result.localCandidate, remote: result.remoteCandidate },
      rttMs: result.rttMs,
    },
    ...(o.keepAliveMs !== undefined ? { keepAliveMs: o.keepAliveMs } : {}),
    ...(o.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
    ownsEndpoint: o.ownsEndpoint,
    logger: o.logger,
    signal: o.signal,
  });
}

export type IcmpProgress =
  | { phase: 'icmp-listening'; port: number; probeAddress: string; intervalMs: number }
  | { phase: 'icmp-knock'; from: string }
  | { phase: 'icmp-knocking'; server: string; port: number }
  | { phase: 'path'; kind: string; remote: { address: string; port: number }; type: string; rttMs: number | null }
  | { phase: 'connected'; peer: string; rttMs: number | null };

export interface IcmpListenOptions {
  keyPair: KeyPair;
  /** Who may connect (keys or hex ids, or a function). Default: anyone with a valid key. */
  allow?: Allow;
  /** The agreed UDP port (default 2222). */
  port?: number;
  bindAddress?: string;
  probeAddress?: string;
  intervalMs?: number;
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  logger?: Logger;
  onProgress?: (p: IcmpProgress) => void;
}

/**
 * A listener reached through ICMP hole punching. Events: 'session' (Session), 'connection-error' (Error, address),
 * 'close'. One attempt and one session at a time (see the module comment).
 */
export class IcmpListener extends EventEmitter {
  readonly endpoint: UdxEndpoint;
  readonly beacon: IcmpBeacon;
  #o: IcmpListenOptions;
  #log: Logger;
  #busy: string | null = null;
  #session: Session | null = null;
  #attempt: AbortController | null = null;
  #checks: ConnectivityChecks | null = null;
  #cooldown = new Map<string, number>();
  #closed = false;

  /** @internal use listenIcmp() */
  constructor(endpoint: UdxEndpoint, beacon: IcmpBeacon, options: IcmpListenOptions) {
    super();
    this.endpoint = endpoint;
    this.beacon = beacon;
    this.#o = options;
    this.#log = options.logger ?? silentLogger;
    beacon.on('knock', (k: IcmpKnock) => void this.#onKnock(k));
    beacon.start();
  }

  get session(): Session | null {
    return this.#session;
  }

  async #onKnock(k: IcmpKnock): Promise<void> {
    if (this.#closed || this.#busy !== null || this.#session) return;
    const until = this.#cooldown.get(k.address);
    if (until !== undefined && until > Date.now()) return;
    this.#busy = k.address;
    this.#o.onProgress?.({ phase: 'icmp-knock', from: k.address });
    const ac = new AbortController();
    this.#attempt = ac;
    const { signal, dispose } = timeoutSignal(ICMP_CHECK_TIMEOUT_MS + 15_000, ac.signal);
    const port = this.endpoint.address().port;
    try {
      const remote: Candidate = {
        type: 'icmp',
        transport: 'udp',
        address: k.address,
        port,
        priority: candidatePriority('icmp'),
      };
      // Responder: our checks to the client's address open our NAT (we punch first); the client nominates.
      const checks = new ConnectivityChecks({
        transport: this.endpoint,
        role: 'responder',
        connectionId: ICMP_CONNECTION_ID,
        key: checkKey(),
        local: [],
        remote: [remote],
        timeoutMs: ICMP_CHECK_TIMEOUT_MS,
        signal,
        logger: this.#log,
      });
      this.#checks = checks;
      const result = await checks.run();
      this.#o.onProgress?.({
        phase: 'path',
        kind: result.kind,
        remote: result.remote,
        type: result.remoteCandidate.type,
        rttMs: result.rttMs,
      });
      const session = await sessionFor(this.endpoint, result, {
        initiator: false,
        keyPair: this.#o.keyPair,
        ...(this.#o.allow !== undefined ? { allow: this.#o.allow } : {}),
        ...(this.#o.keepAliveMs !== undefined ? { keepAliveMs: this.#o.keepAliveMs } : {}),
        ...(this.#o.idleTimeoutMs !== undefined ? { idleTimeoutMs: this.#o.idleTimeoutMs } : {}),
        logger: this.#log,
        signal,
        ownsEndpoint: false,
      });
      if (this.#closed) {
        await session.close();
        return;
      }
      this.#session = session;
      session.once('close', () => {
        if (this.#session === session) this.#session = null;
      });
      this.#o.onProgress?.({ phase: 'connected', peer: keyToId(session.remotePublicKey), rttMs: session.path.rttMs });
      this.emit('session', session);
    } catch (err) {
      const now = Date.now();
      for (const [address, until] of this.#cooldown) if (until <= now) this.#cooldown.delete(address);
      if (this.#cooldown.size >= MAX_COOLDOWN_ENTRIES) this.#cooldown.delete(this.#cooldown.keys().next().value!);
      this.#cooldown.set(k.address, now + RETRY_AFTER_MS);
      this.#log.info({ from: k.address, err: (err as Error).message }, 'ICMP-punched connection failed');
      if (!this.#closed) this.emit('connection-error', err, k.address);
    } finally {
      dispose();
      this.#checks?.close();
      this.#checks = null;
      this.#attempt = null;
      this.#busy = null;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.beacon.close();
    this.#attempt?.abort(new NatpunchError('ABORTED', 'listener closed'));
    this.#checks?.close();
    await this.#session?.close();
    await this.endpoint.close();
    this.emit('close');
  }
}

/** Starts an ICMP hole punching listener: raw socket (root / CAP_NET_RAW), echo beacon, UDP socket on the agreed port. */
export async function listenIcmp(options: IcmpListenOptions): Promise<IcmpListener> {
  const beacon = new IcmpBeacon({
    ...(options.probeAddress !== undefined ? { probeAddress: options.probeAddress } : {}),
    ...(options.intervalMs !== undefined ? { intervalMs: options.intervalMs } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
  let endpoint: UdxEndpoint;
  try {
    endpoint = await UdxEndpoint.bind({
      address: options.bindAddress ?? '0.0.0.0',
      port: options.port ?? DEFAULT_ICMP_PUNCH_PORT,
    });
  } catch (err) {
    beacon.close();
    throw err;
  }
  options.onProgress?.({
    phase: 'icmp-listening',
    port: endpoint.address().port,
    probeAddress: beacon.probeAddress,
    intervalMs: beacon.intervalMs,
  });
  return new IcmpListener(endpoint, beacon, options);
}

export interface IcmpConnectOptions {
  keyPair: KeyPair;
  /** The server's public IPv4 address (its NAT's). */
  server: string;
  /** The server's key: the handshake fails unless the server proves it. Without it any key is accepted (the caller
   *  should then check session.remotePublicKey). */
  peerKey?: Uint8Array;
  /** The agreed UDP port (default 2222): the server's, and the one we bind. */
  port?: number;
  bindAddress?: string;
  probeAddress?: string;
  /** Outer source of the forged Time Exceeded (see IcmpKnockerOptions.source). */
  source?: string;
  knockIntervalMs?: number;
  timeoutMs?: number;
  keepAliveMs?: number;
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  logger?: Logger;
  onProgress?: (p: IcmpProgress) => void;
}

/** Connects to a server behind a NAT through ICMP hole punching and resolves with the authenticated session. */
export async function connectIcmp(options: IcmpConnectOptions): Promise<Session> {
  const port = options.port ?? DEFAULT_ICMP_PUNCH_PORT;
  const endpoint = await UdxEndpoint.bind({ address: options.bindAddress ?? '0.0.0.0', port });
  try {
    // The session owns the socket from here (ownsEndpoint): closing it releases the port.
    return await icmpSessionOn(endpoint, options);
  } catch (err) {
    await endpoint.close().catch(() => {});
    throw err;
  }
}

/**
 * ICMP hole punching from a socket the caller bound on the agreed port (connectIcmp(), or the planner's 'icmp'
 * technique, icmp-technique.ts): forged Time Exceeded knocks, UDP checks to the server's NAT, then the Noise session.
 * On success the session owns `endpoint`; on failure the caller still does.
 */
export async function icmpSessionOn(endpoint: UdxEndpoint, options: IcmpConnectOptions): Promise<Session> {
  const logger = options.logger ?? silentLogger;
  const port = options.port ?? DEFAULT_ICMP_PUNCH_PORT;
  const timeoutMs = options.timeoutMs ?? DEFAULT_ICMP_CONNECT_TIMEOUT_MS;
  const knocker = new IcmpKnocker({
    server: options.server,
    ...(options.probeAddress !== undefined ? { probeAddress: options.probeAddress } : {}),
    ...(options.source !== undefined ? { source: options.source } : {}),
  });
  const { signal, dispose } = timeoutSignal(timeoutMs, options.signal);
  let timer: NodeJS.Timeout | null = null;
  let checks: ConnectivityChecks | null = null;
  const interval = clampInterval(options.knockIntervalMs, DEFAULT_ICMP_KNOCK_INTERVAL_MS);
  const maxKnocks = Math.ceil(timeoutMs / interval) + 1;
  const stopKnocking = () => {
    if (timer) clearInterval(timer);
    timer = null;
  };
  try {
    options.onProgress?.({ phase: 'icmp-knocking', server: options.server, port });
    const knock = () => {
      if (knocker.sent >= maxKnocks) return stopKnocking();
      try {
        knocker.knock();
      } catch (err) {
        logger.debug({ err: (err as Error).message }, 'forged Time Exceeded not sent');
      }
    };
    knock();
    timer = setInterval(knock, interval);
    const remote: Candidate = {
      type: 'icmp',
      transport: 'udp',
      address: options.server,
      port,
      priority: candidatePriority('icmp'),
    };
    checks = new ConnectivityChecks({
      transport: endpoint,
      role: 'initiator',
      connectionId: ICMP_CONNECTION_ID,
      key: checkKey(),
      local: [],
      remote: [remote],
      timeoutMs: Math.min(timeoutMs, ICMP_CHECK_TIMEOUT_MS + 2 * DEFAULT_ICMP_INTERVAL_MS),
      signal,
      logger,
    });
    let result: CheckResult;
    try {
      result = await checks.run();
    } catch (err) {
      if (isNatpunchError(err, 'ABORTED') && options.signal?.aborted) throw err;
      throw new NatpunchError(
        'PUNCH_FAILED',
        `no UDP path to ${options.server}:${port} after ${knocker.sent} forged ICMP Time Exceeded: the server's NAT did not forward them ` +
          '(it may rewrite the echo identifier or drop such ICMP), our own NAT dropped them, or no `natpunch listen --icmp` runs there',
        { cause: err, details: { knocks: knocker.sent } },
      );
    } finally {
      stopKnocking();
    }
    options.onProgress?.({
      phase: 'path',
      kind: result.kind,
      remote: result.remote,
      type: result.remoteCandidate.type,
      rttMs: result.rttMs,
    });
    const session = await sessionFor(endpoint, result, {
      initiator: true,
      keyPair: options.keyPair,
      ...(options.peerKey ? { peerKey: options.peerKey } : {}),
      ...(options.keepAliveMs !== undefined ? { keepAliveMs: options.keepAliveMs } : {}),
      ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
      logger,
      signal,
      ownsEndpoint: true,
    });
    const lingering = checks;
    session.once('close', () => lingering.close());
    options.onProgress?.({ phase: 'connected', peer: keyToId(session.remotePublicKey), rttMs: session.path.rttMs });
    return session;
  } catch (err) {
    checks?.close();
    throw err;
  } finally {
    stopKnocking();
    knocker.close();
    dispose();
  }
}
