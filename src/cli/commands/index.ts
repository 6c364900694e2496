import type { Command } from 'commander';

/** Each command module adds itself to the program. One entry per command, keyed by the command's name. */
type Register = (program: Command) => void;
export type CommandLoader = () => Promise<{ register: Register }>;

export const commands: Record<string, CommandLoader> = {
  serve: () => import('./serve.js'),
  stun: () => import('./stun.js'),
  netcheck: () => import('./netcheck.js'),
  keygen: () => import('./keygen.js'),
  listen: () => import('./listen.js'),
  connect: () => import('./connect.js'),
  trust: () => import('./trust.js'),
  forget: () => import('./forget.js'),
  expose: () => import('./expose.js'),
  forward: () => import('./forward.js'),
  socks: () => import('./socks.js'),
  map: () => import('./map.js'),
  turn: () => import('./turn.js'),
  lab: () => import('./lab.js'),
};
