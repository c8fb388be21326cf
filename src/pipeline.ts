import _ from 'highland';
import { RejectReason, errorMessage } from './errors.js';
import type { Logger } from './logger.js';
import type { Delivery, EventPosition, Item } from './model.js';
import type { Checkpoint } from './state/checkpoint.js';
import type { Sink } from './sinks/sink.js';
import { PivotExportArchive, type SourceEvent } from './sources/pivot-zip/index.js';
import { readEntryBuffer } from './sources/pivot-zip/zip-reader.js';
import { targetMailboxes, type FanOutConfig } from './transforms/fan-out/index.js';
import { buildMessage, messageIdFor, type LoadedAttachment, type MimeContext } from './transforms/mime/index.js';
import { PluginRegistry } from './transforms/plugins/index.js';
import { RejectsFolder, attachmentsLowerBound } from './transforms/size-filter/index.js';
import { isRejection, reject, validateEvent, type Rejection } from './transforms/validate/index.js';
import { StatusLog, emptyCounters, isBalanced, type Counters, type RunSummary } from './status-log.js';

export interface PipelineOptions {
  archive: PivotExportArchive;
  sink: Sink;
  plugins: PluginRegistry;
  fanOut: FanOutConfig;
  maxItemSize: number;
  rejects: RejectsFolder;
  statusLog: StatusLog;
  logger: Logger;
  /** Aborted on SIGINT/SIGTERM: no new event is read, the items in flight finish. */
  stop?: AbortSignal;
  /** Resume point of an earlier run of this archive (with --state-dir). */
  checkpoint?: Checkpoint;
  /** Called every `progressEveryMs` (and once at the end) with how far the run is. */
  progress?: (p: Progress) => void;
  progressEveryMs?: number;
}

export interface Progress {
  eventsRead: number;
  eventsTotal: number;
  /** Uncompressed bytes of the messages files read so far, and in all. */
  bytesRead: number;
  bytesTotal: number;
  delivered: number;
  skipped: number;
  failed: number;
  rejected: number;
  elapsedMs: number;
}

/** An item with its message built, before fan-out. */
interface BuiltMessage {
  item: Item;
  message: Buffer;
}

type Flowing<T> = T | Rejection;

/**
 * The whole chain. Every stage passes rejections through untouched; the last stage records
 * them. highland pulls one item at a time through it, so a slow sink slows the reader.
 *
 *   source -> validate -> plugins -> MIME (+ size filter) -> fan-out -> sink
 */
export async function runPipeline(options: PipelineOptions): Promise<RunSummary> {
  const { archive, sink, logger } = options;
  const counters = emptyCounters();
  counters.itemsFromSource = archive.eventCount;
  const startedAt = new Date().toISOString();
  const context: MimeContext = { tenant: archive.manifest.tenant, exportId: archive.manifest.exportId };
  const seen = { events: 0 };
  for (const name of archive.hostileEntryNames) {
    counters.notes++;
    logger.warn(`archive entry ${JSON.stringify(name)} has a hostile name (absolute, .., backslash or control character): not read`);
    await options.statusLog.write({
      record: 'note',
      itemId: '',
      conversationId: '',
      reason: 'hostile-entry-name',
      detail: `archive entry ${JSON.stringify(name)} is absolute, has "..", a backslash or a control character; it was not read`,
    });
  }

  // Many small messages may be in flight at once, but only about one item's worth of big ones.
  const inFlight: InFlightLimit<Flowing<Delivery>> = {
    count: sink.maxInFlight,
    weight: (x) => (isRejection(x) ? 0 : x.message.length),
    maxWeight: Math.max(options.maxItemSize, sink.maxInFlightBytes ?? 0),
  };
  const started = Date.now();
  const report = () =>
    options.progress?.({
      eventsRead: seen.events,
      eventsTotal: archive.eventCount,
      bytesRead: archive.messageBytesRead,
      bytesTotal: archive.messageBytesTotal,
      delivered: counters.delivered,
      skipped: counters.skipped,
      failed: counters.failed,
      rejected: Object.values(counters.rejected).reduce((a, b) => a + b, 0),
      elapsedMs: Date.now() - started,
    });
  const ticker = options.progress ? setInterval(report, options.progressEveryMs ?? 1000) : undefined;
  await new Promise<void>((resolve, reject) => {
    _<SourceEvent>(archive.events(options.stop))
      .filter((event) => {
        seen.events++;
        if (!options.checkpoint?.done(event.position)) return true;
        counters.itemsDoneEarlier++;
        return false;
      })
      .map((event) => validateEvent(archive, event))
      .through(inOrder({ count: 1 }, (x) => applyPlugins(x, options, counters)))
      .sequence()
      .through(inOrder({ count: 1 }, (x) => toMessage(x, context, options, counters)))
      .map((x) => fanOut(x, options, counters))
      .sequence()
      .through(inOrder(inFlight, (x) => record(x, options, counters)))
      .map((settled) => options.checkpoint?.settled(settled.position, settled.ok))
      .stopOnError((err: Error) => reject(err))
      .done(() => resolve());
  }).finally(() => {
    clearInterval(ticker);
    report();
  });

  const interrupted = options.stop?.aborted ?? false;
  if (interrupted) {
    // Only what was read counts: the rest is for the next run.
    counters.itemsFromSource = seen.events;
  } else if (seen.events !== archive.eventCount) {
    throw new Error(`the archive yielded ${seen.events} events on the second read, ${archive.eventCount} on the first`);
  }
  const rejectedTotal = Object.values(counters.rejected).reduce((a, b) => a + b, 0);
  const summary: RunSummary = {
    record: 'summary',
    archive: archive.path,
    exportId: archive.manifest.exportId,
    tenant: archive.manifest.tenant,
    sink: sink.description,
    startedAt,
    finishedAt: new Date().toISOString(),
    ...counters,
    rejectedTotal,
    interrupted,
    balanced: isBalanced(counters),
  };
  await options.statusLog.write(summary);
  logger.debug(`run of ${archive.manifest.exportId} finished`);
  return summary;
}

/** How much an async stage may hold in flight: a count, and optionally a total weight in bytes. */
export interface InFlightLimit<A> {
  count: number;
  /** Size of one input; the stage waits while the total would pass `maxWeight` (one always runs). */
  weight?: (x: A) => number;
  maxWeight?: number;
}

/**
 * An async stage with bounded work in flight, results in input order. One highland stream per
 * stage, not one per item (`flatMap(x => _(promise))` costs a stream per item).
 */
export function inOrder<A, B>(limit: InFlightLimit<A>, fn: (x: A) => Promise<B>): (source: Highland.Stream<A>) => Highland.Stream<B> {
  return (source) => {
    const pending: { result: Promise<B>; weight: number }[] = [];
    let weight = 0;
    const full = () => pending.length >= limit.count || weight >= (limit.maxWeight ?? Infinity);
    return source.consume((err, x, push, next) => {
      if (err) {
        push(err);
        next();
        return;
      }
      if (_.isNil(x)) {
        // Drain what is in flight, in order, then end.
        Promise.all(pending.map((p) => p.result)).then(
          (results) => {
            for (const r of results) push(null, r);
            push(null, _.nil);
          },
          (e: Error) => push(e),
        );
        return;
      }
      const result = fn(x as A);
      result.catch(() => undefined); // reported when its turn comes, not as unhandled
      const w = limit.weight?.(x as A) ?? 0;
      pending.push({ result, weight: w });
      weight += w;
      const drain = (): void => {
        if (!full()) {
          next();
          return;
        }
        const head = pending.shift()!;
        weight -= head.weight;
        head.result.then(
          (r) => {
            push(null, r);
            drain();
          },
          (e: Error) => {
            push(e);
            drain();
          },
        );
      };
      drain();
    });
  };
}

async function applyPlugins(x: Flowing<Item>, options: PipelineOptions, counters: Counters): Promise<Flowing<Item>[]> {
  if (isRejection(x)) return [x];
  const outcome = await options.plugins.apply(
    x,
    { exportId: options.archive.manifest.exportId, tenant: options.archive.manifest.tenant },
    (plugin, message) => options.logger.info(`plugin ${plugin}: ${message}`),
  );
  if ('rejected' in outcome) return [reject(x.raw, x.position, outcome.rejected.reason, outcome.rejected.detail)];
  counters.itemsAddedByPlugins += outcome.items.length - 1;
  return outcome.items;
}

/** Builds the item's message, reading attachments on demand; items over the size limit are rejected. */
async function toMessage(x: Flowing<Item>, context: MimeContext, options: PipelineOptions, counters: Counters): Promise<Flowing<BuiltMessage>> {
  if (isRejection(x)) return x;
  const { archive, maxItemSize } = options;
  const oversize = (size: string) =>
    reject(x.raw, x.position, RejectReason.OVERSIZE, `item ${x.id} is ${size} bytes as a message, over the ${maxItemSize}-byte limit`);
  const lowerBound = attachmentsLowerBound(archive, x.attachments);
  if (lowerBound > maxItemSize) return oversize(`over ${lowerBound}`);
  const loaded: LoadedAttachment[] = [];
  for (const ref of x.attachments) {
    const entry = archive.attachment(ref.id);
    if (!entry) {
      loaded.push({ ref, missing: 'its bytes are not in the export archive' });
      counters.notes++;
      await options.statusLog.write({
        record: 'note',
        itemId: x.id,
        conversationId: x.conversation.id,
        reason: 'attachment-missing',
        detail: `attachment ${ref.id} of item ${x.id} is not in the archive; the item is delivered without it`,
      });
      continue;
    }
    try {
      loaded.push({ ref, bytes: await readEntryBuffer(entry, maxItemSize) });
    } catch (err) {
      return reject(x.raw, x.position, RejectReason.ATTACHMENT_UNREADABLE, `attachment ${ref.id} of item ${x.id}: ${errorMessage(err)}`);
    }
  }
  const message = buildMessage(x, context, loaded);
  if (message.length > maxItemSize) return oversize(String(message.length));
  return { item: x, message };
}

function fanOut(x: Flowing<BuiltMessage>, options: PipelineOptions, counters: Counters): Flowing<Delivery>[] {
  if (isRejection(x)) return [x];
  const { item, message } = x;
  const mailboxes = targetMailboxes(item.participants, options.fanOut);
  if (mailboxes.length === 0) {
    return [reject(item.raw, item.position, RejectReason.UNMAPPED, `no participant of item ${item.id} maps to a mailbox of the organisation`)];
  }
  counters.itemsRouted++;
  counters.itemsAvailableForImport += mailboxes.length;
  const messageId = messageIdFor(options.archive.manifest.tenant, item.id);
  const internalDate = Date.parse(item.sentAt);
  const exportId = options.archive.manifest.exportId;
  return mailboxes.map((mailbox) => ({ mailbox, exportId, position: item.position, itemId: item.id, conversationId: item.conversation.id, messageId, internalDate, message }));
}

/** Delivers, or keeps a rejected item in the rejects folder; then writes the outcome line. */
async function record(x: Flowing<Delivery>, options: PipelineOptions, counters: Counters): Promise<{ position: EventPosition; ok: boolean }> {
  const { sink, statusLog, logger } = options;
  if (!isRejection(x)) return { position: x.position, ok: await deliver(x, options, counters) };
  counters.rejected[x.reason] = (counters.rejected[x.reason] ?? 0) + 1;
  let kept: string | undefined;
  try {
    kept = await options.rejects.keep(options.archive, x.raw, `${x.reason}: ${x.detail}`);
  } catch (err) {
    logger.error(`could not keep rejected item ${x.itemId} in ${options.rejects.dir}: ${errorMessage(err)}`);
  }
  logger.warn(`rejected item ${JSON.stringify(x.itemId)} (${x.reason}): ${x.detail}`);
  await statusLog.write({
    record: 'outcome',
    itemId: x.itemId,
    conversationId: x.conversationId,
    mailbox: null,
    sink: sink.kind,
    outcome: 'rejected',
    reason: x.reason,
    detail: x.detail,
    kept,
  });
  return { position: x.position, ok: true };
}

/** Writes one delivery to the sink and its outcome to the status log; false when it failed. */
export async function deliver(x: Delivery, options: Pick<PipelineOptions, 'sink' | 'statusLog' | 'logger'>, counters: Counters): Promise<boolean> {
  const { sink, statusLog, logger } = options;
  const line = { record: 'outcome' as const, itemId: x.itemId, conversationId: x.conversationId, mailbox: x.mailbox, sink: sink.kind, size: x.message.length };
  try {
    const outcome = await sink.write(x);
    counters[outcome]++;
    await statusLog.write({ ...line, outcome });
    return true;
  } catch (err) {
    counters.failed++;
    logger.error(`delivery of item ${JSON.stringify(x.itemId)} to ${x.mailbox} failed: ${errorMessage(err)}`);
    await statusLog.write({ ...line, outcome: 'failed', reason: 'sink-error', detail: errorMessage(err) });
    return false;
  }
}
