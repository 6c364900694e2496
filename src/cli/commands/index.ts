import type { Command } from 'commander';

/** Each command module adds itself to the program. One line per command; keep the list sorted. */
type Register = (program: Command) => void;

export const commands: Array<() => Promise<{ register: Register }>> = [
  // e.g. () => import('./serve.js'),
  () => import('./map.js'),
];
