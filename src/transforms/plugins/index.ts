import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import semver from 'semver';
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

export type PluginOutcome =
  | { items: Item[] }
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
    if (typeof plugin.hostApi !== 'string' || semver.validRange(plugin.hostApi) === null) {
      throw new PivotArchiveError(ErrorCode.PLUGIN_INVALID, `${origin}: plugin ${plugin.name} needs a semver range in hostApi`);
    }
    if (!semver.satisfies(HOST_API_VERSION, plugin.hostApi)) {
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

  /** Runs the item through every plugin in order; never throws. */
  async apply(item: Item, context: Omit<PluginContext, 'log'>, log: (plugin: string, message: string) => void): Promise<PluginOutcome> {
    let items = [item];
    for (const plugin of this.plugins) {
      const next: Item[] = [];
      const pluginContext: PluginContext = { ...context, log: (message) => log(plugin.name, message) };
      for (const current of items) {
        const outcome = await this.call(plugin, current, pluginContext);
        if ('rejected' in outcome) return outcome;
        // Not push(...items): a split into a great many would pass the arguments limit.
        for (const produced of outcome.items) next.push(produced);
      }
      items = next;
    }
    const ids = new Set(items.map((i) => i.id));
    if (ids.size !== items.length) {
      return { rejected: { reason: RejectReason.PLUGIN_ERROR, detail: `plugins split item ${item.id} into items that share an id` } };
    }
    return { items };
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
      if (result !== null && typeof result === 'object' && 'drop' in result && typeof result.drop === 'string') {
        return { rejected: { reason: `${RejectReason.PLUGIN_DROP}:${plugin.name}`, detail: `plugin ${plugin.name} dropped item ${current.id}: ${result.drop}` } };
      }
      const produced: unknown[] = Array.isArray(result) ? result : [result];
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
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<typeof TIMED_OUT>((resolve) => {
      timer = setTimeout(resolve, this.timeLimitSeconds * 1000, TIMED_OUT);
    });
    try {
      return await Promise.race([returned, limit]);
    } finally {
      clearTimeout(timer);
    }
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
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
  return undefined;
}

/** Loads a plugin module from a path (relative to `cwd`) or a package name. */
/** A plugin given as a file (`./x.js`, `/opt/x.js`), not a package name. */
export function isPluginPath(specifier: string): boolean {
  return specifier.startsWith('.') || isAbsolute(specifier);
}

export async function loadPlugin(specifier: string, cwd: string): Promise<unknown> {
  const target = isPluginPath(specifier) ? pathToFileURL(resolve(cwd, specifier)).href : specifier;
  try {
    const module = (await import(target)) as { default?: unknown; plugin?: unknown };
    return module.default ?? module.plugin;
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.PLUGIN_LOAD, `cannot load plugin ${specifier}: ${errorMessage(err)}`, { cause: err });
  }
}
