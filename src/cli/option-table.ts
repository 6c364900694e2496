import { Option, type Command } from 'commander';
import { parseTextValue } from '../server/config.js';
import { camelName, envName, flagSpelling, formatValue, type OptionDef } from '../server/options.js';

/** commander's error type for a bad option argument (one line, exit 1). */
class InvalidArgumentError extends Error {
  override name = 'InvalidArgumentError';
}

/**
 * Adds one commander option per definition. Defaults are shown in --help but resolved later (src/server/config.ts),
 * so a value's source (flag, env, file, default) stays known: only flags given on the command line are read here.
 */
export function addOptionTable(cmd: Command, table: readonly OptionDef[]): Command {
  for (const o of table) {
    const env = o.flagOnly ? '' : `; env ${envName(o.name)}, file key ${o.name}`;
    const dflt = o.default !== undefined && o.kind !== 'bool' ? ` (default: ${formatValue(o, o.default)})` : '';
    const help = o.kind === 'bool' && o.default === true ? `on by default, this turns it off: ${o.help}` : o.help;
    const opt = new Option(flagSpelling(o), `${help}${dflt}${env}`);
    if (o.kind === 'enum') opt.choices(o.choices!);
    if (o.kind !== 'bool' && o.kind !== 'enum') {
      opt.argParser((value: string, previous: unknown) => {
        try {
          return parseTextValue(o, value, `--${o.name}`, previous);
        } catch (err) {
          throw new InvalidArgumentError((err as Error).message);
        }
      });
    }
    cmd.addOption(opt);
  }
  return cmd;
}

/** The values given on the command line (not defaults), by option name. */
export function flagValues(cmd: Command, table: readonly OptionDef[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  const opts = cmd.opts();
  for (const o of table) {
    const key = camelName(o.name);
    if (cmd.getOptionValueSource(key) === 'cli') out.set(o.name, opts[key]);
  }
  return out;
}
