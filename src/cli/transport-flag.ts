import { NatpunchError } from '../util/errors.js';
import type { TransportMode } from '../natpunch.js';
import { TCP_SEQUENCE_MODES, type TcpSequenceMode } from '../traversal/tcp-session.js';

/** `--transport udp|tcp|auto` (connect and listen). */
export function parseTransport(value: string | undefined): TransportMode {
  const v = (value ?? 'auto').toLowerCase();
  if (v === 'udp' || v === 'tcp' || v === 'auto') return v;
  throw new NatpunchError('BAD_ARGUMENT', `--transport must be udp, tcp or auto (got "${String(value).slice(0, 40)}")`);
}

/** `--tcp-seq auto|off|natblaster|stunt1` (connect and listen): the TCP techniques beyond P2P-NAT. */
export function parseTcpSequence(value: string | undefined): TcpSequenceMode {
  const v = (value ?? 'auto').toLowerCase();
  const mode = TCP_SEQUENCE_MODES.find((m) => m === v);
  if (mode) return mode;
  throw new NatpunchError(
    'BAD_ARGUMENT',
    `--tcp-seq must be ${TCP_SEQUENCE_MODES.join(', ')} (got "${String(value).slice(0, 40)}")`,
  );
}

export const TCP_SEQ_FLAG = '--tcp-seq <auto|off|natblaster|stunt1>';
export const TCP_SEQ_HELP =
  'TCP beyond P2P-NAT (root): auto = STUNT #1 (rendezvous with serve --spoof) or NATBlaster when P2P-NAT fails; off; or only that technique';
