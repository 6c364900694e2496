/**
 * Relay → direct upgrade (DCUtR / Tailscale's CallMeMaybe in spirit): while a session runs over the relay, both
 * peers keep running authenticated direct checks in bounded rounds (their own connection tag, derived from the
 * session's connection id) between their direct candidates. When a pair answers both ways and is nominated, each
 * side moves the session onto it (Session#migrate: the initiator's move is announced on the new path, the responder
 * follows it). Stops when the session closes, moves by itself, or after RELAY_UPGRADE_MAX_MS.
 */
import { createHash } from 'node:crypto';
import { ConnectivityChecks, deriveCheckKey } from '../traversal/checks.js';
import { candidatePriority, dedupeCandidates, type Candidate } from '../traversal/candidate.js';
import { pathOf } from '../traversal/udp-checks.js';
import type { UdxEndpoint } from '../net/udx.js';
import type { KeyPair } from '../session/identity.js';
import type { Session } from '../session/session.js';
import { sleep } from '../util/abort.js';
import type { Logger } from '../util/log.js';
import type { Progress } from './types.js';

/** While relayed, direct checks are retried this often (paced rounds)... */
export const RELAY_UPGRADE_INTERVAL_MS = 2_000;
/** ...each round bounded by this (the checks' own pacing and retransmission schedule, RFC 8445 §14) ... */
export const RELAY_UPGRADE_ROUND_MS = 3_000;
/** ...for at most this long after the session started; then the session stays on the relay. */
export const RELAY_UPGRADE_MAX_MS = 120_000;
const MAX_UPGRADE_CANDIDATES = 16;

/**
 * The peer's direct (non-relay UDP) candidates for the upgrade checks, plus "predicted" ones: its reflexive address
 * with each host port (a NAT that became port-preserving maps the socket's own port).
 */
export function upgradeCandidates(remote: readonly Candidate[]): Candidate[] {
  const direct = remote.filter(
    (c) =>
      c.transport === 'udp' &&
      c.type !== 'relay' &&
      c.type !== 'icmp' &&
      c.type !== 'predicted' &&
      c.address !== '127.0.0.1',
  );
  const predicted: Candidate[] = [];
  for (const s of direct.filter((c) => c.type === 'srflx')) {
    for (const h of direct.filter((c) => c.type === 'host' && c.address.includes(':') === s.address.includes(':'))) {
      predicted.push({
        type: 'predicted',
        transport: 'udp',
        address: s.address,
        port: h.port,
        priority: candidatePriority('predicted'),
      });
    }
  }
  return dedupeCandidates([...direct, ...predicted]).slice(0, MAX_UPGRADE_CANDIDATES);
}

export interface UpgradeSetup {
  endpoint: UdxEndpoint;
  role: 'initiator' | 'responder';
  connectionId: Uint8Array;
  keyPair: KeyPair;
  peerKey: Uint8Array;
  local: Candidate[];
  remote: readonly Candidate[];
  logger: Logger;
  progress: (p: Progress) => void;
}

export function upgradeInBackground(a: UpgradeSetup, session: Session, onDirect?: () => void): void {
  if (session.transport !== 'udp' || session.path.kind !== 'relay') return;
  const targets = upgradeCandidates(a.remote);
  if (targets.length === 0) return;
  const local = a.local.filter((c) => c.transport === 'udp' && c.type !== 'relay' && c.type !== 'predicted');
  const id = createHash('sha256').update(a.connectionId).update('natpunch relay upgrade').digest().subarray(0, 16);
  const key = deriveCheckKey(id, a.keyPair.publicKey, a.peerKey);
  const ac = new AbortController();
  const stop = () => ac.abort();
  session.once('close', stop);
  const deadline = Date.now() + RELAY_UPGRADE_MAX_MS;
  const log = a.logger;
  void (async () => {
    try {
      while (!ac.signal.aborted && Date.now() < deadline && session.path.kind === 'relay') {
        const checks = new ConnectivityChecks({
          transport: a.endpoint,
          role: a.role,
          connectionId: id,
          key,
          local,
          remote: targets,
          nomination: 'ack',
          timeoutMs: RELAY_UPGRADE_ROUND_MS,
          signal: ac.signal,
          logger: log,
        });
        try {
          const r = await checks.run();
          if (ac.signal.aborted) return;
          log.info({ remote: r.remote }, 'direct path found while relayed; moving the session');
          await session.migrate(r.remote, pathOf(r));
          if (session.path.kind !== 'relay') {
            a.progress({
              phase: 'upgraded',
              kind: session.path.kind,
              remote: session.path.remote,
              type: r.remoteCandidate.type,
              rttMs: r.rttMs,
            });
            onDirect?.();
            return;
          }
        } catch (err) {
          log.debug({ err: (err as Error).message }, 'relay upgrade round failed');
        } finally {
          // Keep answering the peer's last probes for a moment (its nomination may need a retransmission).
          setTimeout(() => checks.close(), RELAY_UPGRADE_INTERVAL_MS).unref();
        }
        await sleep(RELAY_UPGRADE_INTERVAL_MS, ac.signal).catch(() => {});
      }
    } finally {
      session.off('close', stop);
    }
  })();
}
