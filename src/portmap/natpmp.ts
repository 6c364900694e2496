/**
 * NAT-PMP client (RFC 6886): external address, map, renew, delete, with the §3.1 retransmission schedule and
 * §3.6 epoch tracking. One client talks to one gateway from its own ephemeral UDP socket.
 */
import { NodeDatagramTransport } from '../net/datagram.js';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import {
  NATPMP_SERVER_PORT,
  NatPmpResult,
  decodeNatPmpResponse,
  encodeNatPmpRequest,
  natPmpResultMessage,
  natPmpResultName,
  type NatPmpResponse,
} from '../wire/natpmp.js';
import {
  EpochTracker,
  NATPMP_RETRANSMIT,
  checkPort,
  udpTransaction,
  type MapTransport,
  type RetransmitSchedule,
} from './common.js';

/** RFC 6886 §3.3: the recommended lifetime of a mapping is 7200 s (2 hours). */
export const NATPMP_DEFAULT_LIFETIME = 7200;

export interface NatPmpClientOptions {
  gateway: string;
  /** Gateway port; 5351 (RFC 6886 §3.1). Tests point this at a fake. */
  port?: number;
  /** Local address to send from (default: any). */
  localAddress?: string;
  retransmit?: RetransmitSchedule;
  /** Overall cap per request in ms (default: the schedule's own end, 127.75 s for the RFC schedule). */
  timeoutMs?: number;
  logger?: Logger;
}

export interface NatPmpMapResult {
  transport: MapTransport;
  internalPort: number;
  externalPort: number;
  lifetime: number;
  epoch: number;
  /** True when this answer's epoch shows the gateway restarted since the previous answer (§3.6). */
  gatewayRestarted: boolean;
}

export class NatPmpClient {
  readonly gateway: string;
  readonly port: number;
  readonly epoch = new EpochTracker();
  #opts: NatPmpClientOptions;
  #socket: Promise<NodeDatagramTransport> | undefined;
  #closed = false;
  #logger: Logger;

  constructor(opts: NatPmpClientOptions) {
    this.gateway = opts.gateway;
    this.port = opts.port ?? NATPMP_SERVER_PORT;
    this.#opts = opts;
    this.#logger = opts.logger ?? silentLogger;
  }

  #sock(): Promise<NodeDatagramTransport> {
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'NAT-PMP client is closed');
    this.#socket ??= NodeDatagramTransport.bind({ address: this.#opts.localAddress, type: 'udp4' });
    return this.#socket;
  }

  async #request<T extends NatPmpResponse['op']>(
    request: Uint8Array,
    expectOp: number,
    what: string,
    signal?: AbortSignal,
    schedule?: RetransmitSchedule,
    accept: (res: NatPmpResponse) => boolean = () => true,
  ): Promise<Extract<NatPmpResponse, { op: T }>> {
    const socket = await this.#sock();
    const res = await udpTransaction({
      socket,
      gateway: this.gateway,
      port: this.port,
      request,
      schedule: schedule ?? this.#opts.retransmit ?? NATPMP_RETRANSMIT,
      timeoutMs: this.#opts.timeoutMs,
      signal,
      what,
      logger: this.#logger,
      parse: (msg) => {
        // §3.2 / §3.3: the answer's opcode is the request's + 128; others (e.g. §3.2.1 announcements) are not ours.
        if (msg.length < 2 || msg[0] !== 0 || msg[1] !== (expectOp | 0x80)) return undefined;
        const r = decodeNatPmpResponse(msg);
        return accept(r) ? r : undefined;
      },
    });
    if (res.resultCode !== NatPmpResult.SUCCESS) {
      throw new NatpunchError('PORTMAP', `${what}: ${natPmpResultMessage(res.resultCode)}`, {
        details: {
          protocol: 'natpmp',
          resultCode: res.resultCode,
          resultName: natPmpResultName(res.resultCode),
          gateway: this.gateway,
        },
      });
    }
    if (res.op === 'error') throw new NatpunchError('PORTMAP', `${what}: gateway sent a short success answer`);
    return res as Extract<NatPmpResponse, { op: T }>;
  }

  /** §3.2: the gateway's external IPv4 address. */
  async externalAddress(
    signal?: AbortSignal,
    schedule?: RetransmitSchedule,
  ): Promise<{ address: string; epoch: number; gatewayRestarted: boolean }> {
    const res = await this.#request<'external-address'>(
      encodeNatPmpRequest({ op: 'external-address' }),
      0,
      'NAT-PMP external address',
      signal,
      schedule,
    );
    return { address: res.externalAddress, epoch: res.epoch, gatewayRestarted: this.epoch.update(res.epoch) };
  }

  /**
   * §3.3: creates or renews a mapping. `externalPort` is only a suggestion; the answer says what was assigned.
   * A renewal is the same request again (§3.3 "refresh"); the gateway keeps the port when it can.
   */
  async map(
    req: { transport: MapTransport; internalPort: number; externalPort?: number; lifetime?: number },
    signal?: AbortSignal,
  ): Promise<NatPmpMapResult> {
    checkPort('internalPort', req.internalPort);
    checkPort('externalPort', req.externalPort ?? 0, true);
    const lifetime = req.lifetime ?? NATPMP_DEFAULT_LIFETIME;
    if (!Number.isInteger(lifetime) || lifetime < 1 || lifetime > 0xffffffff) {
      throw new NatpunchError('BAD_ARGUMENT', 'lifetime must be a positive number of seconds');
    }
    const op = req.transport === 'udp' ? 1 : 2;
    const res = await this.#request<'map'>(
      encodeNatPmpRequest({
        op: 'map',
        transport: req.transport,
        internalPort: req.internalPort,
        suggestedExternalPort: req.externalPort ?? req.internalPort,
        lifetime,
      }),
      op,
      `NAT-PMP map ${req.transport} ${req.internalPort}`,
      signal,
      undefined,
      // Answers carry no transaction id: one for another internal port (a concurrent request) is not ours.
      (r) => r.op !== 'map' || r.internalPort === req.internalPort,
    );
    if (res.externalPort === 0 || res.lifetime === 0) {
      throw new NatpunchError('PORTMAP', 'NAT-PMP: gateway answered success but assigned no port');
    }
    return {
      transport: req.transport,
      internalPort: res.internalPort,
      externalPort: res.externalPort,
      lifetime: res.lifetime,
      epoch: res.epoch,
      gatewayRestarted: this.epoch.update(res.epoch),
    };
  }

  /** §3.4: deletes a mapping: lifetime 0 and suggested external port 0. */
  async unmap(req: { transport: MapTransport; internalPort: number }, signal?: AbortSignal): Promise<void> {
    checkPort('internalPort', req.internalPort);
    const op = req.transport === 'udp' ? 1 : 2;
    const res = await this.#request<'map'>(
      encodeNatPmpRequest({
        op: 'map',
        transport: req.transport,
        internalPort: req.internalPort,
        suggestedExternalPort: 0,
        lifetime: 0,
      }),
      op,
      `NAT-PMP delete ${req.transport} ${req.internalPort}`,
      signal,
      undefined,
      (r) => r.op !== 'map' || r.internalPort === req.internalPort,
    );
    this.epoch.update(res.epoch);
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
