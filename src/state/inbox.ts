import type { Stats } from 'node:fs';
import { link, lstat, open, readdir, readFile, readlink, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import type { RunConfig } from '../options/index.js';
import { ErrorCode, ExitCode, PivotArchiveError, errorCodeOf, errorMessage } from '../errors.js';
import { errorExitCode, runExitCode, worseExitCode } from '../exit-policy.js';
import { findEndOfCentralDirectory } from '../formats/zip/index.js';
import { makeDirectory, pathExists } from '../fs-util.js';
import { fileSha256, sha256Hex } from '../hash.js';
import type { Logger } from '../logger.js';
import { recordFailureBeforeStart, startOptions } from '../job.js';
import { run, runOutcomeOptions, type RunOptions, type RunResult } from '../run.js';
import { createSink } from '../sinks/index.js';
import type { RunSummary, StartRecord } from '../status-log.js';
import { isPluginPath } from '../transforms/plugins/index.js';
import { STATE_FILES, STATE_FOLDERS, StateDir } from './index.js';

/**
 * What became of one archive of the drop folder. `completed`, `deliveries-failed` and
 * `not-recorded` (everything delivered, but its completion could not be written to the state
 * dir: left in place, the next run re-checks it) carry the run; `already-completed` its sha256;
 * `failed-archive` (refused as a whole, moved to failed/) and `stopped` (a setup error, say the
 * sink gone, or a signal, that ends the drop-folder run: this archive and those after it are left
 * for the next run) the error's code and exit code.
 */
export interface InboxArchiveResult {
  archive: string;
  outcome: 'completed' | 'already-completed' | 'failed-archive' | 'deliveries-failed' | 'not-recorded' | 'stopped';
  run?: RunResult;
  reason?: string;
  code?: string;
  exitCode?: number;
  sha256?: string;
}

export interface InboxResult {
  results: InboxArchiveResult[];
  waiting: string[];
  exitCode: number;
}

/** Where a reader looks for a ZIP's end record: its 22 bytes and the longest comment (APPNOTE 4.3.16). */
const ZIP_TAIL_BYTES = 22 + 0xffff;

/**
 * The file has no ZIP end record (a look at its tail): its run refuses it, and hashing it here
 * first (a 3 GB sparse file: half a minute) would only delay that. False when it cannot tell.
 */
async function noZipEndRecord(path: string): Promise<boolean> {
  try {
    const handle = await open(path, 'r');
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, ZIP_TAIL_BYTES);
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(length), 0, length, size - length);
      return findEndOfCentralDirectory(buffer.subarray(0, bytesRead), size - length, size) === -1;
    } finally {
      await handle.close();
    }
  } catch {
    return false;
  }
}

// ignoreBOM: a name starting with U+FEFF keeps it (stripped, it would decode to nothing).
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The UTF-8 character at byte `i` of `raw`, or undefined where none starts. */
function characterAt(raw: Buffer, i: number): string | undefined {
  const lead = raw[i]!;
  const length = lead < 0x80 ? 1 : lead >= 0xc2 && lead <= 0xdf ? 2 : lead >= 0xe0 && lead <= 0xef ? 3 : lead >= 0xf0 && lead <= 0xf4 ? 4 : 0;
  if (length === 0 || i + length > raw.length) return undefined;
  try {
    return strictUtf8.decode(raw.subarray(i, i + length));
  } catch {
    return undefined;
  }
}

/**
 * A file name as text: its UTF-8, and each byte that is no part of UTF-8 as `%XX` (`caf\xe9.zip`,
 * named on a Latin-1 host, reads `caf%E9.zip`). A name that is not UTF-8 cannot be given as a
 * path string: read as one, the file is not found.
 */
export function textName(raw: Buffer): string {
  let text = '';
  for (let i = 0; i < raw.length; ) {
    const character = characterAt(raw, i);
    text += character ?? `%${raw[i]!.toString(16).toUpperCase().padStart(2, '0')}`;
    i += character === undefined ? 1 : Buffer.byteLength(character);
  }
  return text;
}

/**
 * Gives the file at `from` the name `name` in `dir` (cut short past NAME_MAX bytes), or `name`
 * with `-1`, `-2`... before its `.zip` where that is taken, never over another file: by a hard link, which fails on a name
 * taken; where hard links are refused (some SMB and FUSE mounts), by a rename once the name is
 * seen free, as moveInto does. Returns the name it got.
 */
async function renameFree(from: Buffer, dir: string, name: string): Promise<string> {
  // Each byte written as %XX takes three: a name of 86 such bytes or more is cut short (besideName,
  // never inside a %XX), keeping its .zip.
  const fitted = (candidate: string) => (Buffer.byteLength(candidate) <= NAME_MAX ? candidate : besideName(candidate.slice(0, -4), candidate.slice(-4)).replace(/%[0-9A-F]?(?=~[0-9a-f]{12}\.zip$)/i, ''));
  for (let n = 0; ; n++) {
    const free = fitted(n === 0 ? name : name.replace(/(\.zip)$/i, `-${n}$1`));
    const to = join(dir, free);
    const linked = await link(from, to).then(
      () => true,
      (err: unknown) => ((err as NodeJS.ErrnoException).code === 'EEXIST' ? undefined : false),
    );
    if (linked === undefined) continue;
    if (linked) {
      await unlink(from);
      return free;
    }
    if (await exists(to)) continue;
    await rename(from, to);
    return free;
  }
}

/** The longest file name (bytes) most file systems take (NAME_MAX). */
const NAME_MAX = 255;

/**
 * The name of a file beside the archive `name` (`name` + `suffix`: its `.reason.txt`, its `.1`
 * in failed/ or done/), within NAME_MAX bytes: an archive's name may take all 255, and a name too
 * long for the file system cannot be made (ENAMETOOLONG). Over it, `name` is cut short (at a
 * character) and a hash of the whole name put after it, `<start of name>~<12 hex digits>` +
 * `suffix`: the same for the same name, so it is found again (and starts as the archive does).
 */
export function besideName(name: string, suffix: string): string {
  if (Buffer.byteLength(name + suffix) <= NAME_MAX) return name + suffix;
  const hash = `~${sha256Hex(name).slice(0, 12)}`;
  let room = NAME_MAX - Buffer.byteLength(hash + suffix);
  let start = '';
  for (const character of name) {
    room -= Buffer.byteLength(character);
    if (room < 0) break;
    start += character;
  }
  return start + hash + suffix;
}

/** Moves a file into `dir`, never over another file of the same name (`name`, else `name.1`, ... within NAME_MAX: besideName). */
async function moveInto(path: string, dir: string, name: string): Promise<string> {
  await makeDirectory(dir);
  let target = join(dir, name);
  for (let n = 1; await pathExists(target); n++) target = join(dir, besideName(name, `.${n}`));
  await rename(path, target);
  return target;
}

/** What a file is, cheaply: another file moved over its name, or its bytes rewritten, differ. */
interface Sighting {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
}

const sightingOf = (info: Stats): Sighting => ({ dev: info.dev, ino: info.ino, size: info.size, mtimeMs: info.mtimeMs });

async function sighting(path: string): Promise<Sighting | undefined> {
  const info = await stat(path).catch(() => undefined);
  return info && sightingOf(info);
}

const goneSinceListed = (name: string) => `${name}: gone from the drop folder since it was listed (taken by another run, or by hand): passed over`;

const goneWhileRead = (name: string) => `${name}: gone from the drop folder while it was read (taken by another run, or by hand): not moved`;

/** Something (a file, a link, dangling or not) is at `path`. */
const exists = (path: string | Buffer) => lstat(path).then(() => true, () => false);

const sameFile = (a: Sighting | undefined, b: Sighting | undefined) => a !== undefined && b !== undefined && a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;

/**
 * moveInto, only when the file at `path` is still the one that was read (`read`): an archive
 * dropped over the same name while it ran (`mv` in, as the README advises) is another export,
 * left for the next run, never moved to done/ unread. Logged instead of thrown: a move that
 * fails must not stop the other archives.
 */
async function moveSafely(logger: Logger, path: string, dir: string, name: string, read: Sighting | undefined): Promise<string | undefined> {
  const now = read === undefined ? undefined : await sighting(path);
  if (read !== undefined && now === undefined && !(await exists(path))) {
    logger.warn(goneWhileRead(name));
    return undefined;
  }
  if (read !== undefined && !sameFile(read, now)) {
    logger.warn(`${name}: replaced or changed while it was read: the new file is left for the next run`);
    return undefined;
  }
  try {
    return await moveInto(path, dir, name);
  } catch (err) {
    // Taken meanwhile by another host's run of the same drop folder: nothing to move.
    if (!(await exists(path))) return void logger.warn(goneWhileRead(name));
    logger.error(`${name}: cannot be moved to ${dir}: ${errorMessage(err)}`);
    return undefined;
  }
}

/**
 * Where another drop-folder run (of another state dir: another sink's job, another host's) moved
 * the archive this run listed as `listed` once it completed it: the name in `DIR/done/` (`NAME`, or
 * `NAME.N` as moveInto gives it) that holds that same file; undefined when none does.
 */
async function movedToDone(inbox: string, name: string, listed: Sighting): Promise<string | undefined> {
  const done = join(inbox, 'done');
  for (const entry of await readdir(done).catch(() => [] as string[])) {
    const n = /\.(\d+)$/.exec(entry)?.[1];
    const ours = entry === name || (n !== undefined && entry === besideName(name, `.${n}`));
    if (ours && sameFile(listed, await sighting(join(done, entry)))) return entry;
  }
  return undefined;
}

/**
 * The archives a drop-folder run left because they had not settled, as it saw them, and when a
 * run first saw each as it is (`seenAt`, this host's clock). An archive has settled once its
 * mtime is `--settle` seconds old, or once runs have seen it unchanged for `--settle` seconds: an
 * mtime in the future (a writer's clock ahead, a copy that kept the source's time) never gets
 * older than `--settle`, but a copy still being written never stays unchanged that long. Two runs
 * a few seconds apart (a retry) do not make a half-written archive settled.
 */
interface Waiting extends Sighting {
  seenAt: number;
}

function waitingPath(state: StateDir): string {
  return join(state.dir, STATE_FILES.inboxWaiting);
}

async function readWaiting(state: StateDir): Promise<Record<string, Waiting>> {
  return readRecordFile<Waiting>(waitingPath(state));
}

/** A state file of ours holding a JSON object (by name); empty when it is not there or not one. */
async function readRecordFile<T>(path: string): Promise<Record<string, T>> {
  try {
    const value = JSON.parse(await readFile(path, 'utf8')) as unknown;
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, T>) : {};
  } catch {
    return {};
  }
}

/**
 * The archives in `done/` (by their name there) that another run moved there before this state
 * dir's run read them, which that run did not complete (failed deliveries, a stop, an error): as
 * it read them. The next runs read each there again until it completes, or until it is changed or
 * gone (said): `done/` is never listed otherwise, and each would be passed over for ever.
 */
function unfinishedPath(state: StateDir): string {
  return join(state.dir, STATE_FILES.inboxUnfinished);
}

/**
 * Whether an archive seen now (`info`, at `now`) has settled, and since when it has been seen as
 * it is (`seenAt`: kept from `before` when the file is the same, else now).
 */
export function settleState(info: Sighting, before: Waiting | undefined, now: number, settleSeconds: number): { settled: boolean; seenAt: number; future: boolean } {
  const settleMs = settleSeconds * 1000;
  const seenAt = sameFile(before, info) && typeof before!.seenAt === 'number' && before!.seenAt <= now ? before!.seenAt : now;
  return { settled: now - info.mtimeMs >= settleMs || now - seenAt >= settleMs, seenAt, future: info.mtimeMs > now };
}

/** Why an archive is in failed/: in the file of this suffix beside it. */
const REASON = '.reason.txt';

/** The name of the reason file of the archive `name` in failed/ (within NAME_MAX: besideName). */
const reasonFileName = (name: string) => besideName(name, REASON);

/** How an archive moved to failed/ was, written into its `.reason.txt`: a later change of the file shows. */
const MOVED_AS = /^file when moved here: (\d+) bytes, mtimeMs (\d+(?:\.\d+)?)$/m;

/**
 * Archives in failed/ whose file changed after they were moved there (a copy still being written
 * into the drop folder, taken too early): said, so the operator moves the whole copy back in.
 */
async function changedInFailed(logger: Logger, inbox: string): Promise<void> {
  const failed = join(inbox, 'failed');
  const names = new Set(await readdir(failed).catch(() => [] as string[]));
  for (const archive of names) {
    const reasonFile = reasonFileName(archive);
    if (archive.endsWith(REASON) || !names.has(reasonFile)) continue;
    const moved = MOVED_AS.exec(await readFile(join(failed, reasonFile), 'utf8').catch(() => ''));
    const info = moved && (await stat(join(failed, archive)).catch(() => undefined));
    if (!moved || !info) continue;
    if (info.size !== Number(moved[1]) || info.mtimeMs !== Number(moved[2])) {
      logger.warn(`failed/${archive} changed after it was moved there (${moved[1]} bytes then, ${info.size} now): it was still being written; once it is complete, move it back into ${inbox} to have it read again`);
    }
  }
}

/**
 * What an archive's delivery depends on besides its bytes, as its checkpoint is keyed (src/run.ts,
 * Checkpoint.load): the sink and the options that change what is delivered and where, as a run's
 * start record holds them (src/job.ts), and the content of the user map and plugin files (`key`
 * covers all). An archive completed under other ones is delivered again: another sink gets all of it.
 */
interface Delivery {
  sink: string;
  options: StartRecord['options'];
  key: string;
}

/** JSON with the keys in order: a record's options compare equal whatever order wrote them. */
const canonical = (value: Record<string, unknown>) => JSON.stringify(value, Object.keys(value).sort());

/** The Delivery of this drop-folder run's archives, or why it cannot be told: its runs then fail on the same sink spec, user map or plugin. */
async function deliveryOf(config: RunConfig, cwd: string): Promise<Delivery | { error: unknown }> {
  try {
    const sink = (await createSink(config.sink, { cwd, insecure: config.insecure })).description;
    const options = startOptions(config, runOutcomeOptions(config, cwd));
    const userMap = config.userMap ? sha256Hex(await readFile(resolve(cwd, config.userMap))) : null;
    const plugins = [];
    // A package plugin by the file it loads from: an upgrade in place is another plugin.
    for (const specifier of config.plugins) plugins.push(sha256Hex(await readFile(isPluginPath(specifier) ? resolve(cwd, specifier) : new URL(import.meta.resolve(specifier)))));
    return { sink, options, key: sha256Hex(JSON.stringify([sink, canonical(options), userMap, plugins])) };
  } catch (err) {
    return { error: err };
  }
}

/** STATE/completed/<sha256>.<delivery key>.json; without a delivery, the record of versions that keyed it by the sha256 alone. */
function completedPath(state: StateDir, sha: string, delivery?: Delivery): string {
  return join(state.dir, STATE_FOLDERS.completed, delivery ? `${sha}.${delivery.key}.json` : `${sha}.json`);
}

/** What is read of each end of a run log: its start record is its first line, its summary among its last. */
const RUN_LOG_END_BYTES = 64 * 1024;

/** The records whole in the first or last RUN_LOG_END_BYTES of a run log. */
async function recordsAtEnd(path: string, end: 'first' | 'last'): Promise<Record<string, unknown>[]> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, RUN_LOG_END_BYTES);
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(length), 0, length, end === 'first' ? 0 : size - length);
    return buffer.toString('utf8', 0, bytesRead).split('\n').flatMap((line) => {
      try {
        return [JSON.parse(line) as Record<string, unknown>];
      } catch {
        return []; // cut by the end read, or by a kill
      }
    });
  } finally {
    await handle.close();
  }
}

/**
 * The sha256s of the archives the state dir's run logs show read whole (exit 0) into `delivery`'s
 * sink under its options: each log read once per drop-folder run, when a record of an earlier
 * version first asks (a state dir may keep thousands of logs).
 */
function readWholeUnder(state: StateDir, delivery: Delivery): () => Promise<Set<string>> {
  let shas: Promise<Set<string>> | undefined;
  return () =>
    (shas ??= (async () => {
      const found = new Set<string>();
      const runs = join(state.dir, STATE_FOLDERS.runs);
      for (const name of await readdir(runs).catch(() => [] as string[])) {
        const start = (await recordsAtEnd(join(runs, name), 'first').catch(() => []))[0] as Partial<StartRecord> | undefined;
        if (start?.record !== 'start' || !start.sha256 || start.sink !== delivery.sink || !start.options || canonical(start.options) !== canonical(delivery.options)) continue;
        const summary = (await recordsAtEnd(join(runs, name), 'last').catch(() => [])).find((r) => r.record === 'summary' && r.runId === start.runId) as RunSummary | undefined;
        if (summary && runExitCode(summary) === ExitCode.OK) found.add(start.sha256);
      }
      return found;
    })());
}

/**
 * The archive `sha` was completed under `delivery`: its record, or a record of an earlier version
 * (keyed by the bytes alone, so saying nothing of the sink) that a run log here shows was read
 * whole into the same sink under the same options (the user map's and plugins' content unknown);
 * that one is recorded anew. Throws when the state dir cannot be read.
 */
async function completedUnder(state: StateDir, sha: string, delivery: Delivery, readWhole: () => Promise<Set<string>>, dry: boolean | undefined): Promise<boolean> {
  if (await pathExists(completedPath(state, sha, delivery))) return true;
  const earlier = await readFile(completedPath(state, sha), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (earlier === undefined || !(await readWhole()).has(sha)) return false;
  // Not recorded anew, it is looked up in the run logs again next time: no harm.
  if (!dry) await writeFile(completedPath(state, sha, delivery), JSON.stringify({ ...(JSON.parse(earlier) as object), sink: delivery.sink, options: delivery.options }) + '\n').catch(() => undefined);
  return true;
}

/**
 * Records an archive completed under `delivery` (see completedPath); the error if the state dir
 * cannot be written, or what it was delivered under cannot be told (never thrown: a full state
 * dir is no fault of the archive's, nor a bug).
 */
async function recordCompleted(state: StateDir, name: string, done: RunResult, digest: string | undefined, delivery: Delivery | { error: unknown }): Promise<unknown> {
  if ('error' in delivery) return delivery.error ?? new Error('unknown error');
  const sha = done.summary.sha256 ?? digest;
  const record = completedPath(state, sha!, delivery);
  try {
    await makeDirectory(join(state.dir, STATE_FOLDERS.completed));
    await writeFile(record, JSON.stringify({ archive: name, sha256: sha, exportId: done.summary.exportId, sink: delivery.sink, options: delivery.options, completedAt: new Date().toISOString() }) + '\n');
    return undefined;
  } catch (err) {
    // Not a torn record left behind: the next run reads the archive again (the sink skips what it holds).
    await unlink(record).catch(() => undefined);
    return err ?? new Error('unknown error');
  }
}

/**
 * Every `*.zip` (any case) in the drop folder that has settled (not modified for `settleSeconds`) and is
 * not completed yet (its sha256 is not recorded in the state dir), oldest first. Completed
 * archives go to `done/` (or stay, with `keep`); archives that fail as a whole go to `failed/`
 * with a `.reason.txt`; archives with failed deliveries stay for the next run. A dry run reads
 * the same archives and only reads the state dir: no lock, nothing recorded, nothing moved.
 */
export async function runInbox(config: RunConfig, logger: Logger, options: Omit<RunOptions, 'lockHeld'> = {}): Promise<InboxResult> {
  const { stop, cwd = process.cwd() } = options;
  const inbox = resolve(cwd, config.inbox!);
  const state = new StateDir(resolve(cwd, config.stateDir!));
  const dry = config.dryRun;
  // Every shard reads every archive of the drop folder, each recording completion in its own
  // state dir: none may move an archive the others still need, so --shard implies --keep (remove
  // an archive once every shard's state dir has it under completed/; README "Scaling past one machine").
  const keep = config.keep || config.shard !== undefined;
  /** Where a failure found before any run (of the drop folder, or of one archive) is recorded. */
  const records = { stateDir: state.dir, ...(config.statusLog ? { statusLog: resolve(cwd, config.statusLog) } : {}) };
  const release = dry
    ? async () => undefined
    : await state.lock().catch(async (err: unknown) => {
        // Recorded as a plain run's is: a lock held gets a run log of its own (the holder's files untouched); a state
        // dir that cannot be locked (full, read-only, a file in its place) the status log, where there is one.
        await recordFailureBeforeStart(records, err, { archive: inbox });
        throw err;
      });
  const result: InboxResult = { results: [], waiting: [], exitCode: ExitCode.OK };
  try {
    const candidates: { name: string; mtime: number; listed?: Sighting; inDone?: string }[] = [];
    const unfinishedBefore = await readRecordFile<Sighting>(unfinishedPath(state));
    for (const [entry, was] of Object.entries(unfinishedBefore)) {
      const now = await sighting(join(inbox, 'done', entry));
      if (now && sameFile(was, now)) candidates.push({ name: entry, mtime: now.mtimeMs, listed: now, inDone: entry });
      else logger.warn(`done/${entry}: read by an earlier run of this state dir and not completed, but ${now ? 'changed' : 'gone'} since: not read again (put the archive back in the drop folder to run it)`);
    }
    const waitedBefore = await readWaiting(state);
    const waitingNow: Record<string, Waiting> = {};
    // As bytes: a name that is not UTF-8, listed as text, names no file (see textName).
    const listed = await readdir(inbox, { encoding: 'buffer' }).catch(async (err: unknown) => {
      const failure = new PivotArchiveError(ErrorCode.CONFIG, `cannot read inbox ${inbox}: ${errorMessage(err)}`);
      // Recorded as a run of the drop folder that failed before any archive: every run leaves a record.
      if (!dry) await recordFailureBeforeStart(records, failure, { archive: inbox }, true);
      throw failure;
    });
    const notUtf8 = 'its name is not UTF-8 (shown with %XX for each byte that is not)';
    /**
     * The name a settled archive listed as `raw` is read under: its own, or the UTF-8 one it is
     * renamed to (`name`, see textName and renameFree). Undefined when there is none: a dry run
     * renames nothing, and a rename that fails is recorded as the archive's failure (left in place).
     */
    const nameToRead = async (raw: Buffer, path: Buffer, name: string): Promise<string | undefined> => {
      if (raw.equals(Buffer.from(name))) return name;
      if (dry) {
        logger.warn(`${name}: ${notUtf8}: a run renames it so and reads it (dry run: not read)`);
        return undefined;
      }
      try {
        const renamed = await renameFree(path, inbox, name);
        logger.warn(`${name}: ${notUtf8}: renamed ${renamed}, and read`);
        return renamed;
      } catch (err) {
        if (!(await exists(path))) {
          logger.info(goneSinceListed(name));
          return undefined;
        }
        const failure = new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${join(inbox, name)}: ${notUtf8}, and it cannot be renamed so (${errorMessage(err)}): rename it by hand`);
        const reason = `${errorCodeOf(failure)}: ${failure.message}`;
        logger.error(`${name}: ${reason}; left in place`);
        await recordFailureBeforeStart(records, failure, { archive: join(inbox, name) }, true);
        result.results.push({ archive: name, outcome: 'failed-archive', reason, code: errorCodeOf(failure), exitCode: errorExitCode(failure) });
        result.exitCode = worseExitCode(result.exitCode, errorExitCode(failure));
        return undefined;
      }
    };
    for (const raw of listed) {
      const name = textName(raw);
      // `.ZIP` too (an exporter or a copy from Windows may write it so); anything else is said, not run.
      if (!/\.zip$/i.test(name)) {
        if (!name.startsWith('.') && name !== 'done' && name !== 'failed') logger.info(`${name}: not a *.zip, left alone`);
        continue;
      }
      const path = Buffer.concat([Buffer.from(inbox + sep), raw]);
      const info = await stat(path).catch(() => undefined);
      // A name gone since the listing is passed over; a dangling link is run like any archive: it fails, is recorded and moved to failed/.
      if (!info && !(await exists(path))) {
        logger.info(goneSinceListed(name));
        continue;
      }
      if (info && !info.isFile()) {
        // A warning each run, not news: whatever was meant to be read under this name never is until it is replaced by the archive (a file).
        logger.warn(`${name}: named like an archive but not a file (a ${kindOf(info)}): never read; left alone, so replace it with the archive or move it away`);
        continue;
      }
      const now = Date.now();
      if (info && now - info.mtimeMs < config.settleSeconds * 1000) {
        const seen = sightingOf(info);
        const { settled, seenAt, future } = settleState(seen, waitedBefore[name], now, config.settleSeconds);
        if (!settled) {
          result.waiting.push(name);
          waitingNow[name] = { ...seen, seenAt };
          const ahead = future ? ` (its time is ${new Date(info.mtimeMs).toISOString()}, in the future: it is taken once runs have seen it unchanged for ${config.settleSeconds} s)` : '';
          logger.info(`${name}: modified less than ${config.settleSeconds} s ago${seenAt < now ? ` (unchanged for ${Math.floor((now - seenAt) / 1000)} s of runs)` : ''}, still being copied in; left for the next run${ahead}`);
          continue;
        }
        logger.info(`${name}: unchanged for ${config.settleSeconds} s since a run first saw it so: taken`);
      }
      const readAs = await nameToRead(raw, path, name);
      if (readAs !== undefined) candidates.push({ name: readAs, mtime: info?.mtimeMs ?? 0, listed: info && sightingOf(info) });
    }
    if (!dry) await changedInFailed(logger, inbox);
    if (!dry) await writeFile(waitingPath(state), JSON.stringify(waitingNow) + '\n').catch((err: unknown) => logger.warn(`cannot record the archives left to settle in ${waitingPath(state)}: ${errorMessage(err)}`));
    candidates.sort((a, b) => a.mtime - b.mtime || (a.name < b.name ? -1 : 1));
    const delivery = await deliveryOf(config, cwd);
    const readWhole = 'error' in delivery ? undefined : readWholeUnder(state, delivery);
    if ('error' in delivery && candidates.length > 0) logger.warn(`cannot tell what the archives are delivered under (${errorMessage(delivery.error)}): none is taken for completed`);
    for (const { name, listed, inDone: unfinished } of candidates) {
      let path = unfinished === undefined ? join(inbox, name) : join(inbox, 'done', unfinished);
      if (stop?.aborted) {
        // Stopped before this archive (a signal, early or between archives): not a success, whatever came before; and
        // recorded, as a plain run stopped before its first delivery is (one stopped before the first archive had no other record).
        const failure = new PivotArchiveError(ErrorCode.STOPPED, `stopped by a signal before ${name}: it and the archives after it are left for the next run`);
        logger.warn(failure.message);
        if (!dry) await recordFailureBeforeStart(records, failure, { archive: path }, true);
        result.results.push({ archive: name, outcome: 'stopped', reason: `${ErrorCode.STOPPED}: ${failure.message}`, code: ErrorCode.STOPPED, exitCode: ExitCode.INTERRUPTED });
        result.exitCode = worseExitCode(result.exitCode, ExitCode.INTERRUPTED);
        break;
      }
      // What the run reads: the file then at the name (one dropped over it meanwhile is not moved).
      let read = await sighting(path);
      /** Its name in done/, where another run moved it before this one (or an earlier one) read it: read there, and left there. */
      let inDone = unfinished;
      if (read === undefined && !(await exists(path))) {
        // Completed by another state dir's run, which may be another sink's job: this state dir must account for it too
        // (the sink skips what it holds). Was: passed over, exit 0, and that sink never got it.
        inDone = listed && (await movedToDone(inbox, name, listed));
        // Gone elsewhere (an operator took it back, another run failed it): passed over, no failure.
        if (inDone === undefined) {
          logger.warn(`${name}: gone from the drop folder before it was read (taken by another run, or by hand): passed over`);
          continue;
        }
        logger.warn(`${name}: moved to done/ by another run before this one read it (${inDone}): read there unless this state dir records it completed, and left there`);
        path = join(inbox, 'done', inDone);
        read = await sighting(path);
      }
      /** How the results name it: relative to the drop folder. */
      const archive = inDone === undefined ? name : join('done', inDone);
      // A dangling symbolic link: said so (opened, it reads as a file that does not exist).
      const linkedTo = read === undefined ? await readlink(path).catch(() => undefined) : undefined;
      // One that cannot be read is run all the same: it fails as unreadable, and is recorded and moved to failed/.
      // One with no ZIP end record is not hashed: it was never completed, and its run refuses it at once.
      const digest = (await noZipEndRecord(path)) ? undefined : await fileSha256(path).catch(() => undefined);
      // A state dir that cannot be read here is said, and the archive read again (the sink skips what it holds).
      const completed =
        digest !== undefined &&
        !('error' in delivery) &&
        (await completedUnder(state, digest, delivery, readWhole!, dry).catch((err: unknown) => {
          logger.warn(`${name}: cannot tell whether it was completed (${errorMessage(err)}): read again`);
          return false;
        }));
      if (digest && completed) {
        logger.info(`${name}: already completed (sha256 ${digest.slice(0, 12)}...)`);
        if (!keep && !dry && inDone === undefined) await moveSafely(logger, path, join(inbox, 'done'), name, read);
        result.results.push({ archive, outcome: 'already-completed', sha256: digest });
        continue;
      }
      try {
        if (linkedTo !== undefined) {
          const failure = new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${path}: a symbolic link to a missing file (${linkedTo})`);
          // Refused before any run of it, so recorded here: every run leaves a record.
          if (!dry) await recordFailureBeforeStart(records, failure, { archive: path }, true);
          throw failure;
        }
        const done = await run({ ...config, inbox: undefined, archive: path }, logger, { ...options, cwd, lockHeld: true });
        if (done.exitCode === ExitCode.OK) {
          const unrecorded = dry ? undefined : await recordCompleted(state, name, done, digest, delivery);
          if (unrecorded) {
            // The state dir cannot be written (full, read-only): not the archive's fault, nor a bug. It stays
            // in the drop folder; the next run finds it completed, or reads it again (the sink skips what it holds).
            const message = `every item is accounted for, but its completion cannot be recorded in ${join(state.dir, STATE_FOLDERS.completed)}: ${errorMessage(unrecorded)}; left in the drop folder for the next run`;
            logger.error(`${name}: ${ErrorCode.STATUS_LOG}: ${message}`);
            result.results.push({ archive, outcome: 'not-recorded', run: done, reason: `${ErrorCode.STATUS_LOG}: ${message}`, code: ErrorCode.STATUS_LOG, exitCode: ExitCode.DELIVERY_FAILED });
            result.exitCode = worseExitCode(result.exitCode, ExitCode.DELIVERY_FAILED);
            continue;
          }
          if (!dry && !keep && inDone === undefined) await moveSafely(logger, path, join(inbox, 'done'), name, read);
          result.results.push({ archive, outcome: 'completed', run: done });
        } else {
          // Failed deliveries, an interruption or an alarm: left in place for the next run.
          result.results.push({ archive, outcome: 'deliveries-failed', run: done });
          result.exitCode = worseExitCode(result.exitCode, done.exitCode);
        }
      } catch (err) {
        // The archive's own fault, or a bug it triggered, fails that archive alone; a setup error stops the inbox.
        const code = errorCodeOf(err);
        const internal = code === ErrorCode.INTERNAL;
        if (!internal && !code.startsWith('E_ARCHIVE_')) {
          // A setup error (the sink gone, the state dir unwritable) ends the drop-folder run: this archive and those
          // after it are left for the next run. What the archives before it did is still said and counted: after a
          // delivery of this run it is not "nothing was delivered" (2) but items not delivered (1).
          const reached = !dry && result.results.some((r) => r.run !== undefined && r.run.summary.delivered + r.run.summary.skipped > 0);
          const exitCode = reached && errorExitCode(err) === ExitCode.SETUP_FAILED ? ExitCode.DELIVERY_FAILED : errorExitCode(err);
          const reason = `${code}: ${errorMessage(err)}`;
          logger.error(`${name}: ${reason}; the drop-folder run stops here: ${name} and the archives after it are left for the next run`);
          result.results.push({ archive, outcome: 'stopped', reason, code, exitCode: errorExitCode(err) });
          result.exitCode = worseExitCode(result.exitCode, exitCode);
          break;
        }
        // Gone while its run opened it (another host's run took it): passed over, like a name gone since the listing.
        if (code === ErrorCode.ARCHIVE_UNREADABLE && read !== undefined && !(await exists(path))) {
          logger.warn(`${name}: gone from the drop folder as it was opened (taken by another run, or by hand): passed over`);
          continue;
        }
        const reason = internal ? `E_INTERNAL: a bug in pivot-archive while reading this archive: ${errorMessage(err)}` : `${code}: ${errorMessage(err)}`;
        // A shard leaves it in place too: moved, it would be gone from the other shards' runs with only a warning.
        // Where a run leaves it without a move (a dry run says what a run would do); else it is moved to failed/.
        const stays = config.shard
          ? 'left in place: every shard reads it (--shard), and each run fails it until it is removed or replaced'
          : inDone !== undefined
            ? 'left in done/, where another run put it'
            : dry
              ? 'a run would move it to failed/ (dry run: left in place)'
              : undefined;
        const moved = stays === undefined ? await moveSafely(logger, path, join(inbox, 'failed'), name, read) : undefined;
        // Said once the move is done: a move that fails (or finds the file gone or replaced) says why, just before.
        logger.error(`${name}: ${reason}; ${stays ?? (moved ? `moved to failed/${basename(moved)}` : 'not moved to failed/ (said above)')}`);
        const movedAs = read ? `\nfile when moved here: ${read.size} bytes, mtimeMs ${read.mtimeMs}` : '';
        if (moved) {
          const movedName = basename(moved);
          const reasonFile = join(dirname(moved), reasonFileName(movedName));
          // A name cut short says whose reason it is.
          const whose = basename(reasonFile) === movedName + REASON ? '' : `\narchive: ${movedName}`;
          await writeFile(reasonFile, reason + movedAs + whose + '\n').catch((e: unknown) => logger.error(`${name}: cannot write ${reasonFile}: ${errorMessage(e)}`));
        }
        result.results.push({ archive, outcome: 'failed-archive', reason, code, exitCode: errorExitCode(err) });
        result.exitCode = worseExitCode(result.exitCode, errorExitCode(err));
      }
    }
    if (!dry) await recordUnfinished(state, inbox, unfinishedBefore, result.results, logger);
  } finally {
    await release();
  }
  return result;
}

/** Keeps the archives read in done/ that did not complete (see `unfinishedPath`), and drops those that did. */
async function recordUnfinished(state: StateDir, inbox: string, before: Record<string, Sighting>, results: InboxResult['results'], logger: Logger): Promise<void> {
  const unfinished = { ...before };
  for (const { archive, outcome } of results) {
    if (!archive.startsWith(`done${sep}`)) continue;
    const entry = archive.slice(`done${sep}`.length);
    const now = outcome === 'completed' || outcome === 'already-completed' ? undefined : await sighting(join(inbox, archive));
    if (now) unfinished[entry] = now;
    else delete unfinished[entry];
  }
  await writeFile(unfinishedPath(state), JSON.stringify(unfinished) + '\n').catch((err: unknown) => logger.warn(`cannot record the archives in done/ left to finish in ${unfinishedPath(state)}: ${errorMessage(err)}`));
}

/** What a directory entry that is not a regular file is, in words. */
function kindOf(info: Stats): string {
  return info.isDirectory() ? 'directory' : info.isFIFO() ? 'FIFO' : info.isSocket() ? 'socket' : info.isBlockDevice() || info.isCharacterDevice() ? 'device' : 'special file';
}
