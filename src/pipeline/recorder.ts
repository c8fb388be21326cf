import { errorCodeOf, errorMessage, type FailReasonValue, type NoteReasonValue, type RejectReasonValue } from '../errors.js';
import { alarmOf } from '../exit-policy.js';
import type { Logger } from '../logger.js';
import { positionText, type EventPosition } from '../model.js';
import type { Source } from '../sources/source.js';
import { REJECTS_SHARD, formatShard, type Shard } from '../transforms/shard/index.js';
import { StatusLog, emptyCounters, isBalanced, rejectedTotal, type Counters, type OutcomeRecord, type RunSummary } from '../status-log.js';

/** How far a run is, for the progress line. */
export interface Progress {
  eventsRead: number;
  /** Undefined when the source does not know how many it will read (staged batches are listed as they are read). */
  eventsTotal?: number;
  /** Uncompressed bytes of the messages files read so far, and in all (0 when the source does not know). */
  bytesRead: number;
  bytesTotal: number;
  delivered: number;
  skipped: number;
  failed: number;
  rejected: number;
  elapsedMs: number;
}

/**
 * Where the source resumes (the checkpoint): it is told how many items plugins add to each event,
 * and knows how many they added to the events it skips, which an earlier run settled.
 */
export interface PluginSplits {
  readonly addedEarlier: number;
  /** The ids plugins gave items of the events before it, other than those events' own: a resumed run refuses them as duplicates, as the run that gave them did. */
  readonly idsGivenEarlier: readonly string[];
  split(position: EventPosition, added: number, idsGiven: readonly string[]): void;
}

/** An error that stopped the chain, as the summary states it: our code, or E_INTERNAL for a bug. */
export function chainError(err: unknown): { code: string; message: string } {
  return { code: errorCodeOf(err), message: errorMessage(err) };
}

/**
 * The run's one account: the counters, and every line of the status log (notes, outcomes, the
 * summary). Stages tell it what happened; only it counts, so the counters add up by construction.
 */
export class Recorder {
  private readonly counters: Counters = emptyCounters();
  private readonly startedAt = new Date();
  private unitsRead = 0;

  constructor(
    private readonly statusLog: StatusLog,
    private readonly logger: Logger,
    private readonly sinkKind: string,
    /** The export the source reads: notes and outcomes name it. */
    private readonly exportId: string | null,
    /** The run's shard, when sharded: its counters are that shard's part (the shard counters start at 0). */
    shard?: Shard,
    /** Where the source resumes, when it can: told of each split. */
    private readonly checkpoint?: PluginSplits,
  ) {
    this.shard = shard && formatShard(shard);
    // Those added to the events done earlier count, as the events do (itemsFromSource): the export's account takes them from the run that completes it.
    this.counters.itemsAddedByPlugins = checkpoint?.addedEarlier ?? 0;
    if (shard) this.counters.itemsForOtherShards = 0;
    if (shard && shard.index !== REJECTS_SHARD) this.counters.rejectedByShard1 = 0;
  }

  private readonly shard: string | undefined;

  /** A unit came from the source; one it hands over already built is routed to its one mailbox. */
  read(kind: string): void {
    this.unitsRead++;
    if (kind === 'delivery' || kind === 'failed') this.routed(1);
  }

  /** Plugins turned the item of the event at `position` into `count` items, giving some of them ids other than the event's (`idsGiven`). */
  split(position: EventPosition, count: number, idsGiven: readonly string[]): void {
    this.counters.itemsAddedByPlugins += count - 1;
    if (count !== 1 || idsGiven.length > 0) this.checkpoint?.split(position, count - 1, idsGiven);
  }

  /** An item reached `copies` mailboxes. */
  routed(copies: number): void {
    this.counters.itemsRouted++;
    this.counters.itemsAvailableForImport += copies;
  }

  /** Sharded (--shard): fan-out found targets, all of them another shard's. */
  forOtherShards(): void {
    this.counters.itemsForOtherShards = (this.counters.itemsForOtherShards ?? 0) + 1;
  }

  /** Sharded: a unit read already routed to its one mailbox (a staged message) is another shard's. */
  readForOtherShard(): void {
    this.counters.itemsRouted--;
    this.counters.itemsAvailableForImport--;
    this.forOtherShards();
  }

  /** Sharded, in shards 2..N: a rejected item, kept and recorded by shard 1 alone. */
  rejectedByShard1(): void {
    this.counters.rejectedByShard1 = (this.counters.rejectedByShard1 ?? 0) + 1;
  }

  /** Something recorded about the input while the item goes on (or about the input as a whole). */
  async note(reason: NoteReasonValue, detail: string, item: { itemId?: string; conversationId?: string } = {}): Promise<void> {
    const itemId = item.itemId ?? '';
    this.counters.notes++;
    this.logger.warn(`${itemId ? `item ${JSON.stringify(itemId)}: ` : ''}${detail}`);
    await this.statusLog.write({ record: 'note', exportId: this.exportId, itemId, conversationId: item.conversationId ?? '', reason, detail });
  }

  // Not async: the status log's promise itself, no frame of its own for each delivery.
  delivered(line: OutcomeLine, outcome: 'delivered' | 'skipped'): Promise<void> {
    this.counters[outcome]++;
    return this.statusLog.writeStamped(this.outcome(line, outcome));
  }

  /** `storageLost`: the sink's error says what it stored before may be gone too (a folder deleted, a failing disk): the ledger's account then stops counting earlier deliveries as there. */
  async failed(line: OutcomeLine, reason: FailReasonValue, detail: string, storageLost = false): Promise<void> {
    this.counters.failed++;
    this.logger.error(`delivery of item ${JSON.stringify(line.itemId)} to ${line.mailbox} failed: ${detail}`);
    await this.statusLog.writeStamped({ ...this.outcome(line, 'failed'), reason, detail, ...(storageLost ? { storageLost: true } : {}) });
  }

  async rejected(line: Omit<OutcomeLine, 'mailbox'>, reason: RejectReasonValue, detail: string, kept: string): Promise<void> {
    this.countRejected(reason);
    // An event without a usable id is named by where it stands in the archive.
    const [file, index] = line.position?.split('.').map(Number) ?? [];
    const where = index === undefined ? '' : ` at ${positionText({ file: file!, index })}`;
    this.logger.warn(`rejected item ${JSON.stringify(line.itemId)}${where} (${reason}): ${detail}${kept ? `; kept in ${kept}` : ''}`);
    await this.statusLog.writeStamped({ ...this.outcome({ ...line, mailbox: null }, 'rejected'), reason, detail, kept });
  }

  /**
   * Rejected and not kept (the rejects folder could not keep it, or a sharded run met a plugin
   * error, which it does not stand by): neither delivered nor kept, so it fails the run.
   */
  async notKept(line: Omit<OutcomeLine, 'mailbox'>, rejectReason: RejectReasonValue, reason: FailReasonValue, detail: string): Promise<void> {
    this.countRejected(rejectReason);
    this.counters.rejectedNotKept++;
    this.logger.error(`item ${JSON.stringify(line.itemId)}: ${detail}`);
    await this.statusLog.writeStamped({ ...this.outcome({ ...line, mailbox: null }, 'failed'), reason, rejectReason, detail });
  }

  progress(source: Source): Progress {
    const at = source.progress();
    const c = this.counters;
    return {
      eventsRead: at.read,
      ...(at.total !== undefined ? { eventsTotal: at.total } : {}),
      bytesRead: at.bytesRead ?? 0,
      bytesTotal: at.bytesTotal ?? 0,
      delivered: c.delivered,
      skipped: c.skipped,
      failed: c.failed + c.rejectedNotKept,
      rejected: rejectedTotal(c),
      elapsedMs: Date.now() - this.startedAt.getTime(),
    };
  }

  /**
   * The summary: the counters, whether they add up, and why the run stopped early (an error, a
   * signal). Not written yet: the caller's last steps (the sink closed) may add their error.
   */
  summarise(source: Source, sinkDescription: string, stopped: { error?: { code: string; message: string }; interrupted: boolean; failedOnStop: number; storageLost?: boolean; mailboxesLost?: string[]; lookStopped?: boolean }): RunSummary {
    const { error, interrupted, failedOnStop } = stopped;
    const fields = source.summaryFields();
    this.counters.itemsFromSource = this.unitsRead + fields.itemsDoneEarlier;
    this.counters.itemsDoneEarlier = fields.itemsDoneEarlier + (this.checkpoint?.addedEarlier ?? 0);
    const summary: RunSummary = {
      record: 'summary',
      runId: this.statusLog.runId,
      at: new Date().toISOString(),
      source: source.kind,
      ...fields.identity,
      sink: sinkDescription,
      ...(this.shard ? { shard: this.shard } : {}),
      startedAt: this.startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      ...this.counters,
      ...fields.counters,
      ...(fields.exportsImportedWhole ? { exportsImportedWhole: fields.exportsImportedWhole } : {}),
      ...(fields.exportsNotWhole?.length ? { exportsNotWhole: fields.exportsNotWhole } : {}),
      rejectedTotal: rejectedTotal(this.counters),
      interrupted,
      ...(failedOnStop > 0 ? { failedOnStop } : {}),
      // Whether the counters add up, error or not: a chain stopped by an error leaves the units it dropped counted read and settled nowhere, which this finds.
      balanced: isBalanced(this.counters) && fields.balanced,
      ...(error ? { error } : {}),
      ...(stopped.storageLost ? { storageLost: true } : {}),
      ...(stopped.mailboxesLost?.length ? { mailboxesLost: stopped.mailboxesLost } : {}),
      ...(stopped.lookStopped ? { lookStopped: true } : {}),
    };
    return summary;
  }

  /** Writes the summary, last, with an alarm when the run accounted for everything but looks wrong. */
  async writeSummary(summary: RunSummary, maxRejected: number): Promise<RunSummary> {
    summary.finishedAt = new Date().toISOString();
    const alarm = summary.error || summary.interrupted ? undefined : alarmOf(summary, maxRejected);
    if (alarm) {
      summary.alarm = alarm;
      this.logger.warn(`${summary.exportId ? `export ${summary.exportId}` : summary.source}: ${alarm}`);
    }
    try {
      await this.statusLog.write(summary);
    } catch (err) {
      summary.error ??= chainError(err);
    }
    return summary;
  }

  private countRejected(reason: RejectReasonValue): void {
    this.counters.rejected[reason] = (this.counters.rejected[reason] ?? 0) + 1;
  }

  // Field by field, stamped here, not by spreading: it runs for every delivery (JSON.stringify leaves out what is undefined).
  private outcome(line: OutcomeLine, outcome: OutcomeRecord['outcome']): OutcomeRecord {
    return {
      record: 'outcome',
      runId: this.statusLog.runId,
      at: this.statusLog.now(),
      exportId: line.exportId ?? this.exportId,
      itemId: line.itemId,
      conversationId: line.conversationId,
      mailbox: line.mailbox,
      sink: this.sinkKind,
      messageId: line.messageId,
      position: line.position,
      sentAt: line.sentAt,
      size: line.size,
      sha256: line.sha256,
      version: line.version,
      location: line.location,
      outcome,
    };
  }
}

/** Who an outcome line is about, and what is known of its message: identity, size, hash, where it is held. */
export interface OutcomeLine extends Pick<OutcomeRecord, 'messageId' | 'sentAt' | 'size' | 'sha256' | 'version' | 'location' | 'position'> {
  /** The item's export, when the source reads more than one (staged batches). */
  exportId?: string;
  itemId: string;
  conversationId: string;
  mailbox: string | null;
}
