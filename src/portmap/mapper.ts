/**
 * PortMapper: one object that opens mappings on the gateway with the best protocol it speaks (PCP, then NAT-PMP,
 * then UPnP IGD), renews them at half-life while they are in use, re-creates them when the gateway restarts, and
 * deletes every one of them on close().
 */
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { NatpunchError, isNatpunchError } from '../util/errors.js';
import { throwIfAborted, timeoutSignal } from '../util/abort.js';
import { silentLogger, type Logger } from '../util/log.js';
import {
  PROBE_RETRANSMIT,
  checkPort,
  localAddressFor,
  resolveGateway,
  type MapTransport,
  type PortMapProtocol,
  type PortMapping,
  type RetransmitSchedule,
} from './common.js';
import { NatPmpClient } from './natpmp.js';
import { GatewayAnnounceListener, PcpClient, UNSUPPORTED_VERSION_CODE, type GatewayAnnouncement } from './pcp.js';
import { UpnpIgdClient, SSDP_TIMEOUT_MS, type UpnpClientOptions } from './upnp.js';
import { candidatePriority, type Candidate } from '../traversal/candidate.js';

/** Default order: PCP is the standard and a superset, NAT-PMP its predecessor, UPnP IGD the slow fallback. */
export const DEFAULT_PROTOCOL_ORDER: readonly PortMapProtocol[] = ['pcp', 'natpmp', 'upnp'];
/** RFC 6886 §3.3 / RFC 6887 §15: 2 hours is the recommended lifetime. */
export const DEFAULT_LIFETIME = 7200;
/** UPnP IGDv2 (WANIPConnection:2 §2.3.16): leases are at most 604800 s. */
export const UPNP_MAX_LEASE = 604800;
/** For IGDv1 "permanent" (lease 0) mappings, re-add every this many seconds to notice a gateway that forgot it. */
export const PERMANENT_REFRESH_S = 1800;
/** Bound on close(): every delete together, ms. */
export const CLOSE_TIMEOUT_MS = 5000;
/** Delete requests use a short schedule: 250 ms doubling, 4 sends (3.75 s). */
const DELETE_RETRANSMIT: RetransmitSchedule = { initialMs: 250, attempts: 4 };
/** Mapping requests once the gateway is known to answer: 250 ms doubling, 6 sends (15.75 s). */
const MAP_RETRANSMIT: RetransmitSchedule = { initialMs: 250, attempts: 6 };
/** Never renew more often than this (a gateway granting 1-second leases must not make us spin), ms. */
const MIN_RENEW_MS = 1000;

export interface ProtocolProbe {
  /** The gateway answered in this protocol (even if with an error). */
  answered: boolean;
  /** It answered with success: mapping is likely to work. */
  ok: boolean;
  externalAddress?: string;
  epoch?: number;
  /** UPnP: the service type found. */
  service?: string;
  error?: string;
}

export interface PortMapProbe {
  gateway: string;
  pcp: ProtocolProbe;
  natpmp: ProtocolProbe;
  upnp: ProtocolProbe;
}

export interface PortMapperOptions {
  /** Gateway IP; default: the default route's gateway (/proc/net/route). */
  gateway?: string;
  /** Which protocols to try, in order. */
  protocols?: readonly PortMapProtocol[];
  /** Our LAN address for the gateway (default: the local address routed to it). */
  localAddress?: string;
  /** Gateway UDP port for NAT-PMP and PCP (5351); tests point it at a fake. */
  gatewayPort?: number;
  /** Retransmission of mapping requests (default 250 ms doubling, 6 sends). */
  retransmit?: RetransmitSchedule;
  /** Retransmission of presence probes (default 250 ms doubling, 3 sends). */
  probeRetransmit?: RetransmitSchedule;
  upnp?: Omit<UpnpClientOptions, 'gateway' | 'logger'>;
  /** UPnP port mapping description. */
  description?: string;
  /** Listen on UDP 5350 for the gateway's restart / address announcements (RFC 6887 §14.1.3, RFC 6886 §3.2.1). */
  listenAnnounce?: boolean | { port?: number; address?: string };
  /** Renew mappings at half-life (default true). */
  renew?: boolean;
  logger?: Logger;
}

export interface MapRequest {
  internalPort: number;
  transport?: MapTransport;
  /** Seconds (default 7200). */
  lifetime?: number;
  /** Suggested external port (default: same as internal). */
  externalPort?: number;
  /** Force one protocol. */
  protocol?: PortMapProtocol;
}

interface Entry {
  mapping: PortMapping;
  requestedLifetime: number;
  nonce?: Uint8Array;
  permanent?: boolean;
  timer?: NodeJS.Timeout;
  renewing?: Promise<void>;
  lost: boolean;
  removed: boolean;
  /** NAT-PMP: ask for the external address again on the next renewal (after an address announcement). */
  refreshAddress?: boolean;
}

/**
 * Events: 'renewed' (mapping), 'changed' (mapping, previous {externalAddress, externalPort}), 'lost' (mapping,
 * error) when a lease ran out without a successful renewal, 'restart' (protocol) when the gateway's epoch shows
 * it lost its state.
 */
export class PortMapper extends EventEmitter {
  #opts: PortMapperOptions;
  #logger: Logger;
  #gateway: string | undefined;
  #pcp: PcpClient | undefined;
  #natpmp: NatPmpClient | undefined;
  #upnp: Promise<UpnpIgdClient> | undefined;
  #listener: GatewayAnnounceListener | undefined;
  #entries = new Set<Entry>();
  #probe: Promise<PortMapProbe> | undefined;
  #closed = false;
  #closing: Promise<CloseResult> | undefined;
  /** Aborted by close(): in-flight renewals stop at once so deletes can start. */
  #background = new AbortController();

  constructor(opts: PortMapperOptions = {}) {
    super();
    this.#opts = opts;
    this.#logger = opts.logger ?? silentLogger;
  }

  /** The local port of the announcement listener, once listening (listenAnnounce). */
  get announcePort(): number | undefined {
    return this.#listener?.port;
  }

  get mappings(): PortMapping[] {
    return [...this.#entries].filter((e) => !e.removed).map((e) => e.mapping);
  }

  async gateway(): Promise<string> {
    this.#gateway ??= await resolveGateway(this.#opts.gateway);
    return this.#gateway;
  }

  #check(): void {
    if (this.#closed) throw new NatpunchError('SOCKET_CLOSED', 'PortMapper is closed');
  }

  async #pcpClient(): Promise<PcpClient> {
    const gateway = await this.gateway();
    this.#check();
    this.#pcp ??= new PcpClient({
      gateway,
      port: this.#opts.gatewayPort,
      clientAddress: this.#opts.localAddress,
      retransmit: this.#opts.retransmit ?? MAP_RETRANSMIT,
      logger: this.#logger,
    });
    return this.#pcp;
  }

  async #natpmpClient(): Promise<NatPmpClient> {
    const gateway = await this.gateway();
    this.#check();
    this.#natpmp ??= new NatPmpClient({
      gateway,
      port: this.#opts.gatewayPort,
      retransmit: this.#opts.retransmit ?? MAP_RETRANSMIT,
      logger: this.#logger,
    });
    return this.#natpmp;
  }

  #upnpClient(signal?: AbortSignal): Promise<UpnpIgdClient> {
    if (!this.#upnp) {
      const p = this.gateway().then(async (gateway) => {
        // Search from the interface that faces the gateway (multi-homed hosts), unless told otherwise.
        const localAddress = this.#opts.localAddress ?? (await localAddressFor(gateway));
        const ssdp = { localAddress, ...this.#opts.upnp?.ssdp };
        return UpnpIgdClient.discover({ ...this.#opts.upnp, ssdp, gateway, logger: this.#logger, signal });
      });
      this.#upnp = p;
      // A failed discovery may be retried later.
      p.catch(() => {
        if (this.#upnp === p) this.#upnp = undefined;
      });
    }
    return this.#upnp;
  }

  async #startListener(): Promise<void> {
    const l = this.#opts.listenAnnounce;
    if (!l || this.#listener || this.#closed) return;
    try {
      this.#listener = await GatewayAnnounceListener.listen({
        gateway: await this.gateway(),
        port: typeof l === 'object' ? l.port : undefined,
        address: typeof l === 'object' ? l.address : undefined,
        logger: this.#logger,
      });
      this.#listener.on('announcement', (a: GatewayAnnouncement) => this.#onAnnouncement(a));
      if (this.#closed) this.#listener.close();
    } catch (err) {
      this.#logger.debug({ err: (err as Error).message }, 'cannot listen for gateway announcements');
    }
  }

  #onAnnouncement(a: GatewayAnnouncement): void {
    if (this.#closed) return;
    // One daemon serves PCP and NAT-PMP on port 5351 with one epoch (RFC 6887 Appendix A): an announcement in
    // either protocol is checked against both trackers, so a PCP ANNOUNCE after a reboot also revives NAT-PMP
    // mappings. A false alarm only costs an early renewal.
    const restarted: PortMapProtocol[] = [];
    if (this.#pcp?.epoch.update(a.epoch)) restarted.push('pcp');
    if (this.#natpmp?.epoch.update(a.epoch)) restarted.push('natpmp');
    const addressChanged =
      a.protocol === 'natpmp' &&
      a.externalAddress !== undefined &&
      [...this.#entries].some(
        (e) => e.mapping.protocol === 'natpmp' && e.mapping.externalAddress !== a.externalAddress,
      );
    this.#logger.debug({ announcement: { protocol: a.protocol, epoch: a.epoch }, restarted }, 'gateway announcement');
    for (const p of restarted) {
      if (![...this.#entries].some((e) => e.mapping.protocol === p)) continue;
      this.emit('restart', p);
      this.#renewAll(p, 'announcement');
    }
    if (addressChanged && !restarted.includes('natpmp')) {
      for (const e of this.#entries) if (e.mapping.protocol === 'natpmp') e.refreshAddress = true;
      this.#renewAll('natpmp', 'address change');
    }
  }

  /**
   * Which protocols the gateway answers: PCP ANNOUNCE, NAT-PMP external address and SSDP + GetExternalIPAddress,
   * all at once. Bounded by the probe schedule (1.75 s) and the SSDP window (2.5 s) plus one HTTP exchange.
   */
  probe(signal?: AbortSignal): Promise<PortMapProbe> {
    if (!this.#probe) {
      const p = this.#runProbe(signal);
      this.#probe = p;
      // Only a probe that found something is worth remembering; otherwise the next map() asks again.
      p.then(
        (r) => {
          if (!r.pcp.answered && !r.natpmp.answered && !r.upnp.answered && this.#probe === p) this.#probe = undefined;
        },
        () => {
          if (this.#probe === p) this.#probe = undefined;
        },
      );
    }
    return this.#probe;
  }

  async #runProbe(signal?: AbortSignal): Promise<PortMapProbe> {
    const gateway = await this.gateway();
    const wanted = this.#opts.protocols ?? DEFAULT_PROTOCOL_ORDER;
    const schedule = this.#opts.probeRetransmit ?? PROBE_RETRANSMIT;
    const skipped: ProtocolProbe = { answered: false, ok: false, error: 'not tried' };
    // NAT-PMP and natpunch's SSDP are IPv4-only; PCP speaks both.
    const v6 = isIP(gateway) === 6;
    const v4only: ProtocolProbe = { answered: false, ok: false, error: 'IPv4 only (the gateway is IPv6)' };
    const [pcp, natpmp, upnp] = await Promise.all([
      wanted.includes('pcp')
        ? (async (): Promise<ProtocolProbe> => {
            try {
              const r = await (await this.#pcpClient()).announce(signal, schedule);
              return { answered: true, ok: true, epoch: r.epoch };
            } catch (err) {
              return probeError(err, 'pcp');
            }
          })()
        : skipped,
      v6 && wanted.includes('natpmp')
        ? v4only
        : wanted.includes('natpmp')
          ? (async (): Promise<ProtocolProbe> => {
              try {
                const r = await (await this.#natpmpClient()).externalAddress(signal, schedule);
                return { answered: true, ok: true, externalAddress: r.address, epoch: r.epoch };
              } catch (err) {
                return probeError(err, 'natpmp');
              }
            })()
          : skipped,
      v6 && wanted.includes('upnp')
        ? v4only
        : wanted.includes('upnp')
          ? (async (): Promise<ProtocolProbe> => {
              let client: UpnpIgdClient;
              try {
                client = await this.#upnpClient(signal);
              } catch (err) {
                return { answered: false, ok: false, error: (err as Error).message };
              }
              try {
                const ip = await client.getExternalIPAddress(signal);
                return { answered: true, ok: true, externalAddress: ip, service: client.serviceType };
              } catch (err) {
                return { answered: true, ok: false, service: client.serviceType, error: (err as Error).message };
              }
            })()
          : skipped,
    ]);
    return { gateway, pcp, natpmp, upnp };
  }

  /**
   * Opens a mapping. Tries the protocols the gateway answers in order (PCP, NAT-PMP, UPnP) and returns the
   * mapping, which stays up to date (renewals change `expiresAt`, maybe the external address) until unmap()
   * or close().
   */
  async map(req: MapRequest, signal?: AbortSignal): Promise<PortMapping> {
    this.#check();
    checkPort('internalPort', req.internalPort);
    checkPort('externalPort', req.externalPort ?? 0, true);
    const lifetime = req.lifetime ?? DEFAULT_LIFETIME;
    if (!Number.isInteger(lifetime) || lifetime < 1)
      throw new NatpunchError('BAD_ARGUMENT', 'lifetime must be a positive integer (seconds)');
    const transport = req.transport ?? 'udp';
    const gateway = await this.gateway();
    await this.#startListener();

    let order: PortMapProtocol[];
    if (req.protocol) order = [req.protocol];
    else {
      const probe = await this.probe(signal);
      const wanted = this.#opts.protocols ?? DEFAULT_PROTOCOL_ORDER;
      order = wanted.filter((p) => probe[p].answered);
      if (order.length === 0) {
        throw new NatpunchError(
          'PORTMAP',
          `the gateway ${gateway} answers none of ${wanted.join(', ')} (${wanted.map((p) => `${p}: ${probe[p].error ?? 'no answer'}`).join('; ')})`,
          { details: { probe } },
        );
      }
    }
    const errors: string[] = [];
    for (const protocol of order) {
      throwIfAborted(signal);
      const entry: Entry = {
        mapping: {
          protocol,
          transport,
          gateway,
          internalAddress: '',
          internalPort: req.internalPort,
          externalAddress: '',
          externalPort: req.externalPort ?? req.internalPort,
          lifetime,
          expiresAt: 0,
        },
        requestedLifetime: lifetime,
        lost: false,
        removed: false,
      };
      try {
        await this.#doMap(entry, signal);
      } catch (err) {
        if (isNatpunchError(err, 'ABORTED')) throw err;
        errors.push(`${protocol}: ${(err as Error).message}`);
        this.#logger.debug({ protocol, err: (err as Error).message }, 'mapping attempt failed');
        continue;
      }
      if (this.#closed) {
        await this.#delete(entry).catch(() => {});
        throw new NatpunchError('SOCKET_CLOSED', 'PortMapper closed while mapping');
      }
      this.#entries.add(entry);
      this.#schedule(entry);
      return entry.mapping;
    }
    const only = errors.length === 1 ? errors[0]!.replace(/^\w+: /, '') : errors.join('; ');
    throw new NatpunchError('PORTMAP', `could not map ${transport} port ${req.internalPort} on ${gateway}: ${only}`, {
      details: { errors },
    });
  }

  /** Creates or renews the entry's mapping with its protocol; updates the mapping in place. */
  async #doMap(entry: Entry, signal?: AbortSignal): Promise<void> {
    const m = entry.mapping;
    const before = { externalAddress: m.externalAddress, externalPort: m.externalPort };
    let restarted = false;
    if (m.protocol === 'pcp') {
      const pcp = await this.#pcpClient();
      let r;
      try {
        r = await pcp.map(
          {
            transport: m.transport,
            internalPort: m.internalPort,
            // RFC 6887 §11.2.1: a renewal suggests the external address and port assigned before.
            externalPort: m.externalPort,
            externalAddress: m.externalAddress || undefined,
            lifetime: entry.requestedLifetime,
            nonce: entry.nonce,
          },
          signal,
        );
      } catch (err) {
        if (isNatpunchError(err, UNSUPPORTED_VERSION_CODE)) {
          // RFC 6887 §9: the gateway offers only NAT-PMP: continue in NAT-PMP.
          m.protocol = 'natpmp';
          return this.#doMap(entry, signal);
        }
        throw err;
      }
      entry.nonce = r.nonce;
      Object.assign(m, {
        internalAddress: r.internalAddress,
        externalAddress: r.externalAddress,
        externalPort: r.externalPort,
        lifetime: r.lifetime,
        expiresAt: Date.now() + r.lifetime * 1000,
      });
      restarted = r.gatewayRestarted;
    } else if (m.protocol === 'natpmp') {
      const nat = await this.#natpmpClient();
      const r = await nat.map(
        {
          transport: m.transport,
          internalPort: m.internalPort,
          externalPort: m.externalPort,
          lifetime: entry.requestedLifetime,
        },
        signal,
      );
      restarted = r.gatewayRestarted;
      this.#logger.debug({ protocol: 'natpmp', epoch: r.epoch, restarted }, 'NAT-PMP map answer');
      if (!m.externalAddress || restarted || !m.internalAddress || entry.refreshAddress) {
        entry.refreshAddress = false;
        const ext = await nat.externalAddress(signal);
        m.externalAddress = ext.address;
        m.internalAddress ||= this.#opts.localAddress ?? (await localAddressFor(nat.gateway));
      }
      Object.assign(m, {
        externalPort: r.externalPort,
        lifetime: r.lifetime,
        expiresAt: Date.now() + r.lifetime * 1000,
      });
    } else {
      await this.#upnpMap(entry, signal);
    }
    if (restarted) {
      this.#logger.info({ protocol: m.protocol }, 'gateway restarted: re-mapping');
      this.emit('restart', m.protocol);
      this.#renewAll(m.protocol, 'restart', entry);
    }
    if (
      before.externalAddress &&
      (before.externalAddress !== m.externalAddress || before.externalPort !== m.externalPort)
    ) {
      this.emit('changed', m, before);
    }
  }

  async #upnpMap(entry: Entry, signal?: AbortSignal): Promise<void> {
    const m = entry.mapping;
    const upnp = await this.#upnpClient(signal);
    const internalClient = m.internalAddress || this.#opts.localAddress || (await localAddressFor(upnp.device.gateway));
    const lease = entry.permanent ? 0 : Math.min(entry.requestedLifetime, UPNP_MAX_LEASE);
    const base = {
      transport: m.transport,
      internalPort: m.internalPort,
      internalClient,
      description: this.#opts.description ?? 'natpunch',
      leaseDuration: lease,
    };
    const renewing = m.expiresAt > 0;
    let externalPort = m.externalPort;
    const add = async (port: number, leaseDuration: number): Promise<number> => {
      if (upnp.isV2 && !renewing) {
        try {
          return await upnp.addAnyPortMapping({ ...base, externalPort: port, leaseDuration }, signal);
        } catch (err) {
          if (!(isNatpunchError(err) && err.details?.upnpErrorCode === 401)) throw err;
        }
      }
      await upnp.addPortMapping({ ...base, externalPort: port, leaseDuration }, signal);
      return port;
    };
    const code = (err: unknown) => (isNatpunchError(err) ? err.details?.upnpErrorCode : undefined);
    try {
      externalPort = await add(externalPort, lease);
    } catch (err) {
      if (code(err) === 725 && lease !== 0) {
        // IGDv1 gateways that only do permanent leases: map with 0 and keep it alive by re-adding (natpunch
        // still deletes it on close).
        entry.permanent = true;
        externalPort = await add(externalPort, 0);
      } else if (code(err) === 718 && !renewing) {
        // ConflictInMappingEntry: the port is taken; try a few others (bounded).
        let done = false;
        for (let i = 0; i < 3 && !done; i++) {
          const p = 1024 + Math.floor(Math.random() * (65535 - 1024));
          try {
            externalPort = await add(p, lease);
            done = true;
          } catch (e) {
            if (code(e) !== 718) throw e;
          }
        }
        if (!done) throw err;
      } else throw err;
    }
    const externalAddress = await upnp.getExternalIPAddress(signal);
    const lifetime = entry.permanent ? 0 : lease;
    Object.assign(m, {
      internalAddress: internalClient,
      externalAddress,
      externalPort,
      lifetime,
      expiresAt: entry.permanent ? Infinity : Date.now() + lifetime * 1000,
    });
  }

  #schedule(entry: Entry, delayMs?: number): void {
    if (this.#opts.renew === false || entry.removed || this.#closed) return;
    clearTimeout(entry.timer);
    const m = entry.mapping;
    // RFC 6886 §3.3 / RFC 6887 §11.2.1: renew at half the granted lifetime.
    const half = entry.permanent ? PERMANENT_REFRESH_S * 1000 : (m.lifetime * 1000) / 2;
    const delay = Math.max(MIN_RENEW_MS, delayMs ?? half);
    entry.timer = setTimeout(() => void this.#renew(entry, 'timer'), delay);
    entry.timer.unref?.();
  }

  #renewAll(protocol: PortMapProtocol, why: string, except?: Entry): void {
    for (const e of this.#entries) {
      if (e === except || e.removed || e.mapping.protocol !== protocol) continue;
      void this.#renew(e, why);
    }
  }

  #renew(entry: Entry, why: string): Promise<void> {
    if (entry.renewing) return entry.renewing;
    if (entry.removed || this.#closed) return Promise.resolve();
    const run = (async () => {
      try {
        await this.#doMap(entry, this.#background.signal);
        entry.lost = false;
        this.#logger.debug({ why, mapping: entry.mapping }, 'mapping renewed');
        if (!entry.removed) this.emit('renewed', entry.mapping);
        this.#schedule(entry);
      } catch (err) {
        if (entry.removed || this.#closed) return;
        const remaining = entry.mapping.expiresAt - Date.now();
        this.#logger.debug({ err: (err as Error).message, remaining }, 'renewal failed');
        if (remaining <= 0 && !entry.lost) {
          entry.lost = true;
          this.emit('lost', entry.mapping, err);
        }
        // Retry at half the remaining time, at least every 30 s once lost.
        this.#schedule(entry, remaining > 0 ? remaining / 2 : 30_000);
      } finally {
        entry.renewing = undefined;
      }
    })();
    entry.renewing = run;
    return run;
  }

  /** Renews one mapping now (normally done by the timer). */
  async renew(mapping: PortMapping): Promise<PortMapping> {
    const entry = this.#find(mapping);
    await this.#renew(entry, 'explicit');
    if (entry.lost) throw new NatpunchError('PORTMAP', 'renewal failed and the mapping has expired');
    return entry.mapping;
  }

  #find(mapping: PortMapping): Entry {
    for (const e of this.#entries) if (e.mapping === mapping) return e;
    throw new NatpunchError('BAD_ARGUMENT', 'this mapping does not belong to this PortMapper');
  }

  async #delete(entry: Entry, signal?: AbortSignal): Promise<void> {
    const m = entry.mapping;
    if (m.protocol === 'pcp' && this.#pcp && entry.nonce) {
      const pcp = new PcpClient({
        gateway: this.#pcp.gateway,
        port: this.#pcp.port,
        clientAddress: m.internalAddress,
        retransmit: DELETE_RETRANSMIT,
        logger: this.#logger,
      });
      try {
        await pcp.unmap({ transport: m.transport, internalPort: m.internalPort, nonce: entry.nonce }, signal);
      } finally {
        pcp.close();
      }
    } else if (m.protocol === 'natpmp' && this.#natpmp) {
      const nat = new NatPmpClient({
        gateway: this.#natpmp.gateway,
        port: this.#natpmp.port,
        retransmit: DELETE_RETRANSMIT,
        logger: this.#logger,
      });
      try {
        await nat.unmap({ transport: m.transport, internalPort: m.internalPort }, signal);
      } finally {
        nat.close();
      }
    } else if (m.protocol === 'upnp' && this.#upnp) {
      const upnp = await this.#upnp;
      await upnp.deletePortMapping({ externalPort: m.externalPort, transport: m.transport }, signal);
    }
  }

  /** Deletes one mapping on the gateway and stops renewing it. */
  async unmap(mapping: PortMapping, signal?: AbortSignal): Promise<void> {
    const entry = this.#find(mapping);
    entry.removed = true;
    clearTimeout(entry.timer);
    this.#entries.delete(entry);
    await entry.renewing?.catch(() => {});
    await this.#delete(entry, signal);
  }

  /**
   * Deletes every mapping (bounded by CLOSE_TIMEOUT_MS in all) and releases sockets and timers. Never throws:
   * the result lists what was deleted and what could not be (so a caller can tell the user).
   */
  close(opts: { timeoutMs?: number } = {}): Promise<CloseResult> {
    this.#closing ??= (async () => {
      this.#closed = true;
      const entries = [...this.#entries];
      this.#entries.clear();
      for (const e of entries) {
        e.removed = true;
        clearTimeout(e.timer);
      }
      this.#listener?.close();
      this.#background.abort();
      const t = timeoutSignal(opts.timeoutMs ?? CLOSE_TIMEOUT_MS);
      const result: CloseResult = { deleted: [], failed: [] };
      try {
        await Promise.all(entries.map((e) => e.renewing?.catch(() => {})));
        const results = await Promise.allSettled(entries.map((e) => this.#delete(e, t.signal)));
        results.forEach((r, i) => {
          const mapping = entries[i]!.mapping;
          if (r.status === 'fulfilled') result.deleted.push(mapping);
          else {
            const error = r.reason instanceof Error ? r.reason : new Error(String(r.reason));
            result.failed.push({ mapping, error });
            this.#logger.warn({ err: error.message, mapping }, 'could not delete mapping');
          }
        });
      } finally {
        t.dispose();
        this.#pcp?.close();
        this.#natpmp?.close();
      }
      return result;
    })();
    return this.#closing;
  }
}

export interface CloseResult {
  deleted: PortMapping[];
  failed: Array<{ mapping: PortMapping; error: Error }>;
}

function probeError(err: unknown, protocol: 'pcp' | 'natpmp'): ProtocolProbe {
  const message = (err as Error).message;
  if (isNatpunchError(err, UNSUPPORTED_VERSION_CODE)) return { answered: false, ok: false, error: message };
  // An error result still proves the gateway speaks the protocol (e.g. NETWORK_FAILURE without an external address).
  if (isNatpunchError(err, 'PORTMAP') && err.details?.protocol === protocol)
    return { answered: true, ok: false, error: message };
  return { answered: false, ok: false, error: message };
}

/** Bound on probePortMapping() as a whole, ms (PCP/NAT-PMP need 1.75 s, SSDP 2.5 s plus two HTTP exchanges). */
export const PROBE_TIMEOUT_MS = 4000;

/**
 * Quick presence probe for netcheck: which port-mapping protocols the gateway answers. Opens nothing on the
 * gateway. All three protocols are asked at once; bounded by `timeoutMs` (default PROBE_TIMEOUT_MS) in all.
 */
export async function probePortMapping(
  opts: Pick<
    PortMapperOptions,
    'gateway' | 'protocols' | 'gatewayPort' | 'probeRetransmit' | 'upnp' | 'logger' | 'localAddress'
  > & {
    signal?: AbortSignal;
    timeoutMs?: number;
  } = {},
): Promise<PortMapProbe> {
  const timeoutMs = opts.timeoutMs ?? PROBE_TIMEOUT_MS;
  const t = timeoutSignal(timeoutMs, opts.signal);
  const mapper = new PortMapper({ ...opts, renew: false });
  try {
    const r = await mapper.probe(t.signal);
    if (t.signal.aborted && !opts.signal?.aborted) {
      for (const p of ['pcp', 'natpmp', 'upnp'] as const) {
        if (!r[p].answered && /abort/i.test(r[p].error ?? '')) r[p].error = `no answer within ${timeoutMs} ms`;
      }
    }
    return r;
  } finally {
    t.dispose();
    await mapper.close();
  }
}

/**
 * A mapping as a connectivity candidate of type `mapped` (the gateway forwards its external address:port to us),
 * for connect() / listen() to offer next to host and server-reflexive candidates.
 */
export function toCandidate(m: PortMapping, localPreference?: number): Candidate {
  return {
    type: 'mapped',
    transport: m.transport,
    address: m.externalAddress,
    port: m.externalPort,
    priority: candidatePriority('mapped', localPreference),
  };
}

/**
 * Makes SIGINT / SIGTERM delete the mapper's mappings before the process goes: the first such signal closes the
 * mapper (bounded by CLOSE_TIMEOUT_MS), then re-raises the signal with the default action. Returns a function
 * that removes the handlers. For applications that have no signal handling of their own; the CLI does its own.
 */
export function closeOnSignals(mapper: PortMapper, signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM']): () => void {
  const handler = (sig: NodeJS.Signals) => {
    remove();
    void mapper.close().finally(() => process.kill(process.pid, sig));
  };
  const remove = () => {
    for (const s of signals) process.off(s, handler);
  };
  for (const s of signals) process.once(s, handler);
  return remove;
}

export { SSDP_TIMEOUT_MS };
