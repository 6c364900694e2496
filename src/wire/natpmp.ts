/**
 * NAT-PMP (RFC 6886) packet codec. Pure: no I/O. Every multi-byte field is network byte order (§3).
 *
 * Requests go from the client to the gateway's UDP port 5351; responses come back from it (§3.1).
 * Responses set the top bit of the opcode (opcode + 128) (§3.2, §3.3).
 */
import { NatpunchError } from '../util/errors.js';
import { formatIPv4, parseIPv4 } from './ip.js';

/** RFC 6886 §3: the NAT-PMP version number is 0. */
export const NATPMP_VERSION = 0;
/** RFC 6886 §3.1: the gateway listens on UDP 5351. */
export const NATPMP_SERVER_PORT = 5351;
/** RFC 6886 §3.2.1: gateways announce address changes to 224.0.0.1 port 5350. */
export const NATPMP_CLIENT_PORT = 5350;

/** RFC 6886 §3.2 / §3.3 opcodes. */
export const NatPmpOpcode = {
  EXTERNAL_ADDRESS: 0,
  MAP_UDP: 1,
  MAP_TCP: 2,
} as const;
export type NatPmpOpcode = (typeof NatPmpOpcode)[keyof typeof NatPmpOpcode];

/** RFC 6886 §3.5 result codes. */
export const NatPmpResult = {
  SUCCESS: 0,
  UNSUPPORTED_VERSION: 1,
  NOT_AUTHORIZED: 2,
  NETWORK_FAILURE: 3,
  OUT_OF_RESOURCES: 4,
  UNSUPPORTED_OPCODE: 5,
} as const;

const RESULT_NAMES: Record<number, string> = {
  0: 'SUCCESS',
  1: 'UNSUPPORTED_VERSION',
  2: 'NOT_AUTHORIZED',
  3: 'NETWORK_FAILURE',
  4: 'OUT_OF_RESOURCES',
  5: 'UNSUPPORTED_OPCODE',
};

const RESULT_TEXT: Record<number, string> = {
  1: 'the gateway does not speak this NAT-PMP version',
  2: 'the gateway refused (port mapping disabled or not allowed for this host)',
  3: 'the gateway has no working external address (network failure)',
  4: 'the gateway is out of resources (no ports left)',
  5: 'the gateway does not support this request',
};

export function natPmpResultName(code: number): string {
  return RESULT_NAMES[code] ?? `UNKNOWN_${code}`;
}

/** A sentence a person can act on for a non-zero result code. */
export function natPmpResultMessage(code: number): string {
  return `${RESULT_TEXT[code] ?? 'the gateway answered with an unknown error'} (NAT-PMP result ${code} ${natPmpResultName(code)})`;
}

export type NatPmpRequest =
  | { op: 'external-address' }
  | {
      op: 'map';
      transport: 'udp' | 'tcp';
      internalPort: number;
      /** 0 lets the gateway choose (§3.3). */
      suggestedExternalPort: number;
      /** Seconds; 0 deletes the mapping (§3.4). */
      lifetime: number;
    };

export type NatPmpResponse =
  | { op: 'external-address'; resultCode: number; epoch: number; externalAddress: string }
  | {
      op: 'map';
      transport: 'udp' | 'tcp';
      resultCode: number;
      epoch: number;
      internalPort: number;
      externalPort: number;
      lifetime: number;
    }
  /** A non-zero result that came in a short (8-byte) answer, e.g. UNSUPPORTED_VERSION for an unknown opcode. */
  | { op: 'error'; requestOpcode: number; resultCode: number; epoch: number };

function fail(message: string): never {
  throw new NatpunchError('PORTMAP', `malformed NAT-PMP packet: ${message}`);
}

function checkU16(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new NatpunchError('BAD_ARGUMENT', `${name} must be 0..65535`);
}
function checkU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw new NatpunchError('BAD_ARGUMENT', `${name} must be 0..2^32-1`);
}

export function encodeNatPmpRequest(req: NatPmpRequest): Uint8Array {
  if (req.op === 'external-address') {
    // §3.2: | Vers = 0 | OP = 0 |
    return Uint8Array.of(NATPMP_VERSION, NatPmpOpcode.EXTERNAL_ADDRESS);
  }
  checkU16('internalPort', req.internalPort);
  checkU16('suggestedExternalPort', req.suggestedExternalPort);
  checkU32('lifetime', req.lifetime);
  // §3.3: | Vers | OP (1 UDP, 2 TCP) | Reserved (16) | Internal Port | Suggested External Port | Lifetime (32) |
  const buf = Buffer.alloc(12);
  buf[0] = NATPMP_VERSION;
  buf[1] = req.transport === 'udp' ? NatPmpOpcode.MAP_UDP : NatPmpOpcode.MAP_TCP;
  buf.writeUInt16BE(0, 2);
  buf.writeUInt16BE(req.internalPort, 4);
  buf.writeUInt16BE(req.suggestedExternalPort, 6);
  buf.writeUInt32BE(req.lifetime, 8);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

/** Parses a request (what a gateway reads). Used by fake gateways in tests and for symmetry. */
export function decodeNatPmpRequest(msg: Uint8Array): NatPmpRequest {
  if (msg.length < 2) fail(`request of ${msg.length} bytes is shorter than 2`);
  if (msg[0] !== NATPMP_VERSION) fail(`version ${msg[0]} is not 0`);
  const op = msg[1]!;
  if (op === NatPmpOpcode.EXTERNAL_ADDRESS) {
    if (msg.length !== 2) fail(`external address request is ${msg.length} bytes, not 2`);
    return { op: 'external-address' };
  }
  if (op !== NatPmpOpcode.MAP_UDP && op !== NatPmpOpcode.MAP_TCP) fail(`unknown request opcode ${op}`);
  if (msg.length !== 12) fail(`mapping request is ${msg.length} bytes, not 12`);
  const b = Buffer.from(msg.buffer, msg.byteOffset, msg.length);
  return {
    op: 'map',
    transport: op === NatPmpOpcode.MAP_UDP ? 'udp' : 'tcp',
    internalPort: b.readUInt16BE(4),
    suggestedExternalPort: b.readUInt16BE(6),
    lifetime: b.readUInt32BE(8),
  };
}

/** §3.2-3.5: every response starts | Vers | OP | Result Code (16) | Seconds Since Start of Epoch (32) |. */
function responseHeader(size: number, opByte: number, res: { resultCode: number; epoch: number }): Buffer {
  const buf = Buffer.alloc(size);
  buf[0] = NATPMP_VERSION;
  buf[1] = opByte;
  buf.writeUInt16BE(res.resultCode, 2);
  buf.writeUInt32BE(res.epoch, 4);
  return buf;
}

export function encodeNatPmpResponse(res: NatPmpResponse): Uint8Array {
  checkU32('epoch', res.epoch);
  if (res.op === 'error') {
    // §3.5: a gateway that cannot parse the request answers with just the common 8-byte header.
    const buf = responseHeader(8, (res.requestOpcode & 0x7f) | 0x80, res);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
  }
  if (res.op === 'external-address') {
    // §3.2: | Vers | OP = 128 | Result (16) | Seconds Since Start of Epoch (32) | External IPv4 Address (32) |
    const buf = responseHeader(12, 128 + NatPmpOpcode.EXTERNAL_ADDRESS, res);
    const external = parseIPv4(res.externalAddress);
    if (!external) throw new NatpunchError('BAD_ARGUMENT', `"${res.externalAddress}" is not an IPv4 address`);
    buf.set(external, 8);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
  }
  checkU16('internalPort', res.internalPort);
  checkU16('externalPort', res.externalPort);
  checkU32('lifetime', res.lifetime);
  // §3.3: | Vers | OP = 128 + x | Result | Epoch | Internal Port | Mapped External Port | Lifetime in Seconds |
  const buf = responseHeader(16, 128 + (res.transport === 'udp' ? NatPmpOpcode.MAP_UDP : NatPmpOpcode.MAP_TCP), res);
  buf.writeUInt16BE(res.internalPort, 8);
  buf.writeUInt16BE(res.externalPort, 10);
  buf.writeUInt32BE(res.lifetime, 12);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

/**
 * Parses a gateway response. Throws NatpunchError('PORTMAP') for anything that is not a well-formed NAT-PMP
 * response; callers drop such packets (§3.1: the client keeps waiting for a valid answer).
 */
export function decodeNatPmpResponse(msg: Uint8Array): NatPmpResponse {
  if (msg.length < 8) fail(`response of ${msg.length} bytes is shorter than 8`);
  if (msg[0] !== NATPMP_VERSION) fail(`version ${msg[0]} is not 0`);
  const opByte = msg[1]!;
  if ((opByte & 0x80) === 0) fail(`opcode ${opByte} is a request, not a response`);
  const b = Buffer.from(msg.buffer, msg.byteOffset, msg.length);
  const resultCode = b.readUInt16BE(2);
  const epoch = b.readUInt32BE(4);
  const op = opByte & 0x7f;
  if (op === NatPmpOpcode.EXTERNAL_ADDRESS && msg.length >= 12) {
    if (msg.length !== 12) fail(`external address response is ${msg.length} bytes, not 12`);
    return { op: 'external-address', resultCode, epoch, externalAddress: formatIPv4(b, 8) };
  }
  if ((op === NatPmpOpcode.MAP_UDP || op === NatPmpOpcode.MAP_TCP) && msg.length >= 16) {
    if (msg.length !== 16) fail(`mapping response is ${msg.length} bytes, not 16`);
    return {
      op: 'map',
      transport: op === NatPmpOpcode.MAP_UDP ? 'udp' : 'tcp',
      resultCode,
      epoch,
      internalPort: b.readUInt16BE(8),
      externalPort: b.readUInt16BE(10),
      lifetime: b.readUInt32BE(12),
    };
  }
  // §3.5: error answers may carry only the common header. A short SUCCESS answer is malformed.
  if (resultCode === NatPmpResult.SUCCESS) fail(`success response for opcode ${op} is only ${msg.length} bytes`);
  if (msg.length !== 8 && op <= 2) fail(`response for opcode ${op} is ${msg.length} bytes`);
  return { op: 'error', requestOpcode: op, resultCode, epoch };
}
