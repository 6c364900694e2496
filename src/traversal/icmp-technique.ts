/**
 * Technique 'icmp': ICMP hole punching (pwnat; icmp.ts has the packets and why they work) to a `listen --icmp` peer
 * whose NAT's public address the caller knows. It is the one technique that needs no rendezvous — no introduction,
 * no candidates — so the planner runs it only when the rendezvous cannot be reached and the caller allows it (it
 * gave the address; the forged Time Exceeded needs a raw socket: root or CAP_NET_RAW). See planner.ts.
 *
 * It punches from the attempt's socket (ctx.endpoint), which must be bound on the agreed port (default 2222): the
 * peer sends its checks there. The session that wins owns that socket (no-rendezvous.ts binds it and hands it over).
 */
import { icmpSessionOn, DEFAULT_ICMP_PUNCH_PORT } from './icmp.js';
import type { PathResult, Technique } from './technique.js';

export interface IcmpTechniqueOptions {
  /** The peer's public IPv4 address (its NAT's). */
  server: string;
  /** The agreed UDP port (ctx.endpoint is bound on it). Default 2222. */
  port?: number;
  probeAddress?: string;
  /** Outer source of the forged Time Exceeded (icmp.ts IcmpKnockerOptions.source). */
  source?: string;
  /** Knocking and checks, in all. Default DEFAULT_ICMP_CONNECT_TIMEOUT_MS (icmp.ts). */
  timeoutMs?: number;
  /**
   * The key the peer must prove. Null: any key (connect({ icmp }) without `to`; the caller then checks
   * session.remotePublicKey). ICMP has no introduction to carry a key, so it comes from the caller, not ctx.peerKey.
   */
  peerKey: Uint8Array | null;
  keepAliveMs?: number;
  idleTimeoutMs?: number;
}

export function icmpTechnique(o: IcmpTechniqueOptions): Technique {
  return {
    name: 'icmp',
    // The planner decides (applies('icmp'): no rendezvous, and allowed); the two NAT views are empty then.
    applies: () => true,
    async run(ctx, signal): Promise<PathResult> {
      const session = await icmpSessionOn(ctx.endpoint, {
        keyPair: ctx.keyPair,
        server: o.server,
        port: o.port ?? DEFAULT_ICMP_PUNCH_PORT,
        ...(o.peerKey ? { peerKey: o.peerKey } : {}),
        ...(o.probeAddress !== undefined ? { probeAddress: o.probeAddress } : {}),
        ...(o.source !== undefined ? { source: o.source } : {}),
        ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
        ...(o.keepAliveMs !== undefined ? { keepAliveMs: o.keepAliveMs } : {}),
        ...(o.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
        signal,
        logger: ctx.logger,
        // The attempt reports the one 'path' and 'connected'; knocking is a note of this technique.
        onProgress: (p) => {
          if (p.phase === 'icmp-knocking')
            ctx.progress({ phase: 'technique-note', technique: 'icmp', note: 'knocking', detail: { ...p } });
        },
      });
      const p = session.path;
      return { technique: 'icmp', session, kind: 'direct', transport: 'udp', local: p.local, remote: p.remote };
    },
  };
}
