import _ from 'highland';
import { ErrorCode, FailReason, NoteReason, PivotArchiveError, RejectReason, errorMessage } from './errors.js';
import type { Logger } from './logger.js';
import type { Delivery, EventPosition, Item, SourceEvent } from './model.js';
import type { RejectsFolder } from './formats/rejects/index.js';
import type { Checkpoint } from './state/checkpoint.js';
import type { Sink } from './sinks/sink.js';
import type { PivotExportArchive } from './sources/pivot-zip/index.js';
import { readEntryBuffer } from './formats/zip/index.js';
import { targetMailboxes, type FanOutConfig } from './transforms/fan-out/index.js';
import { buildMessage, messageIdFor, type LoadedAttachment, type MimeContext } from './transforms/mime/index.js';
import { PluginRegistry } from './transforms/plugins/index.js';
import { attachmentsLowerBound } from './transforms/size-filter/index.js';
import { isRejection, reject, validateEvent, type Rejection } from './transforms/validate/index.js';
import { StatusLog, emptyCounters, isBalanced, type Counters, type NoteRecord, type RunSummary } from './status-log.js';
import { alarmOf } from './exit-policy.js';

export interface PipelineOptions {
  archive: PivotExportArchive;
  sink: Sink;
  plugins: PluginRegistry;
  fanOut: FanOutConfig;
  maxItemSize: number;
  /** Share of the items read that may be rejected before the summary raises an alarm. */
  maxRejected: number;
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
 *   source -> validate -> plugins -> MIME (+ size filter) -> fan-out -> sink / rejects
 *
 * A failure of the chain itself (the status log cannot be written, the archive changed under
 * the run) stops reading; the summary says so in `error`, with the counters of what was done.
 */
export async function runPipeline(options: PipelineOptions): Promise<RunSummary> {
  const { archive, sink, logger } = options;
  const counters = emptyCounters();
  counters.itemsFromSource = archive.eventCount;
  const startedAt = new Date().toISOString();
  const context: MimeContext = { tenant: archive.manifest.tenant, exportId: archive.manifest.exportId };
  const seen = { events: 0 };
  let error: { code: string; message: string } | undefined;
  try {
    for (const name of archive.hostileEntryNames) {
      await note(options, counters, '', NoteReason.HOSTILE_ENTRY_NAME, `archive entry ${JSON.stringify(name)} is absolute, has "..", a backslash or a control character; it was not read`);
    }
    for (const { name, why } of archive.ignoredEntries) {
      await note(options, counters, '', NoteReason.IGNORED_ENTRY, `archive entry ${JSON.stringify(name)}: ${why}`);
    }
  } catch (err) {
    error = chainError(err);
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
      failed: counters.failed + counters.rejectedNotKept,
      rejected: Object.values(counters.rejected).reduce((a, b) => a + b, 0),
      elapsedMs: Date.now() - started,
    });
  const ticker = options.progress ? setInterval(report, options.progressEveryMs ?? 1000) : undefined;
  if (!error) {
    await new Promise<void>((resolve, reject) => {
      _<SourceEvent>(archive.events(options.stop))
        .filter((event) => {
          seen.events++;
          if (!options.checkpoint?.done(event.position)) return true;
          counters.itemsDoneEarlier++;
          return false;
        })
        .through(inOrder({ count: 1 }, (event) => validate(event, options, counters)))
        .through(inOrder({ count: 1 }, (x) => applyPlugins(x, options, counters)))
        .sequence()
        .through(inOrder({ count: 1 }, (x) => toMessage(x, context, options, counters)))
        .map((x) => fanOut(x, options, counters))
        .sequence()
        .through(inOrder(inFlight, (x) => settle(x, options, counters)))
        .map((settled) => options.checkpoint?.settled(settled.position, settled.ok))
        .stopOnError((err: Error) => reject(err))
        .done(() => resolve());
    })
      .catch((err: unknown) => {
        error = chainError(err);
        logger.error(`run of ${archive.manifest.exportId} stopped: ${error.code}: ${error.message}`);
      })
      .finally(() => {
        clearInterval(ticker);
        report();
      });
  }

  const interrupted = !error && (options.stop?.aborted ?? false);
  if (interrupted || error) {
    // Only what was read counts: the rest is for the next run.
    counters.itemsFromSource = seen.events;
  } else if (seen.events !== archive.eventCount) {
    error = { code: ErrorCode.ARCHIVE_CORRUPT, message: `the archive yielded ${seen.events} events on the second read, ${archive.eventCount} on the first` };
  }
  const rejectedTotal = Object.values(counters.rejected).reduce((a, b) => a + b, 0);
  const summary: RunSummary = {
    record: 'summary',
    archive: archive.path,
    sha256: archive.sha256,
    exportId: archive.manifest.exportId,
    tenant: archive.manifest.tenant,
    sink: sink.description,
    startedAt,
    finishedAt: new Date().toISOString(),
    eventsInArchive: archive.eventCount,
    ...counters,
    rejectedTotal,
    interrupted,
    balanced: !error && isBalanced(counters),
    ...(error ? { error } : {}),
  };
  const alarm = error || interrupted ? undefined : alarmOf(summary, options.maxRejected);
  if (alarm) {
    summary.alarm = alarm;
    logger.warn(`export ${summary.exportId}: ${alarm}`);
  }
  try {
    await options.statusLog.write(summary);
  } catch (err) {
    summary.error ??= chainError(err);
  }
  logger.debug(`run of ${archive.manifest.exportId} finished`);
  return summary;
}

/** An error that stopped the chain, as the summary states it: our code, or E_INTERNAL for a bug. */
function chainError(err: unknown): { code: string; message: string } {
  return { code: err instanceof PivotArchiveError ? err.code : ErrorCode.INTERNAL, message: errorMessage(err) };
}

/** Writes a note: something recorded about the input while the item goes on (or about the archive). */
async function note(options: Pick<PipelineOptions, 'statusLog' | 'logger'>, counters: Counters, itemId: string, reason: NoteRecord['reason'], detail: string, conversationId = ''): Promise<void> {
  counters.notes++;
  options.logger.warn(`${itemId ? `item ${JSON.stringify(itemId)}: ` : ''}${detail}`);
  await options.statusLog.write({ record: 'note', itemId, conversationId, reason, detail });
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

/** Checks the event (and notes bytes that were not UTF-8, which were read as U+FFFD). */
async function validate(event: SourceEvent, options: PipelineOptions, counters: Counters): Promise<Flowing<Item>> {
  const x = validateEvent(options.archive, event);
  if (event.invalidUtf8At !== undefined && !isRejection(x)) {
    const file = options.archive.messageFiles[event.position.file]?.name;
    await note(options, counters, x.id, NoteReason.INVALID_UTF8, `event ${JSON.stringify(x.id)} (${file}, event ${event.position.index}) holds bytes that are not UTF-8 (the first at byte ${event.invalidUtf8At} of the event); they were read as U+FFFD and the item delivered so; the original bytes stay in the archive`, x.conversation.id);
  }
  return x;
}

/** A rejection of a checked item, carrying its exact bytes for the rejects folder. */
function rejectItem(item: Item, reason: string, detail: string): Rejection {
  return reject(item.raw, item.position, reason, detail, { bytes: item.bytes });
}

async function applyPlugins(x: Flowing<Item>, options: PipelineOptions, counters: Counters): Promise<Flowing<Item>[]> {
  if (isRejection(x)) return [x];
  const outcome = await options.plugins.apply(
    x,
    { exportId: options.archive.manifest.exportId, tenant: options.archive.manifest.tenant },
    (plugin, message) => options.logger.info(`plugin ${plugin}: ${message}`),
  );
  if ('rejected' in outcome) return [rejectItem(x, outcome.rejected.reason, outcome.rejected.detail)];
  counters.itemsAddedByPlugins += outcome.items.length - 1;
  return outcome.items;
}

/** Builds the item's message, reading attachments on demand; items over the size limit are rejected. */
async function toMessage(x: Flowing<Item>, context: MimeContext, options: PipelineOptions, counters: Counters): Promise<Flowing<BuiltMessage>> {
  if (isRejection(x)) return x;
  const { archive, maxItemSize } = options;
  const oversize = (size: string) => rejectItem(x, RejectReason.OVERSIZE, `item ${x.id} is ${size} bytes as a message, over the ${maxItemSize}-byte limit`);
  const lowerBound = attachmentsLowerBound(archive, x.attachments);
  if (lowerBound > maxItemSize) return oversize(`over ${lowerBound}`);
  const loaded: LoadedAttachment[] = [];
  for (const ref of x.attachments) {
    const entry = archive.attachment(ref.id);
    if (!entry) {
      loaded.push({ ref, missing: 'its bytes are not in the export archive' });
      await note(options, counters, x.id, NoteReason.ATTACHMENT_MISSING, `attachment ${ref.id} of item ${x.id} is not in the archive; the item is delivered without it`, x.conversation.id);
      continue;
    }
    try {
      loaded.push({ ref, bytes: await readEntryBuffer(entry, maxItemSize) });
    } catch (err) {
      return rejectItem(x, RejectReason.ATTACHMENT_UNREADABLE, `attachment ${ref.id} of item ${x.id}: ${errorMessage(err)}`);
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
    return [rejectItem(item, RejectReason.UNMAPPED, `no participant of item ${item.id} maps to a mailbox of the organisation`)];
  }
  counters.itemsRouted++;
  counters.itemsAvailableForImport += mailboxes.length;
  const messageId = messageIdFor(options.archive.manifest.tenant, item.id);
  const internalDate = Date.parse(item.sentAt);
  const exportId = options.archive.manifest.exportId;
  const copyKey = `${exportId}:${item.position.file}:${item.position.index}:${item.id}`;
  return mailboxes.map((mailbox) => ({ mailbox, exportId, position: item.position, itemId: item.id, conversationId: item.conversation.id, messageId, internalDate, message, copyKey }));
}

/** The last stage: a delivery goes to the sink, a rejection to the rejects folder; either way its outcome is written. */
async function settle(x: Flowing<Delivery>, options: PipelineOptions, counters: Counters): Promise<{ position: EventPosition; ok: boolean }> {
  return { position: x.position, ok: isRejection(x) ? await keepRejected(x, options, counters) : await deliver(x, options, counters) };
}

/**
 * Keeps a rejected item in the rejects folder and records it `rejected`. An item that cannot be
 * kept is neither delivered nor kept: it is recorded `failed` (not-kept), which fails the run.
 */
async function keepRejected(x: Rejection, options: PipelineOptions, counters: Counters): Promise<boolean> {
  const { sink, statusLog, logger, rejects, archive } = options;
  counters.rejected[x.reason] = (counters.rejected[x.reason] ?? 0) + 1;
  const line = { record: 'outcome' as const, itemId: x.itemId, conversationId: x.conversationId, mailbox: null, sink: sink.kind };
  let kept: string;
  try {
    kept = await rejects.keep(
      { exportId: archive.manifest.exportId, attachment: (id) => archive.attachment(id), copyEventBytes: (position, range, out) => archive.copyEventBytes(position, range, out) },
      { itemId: x.itemId, position: x.position, reason: `${x.reason}: ${x.detail}`, raw: x.raw, bytes: x.bytes, tooLarge: x.tooLarge },
    );
  } catch (err) {
    counters.rejectedNotKept++;
    const detail = `rejected (${x.reason}: ${x.detail}) but could not be kept in the rejects folder ${rejects.dir}: ${errorMessage(err)}`;
    logger.error(`item ${JSON.stringify(x.itemId)} at messages file ${x.position.file}, event ${x.position.index}: ${detail}`);
    await statusLog.write({ ...line, outcome: 'failed', reason: FailReason.NOT_KEPT, detail });
    return false;
  }
  logger.warn(`rejected item ${JSON.stringify(x.itemId)} (${x.reason}): ${x.detail}`);
  await statusLog.write({ ...line, outcome: 'rejected', reason: x.reason, detail: x.detail, kept });
  return true;
}

/**
 * Writes one delivery to the sink and its outcome to the status log; false when the sink did
 * not store it. A status log that cannot be written rejects (and stops the run); the delivery
 * still counts as what the sink said.
 */
export async function deliver(x: Delivery, options: Pick<PipelineOptions, 'sink' | 'statusLog' | 'logger'>, counters: Counters): Promise<boolean> {
  const { sink, statusLog, logger } = options;
  const line = { record: 'outcome' as const, itemId: x.itemId, conversationId: x.conversationId, mailbox: x.mailbox, sink: sink.kind, size: x.message.length };
  let outcome: 'delivered' | 'skipped';
  try {
    outcome = await sink.write(x);
  } catch (err) {
    counters.failed++;
    logger.error(`delivery of item ${JSON.stringify(x.itemId)} to ${x.mailbox} failed: ${errorMessage(err)}`);
    await statusLog.write({ ...line, outcome: 'failed', reason: FailReason.SINK_ERROR, detail: errorMessage(err) });
    return false;
  }
  counters[outcome]++;
  await statusLog.write({ ...line, outcome });
  return true;
}
