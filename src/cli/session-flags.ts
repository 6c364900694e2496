/**
 * The flags the session-making commands share, written once: `listen`/`connect` (netcat style) and the tunnels
 * (`expose`, `forward`, `socks`; the link flags of the last two are in tunnel-output.ts). Each command adds its own
 * flags around these.
 */
import type { Command } from 'commander';
import { DEFAULT_RENDEZVOUS_PORT } from '../endpoint/types.js';
import { TCP_SEQ_FLAG, TCP_SEQ_HELP } from './transport-flag.js';
import { intOption } from './util.js';

/** How often `expose`, `forward` and `socks` print a status event; --status-interval overrides. */
export const DEFAULT_STATUS_INTERVAL_S = 60;

const RENDEZVOUS_FLAG = '--rendezvous <host[:port],...>';
const RENDEZVOUS_HELP = `rendezvous server (default port ${DEFAULT_RENDEZVOUS_PORT}); several, comma-separated, are tried in order when one stops answering`;
export const KEY_FLAG = '--key <file>';
export const KEY_HELP = 'key file (default: NATPUNCH_KEY, else a temporary key)';
export const num = (v: string) => Number(v);

/** --rendezvous: required for the tunnels; for listen/connect optional, as --icmp replaces it. */
export function addRendezvousFlag(cmd: Command, required: boolean): Command {
  return required
    ? cmd.requiredOption(RENDEZVOUS_FLAG, RENDEZVOUS_HELP)
    : cmd.option(RENDEZVOUS_FLAG, `${RENDEZVOUS_HELP}; required unless --icmp`);
}

/** What `listen` and `connect` share after their own flags: key, socket, transport, ending and --json. */
export function addNetcatFlags(cmd: Command, idleHelp: string): Command {
  return cmd
    .option(KEY_FLAG, KEY_HELP)
    .option('--bind <addr[:port]>', 'local UDP address to bind', '0.0.0.0')
    .option('--keepalive <ms>', 'keepalive interval in ms', num)
    .option(
      '--transport <udp|tcp|auto>',
      'udp, tcp (TCP hole punching; needs the native addon) or auto: both, keeping UDP when it works',
      'auto',
    )
    .option(TCP_SEQ_FLAG, TCP_SEQ_HELP, 'auto')
    .option('--idle-timeout <ms>', idleHelp, intOption('--idle-timeout', 1, 86_400_000))
    .option(
      '--no-report',
      'send the rendezvous no outcome report (NAT types, techniques, timings; never payload) after an attempt',
    )
    .option('--json', 'events as JSON lines on stderr (stdout carries the data)');
}

/** The long-running tunnel commands' last flags: --status-interval and --json (events on stdout). */
export function addStatusFlags(cmd: Command): Command {
  return cmd
    .option(
      '--status-interval <s>',
      'print a status line every this many seconds (0: never)',
      num,
      DEFAULT_STATUS_INTERVAL_S,
    )
    .option('--json', 'events as JSON lines on stdout');
}
