/**
 * Carrying a hard-NAT advert (predict.ts HardNatAdvert) through the rendezvous, backward-compatibly: as candidates,
 * which REGISTER / CONNECT already carry, sign, and the server forwards in CONNECT_NOTIFY (src/wire/rendezvous.ts).
 *
 * - One marker: a 'predicted' UDP candidate at our server-reflexive address (so peers that do not know the marker
 *   just probe our srflx) whose priority encodes the advert: 2^24 * 50 ('predicted' type preference, RFC 8445
 *   §5.1.2.1) + 2^16 * 0x4E ('N') + 2^8 * kind code + (delta + 128).
 * - The predicted window (sequential NATs): one 'predicted' UDP candidate per port, likeliest first by priority.
 *
 * A random NAT advertises no ports: the marker alone says "random".
 */
import { isIP } from 'node:net';
import { lookup } from 'node:dns/promises';
import { type Candidate, candidatePriority, TYPE_PREFERENCE } from './candidate.js';
import { advertiseHardNat, type HardNatAdvert, type HardNatKind, type StunServerAddress } from './predict.js';
import type { DoubleRandomBudget } from './birthday.js';
import type { UdxEndpoint } from '../net/udx.js';
import { NatpunchError } from '../util/errors.js';
import { timeoutSignal } from '../util/abort.js';

/** Gathering: NAT measurement + re-observation (about 0.3–0.5 s in the lab) gives up after this. */
export const DEFAULT_HARDNAT_MEASURE_TIMEOUT_MS = 5_000;
const MARKER_TAG = 0x4e;
const KINDS: readonly HardNatKind[] = ['cone', 'sequential', 'random', 'unknown'];

/** connect() / listen() `hardNat` option when given as an object. */
export interface HardNatOptions {
  /** Opt-in random ↔ random (and sequential ↔ random) budget; without it such pairs fail at once (PUNCH_FAILED). */
  budget?: DoubleRandomBudget;
  /** Two STUN servers to measure against (default: the rendezvous' host, its port and port + 1). */
  stun?: [StunServerAddress, StunServerAddress];
  /** Bound on the measurement at gathering time (default DEFAULT_HARDNAT_MEASURE_TIMEOUT_MS). */
  measureTimeoutMs?: number;
}

export function normalizeHardNat(o: boolean | HardNatOptions | undefined): HardNatOptions | null {
  if (!o) return null;
  return o === true ? {} : o;
}

function markerPriority(a: HardNatAdvert): number {
  const delta = a.delta === null ? 0 : Math.max(-127, Math.min(127, a.delta)) + 128;
  return TYPE_PREFERENCE.predicted * 2 ** 24 + MARKER_TAG * 2 ** 16 + (KINDS.indexOf(a.kind) + 1) * 2 ** 8 + delta;
}

function isMarker(c: Candidate): boolean {
  if (c.type !== 'predicted' || c.transport !== 'udp') return false;
  const p = c.priority;
  const code = Math.floor(p / 2 ** 8) % 256;
  return (
    Math.floor(p / 2 ** 24) === TYPE_PREFERENCE.predicted &&
    Math.floor(p / 2 ** 16) % 256 === MARKER_TAG &&
    code >= 1 &&
    code <= KINDS.length
  );
}

/** The advert as candidates; `srflx` is our mapping toward the rendezvous (the marker's transport address). */
export function advertToCandidates(a: HardNatAdvert, srflx: { address: string; port: number }): Candidate[] {
  const out: Candidate[] = [
    { type: 'predicted', transport: 'udp', address: srflx.address, port: srflx.port, priority: markerPriority(a) },
  ];
  a.ports.forEach((port, i) => {
    if (port === srflx.port && a.address === srflx.address) return;
    out.push({
      type: 'predicted',
      transport: 'udp',
      address: a.address,
      port,
      priority: candidatePriority('predicted', 65535 - i),
    });
  });
  return out;
}

/**
 * The peer's advert, if its candidates carry one, and the candidates for the normal checks: the marker becomes the
 * srflx it stands for, the predicted window is left out (it is for the hard punch only).
 */
export function advertFromCandidates(list: readonly Candidate[]): { advert: HardNatAdvert | null; rest: Candidate[] } {
  const marker = list.find(isMarker);
  if (!marker) return { advert: null, rest: [...list] };
  const code = Math.floor(marker.priority / 2 ** 8) % 256;
  const kind = KINDS[code - 1]!;
  const d = marker.priority % 256;
  const window = list
    .filter(
      (c) =>
        c !== marker && c.type === 'predicted' && c.transport === 'udp' && c.address === marker.address && !isMarker(c),
    )
    .sort((x, y) => y.priority - x.priority)
    .map((c) => c.port);
  const ports = kind === 'random' ? [] : kind === 'sequential' ? window : [marker.port];
  const advert: HardNatAdvert = {
    kind,
    delta: kind === 'sequential' && d !== 0 ? d - 128 : null,
    address: marker.address,
    ports,
  };
  const rest = list
    .filter((c) => !(c.type === 'predicted' && c.transport === 'udp'))
    .concat([
      {
        type: 'srflx',
        transport: 'udp',
        address: marker.address,
        port: marker.port,
        priority: candidatePriority('srflx'),
      },
    ]);
  return { advert, rest };
}

/** Whether a hard punch is needed: either side is not a cone (an 'unknown' side is treated as one). */
export function needsHardPunch(local: HardNatAdvert, peer: HardNatAdvert): boolean {
  const hard = (k: HardNatKind) => k === 'sequential' || k === 'random';
  return hard(local.kind) || hard(peer.kind);
}

/** STUN servers for the measurement: the option's, else the rendezvous' host at its port and port + 1. */
async function servers(
  opts: HardNatOptions,
  rendezvous: { host: string; port: number } | null,
): Promise<[StunServerAddress, StunServerAddress]> {
  if (opts.stun) return opts.stun;
  if (!rendezvous) throw new NatpunchError('BAD_ARGUMENT', 'hardNat needs a rendezvous host, or hardNat.stun');
  const address = isIP(rendezvous.host) ? rendezvous.host : (await lookup(rendezvous.host)).address;
  return [
    { address, port: rendezvous.port },
    { address, port: rendezvous.port + 1 },
  ];
}

/**
 * Gathering: measures our NAT on `endpoint` (bounded) and returns the advert with its candidates. The first
 * observation is toward the rendezvous' own port, so the marker's address is the srflx the server will see.
 */
export async function gatherHardNat(
  endpoint: UdxEndpoint,
  opts: HardNatOptions,
  rendezvous: { host: string; port: number } | null,
  signal?: AbortSignal,
  mappedToFirst = false,
): Promise<{ advert: HardNatAdvert; candidates: Candidate[] }> {
  const { signal: s, dispose } = timeoutSignal(opts.measureTimeoutMs ?? DEFAULT_HARDNAT_MEASURE_TIMEOUT_MS, signal);
  try {
    const bind = endpoint.address().address;
    const { measurement, ...advert } = await advertiseHardNat(endpoint, await servers(opts, rendezvous), {
      signal: s,
      ...(bind && bind !== '0.0.0.0' && bind !== '::' ? { bindAddress: bind } : {}),
      // The rendezvous is the first STUN server by default: a request to it already made the mapping.
      ...(mappedToFirst && !opts.stun ? { mappedToFirst: true } : {}),
    });
    return { advert, candidates: advertToCandidates(advert, measurement.first) };
  } finally {
    dispose();
  }
}
