/**
 * Transport addresses a peer offers for connectivity checks (RFC 8445 §5.1.1 vocabulary, natpunch additions).
 *   host       an address of a local interface (same-LAN path)
 *   srflx      server-reflexive: the mapping a STUN / rendezvous server saw
 *   prflx      peer-reflexive: learned from a check that arrived from an address we were not told of
 *   predicted  a port we expect a symmetric NAT to allocate next (port prediction, birthday method)
 *   mapped     a mapping opened on the gateway with PCP / NAT-PMP / UPnP IGD
 *   relay      a TURN relayed address
 *   icmp       learned through ICMP hole punching
 */
export type CandidateType = 'host' | 'srflx' | 'prflx' | 'predicted' | 'mapped' | 'relay' | 'icmp';

export interface Candidate {
  type: CandidateType;
  transport: 'udp' | 'tcp';
  address: string;
  port: number;
  /** Higher is tried first and preferred when several pairs work. */
  priority: number;
}

/** RFC 8445 §5.1.2.2 type preferences; natpunch's extra types slot in between. */
export const TYPE_PREFERENCE: Record<CandidateType, number> = {
  host: 126,
  mapped: 120,
  prflx: 110,
  srflx: 100,
  icmp: 90,
  predicted: 50,
  relay: 0,
};

/** RFC 8445 §5.1.2.1: priority = 2^24 * type pref + 2^8 * local pref + (256 - component id); component is 1. */
export function candidatePriority(type: CandidateType, localPreference = 65535): number {
  return TYPE_PREFERENCE[type] * 2 ** 24 + localPreference * 2 ** 8 + 255;
}

export function candidateKey(c: Pick<Candidate, 'transport' | 'address' | 'port'>): string {
  return `${c.transport}:${c.address.includes(':') ? `[${c.address}]` : c.address}:${c.port}`;
}

/** Drops duplicates (same transport address), keeping the highest priority, and sorts best first. */
export function dedupeCandidates(list: Candidate[]): Candidate[] {
  const best = new Map<string, Candidate>();
  for (const c of list) {
    const key = candidateKey(c);
    const seen = best.get(key);
    if (!seen || seen.priority < c.priority) best.set(key, c);
  }
  return [...best.values()].sort((a, b) => b.priority - a.priority);
}
