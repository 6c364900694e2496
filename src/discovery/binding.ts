/**
 * The Binding messages netcheck sends and the response fields it reads, on top of the shared STUN codec
 * (src/wire/stun). Adds what probing needs: RFC 3489 (legacy) requests for the ALG check, and a decoder that never
 * throws — a malformed or foreign datagram is simply not an answer.
 */
import { randomBytes } from 'node:crypto';
import type { Endpoint } from './classify.js';
import {
  ChangedAddress,
  ChangeRequest,
  decodeStun,
  encodeStun,
  ErrorCodeAttr,
  MAGIC_COOKIE,
  MappedAddress,
  OtherAddress,
  ResponseOrigin,
  ResponsePort,
  Software,
  SourceAddress,
  StunClass,
  StunMethod,
  XorMappedAddress,
  attr,
  type AttributeDef,
  type AttributeInit,
  type StunMessage,
} from '../wire/stun/index.js';

export { MAGIC_COOKIE };

export interface BindingRequestOptions {
  /** RFC 5780 §7.2: ask the server to answer from its alternate IP. */
  changeIp?: boolean;
  /** RFC 5780 §7.2: ask the server to answer from its alternate port. */
  changePort?: boolean;
  /** RFC 5780 §7.5: ask the server to answer to this port (at our source IP). */
  responsePort?: number;
  /**
   * An RFC 3489 request (no magic cookie: the 128-bit transaction id fills bytes 4-19), which servers answer with the
   * plain MAPPED-ADDRESS — the copy an address-rewriting ALG can recognise (used for ALG detection).
   */
  legacy?: boolean;
}

export interface BindingResponse {
  /** Hex of the transaction id (96 bits; 128 for RFC 3489 answers). */
  transactionId: string;
  ok: boolean;
  xorMapped?: Endpoint;
  mapped?: Endpoint;
  otherAddress?: Endpoint;
  responseOrigin?: Endpoint;
  software?: string;
  error?: { code: number; reason: string };
}

/**
 * RFC 8489 §14.14: SOFTWARE in our requests (fewer than 128 characters). Its length is on purpose: servers that
 * bound answers by the request's size (natpunch answers with at most as many bytes as it was sent) then have room
 * for OTHER-ADDRESS, RESPONSE-ORIGIN and SOFTWARE even over IPv6 (20 + 3 x 24 + 12 + 8 = 112 bytes). SOFTWARE is
 * comprehension-optional, so unlike PADDING (RFC 5780 §7.6) no server refuses it.
 */
export const PROBE_SOFTWARE =
  'natpunch netcheck (this text pads the probe: servers that answer with no more bytes than they get have room for all)';
const HEADER = 20;

/** 96-bit id (RFC 8489 §5), or for a legacy request 128 bits that do not start with the magic cookie. */
export function newTransactionId(legacy = false): Buffer {
  if (!legacy) return randomBytes(12);
  const id = randomBytes(16);
  if (id.readUInt32BE(0) === MAGIC_COOKIE) id[0]! ^= 0xff;
  return id;
}

export function encodeBindingRequest(transactionId: Uint8Array, options: BindingRequestOptions = {}): Buffer {
  const attributes: AttributeInit[] = [];
  // RFC 5780 §7.2 CHANGE-REQUEST and §7.5 RESPONSE-PORT.
  if (options.changeIp || options.changePort) {
    attributes.push(attr(ChangeRequest, { changeIp: !!options.changeIp, changePort: !!options.changePort }));
  }
  if (options.responsePort !== undefined) attributes.push(attr(ResponsePort, options.responsePort));
  if (options.legacy) {
    // RFC 3489 §11.1: header only; the 16-byte id takes the place of cookie + id.
    return encodeStun({ cls: StunClass.Request, method: StunMethod.Binding, transactionId });
  }
  attributes.push(attr(Software, PROBE_SOFTWARE));
  // RFC 8489 §14.7: FINGERPRINT helps servers tell our probes from other protocols on the port.
  return encodeStun(
    { cls: StunClass.Request, method: StunMethod.Binding, transactionId, attributes },
    { fingerprint: true },
  );
}

/** Total length of the STUN message at the start of `buf` (RFC 8489 §6.2.2 framing over TCP), or undefined. */
export function stunFrameLength(buf: Uint8Array): number | undefined {
  if (buf.length < HEADER) return undefined;
  return HEADER + ((buf[2]! << 8) | buf[3]!);
}

/** Parses a Binding success/error response; anything else (or malformed) → undefined. Never throws. */
export function decodeBindingResponse(msg: Uint8Array): BindingResponse | undefined {
  let m: StunMessage;
  try {
    m = decodeStun(msg, { allowLegacy: true });
  } catch {
    return undefined;
  }
  if (m.method !== StunMethod.Binding) return undefined;
  if (m.cls !== StunClass.SuccessResponse && m.cls !== StunClass.ErrorResponse) return undefined;
  // Without the cookie it is an RFC 3489 answer: bytes 4-19 are its transaction id and nothing is XOR'd.
  const legacy = m.cookie !== MAGIC_COOKIE;
  const out: BindingResponse = {
    transactionId: Buffer.from(m.raw.subarray(legacy ? 4 : 8, HEADER)).toString('hex'),
    ok: m.cls === StunClass.SuccessResponse,
  };
  const get = <T>(def: AttributeDef<T>): T | undefined => {
    try {
      return m.get(def);
    } catch {
      return undefined; // one malformed attribute does not spoil the others
    }
  };
  const ep = (a?: { address: string; port: number }): Endpoint | undefined =>
    a ? { address: a.address, port: a.port } : undefined;
  if (!legacy) out.xorMapped = ep(get(XorMappedAddress));
  out.mapped = ep(get(MappedAddress));
  out.otherAddress = ep(get(OtherAddress) ?? get(ChangedAddress));
  out.responseOrigin = ep(get(ResponseOrigin) ?? get(SourceAddress));
  const software = get(Software);
  if (software !== undefined) out.software = software.replace(/[^\x20-\x7e]/g, '').slice(0, 128);
  const error = get(ErrorCodeAttr);
  if (error) out.error = { code: error.code, reason: error.reason.replace(/[^\x20-\x7e]/g, '').slice(0, 128) };
  for (const k of Object.keys(out) as Array<keyof BindingResponse>) if (out[k] === undefined) delete out[k];
  return out;
}
