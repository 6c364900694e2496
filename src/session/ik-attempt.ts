import { NatpunchError } from '../util/errors.js';
import { keyToId, type KeyPair } from './identity.js';
import { MUX_VERSION } from './mux.js';
import { isAllowed, Session, streamIdsFor, type Allow, type SessionOptions, type SessionPath } from './session.js';
import { IkInitiator, IkResponder, type IkAccepted, type IkReplayCache } from './handshake-ik.js';

/**
 * How a connection attempt uses Noise IK (src/session/handshake-ik.ts) — the glue between the checks, which carry
 * the handshake, and the Session, which takes over its keys. connect()/listen() (src/natpunch.ts) call these three
 * things: initiatorIk() before the checks, initiatorIkSession() after them, IkListenerAttempt on the listener.
 */

/** UDX stream ids of an IK session: distinct from the XX ones, whose responder stream waits during the checks. */
export function ikStreamIds(connectionId: Uint8Array | string): { initiator: number; responder: number } {
  return streamIdsFor(Buffer.concat([Buffer.from(connectionId), Buffer.from('natpunch IK')]));
}

/** What the Session needs besides the handshake: everything connect()/listen() already pass to Session.establish. */
export type IkSessionBase = Omit<
  SessionOptions,
  'isInitiator' | 'localStreamId' | 'remoteStreamId' | 'remote' | 'udxStream' | 'expectedRemoteKey' | 'allow' | 'path'
> & {
  path?: Partial<SessionPath>;
};

/** Connector: the IK state whose message 1 every check request carries. */
export function initiatorIk(o: {
  keyPair: KeyPair;
  peerKey: Uint8Array;
  connectionId: Uint8Array | string;
  earlyData?: Uint8Array;
}): IkInitiator {
  return new IkInitiator({
    keyPair: o.keyPair,
    remoteKey: o.peerKey,
    connectionId: o.connectionId,
    ...(o.earlyData ? { earlyData: o.earlyData } : {}),
  });
}

/**
 * Connector, after the checks nominated a pair: the session when message 2 completed the handshake on it, null when
 * the checks ended without IK (an older or declining listener: run XX as before). Throws NOT_ALLOWED when the
 * listener refused us in (authenticated) message 2.
 */
export function initiatorIkSession(
  ik: IkInitiator,
  o: IkSessionBase & {
    connectionId: Uint8Array | string;
    peerKey: Uint8Array;
    remote: { address: string; port: number };
  },
): Session | null {
  const st = ik.state;
  if (st.state === 'refused')
    throw new NatpunchError(
      'NOT_ALLOWED',
      `the peer ${keyToId(o.peerKey).slice(0, 16)}… refused the connection (NOT_ALLOWED)`,
    );
  if (st.state !== 'complete') return null;
  const ids = ikStreamIds(o.connectionId);
  const { connectionId: _c, peerKey, ...base } = o;
  return Session.fromHandshake({
    ...base,
    isInitiator: true,
    localStreamId: ids.initiator,
    remoteStreamId: ids.responder,
    expectedRemoteKey: peerKey,
    handshake: st.handshake,
    earlyDataAccepted: st.earlyDataAccepted && ik.earlyDataBytes > 0,
  });
}

/**
 * Listener: one attempt's IK responder. `handshake` goes to the checks; once they finished on the pair message 1
 * was accepted on, `session()` builds the session from it. `refused` rejects (NOT_ALLOWED) when `allow` refused the
 * connector on message 1 (the connector was told so in message 2).
 */
export class IkListenerAttempt {
  readonly handshake: IkResponder;
  readonly refused: Promise<never>;
  #accepted: IkAccepted | null = null;
  #connectionId: Uint8Array | string;

  constructor(o: {
    keyPair: KeyPair;
    connectionId: Uint8Array | string;
    peerKey: Uint8Array;
    replay: IkReplayCache;
    allow?: Allow;
  }) {
    this.#connectionId = o.connectionId;
    let refuse!: (err: Error) => void;
    this.refused = new Promise<never>((_, reject) => (refuse = reject));
    this.refused.catch(() => {}); // observed by whoever races it; never an unhandled rejection
    const allow = o.allow;
    this.handshake = new IkResponder({
      keyPair: o.keyPair,
      connectionId: o.connectionId,
      expectedKey: o.peerKey,
      replay: o.replay,
      ...(allow !== undefined ? { allow: (key: Buffer) => isAllowed(allow, key) } : {}),
      muxVersion: MUX_VERSION,
      onAccept: (accepted) => (this.#accepted = accepted),
      onRefuse: (key) =>
        refuse(new NatpunchError('NOT_ALLOWED', `refused a session from ${keyToId(key)} (not in the allow list)`)),
    });
  }

  /** True once message 1 was accepted (the connector will use IK: the XX responder can go). */
  get accepted(): boolean {
    return this.#accepted !== null;
  }

  /** The session over the pair message 1 came from; null when IK did not complete (XX runs). Call once. */
  session(o: IkSessionBase): Session | null {
    const acc = this.#accepted;
    if (!acc) return null;
    this.#accepted = null;
    const ids = ikStreamIds(this.#connectionId);
    return Session.fromHandshake({
      ...o,
      isInitiator: false,
      remote: acc.from,
      localStreamId: ids.responder,
      remoteStreamId: ids.initiator,
      handshake: acc.handshake,
      earlyData: acc.earlyData,
    });
  }
}
