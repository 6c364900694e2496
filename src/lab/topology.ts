import { NatpunchError } from '../util/errors.js';
import type { NatOptions, NatType } from './nat.js';

/**
 * Declarative lab topology. Every node is a network namespace. The special node "internet" is a plain router (no
 * NAT, no conntrack) that joins every node attached to it with a point-to-point link; it drops anything addressed
 * outside the lab.
 *
 * - A host `on: 'internet'` takes its public addresses from `addrs` ("A.B.C.D/len"); the internet side of its link
 *   takes the first usable address of that prefix (its default gateway).
 * - A router `on: 'internet'` needs `wan` ("A.B.C.D/len", same rule); a router `on: <router>` sits on that router's
 *   LAN and gets an address there unless `wan` is given.
 * - A router's `lan` is a prefix ("10.1.0.0/24"): the router takes its first usable address, children (hosts and
 *   routers) take .10, .11, ... in the order they are listed, unless they give `addrs` / `wan`.
 */
export interface TopologySpec {
  routers: Record<string, RouterSpec>;
  hosts: Record<string, HostSpec>;
}

export interface RouterSpec {
  on: string;
  /** WAN address with prefix length. Required when `on` is 'internet'. */
  wan?: string;
  /** LAN prefix, e.g. "10.1.0.0/24". */
  lan: string;
  /** NAT behaviour at start-up (default: port-restricted-cone, i.e. plain Linux masquerade). */
  nat?: NatOptions | NatType;
}

export interface HostSpec {
  on: string;
  /** Addresses with prefix length; the first is the primary one. Required for hosts on the internet. */
  addrs?: string[];
}

/** Public prefixes the lab uses (RFC 5737 documentation ranges) and the shared address space (RFC 6598). */
export const LAB_PUBLIC_PREFIXES = ['192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24'] as const;

/**
 * The default topology (names are stable; tests and docs rely on them):
 *
 *   server (192.0.2.10 + 192.0.2.11) ── internet ── natA (198.51.100.10) ── LAN 10.1.0.0/24: a 10.1.0.10, a2 10.1.0.11
 *                                          │  └───── natB (203.0.113.10)  ── LAN 10.2.0.0/24: b 10.2.0.10
 *                                          └─ (doubleNat) cgn (192.0.2.130) ── 100.64.0.0/10: natC 100.64.0.10
 *                                                                               └─ LAN 10.3.0.0/24: c 10.3.0.10
 */
export function defaultTopology(opts: { doubleNat?: boolean } = {}): TopologySpec {
  const topo: TopologySpec = {
    routers: {
      natA: { on: 'internet', wan: '198.51.100.10/24', lan: '10.1.0.0/24' },
      natB: { on: 'internet', wan: '203.0.113.10/24', lan: '10.2.0.0/24' },
    },
    hosts: {
      server: { on: 'internet', addrs: ['192.0.2.10/25', '192.0.2.11/25'] },
      a: { on: 'natA' },
      a2: { on: 'natA' },
      b: { on: 'natB' },
    },
  };
  if (opts.doubleNat) {
    topo.routers.cgn = { on: 'internet', wan: '192.0.2.130/25', lan: '100.64.0.0/10' };
    topo.routers.natC = { on: 'cgn', lan: '10.3.0.0/24' };
    topo.hosts.c = { on: 'natC' };
  }
  return topo;
}

/** One veth link between a node and the node it hangs from. Named after the lower node. */
export interface ResolvedLink {
  name: string;
  /** lower end (the node named `name`) */
  child: string;
  childIf: string;
  /** upper end: 'internet' or a router */
  parent: string;
  parentIf: string;
}

export interface ResolvedNode {
  name: string;
  kind: 'internet' | 'router' | 'host';
  /** addresses without prefix length, primary first (for a router: its WAN address) */
  addrs: string[];
  /** addresses with prefix length as configured on the uplink interface */
  cidrs: string[];
  /** default gateway (none for the internet) */
  gateway?: string;
  /** routers only */
  lanCidr?: string;
  lanAddr?: string;
  nat?: NatOptions | NatType;
}

export interface ResolvedTopology {
  nodes: Record<string, ResolvedNode>;
  links: Record<string, ResolvedLink>;
  /** order in which nodes must be configured (parents first) */
  order: string[];
  /** prefixes routed in the internet (every other destination is dropped there) */
  publicPrefixes: string[];
  /** addresses of the internet namespace, one per attached node (the default gateway of that node) */
  internetAddrs: Array<{ ifname: string; cidr: string }>;
}

const NAME_RE = /^[A-Za-z][A-Za-z0-9]{0,11}$/;

export function ipToInt(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new NatpunchError('BAD_ARGUMENT', `invalid IPv4 address "${ip}"`);
  }
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseCidr(cidr: string): { addr: string; len: number; network: number; mask: number } {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(cidr);
  if (!m || Number(m[2]) > 30 || Number(m[2]) < 8) {
    throw new NatpunchError('BAD_ARGUMENT', `invalid prefix "${cidr}" (expected A.B.C.D/8..30)`);
  }
  const len = Number(m[2]);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return { addr: m[1]!, len, network: (ipToInt(m[1]!) & mask) >>> 0, mask };
}

function prefixOf(cidr: string): string {
  const p = parseCidr(cidr);
  return `${intToIp(p.network)}/${p.len}`;
}

/** Checks the spec and assigns addresses, interface names and the configuration order. */
export function resolveTopology(spec: TopologySpec): ResolvedTopology {
  const nodes: Record<string, ResolvedNode> = {
    internet: { name: 'internet', kind: 'internet', addrs: [], cidrs: [] },
  };
  const links: Record<string, ResolvedLink> = {};
  const all = new Map<string, { kind: 'router' | 'host'; on: string }>();
  for (const [name, r] of Object.entries(spec.routers)) all.set(name, { kind: 'router', on: r.on });
  for (const [name, h] of Object.entries(spec.hosts)) {
    if (all.has(name)) throw new NatpunchError('BAD_ARGUMENT', `lab node "${name}" is defined twice`);
    all.set(name, { kind: 'host', on: h.on });
  }
  for (const [name, n] of all) {
    if (!NAME_RE.test(name) || name === 'internet') {
      throw new NatpunchError('BAD_ARGUMENT', `lab node name "${name}" must be 1-12 letters/digits, not "internet"`);
    }
    if (n.on !== 'internet' && all.get(n.on)?.kind !== 'router') {
      throw new NatpunchError('BAD_ARGUMENT', `lab node "${name}" is on "${n.on}", which is not a router`);
    }
  }
  // parents first
  const order: string[] = ['internet'];
  const placed = new Set(['internet']);
  while (order.length < all.size + 1) {
    let progress = false;
    for (const [name, n] of all) {
      if (!placed.has(name) && placed.has(n.on)) {
        order.push(name);
        placed.add(name);
        progress = true;
      }
    }
    if (!progress) throw new NatpunchError('BAD_ARGUMENT', 'lab topology has a cycle');
  }

  const internetAddrs: Array<{ ifname: string; cidr: string }> = [];
  const publicPrefixes = new Set<string>();
  const usedInternetPrefixes = new Set<string>();
  const nextChild = new Map<string, number>();
  let internetIf = 0;
  const childIfCount = new Map<string, number>();

  for (const name of order.slice(1)) {
    const n = all.get(name)!;
    const rspec = n.kind === 'router' ? spec.routers[name]! : undefined;
    const hspec = n.kind === 'host' ? spec.hosts[name]! : undefined;
    let cidrs: string[];
    let gateway: string;
    let parentIf: string;
    if (n.on === 'internet') {
      cidrs = rspec ? (rspec.wan ? [rspec.wan] : []) : (hspec!.addrs ?? []);
      if (cidrs.length === 0) {
        throw new NatpunchError('BAD_ARGUMENT', `lab node "${name}" is on the internet and needs an address`);
      }
      const p = parseCidr(cidrs[0]!);
      const prefix = prefixOf(cidrs[0]!);
      if (usedInternetPrefixes.has(prefix)) {
        throw new NatpunchError('BAD_ARGUMENT', `two lab nodes on the internet share the prefix ${prefix}`);
      }
      usedInternetPrefixes.add(prefix);
      gateway = intToIp(p.network + 1);
      parentIf = `i${internetIf++}`;
      internetAddrs.push({ ifname: parentIf, cidr: `${gateway}/${p.len}` });
      for (const c of cidrs) publicPrefixes.add(prefixOf(c));
    } else {
      const parent = nodes[n.on]!;
      const lan = parseCidr(parent.lanCidr!);
      const given = rspec?.wan ? [rspec.wan] : hspec?.addrs;
      if (given && given.length > 0) {
        cidrs = given;
      } else {
        const idx = nextChild.get(n.on) ?? 10;
        nextChild.set(n.on, idx + 1);
        cidrs = [`${intToIp(lan.network + idx)}/${lan.len}`];
      }
      gateway = parent.lanAddr!;
      const k = childIfCount.get(n.on) ?? 0;
      childIfCount.set(n.on, k + 1);
      parentIf = `p${k}`;
    }
    const node: ResolvedNode = {
      name,
      kind: n.kind,
      addrs: cidrs.map((c) => parseCidr(c).addr),
      cidrs,
      gateway,
    };
    if (rspec) {
      const lan = parseCidr(rspec.lan);
      node.lanCidr = `${intToIp(lan.network)}/${lan.len}`;
      node.lanAddr = intToIp(lan.network + 1);
      if (rspec.nat) node.nat = rspec.nat;
    }
    nodes[name] = node;
    links[name] = { name, child: name, childIf: n.kind === 'router' ? 'wan' : 'eth0', parent: n.on, parentIf };
  }
  return { nodes, links, order, publicPrefixes: [...publicPrefixes], internetAddrs };
}
