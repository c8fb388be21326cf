// An account lists at most PROBLEMS_LISTED rejected items and failed pairs, and counts them all:
// a day whose sink was down fails millions of pairs, and `status --export` and `report` held
// each as an object (746 MB for 1M failed pairs, 2026-12-02; 369 MB with the list bounded).
import test from 'ava';
import { AccountBuilder, PROBLEMS_LISTED, type LedgerRecordLike } from '../src/ledger/account.js';
import { formatExportStatus } from '../src/state/report.js';

const EXPORT_ID = 'acme-2026-12-01';

/** Records of one run of the export (`add` each, in order), and the account of them once it has ended (its summary added). */
function oneRun() {
  const records: LedgerRecordLike[] = [];
  const add = (r: Record<string, unknown>) => records.push({ at: '2026-12-02T09:00:00Z', runId: 'r1', ...r, seq: records.length + 1 } as LedgerRecordLike);
  const account = () => {
    add({ record: 'summary', source: 'pivot-zip', sha256: 'a'.repeat(64), interrupted: false, balanced: true, itemsDoneEarlier: 0 });
    const builder = new AccountBuilder(EXPORT_ID);
    for (const r of records) builder.visit(r);
    const winners = builder.winners();
    for (const r of records) builder.second(r, winners);
    return builder.result();
  };
  return { records, add, account };
}

test('PROBLEMS_LISTED rejected items do not hide a failed pair: text status still names it (helper-122)', async (t) => {
  const { records, add, account } = oneRun();
  add({ record: 'start', command: 'run', exportId: EXPORT_ID, sha256: 'a'.repeat(64), eventsInArchive: PROBLEMS_LISTED + 1 });
  for (let i = 0; i < PROBLEMS_LISTED; i++) add({ record: 'outcome', exportId: EXPORT_ID, itemId: `bad-${i}`, mailbox: null, outcome: 'rejected', reason: 'unmapped', kept: `r/bad-${i}`, position: `0.${i}` });
  add({ record: 'outcome', exportId: EXPORT_ID, itemId: 'm1', mailbox: 'u@acme.example', outcome: 'failed', reason: 'sink-error', detail: 'refused' });
  const a = account();
  t.is(a.problems.length, PROBLEMS_LISTED + 1);
  t.like(a.problems.at(-1), { itemId: 'm1', outcome: 'failed' });
  t.regex(formatExportStatus(a, { path: 'l', records: records.length, head: 'h', chainIntact: true, checkpoints: 0, signature: 'unsigned', unsealed: 0, problems: [] }), /failed: item m1 -> u@acme\.example: refused/);
});

test('past PROBLEMS_LISTED problems the account counts the rest and lists the first: rejected first, by reason, in the ledger\'s order within one', (t) => {
  const { add, account } = oneRun();
  const failed = PROBLEMS_LISTED + 1000;
  add({ record: 'start', command: 'run', exportId: EXPORT_ID, sha256: 'a'.repeat(64), eventsInArchive: failed + 3 });
  for (let i = 0; i < failed; i++) add({ record: 'outcome', exportId: EXPORT_ID, itemId: `m_${i}`, mailbox: `u${i % 7}@acme.example`, outcome: 'failed', reason: i % 2 ? 'sink-error' : 'not-stored' });
  add({ record: 'outcome', exportId: EXPORT_ID, itemId: 'bad-2', mailbox: null, outcome: 'rejected', reason: 'unmapped', kept: 'r/bad-2', position: '0.2' });
  add({ record: 'outcome', exportId: EXPORT_ID, itemId: 'bad-1', mailbox: null, outcome: 'rejected', reason: 'bad-event', kept: 'r/bad-1', position: '0.1' });
  add({ record: 'outcome', exportId: EXPORT_ID, itemId: 'bad-3', mailbox: null, outcome: 'failed', reason: 'not-kept', rejectReason: 'unmapped', position: '0.3' });
  const a = account();
  t.deepEqual(a.problemCount, { total: failed + 3, rejectedKept: 2, notKept: 1 });
  t.is(a.problems.length, 2 + PROBLEMS_LISTED, 'the rejected, then the first PROBLEMS_LISTED failed');
  t.deepEqual(a.problems.slice(0, 2).map((p) => p.itemId), ['bad-1', 'bad-2'], 'rejected first, by reason');
  // Then the failed, by reason (not-kept, not-stored, sink-error), each in the ledger's order.
  t.deepEqual(a.problems.slice(2, 5).map((p) => `${p.itemId} ${p.reason}`), ['bad-3 not-kept', 'm_0 not-stored', 'm_2 not-stored']);
  t.is(a.problems.filter((p) => p.reason === 'not-stored').length, Math.ceil(failed / 2));
  t.is(a.pairs.failed, failed, 'the counters count every one');
});
