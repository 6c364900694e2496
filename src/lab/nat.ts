import { NatpunchError } from '../util/errors.js';

/**
 * NAT behaviours a lab router can take (terms from RFC 4787 §4: mapping, filtering; RFC 3489 §5 names):
 *
 * | type                  | mapping (RFC 4787 §4.1)      | filtering (§5)                 | how (nftables)                            |
 * |-----------------------|------------------------------|--------------------------------|-------------------------------------------|
 * | full-cone             | endpoint-independent         | endpoint-independent           | masquerade + dynamic map ext port→int     |
 * |                       |                              |                                | endpoint, DNAT of any inbound through it  |
 * | restricted-cone       | endpoint-independent         | address-dependent              | as above, DNAT only from addresses the    |
 * |                       |                              |                                | internal endpoint has sent to (dyn. set)  |
 * | port-restricted-cone  | endpoint-independent         | address-and-port-dependent     | plain masquerade (conntrack filters)      |
 * | symmetric-sequential  | address-and-port-dependent   | address-and-port-dependent     | snat to numgen inc → port map (delta 1)   |
 * | symmetric-random      | address-and-port-dependent   | address-and-port-dependent     | masquerade fully-random                   |
 * | udp-blocked           | (TCP: as port-restricted)    | all UDP dropped / rejected     | forward-chain drop of UDP                 |
 *
 * Two additive TCP options model the NAT behaviours the sequence-number techniques (STUNT #1, NATBlaster) are about
 * (Guha & Francis, IMC 2005 §4): `dropSynAfterSyn` and `translateOutboundSynAck`, both off by default.
 */
export type NatType =
  | 'full-cone'
  | 'restricted-cone'
  | 'port-restricted-cone'
  | 'symmetric-sequential'
  | 'symmetric-random'
  | 'udp-blocked';

export const NAT_TYPES: readonly NatType[] = [
  'full-cone',
  'restricted-cone',
  'port-restricted-cone',
  'symmetric-sequential',
  'symmetric-random',
  'udp-blocked',
];

export interface NatOptions {
  type?: NatType;
  /** Hairpinning (RFC 4787 §6, REQ-9): LAN hosts reach each other through the public address. Default true. */
  hairpin?: boolean;
  /**
   * UDP mapping lifetime in seconds (RFC 4787 §4.3 REQ-5 asks for at least 120). Sets the router namespace's
   * conntrack UDP timeouts and the lifetime of the endpoint-independent map entries. Default 120.
   */
  mappingTimeoutSec?: number;
  /**
   * Port preservation (RFC 4787 §4.2.1): keep the internal source port when free. When false, cone NATs allocate
   * from PORT_PRESERVATION_OFF_RANGE instead. Symmetric types never preserve. Default true.
   */
  portPreservation?: boolean;
  /** Drop unsolicited inbound packets silently instead of answering with TCP RST / ICMP unreachable. Default false. */
  stealth?: boolean;
  /** Forward ICMP errors (RFC 5508 §4) for mapped flows to the LAN host. Default true. */
  forwardIcmpErrors?: boolean;
  /**
   * Drop an inbound TCP SYN (without ACK) that follows an outbound SYN of the same flow, before conntrack sees it
   * (so a simultaneous open never gets in and the entry stays in SYN_SENT); inbound SYN-ACKs still pass. P2P-NAT
   * and STUNT #2 fail on such a NAT; STUNT #1 and NATBlaster do not need the SYN. Default false.
   */
  dropSynAfterSyn?: boolean;
  /**
   * Translate an outbound SYN-ACK sent on a flow whose entry is still in SYN_SENT (NATBlaster's crafted packet).
   * Linux conntrack calls that packet INVALID and does not NAT it, so by default it leaves with the private source
   * and is lost; with this option the router rewrites it statelessly to the flow's public endpoint, as the NATs
   * NATBlaster was designed for do. Default false (plain Linux behaviour).
   */
  translateOutboundSynAck?: boolean;
  /**
   * Drop every inbound TCP SYN (without ACK) in the forward filter, i.e. AFTER connection tracking has seen it: a
   * firewall that refuses inbound connection requests but tracks them first. A SYN that crosses ours still moves
   * the entry to SYN_SENT2 (simultaneous open) and records the peer's sequence number, so a SYN-ACK carrying another
   * one is dropped as invalid afterwards (what defeats STUNT #1 / NATBlaster run on the same 5-tuple after P2P-NAT).
   * Inbound SYN-ACKs pass. Default false.
   */
  dropInboundSyn?: boolean;
  /**
   * Rewrite TCP sequence numbers, as ISN-randomising firewalls do (e.g. pf "modulate state"): add 2^31 to the
   * sequence number of every outbound segment and subtract it from the acknowledgment number of every inbound one.
   * nftables can set a header field only to a constant or a bitwise expression of itself, not add to it, and
   * conntrack's sequence adjustment (seqadj) is driven only by helpers and synproxy; XOR of the top bit IS addition
   * of 2^31 modulo 2^32, so `tcp sequence set tcp sequence ^ 0x80000000` is an exact constant offset. Ordinary TCP
   * works through it; the sequence-number techniques cannot (their SYN-ACKs carry the ISN the host sent, not the
   * one the far side saw). Conntrack runs in liberal window mode here so the router forwards the mismatching
   * SYN-ACK (the host then sees the wrong acknowledgment) instead of answering it with RST itself. Default false.
   */
  rewriteTcpSequence?: boolean;
}

export type ResolvedNatOptions = Required<NatOptions>;

export const NAT_DEFAULTS: ResolvedNatOptions = {
  type: 'port-restricted-cone',
  hairpin: true,
  mappingTimeoutSec: 120,
  portPreservation: true,
  stealth: false,
  forwardIcmpErrors: true,
  dropSynAfterSyn: false,
  translateOutboundSynAck: false,
  dropInboundSyn: false,
  rewriteTcpSequence: false,
};

/** The constant sequence offset of `rewriteTcpSequence` (2^31: XOR of the top bit, see there). */
export const SEQUENCE_REWRITE_OFFSET = 0x80000000;

/** Ports a cone NAT with port preservation off allocates from (above Linux's ephemeral range 32768-60999). */
export const PORT_PRESERVATION_OFF_RANGE = '61000-65000';
/** First port and size of the symmetric-sequential pool (each new flow takes the next port). */
export const SEQUENTIAL_BASE_PORT = 20000;
export const SEQUENTIAL_POOL_SIZE = 1000;

export function resolveNat(
  opts: NatOptions | NatType | undefined,
  base: ResolvedNatOptions = NAT_DEFAULTS,
): ResolvedNatOptions {
  const o: NatOptions = typeof opts === 'string' ? { type: opts } : (opts ?? {});
  const r: ResolvedNatOptions = { ...base };
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (r as unknown as Record<string, unknown>)[k] = v;
  if (!NAT_TYPES.includes(r.type)) {
    throw new NatpunchError('BAD_ARGUMENT', `unknown NAT type "${r.type}" (one of: ${NAT_TYPES.join(', ')})`);
  }
  if (!Number.isInteger(r.mappingTimeoutSec) || r.mappingTimeoutSec < 1 || r.mappingTimeoutSec > 86400) {
    throw new NatpunchError('BAD_ARGUMENT', 'mappingTimeoutSec must be an integer from 1 to 86400');
  }
  return r;
}

/** The router's nftables ruleset (table `ip npnat`, replaced atomically). WAN interface "wan", LAN bridge "lan". */
export function natRuleset(nat: ResolvedNatOptions, publicAddr: string): string {
  const t = nat.mappingTimeoutSec;
  const L: string[] = [];
  // Create-then-delete makes the replacement atomic and idempotent within one `nft -f` transaction.
  L.push('table ip npnat {}', 'delete table ip npnat', 'table ip npnat {');
  // Endpoint-independent map: (protocol, external port) -> internal endpoint. Feeds cone filtering and hairpinning.
  L.push(`  map eim { typeof meta l4proto . th dport : ip saddr . th sport; flags dynamic,timeout; timeout ${t}s; }`);
  if (nat.type === 'restricted-cone') {
    // (protocol, external port, remote address) the internal endpoint has sent to: address-dependent filtering.
    L.push(`  set adf { typeof meta l4proto . th dport . ip saddr; flags dynamic,timeout; timeout ${t}s; }`);
  }
  if (nat.type === 'symmetric-sequential') {
    const els: string[] = [];
    for (let i = 0; i < SEQUENTIAL_POOL_SIZE; i++) els.push(`${i} : ${SEQUENTIAL_BASE_PORT + i}`);
    L.push(`  map seq { typeof numgen inc mod ${SEQUENTIAL_POOL_SIZE} : th sport; elements = { ${els.join(', ')} } }`);
  }

  if (nat.dropSynAfterSyn) {
    // (remote address, remote port, our external port) of every outbound SYN, learnt after SNAT.
    L.push(`  set synout { type ipv4_addr . inet_service . inet_service; flags dynamic,timeout; timeout ${t}s; }`);
    // Priority raw (-300): before conntrack, so the entry never sees the crossing SYN (stays SYN_SENT).
    L.push('  chain rawpre { type filter hook prerouting priority raw; policy accept;');
    L.push('    iifname "wan" tcp flags & (syn | ack) == syn ip saddr . tcp sport . tcp dport @synout drop');
    L.push('  }');
  }
  if (nat.rewriteTcpSequence) {
    // Inbound: before conntrack (raw), so the tracker sees acknowledgments in the LAN host's sequence space.
    L.push('  chain seqin { type filter hook prerouting priority raw; policy accept;');
    L.push(`    iifname "wan" tcp flags & ack == ack tcp ackseq set tcp ackseq ^ ${SEQUENCE_REWRITE_OFFSET}`);
    L.push('  }');
    // Outbound: after conntrack and NAT, the last thing done to the packet.
    L.push('  chain seqout { type filter hook postrouting priority srcnat + 10; policy accept;');
    L.push(`    oifname "wan" meta l4proto tcp tcp sequence set tcp sequence ^ ${SEQUENCE_REWRITE_OFFSET}`);
    L.push('  }');
  }
  if (nat.translateOutboundSynAck) {
    // internal endpoint -> external port of its flows (the reverse of eim), for the stateless rewrite below.
    L.push(`  map ime { type ipv4_addr . inet_service : inet_service; flags dynamic,timeout; timeout ${t}s; }`);
  }

  // DNAT: only packets that start a new conntrack are seen by nat chains.
  L.push('  chain prerouting { type nat hook prerouting priority dstnat; policy accept;');
  if (nat.hairpin) {
    L.push(
      `    iifname "lan" ip daddr ${publicAddr} meta l4proto { udp, tcp } dnat ip to meta l4proto . th dport map @eim`,
    );
  }
  if (nat.type === 'full-cone') {
    L.push(
      `    iifname "wan" ip daddr ${publicAddr} meta l4proto { udp, tcp } dnat ip to meta l4proto . th dport map @eim`,
    );
  } else if (nat.type === 'restricted-cone') {
    L.push(
      `    iifname "wan" ip daddr ${publicAddr} meta l4proto . th dport . ip saddr @adf dnat ip to meta l4proto . th dport map @eim`,
    );
  }
  L.push('  }');

  L.push('  chain postrouting { type nat hook postrouting priority srcnat; policy accept;');
  if (nat.hairpin) {
    // Hairpinned packets leave with the public address as source (RFC 4787 REQ-9: the external source).
    L.push(`    iifname "lan" oifname "lan" ct status dnat snat ip to ${publicAddr}`);
  }
  switch (nat.type) {
    case 'symmetric-sequential':
      L.push(
        `    oifname "wan" meta l4proto { udp, tcp } snat ip to ${publicAddr} : numgen inc mod ${SEQUENTIAL_POOL_SIZE} map @seq`,
      );
      break;
    case 'symmetric-random':
      L.push('    oifname "wan" meta l4proto { udp, tcp } masquerade fully-random');
      break;
    default:
      if (!nat.portPreservation) {
        L.push(`    oifname "wan" meta l4proto { udp, tcp } masquerade to :${PORT_PRESERVATION_OFF_RANGE}`);
      }
  }
  L.push('    oifname "wan" masquerade');
  L.push('  }');

  // After SNAT the reply tuple holds the external port: remember ext port -> internal endpoint (and the remote
  // address for restricted-cone). Refreshed by every outbound packet (RFC 4787 REQ-6).
  L.push('  chain learn { type filter hook postrouting priority srcnat + 1; policy accept;');
  // Only LAN-initiated flows (original direction): replies of flows let in by DNAT must not add entries.
  L.push(
    '    iifname "lan" oifname "wan" ct direction original meta l4proto { udp, tcp } update @eim { meta l4proto . ct reply proto-dst timeout ' +
      `${t}s : ct original ip saddr . ct original proto-src }`,
  );
  if (nat.dropSynAfterSyn) {
    L.push(
      '    iifname "lan" oifname "wan" tcp flags & (syn | ack) == syn update @synout { ip daddr . tcp dport . tcp sport }',
    );
  }
  if (nat.translateOutboundSynAck) {
    L.push(
      `    iifname "lan" oifname "wan" ct direction original meta l4proto tcp update @ime { ct original ip saddr . ct original proto-src timeout ${t}s : ct reply proto-dst }`,
    );
    // conntrack left the SYN-ACK untracked (INVALID), so no NAT happened: rewrite the source to the flow's public
    // endpoint (nft fixes the IP and TCP checksums, pseudo-header included).
    L.push(
      `    iifname "lan" oifname "wan" ct state invalid tcp flags & (syn | ack | rst) == syn | ack tcp sport set ip saddr . tcp sport map @ime ip saddr set ${publicAddr}`,
    );
  }
  if (nat.type === 'restricted-cone') {
    L.push(
      `    iifname "lan" oifname "wan" ct direction original meta l4proto { udp, tcp } update @adf { meta l4proto . ct reply proto-dst . ip daddr timeout ${t}s }`,
    );
  }
  L.push('  }');

  L.push('  chain forward { type filter hook forward priority filter; policy accept;');
  if (nat.type === 'udp-blocked') {
    L.push(nat.stealth ? '    meta l4proto udp drop' : '    meta l4proto udp reject with icmp type admin-prohibited');
  }
  if (!nat.forwardIcmpErrors) {
    L.push('    iifname "wan" icmp type { destination-unreachable, time-exceeded, parameter-problem } drop');
  }
  if (nat.dropInboundSyn) L.push('    iifname "wan" tcp flags & (syn | ack) == syn drop');
  // Nothing from outside gets in unless conntrack or one of the DNAT rules above let it.
  L.push('    iifname "wan" ct state new ct status & dnat == 0 drop');
  L.push('  }');

  L.push('  chain input { type filter hook input priority filter; policy accept;');
  L.push('    iifname "wan" ct state established,related accept');
  if (nat.stealth) L.push('    iifname "wan" drop');
  else {
    L.push('    iifname "wan" meta l4proto tcp reject with tcp reset');
    L.push('    iifname "wan" meta l4proto udp reject with icmp type port-unreachable');
  }
  L.push('  }');
  L.push('}');
  return `${L.join('\n')}\n`;
}
