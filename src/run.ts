import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { RunConfig } from './config.js';
import { ErrorCode, PivotArchiveError, errorMessage } from './errors.js';
import { runExitCode } from './exit-policy.js';
import type { Logger } from './logger.js';
import { runPipeline, type Progress } from './pipeline.js';
import { RejectsFolder } from './formats/rejects/index.js';
import { createSink } from './sinks/index.js';
import type { Sink } from './sinks/sink.js';
import { PivotExportArchive } from './sources/pivot-zip/index.js';
import { spoolToTempFile } from './sources/pivot-zip/spool.js';
import { StatusLog, type RunSummary } from './status-log.js';
import { StateDir } from './state/index.js';
import { Checkpoint } from './state/checkpoint.js';
import { parseDomain, readUserMap, type FanOutConfig } from './transforms/fan-out/index.js';
import { checkAddress } from './formats/address/index.js';
import { PluginRegistry, loadPlugin } from './transforms/plugins/index.js';

export const SAMPLE_EVENTS = 1000;
/** How the summary names the built-in sample (its temporary file is gone by then). */
export const SAMPLE_ARCHIVE_NAME = '(built-in sample)';

export interface RunOptions {
  cwd?: string;
  stdin?: NodeJS.ReadableStream;
  /** The caller (the drop folder) already holds the state dir's lock. */
  lockHeld?: boolean;
  stop?: AbortSignal;
  progress?: (p: Progress) => void;
  progressEveryMs?: number;
}

export interface RunResult {
  summary: RunSummary;
  exitCode: number;
}

/**
 * One run: everything is checked (sink spec, plugins, user map, archive) before the first
 * delivery; then the pipeline runs and the summary says whether every item is accounted for.
 * Every run leaves a record: a run that fails before its summary writes a `failure` record
 * (error, archive name and sha256) to its status log(s) before the error goes up.
 */
export async function run(config: RunConfig, logger: Logger, options: RunOptions = {}): Promise<RunResult> {
  const cwd = options.cwd ?? process.cwd();
  const startedAt = new Date().toISOString();
  const cleanups: (() => Promise<void>)[] = [];
  const logs = config.statusLog ? [resolve(cwd, config.statusLog)] : [];
  const state = config.stateDir ? new StateDir(resolve(cwd, config.stateDir)) : undefined;
  let statusLog: StatusLog | undefined;
  let archivePath: string | undefined;
  let archive: PivotExportArchive | undefined;
  try {
    if (state) {
      const { runLog, release } = await state.begin(config.keepRuns, options.lockHeld);
      cleanups.push(release);
      logs.push(runLog);
    }
    statusLog = await openStatusLog(logs, state !== undefined);
    const sink = await createSink(config.sink, { cwd, insecure: config.insecure, stop: options.stop });
    const fanOut = await checkRunConfig(config, sink, cwd);
    const plugins = new PluginRegistry();
    for (const specifier of config.plugins) {
      const plugin = plugins.register(await loadPlugin(specifier, cwd), specifier);
      logger.info(`plugin ${plugin.name}${plugin.version ? `@${plugin.version}` : ''} registered`);
    }

    if (config.sample) {
      const dir = await mkdtemp(join(tmpdir(), 'pivot-archive-sample-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      // archiver (the sample's zip writer) is loaded only for the sample.
      const { generateSample } = await import('./sample/generate.js');
      archivePath = (await generateSample(join(dir, 'pivot-sample.zip'), { events: SAMPLE_EVENTS })).path;
      logger.info(`built-in sample: ${SAMPLE_EVENTS} chat events plus edge cases`);
    } else if (config.archive === '-') {
      const spooled = await spoolToTempFile((options.stdin ?? process.stdin) as import('node:stream').Readable);
      cleanups.push(spooled.remove);
      archivePath = spooled.path;
    } else {
      archivePath = resolve(cwd, config.archive!);
    }

    archive = await PivotExportArchive.open({ path: archivePath, maxEventBytes: config.maxEventSize });
    logger.info(`export ${archive.manifest.exportId} (tenant ${archive.manifest.tenant}): ${archive.eventCount} events in ${archive.messageFiles.length} messages file(s), sha256 ${archive.sha256}`);
    const checkpoint = state ? await Checkpoint.load(state.dir, archive, statusLog) : undefined;
    if (checkpoint?.resumeAt) logger.info(`resuming ${archive.manifest.exportId} from an earlier run's checkpoint (messages file ${checkpoint.resumeAt.file}, event ${checkpoint.resumeAt.index})`);
    await sink.open();
    let summary: RunSummary;
    try {
      summary = await runPipeline({
        archive,
        sink,
        plugins,
        fanOut,
        maxItemSize: config.maxItemSize,
        maxRejected: config.maxRejected,
        rejects: new RejectsFolder(resolve(cwd, config.rejects)),
        statusLog,
        logger,
        stop: options.stop,
        checkpoint,
        progress: options.progress,
        progressEveryMs: options.progressEveryMs,
      });
      await checkpoint?.finish(!summary.interrupted && !summary.error && summary.failed === 0 && summary.rejectedNotKept === 0 && summary.balanced);
    } finally {
      await sink.close();
    }
    await statusLog.close().catch((err: unknown) => {
      summary.error ??= { code: ErrorCode.STATUS_LOG, message: errorMessage(err) };
    });
    if (config.sample) summary.archive = SAMPLE_ARCHIVE_NAME;
    else if (config.archive === '-') summary.archive = '-';
    if (summary.error) logger.error(`${summary.error.code}: ${summary.error.message}`);
    return { summary, exitCode: runExitCode(summary) };
  } catch (err) {
    await recordFailure(statusLog, err, { archive: config.sample ? SAMPLE_ARCHIVE_NAME : (config.archive ?? ''), path: archivePath, opened: archive, startedAt });
    throw err;
  } finally {
    await archive?.close();
    for (const cleanup of cleanups.reverse()) {
      await cleanup().catch((err: unknown) => logger.warn(`cleanup failed: ${errorMessage(err)}`));
    }
  }
}

/**
 * The status logs of a run. If one cannot be opened, the state dir's own run log (when there is
 * one) is still opened alone, so the failure can be recorded there, and the error goes up.
 */
async function openStatusLog(paths: string[], lastIsRunLog: boolean): Promise<StatusLog> {
  try {
    return await StatusLog.open(paths);
  } catch (err) {
    if (lastIsRunLog && paths.length > 1) {
      const runLog = await StatusLog.open(paths.slice(-1)).catch(() => undefined);
      if (runLog) await recordFailure(runLog, err, { archive: '', startedAt: new Date().toISOString() });
    }
    throw err;
  }
}

/** Writes the `failure` record of a run that ends with an error, and closes the log; never throws. */
async function recordFailure(
  statusLog: StatusLog | undefined,
  err: unknown,
  run: { archive: string; path?: string; opened?: PivotExportArchive; startedAt: string },
): Promise<void> {
  if (!statusLog) return;
  const identity = run.opened ? { sha256: run.opened.sha256, size: run.opened.size } : run.path ? await fileIdentity(run.path) : {};
  await statusLog
    .write({
      record: 'failure',
      archive: run.archive,
      ...identity,
      startedAt: run.startedAt,
      finishedAt: new Date().toISOString(),
      code: err instanceof PivotArchiveError ? err.code : ErrorCode.INTERNAL,
      exitCode: err instanceof PivotArchiveError ? (err.code === ErrorCode.LOCKED ? 3 : 2) : 70,
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

/** Checks what the run's options say before anything is read; returns the fan-out settings. */
async function checkRunConfig(config: RunConfig, sink: Sink, cwd: string): Promise<FanOutConfig> {
  const defaultMailbox = config.defaultMailbox === undefined ? undefined : checkAddress(config.defaultMailbox);
  if (defaultMailbox && !defaultMailbox.ok) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `--default-mailbox ${JSON.stringify(config.defaultMailbox)} is not an email address: ${defaultMailbox.reason}`);
  }
  // A Maildir sink makes a mailbox for every target: without a domain, other firms' traders get one each.
  if (sink.kind === 'maildir' && config.domains.length === 0 && !config.allDomains) {
    throw new PivotArchiveError(
      ErrorCode.USAGE,
      'a maildir sink creates a mailbox for every participant it delivers to: give --domain YOUR-MAIL-DOMAIN (repeatable) so only your organisation\'s mailboxes are targets, or --all-domains to deliver to every participant',
    );
  }
  return {
    domains: config.domains.map(parseDomain),
    userMap: config.userMap ? await readUserMap(resolve(cwd, config.userMap)) : new Map(),
    defaultMailbox: defaultMailbox?.ok ? defaultMailbox.address.mailbox : undefined,
  };
}
