/**
 * One UDP socket per peer carries several protocols; the first byte tells them apart (RFC 7983 §7 style):
 *   0..3     STUN / TURN messages (RFC 8489 §5: the two most significant bits are zero)
 *   64..79   TURN ChannelData (RFC 8656 §12: channel numbers 0x4000..0x4FFF)
 *   0xF0     natpunch rendezvous messages
 *   0xF1     natpunch punching probes (candidate checks) and keepalives before the session exists
 *   0xFF     UDX stream packets (libudx's magic byte) carrying the encrypted session
 */
export const FirstByte = {
  RENDEZVOUS: 0xf0,
  PROBE: 0xf1,
  UDX: 0xff,
} as const;

export type PacketKind = 'stun' | 'channel-data' | 'rendezvous' | 'probe' | 'udx' | 'unknown';

export function classifyDatagram(msg: Uint8Array): PacketKind {
  if (msg.length === 0) return 'unknown';
  const b = msg[0]!;
  if (b <= 3) return 'stun';
  if (b >= 64 && b <= 79) return 'channel-data';
  if (b === FirstByte.RENDEZVOUS) return 'rendezvous';
  if (b === FirstByte.PROBE) return 'probe';
  if (b === FirstByte.UDX) return 'udx';
  return 'unknown';
}
