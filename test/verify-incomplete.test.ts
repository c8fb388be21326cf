// `verify` of a ledger whose runs never settled every item of an export for reasons other than
// failed (mailbox, item) pairs: rejected items that could not be kept (in no mailbox and no
// rejects folder), a run stopped part-way (its archive not read to the end). The store holds all
// that was delivered, so verify said "verified ... everything it records is there" and exited 0
// while `status --export` said INCOMPLETE and exited 1. Now verify agrees with status: NOT
// COMPLETE, why, exit 1 (with --sink, --ledger, --json), within --export and --since; and once a
// later run settles the export, exit 0 again. Through the real command line, on a real Maildir.
import test, { type ExecutionContext } from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { verifyExitCode } from '../src/exit-policy.js';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { STOPPER_PLUGIN } from './helpers/stopper.js';
import { tempDir } from './helpers/tmp.js';

const EXPORT_ID = 'acme-2026-11-23';

interface Summary {
  exportId: string;
  delivered: number;
  skipped: number;
  failed: number;
  rejectedTotal: number;
  rejectedNotKept: number;
  interrupted: boolean;
}

interface NotComplete {
  exportId: string;
  reasons: string[];
  readToEnd: boolean;
  notYetRead: number | null;
  rejectedNotKept: number;
  balanced: boolean;
  pairsFailed: number;
  latestRun: { runId: string; ended: string; exitCode?: number } | null;
}

interface VerifyJson {
  exitCode: number;
  failedNotDelivered: { pairs: number };
  notComplete: NotComplete[];
  store?: { missing: unknown[]; altered: unknown[]; unexpected: unknown[] | null; intact: number };
}

interface Account {
  complete: boolean;
  items: { rejectedNotKept: number; notYetRead?: number };
}

async function setUp(t: ExecutionContext) {
  const dir = await tempDir(t);
  const mail = join(dir, 'mail');
  const state = join(dir, 'state');
  const run = async (zip: string, rejects: string, extra: string[] = [], env: Record<string, string> = {}) => {
    const r = await cli(['run', zip, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', rejects, '--max-rejected', '100%', '--quiet', '--json', ...extra], { env });
    return { code: r.code, summary: JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Summary, log: r.log };
  };
  const verify = (...extra: string[]) => cli(['verify', '--state-dir', state, '--sink', `maildir:${mail}`, ...extra]);
  const verifyJson = async (...extra: string[]) => {
    const r = await verify('--json', ...extra);
    return { code: r.code, result: JSON.parse(r.stdout) as VerifyJson };
  };
  const status = async (exportId = EXPORT_ID) => {
    const text = await cli(['status', '--state-dir', state, '--export', exportId]);
    const json = await cli(['status', '--state-dir', state, '--export', exportId, '--json']);
    return { code: text.code, stdout: text.stdout, account: (JSON.parse(json.stdout) as { account: Account }).account };
  };
  return { dir, mail, state, run, verify, verifyJson, status };
}

test('rejected items that could not be kept: verify says NOT COMPLETE with the count, exit 1 (--sink, --ledger, --json), as status says INCOMPLETE; a re-run that keeps them makes it 0', async (t) => {
  const { dir, state, run, verify, verifyJson, status } = await setUp(t);
  const archive = join(dir, 'export.zip');
  // The sample's edge cases: 4 events every run rejects (oversize, unknown conversation, no time, unmapped).
  await generateSample(archive, { events: 60, seed: 5 });
  // A file where the rejects folder's parent belongs: no rejected item can be kept (ENOTDIR; the tests run as root, so chmod would not do).
  const blocked = join(dir, 'a-file');
  await writeFile(blocked, 'not a folder');
  const first = await run(archive, join(blocked, 'rejects'));
  t.is(first.code, 1, first.log);
  t.is(first.summary.failed, 0, 'no (mailbox, item) pair failed');
  t.true(first.summary.rejectedNotKept >= 4, JSON.stringify(first.summary));
  const notKept = first.summary.rejectedNotKept;

  // status: INCOMPLETE, exit 1.
  const before = await status();
  t.is(before.code, 1, before.stdout);
  t.regex(before.stdout, new RegExp(`export ${EXPORT_ID} \\(tenant acme\\): INCOMPLETE`));
  t.is(before.account.items.rejectedNotKept, notKept);

  // verify: everything delivered is there, but not everything is archived.
  const text = await verify();
  t.is(text.code, 1, text.stdout + text.stderr);
  t.regex(text.stdout, /intact \d+, missing 0, altered 0, unexpected 0/);
  t.true(text.stdout.includes(`NOT COMPLETE export ${EXPORT_ID}: ${notKept} rejected items could not be kept in the rejects folder`), text.stdout);
  t.regex(text.stdout, /^NOT COMPLETE: .*verified is not complete, not everything is archived \(exit 1\)$/m);
  t.notRegex(text.stdout, /^verified/m);
  t.notRegex(text.stdout, /everything it records is there/);
  t.notRegex(text.stdout, /NOT DELIVERED/, 'no pair failed: nothing to list as not delivered');

  const json = await verifyJson();
  t.is(json.code, 1);
  t.is(json.result.exitCode, 1);
  t.is(json.result.failedNotDelivered.pairs, 0);
  t.is(json.result.notComplete.length, 1);
  t.like(json.result.notComplete[0], { exportId: EXPORT_ID, rejectedNotKept: notKept, readToEnd: true, balanced: true, pairsFailed: 0 });
  t.like(json.result.store, { missing: [], altered: [], unexpected: [] });

  // The ledger alone says the same.
  const ledgerOnly = await cli(['verify', '--state-dir', state, '--ledger']);
  t.is(ledgerOnly.code, 1, ledgerOnly.stdout + ledgerOnly.stderr);
  t.true(ledgerOnly.stdout.includes(`NOT COMPLETE export ${EXPORT_ID}: ${notKept} rejected items could not be kept`), ledgerOnly.stdout);
  t.notRegex(ledgerOnly.stdout, /^verified/m);
  // --export of it: in scope, 1.
  t.is((await verify('--export', EXPORT_ID)).code, 1);

  // A re-run with a rejects folder that can be written keeps them: settled, status and verify 0.
  const mended = await run(archive, join(dir, 'rejects'));
  t.is(mended.code, 0, mended.log);
  t.is(mended.summary.rejectedNotKept, 0);
  const after = await status();
  t.is(after.code, 0, after.stdout);
  t.true(after.account.complete);
  const clean = await verify();
  t.is(clean.code, 0, clean.stdout + clean.stderr);
  t.notRegex(clean.stdout, /NOT COMPLETE/);
  t.regex(clean.stdout, /^verified: the ledger holds, and everything it records is there, unaltered$/m);
  t.deepEqual((await verifyJson()).result.notComplete, []);
  t.is((await cli(['verify', '--state-dir', state, '--ledger'])).code, 0);
});

test('a run stopped part-way (SIGTERM): verify says NOT COMPLETE, its archive not read to the end, with the count status gives, exit 1; the run that finishes it makes verify 0; a later re-run stopped part-way does not undo that (status stays COMPLETE)', async (t) => {
  t.timeout(180_000);
  const { dir, state, run, verify, verifyJson, status } = await setUp(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 500, seed: 5, edgeCases: false });
  const stopper = join(dir, 'stopper.mjs');
  await writeFile(stopper, STOPPER_PLUGIN);
  const rejects = join(dir, 'rejects');
  // SIGTERM at the 100th item: the items in flight finish, nothing further is read.
  const stopped = await run(archive, rejects, ['--plugin', stopper], { STOP_AT: '100' });
  t.is(stopped.code, 4, stopped.log);
  t.true(stopped.summary.interrupted);
  t.is(stopped.summary.failed, 0);
  t.is(stopped.summary.rejectedNotKept, 0);

  const before = await status();
  t.is(before.code, 1, before.stdout);
  t.regex(before.stdout, /INCOMPLETE/);
  const notYetRead = before.account.items.notYetRead!;
  t.true(notYetRead > 0, JSON.stringify(before.account));

  const text = await verify();
  t.is(text.code, 1, text.stdout + text.stderr);
  t.regex(text.stdout, /intact \d+, missing 0, altered 0, unexpected 0/);
  t.true(text.stdout.includes(`NOT COMPLETE export ${EXPORT_ID}: its archive was not read to the end (${notYetRead} items not read yet`), text.stdout);
  t.regex(text.stdout, /stopped by a signal/);
  t.regex(text.stdout, /verified is not complete, not everything is archived \(exit 1\)$/m);
  t.notRegex(text.stdout, /^verified/m);
  const json = await verifyJson();
  t.is(json.code, 1);
  t.like(json.result.notComplete[0], { exportId: EXPORT_ID, readToEnd: false, notYetRead, rejectedNotKept: 0, pairsFailed: 0, latestRun: { ended: 'summary', exitCode: 4 } });
  t.is((await cli(['verify', '--state-dir', state, '--ledger'])).code, 1);

  // The same run again (the checkpoint resumed) reads the rest: settled, 0 for both.
  const finished = await run(archive, rejects, ['--plugin', stopper]);
  t.is(finished.code, 0, finished.log);
  t.is((await status()).code, 0);
  const clean = await verify();
  t.is(clean.code, 0, clean.stdout + clean.stderr);
  t.notRegex(clean.stdout, /NOT COMPLETE/);
  t.regex(clean.stdout, /^verified: the ledger holds, and everything it records is there, unaltered$/m);

  // A re-run of the archive read whole, stopped part-way: it settles nothing new and undoes
  // nothing (status stays COMPLETE), and verify agrees with status: 0.
  const again = await run(archive, rejects, ['--plugin', stopper], { STOP_AT: '100' });
  t.is(again.code, 4, again.log);
  const still = await status();
  t.is(still.code, 0, still.stdout);
  const agreed = await verifyJson();
  t.is(agreed.code, 0, JSON.stringify(agreed.result.notComplete));
  t.deepEqual(agreed.result.notComplete, []);
});

test('verify --export and --since count only the exports and runs they check: another export\'s unsettled run does not stop them; their own does', async (t) => {
  const { dir, run, verify, verifyJson } = await setUp(t);
  const first = join(dir, 'first.zip');
  await generateSample(first, { events: 60, seed: 5 });
  const blocked = join(dir, 'a-file');
  await writeFile(blocked, 'not a folder');
  const beforeFirst = new Date().toISOString();
  const broken = await run(first, join(blocked, 'rejects'));
  t.is(broken.code, 1, broken.log);
  t.true(broken.summary.rejectedNotKept > 0);
  // Another export, its rejects kept: settled.
  const second = join(dir, 'second.zip');
  await generateSample(second, { events: 30, seed: 6, day: '2026-11-24' });
  const beforeSecond = new Date().toISOString();
  const other = await run(second, join(dir, 'rejects'));
  t.is(other.code, 0, other.log);
  t.not(other.summary.exportId, EXPORT_ID);

  const clean = await verify('--export', other.summary.exportId);
  t.is(clean.code, 0, clean.stdout + clean.stderr);
  t.notRegex(clean.stdout, /NOT COMPLETE/);
  const mine = await verify('--export', EXPORT_ID);
  t.is(mine.code, 1, mine.stdout + mine.stderr);
  t.true(mine.stdout.includes(`NOT COMPLETE export ${EXPORT_ID}:`), mine.stdout);
  t.false(mine.stdout.includes(`NOT COMPLETE export ${other.summary.exportId}`), mine.stdout);
  // The whole ledger: the first export alone.
  const whole = await verifyJson();
  t.is(whole.code, 1);
  t.deepEqual(whole.result.notComplete.map((e) => e.exportId), [EXPORT_ID]);
  // Since the second run started: the first export's run is not checked. Since the first: it is.
  const sinceSecond = await verify('--since', beforeSecond);
  t.is(sinceSecond.code, 0, sinceSecond.stdout + sinceSecond.stderr);
  t.notRegex(sinceSecond.stdout, /NOT COMPLETE/);
  const sinceFirst = await verify('--since', beforeFirst);
  t.is(sinceFirst.code, 1, sinceFirst.stdout + sinceFirst.stderr);
  t.true(sinceFirst.stdout.includes(`NOT COMPLETE export ${EXPORT_ID}:`), sinceFirst.stdout);
});

test('verify\'s exit code: an export not complete is 1 as failed pairs are, after a ledger that fails (7) and a store that lacks what it records (6)', (t) => {
  t.is(verifyExitCode({ ledger: 0, storeHolds: true, failedNotDelivered: 0, exportsNotComplete: 0 }), 0);
  t.is(verifyExitCode({ ledger: 0, storeHolds: true, failedNotDelivered: 0, exportsNotComplete: 1 }), 1);
  t.is(verifyExitCode({ ledger: 0, storeHolds: true, failedNotDelivered: 3, exportsNotComplete: 1 }), 1);
  t.is(verifyExitCode({ ledger: 0, storeHolds: false, failedNotDelivered: 0, exportsNotComplete: 1 }), 6);
  t.is(verifyExitCode({ ledger: 7, storeHolds: false, failedNotDelivered: 0, exportsNotComplete: 1 }), 7);
});
