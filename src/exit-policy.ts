import { ErrorCode, ExitCode, errorCodeOf } from './errors.js';
import type { RunSummary } from './status-log.js';

/**
 * Why a run that accounted for every item still deserves a look (exit 5), or undefined: an
 * export with no events, a run that delivered nothing, or more rejections than `maxRejected`
 * (a typo in --domain rejects everything as `unmapped` and would otherwise exit 0).
 */
export function alarmOf(s: RunSummary, maxRejected: number): string | undefined {
  const handled = s.itemsFromSource + s.itemsAddedByPlugins - s.itemsDoneEarlier;
  if (s.entriesNotRead) return `${s.entriesNotRead} archive ${s.entriesNotRead === 1 ? 'entry is' : 'entries are'} named like a messages file but not as messages/<name>.json (see the notes): not read, so their events are counted nowhere (did the exporter change its file names?)`;
  if (s.eventsInArchive === 0) return 'the export holds no events: nothing to deliver (is the exporter working?)';
  if (handled <= 0) return undefined;
  // A shard whose own mailboxes got nothing while others' did is not alarming; one that saw only rejections is.
  if (s.delivered + s.skipped === 0 && !s.itemsForOtherShards) {
    // Deliveries that failed are the sink's to explain, not a mapping mistake.
    if (s.failed > 0) return `nothing was delivered: ${s.failed} deliveries failed (see the errors above)${s.rejectedTotal > 0 ? ` and ${s.rejectedTotal} items were rejected` : ''}`;
    return `nothing was delivered: all ${handled} items read were rejected (${mostRejected(s)}check --domain, --user-map and --max-item-size)`;
  }
  // Every shard reads every item: its share of rejections is the export's, kept by shard 1 or not.
  const rejected = s.rejectedTotal + (s.rejectedByShard1 ?? 0);
  const share = rejected / handled;
  if (share > maxRejected) {
    return `${percent(share)} of the items read (${rejected} of ${handled}) were rejected, over --max-rejected ${percent(maxRejected)} (${mostRejected(s)}check --domain and --user-map)`;
  }
  return undefined;
}

/** The reason most items were rejected for, as the alarm names it: `1004 as unmapped; ` (a typo in --domain). */
function mostRejected(s: RunSummary): string {
  const [top] = Object.entries(s.rejected).sort(([a, x], [b, y]) => y - x || (a < b ? -1 : 1));
  return top ? `${top[1]} as ${top[0]}; ` : '';
}

function percent(share: number): string {
  return `${Number((share * 100).toFixed(2))}%`;
}

/** The run read its source to the end and settled every item: nothing stopped it, failed, or went unkept. */
export function settledEveryItem(s: RunSummary): boolean {
  return !s.interrupted && !s.error && s.failed === 0 && s.rejectedNotKept === 0 && s.balanced;
}

/** Exit codes from the least to the most wrong (their numbers are not in that order). */
const BY_SEVERITY: readonly number[] = [ExitCode.OK, ExitCode.ALARM, ExitCode.INTERRUPTED, ExitCode.LOCKED, ExitCode.DELIVERY_FAILED, ExitCode.STORE_MISMATCH, ExitCode.LEDGER_BROKEN, ExitCode.SETUP_FAILED, ExitCode.INTERNAL];

/**
 * Of two exit codes, the one that says more is wrong: a bug, then an archive refused whole (2),
 * then a ledger that fails its checks (7), a store that lacks what it records (6), then failed
 * deliveries (1), then a stop or a lock, then an alarm (5: everything accounted for),
 * then 0. So a drop folder's one alarm never hides another archive's refusal.
 */
export function worseExitCode(a: number, b: number): number {
  return BY_SEVERITY.indexOf(b) > BY_SEVERITY.indexOf(a) ? b : a;
}

/**
 * The exit code of a run, from its summary alone (see ExitCode): a chain failure is 2 when
 * nothing reached the sink yet, else 1 (70 for a bug); then failures, interruption, alarm.
 */
export function runExitCode(s: RunSummary): number {
  if (s.error) {
    if (s.error.code === ErrorCode.INTERNAL) return ExitCode.INTERNAL;
    // Staged messages that are gone are lost deliveries, not a setup to correct, even when nothing else was there to import.
    // So is a staging index someone else wrote (it may hide batches that are gone).
    if (s.error.code === ErrorCode.STAGING_INCOMPLETE || s.error.code === ErrorCode.STAGING_UNTRUSTED) return ExitCode.DELIVERY_FAILED;
    return s.delivered + s.skipped > 0 ? ExitCode.DELIVERY_FAILED : ExitCode.SETUP_FAILED;
  }
  // A staged batch that could not be read is a failure of everything in it, counted or not. Deliveries a
  // signal cut short are the interruption's (4: run again), unless something failed before it (1).
  if (s.failed - (s.failedOnStop ?? 0) > 0 || s.rejectedNotKept > 0 || (s.batchesFailed ?? 0) > 0 || !s.balanced) return ExitCode.DELIVERY_FAILED;
  if (s.interrupted) return ExitCode.INTERRUPTED;
  if (s.alarm) return ExitCode.ALARM;
  return ExitCode.OK;
}

/** The exit code of a run that ended with an error before its summary: 3 locked, 70 a bug, else 2. */
export function errorExitCode(err: unknown): number {
  const code = errorCodeOf(err);
  return code === ErrorCode.INTERNAL ? ExitCode.INTERNAL : code === ErrorCode.LOCKED ? ExitCode.LOCKED : code === ErrorCode.STOPPED ? ExitCode.INTERRUPTED : ExitCode.SETUP_FAILED;
}

/**
 * `verify`'s exit code: 7 the ledger fails its checks, else 6 the store does not hold what the
 * ledger records (missing, altered, unexpected), else 1 when not everything is archived, as
 * `status --export` says INCOMPLETE: the ledger records (mailbox, item) pairs failed that no run
 * delivered since (`failedNotDelivered`), or exports whose runs never settled every item for
 * another cause (`exportsNotComplete`: an archive not read to its end, rejected items not kept;
 * what is there holds, but not all is there: a run's 1), else 0. `ledger` is ledgerExitCode's (0
 * or 7); `storeHolds` true when the store was not read. Both counts are of the scope checked
 * (--export, --since).
 */
export function verifyExitCode(v: { ledger: number; storeHolds: boolean; failedNotDelivered: number; exportsNotComplete?: number }): number {
  if (v.ledger !== ExitCode.OK) return v.ledger;
  if (!v.storeHolds) return ExitCode.STORE_MISMATCH;
  return v.failedNotDelivered > 0 || (v.exportsNotComplete ?? 0) > 0 ? ExitCode.DELIVERY_FAILED : ExitCode.OK;
}
