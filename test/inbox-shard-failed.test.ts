// A poison archive in a drop folder read by shards: each shard fails it and leaves it in place.
// Before, the first shard moved it to failed/ and the other passed over it with a warning, exit 0,
// no failure in its state dir (hunt helper-64, F3).
import test from 'ava';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

test('the drop folder with --shard: an archive refused as a whole is failed by every shard and left in place, not moved to failed/', async (t) => {
  const dir = await tempDir(t);
  const inbox = join(dir, 'inbox');
  await mkdir(inbox);
  await generateSample(join(inbox, 'a-good.zip'), { events: 100, seed: 5 });
  await writeFile(join(inbox, 'b-poison.zip'), 'not a zip at all');
  for (const k of [1, 2]) {
    const r = await cli(['run', '--inbox', inbox, '--settle', '0', '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--quiet', '--json', '--shard', `${k}/2`, '--state-dir', join(dir, `state-${k}`)]);
    t.is(r.code, 2, `shard ${k}/2: ${r.log}`);
    t.regex(r.log, /b-poison\.zip: E_ARCHIVE_\w+: .*left in place: every shard reads it \(--shard\)/);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { record?: string; archive?: string; outcome?: string });
    t.like(lines.find((l) => l.archive?.endsWith('b-poison.zip')), { record: 'failure', outcome: 'failed-archive' });
    t.deepEqual((await readdir(inbox)).sort(), ['a-good.zip', 'b-poison.zip'], `both still there after shard ${k}/2`);
  }
});

test('the drop folder with --shard and --dry-run: a refused archive is said to be left in place, as a real run of a shard leaves it (not "a run would move it")', async (t) => {
  const dir = await tempDir(t);
  const inbox = join(dir, 'inbox');
  await mkdir(inbox);
  await writeFile(join(inbox, 'b-poison.zip'), 'not a zip at all');
  const r = await cli(['run', '--inbox', inbox, '--settle', '0', '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--quiet', '--dry-run', '--shard', '1/2', '--state-dir', join(dir, 'state')]);
  t.not(r.code, 0, r.log);
  t.regex(r.log, /b-poison\.zip: E_ARCHIVE_\w+: .*left in place: every shard reads it \(--shard\)/);
  t.notRegex(r.log, /a run would move it to failed/);
  t.deepEqual(await readdir(inbox), ['b-poison.zip']);
});
