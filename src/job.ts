import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import { ErrorCode, errorCodeOf, errorMessage } from './errors.js';
import { errorExitCode, runExitCode } from './exit-policy.js';
import { RejectsFolder } from './formats/rejects/index.js';
import type { Logger } from './logger.js';
import { runPipeline, type PipelineOptions, type Progress } from './pipeline.js';
import { DryRunSink } from './dry-run.js';
import { createSink } from './sinks/index.js';
import type { Sink } from './sinks/sink.js';
import type { Source } from './sources/source.js';
import { StatusLog, type RunSummary } from './status-log.js';
import { StateDir } from './state/index.js';

/** What a job (a run or an import) is told, by flags or by the config file. */
export interface JobConfig {
  sink: string;
  insecure: boolean;
  statusLog?: string;
  stateDir?: string;
  keepRuns: number;
  maxItemSize: number;
  /** Count what would be delivered (src/dry-run.ts): no state dir, no status log, the sink created but never opened. */
  dryRun?: boolean;
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
export interface OpenedJob extends Pick<PipelineOptions, 'plugins' | 'fanOut' | 'maxRejected'> {
  source: Source;
  rejects?: RejectsFolder;
  /** After the chain: e.g. the checkpoint removed once the archive completed. */
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

/**
 * One job, run or import alike: the state dir's lock and run log, the status log(s), the sink,
 * then `open` (the caller's checks and its source), the chain, and the summary with its exit
 * code. Every job leaves a record: one that fails before its summary writes a `failure`
 * record (error and input identity) to its status log(s) before the error goes up.
 */
export async function runJob(
  config: JobConfig,
  logger: Logger,
  options: JobOptions,
  job: { input(): InputIdentity; open(context: JobContext): Promise<OpenedJob> },
): Promise<JobResult> {
  const cwd = options.cwd ?? process.cwd();
  const startedAt = new Date().toISOString();
  const cleanups: (() => Promise<void>)[] = [];
  // A dry run writes nothing: no status log, and the state dir is left alone (no lock, run log, checkpoint or ledger).
  if (config.dryRun) config = { ...config, statusLog: undefined, stateDir: undefined };
  const logs = config.statusLog ? [resolve(cwd, config.statusLog)] : [];
  const state = config.stateDir ? new StateDir(resolve(cwd, config.stateDir)) : undefined;
  let statusLog: StatusLog | undefined;
  try {
    if (state) {
      const { runLog, release } = await state.begin(config.keepRuns, options.lockHeld);
      cleanups.push(release);
      logs.push(runLog);
    }
    statusLog = await openStatusLog(logs, state !== undefined);
    const created = await createSink(config.sink, { cwd, insecure: config.insecure, stop: options.stop });
    const sink = config.dryRun ? new DryRunSink(created) : created;
    const opened = await job.open({ sink, statusLog, state, cleanup: (fn) => cleanups.push(fn) });
    await sink.open();
    let summary: RunSummary;
    try {
      summary = await runPipeline(opened.source, {
        sink,
        plugins: opened.plugins,
        fanOut: opened.fanOut,
        maxItemSize: config.maxItemSize,
        maxRejected: opened.maxRejected,
        rejects: opened.rejects,
        statusLog,
        logger,
        stop: options.stop,
        progress: options.progress,
        progressEveryMs: options.progressEveryMs,
      });
      await opened.finish?.(summary);
    } finally {
      await sink.close();
    }
    await statusLog.close().catch((err: unknown) => {
      summary.error ??= { code: ErrorCode.STATUS_LOG, message: errorMessage(err) };
    });
    if (summary.error) logger.error(`${summary.error.code}: ${summary.error.message}`);
    return { summary, exitCode: runExitCode(summary) };
  } catch (err) {
    await recordFailure(statusLog, err, job.input(), startedAt);
    throw err;
  } finally {
    for (const cleanup of cleanups.reverse()) {
      await cleanup().catch((err: unknown) => logger.warn(`cleanup failed: ${errorMessage(err)}`));
    }
  }
}

/**
 * The status logs of a job. If one cannot be opened, the state dir's own run log (when there is
 * one) is still opened alone, so the failure can be recorded there, and the error goes up.
 */
async function openStatusLog(paths: string[], lastIsRunLog: boolean): Promise<StatusLog> {
  try {
    return await StatusLog.open(paths);
  } catch (err) {
    if (lastIsRunLog && paths.length > 1) {
      const runLog = await StatusLog.open(paths.slice(-1)).catch(() => undefined);
      if (runLog) await recordFailure(runLog, err, { archive: '' }, new Date().toISOString());
    }
    throw err;
  }
}

/** Writes the `failure` record of a job that ends with an error, and closes the log; never throws. */
async function recordFailure(statusLog: StatusLog | undefined, err: unknown, input: InputIdentity, startedAt: string): Promise<void> {
  if (!statusLog) return;
  const { path, ...named } = input;
  const identity = named.sha256 === undefined && path ? await fileIdentity(path) : {};
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

/** sha256 and size of a file that could not be opened as an archive (if it can be read at all). */
async function fileIdentity(path: string): Promise<{ sha256?: string; size?: number }> {
  try {
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
