/**
 * Joins a TurnServer to `natpunch serve`'s shared port (RFC 8656 §3: TURN runs on the STUN port; RFC 7983 first-byte
 * demultiplexing): TURN requests and indications are STUN messages with TURN methods, ChannelData starts with
 * 0x40..0x7F. The STUN server keeps Binding; TURN gets its methods (the STUN server stays silent on them) and, on
 * TCP, every connection that starts like STUN or ChannelData (TurnServer answers Binding on TCP itself).
 */
import type net from 'node:net';
import type { DatagramTransport } from '../net/datagram.js';
import type { StunServer } from '../stun/server.js';
import { TurnMethod } from '../wire/turn.js';
import type { TurnServer } from './server.js';

export interface TurnHost {
  readonly stun: StunServer;
  readonly sockets: readonly DatagramTransport[];
  registerTcpHandler(
    match: (firstByte: number) => boolean,
    handler: (socket: net.Socket, head: Buffer) => void,
  ): () => void;
}

/** Attaches `turn` to a started server (see src/server/serve.ts). Returns a function that detaches it again. */
export function attachTurn(host: TurnHost, turn: TurnServer): () => void {
  const offs: Array<() => void> = [];
  // TurnServer reads its messages from its own listener; STUN must not answer them with 400 Unsupported Method.
  for (const method of Object.values(TurnMethod)) offs.push(host.stun.registerMethod(method, () => undefined));
  for (const s of host.sockets) offs.push(turn.attachUdp(s));
  // Later registrations win: TURN takes the STUN range (and ChannelData) on TCP.
  offs.push(
    host.registerTcpHandler(
      (b) => b <= 3 || (b >= 0x40 && b <= 0x7f),
      (socket, head) => turn.handleTcp(socket, head),
    ),
  );
  return () => {
    for (const off of offs.splice(0).reverse()) off();
  };
}
