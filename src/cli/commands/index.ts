import type { Command } from 'commander';

/** Each command module adds itself to the program. One line per command; keep the list sorted. */
type Register = (program: Command) => void;

export const commands: Array<() => Promise<{ register: Register }>> = [
  () => import('./serve.js'),
  () => import('./stun.js'),
  () => import('./lab.js'),
  () => import('./connect.js'),
  () => import('./keygen.js'),
  () => import('./listen.js'),
  () => import('./netcheck.js'),
  () => import('./map.js'),
  () => import('./turn.js'),
  () => import('./expose.js'),
  () => import('./forward.js'),
  () => import('./socks.js'),
];
