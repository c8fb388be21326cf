import { ErrorCode, PivotArchiveError } from '../errors.js';
import { parseShard, type Shard } from '../transforms/shard/index.js';

/** The commands whose options are declared in the table (and can come from the config file). */
export type Command = 'run' | 'import';

/** What a value is; it decides the parser, the TypeScript type and how yargs reads the flag. */
export type OptionType = 'string' | 'boolean' | 'strings' | 'size' | 'share' | 'seconds' | 'count' | 'choice' | 'shard';

/** A value as the user can write it: on the command line, in the config file, or as a default. */
export type Written = string | number | boolean | readonly string[];

/** One option of `run` and/or `import`, declared once: flag, config-file key, type, default, help. */
export interface OptionSpec {
  /** The config-file key, camelCase; also the field of RunConfig/ImportConfig. */
  readonly key: string;
  /** The flag, kebab-case, without its dashes. */
  readonly flag: string;
  readonly type: OptionType;
  /** As the user would write it (`'10MiB'`, `'10%'`, `60`); parsed like the user's value. */
  readonly default?: Written;
  /** Without a default, a value must come from the flags or the file, else "no WHAT: give --FLAG EXAMPLE". */
  readonly required?: { readonly what: string; readonly example: string };
  /** For `choice`. */
  readonly choices?: readonly string[];
  /** For `seconds` (which must have one): the least and the most accepted. */
  readonly range?: { readonly min: number; readonly max: number };
  /** Help text; per command where the meaning differs. */
  readonly describe: string | { readonly [C in Command]?: string };
  /** Environment variable read when the flag is not given. */
  readonly env?: string;
  readonly commands: readonly Command[];
  /** The command's positional argument rather than a flag. */
  readonly positional?: true;
  /** Not a config-file key (the `--config` flag itself). */
  readonly flagOnly?: true;
}

/** Where a value was written, as the user wrote it: `--max-item-size` or `config.json: maxItemSize`. */
export interface Origin {
  readonly name: string;
  readonly code: typeof ErrorCode.USAGE | typeof ErrorCode.CONFIG;
  /** Written as text (a flag's value, an environment variable), where true and false are words; a config file's are JSON's. */
  readonly text?: true;
}

export const flagOrigin = (spec: Pick<OptionSpec, 'flag' | 'positional'>): Origin => ({ name: spec.positional ? spec.flag : `--${spec.flag}`, code: ErrorCode.USAGE, text: true });
export const envOrigin = (spec: OptionSpec): Origin => ({ name: spec.env!, code: ErrorCode.CONFIG, text: true });
export const fileOrigin = (path: string, key: string): Origin => ({ name: `${path}: ${key}`, code: ErrorCode.CONFIG });

const invalid = (origin: Origin, text: string) => new PivotArchiveError(origin.code, `${origin.name}: ${text}`);

/** A flag that takes one value, given `times` times (yargs makes a list of them): its values not quoted (a sink URL may hold a password). */
export const givenTwice = (flag: string, times: number) => new PivotArchiveError(ErrorCode.USAGE, `--${flag} is given ${times} times; give it once`);

/**
 * B, K/M/G like `dd` and `ulimit` (powers of 1024), KB/MB/GB (powers of 1000), KiB/MiB/GiB (powers
 * of 1024); any case; a bare number is bytes.
 */
const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };
export const SIZE_UNITS_HELP = 'K, M, G and KiB, MiB, GiB are powers of 1024; KB, MB, GB are powers of 1000; B or a bare number is bytes; any case';

/** "10MiB", "10M", "10MB", "512k", 1048576 -> bytes. */
export function parseSize(value: unknown, origin: Origin): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(String(value).trim());
  const scale = match && Object.hasOwn(SIZE_UNITS, match[2]!.toLowerCase()) ? SIZE_UNITS[match[2]!.toLowerCase()]! : NaN;
  const bytes = Math.floor(Number(match?.[1]) * scale);
  if (!(typeof value === 'string' || typeof value === 'number') || !(bytes >= 1)) {
    throw invalid(origin, `${JSON.stringify(value)} is not a size such as 10MiB (${SIZE_UNITS_HELP})`);
  }
  // Past it a number is no longer exact (999...9G is Infinity): no limit anyone means.
  if (bytes > Number.MAX_SAFE_INTEGER) throw invalid(origin, `${JSON.stringify(value)} is too large (at most ${Number.MAX_SAFE_INTEGER} bytes)`);
  return bytes;
}

/**
 * "10%", "0.5%", "100%" or a fraction below 1 ("0.1", 0.1) -> a share 0..1. A bare number of 1 or
 * more ("1", "5", 1) is refused: a count of items, a percentage or a fraction, each user reads it
 * otherwise (`1` was taken as 100%: the alarm never rang).
 */
export function parseShare(value: unknown, origin: Origin): number {
  const match = /^(\d+(?:\.\d+)?)(%?)$/.exec(String(value).trim());
  const share = match && (typeof value === 'string' || typeof value === 'number') ? Number(match[1]) / (match[2] ? 100 : 1) : NaN;
  if (match && !match[2] && share >= 1) {
    const percent = Number.isInteger(share) && share <= 100 ? share : 1;
    throw invalid(origin, `${JSON.stringify(value)} is ambiguous (a count of items, a percentage or a fraction?): write a percentage such as ${percent}% or 100%, or a fraction below 1 such as 0.1`);
  }
  if (!(share >= 0 && share <= 1)) throw invalid(origin, `${JSON.stringify(value)} is not a share such as 10% (0% to 100%)`);
  return share;
}

/**
 * true or false, as the config file holds them; written as text (`--dry-run=VALUE`, an environment
 * variable), the words `true` and `false`. Nothing else: yargs reads any `=VALUE` but `true` as
 * false, so `--dry-run=yes` would deliver.
 */
export function parseBoolean(value: unknown, origin: Origin): boolean {
  const parsed = origin.text && (value === 'true' || value === 'false') ? value === 'true' : value;
  if (typeof parsed !== 'boolean') throw invalid(origin, `${JSON.stringify(value)} is not true or false`);
  return parsed;
}

/**
 * A whole number >= 0, written as a number (config file) or as digits (command line), within
 * `range` (`unit` after it in the message) when given, and exact (Number.MAX_SAFE_INTEGER at most:
 * 99999999999999999999 is 1e+20, and 1e300 is a whole number to JavaScript) in any case.
 */
export function parseWholeNumber(value: unknown, origin: Origin, what: string, range?: { readonly min: number; readonly max: number }, unit = ''): number {
  const ok = (typeof value === 'number' && Number.isInteger(value) && value >= 0) || (typeof value === 'string' && /^\d+$/.test(value.trim()));
  if (!ok) throw invalid(origin, `${JSON.stringify(value)} is not ${what}`);
  const number = Number(value);
  if (range && !(number >= range.min && number <= range.max)) throw invalid(origin, `${JSON.stringify(value)} is not ${range.min} to ${range.max}${unit}`);
  if (number > Number.MAX_SAFE_INTEGER) throw invalid(origin, `${JSON.stringify(value)} is too large (at most ${Number.MAX_SAFE_INTEGER})`);
  return number;
}

/** The parsed value of an option, as `spec.type` says; the error names `origin`. String values are never quoted (a sink URL can hold a password). */
export function parseValue(spec: OptionSpec, value: unknown, origin: Origin): unknown {
  switch (spec.type) {
    case 'string':
      if (typeof value !== 'string') throw invalid(origin, 'must be a string');
      // An empty value is a variable that was not set (`--state-dir "$STATE"`), never a choice: taken as absent, the run would keep no record.
      if (value === '') throw invalid(origin, 'is empty');
      return value;
    case 'boolean':
      return parseBoolean(value, origin);
    case 'strings':
      if (!(Array.isArray(value) && value.every((v) => typeof v === 'string'))) throw invalid(origin, 'must be a list of strings');
      // As a string option's: `--plugin ""` named the install folder's node_modules/ as a plugin.
      if (value.includes('')) throw invalid(origin, 'an entry is empty');
      return [...(value as string[])];
    case 'size':
      return parseSize(value, origin);
    case 'share':
      return parseShare(value, origin);
    case 'seconds':
      return parseWholeNumber(value, origin, 'a whole number of seconds', spec.range, ' seconds');
    case 'count':
      return parseWholeNumber(value, origin, 'a whole number (0 for no limit)');
    case 'choice':
      if (typeof value !== 'string' || !spec.choices!.includes(value)) throw invalid(origin, `${JSON.stringify(value)} is not one of ${spec.choices!.join(', ')}`);
      return value;
    case 'shard': {
      const shard = parseShard(value);
      if (typeof shard === 'string') throw invalid(origin, shard);
      return shard;
    }
  }
}

/** The TypeScript type of a value of each OptionType, once parsed. */
export interface ValueTypes {
  string: string;
  boolean: boolean;
  strings: string[];
  size: number;
  share: number;
  seconds: number;
  count: number;
  choice: string;
  shard: Shard;
}

/** Edit distance, for "did you mean": an insertion, deletion, substitution or swap of neighbours costs 1. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i]!;
      row[j] = Math.min(d[i - 1]![j]! + 1, row[j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) row[j] = Math.min(row[j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/** The candidate closest to what was typed, if close enough to be a typo (a third of its letters at most). */
export function nearest(typed: string, candidates: readonly string[]): string | undefined {
  let best: { name: string; cost: number } | undefined;
  for (const name of candidates) {
    const cost = distance(typed.toLowerCase(), name.toLowerCase());
    if (!best || cost < best.cost) best = { name, cost };
  }
  return best && best.cost <= Math.max(1, Math.floor(typed.length / 3)) ? best.name : undefined;
}
