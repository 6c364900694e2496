/**
 * The one rule for where a command's --json events go (docs/cli.md, "Events"): stdout, unless the command's stdout
 * carries data — the peer's bytes for `listen`/`connect` (netcat style), the key file for `keygen` without --out —
 * then stderr. Either way that stream carries event lines and nothing else; human lines always go to stderr.
 */

/** Whether COMMAND (with its options) writes data, not events, to stdout. */
export function stdoutIsData(command: string | undefined, opts: { out?: unknown } = {}): boolean {
  return command === 'listen' || command === 'connect' || (command === 'keygen' && !opts.out);
}

/** The stream a command's --json event lines go to. */
export function eventStream(stdoutCarriesData = false): NodeJS.WritableStream {
  return stdoutCarriesData ? process.stderr : process.stdout;
}
