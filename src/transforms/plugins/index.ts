import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
// The two functions, not all of semver (45 modules loaded by every run, plugins or none).
import satisfies from 'semver/functions/satisfies.js';
import validRange from 'semver/ranges/valid.js';
import { ErrorCode, PivotArchiveError, RejectReason, errorMessage, type RejectReasonValue } from '../../errors.js';
import { EVENT_TYPES, whyNotPluginHeader, type Item } from '../../model.js';
import { defaultsOf } from '../../options/index.js';
import { parseZonedTime } from '../../formats/pivot-export/time.js';

/** Version of the plugin API this host implements; plugins name the range they accept. */
export const HOST_API_VERSION = '1.0.0';

/** What a plugin's transform may see of the run besides the item. */
export interface PluginContext {
  readonly exportId: string;
  readonly tenant: string;
  /** Log a message under the plugin's name (goes to the run's log, never to mail). */
  log(message: string): void;
}

/** Returned by a transform to drop an item on purpose; the reason is recorded. */
export interface PluginDrop {
  readonly drop: string;
}

/**
 * A transform returns the item (changed or not), several items (a split: each needs its own
 * id), or `drop(reason)`. It may be async. A throw rejects that item only.
 */
export type PluginResult = Item | Item[] | PluginDrop;

export interface PivotPlugin {
  /** Unique name; it appears in reasons such as `plugin:<name>`. */
  name: string;
  /** The plugin's own version, for logs. */
  version?: string;
  /** semver range of HOST_API_VERSION the plugin works with, e.g. "^1.0.0". */
  hostApi: string;
  transform(item: Item, context: PluginContext): PluginResult | Promise<PluginResult>;
}

export function drop(reason: string): PluginDrop {
  return { drop: reason };
}

/** Identity helper so plugin authors get type checking: `export default definePlugin({...})`. */
export function definePlugin(plugin: PivotPlugin): PivotPlugin {
  return plugin;
}

/**
 * Whether another item of the export has this id: an event of the archive, or an item plugins
 * returned for an earlier event. Asked of each id a plugin gives an item that is neither the id
 * of the item it was given nor its event's.
 */
export type IdTaken = (id: string) => boolean | Promise<boolean>;

/** An item a plugin returned under an id another item has (`id`): rejected, its event kept under that id. */
export interface Refusal {
  id: string;
  reason: RejectReasonValue;
  detail: string;
}

/** What the plugins made of an item: the items to deliver and those refused (only when any are), or the item's rejection. */
export type PluginOutcome =
  | { items: Item[]; refused?: Refusal[] }
  | { rejected: { reason: RejectReasonValue; detail: string } };

/** The time limit of a plugin call when none is given: the option's default. */
const DEFAULT_TIME_LIMIT_SECONDS = defaultsOf('run').pluginTimeout!;

/** What a call that had not settled within the time limit yields instead of its result. */
const TIMED_OUT = Symbol('timed out');

/**
 * The ordered set of plugins of a run. Tests build it empty; `register` checks the name,
 * the shape and the host API range before anything runs.
 */
export class PluginRegistry {
  private readonly plugins: PivotPlugin[] = [];

  /** `timeLimitSeconds`: how long one transform call may take (--plugin-timeout). */
  constructor(private readonly timeLimitSeconds: number = DEFAULT_TIME_LIMIT_SECONDS) {}

  get names(): string[] {
    return this.plugins.map((p) => p.name);
  }

  register(candidate: unknown, origin = 'plugin'): PivotPlugin {
    const plugin = candidate as PivotPlugin;
    if (plugin === null || typeof plugin !== 'object') {
      throw new PivotArchiveError(ErrorCode.PLUGIN_INVALID, `${origin}: does not export a plugin object`);
    }
    if (typeof plugin.name !== 'string' || !/^[A-Za-z0-9@/._-]{1,100}$/.test(plugin.name)) {
      throw new PivotArchiveError(ErrorCode.PLUGIN_INVALID, `${origin}: plugin needs a name of letters, digits and @/._-`);
    }
    if (typeof plugin.transform !== 'function') {
      throw new PivotArchiveError(ErrorCode.PLUGIN_INVALID, `${origin}: plugin ${plugin.name} has no transform function`);
    }
    if (typeof plugin.hostApi !== 'string' || validRange(plugin.hostApi) === null) {
      throw new PivotArchiveError(ErrorCode.PLUGIN_INVALID, `${origin}: plugin ${plugin.name} needs a semver range in hostApi`);
    }
    if (!satisfies(HOST_API_VERSION, plugin.hostApi)) {
      throw new PivotArchiveError(
        ErrorCode.PLUGIN_VERSION,
        `${origin}: plugin ${plugin.name} wants host API ${plugin.hostApi}; this is ${HOST_API_VERSION}`,
      );
    }
    if (this.plugins.some((p) => p.name === plugin.name)) {
      throw new PivotArchiveError(ErrorCode.PLUGIN_DUPLICATE, `${origin}: a plugin named ${plugin.name} is already registered`);
    }
    this.plugins.push(plugin);
    return plugin;
  }

  /**
   * Runs the item through every plugin in order. Whatever a plugin does is an outcome, never a
   * throw (only `taken` may throw). Ids are unique per export, and the account of deliveries counts
   * by them, so an item a plugin returns under the id of another item of this event, or (`taken`)
   * of the export, is refused `duplicate-id:<plugin>`: that item only.
   */
  async apply(item: Item, context: Omit<PluginContext, 'log'>, log: (plugin: string, message: string) => void, taken: IdTaken = () => false): Promise<PluginOutcome> {
    let items = [item];
    const refused: Refusal[] = [];
    for (const plugin of this.plugins) {
      const next: Item[] = [];
      const ids = new Set<string>();
      const pluginContext: PluginContext = { ...context, log: (message) => log(plugin.name, message) };
      for (const current of items) {
        const outcome = await this.call(plugin, current, pluginContext);
        if ('rejected' in outcome) return outcome;
        // Not push(...items): a split into a great many would pass the arguments limit.
        for (const produced of outcome.items) {
          const holder = ids.has(produced.id) ? 'another item of this event' : produced.id !== current.id && produced.id !== item.id && (await taken(produced.id)) ? 'another item of this export' : undefined;
          if (holder === undefined) {
            ids.add(produced.id);
            next.push(produced);
          } else {
            const detail = `plugin ${plugin.name} returned for item ${current.id} an item with the id ${produced.id}, which ${holder} has (ids are unique per export): it is rejected, not delivered`;
            refused.push({ id: produced.id, reason: `${RejectReason.DUPLICATE_ID}:${plugin.name}`, detail });
          }
        }
      }
      items = next;
    }
    return refused.length > 0 ? { items, refused } : { items };
  }

  /**
   * One plugin on one item: what it made of it, or the item's rejection naming the plugin. Never
   * throws: whatever the plugin throws, returns or never settles on is that item's rejection.
   */
  private async call(plugin: PivotPlugin, current: Item, context: PluginContext): Promise<PluginOutcome> {
    const failed = (detail: string): PluginOutcome => ({ rejected: { reason: `${RejectReason.PLUGIN_ERROR}:${plugin.name}`, detail: `plugin ${plugin.name} ${detail}` } });
    try {
      const result = await this.withinTimeLimit(plugin.transform(current, context));
      if (result === TIMED_OUT) {
        return failed(`did not settle within ${this.timeLimitSeconds} s on item ${current.id} (--plugin-timeout); a result it gives later is ignored`);
      }
      if (isDrop(result)) return { rejected: { reason: `${RejectReason.PLUGIN_DROP}:${plugin.name}`, detail: `plugin ${plugin.name} dropped item ${current.id}: ${result.drop}` } };
      if (Array.isArray(result) && result.some(isDrop)) return failed(`returned drop(reason) inside a list for ${current.id}: return drop(reason) alone to drop the item`);
      const produced = (Array.isArray(result) ? result : [result]).map((p: unknown) => dataOf(p, current));
      const why = produced.length === 0 ? 'nothing' : produced.map(whyUnusable).find((w) => w !== undefined);
      if (why !== undefined) return failed(`returned no usable item for ${current.id} (${why}; use drop(reason) to drop)`);
      return { items: produced as Item[] };
    } catch (err) {
      // Also a throw of the result's own getters or proxy traps while it is checked.
      return failed(`failed on item ${current.id}: ${errorMessage(err)}`);
    }
  }

  /**
   * The result of a transform; when it is a promise, raced against the time limit, whose timer also
   * keeps the process alive while the run waits (a promise alone does not). A sync result costs no timer.
   */
  private async withinTimeLimit(returned: PluginResult | Promise<PluginResult>): Promise<PluginResult | typeof TIMED_OUT> {
    if (typeof (returned as { then?: unknown } | null)?.then !== 'function') return returned as PluginResult;
    // As a promise of ours: a plugin's thenable whose then() throws is its rejection.
    const result = Promise.resolve(returned);
    return (await whichEndsFirst(result, this.timeLimitSeconds * 1000)) === 'timed out' ? TIMED_OUT : await result;
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isDrop = (v: unknown): v is PluginDrop => isRecord(v) && 'drop' in v && typeof v.drop === 'string';

/**
 * What a plugin returned, as plain data read once (a getter or proxy cannot answer the check one
 * thing and the message another), with what the host owns put back from the item the plugin was
 * given: the event's bytes, parsed value and position, which the rejects folder keeps and the
 * checkpoint counts by. Was: an item returned with another `position` and then rejected moved the
 * checkpoint past events never delivered (a resumed run exited 0 with 33 of 50 missing); one
 * rebuilt without `raw`, or deep-copied by JSON (its bytes an object), could never be kept.
 */
function dataOf(p: unknown, given: Item): unknown {
  if (!isRecord(p)) return p;
  const { id, type, sentAt, conversation, sender, text, html, replyToId, targetId, member, attachments, participants, headers } = p;
  const copy = (v: unknown) => (Array.isArray(v) ? [...(v as unknown[])] : isRecord(v) ? { ...v } : v);
  const data: Record<string, unknown> = { id, type, sentAt, conversation, sender, attachments: copy(attachments), participants: copy(participants), headers: copy(headers) };
  for (const [field, value] of Object.entries({ text, html, replyToId, targetId, member })) if (value !== undefined) data[field] = value;
  return { ...data, raw: given.raw, ...(given.bytes ? { bytes: given.bytes } : {}), position: given.position };
}
const hasId = (v: unknown) => isRecord(v) && typeof v.id === 'string';

/** Why what a plugin returned is not an item the chain can build a message from (a plugin's bug is its item's rejection, not the run's end). */
function whyUnusable(p: unknown): string | undefined {
  if (!isRecord(p)) return `${p === undefined ? 'undefined' : p === null ? 'null' : typeof p} instead of an item`;
  if (typeof p.id !== 'string' || p.id === '') return 'an item without a non-empty string id';
  // As for an event's id: a lone surrogate reads as U+FFFD, so two such ids would name one message.
  if (!p.id.isWellFormed()) return 'an item whose id is not well-formed Unicode (a lone surrogate)';
  if (!(EVENT_TYPES as readonly unknown[]).includes(p.type)) {
    return `an item whose type ${typeof p.type === 'string' ? JSON.stringify(p.type) : `(${typeof p.type})`} is none of ${EVENT_TYPES.join(', ')}`;
  }
  if (typeof p.sentAt !== 'string' || Number.isNaN(parseZonedTime(p.sentAt))) return 'an item whose sentAt is not an ISO 8601 time with a zone';
  if (!hasId(p.conversation) || !hasId(p.sender)) return 'an item without its conversation or sender';
  if (!Array.isArray(p.participants) || !p.participants.every(hasId)) return 'an item whose participants are not a list of users';
  if (!Array.isArray(p.attachments) || !p.attachments.every(isRecord)) return 'an item whose attachments are not a list';
  if (!isRecord(p.headers) || !Object.values(p.headers).every((v) => typeof v === 'string')) return 'an item whose headers are not names and string values';
  for (const name of Object.keys(p.headers)) {
    const why = whyNotPluginHeader(name);
    if (why !== undefined) return `an item whose ${why}`;
  }
  if (p.member !== undefined && !hasId(p.member)) return 'an item whose member is not a user';
  for (const field of ['text', 'html', 'replyToId', 'targetId'] as const) if (p[field] !== undefined && typeof p[field] !== 'string') return `an item whose ${field} is not a string`;
  // As the export's own edit and delete events must (the message names the one it changes).
  if ((p.type === 'edit' || p.type === 'delete') && !p.targetId) return `${p.type === 'edit' ? 'an' : 'a'} ${p.type} item without a targetId`;
  return undefined;
}

/** A plugin given as a file (`./x.js`, `/opt/x.js`), not a package name. */
export function isPluginPath(specifier: string): boolean {
  return specifier.startsWith('.') || isAbsolute(specifier);
}

/**
 * Loads a plugin module from a path (relative to `cwd`) or a package name, within the time limit
 * of a plugin call (a module whose top level awaits what never comes would hang the run, or end
 * it unrecorded with Node's exit 13) and until a stop (SIGTERM while it loads: exit 4, recorded).
 */
export async function loadPlugin(specifier: string, cwd: string, limits: { timeLimitSeconds?: number; stop?: AbortSignal } = {}): Promise<unknown> {
  const target = isPluginPath(specifier) ? pathToFileURL(resolve(cwd, specifier)).href : specifier;
  const seconds = limits.timeLimitSeconds ?? DEFAULT_TIME_LIMIT_SECONDS;
  const loading = import(target) as Promise<{ default?: unknown; plugin?: unknown }>;
  const ended = await whichEndsFirst(loading, seconds * 1000, limits.stop);
  if (ended === 'stopped') throw new PivotArchiveError(ErrorCode.STOPPED, `stopped by a signal while plugin ${specifier} was loading: nothing was delivered; run again`);
  if (ended === 'timed out') {
    throw new PivotArchiveError(ErrorCode.PLUGIN_LOAD, `cannot load plugin ${specifier}: it did not finish loading within ${seconds} s (--plugin-timeout): does its top level wait for something that never comes?`);
  }
  try {
    const module = await loading;
    return module.default ?? module.plugin;
  } catch (err) {
    // Not even as the cause: an inspection of the error would print what its message quotes.
    throw new PivotArchiveError(ErrorCode.PLUGIN_LOAD, `cannot load plugin ${specifier}: ${loadFailure(err, isPluginPath(specifier) ? resolve(cwd, specifier) : undefined)}`);
  }
}

/** Whether `work` settled (either way) before `ms` passed and before `stop`; the timer also keeps the process alive meanwhile (a promise alone does not). */
async function whichEndsFirst(work: Promise<unknown>, ms: number, stop?: AbortSignal): Promise<'settled' | 'timed out' | 'stopped'> {
  let timer: NodeJS.Timeout | undefined;
  let onStop = () => {};
  const limit = new Promise<'timed out' | 'stopped'>((resolve) => {
    timer = setTimeout(resolve, ms, 'timed out');
    onStop = () => resolve('stopped');
    if (stop?.aborted) onStop();
    else stop?.addEventListener('abort', onStop, { once: true });
  });
  try {
    return await Promise.race([work.then(() => 'settled' as const, () => 'settled' as const), limit]);
  } finally {
    clearTimeout(timer);
    stop?.removeEventListener('abort', onStop);
  }
}

/** Node's errors for a module it cannot find or take, whose messages name files and modules only: shown whole (as are system errors: EACCES, EMFILE, ...). */
const PLACE_ONLY_LOAD_ERRORS: ReadonlySet<string> = new Set([
  'ERR_MODULE_NOT_FOUND',
  'ERR_UNSUPPORTED_DIR_IMPORT',
  'ERR_UNKNOWN_FILE_EXTENSION',
  'ERR_IMPORT_ASSERTION_TYPE_MISSING',
  'ERR_IMPORT_ATTRIBUTE_MISSING',
  'ERR_PACKAGE_PATH_NOT_EXPORTED',
]);

/**
 * Why a plugin module did not load, never quoting a file: a file given by mistake (the job's env
 * file, `PIVOT_IMAP_PASSWORD=...`) fails as JavaScript with a SyntaxError or ReferenceError whose
 * message quotes it (`S3CRET is not defined`), and so may a module's own throw or a package.json
 * that is not JSON. Those are named by kind and place only (as the config file's syntax errors
 * are): `SyntaxError at line 1 of /etc/pivot-archive/env`. `file`: the plugin's, unless a package.
 */
function loadFailure(err: unknown, file: string | undefined): string {
  const { code, syscall } = (err ?? {}) as { code?: unknown; syscall?: unknown };
  // Ours (the module called process.exit as it loaded): the message quotes nothing of the file.
  if (typeof syscall === 'string' || (typeof code === 'string' && PLACE_ONLY_LOAD_ERRORS.has(code)) || err instanceof PivotArchiveError) return errorMessage(err);
  const unshown = 'its message is not shown: it may quote the file, and a file given by mistake may hold secrets';
  if (typeof code === 'string' && /^ERR_[A-Z0-9_]{1,60}$/.test(code)) return `${code} (${unshown})`;
  const kind = err instanceof Error && /^[A-Z][A-Za-z]{0,60}$/.test(err.name) ? err.name : `a thrown ${typeof err}`;
  const place = whereThrown(err);
  const at = place ? ` at line ${place.line} of ${place.file}` : '';
  if (err instanceof SyntaxError) return `not a JavaScript module: ${kind}${at} (${unshown}${place || !file ? '' : `; node --check ${file} shows where`})`;
  return `${kind}${at} as the module was loaded: is it a JavaScript module? (${unshown})`;
}

/**
 * The file and line a load error points at, from its stack: its first line when Node puts the
 * place there (a CommonJS syntax error: `/path:2`, then the offending source line, never read),
 * else its first stack frame in a file. The message is cut out first: it may hold anything.
 */
function whereThrown(err: unknown): { file: string; line: number } | undefined {
  if (!(err instanceof Error) || typeof err.stack !== 'string') return undefined;
  const stack = err.message ? err.stack.replace(err.message, '') : err.stack;
  const place = /^((?:file:\/\/|\/)[^\n]*):(\d+)\n/.exec(stack) ?? /^\s+at (?:[^\n]*? \()?((?:file:\/\/|\/)[^\n]*?):(\d+):\d+\)?$/m.exec(stack);
  if (!place) return undefined;
  return { file: place[1]!.startsWith('file:') ? fileURLToPath(place[1]!) : place[1]!, line: Number(place[2]) };
}
