import test, { type ExecutionContext } from 'ava';
import { cp, readdir, readFile, rm, unlink, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { LedgerWriter } from '../src/ledger/writer.js';
import { shardOfMailbox } from '../src/transforms/shard/index.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

/**
 * What `verify` checks, and what `status` calls COMPLETE, when what it is given is not the whole:
 * a --sink that names another store than the runs', the state dirs of some shards only, a ledger
 * whose chain does not hold. Maildir only.
 */

const EXPORT_ID = 'acme-2026-11-23';

async function archiveAndRun(t: ExecutionContext): Promise<{ dir: string; archive: string; mail: string; state: string }> {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 60, seed: 5 });
  const mail = join(dir, 'mail');
  const state = join(dir, 'state');
  const run = await cli(['run', archive, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--quiet']);
  t.is(run.code, 0, run.stderr);
  return { dir, archive, mail, state };
}

test('verify --sink naming a store no run of the ledger delivered into (a mistyped root) refuses with exit 2, naming both', async (t) => {
  const { dir, mail, state } = await archiveAndRun(t);
  const typo = join(dir, 'mial');
  await mkdir(typo);
  // Every message gone from the real store: a check of the wrong one must not pass for a store that holds it all.
  await rm(mail, { recursive: true });
  const wrong = await cli(['verify', '--state-dir', state, '--sink', `maildir:${typo}`]);
  t.is(wrong.code, 2, wrong.stdout + wrong.stderr);
  t.notRegex(wrong.stdout, /verified/);
  t.true(wrong.stderr.includes(`maildir:${typo}`), wrong.stderr);
  t.true(wrong.stderr.includes(`maildir:${mail}`), wrong.stderr);
  // With --export the same.
  const scoped = await cli(['verify', '--state-dir', state, '--sink', `maildir:${typo}`, '--export', EXPORT_ID]);
  t.is(scoped.code, 2, scoped.stdout + scoped.stderr);
});

test('verify --sink maildir:ROOT/ (a trailing slash, a doubled slash, a ./ part) is the store of the runs into maildir:ROOT: no message unexpected', async (t) => {
  const { dir, mail, state } = await archiveAndRun(t);
  for (const spec of [`maildir:${mail}/`, `maildir:${mail}//`, `maildir:${dir}/./mail`]) {
    const slash = await cli(['verify', '--state-dir', state, '--sink', spec]);
    t.is(slash.code, 0, `${spec}: ${slash.stdout}${slash.stderr}`);
    t.notRegex(slash.stdout, /UNEXPECTED|NOT CHECKED|another sink/);
    t.regex(slash.stdout, /verified: the ledger holds, and everything it records is there/);
  }
});

test('verify of a ledger with runs into two stores checks those of the --sink given and says plainly how many were not checked, never "everything it records is there"', async (t) => {
  const { dir, mail, state } = await archiveAndRun(t);
  const other = join(dir, 'other');
  const second = join(dir, 'second.zip');
  await generateSample(second, { events: 30, seed: 6, day: '2026-11-24' });
  const run = await cli(['run', second, '--sink', `maildir:${other}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects2'), '--max-rejected', '100%', '--quiet']);
  t.is(run.code, 0, run.stderr);

  const text = await cli(['verify', '--state-dir', state, '--sink', `maildir:${mail}`]);
  t.is(text.code, 0, text.stdout + text.stderr);
  t.notRegex(text.stdout, /everything it records is there/);
  t.regex(text.stdout, /NOT CHECKED: \d+ outcomes? of runs into other sinks: /);
  t.true(text.stdout.includes(`maildir:${other}`), text.stdout);
  t.regex(text.stdout, /verified in part/);
  t.notRegex(text.stdout, /UNEXPECTED|MISSING/);

  const json = await cli(['verify', '--state-dir', state, '--sink', `maildir:${mail}`, '--json']);
  const result = JSON.parse(json.stdout) as { store: { checked: number; notChecked: { sink: string; outcomes: number }[] } };
  t.true(result.store.checked > 0);
  t.is(result.store.notChecked.length, 1);
  t.is(result.store.notChecked[0]!.sink, `maildir:${other}`);
  t.true(result.store.notChecked[0]!.outcomes > 0);
  // The other store's own verify: the first run's outcomes are the ones not checked there.
  const otherSide = await cli(['verify', '--state-dir', state, '--sink', `maildir:${other}`]);
  t.is(otherSide.code, 0, otherSide.stdout + otherSide.stderr);
  t.true(otherSide.stdout.includes(`maildir:${mail} (`), otherSide.stdout);
});

test('verify of a sharded export takes every shard\'s state dir once: shards 1 and 3 of 3, or shard 1 twice, are refused (exit 2); all three find the message gone from shard 2\'s mailbox (exit 6)', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 120, seed: 7 });
  const mail = join(dir, 'mail');
  const states = [1, 2, 3].map((k) => join(dir, `s${k}`));
  for (const [i, state] of states.entries()) {
    const run = await cli(['run', archive, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--shard', `${i + 1}/3`, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--quiet']);
    t.is(run.code, 0, run.stderr);
  }
  const ofShard2 = (await readdir(mail)).find((m) => shardOfMailbox(m, 3) === 2);
  if (!ofShard2) throw new Error('no mailbox of shard 2');
  const cur = join(mail, ofShard2, '.INBOX.Pivot', 'cur');
  await unlink(join(cur, (await readdir(cur))[0]!));

  const some = await cli(['verify', '--state-dir', states[0]!, '--state-dir', states[2]!, '--sink', `maildir:${mail}`]);
  t.is(some.code, 2, some.stdout + some.stderr);
  t.notRegex(some.stdout, /verified/);
  t.regex(some.stderr, /shard 2\/3 missing/);
  const twice = await cli(['verify', '--state-dir', states[0]!, '--state-dir', states[0]!, '--sink', `maildir:${mail}`]);
  t.is(twice.code, 2, twice.stdout + twice.stderr);
  t.regex(twice.stderr, /shard 1\/3 is given twice/);
  const all = await cli(['verify', '--state-dir', states[0]!, '--state-dir', states[1]!, '--state-dir', states[2]!, '--sink', `maildir:${mail}`]);
  t.is(all.code, 6, all.stdout + all.stderr);
  t.regex(all.stdout, /MISSING /);
});

test('status --export of a ledger whose chain does not hold never headlines COMPLETE: NOT PROVEN, as report says, and --json account.proven false (exit 7)', async (t) => {
  const { dir, state } = await archiveAndRun(t);
  const before = await cli(['status', '--state-dir', state, '--export', EXPORT_ID, '--json']);
  t.is(before.code, 0, before.stdout + before.stderr);
  t.like(JSON.parse(before.stdout), { account: { complete: true, proven: true } });

  // One outcome line edited (its mailbox changed): the counters still add up, the chain breaks at the next line.
  const ledger = join(state, 'ledger.jsonl');
  const lines = (await readFile(ledger, 'utf8')).split('\n');
  const i = lines.findIndex((l) => l.includes('"record":"outcome"') && l.includes('"outcome":"delivered"')) + 5;
  const record = JSON.parse(lines[i]!) as { record: string; mailbox: string };
  t.is(record.record, 'outcome');
  record.mailbox = `x${record.mailbox}`;
  lines[i] = JSON.stringify(record);
  await writeFile(ledger, lines.join('\n'));

  const text = await cli(['status', '--state-dir', state, '--export', EXPORT_ID]);
  t.is(text.code, 7, text.stdout + text.stderr);
  t.regex(text.stdout, new RegExp(`^export ${EXPORT_ID}.*: NOT PROVEN$`, 'm'));
  t.notRegex(text.stdout, /: COMPLETE/);
  t.regex(text.stdout, /chain BROKEN/);
  const json = await cli(['status', '--state-dir', state, '--export', EXPORT_ID, '--json']);
  t.is(json.code, 7);
  const doc = JSON.parse(json.stdout) as { account: { complete: boolean; proven: boolean }; ledger: { chainIntact: boolean } };
  t.is(doc.account.proven, false);
  t.is(doc.ledger.chainIntact, false);
  // report of the same ledger: the same verdict, in its banner and on stdout.
  const out = join(dir, 'report.html');
  const report = await cli(['report', '--state-dir', state, '--export', EXPORT_ID, '--out', out]);
  t.is(report.code, 7, report.stdout + report.stderr);
  t.regex(report.stdout, /NOT PROVEN/);
  t.regex(await readFile(out, 'utf8'), /data-k="verdict">NOT PROVEN</);
});

/**
 * The state dir `from` copied to `to`, its ledger written again as runs before `?folder=` was part of
 * a Maildir sink's description (and before `version`) wrote it: start and summary records naming `maildir:ROOT`
 * only, outcomes without `version`, chained and sealed anew by the ledger's writer.
 */
async function asBeforeFolderInDescription(from: string, to: string, mail: string): Promise<void> {
  await cp(from, to, { recursive: true });
  const ledgerPath = join(to, 'ledger.jsonl');
  const lines = (await readFile(ledgerPath, 'utf8')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
  await rm(ledgerPath);
  await rm(join(to, 'checkpoint.note'), { force: true });
  const writer = await LedgerWriter.open(ledgerPath);
  for (const { seq: _, prev: __, version: ___, ...record } of lines) {
    if (record.record === 'start' || record.record === 'summary') record.sink = `maildir:${mail}`;
    if (record.record === 'checkpoint') await writer.seal(String(record.runId), undefined, join(to, 'checkpoint.note'));
    else await writer.append(JSON.stringify(record));
  }
  await writer.close();
}

test('a ledger written before ?folder= was part of the sink description (start records name maildir:ROOT) verifies against maildir:ROOT?folder=X by its outcomes\' locations, and --sink maildir:ROOT names the folder to give', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 60, seed: 5 });
  const mail = join(dir, 'mail');
  const state = join(dir, 'state');
  const folder = `maildir:${mail}?folder=.Pivot`;
  const run = await cli(['run', archive, '--sink', folder, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--quiet']);
  t.is(run.code, 0, run.stderr);
  const old = join(dir, 'old-state');
  await asBeforeFolderInDescription(state, old, mail);
  t.false((await readFile(join(old, 'ledger.jsonl'), 'utf8')).includes('?folder='), 'the rewritten ledger names the root only');
  for (const s of [state, old]) {
    const verified = await cli(['verify', '--state-dir', s, '--sink', folder, '--json']);
    t.is(verified.code, 0, `${s}: ${verified.stdout}${verified.stderr}`);
    const store = (JSON.parse(verified.stdout) as { store: { checked: number; intact: number; notChecked: unknown[]; unexpected: unknown[] } }).store;
    t.true(store.checked > 100, `${s}: ${store.checked} checked`);
    t.is(store.intact, store.checked);
    t.deepEqual(store.notChecked, []);
    t.deepEqual(store.unexpected, []);
  }
  // The default folder is not where those runs delivered: refused (exit 2), naming the sink to give.
  const defaultFolder = await cli(['verify', '--state-dir', old, '--sink', `maildir:${mail}`]);
  t.is(defaultFolder.code, 2, defaultFolder.stdout + defaultFolder.stderr);
  t.true(defaultFolder.stderr.includes(folder), defaultFolder.stderr);
});
