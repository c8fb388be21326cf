import { redactSecrets } from './redact.js';
import { createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ErrorCode, PivotArchiveError, errorMessage } from './errors.js';

export type Outcome = 'delivered' | 'skipped' | 'rejected' | 'failed';

/** One line of the status log: what became of one item, or of one (mailbox, item). */
export interface OutcomeRecord {
  record: 'outcome';
  itemId: string;
  conversationId: string;
  mailbox: string | null;
  sink: string;
  outcome: Outcome;
  reason?: string;
  detail?: string;
  size?: number;
  /** Where a rejected item's event and attachments were kept. */
  kept?: string;
}

/** Something worth knowing about a delivered item, e.g. an attachment missing from the archive. */
export interface NoteRecord {
  record: 'note';
  itemId: string;
  conversationId: string;
  reason: string;
  detail: string;
}

/** The admin-log counters. They add up, or `balanced` says they do not. */
export interface RunSummary {
  record: 'summary';
  archive: string;
  exportId: string;
  tenant: string;
  sink: string;
  startedAt: string;
  finishedAt: string;
  /** Events in the archive. */
  itemsFromSource: number;
  /** Items that plugins added by splitting one item into several. */
  itemsAddedByPlugins: number;
  /** Events an earlier, interrupted run of this archive settled (skipped via the checkpoint). */
  itemsDoneEarlier: number;
  /** Items refused before fan-out, by reason (bad, oversize, unmapped, plugin...). */
  rejected: Record<string, number>;
  rejectedTotal: number;
  /** Items that reached at least one mailbox target. */
  itemsRouted: number;
  /** (mailbox, item) pairs after fan-out: the items available for import. */
  itemsAvailableForImport: number;
  delivered: number;
  skipped: number;
  failed: number;
  notes: number;
  /** Stopped by SIGINT/SIGTERM: items from source counts only the events read before. */
  interrupted: boolean;
  /** itemsFromSource + itemsAddedByPlugins = itemsDoneEarlier + rejectedTotal + itemsRouted, and
   *  itemsAvailableForImport = delivered + skipped + failed. */
  balanced: boolean;
}

/** What became of one staged batch in `import --from`. */
export interface BatchRecord {
  record: 'batch';
  batch: string;
  outcome: 'imported' | 'failed';
  items?: number;
  detail?: string;
}

/** The summary of `import --from`: every staged message delivered, skipped or failed. */
export interface ImportSummary {
  record: 'import-summary';
  from: string;
  sink: string;
  exportId: string | null;
  startedAt: string;
  finishedAt: string;
  batchesImported: number;
  batchesFailed: number;
  /** Messages listed in the manifests of the batches read. */
  itemsStaged: number;
  delivered: number;
  skipped: number;
  failed: number;
  interrupted: boolean;
  /** itemsStaged = delivered + skipped + failed. */
  balanced: boolean;
}

export type Counters = Omit<RunSummary, 'record' | 'archive' | 'exportId' | 'tenant' | 'sink' | 'startedAt' | 'finishedAt' | 'balanced' | 'rejectedTotal' | 'interrupted'>;

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
    notes: 0,
  };
}

export function isBalanced(c: Counters): boolean {
  const rejectedTotal = Object.values(c.rejected).reduce((a, b) => a + b, 0);
  return (
    c.itemsFromSource + c.itemsAddedByPlugins === c.itemsDoneEarlier + rejectedTotal + c.itemsRouted &&
    c.itemsAvailableForImport === c.delivered + c.skipped + c.failed
  );
}

/** JSON Lines, one record a line, to one or more files, written with backpressure; `close` waits for the disk. */
export class StatusLog {
  /** One wait for 'drain' per file, shared by every writer held up (each `once` adds listeners). */
  private readonly drains = new Map<WriteStream, Promise<void>>();

  private constructor(private readonly outs: WriteStream[]) {}

  static async open(paths: string[]): Promise<StatusLog> {
    const outs: WriteStream[] = [];
    for (const path of paths) {
      try {
        await mkdir(dirname(path), { recursive: true });
        const out = createWriteStream(path, { flags: 'a' });
        await once(out, 'open');
        outs.push(out);
      } catch (err) {
        throw new PivotArchiveError(ErrorCode.CONFIG, `cannot open status log ${path}: ${errorMessage(err)}`);
      }
    }
    return new StatusLog(outs);
  }

  async write(record: OutcomeRecord | NoteRecord | RunSummary | BatchRecord | ImportSummary): Promise<void> {
    const line = redactSecrets(JSON.stringify(record)) + '\n';
    for (const out of this.outs) if (!out.write(line)) await this.drained(out);
  }

  private drained(out: WriteStream): Promise<void> {
    let drain = this.drains.get(out);
    if (!drain) {
      drain = once(out, 'drain').then(() => undefined).finally(() => this.drains.delete(out));
      this.drains.set(out, drain);
    }
    return drain;
  }

  /** Resolves once every line written so far has reached the file. */
  async flush(): Promise<void> {
    await Promise.all(this.outs.map((out) => new Promise<void>((resolve, reject) => out.write('', (err) => (err ? reject(err) : resolve())))));
  }

  async close(): Promise<void> {
    for (const out of this.outs) {
      out.end();
      await once(out, 'finish');
    }
  }
}
