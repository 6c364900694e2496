/**
 * PCP client (RFC 6887): MAP / PEER / ANNOUNCE, nonce matching, epoch validation, renewal and delete, and version
 * negotiation (a NAT-PMP-only gateway answers UNSUPP_VERSION with version 0: the caller falls back to NAT-PMP).
 * THIRD_PARTY is never sent. Also the listener for unsolicited ANNOUNCE / NAT-PMP address announcements.
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { NodeDatagramTransport } from '../net/datagram.js';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { decodeNatPmpResponse } from '../wire/natpmp.js';
import {
  IPPROTO,
  PCP_CLIENT_PORT,
  PCP_SERVER_PORT,
  PCP_VERSION,
  PcpResult,
  decodePcpResponse,
  encodePcpRequest,
  pcpResultMessage,
  pcpResultName,
  unspecifiedAddressFor,
  type PcpOption,
  type PcpResponse,
} from '../wire/pcp.js';
import {
  EpochTracker,
  PCP_RETRANSMIT,
  checkPort,
  localAddressFor,
  udpTransaction,
  type MapTransport,
  type RetransmitSchedule,
} from './common.js';

/** RFC 6887 §15: a MAP lifetime of 2 hours is a sensible default (the server may shorten it). */
export const PCP_DEFAULT_LIFETIME = 7200;

/** Error code when the gateway speaks only NAT-PMP (RFC 6887 §9): fall back to the NAT-PMP client. */
export const UNSUPPORTED_VERSION_CODE = 'PORTMAP_UNSUPPORTED_VERSION';

export interface PcpClientOptions {
  gateway: string;
  port?: number;
  /** Our address as the gateway sees it (PCP client IP, §7.1). Default: the local address routed to the gateway. */
  clientAddress?: string;
  retransmit?: RetransmitSchedule;
  timeoutMs?: number;
  logger?: Logger;
}

export interface PcpMapResult {
  nonce: Uint8Array;
  transport: MapTransport;
  internalAddress: string;
  internalPort: number;
  externalAddress: string;
  externalPort: number;
  lifetime: number;
  epoch: number;
  gatewayRestarted: boolean;
}

export interface PcpMapRequest {
  transport: MapTransport;
  internalPort: number;
  /** Suggested external port (default: the internal port); the server may assign another. */
  externalPort?: number;
  /** Suggested external address (default: none). */
  externalAddress?: string;
  lifetime?: number;
  /** Renewals and deletes reuse the nonce of the mapping (§11.1); omit for a new mapping. */
  nonce?: Uint8Array;
  /** §13.2: fail rather than assign a different external port. */
  preferFailure?: boolean;
  /** §13.3 FILTER options: only these remote peers may use the mapping. */
  filters?: Array<{ prefixLength: number; remotePort: number; remoteAddress: string }>;
}

export class PcpClient {
  readonly gateway: string;
  readonly port: number;
  readonly epoch = new EpochTracker();
  #opts: PcpClientOptions;
  #socket: Promise<NodeDatagramTransport> | undefined;
  #clientAddress: Promise<string> | undefined;
  #closed = false;
  #logger: Logger;

  constructor(opts: PcpClientOptions) {
    if (!isIP(opts.gateway)) throw new NatpunchError('BAD_ARGUMENT', `gateway "${opts.gateway}" is not an IP address`);
    this.gateway = opts.gateway;
    this.port = opts.port ?? PCP_SERVER_PORT;
    this.#opts = opts;
    this.#logger = opts.logger ?? silentLogger;
  }

  /** The PCP client address put in every request (§7.1). */
  clientAddress(): Promise<string> {
    this.#clientAddress ??= this.#opts.clientAddress
      ? Promise.resolve(this.#opts.clientAddress)
      : localAddressFor(this.gateway);
    return this.#clientAddress;
  }

  async #sock(): Promise<NodeDatagramTransport> {
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'PCP client is closed');
    this.#socket ??= NodeDatagramTransport.bind({ type: isIP(this.gateway) === 6 ? 'udp6' : 'udp4' });
    return this.#socket;
  }

  async #request(
    request: Uint8Array,
    opcode: PcpResponse['opcode'],
    what: string,
    accept: (res: PcpResponse) => boolean,
    signal?: AbortSignal,
    schedule?: RetransmitSchedule,
  ): Promise<PcpResponse> {
    const socket = await this.#sock();
    const res = await udpTransaction<PcpResponse | 'natpmp'>({
      socket,
      gateway: this.gateway,
      port: this.port,
      request,
      schedule: schedule ?? this.#opts.retransmit ?? PCP_RETRANSMIT,
      timeoutMs: this.#opts.timeoutMs,
      signal,
      what,
      logger: this.#logger,
      parse: (msg) => {
        if (msg.length >= 1 && msg[0] === 0) {
          // §9: a NAT-PMP gateway answers a version-2 request with NAT-PMP UNSUPPORTED_VERSION (result 1).
          const nat = decodeNatPmpResponse(msg);
          return nat.resultCode === 1 ? 'natpmp' : undefined;
        }
        const r = decodePcpResponse(msg);
        if (r.resultCode === PcpResult.UNSUPP_VERSION) return r;
        if (r.version !== PCP_VERSION || r.opcode !== opcode) return undefined;
        return accept(r) ? r : undefined;
      },
    });
    if (res === 'natpmp' || res.resultCode === PcpResult.UNSUPP_VERSION) {
      const serverVersion = res === 'natpmp' ? 0 : res.version;
      throw new NatpunchError(
        UNSUPPORTED_VERSION_CODE,
        `${what}: the gateway does not speak PCP version ${PCP_VERSION} (it offers version ${serverVersion}${serverVersion === 0 ? ', NAT-PMP' : ''})`,
        { details: { protocol: 'pcp', serverVersion, gateway: this.gateway } },
      );
    }
    if (res.resultCode !== PcpResult.SUCCESS) {
      throw new NatpunchError('PORTMAP', `${what}: ${pcpResultMessage(res.resultCode)}`, {
        details: {
          protocol: 'pcp',
          resultCode: res.resultCode,
          resultName: pcpResultName(res.resultCode),
          // §7.2: for errors the lifetime says how long the condition is expected to last.
          retryAfter: res.lifetime,
          gateway: this.gateway,
        },
      });
    }
    return res;
  }

  /**
   * §14.1: an ANNOUNCE request; the answer's epoch tells whether the gateway restarted. Also a presence probe.
   */
  async announce(
    signal?: AbortSignal,
    schedule?: RetransmitSchedule,
  ): Promise<{ epoch: number; gatewayRestarted: boolean }> {
    const clientAddress = await this.clientAddress();
    const res = await this.#request(
      encodePcpRequest({ opcode: 'announce', lifetime: 0, clientAddress }),
      'announce',
      'PCP announce',
      () => true,
      signal,
      schedule,
    );
    return { epoch: res.epoch, gatewayRestarted: this.epoch.update(res.epoch) };
  }

  /** §11: creates, renews (same nonce) or — with lifetime 0 — deletes a mapping. */
  async map(req: PcpMapRequest, signal?: AbortSignal): Promise<PcpMapResult> {
    checkPort('internalPort', req.internalPort);
    checkPort('externalPort', req.externalPort ?? 0, true);
    const lifetime = req.lifetime ?? PCP_DEFAULT_LIFETIME;
    if (!Number.isInteger(lifetime) || lifetime < 0 || lifetime > 0xffffffff) {
      throw new NatpunchError('BAD_ARGUMENT', 'lifetime must be a number of seconds');
    }
    const clientAddress = await this.clientAddress();
    const nonce = req.nonce ?? new Uint8Array(randomBytes(12)); // §11.1: a fresh random 96-bit nonce per mapping
    const protocol = req.transport === 'udp' ? IPPROTO.UDP : IPPROTO.TCP;
    const options: PcpOption[] = [];
    if (req.preferFailure) options.push({ type: 'prefer-failure' });
    for (const f of req.filters ?? []) options.push({ type: 'filter', ...f });
    const what =
      lifetime === 0
        ? `PCP delete ${req.transport} ${req.internalPort}`
        : `PCP map ${req.transport} ${req.internalPort}`;
    const res = await this.#request(
      encodePcpRequest({
        opcode: 'map',
        lifetime,
        clientAddress,
        map: {
          nonce,
          protocol,
          internalPort: req.internalPort,
          externalPort: lifetime === 0 ? 0 : (req.externalPort ?? req.internalPort),
          externalAddress: req.externalAddress ?? unspecifiedAddressFor(clientAddress),
        },
        options,
      }),
      'map',
      what,
      // §11.3: the answer must carry our nonce, protocol and internal port; anything else is not ours.
      (r) =>
        r.opcode === 'map' &&
        (r.map === undefined ||
          (Buffer.compare(r.map.nonce, nonce) === 0 &&
            r.map.protocol === protocol &&
            r.map.internalPort === req.internalPort)),
      signal,
    );
    if (res.opcode !== 'map' || !res.map)
      throw new NatpunchError('PORTMAP', `${what}: success answer without mapping data`);
    if (lifetime !== 0 && (res.map.externalPort === 0 || res.lifetime === 0)) {
      throw new NatpunchError('PORTMAP', `${what}: gateway answered success but assigned no port`);
    }
    return {
      nonce,
      transport: req.transport,
      internalAddress: clientAddress,
      internalPort: req.internalPort,
      externalAddress: res.map.externalAddress,
      externalPort: res.map.externalPort,
      lifetime: res.lifetime,
      epoch: res.epoch,
      gatewayRestarted: this.epoch.update(res.epoch),
    };
  }

  /** §15: delete = MAP with lifetime 0 and the mapping's nonce. */
  async unmap(
    req: { transport: MapTransport; internalPort: number; nonce: Uint8Array },
    signal?: AbortSignal,
  ): Promise<void> {
    await this.map({ ...req, lifetime: 0 }, signal);
  }

  /**
   * §12: PEER — creates or learns the outbound mapping towards one remote peer (useful to learn our external
   * address:port for a flow and to keep it alive with a known lifetime).
   */
  async peer(
    req: {
      transport: MapTransport;
      internalPort: number;
      remoteAddress: string;
      remotePort: number;
      lifetime?: number;
      nonce?: Uint8Array;
    },
    signal?: AbortSignal,
  ): Promise<PcpMapResult & { remoteAddress: string; remotePort: number }> {
    checkPort('internalPort', req.internalPort);
    checkPort('remotePort', req.remotePort);
    const clientAddress = await this.clientAddress();
    const nonce = req.nonce ?? new Uint8Array(randomBytes(12));
    const protocol = req.transport === 'udp' ? IPPROTO.UDP : IPPROTO.TCP;
    const lifetime = req.lifetime ?? PCP_DEFAULT_LIFETIME;
    const what = `PCP peer ${req.transport} ${req.internalPort} → ${req.remoteAddress}:${req.remotePort}`;
    const res = await this.#request(
      encodePcpRequest({
        opcode: 'peer',
        lifetime,
        clientAddress,
        peer: {
          nonce,
          protocol,
          internalPort: req.internalPort,
          externalPort: 0,
          externalAddress: unspecifiedAddressFor(clientAddress),
          remotePort: req.remotePort,
          remoteAddress: req.remoteAddress,
        },
      }),
      'peer',
      what,
      (r) => r.opcode === 'peer' && (r.peer === undefined || Buffer.compare(r.peer.nonce, nonce) === 0),
      signal,
    );
    if (res.opcode !== 'peer' || !res.peer)
      throw new NatpunchError('PORTMAP', `${what}: success answer without peer data`);
    return {
      nonce,
      transport: req.transport,
      internalAddress: clientAddress,
      internalPort: req.internalPort,
      externalAddress: res.peer.externalAddress,
      externalPort: res.peer.externalPort,
      lifetime: res.lifetime,
      epoch: res.epoch,
      gatewayRestarted: this.epoch.update(res.epoch),
      remoteAddress: res.peer.remoteAddress,
      remotePort: res.peer.remotePort,
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    void this.#socket?.then(
      (s) => s.close(),
      () => {},
    );
  }
}

export type GatewayAnnouncement =
  | { protocol: 'pcp'; opcode: 'announce' | 'map' | 'peer' | 'other'; epoch: number; response: PcpResponse }
  | { protocol: 'natpmp'; epoch: number; externalAddress?: string };

/**
 * Listens for the gateway's unsolicited messages on port 5350: PCP ANNOUNCE after a restart (RFC 6887 §14.1.3),
 * PCP MAP updates (§14.2) and NAT-PMP external-address announcements (RFC 6886 §3.2.1), all multicast to
 * 224.0.0.1. Only packets from the gateway are reported. Emits 'announcement' (GatewayAnnouncement).
 */
export class GatewayAnnounceListener extends EventEmitter {
  readonly gateway: string;
  #socket: dgram.Socket | undefined;

  private constructor(gateway: string) {
    super();
    this.gateway = gateway;
  }

  static async listen(opts: {
    gateway: string;
    port?: number;
    address?: string;
    logger?: Logger;
  }): Promise<GatewayAnnounceListener> {
    const l = new GatewayAnnounceListener(opts.gateway);
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    l.#socket = socket;
    socket.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(opts.port ?? PCP_CLIENT_PORT, opts.address, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    try {
      // Linux hosts already belong to 224.0.0.1 (all-hosts) on every interface; joining is best effort.
      socket.addMembership('224.0.0.1');
    } catch {
      /* no multicast on this interface */
    }
    socket.on('message', (msg, rinfo) => {
      if (rinfo.address !== opts.gateway) return;
      try {
        if (msg[0] === 0) {
          const r = decodeNatPmpResponse(msg);
          if (r.op === 'external-address' && r.resultCode === 0) {
            l.emit('announcement', { protocol: 'natpmp', epoch: r.epoch, externalAddress: r.externalAddress });
          }
        } else {
          const r = decodePcpResponse(msg);
          l.emit('announcement', { protocol: 'pcp', opcode: r.opcode, epoch: r.epoch, response: r });
        }
      } catch (err) {
        opts.logger?.debug({ err: (err as Error).message }, 'dropped malformed gateway announcement');
      }
    });
    return l;
  }

  get port(): number {
    return this.#socket?.address().port ?? 0;
  }

  close(): void {
    try {
      this.#socket?.close();
    } catch {
      /* already closed */
    }
    this.#socket = undefined;
    this.removeAllListeners();
  }
}
