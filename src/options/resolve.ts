import type { Options as YargsOption, PositionalOptions } from 'yargs';
import { ErrorCode, PivotArchiveError } from '../errors.js';
import { optionsOf, type ConfigFor, type RunConfig } from './commands.js';
import { fileKeysOf, readConfigFile, withoutByteOrderMark } from './file.js';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { envOrigin, flagOrigin, givenTwice, parseValue, type Command, type OptionSpec } from './spec.js';
import { sinkScheme } from '../sinks/index.js';

const describe = (spec: OptionSpec, command: Command) => {
  const text = typeof spec.describe === 'string' ? spec.describe : spec.describe[command]!;
  const choices = spec.choices ? ` (${spec.choices.join(', ')})` : '';
  return `${text}${choices}${spec.env ? ` [env: ${spec.env}]` : ''}`;
};

/** The default as help shows it: as the user would write it; none for off switches and empty lists. */
const defaultText = (spec: OptionSpec) => (spec.default === undefined || spec.default === false || (Array.isArray(spec.default) && spec.default.length === 0) ? undefined : String(spec.default));

/**
 * The yargs options of `command`. Every value but booleans and lists is read as the string typed,
 * so errors quote it; yargs gets no defaults, which would hide the config file's values.
 */
export function yargsOptionsOf(command: Command): Record<string, YargsOption> {
  const options: Record<string, YargsOption> = {};
  for (const spec of optionsOf(command).filter((o) => !o.positional)) {
    options[spec.flag] = {
      type: spec.type === 'boolean' ? 'boolean' : 'string',
      array: spec.type === 'strings' || undefined,
      describe: describe(spec, command),
      defaultDescription: defaultText(spec),
    };
  }
  return options;
}

export function yargsPositionalOf(command: Command): { name: string; options: PositionalOptions } | undefined {
  const spec = optionsOf(command).find((o) => o.positional);
  return spec && { name: spec.flag, options: { type: 'string', describe: describe(spec, command) } };
}

export function defaultsOf<C extends Command>(command: C): Partial<ConfigFor<C>> {
  const defaults: Record<string, unknown> = {};
  for (const spec of fileKeysOf(command)) {
    if (spec.default !== undefined) defaults[spec.key] = parseValue(spec, spec.default, { name: `default of --${spec.flag}`, code: ErrorCode.CONFIG });
  }
  return defaults as Partial<ConfigFor<C>>;
}

export const DEFAULT_MAX_ITEM_SIZE = defaultsOf('run').maxItemSize!;

/** Checks across options, once defaults, file and flags are merged. */
const CHECKS: { [C in Command]: (config: ConfigFor<C>) => void } = {
  run: (config: RunConfig) => {
    const sources = [config.archive, config.sample || undefined, config.inbox].filter((x) => x !== undefined);
    if (sources.length === 0) throw new PivotArchiveError(ErrorCode.USAGE, 'no archive: give a path, - for stdin, --inbox DIR or --sample');
    if (sources.length > 1) throw new PivotArchiveError(ErrorCode.USAGE, 'give one of: an archive, --inbox DIR, --sample');
    // A sink's URL typed where the archive goes (helper-115: its password reached every record, the
    // ledger too, once the path's `//` was resolved away from the redactor's sight). Not quoted.
    if (config.archive !== undefined && /^[a-z][a-z0-9+.-]*:\/\//i.test(config.archive)) {
      throw new PivotArchiveError(ErrorCode.USAGE, `the archive is a file path (or - for stdin), not a URL (${config.archive.slice(0, config.archive.indexOf(':'))}://..., not repeated here): a sink is given with --sink`);
    }
    if (config.allDomains && config.domains.length > 0) throw new PivotArchiveError(ErrorCode.USAGE, 'give --domain or --all-domains, not both');
    if (config.inbox && !config.stateDir) throw new PivotArchiveError(ErrorCode.USAGE, '--inbox needs --state-dir, where completed archives are recorded');
    // A Maildir sink makes a mailbox for every target: without a domain, other firms' traders get one each.
    if (sinkScheme(config.sink) === 'maildir' && config.domains.length === 0 && !config.allDomains) {
      throw new PivotArchiveError(
        ErrorCode.USAGE,
        "a maildir sink creates a mailbox for every participant it delivers to: give --domain YOUR-MAIL-DOMAIN (repeatable) so only your organisation's mailboxes are targets, or --all-domains to deliver to every participant",
      );
    }
  },
  import: () => undefined,
};

/** The options given by flags (or their environment variables), parsed; `config` names the config file. */
function givenOptions(command: Command, flags: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const given: Record<string, unknown> = {};
  for (const spec of optionsOf(command)) {
    const fromEnv = spec.env && env[spec.env] ? env[spec.env] : undefined;
    const value = flags[spec.flag] ?? fromEnv;
    if (value === undefined) continue;
    if (spec.type !== 'strings' && Array.isArray(flags[spec.flag])) throw givenTwice(spec.flag, (flags[spec.flag] as unknown[]).length);
    given[spec.key] = parseValue(spec, value, flags[spec.flag] === undefined ? envOrigin(spec) : flagOrigin(spec));
  }
  return given;
}

/**
 * The config of `command`: defaults, then the config file (--config, or its environment
 * variable), then the options' environment variables, then the flags; the later wins. `flags` is
 * yargs' argv, keyed by flag name.
 */
export async function resolveConfig<C extends Command>(command: C, flags: Record<string, unknown>, env: NodeJS.ProcessEnv): Promise<ConfigFor<C>> {
  const { config: configFile, ...fromFlags } = givenOptions(command, flags, env);
  const fromFile = configFile === undefined ? {} : await readConfigFile(configFile as string, command);
  const merged: Record<string, unknown> = { ...defaultsOf(command), ...fromFile, ...fromFlags };
  return checkedWhole(command, merged);
}

/** What every run needs and what goes with what, once defaults, file, environment and flags are merged. */
function checkedWhole<C extends Command>(command: C, merged: Record<string, unknown>): ConfigFor<C> {
  for (const spec of fileKeysOf(command)) {
    if (spec.required && merged[spec.key] === undefined) {
      throw new PivotArchiveError(ErrorCode.USAGE, `no ${spec.required.what}: give --${spec.flag} ${spec.required.example} (or "${spec.key}" in the config file)`);
    }
  }
  const config = merged as ConfigFor<C>;
  CHECKS[command](config);
  return config;
}

function parsedOrEmpty(text: string): Record<string, unknown> {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/**
 * Where a command line that failed its checks would have kept its records (`--status-log`,
 * `--state-dir`: from the flags, their environment variables or the config file, read leniently),
 * so that its failure is recorded there all the same; none for a dry run. Never throws.
 */
export async function recordTargets(command: Command, flags: Record<string, unknown>, env: NodeJS.ProcessEnv, cwd: string): Promise<{ statusLog?: string; stateDir?: string }> {
  const given = (key: string) => {
    const spec = optionsOf(command).find((s) => s.key === key);
    const value = spec ? (flags[spec.flag] ?? (spec.env ? env[spec.env] : undefined)) : undefined;
    return typeof value === 'string' && value !== '' ? value : undefined;
  };
  // Any dry-run value but false, even one refused (`--dry-run=yes`): what was meant as a dry run writes nothing.
  const dry = (value: unknown) => value !== undefined && value !== false;
  if (dry(flags['dry-run'])) return {};
  let file: Record<string, unknown> = {};
  const config = given('config');
  // A file that cannot be read or parsed names no target here; reading the config says what is wrong with it.
  if (config) file = await readFile(resolve(cwd, config), 'utf8').then((text) => parsedOrEmpty(withoutByteOrderMark(text)), () => ({}));
  if (file === null || typeof file !== 'object' || dry(file.dryRun)) return {};
  const target = (key: string) => {
    const value = given(key) ?? file[key];
    return typeof value === 'string' && value !== '' ? { [key]: resolve(cwd, value) } : {};
  };
  return { ...target('statusLog'), ...target('stateDir') };
}

/**
 * Checks a command line to be run later (by cron) as cron will run it: every flag's value, the
 * config file it names, what is missing and what goes with what. Not the environment of the shell
 * it is made in (cron's is another: a config file it names must be named on the line). Returns
 * what the line gives (the file's, then the flags'), for the caller to check the sink spec.
 */
export async function checkFlags(command: Command, flags: Record<string, unknown>): Promise<Record<string, unknown>> {
  const { config: configFile, ...fromFlags } = givenOptions(command, flags, {});
  const fromFile = configFile === undefined ? {} : await readConfigFile(configFile as string, command);
  checkedWhole(command, { ...defaultsOf(command), ...fromFile, ...fromFlags });
  return { ...fromFile, ...fromFlags };
}
