/**
 * The technique switches every session-making command shares. Every technique is on by default (src/endpoint/
 * defaults.ts); `--no-*` turns one off. The old opt-in spellings (`--hard-nat`, `--port-mapping`, `--relay auto`)
 * keep working and now only restate the default.
 */
import type { Command } from 'commander';
import { parseRelaySpec } from '../relay/path.js';
import type { CommonOptions, RelayOption } from '../endpoint/types.js';
import { NatpunchError } from '../util/errors.js';

export interface TechniqueFlags {
  relay?: string | boolean;
  portMapping?: boolean;
  hardNat?: boolean;
  budget?: string;
}

export function addTechniqueFlags(cmd: Command, what: 'connect' | 'listen'): Command {
  return cmd
    .option(
      '--relay <user:password@host[:port][?transport=tcp] | auto>',
      what === 'connect'
        ? 'relay to race after the direct techniques (default auto: the relay the rendezvous offers its peers)'
        : 'relay to offer peers (default auto: the relay the rendezvous offers its peers)',
    )
    .option('--no-relay', 'never use a relay (a pair with no direct path then fails)')
    .option(
      '--port-mapping',
      'ask the gateway (PCP, NAT-PMP, UPnP IGD) to map our UDP port (the default; deleted on exit)',
    )
    .option('--no-port-mapping', 'do not ask the gateway for a port mapping')
    .option('--hard-nat', 'measure our NAT against the rendezvous and hard-punch symmetric NATs (the default)')
    .option('--no-hard-nat', 'no NAT measurement, no prediction or birthday punching')
    .option(
      '--budget <sockets,probes,seconds>',
      'opt-in double-random budget for random ↔ random NAT pairs (e.g. 64,20000,20)',
    );
}

function parseBudget(text: string): { sockets: number; probes: number; seconds: number } {
  const parts = text.split(',').map(Number);
  if (parts.length !== 3 || parts.some((n) => !Number.isFinite(n) || n <= 0)) {
    throw new NatpunchError(
      'BAD_ARGUMENT',
      `--budget wants sockets,probes,seconds (three positive numbers), got "${text}"`,
    );
  }
  return { sockets: parts[0]!, probes: parts[1]!, seconds: parts[2]! };
}

/** The flags as connect()/listen() options (absent flags: the library defaults). */
export function techniqueOptions(
  o: TechniqueFlags,
): Pick<CommonOptions, 'portMapping' | 'hardNat'> & { relay?: RelayOption } {
  const out: Pick<CommonOptions, 'portMapping' | 'hardNat'> & { relay?: RelayOption } = {};
  if (o.relay === false) out.relay = false;
  else if (typeof o.relay === 'string') out.relay = o.relay === 'auto' ? 'auto' : parseRelaySpec(o.relay);
  if (o.portMapping !== undefined) out.portMapping = o.portMapping;
  if (o.budget !== undefined) {
    if (o.hardNat === false)
      throw new NatpunchError('BAD_ARGUMENT', '--budget needs hard-NAT punching (drop --no-hard-nat)');
    out.hardNat = { budget: parseBudget(o.budget) };
  } else if (o.hardNat !== undefined) {
    out.hardNat = o.hardNat;
  }
  return out;
}
