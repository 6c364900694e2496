import { isIP } from 'node:net';
import { NatpunchError } from '../util/errors.js';

/**
 * SOCKS5 codec (RFC 1928) with username/password sub-negotiation (RFC 1929). Pure functions, no I/O.
 * Decoders take what has arrived so far and return null while the message is incomplete; they throw a
 * NatpunchError('SOCKS_PROTOCOL') whose `details.reply` is the RFC 1928 §6 reply code to send (when a reply is due).
 */
export const SOCKS_VERSION = 0x05;
/** RFC 1929 §2: the sub-negotiation has its own version byte. */
export const SOCKS_AUTH_VERSION = 0x01;

/** RFC 1928 §3 METHOD values. */
export const SocksMethod = {
  NO_AUTH: 0x00,
  GSSAPI: 0x01,
  USERNAME_PASSWORD: 0x02, // RFC 1929
  NO_ACCEPTABLE: 0xff,
} as const;

/** RFC 1928 §4 CMD values. */
export const SocksCommand = {
  CONNECT: 0x01,
  BIND: 0x02,
  UDP_ASSOCIATE: 0x03,
} as const;

/** RFC 1928 §5 ATYP values. */
export const SocksAddressType = {
  IPV4: 0x01,
  DOMAIN: 0x03,
  IPV6: 0x04,
} as const;

/** RFC 1928 §6 REP values. */
export const SocksReply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02, // connection not allowed by ruleset
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

export interface SocksAddress {
  host: string;
  port: number;
}

export interface Decoded<T> {
  value: T;
  /** bytes of the input the message used */
  length: number;
}

function bad(message: string, reply?: number): NatpunchError {
  return new NatpunchError('SOCKS_PROTOCOL', message, reply === undefined ? undefined : { details: { reply } });
}

/** RFC 1928 §3: VER | NMETHODS | METHODS(1..255). */
export function decodeGreeting(buf: Buffer): Decoded<{ methods: number[] }> | null {
  if (buf.length < 2) return null;
  if (buf[0] !== SOCKS_VERSION) throw bad(`not a SOCKS5 greeting (version byte ${buf[0]})`);
  const n = buf[1]!;
  if (buf.length < 2 + n) return null;
  return { value: { methods: [...buf.subarray(2, 2 + n)] }, length: 2 + n };
}

export function encodeGreeting(methods: number[]): Buffer {
  return Buffer.from([SOCKS_VERSION, methods.length, ...methods]);
}

/** RFC 1928 §3: the server's METHOD selection message, VER | METHOD. */
export function encodeMethodChoice(method: number): Buffer {
  return Buffer.from([SOCKS_VERSION, method]);
}

/** RFC 1929 §2: VER(1) | ULEN | UNAME | PLEN | PASSWD. */
export function decodeAuthRequest(buf: Buffer): Decoded<{ username: Buffer; password: Buffer }> | null {
  if (buf.length < 2) return null;
  if (buf[0] !== SOCKS_AUTH_VERSION) throw bad(`bad username/password sub-negotiation version ${buf[0]}`);
  const ulen = buf[1]!;
  if (buf.length < 2 + ulen + 1) return null;
  const plen = buf[2 + ulen]!;
  const end = 3 + ulen + plen;
  if (buf.length < end) return null;
  return {
    value: { username: Buffer.from(buf.subarray(2, 2 + ulen)), password: Buffer.from(buf.subarray(3 + ulen, end)) },
    length: end,
  };
}

export function encodeAuthRequest(username: string, password: string): Buffer {
  const u = Buffer.from(username, 'utf8');
  const p = Buffer.from(password, 'utf8');
  if (u.length < 1 || u.length > 255 || p.length < 1 || p.length > 255)
    throw new NatpunchError('BAD_ARGUMENT', 'SOCKS username and password must be 1 to 255 bytes (RFC 1929 §2)');
  return Buffer.concat([Buffer.from([SOCKS_AUTH_VERSION, u.length]), u, Buffer.from([p.length]), p]);
}

/** RFC 1929 §2: VER | STATUS, 0x00 is success; anything else and the server closes the connection. */
export function encodeAuthReply(ok: boolean): Buffer {
  return Buffer.from([SOCKS_AUTH_VERSION, ok ? 0x00 : 0x01]);
}

/** RFC 1928 §5 address: ATYP | addr | port(u16be). Returns null while incomplete. */
export function decodeAddress(buf: Buffer, offset: number): Decoded<SocksAddress & { atyp: number }> | null {
  if (buf.length < offset + 1) return null;
  const atyp = buf[offset]!;
  let host: string;
  let at = offset + 1;
  switch (atyp) {
    case SocksAddressType.IPV4:
      if (buf.length < at + 4 + 2) return null;
      host = [...buf.subarray(at, at + 4)].join('.');
      at += 4;
      break;
    case SocksAddressType.IPV6: {
      if (buf.length < at + 16 + 2) return null;
      const groups: string[] = [];
      for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(at + 2 * i).toString(16));
      host = compressV6(groups);
      at += 16;
      break;
    }
    case SocksAddressType.DOMAIN: {
      if (buf.length < at + 1) return null;
      const n = buf[at]!;
      if (buf.length < at + 1 + n + 2) return null;
      host = buf.subarray(at + 1, at + 1 + n).toString('latin1');
      if (n === 0 || !/^[A-Za-z0-9._-]+$/.test(host))
        throw bad('bad domain name in SOCKS address', SocksReply.HOST_UNREACHABLE);
      at += 1 + n;
      break;
    }
    default:
      throw bad(`unsupported SOCKS address type ${atyp}`, SocksReply.ADDRESS_TYPE_NOT_SUPPORTED);
  }
  const port = buf.readUInt16BE(at);
  return { value: { atyp, host, port }, length: at + 2 - offset };
}

function compressV6(groups: string[]): string {
  // Longest run of zero groups becomes "::" (RFC 5952 §4.2).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

export function encodeAddress(addr: SocksAddress): Buffer {
  const port = Buffer.allocUnsafe(2);
  port.writeUInt16BE(addr.port & 0xffff, 0);
  const family = isIP(addr.host);
  if (family === 4)
    return Buffer.concat([Buffer.from([SocksAddressType.IPV4, ...addr.host.split('.').map(Number)]), port]);
  if (family === 6) return Buffer.concat([Buffer.from([SocksAddressType.IPV6]), v6Bytes(addr.host), port]);
  const name = Buffer.from(addr.host, 'latin1');
  if (name.length < 1 || name.length > 255)
    throw new NatpunchError('BAD_ARGUMENT', `host name "${addr.host.slice(0, 40)}" must be 1 to 255 bytes`);
  return Buffer.concat([Buffer.from([SocksAddressType.DOMAIN, name.length]), name, port]);
}

function v6Bytes(text: string): Buffer {
  let s = text.split('%')[0]!;
  const out = Buffer.alloc(16);
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  let tail: number[] = [];
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    tail = [(b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!];
    s = s.slice(0, -v4[1]!.length) + '0:0';
  }
  const [head, rest] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const r = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups = rest === undefined ? h : [...h, ...Array(8 - h.length - r.length).fill('0'), ...r];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16) || 0, 2 * i));
  if (v4) {
    out.writeUInt16BE(tail[0]!, 12);
    out.writeUInt16BE(tail[1]!, 14);
  }
  return out;
}

export interface SocksRequest extends SocksAddress {
  command: number;
  atyp: number;
}

/** RFC 1928 §4: VER | CMD | RSV | ATYP | DST.ADDR | DST.PORT. */
export function decodeRequest(buf: Buffer): Decoded<SocksRequest> | null {
  if (buf.length < 4) return null;
  if (buf[0] !== SOCKS_VERSION) throw bad(`bad SOCKS request version ${buf[0]}`, SocksReply.GENERAL_FAILURE);
  const command = buf[1]!;
  const addr = decodeAddress(buf, 3);
  if (!addr) return null;
  return { value: { command, ...addr.value }, length: 3 + addr.length };
}

export function encodeRequest(command: number, addr: SocksAddress): Buffer {
  return Buffer.concat([Buffer.from([SOCKS_VERSION, command, 0x00]), encodeAddress(addr)]);
}

/** RFC 1928 §6: VER | REP | RSV | ATYP | BND.ADDR | BND.PORT. */
export function encodeReply(reply: number, bound: SocksAddress = { host: '0.0.0.0', port: 0 }): Buffer {
  return Buffer.concat([Buffer.from([SOCKS_VERSION, reply, 0x00]), encodeAddress(bound)]);
}

export function decodeReply(buf: Buffer): Decoded<{ reply: number; bound: SocksAddress }> | null {
  if (buf.length < 4) return null;
  if (buf[0] !== SOCKS_VERSION) throw bad(`bad SOCKS reply version ${buf[0]}`);
  const addr = decodeAddress(buf, 3);
  if (!addr) return null;
  return {
    value: { reply: buf[1]!, bound: { host: addr.value.host, port: addr.value.port } },
    length: 3 + addr.length,
  };
}

/** The RFC 1928 §6 reply code that best describes a failed outgoing connection (errno from node:net). */
export function replyForError(err: unknown): number {
  const code = (err as { code?: string } | null)?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return SocksReply.CONNECTION_REFUSED;
    case 'ENETUNREACH':
      return SocksReply.NETWORK_UNREACHABLE;
    case 'EHOSTUNREACH':
    case 'EHOSTDOWN':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'ETIMEDOUT':
    case 'TIMEOUT':
      return SocksReply.HOST_UNREACHABLE;
    default:
      return SocksReply.GENERAL_FAILURE;
  }
}

export function replyName(reply: number): string {
  const names: Record<number, string> = {
    0: 'succeeded',
    1: 'general SOCKS server failure',
    2: 'connection not allowed by ruleset',
    3: 'network unreachable',
    4: 'host unreachable',
    5: 'connection refused',
    6: 'TTL expired',
    7: 'command not supported',
    8: 'address type not supported',
  };
  return names[reply] ?? `reply ${reply}`;
}
