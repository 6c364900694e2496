import { networkInterfaces } from 'node:os';
import type { CredentialStore } from './auth.js';
import { cidrContains, embeddedIpv4, parseCidr, parseIp, type Cidr } from './ip.js';

/**
 * Which peer addresses a TURN allocation may relay to (RFC 8656 §21.3: a TURN server that relays to anything is an
 * open door into the networks it sits in — loopback services, cloud metadata at 169.254.169.254, the LAN).
 *
 * Safe by default: the ranges below and the server's own addresses are denied unless the operator allows them.
 * Decision order for a peer address:
 *   1. in a `deny` block (operator)              → denied
 *   2. in an `allow` block (operator)            → allowed (this is how tests relay to 127.0.0.1)
 *   3. one of the server's own addresses         → denied
 *   4. in a default-denied block (also when an IPv6 address embeds such an IPv4 one: ::ffff:10.0.0.1,
 *      64:ff9b::7f00:1, 2002:0a00:0001::)        → denied
 *   5. otherwise                                 → allowed
 */
export const DEFAULT_DENIED_PEERS: readonly string[] = [
  '0.0.0.0/8', // "this network", unspecified (RFC 6890)
  '10.0.0.0/8', // RFC 1918
  '100.64.0.0/10', // carrier-grade NAT shared space (RFC 6598)
  '127.0.0.0/8', // loopback
  '169.254.0.0/16', // link-local, cloud metadata services
  '172.16.0.0/12', // RFC 1918
  '192.0.0.0/24', // IETF protocol assignments (RFC 6890)
  '192.168.0.0/16', // RFC 1918
  '198.18.0.0/15', // benchmarking (RFC 2544), often internal
  '224.0.0.0/4', // multicast
  '240.0.0.0/4', // reserved, and 255.255.255.255 broadcast
  '::/128', // unspecified
  '::1/128', // loopback
  'fc00::/7', // unique local (RFC 4193)
  'fe80::/10', // link-local
  'fec0::/10', // deprecated site-local
  'ff00::/8', // multicast
];

export interface PeerPolicyOptions {
  /** CIDR blocks (or bare addresses) to allow even though they are denied by default. */
  allow?: readonly string[];
  /** CIDR blocks (or bare addresses) always denied. */
  deny?: readonly string[];
  /** The server's own addresses (relay and listening addresses); the machine's interfaces are added by default. */
  ownAddresses?: readonly string[];
  /** Add every address of the machine's interfaces to the own addresses (default true). */
  includeInterfaces?: boolean;
}

export type PeerDecision = 'allowed' | 'denied-by-config' | 'denied-own-address' | 'denied-by-default' | 'invalid';

/** The permission decision a TURN server makes per XOR-PEER-ADDRESS. An embedding application may replace it. */
export interface PeerPolicy {
  check(address: string): PeerDecision;
}

export class DefaultPeerPolicy implements PeerPolicy {
  readonly #allow: Cidr[];
  readonly #deny: Cidr[];
  readonly #defaults: Cidr[];
  readonly #own: Uint8Array[] = [];

  constructor(options: PeerPolicyOptions = {}) {
    this.#allow = (options.allow ?? []).map(parseCidr);
    this.#deny = (options.deny ?? []).map(parseCidr);
    this.#defaults = DEFAULT_DENIED_PEERS.map(parseCidr);
    const own = [...(options.ownAddresses ?? [])];
    if (options.includeInterfaces ?? true) {
      for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) own.push(i.address);
    }
    for (const a of own) {
      const b = parseIp(a);
      if (b && !this.#own.some((o) => sameBytes(o, b))) this.#own.push(b);
    }
  }

  check(address: string): PeerDecision {
    const bytes = parseIp(address);
    if (!bytes) return 'invalid';
    const v4 = embeddedIpv4(bytes);
    const forms = v4 ? [bytes, v4] : [bytes];
    if (forms.some((f) => this.#deny.some((c) => cidrContains(c, f)))) return 'denied-by-config';
    if (forms.some((f) => this.#allow.some((c) => cidrContains(c, f)))) return 'allowed';
    if (forms.some((f) => this.#own.some((o) => sameBytes(o, f)))) return 'denied-own-address';
    if (forms.some((f) => this.#defaults.some((c) => cidrContains(c, f)))) return 'denied-by-default';
    return 'allowed';
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Scoped credentials (peer-relay mode, relay/peer-relay.ts): an allocation made with them may only reach the peers
 * introduced to the key they were issued to. The TURN server asks this on top of the PeerPolicy (an operator's deny
 * always wins).
 */
export interface RelayScope {
  /** Long-term keys for scoped usernames (RFC 8489 §9.2.2); null for usernames that are not scoped ones. */
  readonly credentials: CredentialStore;
  /** The key (hex) a scoped username was issued to, or null when the username is not a scoped one. */
  keyOf(username: string): string | null;
  /** `ip` is an address the rendezvous saw a peer introduced to `key` send from (any port: its NAT picks them). */
  allowsAddress(key: string, ip: string): boolean;
  /** `ip:port` is exactly where the rendezvous saw a peer introduced to `key` send from. */
  allowsEndpoint(key: string, ip: string, port: number): boolean;
  /** `other` (key hex) was introduced to `key` and the introduction has not expired. */
  introduced(key: string, other: string): boolean;
  /** `key` has at least one live introduction. */
  hasIntroductions(key: string): boolean;
}
