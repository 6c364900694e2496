/**
 * Shared machinery of the TCP sequence-number techniques, STUNT #1 and NATBlaster (Guha & Francis, "Characterization
 * and Measurement of TCP Traversal through NATs and Firewalls", IMC 2005; Biggadike et al., "NATBLASTER", 2005).
 *
 * Both start the same way: each peer connects from the port of its rendezvous connection (so an endpoint-independent
 * NAT gives the flow the public port the rendezvous server saw) to the other's public endpoint with a LOW TTL
 * (tcp-stunt.ts discovers it): the SYN opens our NAT and expires before the peer's NAT, so neither SYN ever reaches
 * the other host and both sockets sit in SYN_SENT. A packet socket (src/net/capture.ts) reads the kernel's own SYN:
 * its ISN and options. That, with the public endpoint, is the SeqOffer each peer publishes. The SYN-ACK a socket
 * waits for is then fully known (seq = other ISN, ack = own ISN + 1, options per src/wire/tcp.ts synAckSegment):
 * STUNT #1 has the rendezvous server spoof it (src = the other peer's public endpoint), NATBlaster has each peer send
 * it on a raw socket. Each kernel that receives its SYN-ACK answers with an ACK and its socket is ESTABLISHED; the
 * kernel owns the connection from then on (no user-space TCP).
 *
 * Two Linux facts shape this module (measured in the lab, see docs/tcp.md §4):
 *   - an ICMP Time Exceeded for the low-TTL SYN aborts a connect in SYN_SENT (tcp_v4_err); when our NAT forwards it
 *     (RFC 5508 §4 asks NATs to), the socket is gone before any SYN-ACK arrives. `icmpGuard` installs a transient
 *     nftables table on THIS host dropping exactly those ICMP messages (those quoting our SYN's destination), and
 *     removes it when the attempt ends. It needs CAP_NET_ADMIN and `nft`; both techniques need root anyway.
 *   - the connection is established with the low TTL still set; it is raised to DEFAULT_TTL before any data.
 */
import { spawn } from 'node:child_process';
import { isIPv4 } from 'node:net';
import type net from 'node:net';
import { NatpunchError } from '../util/errors.js';
import { throwIfAborted } from '../util/abort.js';
import { silentLogger, type Logger } from '../util/log.js';
import { PacketCapture } from '../net/capture.js';
import { loadAddon, type NativeAddon } from '../net/native.js';
import { IPPROTO_RAW, RawSocket } from '../net/raw.js';
import { setTtl, startConnect, type Endpoint, type PendingConnect } from '../net/tcp.js';
import {
  decodeIpv4Tcp,
  encodeIpv4Tcp,
  synAckSegment,
  TCP_ACK,
  TCP_RST,
  TCP_SYN,
  type SynInfo,
  type TcpOptions,
} from '../wire/tcp.js';

export const TCP_SEQ_DEFAULTS = {
  /** Whole attempt, from the low-TTL SYN to ESTABLISHED (includes the offer exchange). */
  timeoutMs: 15_000,
  /** The kernel's SYN shows up on the packet socket within microseconds; 2 s covers a loaded machine. */
  synCaptureTimeoutMs: 2_000,
  /** When SYN-ACKs are (re)sent, in ms after the offers are known: a lost one is repeated, bounded (5 packets). */
  synAckScheduleMs: [0, 300, 1_000, 2_500, 5_000] as readonly number[],
  /** TTL restored once the connection is up (Linux net.ipv4.ip_default_ttl; RFC 1700 recommends 64). */
  defaultTtl: 64,
  /** `nft` may take this long to load the guard table. */
  nftTimeoutMs: 5_000,
} as const;

export type SeqTechnique = 'natblaster' | 'stunt1';

/** A connection made by STUNT #1 or NATBlaster. */
export interface SeqResult {
  socket: net.Socket;
  offer: SeqOffer;
  peerOffer?: SeqOffer;
  /** Which technique completed it (a STUNT #1 peer never learns the peer's offer). */
  technique: SeqTechnique;
  guarded: boolean;
  elapsedMs: number;
}

/** What a peer publishes (through the rendezvous) so that its SYN_SENT socket can be completed. */
export interface SeqOffer {
  /** Source of the captured SYN (the host's own endpoint). */
  private: Endpoint;
  /** Public endpoint of the flow: the rendezvous connection's server-reflexive endpoint (same local port). */
  public: Endpoint;
  /** ISN of the SYN (unsigned 32-bit). */
  isn: number;
  /** Window of the SYN (unscaled). */
  window: number;
  /** Options of the SYN (MSS, window scale, SACK-permitted, timestamps). */
  options: TcpOptions;
}

const u32 = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
const u16 = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffff;

function parseEndpoint(v: unknown, what: string): Endpoint {
  const e = v as Partial<Endpoint> | null;
  if (
    !e ||
    typeof e !== 'object' ||
    typeof e.address !== 'string' ||
    !isIPv4(e.address) ||
    !u16(e.port) ||
    e.port === 0
  ) {
    throw new NatpunchError('BAD_ARGUMENT', `sequence offer: ${what} must be an IPv4 address and a port 1..65535`);
  }
  return { address: e.address, port: e.port };
}

/** Validates an offer received from elsewhere (JSON through the rendezvous or a test); BAD_ARGUMENT when wrong. */
export function parseSeqOffer(v: unknown): SeqOffer {
  const o = v as Partial<SeqOffer> | null;
  if (!o || typeof o !== 'object') throw new NatpunchError('BAD_ARGUMENT', 'sequence offer must be an object');
  if (!u32(o.isn) || !u16(o.window))
    throw new NatpunchError('BAD_ARGUMENT', 'sequence offer: isn must be a u32 and window a u16');
  const opt = (o.options ?? {}) as TcpOptions;
  if (typeof opt !== 'object') throw new NatpunchError('BAD_ARGUMENT', 'sequence offer: options must be an object');
  const options: TcpOptions = {};
  if (opt.mss !== undefined) {
    if (!u16(opt.mss)) throw new NatpunchError('BAD_ARGUMENT', 'sequence offer: mss must be a u16');
    options.mss = opt.mss;
  }
  if (opt.windowScale !== undefined) {
    if (!Number.isInteger(opt.windowScale) || opt.windowScale < 0 || opt.windowScale > 14) {
      throw new NatpunchError('BAD_ARGUMENT', 'sequence offer: windowScale must be 0..14 (RFC 7323 §2.3)');
    }
    options.windowScale = opt.windowScale;
  }
  if (opt.sackPermitted) options.sackPermitted = true;
  if (opt.timestamps !== undefined) {
    if (!u32(opt.timestamps?.value) || !u32(opt.timestamps?.echo))
      throw new NatpunchError('BAD_ARGUMENT', 'sequence offer: timestamps must be u32s');
    options.timestamps = { value: opt.timestamps.value, echo: opt.timestamps.echo };
  }
  return {
    private: parseEndpoint(o.private, 'private'),
    public: parseEndpoint(o.public, 'public'),
    isn: o.isn,
    window: o.window,
    options,
  };
}

function synInfo(o: SeqOffer): SynInfo {
  return { isn: o.isn, window: o.window, options: o.options };
}

/**
 * The IPv4 packet of the SYN-ACK `from`'s socket would send to `to`'s socket in a simultaneous open, carrying the
 * given IP/TCP source and destination (RFC 9293 §3.5 figure 8; options per synAckSegment).
 */
export function craftSynAck(
  from: SeqOffer,
  to: SeqOffer,
  src: Endpoint,
  dst: Endpoint,
  ttl: number = TCP_SEQ_DEFAULTS.defaultTtl,
): Buffer {
  const seg = synAckSegment(synInfo(from), synInfo(to), { sourcePort: src.port, destinationPort: dst.port });
  return encodeIpv4Tcp(seg, { source: src.address, destination: dst.address, ttl });
}

/**
 * Sends `packets` on a header-included raw socket following the schedule; stops early when `signal` aborts.
 * `unref`: the waits do not keep the process alive (a detached repeat schedule).
 */
export async function sendOnSchedule(
  raw: RawSocket,
  packets: Array<{ packet: Buffer; to: string }>,
  scheduleMs: readonly number[],
  signal?: AbortSignal,
  unref = false,
): Promise<number> {
  let sent = 0;
  let last = 0;
  for (const at of scheduleMs) {
    if (at > last) {
      const ok = await new Promise<boolean>((resolve) => {
        if (signal?.aborted) return resolve(false);
        const timer = setTimeout(() => {
          signal?.removeEventListener('abort', onAbort);
          resolve(true);
        }, at - last);
        if (unref) timer.unref();
        const onAbort = () => {
          clearTimeout(timer);
          resolve(false);
        };
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      if (!ok) break;
      last = at;
    }
    if (signal?.aborted || raw.closed) break;
    for (const p of packets) if (raw.send(p.packet, p.to)) sent++;
  }
  return sent;
}

/** Opens a header-included raw socket for crafted packets (IPPROTO_RAW: send only, receives nothing). */
export function openCraftSocket(addon?: NativeAddon): RawSocket {
  return RawSocket.open({ protocol: IPPROTO_RAW, headerIncluded: true, addon });
}

function runNft(ruleset: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('nft', ['-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`nft exited with ${code}: ${err.trim().split('\n')[0] ?? ''}`));
    });
    child.stdin.end(ruleset);
  });
}

function ipv4Hex(address: string): string {
  return `0x${address
    .split('.')
    .map((p) => Number(p).toString(16).padStart(2, '0'))
    .join('')}`;
}

/**
 * Drops, on this host, ICMP Time Exceeded messages quoting a TCP segment to `remote` (RFC 792: the ICMP body quotes
 * the IP header — 20 bytes for the kernel's SYN — and the first 8 bytes of TCP: the destination address is at bit
 * 192 and the destination port at bit 240 of the ICMP message). Port 0 in `remote` means any port of that address
 * (the predicted window of P2P-NAT + STUNT #2, tcp-session.ts). Returns the function that removes the table.
 */
export async function installIcmpGuard(
  remote: Endpoint,
  localPort: number,
  timeoutMs: number = TCP_SEQ_DEFAULTS.nftTimeoutMs,
): Promise<() => Promise<void>> {
  // One table per (local port, remote endpoint): a listener's port serves several peers at once, each with its guard.
  const table = `npguard_${localPort}_${ipv4Hex(remote.address).slice(2)}_${remote.port}`;
  const sport = localPort > 0 ? ` @th,224,16 ${localPort}` : '';
  const dport = remote.port > 0 ? ` @th,240,16 ${remote.port}` : '';
  await runNft(
    [
      `table ip ${table} {}`,
      `delete table ip ${table}`,
      `table ip ${table} {`,
      '  chain pre {',
      '    type filter hook prerouting priority -300; policy accept;',
      `    icmp type time-exceeded @th,192,32 ${ipv4Hex(remote.address)}${sport}${dport} drop`,
      '  }',
      '}',
      '',
    ].join('\n'),
    timeoutMs,
  );
  return async () => {
    await runNft(`table ip ${table} {}\ndelete table ip ${table}\n`, timeoutMs).catch(() => {});
  };
}

export interface SeqSynOptions {
  /** Local port to connect from: the rendezvous connection's (reuseport) so the NAT maps it to `publicEndpoint`. */
  localPort: number;
  /** Local address; default 0.0.0.0. */
  localAddress?: string;
  /** Our public endpoint for that port, as the rendezvous server saw it. */
  publicEndpoint: Endpoint;
  /** The peer's public endpoint (its SeqOffer.public), where our low-TTL SYN goes. */
  remote: Endpoint;
  /** TTL of our SYN: passes our NAT(s), expires before the peer's (discoverNatHops().lowTtl). */
  lowTtl: number;
  /** Drop the Time Exceeded for our SYN on this host (see the module comment). Default true. */
  icmpGuard?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
  logger?: Logger;
  addon?: NativeAddon;
}

/** A kernel socket in SYN_SENT whose SYN was captured. close() releases everything not yet handed out. */
export class SeqSyn {
  readonly offer: SeqOffer;
  readonly guarded: boolean;
  #pc: PendingConnect;
  #capture: PacketCapture;
  #unguard: (() => Promise<void>) | undefined;
  #remote: Endpoint;
  #addon: NativeAddon;
  #badAck: { ack: number; from: string } | undefined;
  #rst = false;
  #closed = false;

  /** @internal */
  constructor(p: {
    offer: SeqOffer;
    pc: PendingConnect;
    capture: PacketCapture;
    unguard?: () => Promise<void>;
    remote: Endpoint;
    addon: NativeAddon;
  }) {
    this.offer = p.offer;
    this.#pc = p.pc;
    this.#capture = p.capture;
    this.#unguard = p.unguard;
    this.guarded = p.unguard !== undefined;
    this.#remote = p.remote;
    this.#addon = p.addon;
    // Watch what comes back to our port: a SYN-ACK acknowledging something else than ISN + 1 means a NAT on the way
    // rewrote sequence numbers, the one failure these techniques cannot survive; say so instead of timing out.
    const expected = (this.offer.isn + 1) >>> 0;
    p.capture.onPacket((packet, outgoing) => {
      if (outgoing) return;
      const d = decodeIpv4Tcp(packet);
      if (
        !d ||
        d.tcp.destinationPort !== this.offer.private.port ||
        d.ip.source !== this.#remote.address ||
        d.tcp.sourcePort !== this.#remote.port
      )
        return;
      if ((d.tcp.flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK) && d.tcp.ack !== expected && !this.#badAck) {
        // Our kernel answers it with RST and keeps waiting; no right SYN-ACK will follow, so fail now.
        this.#badAck = { ack: d.tcp.ack, from: d.ip.source };
        this.#pc.cancel(new Error('sequence numbers rewritten'));
      }
      if (d.tcp.flags & TCP_RST) this.#rst = true;
    });
  }

  /**
   * Resolves with the connected socket once the kernel accepted a SYN-ACK (TTL raised to DEFAULT_TTL), or rejects
   * with PUNCH_FAILED saying why (sequence numbers rewritten, ICMP abort, nothing arrived), TIMEOUT or ABORTED.
   */
  async established(): Promise<net.Socket> {
    try {
      const socket = await this.#pc.done;
      try {
        setTtl(socket, TCP_SEQ_DEFAULTS.defaultTtl, this.#addon);
      } catch {
        // the socket already closed: the caller sees that when using it
      }
      return socket;
    } catch (err) {
      throw this.#explain(err);
    } finally {
      await this.#release();
    }
  }

  #explain(err: unknown): unknown {
    const e = err as NatpunchError;
    if (this.#badAck) {
      const expected = (this.offer.isn + 1) >>> 0;
      const delta = (this.#badAck.ack - expected) >>> 0;
      return new NatpunchError(
        'PUNCH_FAILED',
        `a SYN-ACK from ${this.#badAck.from} acknowledged ${this.#badAck.ack} but our ISN + 1 is ${expected} (off by ${delta}): a NAT on the path rewrites TCP sequence numbers, which STUNT #1 / NATBlaster cannot survive`,
        { cause: err, details: { reason: 'sequence-rewritten', ack: this.#badAck.ack, expected, delta } },
      );
    }
    if (e.code === 'ABORTED') return err;
    const errno = String(e.details?.errno ?? '');
    if (errno === 'EHOSTUNREACH' || errno === 'ENETUNREACH') {
      return new NatpunchError(
        'PUNCH_FAILED',
        `the low-TTL SYN's ICMP Time Exceeded aborted the connect (${errno}) before a SYN-ACK arrived${this.guarded ? '' : '; enable icmpGuard (root + nft) or use a NAT that does not forward it'}`,
        { cause: err, details: { reason: 'icmp-abort', errno } },
      );
    }
    return new NatpunchError(
      'PUNCH_FAILED',
      `no acceptable SYN-ACK reached our SYN_SENT socket (${e.message})${this.#rst ? '; the peer side answered RST' : ''}: a NAT dropped or did not translate the crafted SYN-ACK, or mapped the flow to another port than the rendezvous saw`,
      { cause: err, details: { reason: 'no-syn-ack', rst: this.#rst } },
    );
  }

  async #release(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#capture.close();
    const unguard = this.#unguard;
    this.#unguard = undefined;
    await unguard?.();
  }

  /** Cancels the connect (when not yet established) and removes capture and guard. */
  async close(): Promise<void> {
    this.#pc.cancel();
    this.#pc.done.catch(() => {});
    await this.#release();
  }
}

/**
 * Sends our low-TTL SYN to `remote` from `localPort` and captures it. The returned SeqSyn's offer is what the peer
 * (NATBlaster) or the server (STUNT #1) needs; established() waits for the SYN-ACK.
 */
export async function openSeqSyn(options: SeqSynOptions): Promise<SeqSyn> {
  const addon = options.addon ?? loadAddon('TCP sequence-number techniques');
  const log = options.logger ?? silentLogger;
  throwIfAborted(options.signal);
  if (!isIPv4(options.remote.address))
    throw new NatpunchError('BAD_ARGUMENT', 'the sequence-number techniques are IPv4 only (the remote must be IPv4)');
  if (!Number.isInteger(options.lowTtl) || options.lowTtl < 1 || options.lowTtl > 255)
    throw new NatpunchError('BAD_ARGUMENT', 'lowTtl must be 1..255');
  if (!Number.isInteger(options.remote.port) || options.remote.port < 1 || options.remote.port > 65535)
    throw new NatpunchError('BAD_ARGUMENT', 'remote port must be 1..65535');
  // Only segments from/to the peer's port wake us (kernel BPF filter): our SYN, and what comes back.
  const capture = PacketCapture.open({ addon, tcpPort: options.remote.port });
  let unguard: (() => Promise<void>) | undefined;
  let pc: PendingConnect | undefined;
  try {
    if (options.icmpGuard !== false) {
      try {
        unguard = await installIcmpGuard(options.remote, options.localPort);
      } catch (err) {
        log.warn({ err }, 'tcp-seq: cannot install the ICMP guard; a forwarded Time Exceeded will abort the connect');
      }
    }
    const remote = options.remote;
    let resolveSyn!: (s: { info: SynInfo; src: Endpoint }) => void;
    const synSeen = new Promise<{ info: SynInfo; src: Endpoint }>((r) => (resolveSyn = r));
    let localPort = options.localPort;
    const stop = capture.onPacket((packet, outgoing) => {
      if (!outgoing) return;
      const d = decodeIpv4Tcp(packet);
      if (!d || d.ip.destination !== remote.address || d.tcp.destinationPort !== remote.port) return;
      if ((d.tcp.flags & (TCP_SYN | TCP_ACK)) !== TCP_SYN || (localPort !== 0 && d.tcp.sourcePort !== localPort))
        return;
      resolveSyn({
        info: { isn: d.tcp.seq, window: d.tcp.window, options: d.tcp.options },
        src: { address: d.ip.source, port: d.tcp.sourcePort },
      });
    });
    const timeoutMs = options.timeoutMs ?? TCP_SEQ_DEFAULTS.timeoutMs;
    pc = startConnect({
      address: remote.address,
      port: remote.port,
      localAddress: options.localAddress,
      localPort: options.localPort,
      ttl: options.lowTtl,
      timeoutMs,
      signal: options.signal,
      addon,
    });
    localPort = pc.local.port;
    pc.done.catch(() => {}); // observed by established()
    let timer: NodeJS.Timeout | undefined;
    const syn = await Promise.race([
      synSeen,
      pc.done.then(
        () => {
          throw new NatpunchError(
            'PUNCH_FAILED',
            'the connect completed before our SYN was captured (a SYN-ACK arrived unexpectedly)',
          );
        },
        (err) => {
          throw err;
        },
      ),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new NatpunchError(
                'TIMEOUT',
                `our own SYN to ${remote.address}:${remote.port} was not seen on the packet socket within ${TCP_SEQ_DEFAULTS.synCaptureTimeoutMs} ms`,
              ),
            ),
          TCP_SEQ_DEFAULTS.synCaptureTimeoutMs,
        );
      }),
    ]).finally(() => {
      clearTimeout(timer);
      stop();
    });
    log.debug({ isn: syn.info.isn, options: syn.info.options }, 'tcp-seq: captured our SYN');
    const offer: SeqOffer = {
      private: syn.src,
      public: { ...options.publicEndpoint },
      isn: syn.info.isn,
      window: syn.info.window,
      options: syn.info.options,
    };
    return new SeqSyn({ offer, pc, capture, unguard, remote, addon });
  } catch (err) {
    pc?.cancel();
    capture.close();
    await unguard?.();
    throw err;
  }
}
