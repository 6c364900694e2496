import { NatpunchError } from '../util/errors.js';
import type { TransportMode } from '../natpunch.js';

/** `--transport udp|tcp|auto` (connect and listen). */
export function parseTransport(value: string | undefined): TransportMode {
  const v = (value ?? 'auto').toLowerCase();
  if (v === 'udp' || v === 'tcp' || v === 'auto') return v;
  throw new NatpunchError('BAD_ARGUMENT', `--transport must be udp, tcp or auto (got "${String(value).slice(0, 40)}")`);
}
