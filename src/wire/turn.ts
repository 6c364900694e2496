/**
 * TURN's methods and attributes (RFC 8656 §17, §18; RFC 6062 §6) registered on the open STUN registry, so the
 * general codec (decodeStun / encodeStun / decodeAll) and the STUN server know them without the core changing.
 * The TURN server and client name their attributes through src/relay/message.ts, which takes the numbers from here;
 * the registry serves logging, tools, and telling `serve`'s STUN server which methods belong to TURN on a shared
 * socket.
 */
import {
  bytesCodec,
  coreRegistry,
  decodeError,
  defineAttribute,
  emptyCodec,
  uint32Codec,
  xorAddressCodec,
  type AttributeCodec,
  type StunRegistry,
} from './stun/registry.js';

/** RFC 8656 §17 and RFC 6062 §6.1. */
export const TurnMethod = {
  Allocate: 0x003,
  Refresh: 0x004,
  Send: 0x006,
  Data: 0x007,
  CreatePermission: 0x008,
  ChannelBind: 0x009,
  Connect: 0x00a,
  ConnectionBind: 0x00b,
  ConnectionAttempt: 0x00c,
} as const;

/** A 4-byte value whose first byte is the meaningful one (REQUESTED-TRANSPORT, address families). */
const firstByteCodec: AttributeCodec<number> = {
  decode(v) {
    if (v.length !== 4) throw decodeError('attribute must be 4 bytes');
    return v[0]!;
  },
  encode(n) {
    return Uint8Array.of(n & 0xff, 0, 0, 0);
  },
};

/** RFC 8656 §18.1: channel number in the first two bytes, then RFFU. */
const channelNumberCodec: AttributeCodec<number> = {
  decode(v) {
    if (v.length !== 4) throw decodeError('CHANNEL-NUMBER must be 4 bytes');
    return (v[0]! << 8) | v[1]!;
  },
  encode(n) {
    return Uint8Array.of(n >> 8, n & 0xff, 0, 0);
  },
};

/** RFC 8656 §18.7: one byte, R bit (0x80). */
const evenPortCodec: AttributeCodec<{ reserve: boolean }> = {
  decode(v) {
    if (v.length !== 1 && v.length !== 4) throw decodeError('EVEN-PORT must be 1 byte');
    return { reserve: (v[0]! & 0x80) !== 0 };
  },
  encode({ reserve }) {
    return Uint8Array.of(reserve ? 0x80 : 0);
  },
};

/** RFC 8656 §18.12: family, reserved, then an ERROR-CODE-style class/number/reason. */
const addressErrorCodec: AttributeCodec<{ family: number; code: number; reason: string }> = {
  decode(v) {
    if (v.length < 4) throw decodeError('ADDRESS-ERROR-CODE too short');
    return { family: v[0]!, code: (v[2]! & 7) * 100 + v[3]!, reason: Buffer.from(v.subarray(4)).toString('utf8') };
  },
  encode({ family, code, reason }) {
    const r = Buffer.from(reason, 'utf8');
    const out = new Uint8Array(4 + r.length);
    out[0] = family;
    out[2] = Math.floor(code / 100);
    out[3] = code % 100;
    out.set(r, 4);
    return out;
  },
};

/** RFC 8656 §18.13: ICMP type and code, then error data. */
const icmpCodec: AttributeCodec<{ type: number; code: number; data: number }> = {
  decode(v) {
    if (v.length !== 8) throw decodeError('ICMP must be 8 bytes');
    return { type: v[2]!, code: v[3]!, data: ((v[4]! << 24) | (v[5]! << 16) | (v[6]! << 8) | v[7]!) >>> 0 };
  },
  encode({ type, code, data }) {
    return Uint8Array.of(0, 0, type, code, data >>> 24, (data >>> 16) & 0xff, (data >>> 8) & 0xff, data & 0xff);
  },
};

export const ChannelNumber = defineAttribute(0x000c, 'CHANNEL-NUMBER', channelNumberCodec);
export const Lifetime = defineAttribute(0x000d, 'LIFETIME', uint32Codec);
export const XorPeerAddress = defineAttribute(0x0012, 'XOR-PEER-ADDRESS', xorAddressCodec);
export const Data = defineAttribute(0x0013, 'DATA', bytesCodec());
export const XorRelayedAddress = defineAttribute(0x0016, 'XOR-RELAYED-ADDRESS', xorAddressCodec);
export const RequestedAddressFamily = defineAttribute(0x0017, 'REQUESTED-ADDRESS-FAMILY', firstByteCodec);
export const EvenPort = defineAttribute(0x0018, 'EVEN-PORT', evenPortCodec);
export const RequestedTransport = defineAttribute(0x0019, 'REQUESTED-TRANSPORT', firstByteCodec);
export const DontFragment = defineAttribute(0x001a, 'DONT-FRAGMENT', emptyCodec);
export const ReservationToken = defineAttribute(
  0x0022,
  'RESERVATION-TOKEN',
  bytesCodec((n) => n === 8),
);
export const ConnectionId = defineAttribute(0x002a, 'CONNECTION-ID', uint32Codec);
export const AdditionalAddressFamily = defineAttribute(0x8000, 'ADDITIONAL-ADDRESS-FAMILY', firstByteCodec);
export const AddressErrorCode = defineAttribute(0x8001, 'ADDRESS-ERROR-CODE', addressErrorCodec);
export const Icmp = defineAttribute(0x8004, 'ICMP', icmpCodec);

/** RFC 8656 §18 error codes beyond STUN's. */
export const TurnErrorCode = {
  Forbidden: 403,
  AllocationMismatch: 437,
  AddressFamilyNotSupported: 440,
  WrongCredentials: 441,
  UnsupportedTransportProtocol: 442,
  PeerAddressFamilyMismatch: 443,
  ConnectionAlreadyExists: 446, // RFC 6062 §6.3
  ConnectionTimeoutOrFailure: 447, // RFC 6062 §6.3
  AllocationQuotaReached: 486,
  InsufficientCapacity: 508,
} as const;

function createTurnRegistry(): StunRegistry {
  const r = coreRegistry.extend();
  for (const def of [
    ChannelNumber,
    Lifetime,
    XorPeerAddress,
    Data,
    XorRelayedAddress,
    RequestedAddressFamily,
    EvenPort,
    RequestedTransport,
    DontFragment,
    ReservationToken,
    ConnectionId,
    AdditionalAddressFamily,
    AddressErrorCode,
    Icmp,
  ]) {
    r.register(def);
  }
  for (const [name, m] of Object.entries(TurnMethod)) r.registerMethod(m, name);
  return r.freeze();
}

/** STUN core + TURN (frozen). Pass it as the STUN server's registry when TURN shares its socket. */
export const turnRegistry: StunRegistry = createTurnRegistry();
