import type { Command } from 'commander';
import { NatpunchError } from '../../util/errors.js';
import { stunBinding } from '../../stun/client.js';
import { DEFAULT_STUN_PORT } from '../../wire/stun/index.js';
import { action, intOption, parseHostPort, printEvent } from '../util.js';

interface StunOptions {
  tcp?: boolean;
  json?: boolean;
  timeout: number;
}

/** Default for the CLI: shorter than the RFC's 39.5 s transaction, so a dead server answers in seconds. */
const DEFAULT_CLI_TIMEOUT_MS = 5000;

function show(e: { address: string; port: number }): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

export function register(program: Command): void {
  program
    .command('stun')
    .description("ask a STUN server for this host's mapped (public) address")
    .argument('<server>', 'server as host, host:port or [v6]:port (default port 3478)')
    .option('--tcp', 'use TCP instead of UDP')
    .option('--json', 'print the result as JSON')
    .option(
      '--timeout <ms>',
      'give up after this many milliseconds',
      intOption('--timeout', 1, 600_000),
      DEFAULT_CLI_TIMEOUT_MS,
    )
    .action(
      action(async (server: string, opts: StunOptions) => {
        let target;
        try {
          target = parseHostPort(server, DEFAULT_STUN_PORT);
        } catch (err) {
          throw new NatpunchError('BAD_ARGUMENT', `bad server "${server}": ${(err as Error).message}`, { cause: err });
        }
        const r = await stunBinding(
          { host: target.host, port: target.port },
          { tcp: opts.tcp, timeoutMs: opts.timeout },
        );
        if (opts.json) {
          printEvent('mapped', {
            server: r.server,
            transport: opts.tcp ? 'tcp' : 'udp',
            mapped: r.mapped,
            local: r.local,
            from: r.from,
            rttMs: Math.round(r.rttMs * 100) / 100,
            ...(r.responseOrigin ? { responseOrigin: r.responseOrigin } : {}),
            ...(r.otherAddress ? { otherAddress: r.otherAddress } : {}),
            ...(r.software !== undefined ? { software: r.software } : {}),
          });
          return;
        }
        process.stdout.write(`${show(r.mapped)}\n`);
        const extra = [
          `from ${show(r.from)} over ${opts.tcp ? 'tcp' : 'udp'} in ${r.rttMs.toFixed(1)} ms`,
          r.software ? `server software "${r.software}"` : '',
          r.otherAddress ? `RFC 5780 other address ${show(r.otherAddress)}` : '',
        ].filter(Boolean);
        process.stderr.write(`${extra.join(', ')}\n`);
      }),
    );
}
