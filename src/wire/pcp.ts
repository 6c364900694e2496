/**
 * PCP (Port Control Protocol, RFC 6887) packet codec. Pure: no I/O. All fields network byte order.
 *
 * Addresses are always 128-bit fields; IPv4 addresses travel IPv4-mapped (::ffff:a.b.c.d, RFC 6887 §5).
 * This codec returns IPv4-mapped addresses as dotted IPv4 text and accepts either form when encoding.
 */
import { NatpunchError } from '../util/errors.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from './ip.js';

/** RFC 6887 §7: this document defines version 2 (NAT-PMP was version 0). */
export const PCP_VERSION = 2;
/** RFC 6887 §19.1: server port 5351, client (ANNOUNCE listening) port 5350. */
export const PCP_SERVER_PORT = 5351;
export const PCP_CLIENT_PORT = 5350;
/** RFC 6887 §7: a PCP message is at most 1100 octets. */
export const PCP_MAX_MESSAGE = 1100;
/** RFC 6887 §7.1 / §7.2: common header size. */
export const PCP_HEADER_SIZE = 24;
/** RFC 6887 §11.1 / §12.1 / §14.1 opcode-specific data sizes. */
const MAP_DATA_SIZE = 36;
const PEER_DATA_SIZE = 56;

/** RFC 6887 §19.2 opcodes. */
export const PcpOpcode = { ANNOUNCE: 0, MAP: 1, PEER: 2 } as const;
export type PcpOpcodeName = 'announce' | 'map' | 'peer';

/** RFC 6887 §19.4 option codes. */
export const PcpOptionCode = { THIRD_PARTY: 1, PREFER_FAILURE: 2, FILTER: 3 } as const;

/** RFC 6887 §7.4 result codes. */
export const PcpResult = {
  SUCCESS: 0,
  UNSUPP_VERSION: 1,
  NOT_AUTHORIZED: 2,
  MALFORMED_REQUEST: 3,
  UNSUPP_OPCODE: 4,
  UNSUPP_OPTION: 5,
  MALFORMED_OPTION: 6,
  NETWORK_FAILURE: 7,
  NO_RESOURCES: 8,
  UNSUPP_PROTOCOL: 9,
  USER_EX_QUOTA: 10,
  CANNOT_PROVIDE_EXTERNAL: 11,
  ADDRESS_MISMATCH: 12,
  EXCESSIVE_REMOTE_PEERS: 13,
} as const;

const RESULT_NAMES = Object.fromEntries(Object.entries(PcpResult).map(([k, v]) => [v, k])) as Record<number, string>;

const RESULT_TEXT: Record<number, string> = {
  1: 'the gateway does not speak this PCP version',
  2: 'the gateway refused: port mapping is disabled or not allowed for this host',
  3: 'the gateway says the request is malformed',
  4: 'the gateway does not support this PCP opcode',
  5: 'the gateway does not support a mandatory option in the request',
  6: 'the gateway says an option is malformed',
  7: 'the gateway has no working external address (network failure)',
  8: 'the gateway is out of resources (no ports, or its external address cannot be used for mappings)',
  9: 'the gateway does not support this transport protocol',
  10: 'the gateway says this host exceeded its mapping quota',
  11: 'the gateway cannot provide the requested external address/port',
  12: 'the gateway saw a different source address than the one in the request (a NAT between us and it?)',
  13: 'the gateway cannot track that many remote peers',
};

export function pcpResultName(code: number): string {
  return RESULT_NAMES[code] ?? `UNKNOWN_${code}`;
}

export function pcpResultMessage(code: number): string {
  return `${RESULT_TEXT[code] ?? 'the gateway answered with an unknown error'} (PCP result ${code} ${pcpResultName(code)})`;
}

/** IANA protocol numbers used in MAP/PEER (RFC 6887 §11.1; 0 means all protocols). */
export const IPPROTO = { ALL: 0, TCP: 6, UDP: 17 } as const;

export type PcpOption =
  /** §13.1: mapping on behalf of another host. natpunch never sends it but decodes it. */
  | { type: 'third-party'; address: string }
  /** §13.2: fail instead of assigning a different external port. */
  | { type: 'prefer-failure' }
  /** §13.3: only let this remote prefix in. */
  | { type: 'filter'; prefixLength: number; remotePort: number; remoteAddress: string }
  | { type: 'unknown'; code: number; data: Uint8Array };

export interface PcpMapData {
  /** 96-bit mapping nonce (§11.1), 12 bytes. */
  nonce: Uint8Array;
  /** IANA protocol number: 17 UDP, 6 TCP, 0 all. */
  protocol: number;
  internalPort: number;
  /** Suggested (request) or assigned (response) external port and address. */
  externalPort: number;
  externalAddress: string;
}

export interface PcpPeerData extends PcpMapData {
  remotePort: number;
  remoteAddress: string;
}

export type PcpRequest = {
  version?: number;
  lifetime: number;
  /** The client's own source address as the server should see it (§7.1). */
  clientAddress: string;
  options?: PcpOption[];
} & ({ opcode: 'announce' } | { opcode: 'map'; map: PcpMapData } | { opcode: 'peer'; peer: PcpPeerData });

export type PcpResponse = {
  version: number;
  resultCode: number;
  lifetime: number;
  /** Seconds since the server's epoch began (§8.5). */
  epoch: number;
  options: PcpOption[];
} & (
  | { opcode: 'announce' }
  | { opcode: 'map'; map?: PcpMapData }
  | { opcode: 'peer'; peer?: PcpPeerData }
  /** An opcode this codec does not know (e.g. UNSUPP_OPCODE answers). */
  | { opcode: 'other'; code: number }
);

function fail(message: string): never {
  throw new NatpunchError('PORTMAP', `malformed PCP packet: ${message}`);
}

function u16(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new NatpunchError('BAD_ARGUMENT', `${name} must be 0..65535`);
  return v;
}
function u32(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw new NatpunchError('BAD_ARGUMENT', `${name} must be 0..2^32-1`);
  return v;
}

// ---------------------------------------------------------------------------------------------------- addresses

/** 16 bytes for an IPv6 or (IPv4-mapped, §5) IPv4 address. */
export function addressToBytes(address: string): Uint8Array {
  const out = new Uint8Array(16);
  const v4 = parseIPv4(address);
  if (v4) {
    out[10] = 0xff;
    out[11] = 0xff;
    out.set(v4, 12);
    return out;
  }
  const bytes = parseIPv6(address);
  if (!bytes) throw new NatpunchError('BAD_ARGUMENT', `"${address}" is not an IP address`);
  return bytes;
}

/** Text form: IPv4-mapped addresses become dotted IPv4; others compressed IPv6 (RFC 5952). */
export function bytesToAddress(b: Uint8Array, offset = 0): string {
  const s = b.subarray(offset, offset + 16);
  if (s.length !== 16) fail('address field truncated');
  let mapped = s[10] === 0xff && s[11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (s[i] !== 0) mapped = false;
  return mapped ? formatIPv4(s, 12) : formatIPv6(s);
}

/** RFC 6887 §11.1: "all zeros" suggested external address, in the family of the internal address. */
export function unspecifiedAddressFor(internal: string): string {
  return parseIPv4(internal) ? '0.0.0.0' : '::';
}

// ---------------------------------------------------------------------------------------------------- options

function encodeOptions(options: PcpOption[] | undefined): Buffer[] {
  const out: Buffer[] = [];
  for (const o of options ?? []) {
    let code: number;
    let data: Uint8Array;
    switch (o.type) {
      case 'third-party':
        code = PcpOptionCode.THIRD_PARTY;
        data = addressToBytes(o.address); // §13.1: 128-bit internal IP address
        break;
      case 'prefer-failure':
        code = PcpOptionCode.PREFER_FAILURE; // §13.2: no data
        data = new Uint8Array(0);
        break;
      case 'filter': {
        code = PcpOptionCode.FILTER; // §13.3: reserved(8) prefix length(8) remote peer port(16) remote peer IP(128)
        const d = Buffer.alloc(20);
        if (!Number.isInteger(o.prefixLength) || o.prefixLength < 0 || o.prefixLength > 128) {
          throw new NatpunchError('BAD_ARGUMENT', 'filter prefixLength must be 0..128');
        }
        d[1] = o.prefixLength;
        d.writeUInt16BE(u16('remotePort', o.remotePort), 2);
        d.set(addressToBytes(o.remoteAddress), 4);
        data = d;
        break;
      }
      default:
        code = o.code;
        data = o.data;
    }
    if (!Number.isInteger(code) || code < 0 || code > 255)
      throw new NatpunchError('BAD_ARGUMENT', 'option code must be 0..255');
    // §7.3: | Option Code (8) | Reserved (8) | Option Length (16) | data, padded to a multiple of 4 |
    const padded = (data.length + 3) & ~3;
    const b = Buffer.alloc(4 + padded);
    b[0] = code;
    b.writeUInt16BE(u16('option length', data.length), 2);
    b.set(data, 4);
    out.push(b);
  }
  return out;
}

function decodeOptions(b: Buffer, start: number): PcpOption[] {
  const out: PcpOption[] = [];
  let off = start;
  while (off < b.length) {
    if (b.length - off < 4) fail('truncated option header');
    const code = b[off]!;
    const len = b.readUInt16BE(off + 2);
    const padded = (len + 3) & ~3;
    if (off + 4 + padded > b.length) fail(`option ${code} claims ${len} bytes past the end of the message`);
    const data = b.subarray(off + 4, off + 4 + len);
    switch (code) {
      case PcpOptionCode.THIRD_PARTY:
        if (len !== 16) fail(`THIRD_PARTY option of ${len} bytes, not 16`);
        out.push({ type: 'third-party', address: bytesToAddress(data) });
        break;
      case PcpOptionCode.PREFER_FAILURE:
        if (len !== 0) fail(`PREFER_FAILURE option of ${len} bytes, not 0`);
        out.push({ type: 'prefer-failure' });
        break;
      case PcpOptionCode.FILTER:
        if (len !== 20) fail(`FILTER option of ${len} bytes, not 20`);
        if (data[1]! > 128) fail(`FILTER prefix length ${data[1]}`);
        out.push({
          type: 'filter',
          prefixLength: data[1]!,
          remotePort: data.readUInt16BE(2),
          remoteAddress: bytesToAddress(data, 4),
        });
        break;
      default:
        out.push({ type: 'unknown', code, data: new Uint8Array(data) });
    }
    off += 4 + padded;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------- opcodes

function checkNonce(nonce: Uint8Array): void {
  if (nonce.length !== 12) throw new NatpunchError('BAD_ARGUMENT', 'PCP mapping nonce must be 12 bytes (96 bits)');
}

function encodeMapData(m: PcpMapData, size: number): Buffer {
  // §11.1: | Mapping Nonce (96) | Protocol (8) | Reserved (24) | Internal Port (16) | Suggested External Port (16) |
  //        | Suggested External IP Address (128) |
  checkNonce(m.nonce);
  if (!Number.isInteger(m.protocol) || m.protocol < 0 || m.protocol > 255) {
    throw new NatpunchError('BAD_ARGUMENT', 'protocol must be 0..255');
  }
  const b = Buffer.alloc(size);
  b.set(m.nonce, 0);
  b[12] = m.protocol;
  b.writeUInt16BE(u16('internalPort', m.internalPort), 16);
  b.writeUInt16BE(u16('externalPort', m.externalPort), 18);
  b.set(addressToBytes(m.externalAddress), 20);
  return b;
}

function encodePeerData(p: PcpPeerData): Buffer {
  // §12.1: MAP's 36 bytes, then | Remote Peer Port (16) | Reserved (16) | Remote Peer IP Address (128) |
  const b = encodeMapData(p, PEER_DATA_SIZE);
  b.writeUInt16BE(u16('remotePort', p.remotePort), 36);
  b.set(addressToBytes(p.remoteAddress), 40);
  return b;
}

function decodeMapData(b: Buffer, off: number): PcpMapData {
  return {
    nonce: new Uint8Array(b.subarray(off, off + 12)),
    protocol: b[off + 12]!,
    internalPort: b.readUInt16BE(off + 16),
    externalPort: b.readUInt16BE(off + 18),
    externalAddress: bytesToAddress(b, off + 20),
  };
}

function decodePeerData(b: Buffer, off: number): PcpPeerData {
  return { ...decodeMapData(b, off), remotePort: b.readUInt16BE(off + 36), remoteAddress: bytesToAddress(b, off + 40) };
}

function opcodeNumber(name: PcpOpcodeName): number {
  return name === 'announce' ? PcpOpcode.ANNOUNCE : name === 'map' ? PcpOpcode.MAP : PcpOpcode.PEER;
}

function toU8(b: Buffer): Uint8Array {
  if (b.length > PCP_MAX_MESSAGE)
    throw new NatpunchError('BAD_ARGUMENT', `PCP message of ${b.length} bytes exceeds ${PCP_MAX_MESSAGE}`);
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}

// ---------------------------------------------------------------------------------------------------- messages

export function encodePcpRequest(req: PcpRequest): Uint8Array {
  // §7.1: | Version | R=0 | Opcode (7) | Reserved (16) | Requested Lifetime (32) | PCP Client's IP Address (128) |
  const h = Buffer.alloc(PCP_HEADER_SIZE);
  h[0] = req.version ?? PCP_VERSION;
  h[1] = opcodeNumber(req.opcode) & 0x7f;
  h.writeUInt32BE(u32('lifetime', req.lifetime), 4);
  h.set(addressToBytes(req.clientAddress), 8);
  const body =
    req.opcode === 'map'
      ? encodeMapData(req.map, MAP_DATA_SIZE)
      : req.opcode === 'peer'
        ? encodePeerData(req.peer)
        : Buffer.alloc(0);
  return toU8(Buffer.concat([h, body, ...encodeOptions(req.options)]));
}

export function encodePcpResponse(res: PcpResponse): Uint8Array {
  // §7.2: | Version | R=1 | Opcode (7) | Reserved (8) | Result Code (8) | Lifetime (32) | Epoch Time (32) |
  //       | Reserved (96) |
  const h = Buffer.alloc(PCP_HEADER_SIZE);
  h[0] = res.version;
  h[1] = 0x80 | ((res.opcode === 'other' ? res.code : opcodeNumber(res.opcode)) & 0x7f);
  h[3] = res.resultCode & 0xff;
  h.writeUInt32BE(u32('lifetime', res.lifetime), 4);
  h.writeUInt32BE(u32('epoch', res.epoch), 8);
  let body: Buffer = Buffer.alloc(0);
  if (res.opcode === 'map' && res.map) body = encodeMapData(res.map, MAP_DATA_SIZE);
  if (res.opcode === 'peer' && res.peer) body = encodePeerData(res.peer);
  return toU8(Buffer.concat([h, body, ...encodeOptions(res.options)]));
}

function checkFraming(msg: Uint8Array, what: string): Buffer {
  // §7: at least the 24-byte header, at most 1100 bytes, a multiple of 4.
  if (msg.length < PCP_HEADER_SIZE)
    fail(`${what} of ${msg.length} bytes is shorter than the ${PCP_HEADER_SIZE}-byte header`);
  if (msg.length > PCP_MAX_MESSAGE) fail(`${what} of ${msg.length} bytes is longer than ${PCP_MAX_MESSAGE}`);
  if (msg.length % 4 !== 0) fail(`${what} length ${msg.length} is not a multiple of 4`);
  return Buffer.from(msg.buffer, msg.byteOffset, msg.length);
}

export function decodePcpRequest(msg: Uint8Array): PcpRequest {
  const b = checkFraming(msg, 'request');
  if (b[1]! & 0x80) fail('R bit set: this is a response');
  const version = b[0]!;
  const op = b[1]! & 0x7f;
  const lifetime = b.readUInt32BE(4);
  const clientAddress = bytesToAddress(b, 8);
  const base = { version, lifetime, clientAddress };
  if (op === PcpOpcode.ANNOUNCE) return { ...base, opcode: 'announce', options: decodeOptions(b, PCP_HEADER_SIZE) };
  if (op === PcpOpcode.MAP) {
    if (b.length < PCP_HEADER_SIZE + MAP_DATA_SIZE) fail('MAP request truncated');
    return { ...base, opcode: 'map', map: decodeMapData(b, 24), options: decodeOptions(b, 24 + MAP_DATA_SIZE) };
  }
  if (op === PcpOpcode.PEER) {
    if (b.length < PCP_HEADER_SIZE + PEER_DATA_SIZE) fail('PEER request truncated');
    return { ...base, opcode: 'peer', peer: decodePeerData(b, 24), options: decodeOptions(b, 24 + PEER_DATA_SIZE) };
  }
  fail(`unknown request opcode ${op}`);
}

/**
 * Parses a PCP response. Throws NatpunchError('PORTMAP') on anything malformed; a client drops such packets
 * (§8.3). Error responses that carry no opcode-specific data are accepted (map/peer undefined).
 */
export function decodePcpResponse(msg: Uint8Array): PcpResponse {
  const b = checkFraming(msg, 'response');
  if (!(b[1]! & 0x80)) fail('R bit clear: this is a request');
  const version = b[0]!;
  const op = b[1]! & 0x7f;
  const resultCode = b[3]!;
  const base = { version, resultCode, lifetime: b.readUInt32BE(4), epoch: b.readUInt32BE(8) };
  const headerOnly = b.length === PCP_HEADER_SIZE && resultCode !== PcpResult.SUCCESS;
  if (op === PcpOpcode.ANNOUNCE) return { ...base, opcode: 'announce', options: decodeOptions(b, PCP_HEADER_SIZE) };
  if (op === PcpOpcode.MAP) {
    if (headerOnly) return { ...base, opcode: 'map', options: [] };
    if (b.length < PCP_HEADER_SIZE + MAP_DATA_SIZE) fail(`MAP response of ${b.length} bytes is truncated`);
    return { ...base, opcode: 'map', map: decodeMapData(b, 24), options: decodeOptions(b, 24 + MAP_DATA_SIZE) };
  }
  if (op === PcpOpcode.PEER) {
    if (headerOnly) return { ...base, opcode: 'peer', options: [] };
    if (b.length < PCP_HEADER_SIZE + PEER_DATA_SIZE) fail(`PEER response of ${b.length} bytes is truncated`);
    return { ...base, opcode: 'peer', peer: decodePeerData(b, 24), options: decodeOptions(b, 24 + PEER_DATA_SIZE) };
  }
  if (resultCode === PcpResult.SUCCESS) fail(`SUCCESS response for unknown opcode ${op}`);
  return { ...base, opcode: 'other', code: op, options: [] };
}
