import { RejectsFolder } from './formats/rejects/index.js';
import type { Delivery } from './model.js';
import type { Sink, Stored } from './sinks/sink.js';
import type { RunSummary } from './status-log.js';
import { formatSummary } from './summary.js';

/**
 * `run --dry-run`: the whole chain runs (the archive is read and checked, items are built and
 * fanned out), but what would be written is only counted. The real sink is created from its
 * spec (so a typo in --sink fails as it would) and never opened or written; rejected items are
 * counted and not kept; the job writes nothing to --state-dir or --status-log (see runJob).
 * A dry run does not look into the sink: what a real run would find there already (`skipped`)
 * counts as delivered.
 */
export class DryRunSink implements Sink {
  readonly kind = 'dry-run';
  readonly description: string;
  readonly maxInFlight: number;
  readonly maxInFlightBytes?: number;
  private readonly counts = new Map<string, number>();

  /** `target`: the sink a real run would deliver to, created (validated) but never opened. */
  constructor(readonly target: Sink) {
    this.description = `dry run (would deliver to ${target.description})`;
    this.maxInFlight = target.maxInFlight;
    if (target.maxInFlightBytes !== undefined) this.maxInFlightBytes = target.maxInFlightBytes;
  }

  async open(): Promise<void> {}

  async write(delivery: Delivery): Promise<Stored> {
    this.counts.set(delivery.mailbox, (this.counts.get(delivery.mailbox) ?? 0) + 1);
    return { outcome: 'delivered' };
  }

  async close(): Promise<void> {}

  /** Items each mailbox would receive, sorted by mailbox. */
  mailboxes(): Record<string, number> {
    return Object.fromEntries([...this.counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }
}

/** The sink a run is for: the real one behind a dry run, or the sink itself. */
export function targetSink(sink: Sink): Sink {
  return sink instanceof DryRunSink ? sink.target : sink;
}

/** A rejects folder that keeps nothing: no file, not even the folder; a run would keep the item under `dir`. */
export class DryRunRejects extends RejectsFolder {
  override async keep(): Promise<string> {
    return `${this.dir} (dry run: not kept)`;
  }
}

/** What `run --dry-run --json` prints: the summary, flagged, with the items each mailbox would receive. */
export interface DryRunSummary extends RunSummary {
  dryRun: true;
  mailboxes: Record<string, number>;
}

export function dryRunSummary(summary: RunSummary, mailboxes: Record<string, number>): DryRunSummary {
  return { ...summary, dryRun: true, mailboxes };
}

/** The normal summary under a dry-run title, then every mailbox and the items it would receive. */
export function formatDryRun(s: DryRunSummary): string {
  const entries = Object.entries(s.mailboxes);
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  const width = Math.max(0, ...entries.map(([mailbox]) => mailbox.length)) + 1;
  return [
    'pivot-archive: DRY RUN: nothing was delivered, kept in --rejects or recorded; the counters say what a run would do',
    formatSummary(s),
    entries.length
      ? `  items each mailbox would receive (${entries.length} mailbox${entries.length === 1 ? '' : 'es'}, ${total} item${total === 1 ? '' : 's'}):`
      : '  no mailbox would receive anything',
    ...entries.map(([mailbox, n]) => `    ${mailbox.padEnd(width)} ${n}`),
  ].join('\n');
}
