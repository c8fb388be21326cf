import test from 'ava';
import { alarmOf, runExitCode, verifyExitCode, worseExitCode } from '../src/exit-policy.js';
import type { RunSummary } from '../src/status-log.js';
import { parseZonedTime } from '../src/formats/pivot-export/time.js';

function summary(overrides: Partial<RunSummary>): RunSummary {
  return {
    record: 'summary', archive: 'x.zip', sha256: '0'.repeat(64), exportId: 'e', tenant: 't', sink: 'maildir:/m', startedAt: '', finishedAt: '',
    eventsInArchive: 100, itemsFromSource: 100, itemsAddedByPlugins: 0, itemsDoneEarlier: 0, rejected: {}, rejectedTotal: 0,
    itemsRouted: 100, itemsAvailableForImport: 200, delivered: 200, skipped: 0, failed: 0, rejectedNotKept: 0, notes: 0,
    interrupted: false, balanced: true, ...overrides,
  } as RunSummary;
}

test('alarm: nothing delivered, over --max-rejected, or an empty export; a few rejections or a fully skipped re-run are fine', (t) => {
  t.regex(alarmOf(summary({ delivered: 0, rejectedTotal: 100, itemsRouted: 0, itemsAvailableForImport: 0 }), 0.1)!, /nothing was delivered/);
  t.regex(alarmOf(summary({ rejectedTotal: 11 }), 0.1)!, /11% .*over --max-rejected 10%/);
  t.is(alarmOf(summary({ rejectedTotal: 10 }), 0.1), undefined);
  t.is(alarmOf(summary({ rejectedTotal: 2 }), 0.1), undefined);
  t.is(alarmOf(summary({ delivered: 0, skipped: 200 }), 0.1), undefined, 'a re-run that finds everything there');
  t.is(alarmOf(summary({ itemsDoneEarlier: 100, delivered: 0 }), 0.1), undefined, 'a resume with nothing left');
  t.regex(alarmOf(summary({ eventsInArchive: 0, itemsFromSource: 0, itemsRouted: 0, delivered: 0 }), 0.1)!, /no events/);
  t.is(alarmOf(summary({ rejectedTotal: 100, delivered: 1 }), 1), undefined, '100% never alarms on the share');
});

test('the alarm names the reason most items were rejected for (a typo in --domain: unmapped)', (t) => {
  const none = summary({ delivered: 0, rejected: { oversize: 3, unmapped: 97 }, rejectedTotal: 100, itemsRouted: 0, itemsAvailableForImport: 0 });
  t.regex(alarmOf(none, 0.1)!, /^nothing was delivered: all 100 items read were rejected \(97 as unmapped; check --domain/);
  t.regex(alarmOf(summary({ rejected: { unmapped: 4, 'unknown-user': 8 }, rejectedTotal: 12 }), 0.1)!, /were rejected, over --max-rejected 10% \(8 as unknown-user; check --domain/);
  // Nothing delivered because the sink failed (its container gone): not called a rejection.
  t.is(alarmOf(summary({ delivered: 0, failed: 5269, rejected: { unmapped: 4 }, rejectedTotal: 4 }), 0.1), 'nothing was delivered: 5269 deliveries failed (see the errors above) and 4 items were rejected');
});

test('exit code: failures before interruption before alarm; a chain error is 2 before any delivery, 1 after, 70 for a bug', (t) => {
  t.is(runExitCode(summary({})), 0);
  t.is(runExitCode(summary({ alarm: 'x' })), 5);
  t.is(runExitCode(summary({ alarm: 'x', interrupted: true })), 4);
  t.is(runExitCode(summary({ failed: 1, interrupted: true })), 1);
  t.is(runExitCode(summary({ rejectedNotKept: 1 })), 1);
  t.is(runExitCode(summary({ balanced: false })), 1);
  t.is(runExitCode(summary({ error: { code: 'E_STATUS_LOG', message: '' }, delivered: 0 })), 2);
  t.is(runExitCode(summary({ error: { code: 'E_ARCHIVE_CORRUPT', message: '' } })), 1);
  t.is(runExitCode(summary({ error: { code: 'E_STAGING_INCOMPLETE', message: '' }, delivered: 0, batchesFailed: 3 })), 1, 'staged batches gone, nothing else to import: lost deliveries');
  t.is(runExitCode(summary({ error: { code: 'E_INTERNAL', message: '' } })), 70);
});

test('zoned times: impossible calendar values are NaN, never rolled over', (t) => {
  t.is(parseZonedTime('2026-11-23T09:00:00Z'), Date.UTC(2026, 10, 23, 9));
  t.is(parseZonedTime('2026-11-23T09:00:00.123+01:00'), Date.UTC(2026, 10, 23, 8, 0, 0, 123));
  t.is(parseZonedTime('2024-02-29T00:00Z'), Date.UTC(2024, 1, 29));
  for (const bad of ['2026-02-31T10:00:00Z', '2025-02-29T00:00:00Z', '2026-13-01T00:00:00Z', '2026-11-23T24:00:00Z', '2026-11-23T09:60:00Z', '2026-11-23T09:00:60Z', '2026-11-23T09:00:00+24:00', '2026-11-23T09:00:00', '2026-11-23 09:00:00Z', 'yesterday']) {
    t.true(Number.isNaN(parseZonedTime(bad)), bad);
  }
});

test('a drop folder takes the worst of its archives by what the codes say, not their numbers: an alarm (5) never hides a refusal (2) or failures (1)', (t) => {
  const worst = (...codes: number[]) => codes.reduce(worseExitCode, 0);
  t.is(worst(5, 2, 0), 2);
  t.is(worst(5, 1), 1);
  t.is(worst(4, 1), 1);
  t.is(worst(1, 2), 2);
  t.is(worst(2, 70, 5), 70);
  t.is(worst(0, 5, 4), 4);
  t.is(worst(0, 0), 0);
  // status of shards: a broken ledger (7) says more than an incomplete export (1).
  t.is(worst(1, 7, 0), 7);
  t.is(worst(7, 1), 7);
});

test('entries named like messages files that were not read alarm, before anything else', (t) => {
  t.regex(alarmOf(summary({ entriesNotRead: 2 }), 0.1) ?? '', /^2 archive entries are named like a messages file/);
  t.is(alarmOf(summary({ entriesNotRead: 0 }), 0.1), undefined);
});

test("verify's exit code: a ledger that fails (7) before a store that lacks what it records (6) before failed pairs no run delivered (1, as status's INCOMPLETE); 0 only with none", (t) => {
  t.is(verifyExitCode({ ledger: 0, storeHolds: true, failedNotDelivered: 0 }), 0);
  t.is(verifyExitCode({ ledger: 0, storeHolds: true, failedNotDelivered: 36 }), 1);
  t.is(verifyExitCode({ ledger: 0, storeHolds: false, failedNotDelivered: 0 }), 6);
  t.is(verifyExitCode({ ledger: 0, storeHolds: false, failedNotDelivered: 36 }), 6);
  t.is(verifyExitCode({ ledger: 7, storeHolds: true, failedNotDelivered: 36 }), 7);
  t.is(verifyExitCode({ ledger: 7, storeHolds: false, failedNotDelivered: 36 }), 7);
  // The same order as worseExitCode's, so several state dirs' worst is the one that says most.
  t.is(worseExitCode(verifyExitCode({ ledger: 0, storeHolds: true, failedNotDelivered: 1 }), verifyExitCode({ ledger: 0, storeHolds: false, failedNotDelivered: 0 })), 6);
});
