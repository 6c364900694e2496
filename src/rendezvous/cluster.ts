/**
 * Several rendezvous nodes serving one set of peers. The registry (shared, e.g. Redis) says which node holds a
 * peer's channel (PeerRecord.node); a node that must push something to a peer held elsewhere hands it to that node
 * over the cluster bus, which delivers each message once, in the order sent (Redis streams: one stream per node,
 * read by that node alone, src/rendezvous/redis.ts).
 */

/** Something for a peer held by another node: pushed there as if the local server had sent it. */
export interface ClusterPush {
  /** The receiving peer's key, hex. */
  to: string;
  /** Retransmission/acknowledgement key (connection id, hex; see RendezvousServer #push). */
  pendingKey: string;
  /** The encoded rendezvous message, ready to send. */
  bytes: Buffer;
  kind: 'notify' | 'seq';
  /** Bytes the pusher sent: the node that delivers bounds retransmissions to an unverified address by them
   *  (anti-amplification, RendezvousServer #push). */
  requestBytes: number;
  /**
   * With a 'notify': the introduced initiator's key (hex) and where the pushing node saw it, so the receiving
   * node's peer relay lets the responder's allocation reach it (peer-relay mode, relay/peer-relay.ts).
   */
  introduced?: { key: string; seen: Array<{ transport: 'udp' | 'tcp'; address: string; port: number }> };
}

export interface ClusterBus {
  /** This node's id, as stored in PeerRecord.node. */
  readonly nodeId: string;
  /** Hands `push` to `node`. Rejects when the bus is unavailable (the caller answers the request with an error). */
  send(node: string, push: ClusterPush): Promise<void>;
  /** Receives pushes for peers held here. Returns a function that stops. */
  onPush(handler: (push: ClusterPush) => void): () => void;
  /** Whether `node` announced itself recently (a node that died without draining stops doing so). */
  isAlive(node: string): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * Where the two outcome reports of one connection meet when its peers report to different nodes (each reports to
 * the node it registered with), so the cluster counts every connection once, labelled with both sides' own NAT
 * types — as one node does when both reports reach it (src/server/metrics.ts). Reports travel as their wire bytes
 * (signed REPORT, wire/rendezvous.ts), decoded and so validated again where they are counted.
 */
export interface ReportMeeting {
  /**
   * Offers the first report of a connection seen on this node. 'partner': the other side's report was parked by
   * another node and is now taken (count the merged outcome here); 'parked': ours waits for the other side;
   * 'counted': another node already counted this connection.
   */
  meet(
    connectionId: string,
    report: Buffer,
  ): Promise<{ kind: 'partner'; report: Buffer } | { kind: 'parked' } | { kind: 'counted' }>;
  /** No partner came in time: takes ours back. True: it was still parked (count it alone); false: taken elsewhere. */
  reclaim(connectionId: string): Promise<boolean>;
}
