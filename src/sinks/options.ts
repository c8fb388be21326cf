// Sink options, declared once per sink in a table (name, type, default, bounds, help): one parser
// validates a spec's query against it and yields the typed values; the same table renders help.
// Its errors reach stderr, the JSON log and the status log, and users paste secrets into specs:
// they repeat what the user typed only where it cannot be one.

import { nearest } from '../options/spec.js';

export interface IntegerOption {
  type: 'integer';
  default: number;
  min: number;
  max: number;
  /** What the number is in, for help: `ms`, `MiB`. */
  unit?: string;
  help: string;
}

export interface ChoiceOption<V extends string = string> {
  type: 'choice';
  choices: readonly V[];
  default: V;
  help: string;
}

export interface TextOption {
  type: 'text';
  /** Absent: the option has no value unless given. */
  default?: string;
  /** What a value looks like, for help: `USER[:GROUP]`. */
  form: string;
  /** Why a value is refused, or undefined when it is fine. */
  check?(value: string): string | undefined;
  help: string;
}

export type SinkOption = IntegerOption | ChoiceOption | TextOption;
export type OptionTable = Readonly<Record<string, SinkOption>>;

/** The typed values a table yields: a text option without default may be undefined. */
export type OptionValues<T extends OptionTable> = {
  -readonly [K in keyof T]: T[K] extends IntegerOption
    ? number
    : T[K] extends ChoiceOption<infer V>
      ? V
      : T[K] extends { default: string }
        ? string
        : string | undefined;
};

export function integer(option: Omit<IntegerOption, 'type'>): IntegerOption {
  return { type: 'integer', ...option };
}

export function choice<const V extends string>(option: Omit<ChoiceOption<V>, 'type'>): ChoiceOption<V> {
  return { type: 'choice', ...option };
}

export function text<const O extends Omit<TextOption, 'type'>>(option: O): O & { type: 'text' } {
  return { type: 'text', ...option };
}

const NOT_REPEATED = 'the value given is not repeated here, in case it is a secret';

/** The check of an option naming an environment variable. */
export function environmentName(value: string): string | undefined {
  // Never quoted: a secret pasted here instead of a variable's name must not reach a log.
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(value) ? undefined : `must name an environment variable (letters, digits and _; ${NOT_REPEATED})`;
}

/**
 * An environment variable an option names, as a message may say it: by name only when it is the
 * option's default. A name the user gave may be a secret pasted in the wrong place (a password
 * of letters and digits is a valid name), so it is not repeated.
 */
export function environmentLabel(option: string, name: string, defaultName: string): string {
  return name === defaultName ? name : `the environment variable ${option}= names (not repeated here, in case it is a secret)`;
}

/** A spec as an error may name it: without its query, where a pasted secret may be. */
export function withoutQuery(spec: string): string {
  return spec.replace(/\?.*$/s, '');
}

/** `a`, `a or b`, `a, b or c`. */
function either(values: readonly string[]): string {
  return values.length < 2 ? values.join('') : `${values.slice(0, -1).join(', ')} or ${values.at(-1)}`;
}

/** What looks like an option's name, typo or not: a secret (`Xy8Q~...`, base64 past 40 characters) rarely does. */
const OPTION_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,39}$/;

/** `; did you mean "x"?` for a near miss of one of `names`, else nothing. */
function guess(typed: string, names: readonly string[]): string {
  const near = nearest(typed, names);
  return near === undefined ? '' : `; did you mean ${JSON.stringify(near)}?`;
}

/** A whole number within bounds, or the reason it is not (also for numbers outside a query, such as a port). */
export function checkInteger(name: string, raw: string, { min, max }: Pick<IntegerOption, 'min' | 'max'>, bad: (why: string) => Error): number {
  const n = /^[+-]?\d+$/.test(raw.trim()) ? Number(raw) : Number.NaN;
  if (Number.isInteger(n) && n >= min && n <= max) return n;
  // A number out of bounds (or with a fraction) is no secret; anything else may be one.
  const numeric = /^[+-]?\d+(\.\d+)?$/.test(raw.trim());
  throw bad(`${name} must be a whole number from ${min} to ${max}${numeric ? `, not ${JSON.stringify(raw)}` : ` (${NOT_REPEATED})`}`);
}

/**
 * Validates a spec's query (`a=1&b=2`, without the `?`) against a table and yields every option's
 * value, defaults filled in. An unknown key is named as the user typed it (not percent-decoded),
 * with the nearest known key and all of them, when it looks like an option's name; a pair without
 * `=` (a pasted secret, most likely) and a value that is no choice are not repeated. A key given
 * twice is refused (which one was meant is not ours to guess). `bad` makes the E_SINK_CONFIG
 * error, prefixed with whatever names the sink safely.
 */
export function parseSinkOptions<T extends OptionTable>(table: T, query: string, bad: (why: string) => Error): OptionValues<T> {
  const names = Object.keys(table);
  const known = `known: ${names.join(', ')}`;
  const given = new Map<string, string>();
  const pairs = query === '' ? [] : query.split('&');
  for (const [index, pair] of pairs.entries()) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq < 0) {
      const key = decode(pair);
      if (Object.hasOwn(table, key)) throw bad(`option ${JSON.stringify(key)} has no value: write ${key}=VALUE`);
      throw bad(`option ${index + 1} of the query has no "=": write name=value${guess(key, names)} (${known}; what was given is not repeated here, in case it is a secret)`);
    }
    const typed = pair.slice(0, eq);
    const key = decode(typed);
    if (!Object.hasOwn(table, key)) {
      // Nothing but `=` after it: the padding of a base64 secret, not an option.
      const named = OPTION_NAME.test(key) && !/^=+$/.test(pair.slice(eq + 1));
      throw bad(`unknown option ${named ? JSON.stringify(typed) : `(option ${index + 1} of the query; it is not repeated here, in case it is a secret)`}${guess(key, names)} (${known})`);
    }
    if (given.has(key)) throw bad(`option ${JSON.stringify(key)} is given twice`);
    given.set(key, decode(pair.slice(eq + 1)));
  }
  const values: Record<string, string | number | undefined> = {};
  for (const [name, option] of Object.entries(table)) {
    const raw = given.get(name);
    if (raw === undefined) {
      values[name] = option.default;
    } else if (option.type === 'integer') {
      values[name] = checkInteger(name, raw, option, bad);
    } else if (option.type === 'choice') {
      if (!option.choices.includes(raw)) {
        // Repeated only when it is a choice in other case: `mode=importmime`.
        const cased = option.choices.find((c) => c.toLowerCase() === raw.toLowerCase());
        const why = cased !== undefined ? `, not ${JSON.stringify(raw)}; did you mean ${JSON.stringify(cased)}?` : ` (${NOT_REPEATED})${guess(raw, option.choices)}`;
        throw bad(`${name} must be ${either(option.choices)}${why} (${option.help})`);
      }
      values[name] = raw;
    } else {
      const why = option.check?.(raw);
      if (why !== undefined) throw bad(`${name} ${why}`);
      values[name] = raw;
    }
  }
  return values as OptionValues<T>;

  function decode(part: string): string {
    try {
      return decodeURIComponent(part.replace(/\+/g, ' '));
    } catch {
      throw bad(`the options are not valid percent-encoding`);
    }
  }
}

/** One line per option: `name=default  help (bounds)`, for `--help` and the docs. */
export function optionsHelp(table: OptionTable): string[] {
  const rows = Object.entries(table).map(([name, option]) => {
    const value = option.type === 'integer' ? String(option.default) : option.type === 'choice' ? option.choices.join('|') : option.form;
    const detail =
      option.type === 'integer'
        ? ` (${option.min}-${option.max}${option.unit ? ` ${option.unit}` : ''})`
        : option.type === 'choice'
          ? ` (default ${option.default})`
          : option.default !== undefined && option.default !== option.form
            ? ` (default ${option.default})`
            : '';
    return [`${name}=${value}`, `${option.help}${detail}`] as const;
  });
  const width = Math.max(0, ...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `${left.padEnd(width)}  ${right}`);
}
