/**
 * TCP port prediction for NATs that allocate sequentially (RFC 4787 §4.2.1 "port overloading" aside, many NATs
 * hand each new mapping the next port): the peer behind such a NAT measures its allocation with a few TCP
 * connections to the rendezvous server (the last one is the connection whose port P it punches from) and offers
 * the ports its NAT will most likely give its next flows as `predicted` candidates. The analysis is the one the UDP
 * side uses (src/discovery/allocation.ts).
 */
import { analyseAllocation, type AllocationReport } from '../discovery/allocation.js';
import type { Candidate } from './candidate.js';
import { predictedCandidates } from './predict.js';

/** How many next ports to offer: our punch opens one flow per candidate of the peer, plus retries. */
export const DEFAULT_PREDICTED_PORTS = 6;

export interface TcpAllocationSample {
  /** Local port of the connection. */
  local: number;
  /** External port the server saw. */
  external: number;
}

/**
 * Predicted TCP candidates after the last observed mapping `last` (address and port the server saw for our most
 * recent connection), from the samples of mappings made in a row (oldest first). Empty unless the NAT allocates
 * sequentially: a preserving or endpoint-independent NAT needs no prediction, a random one defeats it.
 */
export function predictTcpCandidates(
  samples: TcpAllocationSample[],
  last: { address: string; port: number },
  count: number = DEFAULT_PREDICTED_PORTS,
): { report: AllocationReport; candidates: Candidate[] } {
  const report = analyseAllocation(samples);
  const candidates: Candidate[] =
    report.pattern === 'sequential' && report.delta !== undefined ? predictedCandidates(last, report.delta, 'tcp', count) : [];
  return { report, candidates };
}
