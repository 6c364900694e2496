/**
 * A presence probe for the port-mapping protocols a gateway may speak: NAT-PMP (RFC 6886) and PCP (RFC 6887) on UDP
 * 5351 of the default gateway, and UPnP IGD via SSDP (UPnP Device Architecture 1.1 §1.3). It only asks "is anyone
 * there?" — mapping clients live in src/portmap. Written here because netcheck needs it before the port-mapping
 * branch's probePortMapping() is in main; replace with that when it lands.
 */
import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';

export interface PortMappingPresence {
  gateway: string | null;
  natPmp: boolean | null;
  pcp: boolean | null;
  upnp: boolean | null;
}

/** RFC 6886 §3.1 / RFC 6887 §19.1: the server port. */
export const PORTMAP_SERVER_PORT = 5351;
/** UPnP DA 1.1 §1.3.2: the SSDP multicast group. */
export const SSDP_ADDRESS = '239.255.255.250';
export const SSDP_PORT = 1900;
/** RFC 6886 §3.1 retransmits from 250 ms; a presence probe needs only the first few tries. */
export const PORTMAP_PROBE_SENDS_MS = [0, 250, 600];
export const PORTMAP_PROBE_BUDGET_MS = 1000;

/** The IPv4 default gateway from /proc/net/route (Linux); null elsewhere or when there is none. */
export async function defaultGateway(): Promise<string | null> {
  try {
    const text = await readFile('/proc/net/route', 'utf8');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4 || f[1] !== '00000000') continue;
      const flags = parseInt(f[3]!, 16);
      if (!(flags & 0x2)) continue; // RTF_GATEWAY
      const hex = f[2]!;
      // The kernel prints the address in host (little-endian) byte order.
      const bytes = [6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16));
      return bytes.join('.');
    }
  } catch {
    // No procfs: not Linux, or sandboxed.
  }
  return null;
}

/** RFC 6886 §3.2: external address request — version 0, opcode 0. */
function natPmpRequest(): Buffer {
  return Buffer.from([0, 0]);
}

/**
 * RFC 6887 §7.1 + §14.1: an ANNOUNCE request (version 2, opcode 0, lifetime 0). The client address field should be
 * our own; a server that disagrees answers ADDRESS_MISMATCH — still a PCP answer, which is all presence needs.
 */
function pcpAnnounce(clientIp: string): Buffer {
  const b = Buffer.alloc(24);
  b[0] = 2;
  b[1] = 0; // R=0 (request), opcode 0 ANNOUNCE
  b.writeUInt16BE(0xffff, 18 - 8); // IPv4-mapped IPv6 prefix ::ffff:
  const parts = clientIp.split('.').map(Number);
  for (let i = 0; i < 4; i++) b[20 + i] = parts[i] ?? 0;
  return b;
}

async function udpAsk(
  gateway: string,
  port: number,
  packet: Buffer,
  accept: (msg: Buffer) => boolean | undefined,
  signal: AbortSignal | undefined,
  multicast = false,
): Promise<boolean | null> {
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => {});
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, () => resolve());
    });
  } catch {
    socket.close();
    return null;
  }
  return new Promise((resolve) => {
    const timers: NodeJS.Timeout[] = [];
    let done = false;
    const finish = (v: boolean | null) => {
      if (done) return;
      done = true;
      for (const t of timers) clearTimeout(t);
      signal?.removeEventListener('abort', onAbort);
      try {
        socket.close();
      } catch {
        // already closed
      }
      resolve(v);
    };
    const onAbort = () => finish(null);
    if (signal?.aborted) return finish(null);
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('message', (msg, rinfo) => {
      if (!multicast && rinfo.address !== gateway) return;
      const verdict = accept(msg);
      if (verdict !== undefined) finish(verdict);
    });
    const send = () => socket.send(packet, port, gateway, () => {});
    for (const at of PORTMAP_PROBE_SENDS_MS) timers.push(setTimeout(send, at));
    timers.push(setTimeout(() => finish(false), PORTMAP_PROBE_BUDGET_MS));
  });
}

/**
 * Asks the gateway (default: the IPv4 default route's) whether it speaks NAT-PMP, PCP or UPnP IGD. Each answer is
 * true/false, or null when the probe could not run (no gateway, aborted). Bounded by PORTMAP_PROBE_BUDGET_MS.
 */
export async function probePortMappingPresence(
  options: { gateway?: string; signal?: AbortSignal } = {},
): Promise<PortMappingPresence> {
  const gateway = options.gateway ?? (await defaultGateway());
  if (!gateway) return { gateway: null, natPmp: null, pcp: null, upnp: null };
  const [natPmp, pcp, upnp] = await Promise.all([
    // RFC 6886 §3.2: response version 0, opcode 128 (+0). Any result but 1 (Unsupported Version, what a PCP-only
    // server answers, RFC 6887 §9) proves NAT-PMP is spoken — e.g. 3 (Network Failure) without a public address.
    udpAsk(
      gateway,
      PORTMAP_SERVER_PORT,
      natPmpRequest(),
      (m) => (m.length >= 4 && m[0] === 0 && m[1] === 128 ? m.readUInt16BE(2) !== 1 : undefined),
      options.signal,
    ),
    // RFC 6887 §7.2: a PCP response has version 2 and the R bit set; a NAT-PMP-only server answers version 0 (§9).
    udpAsk(
      gateway,
      PORTMAP_SERVER_PORT,
      pcpAnnounce('0.0.0.0'),
      (m) => (m.length >= 4 ? m[0] === 2 && (m[1]! & 0x80) !== 0 : undefined),
      options.signal,
    ),
    udpAsk(
      SSDP_ADDRESS,
      SSDP_PORT,
      Buffer.from(
        'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\n' +
          'ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n',
      ),
      (m) =>
        /^HTTP\/1\.1 200/i.test(m.toString('latin1', 0, 16)) && /InternetGatewayDevice/i.test(m.toString('latin1'))
          ? true
          : undefined,
      options.signal,
      true,
    ),
  ]);
  return { gateway, natPmp, pcp, upnp };
}
