import { drained, flushed, makeDirectory } from './fs-util.js';
import type { LedgerWriter } from './ledger/writer.js';
import { redactedJson } from './redact.js';
import { createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ErrorCode, PivotArchiveError, errorMessage, type FailReasonValue, type NoteReasonValue, type RejectReasonValue } from './errors.js';

export type Outcome = 'delivered' | 'skipped' | 'rejected' | 'failed';

/** What every record names: the run (or import) that wrote it, and when. */
export interface RunStamp {
  /** A random id, the same on every record of one run (the start, its outcomes, its summary). */
  runId: string;
  /** When the record was written (ISO 8601, UTC). */
  at: string;
}

/**
 * The first record of a run, even of one that fails before delivering: who ran what, on which
 * input, into which sink, with the options that change the outcome.
 */
export interface StartRecord extends RunStamp {
  record: 'start';
  command: 'run' | 'import';
  tool: { name: string; version: string };
  host: string;
  /** The archive as the run names it (a path, `-`, the built-in sample), or the staging read. */
  archive?: string;
  /** Size and sha256 of the archive file (absent when it could not be read). */
  size?: number;
  sha256?: string;
  exportId?: string | null;
  tenant?: string;
  eventsInArchive?: number;
  from?: string;
  /** The sink, with no secret in it. */
  sink: string;
  /** The options that change what is delivered and where (domains, user map, sizes, plugins...). */
  options: Record<string, unknown>;
  /** The run's checkpoint is signed (--signing-key). */
  signed?: boolean;
  /** Bytes of a ledger line a crash cut short, removed before this run appended. */
  ledgerTornBytes?: number;
}

/**
 * The last record of a run in the ledger: the chain's length and head so far, as a signed
 * checkpoint (C2SP tlog-checkpoint note; see src/ledger/SPEC.md).
 */
export interface CheckpointRecord extends RunStamp {
  record: 'checkpoint';
  /** Records before this one in the ledger. */
  size: number;
  /** sha256 (hex) of the ledger line before this one. */
  head: string;
  /** The checkpoint note text, with its signature line when a signing key was given. */
  note: string;
  /** The signing key's name and key id (hex) when signed. */
  signedBy?: { name: string; keyId: string };
}

/** One line of the status log: what became of one item, or of one (mailbox, item). */
export interface OutcomeRecord extends RunStamp {
  record: 'outcome';
  /** The export the item came from (null when the source had none). */
  exportId: string | null;
  itemId: string;
  conversationId: string;
  mailbox: string | null;
  sink: string;
  outcome: Outcome;
  /** Why it was rejected or failed. */
  reason?: RejectReasonValue | FailReasonValue;
  detail?: string;
  size?: number;
  /** Where a rejected item's event and attachments were kept. */
  kept?: string;
  /** Where a rejected item's event stands in its archive (`<messages file>.<index>`): one event, whichever run kept it. */
  position?: string;
  /** The reason a rejected item that could not be kept (`not-kept`) was rejected for. */
  rejectReason?: RejectReasonValue;
  /** The message's Message-ID and its `sentAt` (ISO 8601): its identity in a mailbox. */
  messageId?: string;
  sentAt?: string;
  /** sha256 (hex) of the exact message bytes given to the sink. */
  sha256?: string;
  /** Which version of its item the message is: the sha256 (hex) of those bytes less X-Pivot-Export-Id (another export's build of the same event is the same version). */
  version?: string;
  /** Where the sink holds it (delivered or found there): see `Stored.location`. */
  location?: string;
  /** A failure whose error says what the sink stored before may be gone too (a folder deleted, a failing disk): earlier deliveries are not counted as there. */
  storageLost?: true;
}

/** Something worth knowing about a delivered item, e.g. an attachment missing from the archive. */
export interface NoteRecord extends RunStamp {
  record: 'note';
  exportId: string | null;
  itemId: string;
  conversationId: string;
  reason: NoteReasonValue;
  detail: string;
}

/** The chain's counters, the same for every source. They add up, or `balanced` says they do not. */
export interface Counters {
  /** Units this run read (all of them, unless it was interrupted or stopped by an error), with those done earlier. */
  itemsFromSource: number;
  /** Items that plugins added by splitting one item into several. */
  itemsAddedByPlugins: number;
  /** Items an earlier, interrupted run of this archive settled (its events skipped via the checkpoint, and the items plugins added to them). */
  itemsDoneEarlier: number;
  /** Items refused before fan-out, by reason (bad, oversize, unmapped, plugin...). */
  rejected: Record<string, number>;
  /** Items that reached at least one mailbox target. */
  itemsRouted: number;
  /** (mailbox, item) pairs after fan-out: the items available for import. */
  itemsAvailableForImport: number;
  delivered: number;
  skipped: number;
  failed: number;
  /** Rejected items the rejects folder could not keep: recorded `failed` (not-kept); they fail the run. */
  rejectedNotKept: number;
  notes: number;
  /**
   * With --shard only (src/transforms/shard/): items read whose mailboxes all belong to other
   * shards (delivered there, not here); their pairs are not available for import here.
   */
  itemsForOtherShards?: number;
  /** With --shard only, in shards 2..N: items rejected, which shard 1 alone keeps and records. */
  rejectedByShard1?: number;
}

/**
 * The summary of a run or an import: one shape, whatever the source. The source's own fields
 * are those of `pivot-zip` (archive, sha256, tenant, eventsInArchive) or of `staged-batches`
 * (from, batchesImported, batchesFailed, itemsStaged).
 */
export interface RunSummary extends Counters, RunStamp {
  record: 'summary';
  /** `pivot-zip` (run) or `staged-batches` (import). */
  source: string;
  /** The export read (null for an import of every staged export). */
  exportId: string | null;
  sink: string;
  startedAt: string;
  finishedAt: string;
  rejectedTotal: number;
  /** The archive as the summary names it (a path, `-` for stdin, the built-in sample). */
  archive?: string;
  /** sha256 of the archive file, as the run read it. */
  sha256?: string;
  tenant?: string;
  /** Events in the archive, whether this run read them all or not. */
  eventsInArchive?: number;
  /** Archive entries named like messages files that were not read (another case or depth, a hostile name): their events are counted nowhere. */
  entriesNotRead?: number;
  /** The staging location an import read. */
  from?: string;
  batchesImported?: number;
  /** Batches passed over, not read: this sink's import marker is on them (an earlier import imported them; `--again` reads them). */
  batchesImportedEarlier?: number;
  batchesFailed?: number;
  /** Messages listed in the manifests of the staged batches read. */
  itemsStaged?: number;
  /** Messages staging recorded in batches that are gone, unreadable or altered: read by nothing. */
  itemsStagedNotRead?: number;
  /** Export folders with batches but no staging index: gone batches cannot be found there. */
  exportsWithoutIndex?: number;
  /** Staging indexes passed over because the `--public-key` key did not sign them. */
  stagingIndexesUntrusted?: number;
  /** The sink found, after the last write, storage it wrote to gone, or could not confirm it in place (a server down then: see Sink.lostSinceWritten, the error says which): the checkpoint is dropped. */
  storageLost?: boolean;
  /**
   * Of `storageLost`: the mailboxes whose folder the sink found gone after their last write
   * (removed, made again, moved). Every export's messages there went with it: the account no
   * longer counts any export's earlier pairs there as delivered (a folder only not confirmed is not named).
   */
  mailboxesLost?: string[];
  /** A stop signal, after every item settled, cut that look short (Sink LOOK_STOPPED): the folders are not confirmed in place; the checkpoint is dropped, and the run is interrupted unless an error stopped it. */
  lookStopped?: boolean;
  /** Exports refused whole because their latest staging index could not be read (storage refused it, not an index, over the size limit). */
  stagingIndexesUnreadable?: number;
  /** Batches no finished staging run vouches for (misplaced, in no export folder, unnamed by its index, or, with --public-key, in a folder without a signed index): part of batchesFailed. */
  batchesRefused?: number;
  /**
   * An import read to its end: the exports every batch of whose latest staging index is in the
   * sink (this shard's part of it), by this import or an earlier one. `status` needs it to call an
   * export that reached this state dir only through imports complete.
   */
  exportsImportedWhole?: string[];
  /**
   * Imports only: the exports this import found not whole (a staging run of it part-way, a batch
   * its index lists gone, a batch no finished staging run vouches for). `status` then no longer
   * calls such an export imported whole on an earlier import's word.
   */
  exportsNotWhole?: string[];
  /** Why a run that accounted for everything still exits 5 (nothing delivered, too many rejected). */
  alarm?: string;
  /** What stopped the run part-way (the archive changed, the status log failed), if anything. */
  error?: { code: string; message: string };
  /** Stopped by SIGINT/SIGTERM: items from source counts only the units read before. */
  interrupted: boolean;
  /** Of `failed`, the deliveries that failed after the signal (a sink stopping fails what it had not stored; a re-run delivers them). */
  failedOnStop?: number;
  /** The shard (`K/N`) of a run or import given --shard: its counters are that shard's part. */
  shard?: string;
  /** itemsFromSource + itemsAddedByPlugins = itemsDoneEarlier + rejectedTotal (+ rejectedByShard1) + itemsRouted (+ itemsForOtherShards),
   *  itemsAvailableForImport = delivered + skipped + failed, and the source's own counters add up. */
  balanced: boolean;
}

/** The record of a run that failed before its summary: what failed, and which archive. */
export interface FailureRecord extends RunStamp {
  record: 'failure';
  archive: string;
  sha256?: string;
  size?: number;
  startedAt: string;
  finishedAt: string;
  code: string;
  exitCode: number;
  error: string;
}

/** What became of one staged batch in `import --from`. */
export interface BatchRecord extends RunStamp {
  record: 'batch';
  batch: string;
  outcome: 'imported' | 'failed';
  items?: number;
  detail?: string;
}

/** Every record a status log or the ledger holds. */
export type LogRecord = StartRecord | OutcomeRecord | NoteRecord | RunSummary | FailureRecord | BatchRecord | CheckpointRecord;

/** A record as a stage writes it: the status log stamps it with the run and the time. */
export type Unstamped<T> = T extends RunStamp ? Omit<T, keyof RunStamp> : never;

export function emptyCounters(): Counters {
  return {
    itemsFromSource: 0,
    itemsAddedByPlugins: 0,
    itemsDoneEarlier: 0,
    rejected: {},
    itemsRouted: 0,
    itemsAvailableForImport: 0,
    delivered: 0,
    skipped: 0,
    failed: 0,
    rejectedNotKept: 0,
    notes: 0,
  };
}

/** Items rejected, whatever the reason. */
export function rejectedTotal(c: Pick<Counters, 'rejected'>): number {
  return Object.values(c.rejected).reduce((a, b) => a + b, 0);
}

export function isBalanced(c: Counters): boolean {
  return (
    c.itemsFromSource + c.itemsAddedByPlugins === c.itemsDoneEarlier + rejectedTotal(c) + (c.rejectedByShard1 ?? 0) + c.itemsRouted + (c.itemsForOtherShards ?? 0) &&
    c.itemsAvailableForImport === c.delivered + c.skipped + c.failed
  );
}

/**
 * Times as ISO 8601, each made once for a run of calls with the same time (one memo per use):
 * records come thousands a second, and an item's copies share their `sentAt`.
 */
export function isoTimes(): (ms: number) => string {
  let last = { ms: NaN, text: '' };
  return (ms) => {
    if (ms !== last.ms) last = { ms, text: new Date(ms).toISOString() };
    return last.text;
  };
}

const recordTime = isoTimes();

/** One file of the status log, and the first error writing it hit (disk full, I/O). */
interface LogFile {
  path: string;
  out: WriteStream;
  failed?: PivotArchiveError;
  /** One wait for 'drain' shared by every writer held up (each `once` adds listeners). */
  drain?: Promise<void>;
}

/** Whether a file ends inside a line (its last byte is not a newline). */
async function endsMidLine(path: string): Promise<boolean> {
  const handle = await open(path, 'r');
  try {
    const { size } = await handle.stat();
    if (size === 0) return false;
    const last = Buffer.alloc(1);
    await handle.read(last, 0, 1, size - 1);
    return last[0] !== 0x0a;
  } finally {
    await handle.close();
  }
}

/**
 * JSON Lines, one record a line, to one or more files, written with backpressure; `close` waits
 * for the disk. A file that cannot be written (ENOSPC, EIO) fails every later write, flush and
 * close with E_STATUS_LOG naming it: the run stops rather than go on unrecorded. The other files
 * (and the ledger) still get every record, the failed write's and the summary: they are the record left.
 */
export class StatusLog {
  private constructor(
    private readonly files: LogFile[],
    /** Every record it writes names this run. */
    readonly runId: string,
    /** The state dir's ledger, when there is one: every record is appended there too, chained. */
    private ledger: LedgerWriter | undefined,
  ) {}

  /** From now on every record also goes to the ledger (opened after the logs, so its failure is recorded in them). */
  appendTo(ledger: LedgerWriter): void {
    this.ledger = ledger;
  }

  static async open(paths: string[], runId: string, ledger?: LedgerWriter): Promise<StatusLog> {
    const files: LogFile[] = [];
    for (const path of paths) {
      try {
        await makeDirectory(dirname(path));
        const out = createWriteStream(path, { flags: 'a' });
        const file: LogFile = { path, out };
        out.on('error', (err) => {
          file.failed ??= new PivotArchiveError(ErrorCode.STATUS_LOG, `cannot write status log ${path}: ${errorMessage(err)}`, { cause: err });
        });
        await once(out, 'open');
        // A line a full disk or a crash cut short stays alone: this run's first record starts a line of its own.
        if (await endsMidLine(path)) out.write('\n');
        files.push(file);
      } catch (err) {
        for (const f of files) f.out.destroy();
        throw new PivotArchiveError(ErrorCode.STATUS_LOG, `cannot open status log ${path}: ${errorMessage(err)}`, { cause: err });
      }
    }
    return new StatusLog(files, runId, ledger);
  }

  /** The time a record written now is stamped with. */
  now(): string {
    return recordTime(Date.now());
  }

  async write(unstamped: Unstamped<LogRecord>): Promise<void> {
    // `record` stays the first key: assigning the fields sets it again in its place.
    await this.writeStamped(Object.assign({ record: unstamped.record, runId: this.runId, at: this.now() }, unstamped) as LogRecord);
  }

  /** A record already stamped with this log's `runId` and `now()`: a delivery's line is built whole, in one object (one a delivery). */
  async writeStamped(record: LogRecord): Promise<void> {
    const json = redactedJson(record);
    const line = json + '\n';
    // Every file that still works (and the ledger) gets the record, whichever failed: a status log
    // on a full disk must not cost the state dir's run log and ledger what happened (they are the
    // record that is left). Then the first failure is thrown: the run stops.
    let failure: unknown;
    for (const file of this.files) {
      if (file.failed) {
        failure ??= file.failed;
        continue;
      }
      if (!file.out.write(line)) await drained(file.out, file);
      if (file.failed) failure ??= file.failed;
    }
    if (this.ledger) {
      await this.ledger.append(json).catch((err: unknown) => {
        failure ??= err;
      });
    }
    if (failure !== undefined) throw failure;
  }

  /** Resolves once every line written so far has reached the file. */
  async flush(): Promise<void> {
    await Promise.all([
      this.ledger?.flush(),
      ...this.files.map((file) => flushed(file.out, () => file.failed, (err) => (file.failed ??= new PivotArchiveError(ErrorCode.STATUS_LOG, `cannot write status log ${file.path}: ${errorMessage(err)}`, { cause: err })))),
    ]);
  }

  /** Ends every file (not the ledger: its run is sealed first); rejects with the first write error, never hangs on a failed file. */
  async close(): Promise<void> {
    for (const file of this.files) {
      if (file.failed) {
        file.out.destroy();
        continue;
      }
      await new Promise<void>((resolve) => {
        file.out.once('error', () => resolve());
        file.out.end(() => resolve());
      });
    }
    const failed = this.files.find((f) => f.failed)?.failed;
    if (failed) throw failed;
  }
}
