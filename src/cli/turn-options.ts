import type { Command } from 'commander';
import { CombinedStore, SharedSecretStore, UsersFileStore, type CredentialStore } from '../relay/auth.js';
import { TurnServer, type TurnServerOptions } from '../relay/server.js';
import { NatpunchError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { SERVE_OPTIONS, TURN_OPTION_NAMES } from '../server/options.js';
import { addOptionTable } from './option-table.js';

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

/** The TURN rows of the serve option table (src/server/options.ts): one definition for both commands. */
export const TURN_OPTIONS = SERVE_OPTIONS.filter((o) => (TURN_OPTION_NAMES as readonly string[]).includes(o.name));

export function addTurnServerOptions(cmd: Command): Command {
  return addOptionTable(cmd, TURN_OPTIONS);
}

export function credentialsFromFlags(flags: TurnFlags): CredentialStore {
  const stores: CredentialStore[] = [];
  if (flags.users) stores.push(UsersFileStore.load(flags.users));
  if (flags.authSecret?.length) stores.push(new SharedSecretStore(flags.authSecret));
  if (stores.length === 0) {
    throw new NatpunchError(
      'BAD_ARGUMENT',
      'TURN needs credentials: give --users FILE and/or --auth-secret SECRET (there is no open-relay mode)',
    );
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

export function turnServerFromFlags(
  flags: TurnFlags,
  logger?: Logger,
  extra: Partial<TurnServerOptions> = {},
): TurnServer {
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
