import { Readable } from 'node:stream';
import { resolve } from 'node:path';
import _ from 'highland';
import { ErrorCode, ExitCode, FailReason, PivotArchiveError, errorMessage } from './errors.js';
import type { Logger } from './logger.js';
import type { Delivery } from './model.js';
import { deliver, inOrder } from './pipeline.js';
import type { ReadEntry } from './formats/staged-batch/index.js';
import { createSink } from './sinks/index.js';
import type { Sink } from './sinks/sink.js';
import { importMarkerKey, openStagedBatches } from './sources/azblob/index.js';
import { StatusLog, emptyCounters, type Counters, type ImportSummary } from './status-log.js';
import { StateDir } from './state/index.js';

export interface ImportConfig {
  /** `azblob://CONTAINER[/PREFIX]`: where the staged batches are. */
  from: string;
  /** A mailbox sink: `maildir:DIR` or `imap://...`. */
  sink: string;
  /** Only this export's batches (else every batch under the prefix). */
  exportId?: string;
  /** Import batches already marked as imported into this sink too. */
  again: boolean;
  statusLog?: string;
  maxItemSize: number;
  insecure: boolean;
  /** Lock (one run or import at a time) and history of runs, as for `run`. */
  stateDir?: string;
  /** Runs kept under the state dir (0: all). */
  keepRuns: number;
}

/**
 * `import --from`: every staged batch not yet imported into the sink is read, each message
 * checked against the manifest's sha256 and delivered; a batch wholly delivered is marked.
 */
export async function runImport(
  config: ImportConfig,
  logger: Logger,
  options: { cwd?: string; env?: NodeJS.ProcessEnv; stop?: AbortSignal } = {},
): Promise<{ summary: ImportSummary; exitCode: number }> {
  const cwd = options.cwd ?? process.cwd();
  const sink = await createSink(config.sink, { cwd, insecure: config.insecure, stop: options.stop });
  if (sink.kind === 'azblob') throw new PivotArchiveError(ErrorCode.USAGE, 'import delivers into a mailbox sink (maildir:DIR or imap://...), not back into staging');
  const staged = openStagedBatches(config.from, options.env);
  const markerKey = importMarkerKey(sink.description);
  const logs = config.statusLog ? [resolve(cwd, config.statusLog)] : [];
  const state = config.stateDir ? await new StateDir(resolve(cwd, config.stateDir)).begin(config.keepRuns) : undefined;
  if (state) logs.push(state.runLog);
  const statusLog = await StatusLog.open(logs).catch(async (err: unknown) => {
    await state?.release();
    throw err;
  });
  const startedAt = new Date().toISOString();
  const counters = emptyCounters();
  let batchesImported = 0;
  let batchesFailed = 0;
  let itemsStaged = 0;
  let interrupted = false;
  logger.info(`importing from ${staged.description}${config.exportId ? ` (export ${config.exportId})` : ''} into ${sink.description}`);
  try {
    await sink.open();
    try {
      for await (const name of staged.pending(markerKey, { exportId: config.exportId, again: config.again })) {
        if (options.stop?.aborted) {
          interrupted = true;
          break;
        }
        let batch: Awaited<ReturnType<typeof staged.read>>;
        try {
          batch = await staged.read(name, config.maxItemSize);
        } catch (err) {
          batchesFailed++;
          logger.error(`staged batch ${name} cannot be imported: ${errorMessage(err)}`);
          await statusLog.write({ record: 'batch', batch: name, outcome: 'failed', detail: errorMessage(err) });
          continue;
        }
        itemsStaged += batch.manifest.entries.length;
        const failedBefore = counters.failed;
        await deliverBatch(batch.manifest.exportId, batch.entries, sink, { statusLog, logger, maxItemSize: config.maxItemSize }, counters);
        if (counters.failed > failedBefore) {
          batchesFailed++;
          await statusLog.write({ record: 'batch', batch: name, outcome: 'failed', items: batch.manifest.entries.length, detail: `${counters.failed - failedBefore} message(s) failed` });
          continue;
        }
        try {
          await staged.markImported(name, markerKey, { sink: sink.description, items: batch.manifest.entries.length });
        } catch (err) {
          // Not fatal: the next import reads the batch again and skips what the sink holds.
          logger.warn(`staged batch ${name} is imported but could not be marked so: ${errorMessage(err)}`);
        }
        batchesImported++;
        await statusLog.write({ record: 'batch', batch: name, outcome: 'imported', items: batch.manifest.entries.length });
      }
    } finally {
      await sink.close();
    }
    const summary: ImportSummary = {
      record: 'import-summary',
      from: staged.description,
      sink: sink.description,
      exportId: config.exportId ?? null,
      startedAt,
      finishedAt: new Date().toISOString(),
      batchesImported,
      batchesFailed,
      itemsStaged,
      delivered: counters.delivered,
      skipped: counters.skipped,
      failed: counters.failed,
      interrupted,
      balanced: itemsStaged === counters.delivered + counters.skipped + counters.failed,
    };
    await statusLog.write(summary);
    const exitCode = summary.failed > 0 || batchesFailed > 0 || !summary.balanced ? ExitCode.DELIVERY_FAILED : interrupted ? ExitCode.INTERRUPTED : ExitCode.OK;
    return { summary, exitCode };
  } finally {
    await statusLog.close();
    await state?.release();
  }
}

/** Delivers a batch's messages with the sink's in-flight bounds; a message that fails its check is a failure. */
async function deliverBatch(
  exportId: string,
  entries: AsyncGenerator<ReadEntry>,
  sink: Sink,
  options: { statusLog: StatusLog; logger: Logger; maxItemSize: number },
  counters: Counters,
): Promise<void> {
  const { statusLog, logger } = options;
  const limit = { count: sink.maxInFlight, weight: (x: ReadEntry) => ('message' in x ? x.message.length : 0), maxWeight: Math.max(options.maxItemSize, sink.maxInFlightBytes ?? 0) };
  const importOne = async (x: ReadEntry): Promise<void> => {
    const { entry } = x;
    if ('problem' in x) {
      counters.failed++;
      logger.error(`staged item ${JSON.stringify(entry.itemId)} for ${entry.mailbox}: ${x.problem}`);
      await statusLog.write({ record: 'outcome', itemId: entry.itemId, conversationId: entry.conversationId, mailbox: entry.mailbox, sink: sink.kind, outcome: 'failed', reason: FailReason.STAGED_MISMATCH, detail: x.problem });
      return;
    }
    const delivery: Delivery = {
      mailbox: entry.mailbox,
      exportId,
      position: entry.position,
      itemId: entry.itemId,
      conversationId: entry.conversationId,
      messageId: entry.messageId,
      internalDate: entry.internalDate,
      message: x.message,
      copyKey: `sha256:${entry.sha256}`,
    };
    await deliver(delivery, { sink, statusLog, logger }, counters);
  };
  await new Promise<void>((resolveAll, reject) => {
    _<ReadEntry>(Readable.from(entries))
      .through(inOrder(limit, importOne))
      .stopOnError((err: Error) => reject(err))
      .done(() => resolveAll());
  });
}
