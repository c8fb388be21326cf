import { readFile } from 'node:fs/promises';
import { ErrorCode, PivotArchiveError, errorMessage } from '../errors.js';
import { OPTIONS, optionsOf } from './commands.js';
import { fileOrigin, nearest, parseValue, type Command, type OptionSpec } from './spec.js';

/** The keys a config file of `command` may hold. */
export function fileKeysOf(command: Command): readonly OptionSpec[] {
  return optionsOf(command).filter((o) => !o.flagOnly);
}

/**
 * Checks the keys and values of a config object for `command`: an unknown key is an error that
 * names it as written, never ignored. Own keys only, so `constructor` or `__proto__` are unknown.
 */
export function validateConfigObject(input: Record<string, unknown>, command: Command, path: string): Record<string, unknown> {
  const known = fileKeysOf(command);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(input)) {
    const spec = known.find((o) => o.key === key);
    if (!spec) throw new PivotArchiveError(ErrorCode.CONFIG, `${path}: ${unknownKey(key, command, known)}`);
    out[key] = parseValue(spec, value, fileOrigin(path, key));
  }
  return out;
}

function unknownKey(key: string, command: Command, known: readonly OptionSpec[]): string {
  const elsewhere = OPTIONS.find((o: OptionSpec) => o.key === key && !o.flagOnly);
  if (elsewhere) return `key ${JSON.stringify(key)} is an option of ${elsewhere.commands.join(' and ')}, not of ${command}`;
  const guess = nearest(key, known.map((o) => o.key));
  return `unknown key ${JSON.stringify(key)}${guess ? ` (did you mean "${guess}"?)` : ''}; known: ${known.map((o) => o.key).join(', ')}`;
}

/** Reads and checks a JSON config file for `command`; errors name the path as given. */
export async function readConfigFile(path: string, command: Command): Promise<Record<string, unknown>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `cannot read config file ${path}: ${errorMessage(err)}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `config file ${path} must hold a JSON object`);
  }
  return validateConfigObject(parsed as Record<string, unknown>, command, path);
}
