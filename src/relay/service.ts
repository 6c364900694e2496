/**
 * The relay as `natpunch serve` runs it: one TurnServer on serve's port (attach.ts) in peer-relay mode by default
 * (peer-relay.ts: scoped credentials for every registered key, relaying only between introduced peers), plus —
 * when the operator configures it (`--turn --users/--auth-secret`) — the full TURN service with unscoped
 * credentials. The rendezvous hands out credentials through one issuer: keys the operator allows get the unscoped
 * shared-secret ones, everyone else scoped ones.
 */
import { NatpunchError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { attachTurn, type TurnHost } from './attach.js';
import {
  FirstIssuer,
  SharedSecretIssuer,
  type RelayCredentialIssuer,
  type SharedSecretIssuerOptions,
} from './issuer.js';
import { PeerRelay, type PeerRelayOptions } from './peer-relay.js';
import { defaultRelayAddress, TurnServer, type TurnServerOptions } from './server.js';

export interface RelayServiceOptions {
  /** Peer-relay mode (default on). false leaves only the operator's TURN service (then `turn.credentials` is needed). */
  peerRelay?: boolean | Omit<PeerRelayOptions, 'port'>;
  /** TurnServer options: the operator's unscoped credentials (full TURN), relay address, quotas, policy. */
  turn?: Omit<TurnServerOptions, 'scope' | 'logger'>;
  /** The rendezvous hands unscoped shared-secret credentials to these keys (`--turn-allow`); needs the secret. */
  turnCredentials?: Omit<SharedSecretIssuerOptions, 'port'>;
}

export interface RelayHost extends TurnHost {
  readonly udp: ReadonlyArray<{ address: string; port: number }>;
  /** Where credentials are handed out (absent with `--no-rendezvous`: then only configured users can relay). */
  readonly rendezvous?: { setRelayIssuer(issuer: RelayCredentialIssuer | undefined): void };
}

export interface RelayService {
  readonly turn: TurnServer;
  /** Absent when peer-relay mode is off. */
  readonly peerRelay: PeerRelay | null;
  /** Detaches from serve's sockets, stops issuing credentials and closes every allocation. */
  close(): void;
}

/** The relay address when none is configured: serve's one specific IPv4 listening address, else the host's first. */
export function relayAddressFor(listening: readonly string[]): string {
  const specific = listening.filter((a) => !a.includes(':') && a !== '0.0.0.0');
  return specific.length === 1 ? specific[0]! : defaultRelayAddress();
}

export function startRelay(host: RelayHost, options: RelayServiceOptions, logger?: Logger): RelayService {
  const port = host.udp[0]!.port;
  const peerRelay =
    options.peerRelay === false
      ? null
      : new PeerRelay({ ...(typeof options.peerRelay === 'object' ? options.peerRelay : {}), port });
  let turn: TurnServer;
  try {
    turn = new TurnServer({
      ...options.turn,
      ...(peerRelay ? { scope: peerRelay } : {}),
      ...(logger ? { logger } : {}),
    });
  } catch (err) {
    // A bad CIDR in the peer policy: the operator's flag, one line.
    if (err instanceof RangeError) throw new NatpunchError('BAD_ARGUMENT', err.message);
    throw err;
  }
  const detach = attachTurn(host, turn);
  const issuers: RelayCredentialIssuer[] = [];
  if (options.turnCredentials) issuers.push(new SharedSecretIssuer({ ...options.turnCredentials, port }));
  if (peerRelay) issuers.push(peerRelay);
  const issuer = issuers.length === 1 ? issuers[0]! : issuers.length ? new FirstIssuer(issuers) : undefined;
  host.rendezvous?.setRelayIssuer(issuer);
  let closed = false;
  return {
    turn,
    peerRelay,
    close() {
      if (closed) return;
      closed = true;
      host.rendezvous?.setRelayIssuer(undefined);
      detach();
      turn.close();
    },
  };
}
