// The account of an export whose store a later run found lost (a folder deleted between a stopped
// run and its resume, a failing disk). Was (helper-117, IMAP and Graph through the CLI): the
// resumed run failed 50 pairs "folder ... was deleted since the earlier run", exit 1, and dropped
// its checkpoint, yet `status --export` said COMPLETE, exit 0, `verify` without --sink found
// nothing failed: the earlier deliveries outranked the failures, and the 365 pairs lost before the
// checkpoint were never read again, so nothing recorded them.
import test from 'ava';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { AccountBuilder, type LedgerRecordLike } from '../src/ledger/account.js';
import { LedgerWriter } from '../src/ledger/writer.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const EXPORT_ID = 'acme-2026-11-23';
const SHA = 'a'.repeat(64);

/** Ledger records of runs of one export of 3 items to mailbox m, fed in order with seqs. */
function ledger(): { records: LedgerRecordLike[]; run: (id: string, outcomes: [string, string, Record<string, unknown>?][], summary: Record<string, unknown>, exportId?: string) => void } {
  const records: LedgerRecordLike[] = [];
  const add = (r: Omit<LedgerRecordLike, 'seq' | 'at'>) => records.push({ ...r, seq: records.length + 1, at: '2026-12-02T09:00:00Z' } as LedgerRecordLike);
  return {
    records,
    run(runId, outcomes, summary, exportId = EXPORT_ID) {
      add({ record: 'start', runId, command: 'run', exportId, sha256: SHA, eventsInArchive: outcomes.length });
      for (const [itemId, outcome, more] of outcomes) add({ record: 'outcome', runId, exportId, itemId, mailbox: 'm@acme.example', outcome, ...more });
      const failed = outcomes.filter(([, o]) => o === 'failed').length;
      add({ record: 'summary', runId, source: 'pivot-zip', sha256: SHA, delivered: 0, skipped: 0, failed, rejectedNotKept: 0, balanced: true, itemsDoneEarlier: 0, ...summary });
    },
  };
}

function account(records: LedgerRecordLike[]) {
  const builder = new AccountBuilder(EXPORT_ID);
  for (const r of records) builder.visit(r);
  const winners = builder.winners();
  const lines: { itemId: string; mailbox: string | null; outcome: string }[] = [];
  for (const r of records) builder.second(r, winners, (l) => lines.push({ itemId: l.itemId, mailbox: l.mailbox, outcome: l.outcome }));
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

test('a run whose end-of-run look found a folder removed (its summary storageLost, no failure recorded) counts the pairs before it as failed until a run confirms them (helper-122)', (t) => {
  const { records, run } = ledger();
  run('r1', [['i1', 'delivered'], ['i2', 'delivered'], ['i3', 'delivered']], {});
  t.true(account(records).complete);
  // The same archive again: everything found there, then the look finds m's folder removed after its last write.
  run('r2', [['i1', 'skipped'], ['i2', 'skipped'], ['i3', 'skipped']], { storageLost: true, error: { code: 'E_SINK_WRITE', message: 'maildir: 1 folder(s) ... were removed during the run, after their last write' } });
  const after = account(records);
  t.deepEqual(after.pairs, { total: 3, delivered: 0, skipped: 0, failed: 3, lostFromStore: 3 });
  t.false(after.complete);
  run('r3', [['i1', 'delivered'], ['i2', 'delivered'], ['i3', 'delivered']], {});
  t.true(account(records).complete);
});

test('a failure of another cause (a write refused) leaves the earlier deliveries counted', (t) => {
  const { records, run } = ledger();
  run('r1', [['i1', 'delivered'], ['i2', 'delivered']], { interrupted: true });
  run('r2', [['i3', 'failed', { reason: 'sink-error', detail: 'NO [OVERQUOTA]' }]], { itemsDoneEarlier: 2 });
  const a = account(records);
  t.deepEqual(a.pairs, { total: 3, delivered: 2, skipped: 0, failed: 1 });
});

test('another export\'s run that finds a mailbox\'s store lost counts this export\'s pairs delivered there before as failed, in that mailbox only, until this export is run again', (t) => {
  const { records, run } = ledger();
  const n = { mailbox: 'n@acme.example' };
  run('r1', [['i1', 'delivered'], ['i2', 'delivered', n], ['i3', 'delivered']], {});
  t.true(account(records).complete);
  // The next day's export, resumed after m's folder was deleted: its write there finds it gone. Was: this export still COMPLETE.
  run('b1', [['j1', 'failed', lost]], { interrupted: false }, `${EXPORT_ID}-next`);
  const after = account(records);
  t.deepEqual(after.pairs, { total: 3, delivered: 1, skipped: 0, failed: 2, lostFromStore: 2 });
  t.false(after.complete);
  t.deepEqual(after.lines.map((l) => `${l.itemId} ${l.mailbox} ${l.outcome}`).sort(), ['i1 m@acme.example failed', 'i2 n@acme.example delivered', 'i3 m@acme.example failed']);
  t.regex(after.problems.find((p) => p.itemId === 'i1')!.detail, /a later run found the store lost/);
  // A loss the other export found before this export's deliveries takes nothing of them.
  run('r2', [['i1', 'delivered'], ['i2', 'skipped', n], ['i3', 'skipped']], {});
  const again = account(records);
  t.deepEqual(again.pairs, { total: 3, delivered: 2, skipped: 1, failed: 0 });
  t.true(again.complete);
});

test('another export\'s run whose end-of-run look found a mailbox\'s folder gone (its summary mailboxesLost, no failure recorded) counts this export\'s pairs there before it as failed, in that mailbox only (helper-122 F1)', (t) => {
  const { records, run } = ledger();
  const n = { mailbox: 'n@acme.example' };
  run('r1', [['i1', 'delivered'], ['i2', 'delivered', n], ['i3', 'delivered']], {});
  t.true(account(records).complete);
  // Was: the look's loss was in that run's summary only, and counted for that export alone.
  run('b1', [['j1', 'delivered']], { storageLost: true, mailboxesLost: ['m@acme.example'], error: { code: 'E_SINK_WRITE', message: 'maildir: 1 folder(s) ... were removed during the run, after their last write' } }, `${EXPORT_ID}-next`);
  const after = account(records);
  t.deepEqual(after.pairs, { total: 3, delivered: 1, skipped: 0, failed: 2, lostFromStore: 2 });
  t.false(after.complete);
  // A summary whose look could only not confirm folders names none: nothing of this export changes.
  const { records: unconfirmed, run: runUnconfirmed } = ledger();
  runUnconfirmed('r1', [['i1', 'delivered'], ['i2', 'delivered', n], ['i3', 'delivered']], {});
  runUnconfirmed('b1', [['j1', 'delivered']], { storageLost: true, error: { code: 'E_SINK_WRITE', message: 'imap: whether the folder ... could not be confirmed' } }, `${EXPORT_ID}-next`);
  t.true(account(unconfirmed).complete);
});

test('verify names an export whose pairs were in a mailbox another export\'s later run found lost (exit 1), not only the export that found it', async (t) => {
  const dir = await tempDir(t);
  const state = join(dir, 'state');
  await mkdir(state);
  const writer = await LedgerWriter.open(join(state, 'ledger.jsonl'));
  const at = '2026-12-02T09:00:00.000Z';
  const exportRun = async (runId: string, exportId: string, outcomes: Record<string, unknown>[]) => {
    await writer.append(JSON.stringify({ record: 'start', runId, at, command: 'run', tool: { name: 'pivot-archive', version: 'test' }, host: 'h', archive: `${exportId}.zip`, size: 1, sha256: SHA, exportId, tenant: 'acme', eventsInArchive: outcomes.length, sink: `maildir:${dir}/mail`, options: {} }));
    for (const o of outcomes) await writer.append(JSON.stringify({ record: 'outcome', runId, at, exportId, conversationId: 'c', sink: 'maildir', sentAt: at, ...o }));
    const failed = outcomes.filter((o) => o.outcome === 'failed').length;
    await writer.append(JSON.stringify({ record: 'summary', runId, at, source: 'pivot-zip', exportId, sink: `maildir:${dir}/mail`, startedAt: at, finishedAt: at, archive: `${exportId}.zip`, sha256: SHA, eventsInArchive: outcomes.length, itemsFromSource: outcomes.length, itemsAddedByPlugins: 0, itemsDoneEarlier: 0, rejected: {}, rejectedTotal: 0, itemsRouted: outcomes.length, itemsAvailableForImport: outcomes.length, delivered: outcomes.length - failed, skipped: 0, failed, rejectedNotKept: 0, notes: 0, interrupted: false, balanced: true }));
    await writer.seal(runId, undefined, join(state, 'checkpoint.note'));
  };
  const delivered = (itemId: string, mailbox: string) => ({ itemId, mailbox, outcome: 'delivered', messageId: `<${itemId}@x>`, size: 1, sha256: SHA, location: `${mailbox}/.INBOX.Pivot/cur/${itemId}:2,S` });
  await exportRun('a1', EXPORT_ID, [delivered('i1', 'm@acme.example'), delivered('i2', 'n@acme.example')]);
  await exportRun('b1', `${EXPORT_ID}-next`, [delivered('j2', 'n@acme.example'), { itemId: 'j1', mailbox: 'm@acme.example', outcome: 'failed', ...lost }]);
  await writer.close();
  const verified = await cli(['verify', '--state-dir', state, '--json']);
  t.is(verified.code, 1, verified.stdout + verified.stderr);
  const result = JSON.parse(verified.stdout) as { notComplete: { exportId: string; reasons: string[] }[]; failedNotDelivered: { pairs: number } };
  t.is(result.failedNotDelivered.pairs, 1, 'the other export\'s own failure');
  const ours = result.notComplete.find((e) => e.exportId === EXPORT_ID);
  t.truthy(ours, JSON.stringify(result.notComplete));
  t.regex(ours!.reasons.join(' '), /1 pair delivered \(or found there\) before a later run found the store lost/);
  // Scoped to this export, the same.
  const scoped = await cli(['verify', '--state-dir', state, '--export', EXPORT_ID, '--json']);
  t.is(scoped.code, 1, scoped.stdout + scoped.stderr);
  const status = await cli(['status', '--state-dir', state, '--export', EXPORT_ID, '--json']);
  t.is(status.code, 1, status.stdout);
  t.like((JSON.parse(status.stdout) as { account: { pairs: unknown } }).account.pairs, { delivered: 1, failed: 1, lostFromStore: 1 });
});
