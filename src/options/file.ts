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

/** A config file's text as JSON is read from it: without the byte order mark an editor may write first (Windows Notepad). */
export const withoutByteOrderMark = (text: string) => (text.startsWith('\uFEFF') ? text.slice(1) : text);

/** Reads and checks a JSON config file for `command`; errors name the path as given. */
export async function readConfigFile(path: string, command: Command): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = withoutByteOrderMark(await readFile(path, 'utf8'));
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `cannot read config file ${path}: ${errorMessage(err)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `config file ${path} is not valid JSON${syntaxErrorAt(text, err)}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `config file ${path} must hold a JSON object`);
  }
  const twice = repeatedKey(text);
  if (twice !== undefined) throw new PivotArchiveError(ErrorCode.CONFIG, `${path}: key ${JSON.stringify(twice)} is given twice (JSON would keep the last silently)`);
  return validateConfigObject(parsed as Record<string, unknown>, command, path);
}

/**
 * Where JSON.parse broke, as line and column; never the text around it, which V8's message
 * quotes (a config file holds secrets: a sink password, a path given to --config by mistake).
 */
function syntaxErrorAt(text: string, err: unknown): string {
  const position = /at position (\d+)/.exec(errorMessage(err))?.[1];
  if (position === undefined) return '';
  const before = text.slice(0, Number(position));
  const line = before.split('\n').length;
  return ` (line ${line}, column ${before.length - before.lastIndexOf('\n')})`;
}

/** The first key the top-level object of valid JSON `text` holds twice, if any (decoded, as JSON.parse compares keys). */
function repeatedKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  // At depth 1, a string is a key when it follows `{` or `,` (else it is a value).
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1 && c === '{';
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return undefined;
}
