// Valid messages of every parser natpunch has, the seeds the fuzzers mutate.
import { randomBytes } from 'node:crypto';
import { generateKeyPair, type KeyPair } from '../../src/session/identity.js';
import { candidatePriority, type Candidate } from '../../src/traversal/candidate.js';
import {
  attr,
  ChangeRequest,
  encodeStun,
  ErrorCodeAttr,
  OtherAddress,
  ResponseOrigin,
  Software,
  StunClass,
  StunMethod,
  Username,
  XorMappedAddress,
  shortTermKey,
} from '../../src/wire/stun/index.js';
import { A, Cls, Method, StunBuilder, xorAddressValue } from '../../src/relay/message.js';
import { encodeChannelData } from '../../src/wire/channel-data.js';
import { encodeRendezvous, type EncodableMessage } from '../../src/wire/rendezvous.js';
import { encodeSeqOffer } from '../../src/wire/seq-offer.js';
import { encodePcpRequest, encodePcpResponse } from '../../src/wire/pcp.js';
import { encodeNatPmpRequest, encodeNatPmpResponse } from '../../src/wire/natpmp.js';
import {
  encodeAddress,
  encodeAuthRequest,
  encodeGreeting,
  encodeReply,
  encodeRequest,
} from '../../src/tunnel/socks5.js';
import { encodeTunnelReply, encodeTunnelRequest } from '../../src/tunnel/wire.js';
import { encodeFrame, FrameType } from '../../src/session/mux.js';
import { encodeEcho, encodeIpv4 } from '../../src/wire/icmp.js';

const tid = () => randomBytes(12);

export function stunSeeds(): Buffer[] {
  const from = { family: 'IPv4' as const, address: '203.0.113.5', port: 40000 };
  const from6 = { family: 'IPv6' as const, address: '2001:db8::5', port: 40000 };
  return [
    encodeStun({ cls: StunClass.Request, method: StunMethod.Binding, transactionId: tid() }),
    encodeStun(
      {
        cls: StunClass.Request,
        method: StunMethod.Binding,
        transactionId: tid(),
        attributes: [attr(Software, 'natpunch'), attr(ChangeRequest, { changeIp: true, changePort: false })],
      },
      { fingerprint: true },
    ),
    encodeStun(
      { cls: StunClass.Request, method: StunMethod.Binding, transactionId: tid(), attributes: [attr(Username, 'u:v')] },
      { integrity: shortTermKey('pw'), fingerprint: true },
    ),
    encodeStun(
      {
        cls: StunClass.SuccessResponse,
        method: StunMethod.Binding,
        transactionId: tid(),
        attributes: [attr(XorMappedAddress, from), attr(OtherAddress, from), attr(ResponseOrigin, from6)],
      },
      { fingerprint: true },
    ),
    encodeStun({
      cls: StunClass.ErrorResponse,
      method: StunMethod.Binding,
      transactionId: tid(),
      attributes: [attr(ErrorCodeAttr, { code: 420, reason: 'Unknown Attribute' })],
    }),
    Buffer.concat([Buffer.from([0, 1, 0, 0]), randomBytes(16)]), // RFC 3489
  ];
}

export function turnSeeds(): Buffer[] {
  const peer = xorAddressValue({ address: '198.51.100.9', port: 5000 }, Buffer.alloc(12));
  return [
    new StunBuilder(Method.Allocate, Cls.Request, tid())
      .add(A.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]))
      .finish(),
    new StunBuilder(Method.Allocate, Cls.Request, tid())
      .add(A.REQUESTED_TRANSPORT, Buffer.from([6, 0, 0, 0]))
      .add(A.USERNAME, Buffer.from('alice'))
      .add(A.REALM, Buffer.from('natpunch'))
      .add(A.NONCE, randomBytes(16))
      .add(A.MESSAGE_INTEGRITY, randomBytes(20))
      .finish(),
    new StunBuilder(Method.CreatePermission, Cls.Request, tid())
      .add(A.XOR_PEER_ADDRESS, peer)
      .add(A.XOR_PEER_ADDRESS, peer)
      .finish(),
    new StunBuilder(Method.ChannelBind, Cls.Request, tid())
      .add(A.CHANNEL_NUMBER, Buffer.from([0x40, 0x01, 0, 0]))
      .add(A.XOR_PEER_ADDRESS, peer)
      .finish(),
    new StunBuilder(Method.Send, Cls.Indication, tid())
      .add(A.XOR_PEER_ADDRESS, peer)
      .add(A.DATA, randomBytes(33))
      .finish(),
    new StunBuilder(Method.Refresh, Cls.Request, tid()).add(A.LIFETIME, Buffer.from([0, 0, 0, 0])).finish(),
    new StunBuilder(Method.Connect, Cls.Request, tid()).add(A.XOR_PEER_ADDRESS, peer).finish(),
  ];
}

export function channelDataSeeds(): Buffer[] {
  return [
    encodeChannelData(0x4000, randomBytes(5)),
    encodeChannelData(0x4ffe, randomBytes(63), { stream: true } as never),
    encodeChannelData(0x4001, Buffer.alloc(0)),
  ];
}

function candidates(n: number): Candidate[] {
  const out: Candidate[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      i % 3 === 2
        ? {
            type: 'srflx',
            transport: 'tcp',
            address: `2001:db8::${i + 1}`,
            port: 1000 + i,
            priority: candidatePriority('srflx'),
          }
        : {
            type: 'host',
            transport: 'udp',
            address: `192.0.2.${i + 1}`,
            port: 2000 + i,
            priority: candidatePriority('host', 100 - i),
          },
    );
  }
  return out;
}

export interface SignedSeed {
  bytes: Buffer;
  key: KeyPair;
  /** Where the message's own public key sits (resignedMutant keeps it). */
  keyAt: number;
}

/** One of each rendezvous message type; the signed ones with the key that signed them. */
export function rendezvousSeeds(
  alice = generateKeyPair(),
  bob = generateKeyPair(),
): { all: Buffer[]; signed: SignedSeed[] } {
  const c = candidates(6);
  const unsigned: EncodableMessage[] = [
    {
      type: 'registered',
      requestId: 2,
      reflexive: { transport: 'udp', address: '203.0.113.7', port: 61000 },
      refreshMs: 25000,
      ttlMs: 90000,
      serverTime: Date.now(),
      reachable: false,
    },
    { type: 'lookup', requestId: 3, target: { name: 'bob' } },
    { type: 'lookup', requestId: 4, target: { key: bob.publicKey } },
    {
      type: 'lookup-result',
      requestId: 5,
      publicKey: bob.publicKey,
      name: 'bob',
      reachable: true,
      expiresInMs: 1234,
      candidates: c,
    },
    {
      type: 'connect-notify',
      requestId: 7,
      connectionId: randomBytes(16),
      role: 'responder',
      mode: 'connect',
      peerKey: alice.publicKey,
      peerName: 'alice',
      startDelayMs: 15,
      serverTime: 1,
      candidates: c,
    },
    {
      type: 'error',
      requestId: 9,
      code: 'NAME_TAKEN',
      inResponseTo: 1,
      retryAfterMs: 0,
      message: 'name "alice" is registered by another key',
    },
    { type: 'ping', requestId: 11, time: 123456789 },
    { type: 'pong', requestId: 12, echo: 123456789, time: 5 },
    { type: 'notify-ack', requestId: 13, connectionId: randomBytes(16) },
    {
      type: 'turn-credentials',
      requestId: 14,
      username: '1700000000:abcdef0123456789',
      password: 'c2VjcmV0c2VjcmV0c2VjcmV0cw==',
      ttlSeconds: 3600,
      port: 3478,
    },
    { type: 'seq-offer-result', requestId: 18, connectionId: randomBytes(16), spoofing: true },
    { type: 'ack', requestId: 19, status: 1 },
    { type: 'move', requestId: 20, reason: 'draining', retryAfterMs: 5000 },
  ];
  const seqOffer = encodeSeqOffer({
    isn: 12345,
    window: 64240,
    options: { mss: 1460, windowScale: 7, sackPermitted: true, timestamps: { value: 99, echo: 0 } },
    public: { address: '198.51.100.1', port: 4000 },
    private: { address: '10.0.0.2', port: 4000 },
  });
  const signed: SignedSeed[] = [
    {
      bytes: encodeRendezvous(
        {
          type: 'register',
          requestId: 1,
          publicKey: alice.publicKey,
          name: 'alice',
          reachable: false,
          rttMs: 12,
          candidates: c,
        },
        alice.secretKey,
      ),
      key: alice,
      keyAt: 8,
    },
    {
      bytes: encodeRendezvous(
        {
          type: 'connect',
          requestId: 6,
          publicKey: alice.publicKey,
          reachable: false,
          target: { name: 'bob' },
          connectionId: randomBytes(16),
          rttMs: 40,
          candidates: c,
        },
        alice.secretKey,
      ),
      key: alice,
      keyAt: 8,
    },
    {
      bytes: encodeRendezvous(
        {
          type: 'connect',
          requestId: 6,
          publicKey: bob.publicKey,
          reachable: true,
          target: { key: alice.publicKey },
          connectionId: randomBytes(16),
          rttMs: 0,
          candidates: [],
        },
        bob.secretKey,
      ),
      key: bob,
      keyAt: 8,
    },
    {
      bytes: encodeRendezvous({ type: 'unregister', requestId: 14, publicKey: bob.publicKey }, bob.secretKey),
      key: bob,
      keyAt: 7,
    },
    {
      bytes: encodeRendezvous(
        {
          type: 'seq-offer',
          requestId: 15,
          publicKey: alice.publicKey,
          connectionId: randomBytes(16),
          peerKey: bob.publicKey,
          offer: seqOffer,
        },
        alice.secretKey,
      ),
      key: alice,
      keyAt: 7,
    },
    {
      bytes: encodeRendezvous(
        {
          type: 'seq-offer',
          requestId: 16,
          publicKey: bob.publicKey,
          connectionId: randomBytes(16),
          peerKey: alice.publicKey,
          decline: 'not root',
        },
        bob.secretKey,
      ),
      key: bob,
      keyAt: 7,
    },
    {
      bytes: encodeRendezvous(
        { type: 'release-name', requestId: 17, publicKey: alice.publicKey, name: 'alice' },
        alice.secretKey,
      ),
      key: alice,
      keyAt: 7,
    },
    { bytes: encodeRendezvous(reportOf(alice), alice.secretKey), key: alice, keyAt: 7 },
  ];
  return { all: [...unsigned.map((m) => encodeRendezvous(m)), ...signed.map((s) => s.bytes)], signed };
}

/** An outcome report (operator's REPORT message) with every list filled. */
export function reportOf(kp: KeyPair, requestId = 21): EncodableMessage {
  return {
    type: 'report',
    requestId,
    publicKey: kp.publicKey,
    connectionId: randomBytes(16),
    role: 'initiator',
    result: 'failed',
    path: 'none',
    localNat: 'symmetric',
    peerNat: 'full-cone',
    winner: undefined,
    timeToConnectMs: undefined,
    timeToFirstByteMs: 1200,
    tried: ['udp', 'birthday', 'tcp-p2pnat'],
    failures: [
      { technique: 'udp', reason: 'timeout' },
      { technique: 'birthday', reason: 'blocked' },
    ],
  } as EncodableMessage;
}

export function pcpSeeds(): Buffer[] {
  const nonce = Uint8Array.from({ length: 12 }, (_, i) => i + 1);
  return [
    Buffer.from(
      encodePcpRequest({
        version: 2,
        opcode: 'map',
        lifetime: 7200,
        clientAddress: '10.0.0.2',
        options: [],
        map: { nonce, protocol: 17, internalPort: 4000, externalPort: 0, externalAddress: '0.0.0.0' },
      } as never),
    ),
    Buffer.from(
      encodePcpRequest({
        version: 2,
        opcode: 'announce',
        lifetime: 0,
        clientAddress: '2001:db8::5',
        options: [],
      } as never),
    ),
    Buffer.from(
      encodePcpResponse({
        version: 2,
        opcode: 'map',
        resultCode: 0,
        lifetime: 3600,
        epoch: 77,
        options: [],
        map: { nonce, protocol: 17, internalPort: 4000, externalPort: 40000, externalAddress: '198.51.100.7' },
      } as never),
    ),
    Buffer.from(
      encodePcpResponse({ version: 2, opcode: 'announce', resultCode: 0, lifetime: 0, epoch: 5, options: [] } as never),
    ),
  ];
}

export function natPmpSeeds(): Buffer[] {
  return [
    Buffer.from(encodeNatPmpRequest({ op: 'external-address' })),
    Buffer.from(
      encodeNatPmpRequest({
        op: 'map',
        transport: 'udp',
        internalPort: 4000,
        suggestedExternalPort: 4001,
        lifetime: 7200,
      }),
    ),
    Buffer.from(
      encodeNatPmpResponse({
        op: 'external-address',
        resultCode: 0,
        epoch: 1234,
        externalAddress: '198.51.100.7',
      } as never),
    ),
    Buffer.from(
      encodeNatPmpResponse({
        op: 'map',
        transport: 'tcp',
        resultCode: 0,
        epoch: 1,
        internalPort: 80,
        externalPort: 8080,
        lifetime: 3600,
      } as never),
    ),
  ];
}

export function socksSeeds(): Buffer[] {
  return [
    encodeGreeting([0, 2]),
    encodeAuthRequest('alice', 'secret'),
    encodeRequest(1, { host: '198.51.100.7', port: 80 }),
    encodeRequest(1, { host: 'db.example.lan', port: 5432 }),
    encodeRequest(1, { host: '2001:db8::1', port: 443 }),
    encodeReply(0, { host: '0.0.0.0', port: 0 }),
    encodeAddress({ host: 'x.example', port: 1 }),
  ];
}

export function tunnelSeeds(): Buffer[] {
  return [
    encodeTunnelRequest({ kind: 'forward', port: 22 }),
    encodeTunnelRequest({ kind: 'connect', host: 'db.lan', port: 5432 }),
    encodeTunnelRequest({ kind: 'connect', host: '10.0.0.7', port: 80 }),
    encodeTunnelReply(0),
    encodeTunnelReply(5, { host: '2001:db8::1', port: 1 }),
  ];
}

export function muxSeeds(): Buffer[] {
  const resume = Buffer.alloc(2 + 21);
  resume.writeUInt16BE(1, 0);
  resume.writeUInt32BE(2, 2);
  return [
    encodeFrame(FrameType.OPEN, 2),
    encodeFrame(FrameType.DATA, 2, randomBytes(100)),
    encodeFrame(FrameType.CREDIT, 2, Buffer.from([0, 0, 16, 0])),
    encodeFrame(FrameType.END, 2),
    encodeFrame(FrameType.RESET, 2, Buffer.from('bye')),
    encodeFrame(FrameType.PING, 0, Buffer.from([0, 0, 0, 1])),
    encodeFrame(FrameType.PONG, 0, Buffer.from([0, 0, 0, 1])),
    encodeFrame(FrameType.HELLO, 0, Buffer.from([1])),
    encodeFrame(FrameType.GOODBYE, 0),
    encodeFrame(FrameType.RESUME, 0, resume),
    encodeFrame(FrameType.DATAGRAM, 0, randomBytes(20)),
  ];
}

export function packetSeeds(): Buffer[] {
  const echo = encodeEcho({ identifier: 7, sequence: 1, data: randomBytes(8) });
  return [encodeIpv4({ source: '10.0.0.1', destination: '10.0.0.2', protocol: 1, ttl: 64 } as never, echo), echo];
}
