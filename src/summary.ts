import type { ImportSummary, RunSummary } from './status-log.js';

/** The summaries as people read them (the status log and --json carry the same counters as JSON). */
export function formatSummary(s: RunSummary): string {
  const rejected = Object.entries(s.rejected)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([reason, n]) => `${reason} ${n}`)
    .join(', ');
  const rows: [string, number | string][] = [
    ['items from source', s.interrupted || s.error ? `${s.itemsFromSource} of ${s.eventsInArchive} (the rest is for the next run)` : s.itemsFromSource],
    ['items added by plugins', s.itemsAddedByPlugins],
    ['items done by an earlier run', s.itemsDoneEarlier],
    ['items rejected', `${s.rejectedTotal}${rejected ? `  (${rejected})` : ''}`],
    ['items routed to mailboxes', s.itemsRouted],
    ['available for import', s.itemsAvailableForImport],
    ['delivered', s.delivered],
    ['skipped (already there)', s.skipped],
    ['failed', s.failed],
    ['rejected but not kept (failed)', s.rejectedNotKept],
    ['notes (e.g. missing attachment)', s.notes],
  ];
  const stopped = s.error
    ? `stopped by an error (${s.error.code}: ${s.error.message}); what was done is recorded, run it again to finish`
    : s.interrupted && 'stopped on a signal after the items in flight; run it again to finish';
  const table = summaryTable(`export ${s.exportId} -> ${s.sink}`, rows, s.balanced, stopped);
  return s.alarm ? `${table}\n  ALARM: ${s.alarm}` : table;
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
    ...(interrupted ? [`  stopped: ${interrupted}`] : []),
  ].join('\n');
}
