/**
 * natpunch NAT lab: real Linux NATs in network namespaces (root only).
 *
 * ## Writing a lab test
 *
 * ```ts
 * import { Lab, labUnavailableReason } from '../../src/lab/index.js';
 * const skip = labUnavailableReason();            // e.g. "the NAT lab needs root" — pass to describe/test `skip`
 * const lab = await Lab.up({ nat: { natA: 'full-cone', natB: { type: 'symmetric-random', stealth: true } } });
 * try {
 *   // Peers are child processes inside namespaces (a socket in THIS process cannot live in a namespace).
 *   // 1) the probe agent: plain UDP/TCP sockets driven over JSON lines
 *   const server = await lab.agent('server');
 *   const { sock: s, port } = await server.udpBind({ reflect: true });        // answers with the source it saw
 *   const a = await lab.agent('a');
 *   const { sock } = await a.udpBind();
 *   const seen = await a.udpReflect(sock, lab.addr('server'), port);          // { from: natA's public addr, port }
 *   // 2) your own script: stdout JSON lines become messages; stdin gets proc.send() lines
 *   const p = lab.node('b', new URL('./fixtures/echo-peer.ts', import.meta.url).pathname, ['b']);
 *   const msg = await p.next((m) => m.type === 'ready', { timeoutMs: 10_000 });  // default timeout 10 s
 *   p.send({ send: 'hi', host: lab.addr('server'), port: 3478 });               // one JSON line on its stdin
 *   // 3) any command
 *   const { stdout, code } = await lab.exec('a', ['ip', 'route']);              // bounded (30 s), never throws on exit code
 *   const proc = lab.spawn('server', ['turnserver', '-n', '--listening-ip', lab.addr('server')]);  // LabProcess; .child
 *   await lab.setNat('natA', { type: 'restricted-cone', hairpin: false });  // flushes natA's conntrack
 *   await lab.setNat('natA', { stealth: true }, true);                        // merge into the current options
 *   await lab.setLink('natB', { delayMs: 50, jitterMs: 5, lossPct: 1, rateMbit: 10 });
 * } finally {
 *   await lab.down();                                  // kills every process, deletes every namespace
 * }
 * ```
 * Scripts run with the same Node and, for .ts files, tsx: `node --import tsx script.ts args...`, cwd unchanged.
 * A script is any program printing one JSON object per line; e.g. test/lab/fixtures/echo-peer.ts:
 *   import { createInterface } from 'node:readline';
 *   console.log(JSON.stringify({ type: 'ready' }));
 *   for await (const line of createInterface({ input: process.stdin })) { const cmd = JSON.parse(line); ... }
 * Keep sending loops bounded, and exit when stdin closes (proc.close() ends stdin, then SIGTERM, then SIGKILL).
 *
 * Agent (probe) methods: udpBind({port, address, reflect}), udpSend, udpExchange (send until answered, bounded),
 * udpReflect (what address:port the peer saw), udpConnect + udpSendConnected + udpProbeError (ICMP errors as
 * ECONNREFUSED/EHOSTUNREACH), nextUdp, drainUdp, tcpListen, tcpConnect (→ ok | ECONNREFUSED | ETIMEDOUT), tcpSend,
 * closeSocket, and request(op, args) for the raw protocol (agent-script.ts).
 * Lab helpers for assertions: lab.outsideDrops() (packets dropped for leaving the lab), lab.conntrack(router),
 * lab.nat(router), lab.link(name), lab.state. Lab.up(topologySpec) takes a custom topology (topology.ts).
 * Never hard-code addresses: use lab.addr(host) (primary address), lab.addrs(host), lab.publicAddr(router) (its WAN
 * address), lab.externalAddr(host) (the outermost public address it appears as), lab.lanAddr(router).
 *
 * ## Default topology (see topology.ts; `Lab.up({ doubleNat: true })` adds cgn/natC/c)
 *   server 192.0.2.10 + 192.0.2.11 (two public addresses, RFC 5780) on the internet
 *   natA 198.51.100.10, LAN 10.1.0.0/24: a 10.1.0.10, a2 10.1.0.11
 *   natB 203.0.113.10,  LAN 10.2.0.0/24: b 10.2.0.10
 *   cgn 192.0.2.130, LAN 100.64.0.0/10 (RFC 6598): natC 100.64.0.10, LAN 10.3.0.0/24: c 10.3.0.10
 * Interfaces: hosts have `eth0`; routers have `wan` (uplink) and `lan` (a bridge over ports p0, p1, ... to their
 * hosts), so e.g. miniupnpd in a router is started with ext_ifname=wan, listening_ip=lan; the internet namespace has
 * i0, i1, ... . Each router's rules are the nftables table `ip npnat` (link shaping uses `ip npshape` and the
 * iptables-nft raw table); other programs may add their own tables.
 * Links are named after their lower node ('a' = a↔natA, 'natA' = natA↔internet). The internet namespace routes
 * only the lab's public prefixes and drops (and counts, see outsideDrops()) everything else: no lab packet can
 * reach the machine's real network, there is no veth into the root namespace.
 *
 * Namespaces are `np<id>-<node>`; state lives in /run/natpunch/labs/<id>.json. `Lab.cleanupAll()` (and
 * `natpunch lab down --all`) removes labs whose owner process died and CLI labs.
 */
import { spawn, spawnSync, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NatpunchError } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { Agent } from './agent.js';
import { ensureDelayer } from './delayer.js';
import { natRuleset, resolveNat, NAT_DEFAULTS, type NatOptions, type NatType, type ResolvedNatOptions } from './nat.js';
import { LabProcess } from './proc.js';
import {
  isShaped,
  NO_SHAPE,
  planNamespace,
  resolveShape,
  uplinkMac,
  type LinkShape,
  type ResolvedLinkShape,
} from './shape.js';
import {
  destroyNamespace,
  killRecorded,
  LAB_NS_RE,
  labUnavailableReason,
  listDir,
  listNamespaces,
  mustRun,
  pidAlive,
  processStartTime,
  readJson,
  removeFile,
  run,
  stateDir,
  writeJsonAtomic,
  type ExecResult,
} from './sys.js';
import { defaultTopology, resolveTopology, type ResolvedTopology, type TopologySpec } from './topology.js';

export { defaultTopology, resolveTopology, LAB_PUBLIC_PREFIXES } from './topology.js';
export type { TopologySpec, RouterSpec, HostSpec, ResolvedTopology } from './topology.js';
export {
  NAT_TYPES,
  NAT_DEFAULTS,
  resolveNat,
  natRuleset,
  PORT_PRESERVATION_OFF_RANGE,
  SEQUENTIAL_BASE_PORT,
} from './nat.js';
export type { NatType, NatOptions, ResolvedNatOptions } from './nat.js';
export type { LinkShape, ResolvedLinkShape } from './shape.js';
export { LabProcess } from './proc.js';
export { Agent } from './agent.js';
export type { UdpDatagram, Reflection } from './agent.js';
export { labUnavailableReason } from './sys.js';
export type { ExecResult } from './sys.js';

/** A state-less lab namespace is only treated as a leftover once it is this old (it may belong to a lab being built
 * with another state directory). */
export const ORPHAN_MIN_AGE_MS = 60_000;
/** Default bound for Lab.up(). */
export const LAB_UP_TIMEOUT_MS = 60_000;
/** Default bound for lab.exec(). */
export const LAB_EXEC_TIMEOUT_MS = 30_000;
/** How long agent()/delayer start-up may take. */
export const LAB_START_TIMEOUT_MS = 20_000;

export interface LabOptions {
  /** Topology; default: defaultTopology({ doubleNat }). */
  topology?: TopologySpec;
  /** Adds cgn / natC / c to the default topology. */
  doubleNat?: boolean;
  /** NAT behaviour per router at start-up (overrides the topology's `nat`). */
  nat?: Record<string, NatOptions | NatType>;
  /** Link shapes at start-up, by link name. */
  links?: Record<string, LinkShape>;
  /** CLI labs outlive the creating process; cleanupAll() treats them as removable. */
  detached?: boolean;
  logger?: Logger;
  signal?: AbortSignal;
  timeoutMs?: number;
}

interface ProcRecord {
  pid: number;
  start?: number;
}

/** What is persisted per lab (enough to attach from another process and to clean up after a crash). */
export interface LabState {
  version: 1;
  id: string;
  ownerPid: number;
  ownerStart?: number;
  detached: boolean;
  createdAt: string;
  topology: ResolvedTopology;
  nat: Record<string, ResolvedNatOptions>;
  links: Record<string, ResolvedLinkShape>;
  /** delayer process per namespace (node name) */
  delayers: Record<string, ProcRecord>;
  /** processes started with spawn()/node()/agent() */
  procs: ProcRecord[];
  /** true once every namespace is configured */
  ready: boolean;
}

export interface SpawnOpts {
  /** stdio as for child_process.spawn; default ['pipe', 'pipe', 'pipe'] */
  stdio?: SpawnOptions['stdio'];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** node()/nodeCode() only: a command that execs node, e.g. ['setpriv', '--bounding-set=-net_raw'] (less privilege). */
  wrap?: string[];
}

function newId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = randomBytes(5);
  let id = '';
  for (const b of bytes) id += alphabet[b % alphabet.length];
  return id;
}

function tsxImport(): string {
  return import.meta.resolve('tsx');
}

export class Lab {
  readonly id: string;
  readonly topology: ResolvedTopology;
  #state: LabState;
  #statePath: string;
  #procs = new Set<LabProcess>();
  /** per-namespace queue: changes to one namespace (rules, delayer) never interleave */
  #queues = new Map<string, Promise<unknown>>();
  #log: Logger;
  #down = false;
  #onExit: (() => void) | undefined;

  private constructor(state: LabState, statePath: string, log: Logger) {
    this.id = state.id;
    this.topology = state.topology;
    this.#state = state;
    this.#statePath = statePath;
    this.#log = log;
  }

  /** Builds a lab. Throws NatpunchError('NOT_ROOT') when not root / no `ip netns`. */
  static async up(optsOrTopology: LabOptions | TopologySpec = {}): Promise<Lab> {
    const opts: LabOptions = isTopologySpec(optsOrTopology) ? { topology: optsOrTopology } : optsOrTopology;
    const reason = labUnavailableReason();
    if (reason) throw new NatpunchError('NOT_ROOT', `${reason}; run as root (sudo)`);
    const log = opts.logger ?? silentLogger;
    const topo = resolveTopology(opts.topology ?? defaultTopology({ doubleNat: opts.doubleNat ?? false }));
    const nat: Record<string, ResolvedNatOptions> = {};
    for (const [name, node] of Object.entries(topo.nodes)) {
      if (node.kind !== 'router') continue;
      nat[name] = resolveNat(opts.nat?.[name] ?? node.nat);
    }
    for (const name of Object.keys(opts.nat ?? {})) {
      if (!nat[name]) throw new NatpunchError('BAD_ARGUMENT', `no router "${name}" in the lab topology`);
    }
    const links: Record<string, ResolvedLinkShape> = {};
    for (const name of Object.keys(topo.links)) links[name] = resolveShape(opts.links?.[name] ?? {});
    for (const name of Object.keys(opts.links ?? {})) {
      if (!topo.links[name]) throw new NatpunchError('BAD_ARGUMENT', `no lab link "${name}"`);
    }

    // Crashed runs' leftovers go first (only labs whose owner is dead; never a live lab).
    await Lab.cleanupAll({ detached: false, orphans: false }).catch(() => {});

    const dir = stateDir();
    const id = newId();
    const state: LabState = {
      version: 1,
      id,
      ownerPid: opts.detached ? 0 : process.pid,
      ...(opts.detached ? {} : { ownerStart: processStartTime(process.pid) }),
      detached: Boolean(opts.detached),
      createdAt: new Date().toISOString(),
      topology: topo,
      nat,
      links,
      delayers: {},
      procs: [],
      ready: false,
    };
    const statePath = join(dir, `${id}.json`);
    writeJsonAtomic(statePath, state); // before anything exists, so a crash mid-way is still found
    const lab = new Lab(state, statePath, log);
    if (!opts.detached) lab.#installExitHook();
    const timeoutMs = opts.timeoutMs ?? LAB_UP_TIMEOUT_MS;
    const ac = new AbortController();
    const timer = setTimeout(
      () => ac.abort(new NatpunchError('TIMEOUT', `lab set-up exceeded ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onAbort = () => ac.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await lab.#build(ac.signal);
      state.ready = true;
      lab.#save();
      log.info({ id, nodes: Object.keys(topo.nodes) }, 'lab up');
      return lab;
    } catch (err) {
      await lab.down().catch(() => {});
      throw err;
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Re-opens a lab by id from its state file (another process, e.g. the CLI). */
  static attach(id: string, opts: { logger?: Logger } = {}): Lab {
    if (!/^[a-z0-9]{5}$/.test(id)) throw new NatpunchError('BAD_ARGUMENT', `invalid lab id "${id}"`);
    const path = join(stateDir(), `${id}.json`);
    const state = readJson<LabState>(path);
    if (!state || state.version !== 1) throw new NatpunchError('LAB', `no lab "${id}" (state file ${path} missing)`);
    return new Lab(state, path, opts.logger ?? silentLogger);
  }

  /** State of every lab recorded on this machine. */
  static list(): LabState[] {
    const dir = stateDir();
    const out: LabState[] = [];
    for (const f of listDir(dir)) {
      if (!f.endsWith('.json')) continue;
      const s = readJson<LabState>(join(dir, f));
      if (s && s.version === 1) out.push(s);
    }
    return out.sort((x, y) => x.createdAt.localeCompare(y.createdAt));
  }

  /** Removes a lab's state file only (for labs whose namespaces are already gone). */
  static forget(id: string): void {
    if (!/^[a-z0-9]{5}$/.test(id)) throw new NatpunchError('BAD_ARGUMENT', `invalid lab id "${id}"`);
    removeFile(join(stateDir(), `${id}.json`));
    removeFile(join(stateDir(), id));
  }

  /** Whether a recorded lab's owner process is still alive (detached labs: never "alive"). */
  static ownerAlive(s: LabState): boolean {
    if (s.detached || s.ownerPid === 0) return false;
    if (!pidAlive(s.ownerPid)) return false;
    return s.ownerStart === undefined || processStartTime(s.ownerPid) === s.ownerStart;
  }

  /**
   * Removes leftovers: labs whose owner process died, detached (CLI) labs unless `detached: false`, and (unless
   * `orphans: false`) lab namespaces no state file accounts for that are older than ORPHAN_MIN_AGE_MS and have no
   * process inside. Labs owned by a live process are kept unless `all: true`. Returns the ids removed.
   */
  static async cleanupAll(opts: { detached?: boolean; orphans?: boolean; all?: boolean } = {}): Promise<string[]> {
    const removed: string[] = [];
    const dir = stateDir();
    const known = new Set<string>();
    const nsList = await listNamespaces();
    for (const s of Lab.list()) {
      known.add(s.id);
      const alive = Lab.ownerAlive(s);
      const removable = opts.all || (!alive && (!s.detached || opts.detached !== false));
      if (!removable) continue;
      await Lab.#destroy(s, nsList);
      removeFile(join(dir, `${s.id}.json`));
      removeFile(join(dir, s.id));
      removed.push(s.id);
    }
    if (opts.orphans === false) return removed;
    // Namespaces of labs with no state file here (removed by hand, or made with another NATPUNCH_LAB_DIR).
    const orphans = new Map<string, string[]>();
    for (const ns of nsList) {
      const m = LAB_NS_RE.exec(ns);
      if (!m || known.has(m[1]!)) continue;
      if (!orphans.has(m[1]!)) orphans.set(m[1]!, []);
      orphans.get(m[1]!)!.push(ns);
    }
    for (const [id, list] of orphans) {
      let busy = false;
      for (const ns of list) {
        const age = Date.now() - (statSafe(`/run/netns/${ns}`) ?? Date.now());
        const r = await run('ip', ['netns', 'pids', ns]);
        if (r.stdout.trim() || age < ORPHAN_MIN_AGE_MS) busy = true;
      }
      if (busy) continue;
      for (const ns of list) await destroyNamespace(ns);
      removed.push(id);
    }
    return removed;
  }

  static async #destroy(s: LabState, nsList?: string[]): Promise<void> {
    for (const rec of [...s.procs, ...Object.values(s.delayers)]) killRecorded(rec);
    const existing = new Set(nsList ?? (await listNamespaces()));
    const prefix = `np${s.id}-`;
    const names = [...existing].filter((ns) => ns.startsWith(prefix));
    await Promise.all(names.map((ns) => destroyNamespace(ns)));
  }

  // ---------------------------------------------------------------- naming and addresses

  /** Namespace name of a node. */
  ns(node: string): string {
    this.#node(node);
    return `np${this.id}-${node}`;
  }

  #node(name: string) {
    const n = this.topology.nodes[name];
    if (!n) {
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `no lab node "${name}" (nodes: ${Object.keys(this.topology.nodes).join(', ')})`,
      );
    }
    return n;
  }

  #router(name: string) {
    const n = this.#node(name);
    if (n.kind !== 'router') throw new NatpunchError('BAD_ARGUMENT', `lab node "${name}" is not a router`);
    return n;
  }

  /** Node names by kind. */
  get hosts(): string[] {
    return Object.values(this.topology.nodes)
      .filter((n) => n.kind === 'host')
      .map((n) => n.name);
  }

  get routers(): string[] {
    return Object.values(this.topology.nodes)
      .filter((n) => n.kind === 'router')
      .map((n) => n.name);
  }

  /** Primary address of a host (for a router: its WAN address). */
  addr(node: string): string {
    const n = this.#node(node);
    if (n.kind === 'internet')
      throw new NatpunchError('BAD_ARGUMENT', 'the internet namespace has no address of its own');
    return n.addrs[0]!;
  }

  /** All addresses of a host, primary first (server has two). */
  addrs(node: string): string[] {
    return [...this.#node(node).addrs];
  }

  /** A router's WAN address (public for routers on the internet; 100.64.x for natC behind cgn). */
  publicAddr(router: string): string {
    return this.#router(router).addrs[0]!;
  }

  /** A router's LAN address (its hosts' default gateway). */
  lanAddr(router: string): string {
    return this.#router(router).lanAddr!;
  }

  /** The router a node hangs from ('internet' for public nodes). */
  parentOf(node: string): string {
    this.#node(node);
    return this.topology.links[node]?.parent ?? 'internet';
  }

  /** The outermost address a host appears as on the internet (its own for public hosts). */
  externalAddr(node: string): string {
    const cur = node;
    let parent = this.parentOf(cur);
    if (parent === 'internet') return this.addr(node);
    while (this.parentOf(parent) !== 'internet') parent = this.parentOf(parent);
    return this.publicAddr(parent);
  }

  /** Current NAT behaviour of a router. */
  nat(router: string): ResolvedNatOptions {
    this.#router(router);
    return { ...this.#state.nat[router]! };
  }

  /** Current shape of a link. */
  link(name: string): ResolvedLinkShape {
    if (!this.topology.links[name]) throw new NatpunchError('BAD_ARGUMENT', `no lab link "${name}"`);
    return { ...this.#state.links[name]! };
  }

  /** A copy of the persisted state. */
  get state(): LabState {
    return JSON.parse(JSON.stringify(this.#state)) as LabState;
  }

  // ---------------------------------------------------------------- processes

  /** Runs a command inside a node's namespace and waits for it (bounded). Never throws on a non-zero exit. */
  async exec(
    node: string,
    cmd: string[],
    opts: { input?: string; timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<ExecResult> {
    this.#alive();
    if (cmd.length === 0) throw new NatpunchError('BAD_ARGUMENT', 'exec needs a command');
    return run('ip', ['netns', 'exec', this.ns(node), ...cmd], { timeoutMs: LAB_EXEC_TIMEOUT_MS, ...opts });
  }

  /** Starts a long-running process inside a node's namespace; it is killed by down(). */
  spawn(node: string, cmd: string[], opts: SpawnOpts = {}): LabProcess {
    this.#alive();
    if (cmd.length === 0) throw new NatpunchError('BAD_ARGUMENT', 'spawn needs a command');
    // Inside a lab namespace the only gateway is a lab router: natpunch's default port mapping (PCP, NAT-PMP, UPnP)
    // may run there, even when the test runner turned it off for everything else (NATPUNCH_PORT_MAPPING=0).
    const child = spawn('ip', ['netns', 'exec', this.ns(node), ...cmd], {
      stdio: opts.stdio ?? ['pipe', 'pipe', 'pipe'],
      env: { ...(opts.env ?? process.env), NATPUNCH_PORT_MAPPING: opts.env?.NATPUNCH_PORT_MAPPING ?? '1' },
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    const proc = new LabProcess(node, child);
    this.#procs.add(proc);
    if (child.pid) {
      // `ip netns exec` execs the command, so this PID is the command itself.
      const rec: ProcRecord = { pid: child.pid };
      const start = processStartTime(child.pid);
      if (start !== undefined) rec.start = start;
      this.#state.procs.push(rec);
      this.#save();
      void proc.exited.then(() => {
        this.#procs.delete(proc);
        this.#state.procs = this.#state.procs.filter((r) => r.pid !== child.pid);
        if (!this.#down) this.#save();
      });
    }
    return proc;
  }

  /**
   * Runs a Node script inside a namespace: `node [--import tsx] script args...` (tsx for .ts/.mts/.cts).
   * The script talks JSON lines: what it prints on stdout arrives through proc.next(), proc.send() writes to its stdin.
   */
  node(node: string, script: string, args: string[] = [], opts: SpawnOpts = {}): LabProcess {
    const path = script.startsWith('file:') ? fileURLToPath(script) : script;
    const ts = /\.(ts|mts|cts)$/.test(path);
    return this.spawn(
      node,
      [...(opts.wrap ?? []), process.execPath, ...(ts ? ['--import', tsxImport()] : []), path, ...args],
      opts,
    );
  }

  /**
   * Runs a snippet of TypeScript/JavaScript (ESM) inside a namespace, written to a temporary file. Relative imports
   * do not resolve from there: use `node:` modules, or import absolute file URLs you pass in `args`.
   */
  nodeCode(node: string, code: string, args: string[] = [], opts: SpawnOpts = {}): LabProcess {
    const dir = join(stateDir(), this.id);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `snippet-${Date.now()}-${randomBytes(3).toString('hex')}.mts`);
    writeFileSync(file, code);
    return this.node(node, file, args, opts);
  }

  /** Starts the probe agent (plain UDP/TCP sockets over JSON lines) in a namespace and waits until it is ready. */
  async agent(node: string, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Agent> {
    const ext = import.meta.url.endsWith('.ts') ? 'ts' : 'js';
    const script = fileURLToPath(new URL(`./agent-script.${ext}`, import.meta.url));
    const proc = this.node(node, script);
    try {
      await proc.next((m) => m.ev === 'ready', {
        timeoutMs: opts.timeoutMs ?? LAB_START_TIMEOUT_MS,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (err) {
      await proc.close();
      throw err;
    }
    return new Agent(proc);
  }

  // ---------------------------------------------------------------- NAT and links

  /**
   * Switches a router's NAT behaviour (options not given keep their current value when `merge` is true, else reset
   * to defaults) and flushes its conntrack table so no old mapping survives.
   */
  async setNat(router: string, opts: NatOptions | NatType, merge = false): Promise<ResolvedNatOptions> {
    this.#alive();
    this.#router(router);
    const nat = resolveNat(opts, merge ? this.#state.nat[router] : NAT_DEFAULTS);
    await this.#applyNat(router, nat);
    await this.flushConntrack(router);
    this.#state.nat[router] = nat;
    this.#save();
    return { ...nat };
  }

  /** Forgets every mapping of a router (conntrack entries and the endpoint-independent maps). */
  async flushConntrack(router: string): Promise<void> {
    this.#alive();
    this.#router(router);
    const ns = this.ns(router);
    await run('ip', ['netns', 'exec', ns, 'conntrack', '-F']);
    await run('ip', [
      'netns',
      'exec',
      ns,
      'sh',
      '-c',
      'nft flush set ip npnat adf 2>/dev/null; nft flush map ip npnat eim 2>/dev/null; true',
    ]);
  }

  /** Changes a link's delay / jitter / loss / rate (per direction) while running. Unset fields keep their value. */
  async setLink(link: string, shape: LinkShape): Promise<ResolvedLinkShape> {
    this.#alive();
    if (!this.topology.links[link]) {
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `no lab link "${link}" (links: ${Object.keys(this.topology.links).join(', ')})`,
      );
    }
    const prev = this.#state.links[link]!;
    const next = resolveShape(shape, prev);
    this.#state.links[link] = next;
    const l = this.topology.links[link]!;
    try {
      await Promise.all([l.child, l.parent].map((node) => this.#applyShape(node)));
    } catch (err) {
      this.#state.links[link] = prev;
      await Promise.allSettled([l.child, l.parent].map((node) => this.#applyShape(node)));
      throw err;
    }
    this.#save();
    return { ...next };
  }

  /** Packets the internet namespace dropped because they were addressed outside the lab. */
  async outsideDrops(): Promise<number> {
    const out = await mustRun('ip', [
      'netns',
      'exec',
      this.ns('internet'),
      'nft',
      'list',
      'counter',
      'ip',
      'npinet',
      'outside',
    ]);
    const m = /packets (\d+)/.exec(out);
    return m ? Number(m[1]) : 0;
  }

  /** Conntrack entries of a router (raw `conntrack -L` lines), for debugging and tests. */
  async conntrack(router: string): Promise<string[]> {
    this.#router(router);
    const r = await run('ip', ['netns', 'exec', this.ns(router), 'conntrack', '-L']);
    return r.stdout.split('\n').filter((l) => l.trim());
  }

  // ---------------------------------------------------------------- tear-down

  /** Kills every process of the lab and deletes its namespaces (and with them every veth). Idempotent. */
  async down(): Promise<void> {
    if (this.#down) return;
    this.#down = true;
    if (this.#onExit) process.off('exit', this.#onExit);
    await Promise.all([...this.#procs].map((p) => p.close().catch(() => {})));
    await Lab.#destroy(this.#state);
    removeFile(this.#statePath);
    removeFile(join(stateDir(), this.id));
    this.#log.info({ id: this.id }, 'lab down');
  }

  get isDown(): boolean {
    return this.#down;
  }

  #alive(): void {
    if (this.#down) throw new NatpunchError('LAB', `lab ${this.id} is down`);
  }

  #save(): void {
    writeJsonAtomic(this.#statePath, this.#state);
  }

  /** Last-resort synchronous clean-up when the owning process exits without down(). */
  #installExitHook(): void {
    this.#onExit = () => {
      for (const p of this.#procs) p.kill('SIGKILL');
      for (const rec of Object.values(this.#state.delayers)) killRecorded(rec);
      for (const name of Object.keys(this.topology.nodes)) {
        const ns = `np${this.id}-${name}`;
        const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5000 });
        for (const pid of (r.stdout ?? '').split(/\s+/).filter(Boolean).map(Number)) {
          try {
            if (pid !== process.pid) process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        spawnSync('ip', ['netns', 'del', ns], { timeout: 5000 });
      }
      removeFile(this.#statePath);
      removeFile(join(dirname(this.#statePath), this.id));
    };
    process.on('exit', this.#onExit);
  }

  // ---------------------------------------------------------------- building

  async #build(signal: AbortSignal): Promise<void> {
    const topo = this.topology;
    const nsOf = (n: string) => `np${this.id}-${n}`;
    // 1) namespaces and veth pairs, created directly inside the namespaces (never in the root namespace).
    const batch: string[] = [];
    for (const name of topo.order) batch.push(`netns add ${nsOf(name)}`);
    Object.values(topo.links).forEach((l, i) => {
      batch.push(
        `link add ${l.childIf} address ${uplinkMac(i)} netns ${nsOf(l.child)} type veth peer name ${l.parentIf} netns ${nsOf(l.parent)}`,
      );
    });
    await mustRun('ip', ['-batch', '-'], { input: `${batch.join('\n')}\n`, signal });
    // 2) every namespace configures itself, in parallel.
    await Promise.all(
      topo.order.map((name) =>
        mustRun('ip', ['netns', 'exec', nsOf(name), 'sh', '-e', '-c', this.#nodeScript(name)], { signal }),
      ),
    );
    // 3) link shapes given at start-up
    const shaped = new Set<string>();
    for (const [name, s] of Object.entries(this.#state.links)) {
      if (!isShaped(s)) continue;
      shaped.add(topo.links[name]!.child);
      shaped.add(topo.links[name]!.parent);
    }
    await Promise.all([...shaped].map((n) => this.#applyShape(n, signal)));
  }

  #nodeScript(name: string): string {
    const topo = this.topology;
    const node = topo.nodes[name]!;
    // IPv4 only: IPv6 off, so no link-local chatter crosses the links (and nothing can bypass the outside-drop rule).
    const L: string[] = [
      'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null || true',
      'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null || true',
      'ip link set lo up',
      // No ICMP rate limiting: tests send few packets, but they must see every error the NAT profile allows.
      'echo 0 > /proc/sys/net/ipv4/icmp_ratelimit',
      'echo 1000000 > /proc/sys/net/ipv4/icmp_msgs_per_sec 2>/dev/null || true',
    ];
    const sysctl = (key: string, value: string | number) =>
      L.push(`echo ${value} > /proc/sys/${key.replace(/\./g, '/')}`);
    if (node.kind === 'internet') {
      sysctl('net.ipv4.ip_forward', 1);
      for (const { ifname, cidr } of topo.internetAddrs)
        L.push(`ip addr add ${cidr} dev ${ifname}`, `ip link set ${ifname} up`);
      // extra addresses of public hosts outside their link prefix get a route via the primary address
      for (const l of Object.values(topo.links)) {
        if (l.parent !== 'internet') continue;
        const n = topo.nodes[l.child]!;
        const first = n.cidrs[0]!;
        for (const c of n.cidrs.slice(1)) {
          const [, len] = c.split('/');
          if (len !== first.split('/')[1] || !sameNet(c, first))
            L.push(`ip route add ${c.split('/')[0]}/32 via ${n.addrs[0]} dev ${l.parentIf}`);
        }
      }
      L.push(`nft -f - <<'EOF'
table ip npinet {
  set lab { type ipv4_addr; flags interval; auto-merge; elements = { ${topo.publicPrefixes.join(', ')} } }
  counter outside {}
  chain prerouting { type filter hook prerouting priority raw; policy accept;
    ip daddr != @lab counter name "outside" drop
  }
  chain output { type filter hook output priority raw; policy accept;
    ip daddr != @lab counter name "outside" drop
  }
}
EOF`);
      return L.join('\n');
    }
    const link = topo.links[name]!;
    node.cidrs.forEach((c, i) => {
      // extra addresses outside the primary prefix are host routes (/32) announced by the internet namespace
      const cidr = i > 0 && !sameNet(c, node.cidrs[0]!) ? `${c.split('/')[0]}/32` : c;
      L.push(`ip addr add ${cidr} dev ${link.childIf}`);
    });
    L.push(`ip link set ${link.childIf} up`, `ip route add default via ${node.gateway} dev ${link.childIf}`);
    if (node.kind === 'router') {
      sysctl('net.ipv4.ip_forward', 1);
      // Bridged LAN traffic must not enter iptables/nft, or same-LAN packets would be NATed.
      L.push(
        'for f in /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/bridge/bridge-nf-call-arptables; do [ -w $f ] && echo 0 > $f || true; done',
      );
      const prefixLen = node.lanCidr!.split('/')[1];
      L.push('ip link add lan type bridge', `ip addr add ${node.lanAddr}/${prefixLen} dev lan`, 'ip link set lan up');
      for (const l of Object.values(topo.links)) {
        if (l.parent === name) L.push(`ip link set ${l.parentIf} master lan`, `ip link set ${l.parentIf} up`);
      }
      const nat = this.#state.nat[name]!;
      // rules first: loading them pulls in nf_conntrack, whose per-namespace timeout sysctls are set next
      L.push(`nft -f - <<'EOF'\n${natRuleset(nat, node.addrs[0]!)}EOF`);
      L.push(...conntrackTimeouts(nat));
    }
    return L.join('\n');
  }

  #applyNat(router: string, nat: ResolvedNatOptions): Promise<void> {
    return this.#serial(router, () => this.#applyNatNow(router, nat));
  }

  async #applyNatNow(router: string, nat: ResolvedNatOptions): Promise<void> {
    const node = this.topology.nodes[router]!;
    const script = [`nft -f - <<'EOF'\n${natRuleset(nat, node.addrs[0]!)}EOF`, ...conntrackTimeouts(nat)].join('\n');
    await mustRun('ip', ['netns', 'exec', this.ns(router), 'sh', '-e', '-c', script]);
  }

  #serial<T>(node: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#queues.get(node) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.catch(() => {});
    this.#queues.set(node, settled);
    void settled.then(() => {
      if (this.#queues.get(node) === settled) this.#queues.delete(node);
    });
    return next;
  }

  #applyShape(node: string, signal?: AbortSignal): Promise<void> {
    return this.#serial(node, () => this.#applyShapeNow(node, signal));
  }

  async #applyShapeNow(node: string, signal?: AbortSignal): Promise<void> {
    const plan = planNamespace(this.topology, this.#state.links, node);
    const ns = this.ns(node);
    await mustRun('ip', ['netns', 'exec', ns, 'sh', '-e', '-c', plan.script], signal ? { signal } : {});
    const old = this.#state.delayers[node];
    if (old) {
      killRecorded(old, 'SIGKILL');
      delete this.#state.delayers[node];
      // its queue is free only once its netlink socket is closed (the new delayer also retries on EBUSY)
      for (let i = 0; i < 100 && processRunning(old); i++) await new Promise((r) => setTimeout(r, 10));
    }
    if (plan.delayerArgs.length > 0) {
      const bin = await ensureDelayer(signal);
      this.#state.delayers[node] = await this.#startDelayer(ns, bin, plan.delayerArgs);
    }
    this.#save();
  }

  /** Starts a detached delayer (it outlives a CLI invocation); returns once it has bound its queues. */
  async #startDelayer(ns: string, bin: string, args: string[]): Promise<ProcRecord> {
    const dir = join(stateDir(), this.id);
    mkdirSync(dir, { recursive: true });
    const logFd = openSync(join(dir, `delayer-${ns}.log`), 'a');
    const child = spawn('ip', ['netns', 'exec', ns, bin, ...args], {
      stdio: ['ignore', 'pipe', logFd],
      detached: true,
    });
    closeSync(logFd);
    const ok = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), LAB_START_TIMEOUT_MS);
      child.stdout!.setEncoding('utf8');
      let buf = '';
      child.stdout!.on('data', (d: string) => {
        buf += d;
        if (buf.includes('ready')) {
          clearTimeout(timer);
          resolve(true);
        }
      });
      child.once('exit', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    child.stdout!.destroy();
    child.unref();
    if (!ok || !child.pid) {
      child.kill('SIGKILL');
      throw new NatpunchError('LAB', `the link delayer did not start in ${ns} (see ${join(dir, `delayer-${ns}.log`)})`);
    }
    const rec: ProcRecord = { pid: child.pid };
    const start = processStartTime(child.pid);
    if (start !== undefined) rec.start = start;
    return rec;
  }
}

function isTopologySpec(x: LabOptions | TopologySpec): x is TopologySpec {
  return typeof (x as TopologySpec).routers === 'object' && typeof (x as TopologySpec).hosts === 'object';
}

function statSafe(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** True while the recorded process exists and is not a zombie. */
function processRunning(rec: ProcRecord): boolean {
  const start = processStartTime(rec.pid);
  if (start === undefined || (rec.start !== undefined && start !== rec.start)) return false;
  try {
    const stat = readFileSync(`/proc/${rec.pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function sameNet(a: string, b: string): boolean {
  const [ia, la] = a.split('/');
  const [ib, lb] = b.split('/');
  if (la !== lb) return false;
  const len = Number(la);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const toInt = (ip: string) => ip.split('.').reduce((acc, p) => ((acc << 8) | Number(p)) >>> 0, 0);
  return (toInt(ia!) & mask) >>> 0 === (toInt(ib!) & mask) >>> 0;
}

/** Per-namespace conntrack UDP timeouts = the NAT's mapping lifetime (both unreplied and "stream" flows). */
function conntrackTimeouts(nat: ResolvedNatOptions): string[] {
  const t = nat.mappingTimeoutSec;
  return [
    `echo ${t} > /proc/sys/net/netfilter/nf_conntrack_udp_timeout`,
    `echo ${t} > /proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream`,
    // rewriteTcpSequence (nat.ts): liberal TCP window tracking, so mismatching acknowledgments reach the host
    `echo ${nat.rewriteTcpSequence ? 1 : 0} > /proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal`,
  ];
}

export { NO_SHAPE };
