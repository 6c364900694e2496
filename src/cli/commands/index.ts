import type { Command } from 'commander';

/** Each command module adds itself (its options and action) to the program. */
type Register = (program: Command) => void;
export type CommandLoader = () => Promise<{ register: Register }>;

export interface CommandEntry {
  /** One line for `natpunch --help`, which lists the commands WITHOUT loading them (start-up time counts). */
  summary: string;
  /** Arguments as the usage line shows them, e.g. "<server>". */
  args?: string;
  load: CommandLoader;
}

/** One entry per command, keyed by the command's name; a command module is imported only when it is run. */
export const commands: Record<string, CommandEntry> = {
  serve: {
    summary:
      'run the natpunch server: STUN, rendezvous and the relay for its peers (full TURN with --turn) on UDP and TCP',
    load: () => import('./serve.js'),
  },
  stun: {
    summary: "ask a STUN server for this host's mapped (public) address",
    args: '<server>',
    load: () => import('./stun.js'),
  },
  netcheck: {
    summary: 'discover what the NAT in front of this host does (mapping, filtering, ports, hairpin, port mapping)',
    load: () => import('./netcheck.js'),
  },
  keygen: {
    summary: 'create a peer key pair (Ed25519); the public key is the peer id',
    load: () => import('./keygen.js'),
  },
  listen: {
    summary: 'wait for a peer to connect and pipe stdin/stdout over its stream (netcat style)',
    load: () => import('./listen.js'),
  },
  connect: {
    summary: 'connect to a peer by name or key and pipe stdin/stdout over one stream (netcat style)',
    args: '[peer]',
    load: () => import('./connect.js'),
  },
  trust: {
    summary: 'pin a peer name to a key in known_peers (accept a key change)',
    args: '<name> <key>',
    load: () => import('./trust.js'),
  },
  forget: {
    summary: "remove a peer name's pinned key from known_peers",
    args: '<name>',
    load: () => import('./forget.js'),
  },
  expose: {
    summary: 'let peers reach a local TCP service (PORT or HOST:PORT) through this machine',
    args: '[targets...]',
    load: () => import('./expose.js'),
  },
  forward: {
    summary: 'listen on a local TCP port; each connection goes to a peer running `expose`',
    args: '<spec>',
    load: () => import('./forward.js'),
  },
  socks: {
    summary: 'a local SOCKS5 server whose connections exit on a peer running `expose --allow-dest`',
    load: () => import('./socks.js'),
  },
  map: {
    summary: 'open a port mapping on the gateway (PCP, NAT-PMP or UPnP IGD) until Ctrl-C',
    args: '<PORT>',
    load: () => import('./map.js'),
  },
  turn: {
    summary: 'TURN relay (RFC 8656): a standalone server, a client, credentials',
    load: () => import('./turn.js'),
  },
  lab: { summary: 'a NAT lab of real Linux NATs in network namespaces (root)', load: () => import('./lab.js') },
};
