/**
 * STUN server (RFC 8489 §6.3, RFC 5780 §6-7, RFC 3489 backwards compatibility per RFC 8489 §12).
 *
 * It never owns sockets: it ATTACHES to DatagramTransports and TCP connections it is handed (by `serve`), and ignores
 * every datagram whose first byte is not STUN's (RFC 7983: 0..3), because rendezvous (0xF0) and TURN ChannelData
 * share port 3478. Garbage in the STUN range is dropped silently; well-formed requests it cannot serve get 400 or
 * 420 with UNKNOWN-ATTRIBUTES.
 *
 * Amplification rule (UDP only; TCP's handshake proves the client's address): a response to an unauthenticated
 * request is no larger than the request (STUN_MAX_AMPLIFICATION = 1; issue 18). Optional attributes are dropped to
 * fit (SOFTWARE first); PADDING (RFC 5780 §7.6) is echoed only up to the bound. The exceptions are what the RFCs
 * require: in RFC 5780 mode RESPONSE-ORIGIN and OTHER-ADDRESS (§6.1; at most STUN_RFC5780_EXTRA_BYTES over the
 * request), and a Binding request is always answered with XOR-MAPPED-ADDRESS
 * (RFC 8489 §6.3.1.1; MAPPED-ADDRESS for RFC 3489 requests, §12), and an error with its ERROR-CODE (empty reason) and
 * UNKNOWN-ATTRIBUTES (§6.3.1), plus FINGERPRINT when the request had one (§7.3). That minimum exceeds its request by
 * at most STUN_REQUIRED_EXTRA_BYTES (24: a 20-byte request answered with an IPv6 XOR-MAPPED-ADDRESS, 44 bytes); it
 * is counted in `oversized`; it goes out only within a per-source and global budget (STUN_OVERSIZED_BURST), beyond
 * which it is counted in `amplificationDropped` instead. PADDING together with RESPONSE-PORT is refused (400), and RESPONSE-PORT only redirects to
 * another port of the requester's own address.
 */
import type net from 'node:net';
import type { DatagramTransport, RemoteInfo } from '../net/datagram.js';
import { silentLogger, type Logger } from '../util/log.js';
import { parseIPv6 } from '../wire/ip.js';
import {
  attr,
  Attr,
  type AttributeInit,
  ChangedAddress,
  ChangeRequest,
  checkFingerprint,
  coreRegistry,
  decodeStun,
  encodeStun,
  ErrorCode,
  ErrorCodeAttr,
  ERROR_REASONS,
  familyOf,
  MappedAddress,
  normalizeAddress,
  OtherAddress,
  Padding,
  ResponseOrigin,
  ResponsePort,
  Software,
  SourceAddress,
  StunClass,
  StunFramer,
  type StunMessage,
  StunMethod,
  type StunRegistry,
  type TransportAddress,
  UnknownAttributes,
  XorMappedAddress,
} from '../wire/stun/index.js';

/** Responses to unauthenticated UDP requests are at most this many times the request's size, beyond the
 *  RFC-required minimum (see module comment). */
export const STUN_MAX_AMPLIFICATION = 1;
/** The most the RFC-required minimum answer exceeds its request by: a 20-byte Binding request answered with an
 *  IPv6 XOR-MAPPED-ADDRESS (20 + 24 bytes; with FINGERPRINT the request had 8 more too). Errors exceed by less. */
export const STUN_REQUIRED_EXTRA_BYTES = 24;
/** The same in RFC 5780 mode (--alt-address), whose Binding answers also require RESPONSE-ORIGIN and OTHER-ADDRESS
 *  (RFC 5780 §6.1): three IPv6 address attributes, 3 × 24 bytes, over a 20-byte request. */
export const STUN_RFC5780_EXTRA_BYTES = 72;
/**
 * The RFC-required answers larger than their request go out only within this budget: per source (IPv4 address,
 * IPv6 /64) a burst of STUN_OVERSIZED_BURST, then STUN_OVERSIZED_PER_SECOND, and STUN_OVERSIZED_GLOBAL_PER_SECOND for
 * the whole server (the TURN server, src/relay/server.ts, bounds its 401 the same way). A reflection through this
 * server thus yields a victim at most 8 + 2/s such answers. Requests that leave room for their answer (natpunch's
 * clients pad with SOFTWARE) are never limited.
 */
export const STUN_OVERSIZED_BURST = 8;
export const STUN_OVERSIZED_PER_SECOND = 2;
export const STUN_OVERSIZED_GLOBAL_PER_SECOND = 1000;
/** Per-source budgets remembered at most (the oldest are forgotten first). */
const MAX_OVERSIZED_SOURCES = 65_536;

/** How large a UDP answer may be, and for whom (the oversized-answer budget is per source). */
interface Bound {
  bytes: number;
  from: TransportAddress;
}

/** IPv4 address, or the /64 of an IPv6 address: one household or host, as the TURN quotas count sources. */
function sourceOf(address: string): string {
  if (!address.includes(':')) return address;
  const b = parseIPv6(address);
  return b ? Buffer.from(b.subarray(0, 8)).toString('hex') : address;
}
/** Idle TCP connections are closed after this long (RFC 8489 §6.2.2 asks for at least 10 s after a response). */
export const STUN_TCP_IDLE_MS = 30_000;
/** A TCP connection whose unsent responses exceed this is closed (the client is not reading). */
export const STUN_TCP_MAX_UNSENT_BYTES = 256 * 1024;
/** At most this many concurrent TCP connections per server; more are refused. */
export const STUN_MAX_TCP_CONNECTIONS = 1024;
export const DEFAULT_SOFTWARE = 'natpunch';

export interface StunServerCounters {
  /** STUN requests accepted for processing. */
  requests: number;
  /** Success responses sent. */
  responses: number;
  /** Error responses sent. */
  errors: number;
  /** STUN-range datagrams/frames dropped: malformed, bad FINGERPRINT, not a request, or too large to answer. */
  drops: number;
  /** UDP answers sent larger than their request because RFC 8489 requires that minimum (see module comment). */
  oversized: number;
  /** Such minimum answers not sent: the source's (or the server's) oversized-answer budget was spent. */
  amplificationDropped: number;
}

/** Where a request came in, for method handlers (TURN). */
export interface StunRequestContext {
  from: TransportAddress;
  transport: 'udp' | 'tcp';
  /** UDP: the socket it arrived on (answer from it). */
  udp?: DatagramTransport;
  /** TCP: the connection it arrived on. */
  tcp?: net.Socket;
}

/**
 * Handles requests and indications of one method (TURN registers Allocate, Refresh, Send, ...). Return the reply's
 * bytes to have the server send them back the way the request came, or undefined when there is nothing to send
 * (or the handler answers later itself). Handlers own their attribute checks and amplification rules.
 */
export type StunMethodHandler = (msg: StunMessage, ctx: StunRequestContext) => Uint8Array | undefined;

export interface StunServerOptions {
  logger?: Logger;
  /** SOFTWARE attribute; '' for none. Default 'natpunch'. */
  software?: string;
  /** Attribute table used to decide 420 Unknown Attribute. Default: the core table. */
  registry?: StunRegistry;
  /** Override STUN_MAX_AMPLIFICATION. */
  maxAmplification?: number;
  /** Clock for the oversized-answer budget (tests). */
  now?: () => number;
}

/**
 * The four RFC 5780 sockets: primary/alternate IP × primary/alternate port, all the same family, each bound to a
 * specific address (not a wildcard), since RESPONSE-ORIGIN and OTHER-ADDRESS name them.
 */
export interface Rfc5780Sockets {
  primary: DatagramTransport; // (A, P)
  altPort: DatagramTransport; // (A, P2)
  altIp: DatagramTransport; // (B, P)
  altBoth: DatagramTransport; // (B, P2)
}

interface UdpRole {
  transport: DatagramTransport;
  /** In RFC 5780 mode: the 2×2 group and this socket's index (bit 1 = alternate IP, bit 0 = alternate port). */
  group?: DatagramTransport[];
  index?: number;
}

interface Reply {
  bytes: Buffer;
  /** UDP only: the socket to answer from (RFC 5780 CHANGE-REQUEST) and the port to answer to (RESPONSE-PORT). */
  via?: DatagramTransport;
  port?: number;
}

function localAddress(t: DatagramTransport): TransportAddress {
  const a = t.address();
  return { family: familyOf(a.address), address: normalizeAddress(a.address), port: a.port };
}

export class StunServer {
  readonly counters: StunServerCounters = {
    requests: 0,
    responses: 0,
    errors: 0,
    drops: 0,
    oversized: 0,
    amplificationDropped: 0,
  };
  /** Oversized-answer budget: per source (IPv4 address, IPv6 /64) and for the whole server (module comment). */
  readonly #oversizedPerSource = new Map<string, { tokens: number; last: number }>();
  readonly #oversizedGlobal = { tokens: STUN_OVERSIZED_GLOBAL_PER_SECOND, last: 0 };
  readonly #now: () => number;
  /** The same counts per STUN method (Binding, and TURN's when it shares the server), for metrics. */
  readonly byMethod = new Map<number, { requests: number; responses: number; errors: number }>();
  readonly #log: Logger;
  /** SOFTWARE, encoded once (RFC 8489 §14.14). */
  readonly #softwareAttr?: AttributeInit;
  readonly #registry: StunRegistry;
  readonly #factor: number;
  readonly #detach = new Set<() => void>();
  readonly #tcp = new Set<net.Socket>();
  readonly #methods = new Map<number, StunMethodHandler>();
  #closed = false;

  constructor(options: StunServerOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#log = options.logger ?? silentLogger;
    const software = options.software ?? DEFAULT_SOFTWARE;
    if (software)
      this.#softwareAttr = {
        type: Attr.SOFTWARE,
        value: Software.encode(software, { transactionId: new Uint8Array(12) }),
      };
    this.#registry = options.registry ?? coreRegistry;
    this.#factor = options.maxAmplification ?? STUN_MAX_AMPLIFICATION;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get tcpConnections(): number {
    return this.#tcp.size;
  }

  /** Routes requests and indications of `method` to `handler` (RFC 8489 messages only). Returns an unregister function. */
  registerMethod(method: number, handler: StunMethodHandler): () => void {
    this.#methods.set(method, handler);
    return () => {
      if (this.#methods.get(method) === handler) this.#methods.delete(method);
    };
  }

  /** Serves STUN on a UDP transport (plain RFC 8489 mode). Returns a function that detaches it again. */
  attachUdp(transport: DatagramTransport): () => void {
    return this.#attach({ transport });
  }

  /** Serves RFC 5780 behaviour discovery on four sockets. Returns a function that detaches all four. */
  attachRfc5780(sockets: Rfc5780Sockets): () => void {
    const group = [sockets.primary, sockets.altPort, sockets.altIp, sockets.altBoth];
    const offs = group.map((transport, index) => this.#attach({ transport, group, index }));
    return () => offs.forEach((off) => off());
  }

  #attach(role: UdpRole): () => void {
    const off = role.transport.onMessage((msg, rinfo) => this.#onDatagram(role, msg, rinfo));
    const detach = () => {
      off();
      this.#detach.delete(detach);
    };
    this.#detach.add(detach);
    return detach;
  }

  #onDatagram(role: UdpRole, buf: Buffer, rinfo: RemoteInfo): void {
    if (this.#closed || buf.length === 0 || buf[0]! > 3) return; // RFC 7983: not STUN, someone else's
    const address = normalizeAddress(rinfo.address);
    const from: TransportAddress = { family: familyOf(address), address, port: rinfo.port };
    let reply: Reply | undefined;
    try {
      reply = this.#handle(buf, from, role, undefined, undefined);
    } catch (err) {
      // Never let one packet take the server down.
      this.counters.drops++;
      this.#log.warn({ err, from }, 'stun: request handling failed');
      return;
    }
    if (!reply) return;
    const via = reply.via ?? role.transport;
    // Send to the address as the socket reported it (keeps IPv4-mapped form on dual-stack sockets).
    via.send(reply.bytes, reply.port ?? rinfo.port, rinfo.address);
  }

  /**
   * Serves STUN on a TCP connection (RFC 8489 §6.2.2). `head` is data already read from it (the serve dispatcher
   * reads the first bytes to pick a protocol). The server closes the connection on framing errors, idle timeout
   * and close().
   */
  handleTcp(socket: net.Socket, head?: Uint8Array): void {
    if (this.#closed || this.#tcp.size >= STUN_MAX_TCP_CONNECTIONS) {
      socket.destroy();
      return;
    }
    this.#tcp.add(socket);
    const framer = new StunFramer();
    const from: TransportAddress = {
      family: familyOf(normalizeAddress(socket.remoteAddress ?? '0.0.0.0')),
      address: normalizeAddress(socket.remoteAddress ?? '0.0.0.0'),
      port: socket.remotePort ?? 0,
    };
    const local: TransportAddress = {
      family: familyOf(normalizeAddress(socket.localAddress ?? '0.0.0.0')),
      address: normalizeAddress(socket.localAddress ?? '0.0.0.0'),
      port: socket.localPort ?? 0,
    };
    socket.setTimeout(STUN_TCP_IDLE_MS, () => socket.destroy());
    socket.on('error', () => {});
    socket.on('close', () => this.#tcp.delete(socket));
    const onData = (chunk: Uint8Array) => {
      let frames;
      try {
        frames = framer.push(chunk);
      } catch {
        this.counters.drops++;
        socket.destroy(); // not a STUN stream (§6.2.2 framing lost)
        return;
      }
      for (const f of frames) {
        if (f.kind !== 'stun') continue; // ChannelData belongs to TURN, which is not on this connection
        let reply: Reply | undefined;
        try {
          reply = this.#handle(f.data, from, undefined, local, socket);
        } catch (err) {
          this.counters.drops++;
          this.#log.warn({ err, from }, 'stun: request handling failed');
          continue;
        }
        if (!reply || socket.destroyed) continue;
        // A client that sends but never reads must not make us buffer without bound.
        if (socket.writableLength > STUN_TCP_MAX_UNSENT_BYTES) {
          this.counters.drops++;
          socket.destroy();
          return;
        }
        socket.write(reply.bytes);
      }
    };
    socket.on('data', onData);
    if (head && head.length > 0) onData(head);
  }

  /** Processes one STUN message; returns the reply to send, or undefined to stay silent. */
  #handle(
    buf: Uint8Array,
    from: TransportAddress,
    udp: UdpRole | undefined,
    tcpLocal: TransportAddress | undefined,
    tcpSocket: net.Socket | undefined,
  ): Reply | undefined {
    let req: StunMessage;
    try {
      // RFC 8489 §12: accept RFC 3489 requests (no magic cookie) and answer them in kind.
      req = decodeStun(buf, { allowLegacy: true });
    } catch {
      this.counters.drops++;
      return undefined; // §6.3: silently discarded
    }
    if (!req.legacy && checkFingerprint(req) === 'invalid') {
      this.counters.drops++;
      return undefined; // §7.3 / §14.7: not a STUN message for us
    }
    const handler = req.legacy ? undefined : this.#methods.get(req.method);
    if (handler && (req.cls === StunClass.Request || req.cls === StunClass.Indication)) {
      if (req.cls === StunClass.Request) {
        this.counters.requests++;
        this.#tally(req.method).requests++;
      }
      const bytes = handler(
        req,
        udp ? { from, transport: 'udp', udp: udp.transport } : { from, transport: 'tcp', tcp: tcpSocket },
      );
      if (!bytes) return undefined;
      // Count by the reply's class bits (RFC 8489 §5: C1 is bit 8, C0 bit 4 of the type).
      if (bytes.length >= 2 && (bytes[1]! & 0x10) !== 0 && (bytes[0]! & 0x01) !== 0) {
        this.counters.errors++;
        this.#tally(req.method).errors++;
      } else {
        this.counters.responses++;
        this.#tally(req.method).responses++;
      }
      return { bytes: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
    }
    if (req.cls !== StunClass.Request) {
      // §6.3.2: indications get no response; responses to a server are stray.
      if (req.cls !== StunClass.Indication) this.counters.drops++;
      return undefined;
    }
    this.counters.requests++;
    this.#tally(req.method).requests++;
    const rfc5780 = udp?.group !== undefined;
    const bound: Bound = { bytes: udp ? buf.length * this.#factor : Infinity, from };
    const fingerprint = !req.legacy && req.has(Attr.FINGERPRINT);

    // §6.3.1: unknown comprehension-required attributes -> 420. Without RFC 5780 mode (and always over TCP, where
    // changing address or port makes no sense) RFC 5780's request attributes count as unknown too.
    const unknown = req.unknownComprehensionRequired(this.#registry);
    if (!rfc5780) {
      for (const t of [Attr.CHANGE_REQUEST, Attr.RESPONSE_PORT, Attr.PADDING])
        if (req.has(t) && !unknown.includes(t)) unknown.push(t);
    }
    if (unknown.length > 0) {
      return this.#error(req, ErrorCode.UnknownAttribute, bound, fingerprint, [attr(UnknownAttributes, unknown)]);
    }
    if (req.method !== StunMethod.Binding)
      return this.#error(req, ErrorCode.BadRequest, bound, fingerprint, [], 'Unsupported Method');

    let change = { changeIp: false, changePort: false };
    let responsePort: number | undefined;
    let paddingLength = 0;
    try {
      change = req.get(ChangeRequest) ?? change;
      responsePort = req.get(ResponsePort);
      paddingLength = req.getRaw(Attr.PADDING)?.value.length ?? 0;
    } catch {
      return this.#error(req, ErrorCode.BadRequest, bound, fingerprint, [], 'Malformed Attribute');
    }
    if (responsePort !== undefined && paddingLength > 0) {
      // RFC 5780 §6.1: PADDING with RESPONSE-PORT would let anyone aim large packets at another port.
      return this.#error(req, ErrorCode.BadRequest, bound, fingerprint, [], 'PADDING With RESPONSE-PORT');
    }
    if (responsePort === 0) return this.#error(req, ErrorCode.BadRequest, bound, fingerprint, [], 'Bad RESPONSE-PORT');

    // RFC 5780 §6.1: answer from the socket differing in IP and/or port as CHANGE-REQUEST asks.
    let via = udp?.transport;
    let other: TransportAddress | undefined;
    if (udp?.group && udp.index !== undefined) {
      const index = udp.index ^ (change.changeIp ? 2 : 0) ^ (change.changePort ? 1 : 0);
      via = udp.group[index]!;
      other = localAddress(udp.group[udp.index ^ 3]!);
    }
    // Required part first, optional parts in the order they are dropped to respect the amplification bound
    // (getsockname() for the origin only when an attribute needs it).
    const required: AttributeInit[] = [];
    const optional: AttributeInit[] = [];
    if (req.legacy) {
      // RFC 3489 §11.2: MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS (the latter only with an alternate).
      required.push(attr(MappedAddress, from));
      if (other) optional.push(attr(ChangedAddress, other));
      optional.push(attr(SourceAddress, via ? localAddress(via) : tcpLocal!));
    } else {
      required.push(attr(XorMappedAddress, from)); // §14.2
      if (rfc5780) {
        // RFC 5780 §6.1: a server in discovery mode answers every Binding request with RESPONSE-ORIGIN (§7.3) and,
        // having an alternate address, OTHER-ADDRESS (§7.4): required, so kept whatever the request's size (the
        // documented exception, bounded by STUN_RFC5780_EXTRA_BYTES; discovery mode is the operator's --alt-address).
        required.push(attr(ResponseOrigin, via ? localAddress(via) : tcpLocal!));
        if (other) required.push(attr(OtherAddress, other));
      }
      if (this.#softwareAttr) optional.push(this.#softwareAttr);
    }

    const reply = this.#fit(
      req,
      StunClass.SuccessResponse,
      required,
      optional,
      bound,
      fingerprint,
      paddingLength,
      true,
    );
    if (!reply) {
      this.counters.drops++;
      return undefined;
    }
    this.counters.responses++;
    this.#tally(req.method).responses++;
    return { bytes: reply, via, port: responsePort };
  }

  /** Encodes with as many optional attributes as fit under `bound` (dropping from the end of `optional`). */
  #fit(
    req: StunMessage,
    cls: StunClass,
    required: AttributeInit[],
    optional: AttributeInit[],
    bound: Bound,
    fingerprint: boolean,
    paddingLength = 0,
    mustAnswer = false,
  ): Buffer | undefined {
    const tid = req.legacy ? req.raw.subarray(4, 20) : req.transactionId;
    for (let keep = optional.length; keep >= 0; keep--) {
      const attributes =
        keep === 0 ? required : required.concat(keep === optional.length ? optional : optional.slice(0, keep));
      let out = encodeStun({ cls, method: req.method, transactionId: tid, attributes }, { fingerprint });
      if (paddingLength > 0) {
        // RFC 5780 §7.6: pad the response like the request, within the amplification bound.
        const room = Math.floor(Math.min(paddingLength, bound.bytes - out.length - 4) / 4) * 4;
        if (room > 0) {
          out = encodeStun(
            {
              cls,
              method: req.method,
              transactionId: tid,
              attributes: [...attributes, attr(Padding, new Uint8Array(room))],
            },
            { fingerprint },
          );
        }
      }
      if (out.length <= bound.bytes) return out;
    }
    if (!mustAnswer) return undefined;
    // Only within the oversized-answer budget (STUN_OVERSIZED_BURST), so no victim gets more than a trickle of them.
    if (!this.#oversizedAllowed(bound.from)) {
      this.counters.amplificationDropped++;
      return undefined;
    }
    // RFC 8489 requires an answer: the required attributes alone, however small the request was (module comment).
    this.counters.oversized++;
    return encodeStun({ cls, method: req.method, transactionId: tid, attributes: required }, { fingerprint });
  }

  /** Takes one token of the source's and the server's oversized-answer budgets (both must have one). */
  #oversizedAllowed(from: TransportAddress): boolean {
    const now = this.#now();
    const refill = (b: { tokens: number; last: number }, rate: number, burst: number) => {
      b.tokens = Math.min(burst, b.tokens + ((now - b.last) / 1000) * rate);
      b.last = now;
    };
    const key = sourceOf(from.address);
    let b = this.#oversizedPerSource.get(key);
    if (!b) {
      if (this.#oversizedPerSource.size >= MAX_OVERSIZED_SOURCES) {
        // Forget the oldest (Map order is insertion order); a forgotten source starts with a fresh burst, which the
        // global budget still bounds.
        const oldest = this.#oversizedPerSource.keys().next().value;
        if (oldest !== undefined) this.#oversizedPerSource.delete(oldest);
      }
      b = { tokens: STUN_OVERSIZED_BURST, last: now };
      this.#oversizedPerSource.set(key, b);
    }
    refill(b, STUN_OVERSIZED_PER_SECOND, STUN_OVERSIZED_BURST);
    refill(this.#oversizedGlobal, STUN_OVERSIZED_GLOBAL_PER_SECOND, STUN_OVERSIZED_GLOBAL_PER_SECOND);
    if (b.tokens < 1 || this.#oversizedGlobal.tokens < 1) return false;
    b.tokens -= 1;
    this.#oversizedGlobal.tokens -= 1;
    return true;
  }

  #error(
    req: StunMessage,
    code: number,
    bound: Bound,
    fingerprint: boolean,
    extra: AttributeInit[],
    reason?: string,
  ): Reply | undefined {
    const text = reason ?? ERROR_REASONS[code] ?? 'Error';
    const required = [attr(ErrorCodeAttr, { code, reason: text }), ...extra];
    const optional = this.#softwareAttr && !req.legacy ? [this.#softwareAttr] : [];
    let bytes = this.#fit(req, StunClass.ErrorResponse, required, optional, bound, fingerprint);
    // Still too big (long UNKNOWN-ATTRIBUTES list vs. a tiny request): try without the reason phrase.
    if (!bytes)
      bytes = this.#fit(
        req,
        StunClass.ErrorResponse,
        [attr(ErrorCodeAttr, { code, reason: '' }), ...extra],
        [],
        bound,
        fingerprint,
        0,
        true,
      );
    if (!bytes) {
      this.counters.drops++;
      return undefined;
    }
    this.counters.errors++;
    this.#tally(req.method).errors++;
    return { bytes };
  }

  /** The name of a STUN method as this server's registry knows it ("Binding", "Allocate", ...). */
  methodName(method: number): string {
    return this.#registry.methodName(method);
  }

  #tally(method: number): { requests: number; responses: number; errors: number } {
    let t = this.byMethod.get(method);
    if (!t) {
      // Only registered methods reach the counters (unknown ones are answered 400 under their own number, bounded
      // by the 12-bit method space), so this map stays small.
      t = { requests: 0, responses: 0, errors: 0 };
      this.byMethod.set(method, t);
    }
    return t;
  }

  /** Detaches from every transport and closes the TCP connections it serves. Transports stay open (serve owns them). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const detach of [...this.#detach]) detach();
    for (const s of this.#tcp) s.destroy();
    this.#tcp.clear();
  }
}
