/**
 * The public shapes of connect() / listen() / createEndpoint(): options, progress events, and what a rendezvous
 * client must provide. One file so the Endpoint, the attempt and the one-shot wrappers (src/natpunch.ts) share them
 * without importing each other in a circle.
 */
import type { DatagramTransport } from '../net/datagram.js';
import type { UdxEndpoint } from '../net/udx.js';
import type { KeyPair } from '../session/identity.js';
import type { Allow, SessionPath } from '../session/session.js';
import type { Candidate } from '../traversal/candidate.js';
import type { HardNatAdvert } from '../traversal/predict.js';
import type { HardNatOptions } from '../traversal/hardwire.js';
import type { TcpPathResult, TcpSequenceMode } from '../traversal/tcp-session.js';
import type { TechniqueEvent, TechniqueName } from '../traversal/technique.js';
import type { RelayPath } from '../relay/path.js';
import type { PortMapperOptions } from '../portmap/mapper.js';
import type { Logger } from '../util/log.js';
import type { ConnectionOutcome } from '../rendezvous/client.js';
import type { PeerSpec } from '../identity/verify.js';
import type { PeerPins } from '../identity/known-peers.js';
import type { IkReplayCache } from '../session/handshake-ik.js';

/** STUN's port (RFC 8489 §18.6); `natpunch serve` runs the rendezvous on it too. */
export const DEFAULT_RENDEZVOUS_PORT = 3478;
/** connect() as a whole: rendezvous exchange, checks (10 s) and handshake. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
/** A listener punches for at most this many introductions at once (each sends bounded probes); more are dropped. */
export const MAX_CONCURRENT_ATTEMPTS = 32;

/** What the composition needs from a rendezvous client (src/rendezvous/client.ts provides it). */
export interface RendezvousLike {
  register(signal?: AbortSignal): Promise<{ reflexive: { address: string; port: number } }>;
  requestConnect(
    nameOrKey: string | Uint8Array,
    options: { connectionId?: Uint8Array; candidates?: Candidate[]; signal?: AbortSignal },
  ): Promise<ConnectOfferLike>;
  on(event: 'connect-request', listener: (offer: ConnectOfferLike) => void): unknown;
  off(event: 'connect-request', listener: (offer: ConnectOfferLike) => void): unknown;
  close(): void;
  /** SEQ_OFFER (TCP sequence-number techniques): publish ours, wait for the peer's. Optional for custom clients. */
  exchangeSeqOffer?(p: {
    connectionId: Uint8Array;
    peerKey: Uint8Array;
    offer?: Buffer;
    decline?: string;
    signal?: AbortSignal;
  }): Promise<{ spoofing: boolean }>;
  awaitSeqOffer?(
    connectionId: Uint8Array,
    peerKey: Uint8Array,
    signal: AbortSignal,
  ): Promise<{ offer?: Buffer; decline?: string }>;
  /** Outcome report after an attempt (src/rendezvous/outcome.ts). Optional for custom clients; never throws. */
  report?(outcome: ConnectionOutcome): Promise<boolean>;
}

export interface ConnectOfferLike {
  connectionId: Buffer;
  role: 'initiator' | 'responder';
  mode?: string;
  peerKey: Buffer;
  peerName?: string;
  candidates: Candidate[];
  /** Local clock time at which to start probing (both sides start together). */
  startAt?: number;
  /** How the rendezvous exchange went: 'tcp' when UDP to the server got no answer (our UDP may be blocked). */
  via?: 'udp' | 'tcp';
}

export type RendezvousFactory = (init: {
  transport: DatagramTransport;
  keyPair: KeyPair;
  name?: string;
  candidates: () => Candidate[];
  logger: Logger;
  /** false: the client sends no outcome reports. */
  report?: boolean;
}) => RendezvousLike;

/** Progress of connect()/listen(), for CLIs and logs. */
export type Progress =
  | { phase: 'gathering'; local: { address: string; port: number } }
  | { phase: 'registered'; reflexive: { address: string; port: number } }
  | {
      phase: 'offer';
      peer: string;
      peerName?: string;
      candidates: Candidate[];
      role: 'initiator' | 'responder';
      mode?: string;
    }
  /** The plan for this connection (src/traversal/planner.ts): the techniques it races, and the NAT kinds it saw. */
  | {
      phase: 'punching';
      pairs: number;
      plan?: Array<{ technique: TechniqueName; holdMs: number }>;
      local?: string;
      remote?: string;
    }
  /** Exactly once per session: how it runs. `traversal` names the technique that found the path. */
  | {
      phase: 'path';
      kind: SessionPath['kind'];
      remote: { address: string; port: number };
      local?: { address: string; port: number };
      transport?: 'udp' | 'tcp';
      traversal?: TechniqueName;
      type: string;
      rttMs: number | null;
      technique?: TcpPathResult['technique'];
      reason?: string;
    }
  /** A relayed session moved to a direct path (relay → direct upgrade). */
  | {
      phase: 'upgraded';
      kind: SessionPath['kind'];
      remote: { address: string; port: number };
      type: string;
      rttMs: number | null;
    }
  | { phase: 'connected'; peer: string; rttMs: number | null }
  /** Which transport carries (or will carry) the session and why; e.g. auto without the native addon → UDP. */
  | { phase: 'transport'; transport: 'udp' | 'tcp'; reason: string }
  /** portMapping: the gateway mapped our UDP port (a 'mapped' candidate is offered), or why not (we go on without). */
  | {
      phase: 'port-mapping';
      ok: boolean;
      protocol?: string;
      gateway?: string;
      external?: { address: string; port: number };
      error?: string;
    }
  /** hardNat: our measured NAT kind at gathering. */
  | { phase: 'hard-nat'; kind: HardNatAdvert['kind']; delta: number | null; ports: number[] }
  /** relay: our relay allocation (or why there is none). */
  | { phase: 'relay'; ok: boolean; relayed?: { address: string; port: number }; via?: 'udp' | 'tcp'; error?: string }
  /** One per technique start and end (and notes in between), from the race (src/traversal/race.ts). */
  | TechniqueEvent;

/** 'udp': UDX over UDP hole punching; 'tcp': TCP hole punching (needs the native addon); 'auto': both raced. */
export type TransportMode = 'udp' | 'tcp' | 'auto';

export interface CommonOptions {
  keyPair: KeyPair;
  /** Local UDP address to bind (default 0.0.0.0, any port). */
  bind?: { address?: string; port?: number };
  /** Use this socket instead of binding one. Whoever passes it keeps owning it (never closed here). */
  endpoint?: UdxEndpoint;
  /** Our candidates; default: host candidates of the bound address (for a wildcard bind: the interfaces). */
  candidates?: Candidate[];
  keepAliveMs?: number;
  /** The NAT's UDP mapping lifetime when known; without keepAliveMs, keepalives run at half of it. */
  mappingLifetimeMs?: number;
  idleTimeoutMs?: number;
  /** How long a session whose transport died waits for a new path before failing (default 20 s). */
  reconnectGraceMs?: number;
  checkTimeoutMs?: number;
  logger?: Logger;
  onProgress?: (p: Progress) => void;
  /** How to reach the rendezvous: "host[:port]" ("a,b": failover order), {host, port}, a list, or a factory. */
  rendezvous?: string | { host: string; port?: number } | Array<{ host: string; port?: number }> | RendezvousFactory;
  /** Which transports to race (default 'auto': UDP and TCP; UDP kept when both work). */
  transport?: TransportMode;
  /** TCP techniques beyond P2P-NAT (tcp-session.ts TcpSequenceMode; default 'auto'). */
  tcpSequence?: TcpSequenceMode;
  /**
   * On by default (off when the environment sets NATPUNCH_PORT_MAPPING=0, as the test runner does outside the lab):
   * asks the gateway (PCP, NAT-PMP, UPnP IGD) to map the socket's UDP port, in the background — it never delays a
   * connection; once mapped, the external address is offered as a 'mapped' candidate. `false` turns it off.
   */
  portMapping?: boolean | PortMapperOptions;
  /**
   * On by default with a rendezvous given as host[:port]: measures our NAT against the rendezvous (its port and
   * port + 1, which `natpunch serve` answers STUN on) and, when a side is symmetric, races the hard-NAT punch
   * (prediction / birthday). `false` turns it off; an object sets the double-random budget or STUN servers.
   */
  hardNat?: boolean | HardNatOptions;
  /** Send the rendezvous a signed outcome report after each attempt (NAT types, techniques, timings; never payload,
   *  never an address). Default true; `--no-report` / false turns it off. */
  report?: boolean;
  /** This side's NAT type when known (e.g. from netcheck), for outcome reports only. */
  natType?: string;
}

/** A relay: 'auto' (default: the credentials the rendezvous hands its peers), credentials
 *  ("user:password@host[:port]" or an object), a RelayPath opened on the same socket, or false (no relay). */
export type RelayOption =
  | RelayPath
  | string
  | { server: { address: string; port: number }; username: string; password: string; tcp?: boolean }
  | 'auto'
  | false;

export interface ConnectOptions extends CommonOptions {
  /** Default 'auto'. The relay is raced like every other technique, after the direct ones had their head start;
   *  a relayed session keeps trying to move to a direct path. */
  relay?: RelayOption;
  /** The relay's head start override (default from the planner). */
  relayHoldMs?: number;
  /** The peer's name or key (hex or bytes), through the rendezvous; `{ name, key }`: by name, and it must have
   *  this key (checked before anything is sent to the peer the rendezvous introduces). */
  to?: PeerSpec;
  /** Names pinned to keys (src/identity/known-peers.ts, SSH known_hosts style): connecting by name refuses a key other
   *  than the pinned one before anything is sent, and pins a name on its first successful session. */
  knownPeers?: PeerPins;
  /** Up to 1000 bytes inside the first check (Noise IK message 1, docs/handshake.md), delivered once in
   *  `session.earlyData` on the listener; `session.earlyDataAccepted` says whether they arrived. */
  earlyData?: Uint8Array;
  /** Direct mode, without a rendezvous: the peer's key and candidates (the caller did the signalling). */
  peer?: { publicKey: Uint8Array; candidates: Candidate[] };
  /** Direct mode: the connection id both sides agreed on (16 random bytes by default; give the same to acceptOffer). */
  connectionId?: Uint8Array;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** ICMP hole punching (src/traversal/icmp.ts) to a `listen --icmp` server, used only when no rendezvous is given
   *  or the rendezvous cannot be reached. Needs root / CAP_NET_RAW. */
  icmp?: { server: string; port?: number; probeAddress?: string; source?: string; timeoutMs?: number };
}

export interface ListenOptions extends CommonOptions {
  /** Default 'auto' (see ConnectOptions.relay). The listener owns the allocation and releases it on close. */
  relay?: RelayOption;
  relayHoldMs?: number;
  /** A name to claim on the rendezvous. */
  name?: string;
  /** Keys that may connect (list of keys/hex ids, or a function). Default: anyone with a valid key. */
  allow?: Allow;
  /** Noise IK first messages already seen (docs/handshake.md); listeners of one key in one process share one. */
  replayCache?: IkReplayCache;
  signal?: AbortSignal;
}
