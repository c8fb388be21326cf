import { ErrorCode } from './errors.js';
import { visible } from './formats/one-line.js';
import type { RunSummary } from './status-log.js';

/** A summary read back from a status log: this version's, or an import's from before 0.2 (`import-summary`). */
export type RecordedSummary = RunSummary | (Omit<Partial<RunSummary>, 'record'> & { record: 'import-summary'; sink: string; balanced: boolean; interrupted: boolean });

/** The summary as people read it (the status log and --json carry the same counters as JSON). */
export function formatSummary(s: RecordedSummary): string {
  const staged = s.from !== undefined;
  const shard = s.shard ? ` (shard ${s.shard})` : '';
  const title = (staged ? `import ${s.from}${s.exportId ? ` (export ${s.exportId})` : ''} -> ${s.sink}` : `export ${s.exportId} -> ${s.sink}`) + shard;
  const rejected = Object.entries(s.rejected ?? {})
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([reason, n]) => `${reason} ${n}`)
    .join(', ');
  const stoppedEarly = s.interrupted || s.error;
  const rows: [string, number | string | undefined][] = staged
    ? [
        ['batches imported', s.batchesImported],
        ...(s.batchesImportedEarlier ? [['batches passed over (imported earlier; --again re-imports)', s.batchesImportedEarlier] as [string, number]] : []),
        ['batches failed', s.batchesFailed],
        ['messages staged (in those batches)', s.itemsStaged],
      ]
    : [
        ['items from source', stoppedEarly && !s.lookStopped && s.eventsInArchive !== undefined ? `${s.itemsFromSource} of ${s.eventsInArchive} (the rest is for the next run)` : s.itemsFromSource],
        ['items added by plugins', s.itemsAddedByPlugins],
        ['items done by an earlier run', s.itemsDoneEarlier],
        ['items rejected', `${s.rejectedTotal}${rejected ? `  (${rejected})` : ''}`],
        ['items routed to mailboxes', s.itemsRouted],
        ['available for import', s.itemsAvailableForImport],
      ];
  // What staging lost, shown only when anything was: messages no outcome line stands for, exports not checked for gone batches.
  if (s.itemsStagedNotRead) rows.push(['staged messages not read (batch gone, unreadable, altered)', s.itemsStagedNotRead]);
  if (s.exportsWithoutIndex) rows.push(['exports without a staging index (gone batches not detectable)', s.exportsWithoutIndex]);
  if (s.stagingIndexesUntrusted) rows.push(['staging indexes not signed by --public-key (passed over)', s.stagingIndexesUntrusted]);
  if (s.stagingIndexesUnreadable) rows.push(['exports refused: their staging index could not be read', s.stagingIndexesUnreadable]);
  if (s.batchesRefused) rows.push(['batches refused (no finished staging run vouches for them)', s.batchesRefused]);
  // Sharded (--shard K/N): what the other shards deliver, and the rejections shard 1 keeps, so the counters still add up.
  if (s.itemsForOtherShards !== undefined) rows.splice(staged ? rows.length : 4, 0, ['items for other shards', s.itemsForOtherShards]);
  if (s.rejectedByShard1 !== undefined && !staged) rows.splice(4, 0, ['items rejected (kept by shard 1)', s.rejectedByShard1]);
  rows.push(['delivered', s.delivered], ['skipped (already there)', s.skipped], ['failed', s.failed]);
  if (!staged) rows.push(['rejected but not kept (failed)', s.rejectedNotKept], ['notes (e.g. missing attachment)', s.notes]);
  // A record that could not be written may lack outcomes of deliveries that were in flight: a re-run checks the sink.
  const recordFailed = s.error?.code === ErrorCode.STATUS_LOG || s.error?.code === ErrorCode.LEDGER;
  const stopped = s.error
    ? `stopped by an error (${s.error.code}: ${s.error.message}); ${recordFailed ? 'the records that could be written hold what was done, the one that failed may lack some of it' : 'what was done is recorded'}, run it again to finish (it skips what the sink holds)`
    : s.lookStopped
      ? 'stopped on a signal after every item settled, while the sink looked at the folders it wrote to: they are not confirmed in place; run it again (it reads the export from the start, skips what is there and looks again)'
      : s.interrupted && `stopped on a signal after the items in flight; ${staged ? 'import' : 'run it'} again to finish`;
  const table = summaryTable(title, rows, s.balanced, stopped);
  return s.alarm ? `${table}\n  ${visible(`ALARM: ${s.alarm}`)}` : table;
}

/**
 * The summary for humans: a title, aligned counters, whether they add up (not said when
 * `balanced` is undefined), and why it stopped early. Each line is `visible`: the export id,
 * reasons and error messages come from the archive, and a control character in them must not
 * forge a line or drive the terminal.
 */
function summaryTable(title: string, rows: [string, number | string | undefined][], balanced: boolean | undefined, stopped: string | false | undefined): string {
  const width = Math.max(...rows.map(([label]) => label.length), 'counters add up'.length) + 1;
  return [
    `pivot-archive: ${title}`,
    ...rows.map(([label, value]) => `  ${label.padEnd(width)} ${value ?? 0}`),
    ...(balanced === undefined ? [] : [`  ${'counters add up'.padEnd(width)} ${balanced ? 'yes' : 'NO'}`]),
    ...(stopped ? [`  stopped: ${stopped}`] : []),
  ]
    .map(visible)
    .join('\n');
}
