import test, { type ExecutionContext } from 'ava';
import { copyFile, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { shardSetProblems } from '../src/ledger/shards.js';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

type Json = Record<string, unknown>;
const EXPORT_ID = 'acme-2026-11-23';

/** A state dir after two whole runs of one export (the second delivers nothing new), with the second run's checkpoint note kept aside. */
async function twoRuns(t: ExecutionContext) {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 200, seed: 7 });
  const state = join(dir, 'state');
  const mail = join(dir, 'mail');
  const args = ['run', archive, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--quiet'];
  const ledger = join(state, 'ledger.jsonl');
  const note = join(state, 'checkpoint.note');
  t.is((await cli(args)).code, 0);
  await copyFile(note, join(dir, 'first.note'));
  t.is((await cli(args)).code, 0);
  await copyFile(note, join(dir, 'second.note'));
  const verify = async (...extra: string[]) => {
    const r = await cli(['verify', '--state-dir', state, '--sink', `maildir:${mail}`, '--json', ...extra]);
    let result: Json = {};
    try {
      result = JSON.parse(r.stdout) as Json;
    } catch {
      // reported by the assertions on the code
    }
    return { ...r, ledger: (result.ledger ?? {}) as { chainIntact?: boolean; problems?: string[]; notes?: string[] } };
  };
  /** The ledger without its last line (the second run's checkpoint). */
  const dropLastCheckpoint = async () => {
    const lines = (await readFile(ledger, 'utf8')).trimEnd().split('\n');
    t.is((JSON.parse(lines.at(-1)!) as Json).record, 'checkpoint');
    t.is((JSON.parse(lines.at(-2)!) as Json).record, 'summary');
    await writeFile(ledger, lines.slice(0, -1).join('\n') + '\n');
  };
  return { dir, state, args, note, verify, dropLastCheckpoint };
}

test('a run killed between its summary and its checkpoint: once a later run has sealed its records, verify and status --export hold (exit 0), and say the run was sealed by the next checkpoint', async (t) => {
  t.timeout(120_000);
  const { dir, state, args, note, verify, dropLastCheckpoint } = await twoRuns(t);
  // What SIGKILL in that instant leaves: the summary the last line, the note still the first run's.
  await dropLastCheckpoint();
  await copyFile(join(dir, 'first.note'), note);
  t.is((await cli(args)).code, 0, 'the re-run');
  const checked = await verify();
  t.is(checked.code, 0, checked.stdout + checked.stderr);
  t.true(checked.ledger.chainIntact);
  t.deepEqual(checked.ledger.problems, []);
  t.true((checked.ledger.notes ?? []).some((n) => /ended without its checkpoint .*sealed by the next checkpoint, line \d+/.test(n)), JSON.stringify(checked.ledger));
  const status = await cli(['status', '--state-dir', state, '--export', EXPORT_ID]);
  t.is(status.code, 0, status.stdout + status.stderr);
  t.regex(status.stdout, /COMPLETE/);
  t.notRegex(status.stdout, /NOT PROVEN/);
});

test('the last checkpoint removed before a later run appended is still found: by STATE/checkpoint.note until that run, by a copy kept off the host after it', async (t) => {
  t.timeout(120_000);
  const { dir, args, verify, dropLastCheckpoint } = await twoRuns(t);
  await dropLastCheckpoint();
  // checkpoint.note still names the checkpoint removed.
  const before = await verify();
  t.is(before.code, 7, before.stdout);
  t.true((before.ledger.problems ?? []).some((p) => /no checkpoint at record \d+ any more/.test(p)), JSON.stringify(before.ledger));
  t.is((await cli(args)).code, 0, 'a later run appends and seals');
  // The note kept off the host after the second run names the checkpoint the ledger no longer has.
  const after = await verify('--checkpoint', join(dir, 'second.note'));
  t.is(after.code, 7, after.stdout);
  t.true((after.ledger.problems ?? []).some((p) => /second\.note: the ledger has no checkpoint at record \d+ any more/.test(p)), JSON.stringify(after.ledger));
});

test('checkpoint.note missing after one run stays a failure (exit 7: a ledger cut back to its first run looks the same), and says what a kill before the note would mean', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 50, seed: 3, edgeCases: false });
  const state = join(dir, 'state');
  t.is((await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--quiet'])).code, 0);
  await unlink(join(state, 'checkpoint.note'));
  const r = await cli(['verify', '--state-dir', state]);
  t.is(r.code, 7);
  t.regex(r.stdout, /checkpoint\.note is missing .*killed before it wrote the note.*the next run writes the note/);
});

test('state dirs of shards of different N are named each with its own K/N, not as one shard given twice', (t) => {
  const problems = shardSetProblems([
    { path: 'sA', shard: '1/2' },
    { path: 'sB', shard: '1/3' },
  ]);
  t.false(problems.some((p) => /given twice/.test(p)), problems.join('\n'));
  t.true(problems.some((p) => /shards of different N given: sA is 1\/2, sB is 1\/3/.test(p)), problems.join('\n'));
  t.deepEqual(shardSetProblems([
    { path: 'sA', shard: '1/3' },
    { path: 'sB', shard: '1/3' },
  ]), ['shard 1/3 is given twice: sA and sB', 'shards 2/3, 3/3 missing: give every shard\'s --state-dir']);
});
