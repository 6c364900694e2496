import { NatpunchError } from '../util/errors.js';
import type { ResolvedTopology } from './topology.js';

/**
 * Link conditions. Every value applies to EACH direction of the link: `delayMs: 20` adds 20 ms one way, so the
 * round trip over that link grows by 40 ms.
 */
export interface LinkShape {
  /** one-way delay per direction, milliseconds (userspace NFQUEUE delayer) */
  delayMs?: number;
  /** uniform jitter ± this many milliseconds around delayMs (packets may be reordered) */
  jitterMs?: number;
  /** random loss per direction, percent (nft `numgen random`) */
  lossPct?: number;
  /** bandwidth limit per direction, Mbit/s (tc tbf); 0 = unlimited */
  rateMbit?: number;
}

export type ResolvedLinkShape = Required<LinkShape>;
export const NO_SHAPE: ResolvedLinkShape = { delayMs: 0, jitterMs: 0, lossPct: 0, rateMbit: 0 };
/** tbf parameters: a burst of ~10 full-size packets and 200 ms of queue keep short tests smooth. */
export const TBF_BURST = '15kb';
export const TBF_LATENCY = '200ms';

export function resolveShape(s: LinkShape, base: ResolvedLinkShape = NO_SHAPE): ResolvedLinkShape {
  const r: ResolvedLinkShape = { ...base };
  for (const [k, v] of Object.entries(s)) if (v !== undefined) (r as unknown as Record<string, number>)[k] = v;
  const check = (name: keyof LinkShape, max: number) => {
    const v = r[name];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > max) {
      throw new NatpunchError('BAD_ARGUMENT', `${name} must be a number from 0 to ${max}`);
    }
  };
  check('delayMs', 60_000);
  check('jitterMs', 60_000);
  check('lossPct', 100);
  check('rateMbit', 100_000);
  return r;
}

export function isShaped(s: ResolvedLinkShape): boolean {
  return s.delayMs > 0 || s.jitterMs > 0 || s.lossPct > 0 || s.rateMbit > 0;
}

/** One place where one direction of a link is received (ingress: delay and loss) or sent (egress: rate). */
interface End {
  link: string;
  ns: string; // node name
  /** ingress match: interface, plus the sender's MAC when the interface is a router's LAN bridge */
  iif: string;
  mac?: string;
  /** egress device for the rate limit (the opposite direction's sender) */
  dev: string;
  queue: number;
}

/** Deterministic MAC of a node's uplink interface (locally administered). */
export function uplinkMac(index: number): string {
  return `02:6e:70:00:${((index >> 8) & 255).toString(16).padStart(2, '0')}:${(index & 255).toString(16).padStart(2, '0')}`;
}

/**
 * Direction parent→child is received on the child's uplink; child→parent on the parent's interface (internet) or on
 * the parent router's LAN bridge filtered by the child's MAC (IP hooks do not see bridge ports). Everything runs at
 * the prerouting hook before conntrack (priority raw), so delayed packets never hold unconfirmed conntrack entries.
 * Traffic between two hosts of the same LAN is bridged and is shaped only on the receiver's ingress.
 */
function ends(topo: ResolvedTopology, link: string): End[] {
  const l = topo.links[link];
  if (!l)
    throw new NatpunchError(
      'BAD_ARGUMENT',
      `no lab link "${link}" (links are named after their lower node: ${Object.keys(topo.links).join(', ')})`,
    );
  const index = Object.keys(topo.links).indexOf(link);
  const childEnd: End = { link, ns: l.child, iif: l.childIf, dev: l.parentIf, queue: 2 * index };
  const parentEnd: End =
    l.parent === 'internet'
      ? { link, ns: 'internet', iif: l.parentIf, dev: l.childIf, queue: 2 * index + 1 }
      : { link, ns: l.parent, iif: 'lan', mac: uplinkMac(index), dev: l.childIf, queue: 2 * index + 1 };
  return [childEnd, parentEnd];
}

export interface NsShapePlan {
  /** shell script run in the namespace: loss rules, NFQUEUE rules, tc qdiscs */
  script: string;
  /** delayer arguments (QUEUE:DELAY_US:JITTER_US); empty = no delayer needed */
  delayerArgs: string[];
}

/** The full shaping state of one namespace given every link's shape (rules are rewritten from scratch). */
export function planNamespace(
  topo: ResolvedTopology,
  shapes: Record<string, ResolvedLinkShape>,
  node: string,
): NsShapePlan {
  const lossRules: string[] = [];
  const queueRules: string[] = [];
  const tc: string[] = [];
  const delayerArgs: string[] = [];
  const devs = new Set<string>();
  for (const link of Object.keys(topo.links)) {
    const s = shapes[link] ?? NO_SHAPE;
    for (const e of ends(topo, link)) {
      // rate: the egress device sits in the OTHER namespace of this end; collect it where it lives.
      const other = e.ns === topo.links[link]!.child ? topo.links[link]!.parent : topo.links[link]!.child;
      if (other === node) {
        devs.add(e.dev);
        if (s.rateMbit > 0) {
          tc.push(
            `tc qdisc replace dev ${e.dev} root tbf rate ${s.rateMbit}mbit burst ${TBF_BURST} latency ${TBF_LATENCY}`,
          );
        }
      }
      if (e.ns !== node) continue;
      const match = `iifname "${e.iif}"${e.mac ? ` ether saddr ${e.mac}` : ''}`;
      if (s.lossPct > 0) {
        const share = Math.round(s.lossPct * 100);
        lossRules.push(
          share >= 10000 ? `    ${match} counter drop` : `    ${match} numgen random mod 10000 < ${share} counter drop`,
        );
      }
      if (s.delayMs > 0 || s.jitterMs > 0) {
        const mac = e.mac ? ` -m mac --mac-source ${e.mac}` : '';
        queueRules.push(
          `iptables -w -t raw -A PREROUTING -i ${e.iif}${mac} -j NFQUEUE --queue-num ${e.queue} --queue-bypass`,
        );
        delayerArgs.push(`${e.queue}:${Math.round(s.delayMs * 1000)}:${Math.round(s.jitterMs * 1000)}`);
      }
    }
  }
  const lines: string[] = [];
  lines.push(`nft -f - <<'EOF'
table ip npshape {}
delete table ip npshape
table ip npshape {
  chain pre { type filter hook prerouting priority -310; policy accept;
${lossRules.join('\n')}
  }
}
EOF`);
  // iptables-nft: NFQUEUE lives in the raw table (priority -300, before conntrack at -200).
  lines.push('iptables -w -t raw -F PREROUTING 2>/dev/null || true');
  lines.push(...queueRules);
  for (const dev of devs) lines.push(`tc qdisc del dev ${dev} root 2>/dev/null || true`);
  lines.push(...tc);
  return { script: lines.join('\n'), delayerArgs };
}
