/**
 * STUN transport addresses. The IP text <-> bytes helpers live in src/wire/ip.ts and are re-exported here so the
 * STUN codec's importers keep one import.
 */
import type { AddressFamily } from '../ip.js';

export {
  type AddressFamily,
  addressToBytes,
  familyOf,
  formatIPv4,
  formatIPv6,
  normalizeAddress,
  parseIPv4,
  parseIPv6,
} from '../ip.js';

export interface TransportAddress {
  family: AddressFamily;
  address: string;
  port: number;
}

/** RFC 8489 §14.1: address family values in (XOR-)MAPPED-ADDRESS. */
export const FAMILY_IPV4 = 0x01;
export const FAMILY_IPV6 = 0x02;
