import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { RunConfig } from './config.js';
import { ExitCode, errorMessage } from './errors.js';
import type { Logger } from './logger.js';
import { runPipeline, type Progress } from './pipeline.js';
import { createSink } from './sinks/index.js';
import { PivotExportArchive } from './sources/pivot-zip/index.js';
import { spoolToTempFile } from './sources/pivot-zip/spool.js';
import { StatusLog, type ImportSummary, type RunSummary } from './status-log.js';
import { StateDir } from './state/index.js';
import { Checkpoint } from './state/checkpoint.js';
import { parseDomain, readUserMap, type FanOutConfig } from './transforms/fan-out/index.js';
import { validEmail } from './transforms/mime/index.js';
import { PluginRegistry, loadPlugin } from './transforms/plugins/index.js';
import { RejectsFolder } from './transforms/size-filter/index.js';
import { ErrorCode, PivotArchiveError } from './errors.js';

export const SAMPLE_EVENTS = 1000;

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
 */
export async function run(
  config: RunConfig,
  logger: Logger,
  options: RunOptions = {},
): Promise<RunResult> {
  const cwd = options.cwd ?? process.cwd();
  const sink = await createSink(config.sink, { cwd, insecure: config.insecure });
  const plugins = new PluginRegistry();
  for (const specifier of config.plugins) {
    const plugin = plugins.register(await loadPlugin(specifier, cwd), specifier);
    logger.info(`plugin ${plugin.name}${plugin.version ? `@${plugin.version}` : ''} registered`);
  }
  if (config.defaultMailbox !== undefined && !validEmail(config.defaultMailbox)) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `--default-mailbox ${JSON.stringify(config.defaultMailbox)} is not an email address`);
  }
  const fanOut: FanOutConfig = {
    domains: config.domains.map(parseDomain),
    userMap: config.userMap ? await readUserMap(resolve(cwd, config.userMap)) : new Map(),
    defaultMailbox: config.defaultMailbox,
  };

  const cleanups: (() => Promise<void>)[] = [];
  const logs = config.statusLog ? [resolve(cwd, config.statusLog)] : [];
  const state = config.stateDir ? new StateDir(resolve(cwd, config.stateDir)) : undefined;
  if (state) {
    const { runLog, release } = await state.begin(config.keepRuns, options.lockHeld);
    cleanups.push(release);
    logs.push(runLog);
  }
  try {
    let archivePath: string;
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

    const archive = await PivotExportArchive.open({ path: archivePath });
    logger.info(`export ${archive.manifest.exportId} (tenant ${archive.manifest.tenant}): ${archive.eventCount} events in ${archive.messageFiles.length} messages file(s)`);

    const statusLog = await StatusLog.open(logs);
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
        rejects: new RejectsFolder(resolve(cwd, config.rejects)),
        statusLog,
        logger,
        stop: options.stop,
        checkpoint,
        progress: options.progress,
        progressEveryMs: options.progressEveryMs,
      });
      await checkpoint?.finish(!summary.interrupted && summary.failed === 0 && summary.balanced);
    } finally {
      await sink.close();
      await statusLog.close();
    }
    if (config.archive === '-') summary.archive = '-';
    const exitCode =
      summary.failed > 0 || !summary.balanced ? ExitCode.DELIVERY_FAILED : summary.interrupted ? ExitCode.INTERRUPTED : ExitCode.OK;
    return { summary, exitCode };
  } finally {
    for (const cleanup of cleanups.reverse()) {
      await cleanup().catch((err: unknown) => logger.warn(`cleanup failed: ${errorMessage(err)}`));
    }
  }
}

export function formatSummary(s: RunSummary): string {
  const rejected = Object.entries(s.rejected)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([reason, n]) => `${reason} ${n}`)
    .join(', ');
  const rows: [string, number | string][] = [
    ['items from source', s.itemsFromSource],
    ['items added by plugins', s.itemsAddedByPlugins],
    ['items done by an earlier run', s.itemsDoneEarlier],
    ['items rejected', `${s.rejectedTotal}${rejected ? `  (${rejected})` : ''}`],
    ['items routed to mailboxes', s.itemsRouted],
    ['available for import', s.itemsAvailableForImport],
    ['delivered', s.delivered],
    ['skipped (already there)', s.skipped],
    ['failed', s.failed],
    ['notes (e.g. missing attachment)', s.notes],
  ];
  return summaryTable(`export ${s.exportId} -> ${s.sink}`, rows, s.balanced, s.interrupted && 'stopped on a signal after the items in flight; run it again to finish');
}

export function formatImportSummary(s: ImportSummary): string {
  const rows: [string, number][] = [
    ['batches imported', s.batchesImported],
    ['batches failed', s.batchesFailed],
    ['messages staged (in those batches)', s.itemsStaged],
    ['delivered', s.delivered],
    ['skipped (already there)', s.skipped],
    ['failed', s.failed],
  ];
  return summaryTable(`import ${s.from}${s.exportId ? ` (export ${s.exportId})` : ''} -> ${s.sink}`, rows, s.balanced, s.interrupted && 'stopped on a signal; import again to finish');
}

/** The summary for humans: a title, aligned counters, whether they add up, and why it stopped early. */
function summaryTable(title: string, rows: [string, number | string][], balanced: boolean, interrupted: string | false): string {
  const width = Math.max(...rows.map(([label]) => label.length), 'counters add up'.length) + 1;
  return [
    `pivot-archive: ${title}`,
    ...rows.map(([label, value]) => `  ${label.padEnd(width)} ${value}`),
    `  ${'counters add up'.padEnd(width)} ${balanced ? 'yes' : 'NO'}`,
    ...(interrupted ? [`  interrupted: ${interrupted}`] : []),
  ].join('\n');
}
