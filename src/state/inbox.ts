import { createHash } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { RunConfig } from '../options/index.js';
import { ErrorCode, ExitCode, PivotArchiveError, errorCodeOf, errorMessage } from '../errors.js';
import { errorExitCode, worseExitCode } from '../exit-policy.js';
import { pathExists } from '../fs-util.js';
import type { Logger } from '../logger.js';
import { recordFailureBeforeStart } from '../job.js';
import { run, type RunOptions, type RunResult } from '../run.js';
import { StateDir } from './index.js';

export interface InboxResult {
  results: { archive: string; outcome: 'completed' | 'already-completed' | 'failed-archive' | 'deliveries-failed'; run?: RunResult; reason?: string }[];
  waiting: string[];
  exitCode: number;
}

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Moves a file into `dir`, never over another file of the same name. */
async function moveInto(path: string, dir: string, name: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  let target = join(dir, name);
  for (let n = 1; await pathExists(target); n++) target = join(dir, `${name}.${n}`);
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

const sameFile = (a: Sighting | undefined, b: Sighting | undefined) => a !== undefined && b !== undefined && a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;

/**
 * moveInto, only when the file at `path` is still the one that was read (`read`): an archive
 * dropped over the same name while it ran (`mv` in, as the README advises) is another export,
 * left for the next run, never moved to done/ unread. Logged instead of thrown: a move that
 * fails must not stop the other archives.
 */
async function moveSafely(logger: Logger, path: string, dir: string, name: string, read: Sighting | undefined): Promise<string | undefined> {
  if (read !== undefined && !sameFile(read, await sighting(path))) {
    logger.warn(`${name}: replaced or changed while it was read: the new file is left for the next run`);
    return undefined;
  }
  try {
    return await moveInto(path, dir, name);
  } catch (err) {
    logger.error(`${name}: cannot be moved to ${dir}: ${errorMessage(err)}`);
    return undefined;
  }
}

/**
 * The archives a drop-folder run left because they had not settled, as it saw them. One seen
 * unchanged by the next run has settled whatever its time says: an mtime in the future (a
 * writer's clock ahead, a copy that kept the source's time) never gets older than `--settle`.
 */
function waitingPath(state: StateDir): string {
  return join(state.dir, 'inbox-waiting.json');
}

async function readWaiting(state: StateDir): Promise<Record<string, Sighting>> {
  try {
    const value = JSON.parse(await readFile(waitingPath(state), 'utf8')) as unknown;
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, Sighting>) : {};
  } catch {
    return {};
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
  const release = dry ? async () => undefined : await state.lock();
  const result: InboxResult = { results: [], waiting: [], exitCode: ExitCode.OK };
  try {
    const candidates = [];
    const waitedBefore = await readWaiting(state);
    const waitingNow: Record<string, Sighting> = {};
    const names = await readdir(inbox).catch(async (err: unknown) => {
      const failure = new PivotArchiveError(ErrorCode.CONFIG, `cannot read inbox ${inbox}: ${errorMessage(err)}`);
      // Recorded as a run of the drop folder that failed before any archive: every run leaves a record.
      if (!dry) await recordFailureBeforeStart({ stateDir: state.dir, ...(config.statusLog ? { statusLog: resolve(cwd, config.statusLog) } : {}) }, failure, { archive: inbox }, true);
      throw failure;
    });
    for (const name of names) {
      // `.ZIP` too (an exporter or a copy from Windows may write it so); anything else is said, not run.
      if (!/\.zip$/i.test(name)) {
        if (!name.startsWith('.') && name !== 'done' && name !== 'failed') logger.info(`${name}: not a *.zip, left alone`);
        continue;
      }
      const path = join(inbox, name);
      const info = await stat(path).catch(() => undefined);
      if (!info) {
        // A dangling link, say: run like any archive, it fails as unreadable, is recorded and moved to failed/.
        // A name gone since the listing is passed over.
        if (await lstat(path).then(() => true, () => false)) candidates.push({ name, mtime: 0 });
        continue;
      }
      if (!info.isFile()) {
        logger.info(`${name}: not a file, left alone`);
        continue;
      }
      const now = sightingOf(info);
      if (Date.now() - info.mtimeMs < config.settleSeconds * 1000) {
        if (!sameFile(waitedBefore[name], now)) {
          result.waiting.push(name);
          waitingNow[name] = now;
          const future = info.mtimeMs > Date.now() ? ` (its time is ${new Date(info.mtimeMs).toISOString()}, in the future: it is taken when the next run finds it unchanged)` : '';
          logger.info(`${name}: modified less than ${config.settleSeconds} s ago, still being copied in; left for the next run${future}`);
          continue;
        }
        logger.info(`${name}: unchanged since the last run left it to settle: taken`);
      }
      candidates.push({ name, mtime: info.mtimeMs });
    }
    if (!dry) await writeFile(waitingPath(state), JSON.stringify(waitingNow) + '\n').catch((err: unknown) => logger.warn(`cannot record the archives left to settle in ${waitingPath(state)}: ${errorMessage(err)}`));
    candidates.sort((a, b) => a.mtime - b.mtime || (a.name < b.name ? -1 : 1));
    for (const { name } of candidates) {
      if (stop?.aborted) break;
      const path = join(inbox, name);
      // What the run reads: the file then at the name (one dropped over it meanwhile is not moved).
      const read = await sighting(path);
      // One that cannot be read is run all the same: it fails as unreadable, and is recorded and moved to failed/.
      const digest = await sha256(path).catch(() => undefined);
      const record = digest && join(state.dir, 'completed', `${digest}.json`);
      if (digest && record && (await pathExists(record))) {
        logger.info(`${name}: already completed (sha256 ${digest.slice(0, 12)}...)`);
        if (!keep && !dry) await moveSafely(logger, path, join(inbox, 'done'), name, read);
        result.results.push({ archive: name, outcome: 'already-completed' });
        continue;
      }
      try {
        const done = await run({ ...config, inbox: undefined, archive: path }, logger, { ...options, cwd, lockHeld: true });
        if (done.exitCode === ExitCode.OK) {
          if (!dry) {
            await mkdir(join(state.dir, 'completed'), { recursive: true });
            const sha = done.summary.sha256 ?? digest;
            await writeFile(join(state.dir, 'completed', `${sha}.json`), JSON.stringify({ archive: name, sha256: sha, exportId: done.summary.exportId, completedAt: new Date().toISOString() }) + '\n');
            if (!keep) await moveSafely(logger, path, join(inbox, 'done'), name, read);
          }
          result.results.push({ archive: name, outcome: 'completed', run: done });
        } else {
          // Failed deliveries, an interruption or an alarm: left in place for the next run.
          result.results.push({ archive: name, outcome: 'deliveries-failed', run: done });
          result.exitCode = worseExitCode(result.exitCode, done.exitCode);
        }
      } catch (err) {
        // The archive's own fault, or a bug it triggered, fails that archive alone; a setup error stops the inbox.
        const code = errorCodeOf(err);
        const internal = code === ErrorCode.INTERNAL;
        if (!internal && !code.startsWith('E_ARCHIVE_')) throw err;
        const reason = internal ? `E_INTERNAL: a bug in pivot-archive while reading this archive: ${errorMessage(err)}` : `${code}: ${errorMessage(err)}`;
        logger.error(`${name}: ${reason}; ${dry ? 'a run would move it to failed/ (dry run: left in place)' : 'moved to failed/'}`);
        const moved = dry ? undefined : await moveSafely(logger, path, join(inbox, 'failed'), name, read);
        if (moved) await writeFile(`${moved}.reason.txt`, reason + '\n').catch((e: unknown) => logger.error(`${name}: cannot write ${moved}.reason.txt: ${errorMessage(e)}`));
        result.results.push({ archive: name, outcome: 'failed-archive', reason });
        result.exitCode = worseExitCode(result.exitCode, errorExitCode(err));
      }
    }
  } finally {
    await release();
  }
  return result;
}
