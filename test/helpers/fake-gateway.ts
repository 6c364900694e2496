/**
 * Fake gateways for unit tests, bound to 127.0.0.1 only: a NAT-PMP/PCP UDP responder and a UPnP IGD (SSDP
 * responder + HTTP description/SOAP server). Each has hostile modes. Tests pass their addresses explicitly.
 */
import dgram from 'node:dgram';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeNatPmpRequest, encodeNatPmpResponse } from '../../src/wire/natpmp.js';
import { decodePcpRequest, encodePcpResponse, PcpResult } from '../../src/wire/pcp.js';

export type UdpMode =
  | 'pcp' // speaks PCP and NAT-PMP
  | 'natpmp' // NAT-PMP only: answers PCP with NAT-PMP UNSUPPORTED_VERSION
  | 'silent' // never answers
  | 'wrong-length' // answers with truncated packets
  | 'wrong-nonce' // PCP answers carry another nonce
  | 'error'; // answers with an error result

export interface FakeMapping {
  proto: 'udp' | 'tcp';
  internalPort: number;
  externalPort: number;
  lifetime: number;
  nonce?: string;
}

export class FakeUdpGateway {
  socket!: dgram.Socket;
  mode: UdpMode;
  externalAddress = '198.51.100.77';
  /** Epoch starts at this many seconds; restart() sets it back to 0 (RFC 6887 §8.5 / RFC 6886 §3.6). */
  #epochBase = 1000;
  #startedAt = Date.now();
  mappings = new Map<string, FakeMapping>();
  requests: Array<{ kind: string; lifetime?: number }> = [];
  /** Result code for 'error' mode. */
  errorCode = 0;

  constructor(mode: UdpMode) {
    this.mode = mode;
  }

  static async start(mode: UdpMode, address = '127.0.0.1'): Promise<FakeUdpGateway> {
    const g = new FakeUdpGateway(mode);
    g.socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
    g.socket.on('message', (msg, rinfo) => g.#onMessage(msg, rinfo));
    await new Promise<void>((r) => g.socket.bind(0, address, () => r()));
    return g;
  }

  get port(): number {
    return (this.socket.address() as AddressInfo).port;
  }

  epoch(): number {
    return this.#epochBase + Math.floor((Date.now() - this.#startedAt) / 1000);
  }

  /** Simulates a reboot: state lost, epoch back to 0. */
  restart(): void {
    this.mappings.clear();
    this.#epochBase = 0;
    this.#startedAt = Date.now();
  }

  /** Sends an unsolicited PCP ANNOUNCE (RFC 6887 §14.1.3) to a listener port on loopback. */
  announce(port: number): void {
    const b = encodePcpResponse({
      version: 2,
      opcode: 'announce',
      resultCode: 0,
      lifetime: 0,
      epoch: this.epoch(),
      options: [],
    });
    this.socket.send(b, port, '127.0.0.1');
  }

  /** Sends an unsolicited NAT-PMP external-address announcement (RFC 6886 §3.2.1). */
  announceNatPmp(port: number): void {
    const b = encodeNatPmpResponse({
      op: 'external-address',
      resultCode: 0,
      epoch: this.epoch(),
      externalAddress: this.externalAddress,
    });
    this.socket.send(b, port, '127.0.0.1');
  }

  #send(b: Uint8Array, rinfo: dgram.RemoteInfo): void {
    this.socket.send(b, rinfo.port, rinfo.address);
  }

  #onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.mode === 'silent') return;
    if (this.mode === 'wrong-length') {
      this.#send(Buffer.concat([Buffer.from([msg[0] ?? 0, (msg[1] ?? 0) | 0x80, 0, 0]), Buffer.alloc(3)]), rinfo);
      return;
    }
    if (msg[0] === 0) return this.#natpmp(msg, rinfo);
    if (msg[0] === 2) {
      if (this.mode === 'natpmp') {
        // RFC 6886 §3.5 / RFC 6887 §9: unsupported version, NAT-PMP header only.
        this.#send(
          encodeNatPmpResponse({ op: 'error', requestOpcode: msg[1]! & 0x7f, resultCode: 1, epoch: this.epoch() }),
          rinfo,
        );
        return;
      }
      return this.#pcp(msg, rinfo);
    }
  }

  #natpmp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const req = decodeNatPmpRequest(msg);
    this.requests.push({ kind: `natpmp-${req.op}`, lifetime: req.op === 'map' ? req.lifetime : undefined });
    const resultCode = this.mode === 'error' ? this.errorCode || 3 : 0;
    if (req.op === 'external-address') {
      this.#send(
        encodeNatPmpResponse({
          op: 'external-address',
          resultCode,
          epoch: this.epoch(),
          externalAddress: this.externalAddress,
        }),
        rinfo,
      );
      return;
    }
    const key = `${req.transport}:${req.internalPort}`;
    let externalPort = 0;
    let lifetime = 0;
    if (resultCode === 0) {
      if (req.lifetime === 0) this.mappings.delete(key);
      else {
        const existing = this.mappings.get(key);
        externalPort = existing?.externalPort ?? (req.suggestedExternalPort || 40000 + (req.internalPort % 1000));
        lifetime = Math.min(req.lifetime, 3600);
        this.mappings.set(key, { proto: req.transport, internalPort: req.internalPort, externalPort, lifetime });
      }
    }
    this.#send(
      encodeNatPmpResponse({
        op: 'map',
        transport: req.transport,
        resultCode,
        epoch: this.epoch(),
        internalPort: req.internalPort,
        externalPort,
        lifetime,
      }),
      rinfo,
    );
  }

  #pcp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const req = decodePcpRequest(msg);
    this.requests.push({ kind: `pcp-${req.opcode}`, lifetime: req.lifetime });
    const resultCode = this.mode === 'error' ? this.errorCode || PcpResult.NO_RESOURCES : 0;
    if (req.opcode === 'announce') {
      this.#send(
        encodePcpResponse({
          version: 2,
          opcode: 'announce',
          resultCode,
          lifetime: 0,
          epoch: this.epoch(),
          options: [],
        }),
        rinfo,
      );
      return;
    }
    if (req.opcode === 'peer') {
      // RFC 6887 §12.3: the answer echoes the peer data with the assigned external address and port.
      this.#send(
        encodePcpResponse({
          version: 2,
          opcode: 'peer',
          resultCode,
          lifetime: resultCode === 0 ? Math.min(req.lifetime, 3600) : 30,
          epoch: this.epoch(),
          options: [],
          peer: {
            ...req.peer,
            externalPort: 42000 + (req.peer.internalPort % 1000),
            externalAddress: this.externalAddress,
          },
        }),
        rinfo,
      );
      return;
    }
    if (req.opcode !== 'map') return;
    const transport = req.map.protocol === 17 ? 'udp' : 'tcp';
    const key = `${transport}:${req.map.internalPort}`;
    let externalPort = req.map.externalPort;
    let lifetime = 0;
    if (resultCode === 0) {
      if (req.lifetime === 0) this.mappings.delete(key);
      else {
        const existing = this.mappings.get(key);
        externalPort = existing?.externalPort ?? (req.map.externalPort || 41000);
        lifetime = Math.min(req.lifetime, 3600);
        this.mappings.set(key, {
          proto: transport,
          internalPort: req.map.internalPort,
          externalPort,
          lifetime,
          nonce: Buffer.from(req.map.nonce).toString('hex'),
        });
      }
    } else lifetime = 30;
    const nonce = this.mode === 'wrong-nonce' ? new Uint8Array(12).fill(9) : req.map.nonce;
    this.#send(
      encodePcpResponse({
        version: 2,
        opcode: 'map',
        resultCode,
        lifetime,
        epoch: this.epoch(),
        options: [],
        map: {
          nonce,
          protocol: req.map.protocol,
          internalPort: req.map.internalPort,
          externalPort,
          externalAddress: resultCode === 0 ? this.externalAddress : '0.0.0.0',
        },
      }),
      rinfo,
    );
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      /* closed */
    }
  }
}

export type UpnpMode =
  | 'v1'
  | 'v2'
  | 'v1-permanent-only' // answers 725 OnlyPermanentLeasesSupported to any lease > 0
  | 'bad-xml'
  | 'huge'
  | 'redirect'
  | 'hang' // accepts the connection and never answers
  | 'dtd'
  | 'foreign-control-url'
  | 'conflict' // 718 for every AddPortMapping
  | 'trickle' // answers the description one byte every 50 ms, forever
  | 'bad-soap'; // control URL answers 200 with garbage

export class FakeUpnpGateway {
  http!: http.Server;
  ssdp!: dgram.Socket;
  mode: UpnpMode;
  mappings = new Map<string, { internalClient: string; internalPort: number; lease: number; description: string }>();
  actions: string[] = [];
  searches = 0;
  /** SSDP answers LOCATION on this host (default: 127.0.0.1, the host that answers). */
  locationHost = '127.0.0.1';
  #sockets = new Set<import('node:net').Socket>();

  constructor(mode: UpnpMode) {
    this.mode = mode;
  }

  static async start(mode: UpnpMode): Promise<FakeUpnpGateway> {
    const g = new FakeUpnpGateway(mode);
    g.http = http.createServer((req, res) => g.#onHttp(req, res));
    g.http.on('connection', (s) => {
      g.#sockets.add(s);
      s.on('close', () => g.#sockets.delete(s));
    });
    await new Promise<void>((r) => g.http.listen(0, '127.0.0.1', () => r()));
    g.ssdp = dgram.createSocket('udp4');
    g.ssdp.on('message', (msg, rinfo) => {
      const text = msg.toString();
      if (!text.startsWith('M-SEARCH')) return;
      g.searches++;
      const st = /ST: (.*)\r\n/.exec(text)?.[1] ?? '';
      const answer =
        `HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: ${st}\r\nUSN: uuid:fake::${st}\r\nEXT:\r\n` +
        `SERVER: fake/1.0 UPnP/1.1 fake/1.0\r\nLOCATION: http://${g.locationHost}:${g.httpPort}/rootDesc.xml\r\n\r\n`;
      g.ssdp.send(answer, rinfo.port, rinfo.address);
    });
    await new Promise<void>((r) => g.ssdp.bind(0, '127.0.0.1', () => r()));
    return g;
  }

  get httpPort(): number {
    return (this.http.address() as AddressInfo).port;
  }
  get ssdpPort(): number {
    return (this.ssdp.address() as AddressInfo).port;
  }

  #serviceType(): string {
    return `urn:schemas-upnp-org:service:WANIPConnection:${this.mode === 'v2' ? 2 : 1}`;
  }

  #description(): string {
    const control = this.mode === 'foreign-control-url' ? 'http://192.0.2.1/ctl' : '/ctl/IPConn';
    return `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><friendlyName>fake</friendlyName>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><controlURL>/ctl/L3F</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType><controlURL>/ctl/CmnIfCfg</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>${this.#serviceType()}</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>${control}</controlURL><eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>`;
  }

  #onHttp(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.mode === 'hang') return; // never answers
    if (req.method === 'GET' && req.url === '/rootDesc.xml') {
      if (this.mode === 'trickle') {
        res.writeHead(200, { 'Content-Type': 'text/xml' });
        const t = setInterval(() => res.write(' '), 50);
        res.on('close', () => clearInterval(t));
        return;
      }
      if (this.mode === 'redirect') {
        res.writeHead(302, { Location: 'http://192.0.2.1/evil.xml' }).end();
        return;
      }
      if (this.mode === 'bad-xml') {
        res.writeHead(200, { 'Content-Type': 'text/xml' }).end('<root><device><serviceList></device></root>');
        return;
      }
      if (this.mode === 'dtd') {
        res
          .writeHead(200, { 'Content-Type': 'text/xml' })
          .end('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><root>&a;</root>');
        return;
      }
      if (this.mode === 'huge') {
        // Streams 8 MiB without a Content-Length: the client must stop reading at its cap.
        res.writeHead(200, { 'Content-Type': 'text/xml' });
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        let sent = 0;
        const pump = () => {
          while (sent < 128) {
            sent++;
            if (!res.write(chunk)) return void res.once('drain', pump);
          }
          res.end();
        };
        res.on('error', () => {});
        pump();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/xml; charset="utf-8"' }).end(this.#description());
      return;
    }
    if (req.method === 'POST' && req.url === '/ctl/IPConn') {
      if (this.mode === 'bad-soap') {
        res.writeHead(200, { 'Content-Type': 'text/xml' }).end('<s:Envelope><s:Body><u:Oops>');
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => this.#soap(req, Buffer.concat(chunks).toString(), res));
      return;
    }
    res.writeHead(404).end();
  }

  #soap(req: http.IncomingMessage, body: string, res: http.ServerResponse): unknown {
    const action = /#(\w+)"?$/.exec(String(req.headers.soapaction ?? ''))?.[1] ?? '';
    this.actions.push(action);
    const arg = (n: string) => new RegExp(`<${n}>([^<]*)</${n}>`).exec(body)?.[1] ?? '';
    const st = this.#serviceType();
    const ok = (inner: string) =>
      res
        .writeHead(200, { 'Content-Type': 'text/xml; charset="utf-8"' })
        .end(
          `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:${action}Response xmlns:u="${st}">${inner}</u:${action}Response></s:Body></s:Envelope>`,
        );
    const fault = (code: number, desc: string) =>
      res
        .writeHead(500, { 'Content-Type': 'text/xml; charset="utf-8"' })
        .end(
          `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>${code}</errorCode><errorDescription>${desc}</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`,
        );
    const key = `${arg('NewProtocol')}:${arg('NewExternalPort')}`;
    switch (action) {
      case 'GetExternalIPAddress':
        return ok('<NewExternalIPAddress>198.51.100.88</NewExternalIPAddress>');
      case 'AddPortMapping':
      case 'AddAnyPortMapping': {
        if (action === 'AddAnyPortMapping' && this.mode !== 'v2') return fault(401, 'Invalid Action');
        if (this.mode === 'conflict') return fault(718, 'ConflictInMappingEntry');
        const lease = Number(arg('NewLeaseDuration'));
        if (this.mode === 'v1-permanent-only' && lease !== 0) return fault(725, 'OnlyPermanentLeasesSupported');
        this.mappings.set(key, {
          internalClient: arg('NewInternalClient'),
          internalPort: Number(arg('NewInternalPort')),
          lease,
          description: arg('NewPortMappingDescription'),
        });
        return action === 'AddAnyPortMapping'
          ? ok(`<NewReservedPort>${arg('NewExternalPort')}</NewReservedPort>`)
          : ok('');
      }
      case 'DeletePortMapping':
        if (!this.mappings.delete(key)) return fault(714, 'NoSuchEntryInArray');
        return ok('');
      case 'GetSpecificPortMappingEntry': {
        const m = this.mappings.get(key);
        if (!m) return fault(714, 'NoSuchEntryInArray');
        return ok(
          `<NewInternalPort>${m.internalPort}</NewInternalPort><NewInternalClient>${m.internalClient}</NewInternalClient><NewEnabled>1</NewEnabled><NewPortMappingDescription>${m.description}</NewPortMappingDescription><NewLeaseDuration>${m.lease}</NewLeaseDuration>`,
        );
      }
      default:
        return fault(401, 'Invalid Action');
    }
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((r) => this.http.close(() => r()));
    try {
      this.ssdp.close();
    } catch {
      /* closed */
    }
  }
}
