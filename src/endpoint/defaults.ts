/**
 * Every technique is on unless the caller turns it off: the defaults of connect() / listen() / createEndpoint(), in
 * one place. The one exception is the environment's NATPUNCH_PORT_MAPPING=0, which turns the port-mapping default
 * off: the test runner (scripts/test.mjs) sets it so nothing outside a lab namespace ever asks the machine's real
 * gateway for a mapping; lab peers set it back to 1 inside their namespaces.
 */
import { NatpunchError } from '../util/errors.js';
import { normalizeHardNat, type HardNatOptions } from '../traversal/hardwire.js';
import type { PortMapperOptions } from '../portmap/mapper.js';
import type { CommonOptions, RelayOption, TransportMode } from './types.js';
import type { TcpSequenceMode } from '../traversal/tcp-session.js';

/** The environment variable that can turn the port-mapping default off ("0") or on ("1"). */
export const PORT_MAPPING_ENV = 'NATPUNCH_PORT_MAPPING';

export interface ResolvedTechniques {
  hardNat: HardNatOptions | null;
  portMapping: PortMapperOptions | null;
  relay: Exclude<RelayOption, false> | null;
  transport: TransportMode;
  tcpSequence: TcpSequenceMode;
}

/** Port mapping's default: on, unless NATPUNCH_PORT_MAPPING=0. */
export function portMappingDefault(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env[PORT_MAPPING_ENV];
  return !(v === '0' || v === 'false' || v === 'off');
}

/**
 * `hasServer`: the rendezvous is a host[:port] (not a factory, not direct mode): the NAT measurement has STUN
 * servers to ask, and 'auto' relay credentials can come from it.
 */
export function resolveTechniques(
  o: CommonOptions & { relay?: RelayOption },
  hasServer: boolean,
  env: NodeJS.ProcessEnv = process.env,
): ResolvedTechniques {
  if (o.transport !== undefined && !['udp', 'tcp', 'auto'].includes(o.transport)) {
    throw new NatpunchError('BAD_ARGUMENT', `transport must be udp, tcp or auto (got ${String(o.transport)})`);
  }
  const hard = o.hardNat === undefined ? (hasServer ? {} : null) : normalizeHardNat(o.hardNat);
  const pm =
    o.portMapping === undefined
      ? portMappingDefault(env)
        ? {}
        : null
      : o.portMapping === false
        ? null
        : o.portMapping === true
          ? {}
          : o.portMapping;
  const relay = o.relay === undefined ? 'auto' : o.relay === false ? null : o.relay;
  return {
    hardNat: hard,
    portMapping: pm,
    relay,
    transport: o.transport ?? 'auto',
    tcpSequence: o.tcpSequence ?? 'auto',
  };
}
