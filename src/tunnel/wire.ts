import { NatpunchError } from '../util/errors.js';
import { decodeAddress, encodeAddress, SocksReply, type Decoded, type SocksAddress } from './socks5.js';

/**
 * The tunnel header: the first bytes of every stream a forwarding side opens in a natpunch session, and the exit
 * side's one reply. After that the stream carries the TCP connection's bytes unchanged, both ways.
 *
 *   request: u8 version | u8 kind | kind-specific
 *     FORWARD (1): u16be port                       the exposed port wanted (`forward 2222:homebox:22` asks for 22)
 *     CONNECT (2): SOCKS5 address (RFC 1928 §5)     ATYP | DST.ADDR | DST.PORT: a destination the exit connects to
 *   reply:   u8 version | u8 status | SOCKS5 address (the exit's bound address; 0.0.0.0:0 when not shared)
 *
 * `status` uses RFC 1928 §6 reply codes (0 succeeded, 2 not allowed by ruleset, 5 refused, ...), so the SOCKS front
 * passes them through unchanged and `forward` can say why a connection was refused.
 */
export const TUNNEL_VERSION = 1;

export const TunnelKind = {
  FORWARD: 1,
  CONNECT: 2,
} as const;

export type TunnelRequest = { kind: 'forward'; port: number } | { kind: 'connect'; host: string; port: number };

export interface TunnelReply {
  status: number;
  bound: SocksAddress;
}

/** Requests and replies are tiny; anything longer than this without a complete header is a protocol error. */
export const MAX_TUNNEL_HEADER_BYTES = 2 + 1 + 1 + 255 + 2;

function bad(message: string): NatpunchError {
  return new NatpunchError('TUNNEL_PROTOCOL', message);
}

export function encodeTunnelRequest(req: TunnelRequest): Buffer {
  if (!Number.isInteger(req.port) || req.port < 1 || req.port > 65535)
    throw new NatpunchError('BAD_ARGUMENT', `bad port ${req.port}`);
  if (req.kind === 'forward') {
    const b = Buffer.allocUnsafe(4);
    b[0] = TUNNEL_VERSION;
    b[1] = TunnelKind.FORWARD;
    b.writeUInt16BE(req.port, 2);
    return b;
  }
  return Buffer.concat([Buffer.from([TUNNEL_VERSION, TunnelKind.CONNECT]), encodeAddress(req)]);
}

export function decodeTunnelRequest(buf: Buffer): Decoded<TunnelRequest> | null {
  if (buf.length < 2) return null;
  if (buf[0] !== TUNNEL_VERSION) throw bad(`unsupported tunnel header version ${buf[0]}`);
  switch (buf[1]) {
    case TunnelKind.FORWARD:
      if (buf.length < 4) return null;
      return { value: { kind: 'forward', port: buf.readUInt16BE(2) }, length: 4 };
    case TunnelKind.CONNECT: {
      let addr: ReturnType<typeof decodeAddress>;
      try {
        addr = decodeAddress(buf, 2);
      } catch (err) {
        throw bad(`bad destination in tunnel request: ${(err as Error).message}`);
      }
      if (!addr) return null;
      return { value: { kind: 'connect', host: addr.value.host, port: addr.value.port }, length: 2 + addr.length };
    }
    default:
      throw bad(`unknown tunnel request kind ${buf[1]}`);
  }
}

export function encodeTunnelReply(status: number, bound: SocksAddress = { host: '0.0.0.0', port: 0 }): Buffer {
  return Buffer.concat([Buffer.from([TUNNEL_VERSION, status]), encodeAddress(bound)]);
}

export function decodeTunnelReply(buf: Buffer): Decoded<TunnelReply> | null {
  if (buf.length < 2) return null;
  if (buf[0] !== TUNNEL_VERSION) throw bad(`unsupported tunnel reply version ${buf[0]}`);
  let addr: ReturnType<typeof decodeAddress>;
  try {
    addr = decodeAddress(buf, 2);
  } catch (err) {
    throw bad(`bad tunnel reply: ${(err as Error).message}`);
  }
  if (!addr) return null;
  return {
    value: { status: buf[1]!, bound: { host: addr.value.host, port: addr.value.port } },
    length: 2 + addr.length,
  };
}

export { SocksReply as TunnelStatus };
