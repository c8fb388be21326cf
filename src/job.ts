import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { ErrorCode, PivotArchiveError, errorCodeOf, errorMessage } from './errors.js';
import { errorExitCode, runExitCode, settledEveryItem } from './exit-policy.js';
import { RejectsFolder } from './formats/rejects/index.js';
import type { Logger } from './logger.js';
import type { PipelineOptions, Progress } from './pipeline.js';
import { DryRunSink } from './dry-run.js';
import { createSink } from './sinks/index.js';
import type { Sink } from './sinks/sink.js';
import type { Source } from './sources/source.js';
import { signText, type SigningKey } from './formats/signed-note/index.js';
import { parseSigningKey } from './ledger/note.js';
import { LedgerWriter } from './ledger/writer.js';
import { StatusLog, type RunSummary, type StartRecord, type Unstamped } from './status-log.js';
import { StateDir } from './state/index.js';
import { formatShard, type Shard } from './transforms/shard/index.js';
import { TOOL } from './version.js';

/** What a job (a run or an import) is told, by flags or by the config file. */
export interface JobConfig {
  sink: string;
  insecure: boolean;
  statusLog?: string;
  stateDir?: string;
  keepRuns: number;
  maxItemSize: number;
  /** Ed25519 key (keygen's file) that signs the ledger's checkpoint of each run. */
  signingKey?: string;
  /** Count what would be delivered (src/dry-run.ts): no state dir, no status log, the sink created but never opened. */
  dryRun?: boolean;
  /** --shard K/N: only this shard's mailboxes (src/transforms/shard/); the state dir must be this shard's. */
  shard?: Shard;
}

export interface JobOptions {
  cwd?: string;
  /** The caller (the drop folder) already holds the state dir's lock. */
  lockHeld?: boolean;
  stop?: AbortSignal;
  progress?: (p: Progress) => void;
  progressEveryMs?: number;
}

export interface JobResult {
  summary: RunSummary;
  exitCode: number;
}

/** What a job's caller opens once the status log and the sink are ready: the source and the chain's settings. */
export interface OpenedJob extends Pick<PipelineOptions, 'plugins' | 'fanOut' | 'maxRejected' | 'checkpoint'> {
  source: Source;
  /** What the start record says of the input beyond its identity (export, tenant, events; the staging read). */
  started?: Pick<StartRecord, 'exportId' | 'tenant' | 'eventsInArchive' | 'from'>;
  rejects?: RejectsFolder;
  /** After the chain: e.g. the checkpoint removed once the archive completed (or the sink found storage lost). */
  finish?(summary: RunSummary): Promise<void>;
}

/** What `open` may use and register. */
export interface JobContext {
  sink: Sink;
  statusLog: StatusLog;
  state?: StateDir;
  /** Run after the job, last registered first, whether it succeeded or not. */
  cleanup(fn: () => Promise<void>): void;
}

/** How a failure record names the input, and its identity when it could be read. */
export interface InputIdentity {
  archive: string;
  path?: string;
  sha256?: string;
  size?: number;
}

/** What a job is: its command, its input, the options that change its outcome, and how it opens. */
export interface Job {
  command: StartRecord['command'];
  input(): InputIdentity;
  /** The options that change what is delivered and where, for the start record. */
  outcomeOptions: Record<string, unknown>;
  open(context: JobContext): Promise<OpenedJob>;
}

/**
 * One job, run or import alike: the state dir's lock, run log and ledger, the status log(s), the
 * sink, then `open` (the caller's checks and its source), the chain, and the summary with its
 * exit code. Every job leaves a record: a `start` record, then its outcomes and summary, or a
 * `failure` record (error and input identity) when it fails before its summary; in the state
 * dir's ledger a checkpoint then closes it (see src/ledger/SPEC.md).
 */
export async function runJob(config: JobConfig, logger: Logger, options: JobOptions, job: Job): Promise<JobResult> {
  const cwd = options.cwd ?? process.cwd();
  const runId = randomUUID();
  const startedAt = new Date().toISOString();
  const cleanups: (() => Promise<void>)[] = [];
  // A dry run writes nothing: no status log, and the state dir is left alone (no lock, run log, checkpoint or ledger).
  const writes = !config.dryRun;
  const logs = config.statusLog && writes ? [resolve(cwd, config.statusLog)] : [];
  const state = config.stateDir && writes ? new StateDir(resolve(cwd, config.stateDir)) : undefined;
  let statusLog: StatusLog | undefined;
  let ledger: LedgerWriter | undefined;
  let key: SigningKey | undefined;
  // Until the sink is created, its kind only (`maildir:`, `imap://`): a spec may hold a secret anywhere, and one that does not parse cannot say where.
  let sinkDescription = sinkKindOf(config.sink);
  let started = false;
  /** The state dir's lock is held and `logs` ends with its run log. */
  let begun = false;
  const start = async (log: StatusLog, opened?: OpenedJob['started']) => {
    started = true;
    await log.write(startRecord(job, config, sinkDescription, opened, ledger?.tornBytes));
  };
  try {
    // The chain (libmime, highland) is loaded by the job that runs it, not by a command line that is only recorded as refused.
    const { runPipeline } = await import('./pipeline.js');
    // Without a ledger the key can still sign a staging run's index (an import checks it); for other sinks it would sign nothing.
    if (config.signingKey && !config.stateDir && !sinkKindOf(config.sink).toLowerCase().startsWith('azblob:')) {
      throw new PivotArchiveError(ErrorCode.USAGE, '--signing-key (or PIVOT_ARCHIVE_SIGNING_KEY) signs the ledger kept in --state-dir (and a staging run\'s index): give --state-dir too');
    }
    if (state) {
      const { runLog, release } = await state.begin(config.keepRuns, options.lockHeld);
      cleanups.push(release);
      logs.push(runLog);
      begun = true;
      await state.claimShard(config.shard && formatShard(config.shard));
    }
    const opening = await openStatusLog(logs, begun, runId);
    // One that cannot be opened: the failure goes to the run log alone, with the run's start and identity, once.
    statusLog = opening.statusLog;
    if (opening.error !== undefined || statusLog === undefined) throw opening.error;
    if (state) {
      // A ledger that cannot be appended to stops the run, with a failure record in the run log.
      ledger = await LedgerWriter.open(state.ledgerPath);
      statusLog.appendTo(ledger);
    }
    if (config.signingKey) key = await readSigningKey(config.signingKey, cwd);
    const signingKey = key;
    const created = await createSink(config.sink, { cwd, insecure: config.insecure, stop: options.stop, ...(signingKey ? { signNote: (text: string) => signText(text, signingKey) } : {}) });
    const sink: Sink = config.dryRun ? new DryRunSink(created) : created;
    sinkDescription = sink.description;
    const opened = await job.open({ sink, statusLog, state, cleanup: (fn) => cleanups.push(fn) });
    await start(statusLog, opened.started);
    // The start record reaches every record file (status log, run log, ledger) before the sink is
    // opened or fed: a status log or state dir that cannot take it (a full disk) fails the run here,
    // before any delivery (exit 2), not after the sink had a whole window of deliveries in flight.
    await statusLog.flush().catch((err: unknown) => {
      throw err instanceof PivotArchiveError ? new PivotArchiveError(err.code, `${err.message}; the run stopped before any delivery`, { cause: err }) : err;
    });
    await sink.open();
    let sinkClosed = false;
    const closeSink = async () => {
      if (sinkClosed) return;
      sinkClosed = true;
      await sink.close();
    };
    let summary: RunSummary;
    try {
      summary = await runPipeline(opened.source, {
        sink,
        plugins: opened.plugins,
        fanOut: { ...opened.fanOut, shard: config.shard },
        shard: config.shard,
        maxItemSize: config.maxItemSize,
        maxRejected: opened.maxRejected,
        rejects: opened.rejects,
        checkpoint: opened.checkpoint,
        statusLog,
        logger,
        stop: options.stop,
        progress: options.progress,
        progressEveryMs: options.progressEveryMs,
        // The sink closes before the summary is written: what it does then (Azure Blob's index, its
        // batches found still there) is part of the outcome. A failure there, or the checkpoint's (a
        // full disk), is the summary's error: exit 1 after deliveries, not a failure record after a clean summary.
        beforeSummary: async (s) => {
          const failed = errorOfSummary(s);
          // Messages files not read leave the export's events counted nowhere: not settled either.
          if (s.exportId !== null && settledEveryItem(s) && !s.entriesNotRead) sink.exportSettled?.(s.exportId);
          await closeSink().catch(failed);
          await opened.finish?.(s).catch(failed);
        },
      });
    } finally {
      await closeSink();
    }
    await statusLog.close().catch((err: unknown) => {
      summary.error ??= { code: ErrorCode.STATUS_LOG, message: errorMessage(err) };
    });
    await sealLedger(ledger, runId, key, state).catch(errorOfSummary(summary));
    if (summary.error) logger.error(`${summary.error.code}: ${summary.error.message}`);
    return { summary, exitCode: runExitCode(summary) };
  } catch (err) {
    // A failure before the logs were open (a lock another run holds, another shard's state dir, a flag that needs another) is recorded too:
    // a run that found the lock held gets a run log of its own (a new file: the holder's files are not touched), so `status` shows it.
    if (!statusLog && state && !begun && errorCodeOf(err) === ErrorCode.LOCKED) {
      const runLog = await state.newRunLog().catch(() => undefined);
      if (runLog) logs.push(runLog);
    }
    statusLog ??= logs.length > 0 ? (await openStatusLog(logs, begun, runId)).statusLog : undefined;
    // Refused after the state dir was begun but before its ledger was open (another shard's state dir): the ledger records it too.
    if (statusLog && state && begun && !ledger) {
      ledger = await LedgerWriter.open(state.ledgerPath).catch(() => undefined);
      if (ledger) statusLog.appendTo(ledger);
    }
    if (statusLog && !started) await start(statusLog).catch(() => undefined);
    await recordFailure(statusLog, err, job.input(), startedAt);
    await sealLedger(ledger, runId, key, state).catch((sealErr: unknown) => logger.error(`${errorCodeOf(sealErr)}: ${errorMessage(sealErr)}`));
    throw err;
  } finally {
    for (const cleanup of cleanups.reverse()) {
      await cleanup().catch((err: unknown) => logger.warn(`cleanup failed: ${errorMessage(err)}`));
    }
  }
}

/** A failure after deliveries, as the summary's error (the first one stands): the run exits 1, not 2. */
function errorOfSummary(summary: RunSummary): (err: unknown) => void {
  return (err) => void (summary.error ??= { code: errorCodeOf(err), message: errorMessage(err) });
}

/**
 * The status logs of a job. If one cannot be opened, that `error`, and the state dir's own run log
 * (when there is one) opened alone, so that the caller records the failure there. Never throws.
 * Was: the failure recorded here, without the run's identity, and again by the caller.
 */
async function openStatusLog(paths: string[], lastIsRunLog: boolean, runId: string): Promise<{ statusLog?: StatusLog; error?: unknown }> {
  try {
    return { statusLog: await StatusLog.open(paths, runId) };
  } catch (error) {
    const runLog = lastIsRunLog && paths.length > 1 ? await StatusLog.open(paths.slice(-1), runId).catch(() => undefined) : undefined;
    return { error, ...(runLog ? { statusLog: runLog } : {}) };
  }
}

/**
 * The record of a failure before any job could start (a bad flag or config value, a drop folder
 * that cannot be read): a `failure` record in the status log and the state dir's run log and
 * ledger it names, where they can be opened (a lock another run holds is left alone; `lockHeld`:
 * the caller holds it). Never throws.
 */
export async function recordFailureBeforeStart(where: { statusLog?: string; stateDir?: string }, err: unknown, input: InputIdentity, lockHeld = false): Promise<void> {
  const runId = randomUUID();
  const state = where.stateDir ? new StateDir(where.stateDir) : undefined;
  // Refused because another run holds the lock: a run log of its own, the lock and the holder's ledger untouched.
  const lockedOut = errorCodeOf(err) === ErrorCode.LOCKED;
  const begin = (dir: StateDir) => (lockedOut ? dir.newRunLog().then((runLog) => ({ runLog, release: async () => undefined })) : dir.begin(0, lockHeld));
  const begun = state ? await begin(state).catch(() => undefined) : undefined;
  // A status log refused for being a file of the state dir (its ledger) is not written: the run log and the ledger, chained, record it.
  const statusLogPath = where.statusLog && !(await state?.holds(where.statusLog)) ? where.statusLog : undefined;
  try {
    const logs = [...(statusLogPath ? [statusLogPath] : []), ...(begun ? [begun.runLog] : [])];
    const statusLog = logs.length > 0 ? (await openStatusLog(logs, begun !== undefined, runId)).statusLog : undefined;
    const ledger = begun && statusLog && !lockedOut ? await LedgerWriter.open(state!.ledgerPath).catch(() => undefined) : undefined;
    if (ledger) statusLog!.appendTo(ledger);
    await recordFailure(statusLog, err, input, new Date().toISOString());
    await sealLedger(ledger, runId, undefined, state).catch(() => undefined);
  } finally {
    await begun?.release().catch(() => undefined);
  }
}

/** Writes the `failure` record of a job that ends with an error, and closes the log; never throws. */
async function recordFailure(statusLog: StatusLog | undefined, err: unknown, input: InputIdentity, startedAt: string): Promise<void> {
  if (!statusLog) return;
  const { path, ...named } = input;
  // A run the lock refused leaves the archive to the run that holds it: hashing gigabytes would only delay exit 3.
  // One stopped by a signal must end now (a service manager's stop timeout kills it, recordless, after some seconds).
  const code = errorCodeOf(err);
  const identity = named.sha256 === undefined && path && code !== ErrorCode.LOCKED && code !== ErrorCode.STOPPED ? await fileIdentity(path) : {};
  await statusLog
    .write({
      record: 'failure',
      ...named,
      ...identity,
      startedAt,
      finishedAt: new Date().toISOString(),
      code: errorCodeOf(err),
      exitCode: errorExitCode(err),
      error: errorMessage(err),
    })
    .catch(() => undefined);
  await statusLog.close().catch(() => undefined);
}

/** sha256 and size of a file that could not be opened as an archive (if it can be read at all: a FIFO is not read, it could block for ever). */
async function fileIdentity(path: string): Promise<{ sha256?: string; size?: number }> {
  try {
    if (!(await stat(path)).isFile()) return {};
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of createReadStream(path)) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    return { sha256: hash.digest('hex'), size };
  } catch {
    return {};
  }
}

/** The options a start record holds: the job's own and those every job has. */
export function startOptions(config: Pick<JobConfig, 'maxItemSize' | 'shard'>, outcomeOptions: Record<string, unknown>): Record<string, unknown> {
  return { maxItemSize: config.maxItemSize, shard: config.shard ? formatShard(config.shard) : null, ...outcomeOptions };
}

/** The start record: who ran what, on which input, into which sink, with which options. */
function startRecord(job: Job, config: JobConfig, sink: string, opened: OpenedJob['started'], tornBytes = 0): Unstamped<StartRecord> {
  const { path: _path, ...input } = job.input();
  return {
    record: 'start',
    command: job.command,
    tool: TOOL,
    host: hostname(),
    ...input,
    ...opened,
    sink,
    options: startOptions(config, job.outcomeOptions),
    ...(config.signingKey ? { signed: true } : {}),
    ...(tornBytes > 0 ? { ledgerTornBytes: tornBytes } : {}),
  };
}

/** The signing key, read before anything is delivered; its content never reaches a message. */
async function readSigningKey(given: string, cwd: string): Promise<SigningKey> {
  // The key's text given as the path (helper-115: the whole key was quoted into every record, the ledger too).
  if (given.includes('PRIVATE+KEY+')) throw new PivotArchiveError(ErrorCode.CONFIG, "--signing-key takes the path of the key file keygen wrote, not the key's text (which is not repeated here)");
  const path = resolve(cwd, given);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `--signing-key ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
  }
  return parseSigningKey(text, `--signing-key ${path}`);
}

/** Closes the run in the ledger with its checkpoint, synced to disk. */
async function sealLedger(ledger: LedgerWriter | undefined, runId: string, key: SigningKey | undefined, state: StateDir | undefined): Promise<void> {
  if (!ledger || !state) return;
  try {
    await ledger.seal(runId, key, state.checkpointNotePath);
  } finally {
    await ledger.close().catch(() => undefined);
  }
}

/** The scheme of a sink spec (`maildir:`, `imap://`), never what follows it. */
function sinkKindOf(spec: string): string {
  return /^[a-z][a-z0-9+.-]*:(?:\/\/)?/i.exec(spec)?.[0] ?? '';
}
