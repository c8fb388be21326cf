// The account of an export whose store a later run found lost (a folder deleted between a stopped
// run and its resume, a failing disk). Was (helper-117, IMAP and Graph through the CLI): the
// resumed run failed 50 pairs "folder ... was deleted since the earlier run", exit 1, and dropped
// its checkpoint, yet `status --export` said COMPLETE, exit 0, `verify` without --sink found
// nothing failed: the earlier deliveries outranked the failures, and the 365 pairs lost before the
// checkpoint were never read again, so nothing recorded them.
import test from 'ava';
import { AccountBuilder, type LedgerRecordLike } from '../src/ledger/account.js';

const EXPORT_ID = 'acme-2026-11-23';
const SHA = 'a'.repeat(64);

/** Ledger records of runs of one export of 3 items to mailbox m, fed in order with seqs. */
function ledger(): { records: LedgerRecordLike[]; run: (id: string, outcomes: [string, string, Record<string, unknown>?][], summary: Record<string, unknown>) => void } {
  const records: LedgerRecordLike[] = [];
  const add = (r: Omit<LedgerRecordLike, 'seq' | 'at'>) => records.push({ ...r, seq: records.length + 1, at: '2026-12-02T09:00:00Z' } as LedgerRecordLike);
  return {
    records,
    run(runId, outcomes, summary) {
      add({ record: 'start', runId, command: 'run', exportId: EXPORT_ID, sha256: SHA, eventsInArchive: 3 });
      for (const [itemId, outcome, more] of outcomes) add({ record: 'outcome', runId, exportId: EXPORT_ID, itemId, mailbox: 'm@acme.example', outcome, ...more });
      const failed = outcomes.filter(([, o]) => o === 'failed').length;
      add({ record: 'summary', runId, source: 'pivot-zip', sha256: SHA, delivered: 0, skipped: 0, failed, rejectedNotKept: 0, balanced: true, itemsDoneEarlier: 0, ...summary });
    },
  };
}

function account(records: LedgerRecordLike[]) {
  const builder = new AccountBuilder(EXPORT_ID);
  for (const r of records) builder.visit(r);
  const winners = builder.winners();
  const lines: { itemId: string; outcome: string }[] = [];
  for (const r of records) builder.second(r, winners, (l) => lines.push({ itemId: l.itemId, outcome: l.outcome }));
  return { ...builder.result(), lines };
}

const lost = { reason: 'sink-error', detail: 'folder INBOX/Pivot was deleted since the earlier run this one resumes wrote to it', storageLost: true };

test('a failure that says the store was lost counts the pairs delivered before it failed, not delivered: INCOMPLETE until a run confirms them again', (t) => {
  const { records, run } = ledger();
  run('r1', [['i1', 'delivered'], ['i2', 'delivered']], { interrupted: true });
  // The resume, past i1 and i2: i3's write finds the folder gone.
  run('r2', [['i3', 'failed', lost]], { itemsDoneEarlier: 2 });
  const after = account(records);
  t.deepEqual(after.pairs, { total: 3, delivered: 0, skipped: 0, failed: 3, lostFromStore: 2 });
  t.false(after.complete);
  t.true(after.problems.filter((p) => p.outcome === 'failed').length === 3);
  t.regex(after.problems.find((p) => p.itemId === 'i1')!.detail, /a later run found the store lost/);
  t.deepEqual(after.lines.map((l) => `${l.itemId} ${l.outcome}`).sort(), ['i1 failed', 'i2 failed', 'i3 failed']);

  // The next run reads from the start: every pair delivered (or found there) again.
  run('r3', [['i1', 'delivered'], ['i2', 'skipped'], ['i3', 'delivered']], {});
  const again = account(records);
  t.deepEqual(again.pairs, { total: 3, delivered: 2, skipped: 1, failed: 0 });
  t.true(again.complete);
});

test('a failure of another cause (a write refused) leaves the earlier deliveries counted', (t) => {
  const { records, run } = ledger();
  run('r1', [['i1', 'delivered'], ['i2', 'delivered']], { interrupted: true });
  run('r2', [['i3', 'failed', { reason: 'sink-error', detail: 'NO [OVERQUOTA]' }]], { itemsDoneEarlier: 2 });
  const a = account(records);
  t.deepEqual(a.pairs, { total: 3, delivered: 2, skipped: 0, failed: 1 });
});
