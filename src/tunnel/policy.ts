import { isIP } from 'node:net';
import { lookup } from 'node:dns/promises';
import { NatpunchError } from '../util/errors.js';
import { addressToBytes, cidrContains, parseCidr, type Cidr } from '../wire/ip.js';

/**
 * Which destinations the exit side of a tunnel may connect to on behalf of a peer (SOCKS CONNECT). Default: none.
 * Rules, as given to `natpunch expose --allow-dest`:
 *   CIDR:PORTS      10.2.0.0/24:80,443   192.168.1.5:22   [fd00::/8]:1-1024   0.0.0.0/0:*
 *   HOSTNAME:PORTS  db.internal:5432     (the exact name a client asks for; it is then resolved on this side)
 * PORTS is `*`, a port, a range `A-B`, or a comma-separated list of those.
 * A domain name not named by a rule is resolved here and its address checked against the CIDR rules; the
 * connection then goes to that checked address (so a second lookup cannot swap it).
 */
interface PortRange {
  from: number;
  to: number;
}

interface Rule {
  text: string;
  hostname?: string;
  cidr?: Cidr;
  ports: PortRange[];
}

export type Resolver = (host: string) => Promise<string>;

export interface DestinationDecision {
  allowed: boolean;
  /** the address to connect to (resolved when the request named a host) */
  address?: string;
  rule?: string;
  /** set when resolving the name failed */
  error?: Error;
}

/** Name resolution on the exit is bounded (getaddrinfo alone may retry for much longer). */
export const DEFAULT_RESOLVE_TIMEOUT_MS = 10_000;

const defaultResolver: Resolver = async (host) => (await lookup(host, { verbatim: true })).address;

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new NatpunchError('TIMEOUT', `${what}: no answer within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function parsePorts(text: string, spec: string): PortRange[] {
  if (text === '*') return [{ from: 1, to: 65535 }];
  return text.split(',').map((part) => {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part.trim());
    const from = m ? Number(m[1]) : NaN;
    const to = m?.[2] ? Number(m[2]) : from;
    if (!m || from < 1 || to > 65535 || from > to)
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `bad port list "${text}" in --allow-dest ${spec} (use *, 22, 8000-8080 or 22,80,443)`,
      );
    return { from, to };
  });
}

/** IPv4-mapped IPv6 (::ffff:a.b.c.d) is checked as the IPv4 address it is. */
function normalize(address: string): string | null {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const a = m ? m[1]! : address;
  return isIP(a) ? a : null;
}

export class DestinationPolicy {
  readonly rules: readonly Rule[];
  #resolve: Resolver;

  constructor(rules: Rule[] = [], resolve: Resolver = defaultResolver) {
    this.rules = rules;
    this.#resolve = resolve;
  }

  /** Parses `--allow-dest` rules; throws BAD_ARGUMENT naming the bad one. */
  static parse(specs: readonly string[], resolve?: Resolver): DestinationPolicy {
    const rules = specs
      .flatMap((s) => s.split(/\s+/))
      .filter(Boolean)
      .map((spec): Rule => {
        const v6 = /^\[([^\]]+)\]:(.+)$/.exec(spec);
        const cut = spec.lastIndexOf(':');
        if (!v6 && cut <= 0)
          throw new NatpunchError(
            'BAD_ARGUMENT',
            `--allow-dest ${spec}: expected CIDR:PORTS or HOST:PORTS (e.g. 10.2.0.0/24:80,443)`,
          );
        const host = v6 ? v6[1]! : spec.slice(0, cut);
        const ports = parsePorts(v6 ? v6[2]! : spec.slice(cut + 1), spec);
        const [addr, prefixText] = host.split('/') as [string, string | undefined];
        const address = normalize(addr);
        if (address) {
          if (prefixText !== undefined && !/^\d+$/.test(prefixText))
            throw new NatpunchError('BAD_ARGUMENT', `--allow-dest ${spec}: bad prefix length`);
          let cidr: Cidr;
          try {
            cidr = parseCidr(prefixText === undefined ? address : `${address}/${prefixText}`);
          } catch {
            throw new NatpunchError('BAD_ARGUMENT', `--allow-dest ${spec}: bad prefix length`);
          }
          return { text: spec, cidr, ports };
        }
        if (prefixText !== undefined || !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$/.test(host)) {
          throw new NatpunchError(
            'BAD_ARGUMENT',
            `--allow-dest ${spec}: "${host}" is neither an address, a CIDR nor a host name`,
          );
        }
        return { text: spec, hostname: host.toLowerCase().replace(/\.$/, ''), ports };
      });
    return new DestinationPolicy(rules, resolve);
  }

  get empty(): boolean {
    return this.rules.length === 0;
  }

  #matchAddress(address: string, port: number): Rule | undefined {
    const n = normalize(address);
    const bytes = n ? addressToBytes(n) : null;
    if (!bytes) return undefined;
    return this.rules.find(
      (r) => r.cidr && cidrContains(r.cidr, bytes) && r.ports.some((p) => port >= p.from && port <= p.to),
    );
  }

  /** Decides whether `host:port` may be reached; resolves names (bounded by the resolver) when needed. */
  async check(host: string, port: number): Promise<DestinationDecision> {
    if (this.rules.length === 0) return { allowed: false };
    if (isIP(host)) {
      const r = this.#matchAddress(host, port);
      return r ? { allowed: true, address: host, rule: r.text } : { allowed: false, address: host };
    }
    const name = host.toLowerCase().replace(/\.$/, '');
    const byName = this.rules.find((r) => r.hostname === name && r.ports.some((p) => port >= p.from && port <= p.to));
    const hasCidr = this.rules.some((r) => r.cidr);
    if (!byName && !hasCidr) return { allowed: false };
    let address: string;
    try {
      address = await bounded(this.#resolve(host), DEFAULT_RESOLVE_TIMEOUT_MS, `resolving ${host}`);
    } catch (err) {
      return { allowed: false, error: err as Error };
    }
    if (byName) return { allowed: true, address, rule: byName.text };
    const r = this.#matchAddress(address, port);
    return r ? { allowed: true, address, rule: r.text } : { allowed: false, address };
  }
}
