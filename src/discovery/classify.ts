/**
 * Pure classification of NAT behaviour observations (RFC 4787 terms, RFC 5780 §4 tests, RFC 3489 names).
 * No I/O here: the prober gathers observations, these functions name them.
 */
export type MappingBehaviour = 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent' | 'unknown';
export type FilteringBehaviour = MappingBehaviour;
export type ClassicNatType =
  | 'open-internet'
  | 'full-cone'
  | 'restricted-cone'
  | 'port-restricted-cone'
  | 'symmetric'
  | 'symmetric-udp-firewall'
  | 'udp-blocked'
  | 'unknown';

export interface Endpoint {
  address: string;
  port: number;
}

export function sameEndpoint(a?: Endpoint, b?: Endpoint): boolean {
  return !!a && !!b && a.address === b.address && a.port === b.port;
}

/**
 * RFC 5780 §4.3: X1 from the primary address, X2 from (alternate address, primary port), X3 from (alternate address,
 * alternate port). X1 = X2 → endpoint-independent; else X2 = X3 → address-dependent; else address-and-port-dependent.
 */
export function classifyMapping(x1?: Endpoint, x2?: Endpoint, x3?: Endpoint): MappingBehaviour {
  if (!x1 || !x2) return 'unknown';
  if (sameEndpoint(x1, x2)) return 'endpoint-independent';
  if (!x3) return 'unknown';
  return sameEndpoint(x2, x3) ? 'address-dependent' : 'address-and-port-dependent';
}

/**
 * RFC 5780 §4.4: a response to CHANGE-REQUEST(ip+port) → endpoint-independent; else a response to
 * CHANGE-REQUEST(port) → address-dependent; else address-and-port-dependent. `undefined` = the test could not run.
 */
export function classifyFiltering(changedBothAnswered?: boolean, changedPortAnswered?: boolean): FilteringBehaviour {
  if (changedBothAnswered === undefined) return 'unknown';
  if (changedBothAnswered) return 'endpoint-independent';
  if (changedPortAnswered === undefined) return 'unknown';
  return changedPortAnswered ? 'address-dependent' : 'address-and-port-dependent';
}

/** The RFC 3489 §10.1 name that matches a mapping/filtering pair. */
export function classicName(input: {
  udpBlocked: boolean;
  behindNat: boolean | undefined;
  mapping: MappingBehaviour;
  filtering: FilteringBehaviour;
}): ClassicNatType {
  if (input.udpBlocked) return 'udp-blocked';
  if (input.behindNat === false) {
    if (input.filtering === 'endpoint-independent') return 'open-internet';
    if (input.filtering === 'unknown') return 'unknown';
    return 'symmetric-udp-firewall';
  }
  if (input.mapping === 'unknown') return 'unknown';
  if (input.mapping !== 'endpoint-independent') return 'symmetric';
  switch (input.filtering) {
    case 'endpoint-independent':
      return 'full-cone';
    case 'address-dependent':
      return 'restricted-cone';
    case 'address-and-port-dependent':
      return 'port-restricted-cone';
    default:
      return 'unknown';
  }
}
