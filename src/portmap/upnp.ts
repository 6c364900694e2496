/**
 * UPnP IGD client (UPnP Device Architecture 1.1, IGD v1 and v2): SSDP discovery, device description, and the
 * WANIPConnection / WANPPPConnection SOAP actions natpunch needs. Every HTTP request has a timeout and a size cap,
 * redirects are refused, and URLs must stay on the gateway that answered SSDP (no request goes anywhere else).
 */
import dgram from 'node:dgram';
import http from 'node:http';
import { isIP } from 'node:net';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { NatpunchError, isNatpunchError } from '../util/errors.js';
import { throwIfAborted, timeoutSignal } from '../util/abort.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { MapTransport } from './common.js';

/** UDA 1.1 §1.3.2: the SSDP multicast group and port. Only ever used on the LAN. */
export const SSDP_MULTICAST_ADDRESS = '239.255.255.250';
export const SSDP_PORT = 1900;
/** UDA 1.1 §1.3.2: MX, the seconds a device may wait before answering (1..5). */
export const SSDP_MX = 1;
/** How long discovery listens for answers, ms (MX + 1 s for the network). */
export const SSDP_TIMEOUT_MS = 2500;
/** Discovery sends each search at most twice (UDA 1.1 §1.3.2 suggests repeating, as UDP is unreliable). */
export const SSDP_REPEATS = 2;
/** Device descriptions of real gateways are a few KiB; cap at 256 KiB. */
export const DESCRIPTION_MAX_BYTES = 256 * 1024;
/** SOAP answers are tiny; cap at 64 KiB. */
export const SOAP_MAX_BYTES = 64 * 1024;
/** Per HTTP request (connect + answer), ms. */
export const HTTP_TIMEOUT_MS = 5000;
/** An SSDP answer is one datagram of headers; anything larger is not one. */
const SSDP_MAX_ANSWER = 4096;
/** A LAN has a handful of gateways; more distinct answers than this are ignored (memory bound under a flood). */
const SSDP_MAX_ANSWERS = 16;

const SEARCH_TARGETS = [
  'urn:schemas-upnp-org:device:InternetGatewayDevice:2',
  'urn:schemas-upnp-org:device:InternetGatewayDevice:1',
];

/** Preference among connection services: IGDv2 WANIPConnection:2, then v1 IP, then PPP. */
const SERVICE_RANK = [
  'urn:schemas-upnp-org:service:WANIPConnection:2',
  'urn:schemas-upnp-org:service:WANIPConnection:1',
  'urn:schemas-upnp-org:service:WANPPPConnection:1',
];

/** UPnP IGD error codes (WANIPConnection:2 §2.4, UDA 1.1 §3.2.2) as sentences a person can act on. */
const UPNP_ERRORS: Record<number, string> = {
  401: 'the gateway does not know this action (Invalid Action)',
  402: 'the gateway rejected the arguments (Invalid Args)',
  501: 'the gateway failed to do it (Action Failed; often: no usable external address)',
  606: 'the gateway does not allow this host to change port mappings (Action not authorized)',
  713: 'the index is out of range (SpecifiedArrayIndexInvalid)',
  714: 'no such mapping on the gateway (NoSuchEntryInArray)',
  715: 'the gateway does not accept a wildcard source address (WildCardNotPermittedInSrcIP)',
  716: 'the gateway does not accept a wildcard external port (WildCardNotPermittedInExtPort)',
  718: 'the external port is already mapped to another host (ConflictInMappingEntry)',
  724: 'the gateway requires the same internal and external port (SamePortValuesRequired)',
  725: 'the gateway supports only permanent leases (OnlyPermanentLeasesSupported)',
  726: 'the gateway requires a wildcard remote host (RemoteHostOnlySupportsWildcard)',
  727: 'the gateway requires a wildcard external port (ExternalPortOnlySupportsWildcard)',
  728: 'the gateway has no free ports left (NoPortMapsAvailable)',
  729: 'the mapping conflicts with another mechanism on the gateway (ConflictWithOtherMechanisms)',
  732: 'the gateway does not accept a wildcard internal port (WildCardNotPermittedInIntPort)',
};

export function upnpErrorMessage(code: number, description?: string): string {
  const text = UPNP_ERRORS[code] ?? `the gateway answered UPnP error ${code}`;
  return `${text} (UPnP error ${code}${description ? ` "${description.slice(0, 100)}"` : ''})`;
}

export interface IgdService {
  serviceType: string;
  /** Absolute control URL on the gateway. */
  controlUrl: string;
}

export interface IgdDevice {
  location: string;
  /** The address that answered SSDP (or the explicit gateway). */
  gateway: string;
  services: IgdService[];
  /** The best service (first by preference). */
  service: IgdService;
}

export interface HttpCaps {
  timeoutMs?: number;
  maxBytes?: number;
  signal?: AbortSignal;
}

/**
 * One HTTP/1.1 exchange with a size cap, timeout and no redirects. Only plain http URLs (UPnP control is
 * unencrypted by design, LAN only).
 */
export async function httpExchange(
  url: URL,
  req: { method: 'GET' | 'POST'; headers?: Record<string, string>; body?: string } & HttpCaps,
): Promise<{ status: number; body: string; contentType: string }> {
  if (url.protocol !== 'http:') throw new NatpunchError('PORTMAP', `UPnP: refusing non-http URL ${url.href}`);
  const maxBytes = req.maxBytes ?? SOAP_MAX_BYTES;
  const limit = req.timeoutMs ?? HTTP_TIMEOUT_MS;
  const t = timeoutSignal(limit, req.signal);
  try {
    return await new Promise((resolve, reject) => {
      const body = req.body === undefined ? undefined : Buffer.from(req.body, 'utf8');
      const r = http.request(
        {
          host: url.hostname.replace(/^\[|\]$/g, ''),
          port: url.port || 80,
          path: `${url.pathname}${url.search}`,
          method: req.method,
          agent: false,
          signal: t.signal,
          headers: {
            ...req.headers,
            Connection: 'close',
            ...(body ? { 'Content-Length': String(body.length) } : {}),
          },
          maxHeaderSize: 16 * 1024,
        },
        (res) => {
          const status = res.statusCode ?? 0;
          if (status >= 300 && status < 400) {
            res.destroy();
            return reject(
              new NatpunchError(
                'PORTMAP',
                `UPnP: ${url.href} redirected (${status}) to ${res.headers.location ?? '?'}; redirects are refused`,
              ),
            );
          }
          const declared = Number(res.headers['content-length']);
          if (Number.isFinite(declared) && declared > maxBytes) {
            res.destroy();
            return reject(
              new NatpunchError(
                'PORTMAP',
                `UPnP: answer from ${url.href} is ${declared} bytes, over the ${maxBytes}-byte cap`,
              ),
            );
          }
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > maxBytes) {
              reject(new NatpunchError('PORTMAP', `UPnP: answer from ${url.href} exceeds the ${maxBytes}-byte cap`));
              res.destroy();
              return;
            }
            chunks.push(c);
          });
          res.on('end', () =>
            resolve({
              status,
              body: Buffer.concat(chunks).toString('utf8'),
              contentType: String(res.headers['content-type'] ?? ''),
            }),
          );
          res.on('error', (err) => reject(wrapHttpError(err, url, t.signal, limit, req.signal)));
          res.on('aborted', () =>
            reject(new NatpunchError('PORTMAP', `UPnP: ${url.href} closed the connection mid-answer`)),
          );
        },
      );
      r.on('error', (err) => reject(wrapHttpError(err, url, t.signal, limit, req.signal)));
      r.end(body);
    });
  } finally {
    t.dispose();
  }
}

function wrapHttpError(
  err: unknown,
  url: URL,
  signal: AbortSignal,
  limit: number,
  parent?: AbortSignal,
): NatpunchError {
  if (isNatpunchError(err)) return err;
  if (parent?.aborted)
    return new NatpunchError('ABORTED', `UPnP: request to ${url.href} aborted`, { cause: parent.reason });
  if (signal.aborted) {
    return new NatpunchError('TIMEOUT', `UPnP: ${url.href} did not answer within ${limit} ms`, { cause: err });
  }
  return new NatpunchError('PORTMAP', `UPnP: request to ${url.href} failed: ${(err as Error).message}`, { cause: err });
}

// ------------------------------------------------------------------------------------------------------ XML

function parseXml(xml: string, what: string): Record<string, unknown> {
  // No DTDs: a gateway has no business declaring entities (entity expansion attacks).
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw new NatpunchError('PORTMAP', `UPnP: ${what} contains a DTD; refused`);
  const valid = XMLValidator.validate(xml);
  if (valid !== true) {
    throw new NatpunchError('PORTMAP', `UPnP: ${what} is not valid XML (${valid.err.msg} at line ${valid.err.line})`);
  }
  const parser = new XMLParser({
    ignoreAttributes: true,
    removeNSPrefix: true,
    parseTagValue: false,
    trimValues: true,
    processEntities: true,
    isArray: (name) => name === 'device' || name === 'service',
  });
  const doc = parser.parse(xml) as unknown;
  if (!doc || typeof doc !== 'object') throw new NatpunchError('PORTMAP', `UPnP: ${what} is empty`);
  return doc as Record<string, unknown>;
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : v === undefined ? [] : [v];
}
function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined;
}

/**
 * UDA 1.1 §2.3: the root device's embedded devices (WANDevice → WANConnectionDevice) list services with
 * serviceType and controlURL (relative to URLBase, or to the description's own URL).
 */
export function parseDeviceDescription(xml: string, location: string): IgdService[] {
  const doc = parseXml(xml, 'device description');
  const root = obj(doc.root);
  if (!root) throw new NatpunchError('PORTMAP', 'UPnP: device description has no <root> element');
  const base = str(root.URLBase) || location;
  const baseUrl = safeUrl(base, location);
  const found: IgdService[] = [];
  const walk = (devices: unknown[], depth: number) => {
    if (depth > 8) return; // a real IGD nests three levels
    for (const d of devices) {
      const dev = obj(d);
      if (!dev) continue;
      for (const s of arr(obj(dev.serviceList)?.service)) {
        const svc = obj(s);
        const type = str(svc?.serviceType)?.trim();
        const control = str(svc?.controlURL)?.trim();
        if (!type || !control || !SERVICE_RANK.includes(type)) continue;
        const url = safeUrl(control, baseUrl.href);
        if (url.hostname !== new URL(location).hostname) {
          throw new NatpunchError('PORTMAP', `UPnP: control URL ${url.href} points away from the gateway; refused`);
        }
        found.push({ serviceType: type, controlUrl: url.href });
      }
      walk(arr(obj(dev.deviceList)?.device), depth + 1);
    }
  };
  walk(arr(root.device), 0);
  if (found.length === 0) {
    throw new NatpunchError('PORTMAP', 'UPnP: the gateway offers no WANIPConnection/WANPPPConnection service');
  }
  return found.sort((a, b) => SERVICE_RANK.indexOf(a.serviceType) - SERVICE_RANK.indexOf(b.serviceType));
}

function safeUrl(u: string, base: string): URL {
  let url: URL;
  try {
    url = new URL(u, base);
  } catch {
    throw new NatpunchError('PORTMAP', `UPnP: bad URL "${u.slice(0, 200)}" in device description`);
  }
  if (url.protocol !== 'http:') throw new NatpunchError('PORTMAP', `UPnP: refusing non-http URL ${url.href}`);
  return url;
}

// ------------------------------------------------------------------------------------------------------ SSDP

export interface SsdpOptions {
  /** Where to send M-SEARCH. Default: the LAN multicast group; a loopback fake in tests. */
  address?: string;
  port?: number;
  /** Also ask this host directly (unicast M-SEARCH, UDA 1.1 §1.3.3). */
  gateway?: string;
  /** Local address to send from (selects the interface). */
  localAddress?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
  logger?: Logger;
}

export interface SsdpAnswer {
  location: string;
  from: string;
  st: string;
}

/**
 * Sends a bounded M-SEARCH (2 search targets × SSDP_REPEATS datagrams) and collects answers whose LOCATION is on
 * the host that answered. Resolves with the answers seen within `timeoutMs` (possibly none).
 */
export async function ssdpSearch(o: SsdpOptions = {}): Promise<SsdpAnswer[]> {
  throwIfAborted(o.signal);
  const target = o.address ?? SSDP_MULTICAST_ADDRESS;
  const port = o.port ?? SSDP_PORT;
  const timeoutMs = o.timeoutMs ?? SSDP_TIMEOUT_MS;
  const socket = dgram.createSocket({ type: 'udp4' });
  socket.on('error', () => {});
  const answers: SsdpAnswer[] = [];
  const seen = new Set<string>();
  const timers: NodeJS.Timeout[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, o.localAddress, () => resolve());
    });
    // UDA 1.1 §1.3.2: TTL should default to 2 so the search stays near the LAN.
    try {
      socket.setMulticastTTL(2);
      if (o.localAddress) socket.setMulticastInterface(o.localAddress);
    } catch {
      /* not fatal */
    }
    socket.on('message', (msg, rinfo) => {
      if (msg.length > SSDP_MAX_ANSWER) return;
      const a = parseSsdpAnswer(msg.toString('latin1'), rinfo.address);
      if (!a || seen.has(a.location) || answers.length >= SSDP_MAX_ANSWERS) return;
      seen.add(a.location);
      answers.push(a);
    });
    const destinations = [target, ...(o.gateway && o.gateway !== target ? [o.gateway] : [])];
    for (let r = 0; r < SSDP_REPEATS; r++) {
      timers.push(
        setTimeout(() => {
          for (const st of SEARCH_TARGETS) {
            // UDA 1.1 §1.3.2 M-SEARCH request.
            const text =
              `M-SEARCH * HTTP/1.1\r\nHOST: ${SSDP_MULTICAST_ADDRESS}:${SSDP_PORT}\r\nMAN: "ssdp:discover"\r\n` +
              `MX: ${SSDP_MX}\r\nST: ${st}\r\n\r\n`;
            for (const d of destinations) socket.send(text, d === target ? port : SSDP_PORT, d, () => {});
          }
        }, r * 300),
      );
    }
    // Wait for the deadline, or finish 200 ms after the first answer (others on the LAN get a short grace).
    await new Promise<void>((resolve, reject) => {
      const finish = () => {
        clearTimeout(deadline);
        clearTimeout(grace);
        o.signal?.removeEventListener('abort', onAbort);
        socket.off('message', onFirst);
      };
      const onAbort = () => {
        finish();
        reject(new NatpunchError('ABORTED', 'SSDP search aborted'));
      };
      let grace: NodeJS.Timeout | undefined;
      const deadline = setTimeout(() => {
        finish();
        resolve();
      }, timeoutMs);
      const onFirst = () => {
        if (answers.length === 0 || grace) return;
        grace = setTimeout(() => {
          finish();
          resolve();
        }, 200);
      };
      socket.on('message', onFirst);
      o.signal?.addEventListener('abort', onAbort, { once: true });
    });
    return answers;
  } finally {
    for (const t of timers) clearTimeout(t);
    socket.close();
  }
}

export function parseSsdpAnswer(text: string, from: string): SsdpAnswer | undefined {
  const lines = text.split('\r\n');
  if (!/^HTTP\/1\.[01] 200\b/.test(lines[0] ?? '')) return undefined;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  const location = headers.get('location');
  const st = headers.get('st') ?? '';
  if (!location) return undefined;
  let url: URL;
  try {
    url = new URL(location);
  } catch {
    return undefined;
  }
  // The description must live on the host that answered: never let an SSDP answer send us elsewhere.
  if (url.protocol !== 'http:' || url.hostname !== from) return undefined;
  return { location: url.href, from, st };
}

// ------------------------------------------------------------------------------------------------------ client

export interface UpnpClientOptions {
  /** Where discovery looks, and the one host it trusts when given. */
  gateway?: string;
  /** Skip SSDP: fetch this description URL. */
  location?: string;
  ssdp?: Omit<SsdpOptions, 'signal' | 'logger' | 'gateway'>;
  httpTimeoutMs?: number;
  maxDescriptionBytes?: number;
  logger?: Logger;
}

export interface UpnpMappingEntry {
  internalClient: string;
  internalPort: number;
  enabled: boolean;
  description: string;
  leaseDuration: number;
}

export class UpnpIgdClient {
  readonly device: IgdDevice;
  #opts: UpnpClientOptions;
  #logger: Logger;

  constructor(device: IgdDevice, opts: UpnpClientOptions = {}) {
    this.device = device;
    this.#opts = opts;
    this.#logger = opts.logger ?? silentLogger;
  }

  get serviceType(): string {
    return this.device.service.serviceType;
  }

  /** IGDv2 (WANIPConnection:2) has AddAnyPortMapping and refuses lease 0. */
  get isV2(): boolean {
    return this.serviceType.endsWith(':2');
  }

  /**
   * Finds the gateway: SSDP (unless `location` is given), then the device description. Bounded: SSDP
   * `timeoutMs` plus one HTTP request per candidate location (at most 4 tried).
   */
  static async discover(opts: UpnpClientOptions & { signal?: AbortSignal } = {}): Promise<UpnpIgdClient> {
    const logger = opts.logger ?? silentLogger;
    let candidates: Array<{ location: string; from: string }>;
    if (opts.location) {
      const u = safeUrl(opts.location, opts.location);
      candidates = [{ location: u.href, from: u.hostname }];
    } else {
      const ssdp = { ...opts.ssdp };
      if (opts.gateway && isLoopback(opts.gateway) && !ssdp.address) {
        // A loopback "gateway" is a test fake: never multicast onto the machine's LAN for it.
        ssdp.address = opts.gateway;
      }
      const answers = await ssdpSearch({ ...ssdp, gateway: opts.gateway, signal: opts.signal, logger });
      candidates = answers.filter((a) => !opts.gateway || a.from === opts.gateway);
      if (candidates.length === 0) {
        throw new NatpunchError(
          'TIMEOUT',
          `UPnP: no Internet Gateway Device answered SSDP${opts.gateway ? ` from ${opts.gateway}` : ''} within ${ssdp.timeoutMs ?? SSDP_TIMEOUT_MS} ms`,
        );
      }
    }
    let lastErr: unknown;
    for (const c of candidates.slice(0, 4)) {
      try {
        const res = await httpExchange(new URL(c.location), {
          method: 'GET',
          maxBytes: opts.maxDescriptionBytes ?? DESCRIPTION_MAX_BYTES,
          timeoutMs: opts.httpTimeoutMs,
          signal: opts.signal,
        });
        if (res.status !== 200) throw new NatpunchError('PORTMAP', `UPnP: ${c.location} answered HTTP ${res.status}`);
        const services = parseDeviceDescription(res.body, c.location);
        return new UpnpIgdClient({ location: c.location, gateway: c.from, services, service: services[0]! }, opts);
      } catch (err) {
        if (isNatpunchError(err, 'ABORTED')) throw err;
        logger.debug({ err: (err as Error).message, location: c.location }, 'UPnP candidate failed');
        lastErr = err;
      }
    }
    throw lastErr;
  }

  /** One SOAP action (UDA 1.1 §3.2): returns the response's arguments, or throws with the UPnP error explained. */
  async soap(
    action: string,
    args: Array<[string, string | number]>,
    signal?: AbortSignal,
  ): Promise<Record<string, string>> {
    const { serviceType, controlUrl } = this.device.service;
    const body =
      '<?xml version="1.0"?>\r\n' +
      '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">' +
      `<s:Body><u:${action} xmlns:u="${xmlEscape(serviceType)}">` +
      args.map(([k, v]) => `<${k}>${xmlEscape(String(v))}</${k}>`).join('') +
      `</u:${action}></s:Body></s:Envelope>\r\n`;
    const res = await httpExchange(new URL(controlUrl), {
      method: 'POST',
      headers: { 'Content-Type': 'text/xml; charset="utf-8"', SOAPAction: `"${serviceType}#${action}"` },
      body,
      maxBytes: SOAP_MAX_BYTES,
      timeoutMs: this.#opts.httpTimeoutMs,
      signal,
    });
    const doc = parseXml(res.body || '<empty/>', `${action} answer`);
    const soapBody = obj(obj(doc.Envelope)?.Body);
    const fault = obj(soapBody?.Fault);
    if (fault) {
      const err = obj(obj(fault.detail)?.UPnPError);
      const code = Number(str(err?.errorCode));
      const description = str(err?.errorDescription);
      throw new NatpunchError(
        'PORTMAP',
        `UPnP ${action}: ${Number.isInteger(code) ? upnpErrorMessage(code, description) : `SOAP fault ${str(fault.faultstring) ?? ''}`}`,
        {
          details: { protocol: 'upnp', upnpErrorCode: Number.isInteger(code) ? code : undefined, action },
        },
      );
    }
    if (res.status !== 200) throw new NatpunchError('PORTMAP', `UPnP ${action}: gateway answered HTTP ${res.status}`);
    const raw = soapBody?.[`${action}Response`];
    // An action without out-arguments answers an empty element.
    const out = raw === '' ? {} : obj(raw);
    if (!out) throw new NatpunchError('PORTMAP', `UPnP ${action}: answer has no ${action}Response element`);
    const result: Record<string, string> = {};
    for (const [k, v] of Object.entries(out)) result[k] = str(v) ?? '';
    this.#logger.debug({ action, result }, 'UPnP action');
    return result;
  }

  /** WANIPConnection §2.5.18 GetExternalIPAddress. */
  async getExternalIPAddress(signal?: AbortSignal): Promise<string> {
    const r = await this.soap('GetExternalIPAddress', [], signal);
    const ip = r.NewExternalIPAddress?.trim() ?? '';
    // Gateways without a WAN connection answer "" or 0.0.0.0.
    if (!isIP(ip) || ip === '0.0.0.0' || ip === '::')
      throw new NatpunchError('PORTMAP', `UPnP: gateway has no usable external address ("${ip.slice(0, 60)}")`);
    return ip;
  }

  /** WANIPConnection §2.5.16 AddPortMapping. leaseDuration 0 = permanent (IGDv1 only). */
  async addPortMapping(m: UpnpMappingRequest, signal?: AbortSignal): Promise<void> {
    await this.soap('AddPortMapping', mappingArgs(m), signal);
  }

  /** WANIPConnection:2 §2.5.20 AddAnyPortMapping: the gateway picks a free port near the one asked for. */
  async addAnyPortMapping(m: UpnpMappingRequest, signal?: AbortSignal): Promise<number> {
    const r = await this.soap('AddAnyPortMapping', mappingArgs(m), signal);
    const port = Number(r.NewReservedPort);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new NatpunchError(
        'PORTMAP',
        `UPnP AddAnyPortMapping: gateway reserved no valid port ("${String(r.NewReservedPort).slice(0, 20)}")`,
      );
    }
    return port;
  }

  /** WANIPConnection §2.5.17 DeletePortMapping. */
  async deletePortMapping(m: { externalPort: number; transport: MapTransport }, signal?: AbortSignal): Promise<void> {
    await this.soap(
      'DeletePortMapping',
      [
        ['NewRemoteHost', ''],
        ['NewExternalPort', m.externalPort],
        ['NewProtocol', m.transport.toUpperCase()],
      ],
      signal,
    );
  }

  /** WANIPConnection §2.5.15 GetSpecificPortMappingEntry; undefined when there is none (714). */
  async getSpecificPortMappingEntry(
    m: { externalPort: number; transport: MapTransport },
    signal?: AbortSignal,
  ): Promise<UpnpMappingEntry | undefined> {
    try {
      const r = await this.soap(
        'GetSpecificPortMappingEntry',
        [
          ['NewRemoteHost', ''],
          ['NewExternalPort', m.externalPort],
          ['NewProtocol', m.transport.toUpperCase()],
        ],
        signal,
      );
      return {
        internalClient: r.NewInternalClient ?? '',
        internalPort: Number(r.NewInternalPort),
        enabled: r.NewEnabled === '1' || r.NewEnabled === 'true',
        description: r.NewPortMappingDescription ?? '',
        leaseDuration: Number(r.NewLeaseDuration),
      };
    } catch (err) {
      if (isNatpunchError(err) && err.details?.upnpErrorCode === 714) return undefined;
      throw err;
    }
  }
}

/** The arguments of AddPortMapping and AddAnyPortMapping (WANIPConnection §2.5.16, §2.5.20). */
export interface UpnpMappingRequest {
  externalPort: number;
  transport: MapTransport;
  internalPort: number;
  internalClient: string;
  description: string;
  /** Seconds; 0 = permanent (IGDv1 only). */
  leaseDuration: number;
}

function mappingArgs(m: UpnpMappingRequest): Array<[string, string | number]> {
  return [
    ['NewRemoteHost', ''],
    ['NewExternalPort', m.externalPort],
    ['NewProtocol', m.transport.toUpperCase()],
    ['NewInternalPort', m.internalPort],
    ['NewInternalClient', m.internalClient],
    ['NewEnabled', 1],
    ['NewPortMappingDescription', m.description],
    ['NewLeaseDuration', m.leaseDuration],
  ];
}

function xmlEscape(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

export function isLoopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}
