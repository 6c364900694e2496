/**
 * The one shape every way of finding a path has (direct UDP checks, port prediction, birthday punching, the
 * double-random budget, mapped, relay, TCP, ICMP). The planner (planner.ts) asks each technique whether it
 * `applies` to the two sides' NAT views and with which hold-back; the race (race.ts) runs the ones that do and keeps
 * the first authenticated path. A technique never calls the public connect()/listen(): it establishes its session
 * through src/session directly (no import circles).
 *
 * Ownership: whatever a technique opens (sockets, allocations, TCP connections) it releases itself when its signal
 * aborts or it fails. What it returns (the PathResult's session and `release`) is owned by the race from then on:
 * the race closes a late winner's session and calls `release` once.
 */
import type { Candidate } from './candidate.js';
import type { UdxEndpoint } from '../net/udx.js';
import type { KeyPair } from '../session/identity.js';
import type { Allow, Session } from '../session/session.js';
import type { Logger } from '../util/log.js';

/** Every technique the planner knows, by the name progress events and errors use. */
export type TechniqueName =
  'udp-checks' | 'predict' | 'birthday' | 'double-random' | 'mapped' | 'relay' | 'tcp' | 'icmp';

/**
 * What one side knows about its own network, as both sides see it (ours measured on the Endpoint's socket, the
 * peer's read from its candidates). `kind` is the mapping behaviour of its outermost NAT (RFC 4787 §4.1):
 * 'cone' = endpoint-independent, 'sequential'/'random' = address-and-port-dependent with predictable or random
 * ports, 'unknown' = not measured (treated as a cone, the cheap assumption that costs nothing when wrong).
 */
export interface NatView {
  kind: 'cone' | 'sequential' | 'random' | 'unknown';
  /** Sequential NATs: the observed port step; null otherwise. */
  delta: number | null;
  /** The side's public address as the rendezvous saw it (null: unknown). Equal on both sides: one NAT (LAN path). */
  publicAddress: string | null;
  /** UDP to the rendezvous works (false: the side registered over TCP; its UDP is blocked). */
  udp: boolean;
  /** The side holds a gateway port mapping (PCP / NAT-PMP / UPnP IGD): a 'mapped' candidate. */
  mapped: boolean;
  /** The side offers a relayed candidate (a TURN / peer-relay allocation). */
  relay: boolean;
  /** The side offers TCP candidates (it has the native addon and a reuseport port). */
  tcp: boolean;
  /** How many candidates of each type the side offered (for the planner's and the error's wording). */
  candidates: Partial<Record<Candidate['type'], number>>;
}

/** applies(): true, or the reason it does not (kept for the error when nothing works). */
export type Applicability = true | { skip: string };

/** How the session that won runs. */
export interface PathResult {
  technique: TechniqueName;
  session: Session;
  /** 'lan' and 'direct' are peer-to-peer; 'relay' goes through a relay server. */
  kind: 'lan' | 'direct' | 'relay';
  transport: 'udp' | 'tcp';
  local: { address: string; port: number };
  remote: { address: string; port: number };
  /** Why the technique ended up on this variant (e.g. TCP: STUNT #1 because P2P-NAT found nothing). */
  reason?: string;
  /** Resources the session needs beyond itself (e.g. the birthday socket that won); released once, by the race's
   *  owner, when the session closes. */
  release?: () => void;
}

/** Progress events a technique emits; the race adds 'technique-start' / 'technique-end' around each run. */
export type TechniqueEvent =
  | { phase: 'technique-start'; technique: TechniqueName; holdMs: number }
  | {
      phase: 'technique-end';
      technique: TechniqueName;
      ok: boolean;
      ms: number;
      error?: string;
      detail?: Record<string, unknown>;
    }
  | { phase: 'technique-note'; technique: TechniqueName; note: string; detail?: Record<string, unknown> };

/**
 * What the peers say to each other after the introduction, through the rendezvous (SEQ_OFFER and friends). Null
 * when there is no rendezvous (direct mode).
 */
export interface SignallingChannel {
  /** Publishes our value for `topic` on this connection; resolves once the server took it. */
  send(topic: string, value: Buffer, signal: AbortSignal): Promise<void>;
  /** Waits for the peer's value for `topic` on this connection. */
  receive(topic: string, signal: AbortSignal): Promise<Buffer>;
}

/** Everything a technique needs for one connection attempt; one context per attempt, shared by all techniques. */
export interface TechniqueContext {
  role: 'initiator' | 'responder';
  keyPair: KeyPair;
  peerKey: Buffer;
  /** The same 16 bytes on both sides (from the rendezvous' introduction, or agreed in direct mode). */
  connectionId: Uint8Array;
  /** The Endpoint's shared UDP socket (not owned by the technique: never closed by it). */
  endpoint: UdxEndpoint;
  local: { candidates: Candidate[]; nat: NatView };
  remote: { candidates: Candidate[]; nat: NatView };
  /** Responder side: who may connect. */
  allow?: Allow;
  signalling: SignallingChannel | null;
  logger: Logger;
  progress(event: TechniqueEvent): void;
  /**
   * Initiator: call with the path found, before starting the Noise handshake on it; false means another technique
   * won (give up and release). Only one technique at a time holds the claim, so the responder sees one handshake.
   * A lower-preference technique waits here (its grace time) for a better one still running.
   * `decided`: the responder already chose this path (its Noise IK message 2 came back on it, docs/handshake.md), so
   * the claim is taken at once, from a holder still in its XX handshake too (that handshake would meet a responder
   * that has moved on: its race ended with the IK session).
   */
  claim(decided?: boolean): Promise<boolean>;
  /** The claim's holder failed after claiming (e.g. the handshake): lets the next technique claim. */
  unclaim(): void;
}

/** One way of finding an authenticated path to the peer. */
export interface Technique {
  readonly name: TechniqueName;
  /** Decided from both sides' views alone, so both sides reach the same answer without talking. */
  applies(local: NatView, remote: NatView): Applicability;
  /** Finds a path and establishes the session over it; rejects (PUNCH_FAILED, with a person-readable reason) or
   *  with ABORTED when `signal` fires, having released everything it opened. */
  run(ctx: TechniqueContext, signal: AbortSignal): Promise<PathResult>;
}

/** A NatView for a side we know nothing about (direct mode without adverts). */
export function unknownNat(candidates: readonly Candidate[] = []): NatView {
  const counts: NatView['candidates'] = {};
  for (const c of candidates) counts[c.type] = (counts[c.type] ?? 0) + 1;
  return {
    kind: 'unknown',
    delta: null,
    publicAddress: candidates.find((c) => c.type === 'srflx')?.address ?? null,
    udp: true,
    mapped: (counts.mapped ?? 0) > 0,
    relay: (counts.relay ?? 0) > 0,
    tcp: candidates.some((c) => c.transport === 'tcp'),
    candidates: counts,
  };
}
