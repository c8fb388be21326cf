// The drop folder against a hostile hunt: a file name that is not UTF-8, an archive completed
// into one sink dropped again for another, a dangling symbolic link.
import test from 'ava';
import { mkdir, readdir, readFile, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { textName } from '../src/state/inbox.js';
import { cli, runRecords } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

const old = (minutes: number) => new Date(Date.now() - minutes * 60_000);

async function dropFolder(t: Parameters<typeof tempDir>[0]) {
  const dir = await tempDir(t);
  const inbox = join(dir, 'incoming');
  await mkdir(inbox);
  const state = join(dir, 'state');
  const args = (mail: string, ...more: string[]) => ['run', '--all-domains', '--inbox', inbox, '--state-dir', state, '--sink', `maildir:${join(dir, mail)}`, '--rejects', join(dir, 'r'), '--quiet', ...more];
  /** A sample export (of `seed`) beside the drop folder, and how to drop a copy of it in, settled. */
  const sample = async (seed: number) => {
    await generateSample(join(dir, 'export.zip'), { events: 60, seed, edgeCases: false });
    return async () => {
      await writeFile(join(inbox, 'export.zip'), await readFile(join(dir, 'export.zip')));
      await utimes(join(inbox, 'export.zip'), old(30), old(30));
    };
  };
  return { dir, inbox, state, args, sample };
}

test('textName: UTF-8 as it is, each byte that is no part of it as %XX', (t) => {
  t.is(textName(Buffer.from('Jahresbericht Müller 日本 🎉.zip')), 'Jahresbericht Müller 日本 🎉.zip');
  t.is(textName(Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x2e, 0x7a, 0x69, 0x70])), 'caf%E9.zip');
  // A byte order mark is kept; a surrogate, an overlong form and a sequence cut short are not UTF-8.
  t.is(textName(Buffer.from([0xef, 0xbb, 0xbf, 0x61])), '\ufeffa');
  t.is(textName(Buffer.from([0xed, 0xa0, 0x80, 0x61])), '%ED%A0%80a');
  t.is(textName(Buffer.from([0xc0, 0xaf, 0x61])), '%C0%AFa');
  t.is(textName(Buffer.from([0x61, 0xe2, 0x82])), 'a%E2%82');
});

const summaries = async (state: string) => (await runRecords(state)).filter((r) => r.record === 'summary');

test('--inbox: an archive whose name is not UTF-8 is renamed (its bad bytes as %XX, never over another file) and delivered', async (t) => {
  t.timeout(60_000);
  const { dir, inbox, state, args } = await dropFolder(t);
  // caf\xe9.zip, as a Latin-1 host names it; and another archive already named as the renaming would name it.
  const latin1 = Buffer.concat([Buffer.from(`${inbox}${sep}caf`), Buffer.from([0xe9]), Buffer.from('.zip')]);
  await generateSample(join(dir, 'latin1.zip'), { events: 40, seed: 1, day: '2026-11-22', edgeCases: false });
  await writeFile(latin1, await readFile(join(dir, 'latin1.zip')));
  await utimes(latin1, old(30), old(30));
  await generateSample(join(inbox, 'caf%E9.zip'), { events: 40, seed: 2, day: '2026-11-23', edgeCases: false });
  await utimes(join(inbox, 'caf%E9.zip'), old(20), old(20));
  const result = await cli(args('mail'));
  t.is(result.code, 0, result.stderr);
  t.regex(result.log, /warn caf%E9\.zip: its name is not UTF-8 .*: renamed caf%E9-1\.zip, and read/);
  t.deepEqual((await readdir(join(inbox, 'done'))).sort(), ['caf%E9-1.zip', 'caf%E9.zip']);
  t.deepEqual((await summaries(state)).map((s) => s.exportId).sort(), ['acme-2026-11-22', 'acme-2026-11-23']);
  t.deepEqual(await readdir(inbox), ['done'], 'nothing left behind');
});

test('--inbox: an archive completed into one sink and dropped again for another sink is delivered there whole; into the same sink it is already completed', async (t) => {
  t.timeout(90_000);
  const { dir, inbox, state, args, sample } = await dropFolder(t);
  const drop = await sample(3);
  await drop();
  const first = await cli(args('mail-a'));
  t.is(first.code, 0, first.stderr);
  const inA = (await readMaildir(join(dir, 'mail-a'))).length;
  t.true(inA > 0);
  // The record says what it was delivered under, as the run's start record does.
  const [record] = await readdir(join(state, 'completed'));
  const recorded = JSON.parse(await readFile(join(state, 'completed', record!), 'utf8')) as Record<string, unknown>;
  const start = (await runRecords(state)).find((r) => r.record === 'start')!;
  t.like(recorded, { sha256: start.sha256, sink: start.sink, options: start.options });

  await drop();
  const other = await cli(args('mail-b', '--json'));
  t.is(other.code, 0, other.stderr);
  t.like(JSON.parse(other.stdout), { record: 'summary', sink: `maildir:${join(dir, 'mail-b')}`, failed: 0 });
  t.is((await readMaildir(join(dir, 'mail-b'))).length, inA, 'every item in the other sink');

  await drop();
  const same = await cli(args('mail-a', '--json'));
  t.is(same.code, 0, same.stderr);
  t.like(JSON.parse(same.stdout), { record: 'already-completed' });
  t.deepEqual(await readdir(inbox), ['done']);
});

test('--inbox: an archive completed, then dropped again with the user map changed in place, is read again', async (t) => {
  t.timeout(90_000);
  const { dir, args, sample } = await dropFolder(t);
  const map = join(dir, 'map.csv');
  await writeFile(map, 'user1@acme.example,archive-onw@acme.example\n');
  const drop = await sample(4);
  for (const run of ['typo', 'fixed']) {
    if (run === 'fixed') await writeFile(map, 'user1@acme.example,archive-one@acme.example\n');
    await drop();
    const result = await cli(args('mail', '--user-map', map, '--json'));
    t.is(result.code, 0, `${run}: ${result.stderr}`);
    t.like(JSON.parse(result.stdout), { record: 'summary' }, run);
  }
  t.true((await readMaildir(join(dir, 'mail'))).some((m) => m.mailbox === 'archive-one@acme.example'), 'the corrected map delivered');
});

test('--inbox: a refused archive that cannot be moved to failed/ is said to be left in place, never "moved"', async (t) => {
  t.timeout(60_000);
  const { inbox, state, args } = await dropFolder(t);
  await writeFile(join(inbox, 'broken.zip'), 'not a zip at all');
  await utimes(join(inbox, 'broken.zip'), old(30), old(30));
  // failed/ cannot be made: a file stands at its name.
  await writeFile(join(inbox, 'failed'), 'in the way');
  const result = await cli(args('mail'));
  t.is(result.code, 2, result.stderr);
  t.regex(result.log, /broken\.zip: cannot be moved to .*failed/);
  t.regex(result.log, /broken\.zip: E_ARCHIVE_UNREADABLE: .*; not moved to failed\/ \(said above\)/);
  t.notRegex(result.log, /; moved to failed\//);
  t.deepEqual((await readdir(inbox)).sort(), ['broken.zip', 'failed']);
  t.like((await runRecords(state)).find((r) => r.record === 'failure'), { code: 'E_ARCHIVE_UNREADABLE', exitCode: 2 });
  // Once failed/ can be made, the next run moves it there and says where.
  await rm(join(inbox, 'failed'));
  const again = await cli(args('mail'));
  t.is(again.code, 2, again.stderr);
  t.regex(again.log, /broken\.zip: E_ARCHIVE_UNREADABLE: .*; moved to failed\/broken\.zip/);
  t.deepEqual((await readdir(join(inbox, 'failed'))).sort(), ['broken.zip', 'broken.zip.reason.txt']);
});

test('--inbox: a completion recorded by an earlier version (by the sha256 alone) still counts for the sink and options its run log shows, not for another sink', async (t) => {
  t.timeout(90_000);
  const { dir, state, args, sample } = await dropFolder(t);
  const drop = await sample(5);
  await drop();
  t.is((await cli(args('mail-a'))).code, 0);
  // As an earlier version wrote it: completed/<sha256>.json, with no sink nor options.
  const [record] = await readdir(join(state, 'completed'));
  const { archive, sha256, exportId, completedAt } = JSON.parse(await readFile(join(state, 'completed', record!), 'utf8')) as Record<string, unknown>;
  await rm(join(state, 'completed', record!));
  await writeFile(join(state, 'completed', `${sha256 as string}.json`), JSON.stringify({ archive, sha256, exportId, completedAt }) + '\n');

  await drop();
  const same = await cli(args('mail-a', '--json'));
  t.is(same.code, 0, same.stderr);
  t.like(JSON.parse(same.stdout), { record: 'already-completed' });
  t.is((await readdir(join(state, 'completed'))).length, 2, 'recorded anew under its sink and options');

  await drop();
  const other = await cli(args('mail-b', '--json'));
  t.is(other.code, 0, other.stderr);
  t.like(JSON.parse(other.stdout), { record: 'summary', skipped: 0 });
  t.is((await readMaildir(join(dir, 'mail-b'))).length, (await readMaildir(join(dir, 'mail-a'))).length);
});

test('--inbox: a long name that is not UTF-8 (each bad byte as %XX past 255 bytes) is renamed cut short, its .zip kept, and delivered', async (t) => {
  t.timeout(60_000);
  const { dir, inbox, state, args } = await dropFolder(t);
  // 200 Latin-1 bytes: 204 bytes as the host names it, 604 as %XX, past what a file system takes (255).
  const raw = Buffer.concat([Buffer.from(`${inbox}${sep}`), Buffer.alloc(200, 0xe9), Buffer.from('.zip')]);
  await generateSample(join(dir, 'long.zip'), { events: 40, seed: 3, edgeCases: false });
  await writeFile(raw, await readFile(join(dir, 'long.zip')));
  await utimes(raw, old(30), old(30));
  const result = await cli(args('mail'));
  t.is(result.code, 0, result.stderr);
  const [renamed, ...more] = await readdir(join(inbox, 'done'));
  t.deepEqual(more, []);
  t.true(Buffer.byteLength(renamed!) <= 255, renamed);
  t.regex(renamed!, /^(%E9)+~[0-9a-f]{12}\.zip$/);
  t.regex(result.log, new RegExp(`its name is not UTF-8 .*: renamed ${renamed!.replace('.', '\\.')}, and read`));
  t.is((await summaries(state)).length, 1);
  t.true((await readMaildir(join(dir, 'mail'))).length > 0);
  t.deepEqual(await readdir(inbox), ['done'], 'nothing left behind');
});

test('--inbox: a dangling symbolic link is failed as one, recorded and moved to failed/', async (t) => {
  t.timeout(60_000);
  const { dir, inbox, state, args } = await dropFolder(t);
  await symlink(join(dir, 'gone.zip'), join(inbox, 'link.zip'));
  const result = await cli(args('mail'));
  t.is(result.code, 2, result.stderr);
  t.regex(result.stdout, /link\.zip: failed-archive \(E_ARCHIVE_UNREADABLE: .*link\.zip: a symbolic link to a missing file \(.*gone\.zip\)\)/);
  t.deepEqual((await readdir(join(inbox, 'failed'))).sort(), ['link.zip', 'link.zip.reason.txt']);
  t.regex(await readFile(join(inbox, 'failed', 'link.zip.reason.txt'), 'utf8'), /a symbolic link to a missing file/);
  t.like((await runRecords(state)).find((r) => r.record === 'failure'), { code: 'E_ARCHIVE_UNREADABLE', exitCode: 2 });
});

test('--inbox: a completion recorded by an earlier version that no run log explains is not trusted: the archive is read again, the sink skipping what it holds', async (t) => {
  t.timeout(60_000);
  const { inbox, state, args } = await dropFolder(t);
  await generateSample(join(inbox, 'export.zip'), { events: 40, seed: 6, edgeCases: false });
  await utimes(join(inbox, 'export.zip'), old(30), old(30));
  t.is((await cli(args('mail-a', '--keep'))).code, 0);
  const [record] = await readdir(join(state, 'completed'));
  await rename(join(state, 'completed', record!), join(state, 'completed', `${record!.split('.')[0]!}.json`));
  await rm(join(state, 'runs'), { recursive: true });
  const again = await cli(args('mail-a', '--json'));
  t.is(again.code, 0, again.stderr);
  // Read again: the sink skips what it holds.
  t.like(JSON.parse(again.stdout), { record: 'summary', delivered: 0, failed: 0 });
  t.true((JSON.parse(again.stdout) as { skipped: number }).skipped > 0);
  t.deepEqual(await readdir(inbox), ['done']);
});
