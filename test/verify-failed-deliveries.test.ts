import test, { type ExecutionContext } from 'ava';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

/**
 * `verify` of a ledger that records deliveries that failed and that no later run delivered: the
 * store holds everything delivered, but not everything is archived. It must say so, with the
 * count, and never exit 0 ("verified: ... everything it records is there"). Maildir: a mailbox
 * whose folder is a file fails every delivery into it (the tests run as root: chmod 000 would not).
 */

const EXPORT_ID = 'acme-2026-11-23';
/** A mailbox of the sample (seed 5) that receives messages. */
const BROKEN = 'user4@acme.example';

interface Summary {
  exportId: string;
  delivered: number;
  skipped: number;
  failed: number;
}

interface VerifyJson {
  exitCode: number;
  failedNotDelivered: { pairs: number; byExport: { exportId: string | null; pairs: number }[]; listed: { exportId: string | null; mailbox: string; itemId: string; reason?: string; detail?: string }[] };
  store?: { missing: unknown[]; intact: number };
}

async function setUp(t: ExecutionContext) {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 60, seed: 5 });
  const mail = join(dir, 'mail');
  const state = join(dir, 'state');
  const runArgs = (zip: string) => ['run', zip, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--quiet', '--json'];
  const run = async (zip = archive) => {
    const r = await cli(runArgs(zip));
    return { code: r.code, summary: JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Summary, log: r.log };
  };
  const verify = (...extra: string[]) => cli(['verify', '--state-dir', state, '--sink', `maildir:${mail}`, ...extra]);
  return { dir, archive, mail, state, run, verify };
}

/** A file where the mailbox's folder belongs: every delivery into it fails (ENOTDIR). */
async function breakMailbox(mail: string): Promise<void> {
  await mkdir(mail, { recursive: true });
  await writeFile(join(mail, BROKEN), 'a file where a mailbox folder belongs');
}

test('verify of a ledger that records failed deliveries no run delivered since: the count, "not complete", exit 1 (with --sink, --ledger, --json); status INCOMPLETE, exit 1; after the re-run delivers them, exit 0', async (t) => {
  const { mail, state, run, verify } = await setUp(t);
  await breakMailbox(mail);
  const first = await run();
  t.is(first.code, 1, first.log);
  t.true(first.summary.failed > 0, JSON.stringify(first.summary));
  const failed = first.summary.failed;

  const text = await verify();
  t.is(text.code, 1, text.stdout + text.stderr);
  // What was delivered is there: the store holds it all.
  t.regex(text.stdout, /intact \d+, missing 0, altered 0, unexpected 0/);
  t.true(text.stdout.includes(`NOT DELIVERED: ${failed} (mailbox, item) pairs the ledger records as failed, and no run delivered since (by export: ${EXPORT_ID} ${failed})`), text.stdout);
  t.regex(text.stdout, new RegExp(`^  NOT DELIVERED ${BROKEN.replace('.', '\\.')} item \\S+ \\(export ${EXPORT_ID}; failed in run [0-9a-f-]+ at \\S+, sink-error\\): ENOTDIR`, 'm'));
  t.regex(text.stdout, /verified is not complete/);
  t.regex(text.stdout, /\(exit 1\)/);
  t.notRegex(text.stdout, /^verified/m);
  t.notRegex(text.stdout, /everything it records is there/);

  const json = await verify('--json');
  t.is(json.code, 1);
  const result = JSON.parse(json.stdout) as VerifyJson;
  t.is(result.exitCode, 1);
  t.is(result.failedNotDelivered.pairs, failed);
  t.deepEqual(result.failedNotDelivered.byExport, [{ exportId: EXPORT_ID, pairs: failed }]);
  t.is(result.failedNotDelivered.listed.length, Math.min(failed, 20));
  t.true(result.failedNotDelivered.listed.every((p) => p.mailbox === BROKEN && p.exportId === EXPORT_ID && p.reason === 'sink-error' && /ENOTDIR/.test(p.detail ?? '')), JSON.stringify(result.failedNotDelivered));
  t.is(new Set(result.failedNotDelivered.listed.map((p) => p.itemId)).size, result.failedNotDelivered.listed.length);

  // The ledger alone says the same: it records what is in no mailbox.
  const ledgerOnly = await cli(['verify', '--state-dir', state, '--ledger']);
  t.is(ledgerOnly.code, 1, ledgerOnly.stdout + ledgerOnly.stderr);
  t.true(ledgerOnly.stdout.includes(`NOT DELIVERED: ${failed} (mailbox, item) pairs`), ledgerOnly.stdout);
  t.notRegex(ledgerOnly.stdout, /^verified/m);
  // status agrees: INCOMPLETE, exit 1.
  const status = await cli(['status', '--state-dir', state, '--export', EXPORT_ID]);
  t.is(status.code, 1, status.stdout);
  t.regex(status.stdout, /INCOMPLETE/);
  t.true(status.stdout.includes(`failed ${failed}`), status.stdout);

  // The same run again, still failing: the pairs are counted once, not once per failure.
  const again = await run();
  t.is(again.code, 1, again.log);
  t.is(again.summary.failed, failed);
  t.is((JSON.parse((await verify('--json')).stdout) as VerifyJson).failedNotDelivered.pairs, failed);

  // The mailbox mended, a re-run delivers exactly what failed: verify holds, exit 0.
  await rm(join(mail, BROKEN));
  const mended = await run();
  t.is(mended.code, 0, mended.log);
  t.is(mended.summary.delivered, failed);
  const clean = await verify();
  t.is(clean.code, 0, clean.stdout + clean.stderr);
  t.notRegex(clean.stdout, /NOT DELIVERED|NOT COMPLETE/);
  t.regex(clean.stdout, /^verified: the ledger holds, and everything it records is there, unaltered$/m);
  t.is((JSON.parse((await verify('--json')).stdout) as VerifyJson).failedNotDelivered.pairs, 0);
  t.is((await cli(['verify', '--state-dir', state, '--ledger'])).code, 0);
  t.is((await cli(['status', '--state-dir', state, '--export', EXPORT_ID])).code, 0);
});

test('verify --export and --since count the failures of what they check: another export\'s failures do not stop it; its own do', async (t) => {
  const { dir, mail, run, verify } = await setUp(t);
  await breakMailbox(mail);
  const beforeFirst = new Date().toISOString();
  const first = await run();
  t.is(first.code, 1, first.log);
  const failed = first.summary.failed;
  t.true(failed > 0);
  // A second export, every mailbox mended: delivered whole.
  await rm(join(mail, BROKEN));
  const second = join(dir, 'second.zip');
  await generateSample(second, { events: 30, seed: 6, day: '2026-11-24' });
  const beforeSecond = new Date().toISOString();
  const other = await run(second);
  t.is(other.code, 0, other.log);
  t.not(other.summary.exportId, EXPORT_ID);
  t.is(other.summary.failed, 0);

  const clean = await verify('--export', other.summary.exportId);
  t.is(clean.code, 0, clean.stdout + clean.stderr);
  t.notRegex(clean.stdout, /NOT DELIVERED/);
  const mine = await verify('--export', EXPORT_ID);
  t.is(mine.code, 1, mine.stdout + mine.stderr);
  t.true(mine.stdout.includes(`NOT DELIVERED: ${failed} (mailbox, item) pairs`), mine.stdout);
  // The whole ledger: the first export's failures still stand.
  const whole = await verify('--json');
  t.is(whole.code, 1);
  t.deepEqual((JSON.parse(whole.stdout) as VerifyJson).failedNotDelivered.byExport, [{ exportId: EXPORT_ID, pairs: failed }]);
  // Runs since the second started: none of them failed anything. Since the first: its failures stand.
  const sinceSecond = await verify('--since', beforeSecond);
  t.is(sinceSecond.code, 0, sinceSecond.stdout + sinceSecond.stderr);
  t.notRegex(sinceSecond.stdout, /NOT DELIVERED/);
  const sinceFirst = await verify('--since', beforeFirst);
  t.is(sinceFirst.code, 1, sinceFirst.stdout + sinceFirst.stderr);
  t.true(sinceFirst.stdout.includes(`NOT DELIVERED: ${failed} (mailbox, item) pairs`), sinceFirst.stdout);
});

test('verify: a pair delivered by an earlier run and failed by a later one is delivered (as status counts it), and its message gone is MISSING: exit 6, not a failure not delivered', async (t) => {
  const { dir, mail, run, verify } = await setUp(t);
  const first = await run();
  t.is(first.code, 0, first.log);
  // The mailbox's folder moved away, a file in its place: the re-run's deliveries into it fail.
  await rename(join(mail, BROKEN), join(dir, 'moved'));
  await writeFile(join(mail, BROKEN), 'a file where a mailbox folder belongs');
  const second = await run();
  t.is(second.code, 1, second.log);
  t.true(second.summary.failed > 0);
  const result = await verify('--json');
  t.is(result.code, 6, result.stdout);
  const parsed = JSON.parse(result.stdout) as VerifyJson;
  t.is(parsed.failedNotDelivered.pairs, 0);
  t.is(parsed.store!.missing.length, second.summary.failed);
  const text = await verify();
  t.is(text.code, 6);
  t.notRegex(text.stdout, /NOT DELIVERED/);
  t.regex(text.stdout, /FAILED: the store does not hold what the ledger records \(exit 6\)$/m);
});

test('verify: failures not delivered and messages missing: exit 6, and both are said', async (t) => {
  const { mail, run, verify } = await setUp(t);
  await breakMailbox(mail);
  const first = await run();
  t.is(first.code, 1, first.log);
  // One delivered message removed from another mailbox.
  const folder = join(mail, 'zoe@acme.example', '.INBOX.Pivot', 'cur');
  const [one] = await readdir(folder);
  t.truthy(one, 'zoe has messages');
  await rm(join(folder, one!));
  const text = await verify();
  t.is(text.code, 6, text.stdout);
  t.regex(text.stdout, /^  MISSING zoe@acme\.example /m);
  t.true(text.stdout.includes(`NOT DELIVERED: ${first.summary.failed} (mailbox, item) pairs`), text.stdout);
  t.regex(text.stdout, /FAILED: the store does not hold what the ledger records \(exit 6\); and \d+ \(mailbox, item\) pairs recorded failed were never delivered/);
});
