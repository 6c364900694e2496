import { InvalidArgumentError, type Command } from 'commander';
import { isNatpunchError, NatpunchError } from '../util/errors.js';
import { eventStream, stdoutIsData } from './event-stream.js';

export interface GlobalOptions {
  debug?: boolean;
}

/**
 * Wraps a command action: a NatpunchError (or any error) becomes one line on stderr and exit code 1 (with --json an
 * `{"event":"error","code",...}` line on the command's event stream); the stack only with --debug.
 */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void) {
  return async (...args: A): Promise<void> => {
    try {
      await fn(...args);
    } catch (err) {
      const cmd = args[args.length - 1] as Command | undefined;
      const opts = (cmd?.optsWithGlobals?.() ?? {}) as { debug?: boolean; json?: boolean; out?: string };
      const debug = Boolean(opts.debug) || process.env.NATPUNCH_DEBUG === '1';
      if (opts.json && !debug) {
        // --json: the failure is an event like the others, on the stream the command's events use.
        const { createPrinter, errorEvent } = await import('./events.js');
        createPrinter({ json: true, stdoutIsData: stdoutIsData(cmd?.name(), opts) })(errorEvent(err, errorCode(err)));
      } else {
        printError(err, debug);
      }
      process.exitCode = EXIT_FAILURE;
    }
  };
}

/**
 * Exit codes (docs/cli.md): 0 done; 1 the work failed, including a value the command understood but refused
 * (a NatpunchError such as BAD_ARGUMENT); 2 the command line itself could not be parsed (commander's errors:
 * unknown command or option, missing argument, an option value its parser rejects).
 */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** The code a failure line ends with: a NatpunchError's, a system error's (ECONNREFUSED, ...), else ERROR. */
export function errorCode(err: unknown): string {
  if (isNatpunchError(err)) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z][A-Z0-9_]*$/.test(code) ? code : 'ERROR';
}

export function printError(err: unknown, debug: boolean): void {
  if (debug && err instanceof Error) {
    process.stderr.write(`${err.stack ?? err.message}\n`);
    return;
  }
  const code = ` [${errorCode(err)}]`;
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`natpunch: ${message.split('\n')[0]}${code}\n`);
}

/** Progress lines go to stderr so stdout stays clean for data and --json. */
export function progress(quiet: boolean | undefined, line: string): void {
  if (!quiet) process.stderr.write(`${line}\n`);
}

/**
 * A command's --json result: one event line in the one schema ({ time, event, ...fields }) on the command's event
 * stream (stdout unless stdout carries data: src/cli/event-stream.ts).
 */
export function printEvent(event: string, fields: Record<string, unknown>, stdoutCarriesData = false): void {
  eventStream(stdoutCarriesData).write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
}

/** Parses "host", "host:port", "[v6]:port" into parts; `defaultPort` when none is given. */
export function parseHostPort(text: string, defaultPort: number): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (v6) return { host: v6[1]!, port: v6[2] ? checkPort(v6[2], text) : defaultPort };
  const colons = text.split(':').length - 1;
  if (colons === 1) {
    const [host, port] = text.split(':');
    return { host: host!, port: checkPort(port!, text) };
  }
  return { host: text, port: defaultPort };
}

export function checkPort(text: string, context = text): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new NatpunchError('BAD_ARGUMENT', `invalid port in "${context}": a port is a number from 0 to 65535`);
  }
  return port;
}

/** commander argParser for integer options with bounds. */
export function intOption(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    }
    return n;
  };
}
