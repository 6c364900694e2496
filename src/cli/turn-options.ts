import type { Command } from 'commander';
import { CombinedStore, SharedSecretStore, UsersFileStore, type CredentialStore } from '../relay/auth.js';
import { DEFAULT_MAX_ALLOCATIONS_PER_SOURCE, TurnServer, type TurnServerOptions } from '../relay/server.js';
import { NatpunchError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { intOption } from './util.js';

/** TURN server flags, shared by `natpunch serve --turn` and `natpunch turn serve`. */
export interface TurnFlags {
  realm?: string;
  users?: string;
  authSecret?: string[];
  relayAddress?: string;
  relayAddress6?: string;
  externalIp?: string;
  allowPeer?: string[];
  denyPeer?: string[];
  maxAllocations?: number;
  userQuota?: number;
  maxAllocationsPerIp?: number;
  maxBps?: number;
  minPort?: number;
  maxPort?: number;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function addTurnServerOptions(cmd: Command): Command {
  return cmd
    .option('--realm <realm>', 'TURN realm (RFC 8489 §9.2)', 'natpunch')
    .option('--users <file>', 'long-term credentials file: one "user:password" or "user:0x<md5 key>" per line')
    .option('--auth-secret <secret>', 'shared secret for time-limited credentials (coturn use-auth-secret); repeat to rotate', collect)
    .option('--relay-address <ip>', 'IPv4 address relayed allocations use (default: first non-loopback IPv4)')
    .option('--relay-address6 <ip>', 'IPv6 relay address (enables IPv6 and dual allocations)')
    .option('--external-ip <ip>', 'public IPv4 address of --relay-address behind a 1:1 NAT (cloud VMs); announced to clients')
    .option('--allow-peer <cidr>', 'allow relaying to this block although denied by default (e.g. 10.0.0.0/8); repeatable', collect)
    .option('--deny-peer <cidr>', 'never relay to this block; repeatable', collect)
    .option('--max-allocations <n>', 'total allocations', intOption('--max-allocations', 1, 1_000_000))
    .option('--user-quota <n>', 'allocations per user', intOption('--user-quota', 1, 1_000_000))
    .option(
      '--max-allocations-per-ip <n>',
      `allocations per client IPv4 address or IPv6 /64 (default ${DEFAULT_MAX_ALLOCATIONS_PER_SOURCE})`,
      intOption('--max-allocations-per-ip', 1, 1_000_000),
    )
    .option('--max-bps <bytes>', 'per-allocation relay bandwidth cap in bytes/s (0 = none)', intOption('--max-bps', 0, 2 ** 40))
    .option('--min-port <port>', 'lowest relay port', intOption('--min-port', 1024, 65535))
    .option('--max-port <port>', 'highest relay port', intOption('--max-port', 1024, 65535));
}

export function credentialsFromFlags(flags: TurnFlags): CredentialStore {
  const stores: CredentialStore[] = [];
  if (flags.users) stores.push(UsersFileStore.load(flags.users));
  if (flags.authSecret?.length) stores.push(new SharedSecretStore(flags.authSecret));
  if (stores.length === 0) {
    throw new NatpunchError('BAD_ARGUMENT', 'TURN needs credentials: give --users FILE and/or --auth-secret SECRET (there is no open-relay mode)');
  }
  return stores.length === 1 ? stores[0]! : new CombinedStore(stores);
}

/**
 * TurnServer options from the flags. `credentials: false` (serve's default peer-relay mode without --turn) takes no
 * users: the TURN flags then only set the relay address, policy and quotas.
 */
export function turnOptionsFromFlags(flags: TurnFlags, credentials = true): TurnServerOptions {
  if (flags.minPort !== undefined && flags.maxPort !== undefined && flags.minPort > flags.maxPort) {
    throw new NatpunchError('BAD_ARGUMENT', '--min-port must not exceed --max-port');
  }
  return {
    ...(credentials ? { credentials: credentialsFromFlags(flags) } : {}),
    ...(flags.realm ? { realm: flags.realm } : {}),
    ...(flags.relayAddress ? { relayAddress: flags.relayAddress } : {}),
    ...(flags.relayAddress6 ? { relayAddress6: flags.relayAddress6 } : {}),
    ...(flags.externalIp ? { externalAddress: flags.externalIp } : {}),
    ...(flags.allowPeer ? { allowPeers: flags.allowPeer } : {}),
    ...(flags.denyPeer ? { denyPeers: flags.denyPeer } : {}),
    ...(flags.maxAllocations ? { maxAllocations: flags.maxAllocations } : {}),
    ...(flags.userQuota ? { maxAllocationsPerUser: flags.userQuota } : {}),
    ...(flags.maxAllocationsPerIp ? { maxAllocationsPerSource: flags.maxAllocationsPerIp } : {}),
    ...(flags.maxBps ? { bandwidth: flags.maxBps } : {}),
    ...(flags.minPort ? { minPort: flags.minPort } : {}),
    ...(flags.maxPort ? { maxPort: flags.maxPort } : {}),
    software: 'natpunch',
  };
}

export function turnServerFromFlags(flags: TurnFlags, logger?: Logger, extra: Partial<TurnServerOptions> = {}): TurnServer {
  const options = turnOptionsFromFlags(flags);
  try {
    return new TurnServer({
      ...options,
      ...(logger ? { logger } : {}),
      ...extra,
    });
  } catch (err) {
    if (err instanceof RangeError) throw new NatpunchError('BAD_ARGUMENT', err.message);
    throw err;
  }
}
