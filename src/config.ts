import { readFile } from 'node:fs/promises';
import { ErrorCode, PivotArchiveError, errorMessage } from './errors.js';
import { DEFAULT_MAX_ITEM_SIZE } from './transforms/size-filter/index.js';

/** Everything a run can be told, by flags or by the config file (same names, camelCase). */
export interface RunConfig {
  archive?: string;
  sample: boolean;
  sink: string;
  statusLog?: string;
  plugins: string[];
  maxItemSize: number;
  /** Largest event (bytes of its JSON) held in memory; larger ones are rejected and streamed to the rejects folder. */
  maxEventSize: number;
  /** Share of the items read (0..1) that may be rejected before the run ends with exit 5. */
  maxRejected: number;
  rejects: string;
  domains: string[];
  /** Deliver to participants of every domain: the explicit opposite of `domains`, for sinks that create mailboxes. */
  allDomains: boolean;
  userMap?: string;
  defaultMailbox?: string;
  logLevel: string;
  json: boolean;
  /** Allow a clear-text protocol (e.g. IMAP without TLS) to a host that is not loopback. */
  insecure: boolean;
  /** Lock and run history of scheduled runs (see StateDir). */
  stateDir?: string;
  /** Runs kept under the state dir (0: for ever). */
  keepRuns: number;
  /** Also write the log, as JSON lines, to this file. */
  logFile?: string;
  /** Drop folder: every settled, not yet completed archive in it, oldest first. */
  inbox?: string;
  /** With inbox: leave completed archives in place instead of moving them to done/. */
  keep: boolean;
  /** With inbox: an archive modified less than this many seconds ago is still being copied in. */
  settleSeconds: number;
}

/** 64 MiB: far under V8's longest string (about 512 MiB), far over any chat event with its text. */
export const DEFAULT_MAX_EVENT_SIZE = 64 * 1024 * 1024;

/**
 * 10%: a mapping mistake (a typo in --domain, a wrong user map) rejects most items as
 * `unmapped`; a normal day rejects a few oversize or bad items, well under this.
 */
export const DEFAULT_MAX_REJECTED = 0.1;

export const RUN_DEFAULTS = {
  sample: false,
  plugins: [] as string[],
  maxItemSize: DEFAULT_MAX_ITEM_SIZE,
  maxEventSize: DEFAULT_MAX_EVENT_SIZE,
  maxRejected: DEFAULT_MAX_REJECTED,
  rejects: './pivot-rejects',
  domains: [] as string[],
  allDomains: false,
  logLevel: 'info',
  json: false,
  insecure: false,
  keep: false,
  settleSeconds: 60,
  keepRuns: 0,
};

const LOG_LEVELS = ['error', 'warn', 'info', 'verbose', 'debug'];

type FieldKind = 'string' | 'boolean' | 'strings' | 'size' | 'seconds' | 'count' | 'share';
const FIELDS: Record<keyof RunConfig, FieldKind> = {
  archive: 'string',
  sample: 'boolean',
  sink: 'string',
  statusLog: 'string',
  plugins: 'strings',
  maxItemSize: 'size',
  maxEventSize: 'size',
  maxRejected: 'share',
  rejects: 'string',
  domains: 'strings',
  allDomains: 'boolean',
  userMap: 'string',
  defaultMailbox: 'string',
  logLevel: 'string',
  json: 'boolean',
  insecure: 'boolean',
  stateDir: 'string',
  inbox: 'string',
  logFile: 'string',
  keep: 'boolean',
  settleSeconds: 'seconds',
  keepRuns: 'count',
};

/** "10MiB", "512KiB", "1048576" -> bytes. */
export function parseSize(value: unknown, what: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/i.exec(String(value).trim());
  const unit = (match?.[2] ?? 'B').toLowerCase();
  const scale: Record<string, number> = { b: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, kb: 1e3, mb: 1e6, gb: 1e9 };
  const bytes = match ? Math.floor(Number(match[1]) * scale[unit]!) : NaN;
  if (!Number.isFinite(bytes) || bytes < 1) throw new PivotArchiveError(ErrorCode.CONFIG, `${what}: ${JSON.stringify(value)} is not a size such as 10MiB`);
  return bytes;
}

/** "10%", "0.5%", "100%" or a fraction 0..1 -> a share 0..1. */
export function parseShare(value: unknown, what: string): number {
  const text = String(value).trim();
  const match = /^(\d+(?:\.\d+)?)(%?)$/.exec(text);
  const share = match ? Number(match[1]) / (match[2] ? 100 : 1) : NaN;
  if (!(share >= 0 && share <= 1)) throw new PivotArchiveError(ErrorCode.CONFIG, `${what}: ${JSON.stringify(value)} is not a share such as 10% (0% to 100%)`);
  return share;
}

/** Checks keys and types of a config object; unknown keys are errors, never ignored. */
export function validateConfig(input: Record<string, unknown>, origin: string): Partial<RunConfig> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(input)) {
    if (value === undefined) continue;
    // Own keys only: "constructor" or "__proto__" must not pass as known.
    const kind = Object.hasOwn(FIELDS, key) ? FIELDS[key as keyof RunConfig] : undefined;
    const bad = (expected: string) => new PivotArchiveError(ErrorCode.CONFIG, `${origin}: ${key} must be ${expected}`);
    if (!kind) {
      throw new PivotArchiveError(ErrorCode.CONFIG, `${origin}: unknown key ${JSON.stringify(key)} (known: ${Object.keys(FIELDS).join(', ')})`);
    }
    if (kind === 'string' && typeof value !== 'string') throw bad('a string');
    if (kind === 'boolean' && typeof value !== 'boolean') throw bad('true or false');
    if (kind === 'strings' && !(Array.isArray(value) && value.every((v) => typeof v === 'string'))) throw bad('a list of strings');
    if ((kind === 'seconds' || kind === 'count') && !(typeof value === 'number' && Number.isInteger(value) && value >= 0)) {
      throw bad(kind === 'seconds' ? 'a whole number of seconds' : 'a whole number (0 for no limit)');
    }
    out[key] = kind === 'size' ? parseSize(value, `${origin}: ${key}`) : kind === 'share' ? parseShare(value, `${origin}: ${key}`) : value;
  }
  if (out.logLevel !== undefined && !LOG_LEVELS.includes(out.logLevel as string)) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `${origin}: logLevel must be one of ${LOG_LEVELS.join(', ')}`);
  }
  return out as Partial<RunConfig>;
}

export async function readConfigFile(path: string): Promise<Partial<RunConfig>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `cannot read config file ${path}: ${errorMessage(err)}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `config file ${path} must hold a JSON object`);
  }
  return validateConfig(parsed as Record<string, unknown>, path);
}

/** Defaults, then the config file, then flags: the later wins. */
export function mergeConfig(...layers: Partial<RunConfig>[]): RunConfig {
  const merged = Object.assign({}, RUN_DEFAULTS, ...layers.map((l) => Object.fromEntries(Object.entries(l).filter(([, v]) => v !== undefined)))) as RunConfig;
  if (!merged.sink) throw new PivotArchiveError(ErrorCode.USAGE, 'no sink: give --sink maildir:DIR (or "sink" in the config file)');
  const sources = [merged.archive, merged.sample || undefined, merged.inbox].filter((x) => x !== undefined);
  if (sources.length === 0) throw new PivotArchiveError(ErrorCode.USAGE, 'no archive: give a path, - for stdin, --inbox DIR or --sample');
  if (sources.length > 1) throw new PivotArchiveError(ErrorCode.USAGE, 'give one of: an archive, --inbox DIR, --sample');
  if (merged.allDomains && merged.domains.length > 0) throw new PivotArchiveError(ErrorCode.USAGE, 'give --domain or --all-domains, not both');
  if (merged.inbox && !merged.stateDir) throw new PivotArchiveError(ErrorCode.USAGE, '--inbox needs --state-dir, where completed archives are recorded');
  return merged;
}
