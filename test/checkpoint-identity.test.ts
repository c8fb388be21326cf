// A checkpoint resumes only the archive and the user map that made it: the same export delivered
// again with users.json corrected, or a user map corrected in place, is read from the start.
import test, { type ExecutionContext } from 'ava';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { writeArchive, MANIFEST } from './helpers/archive.js';
import { cli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';
import { STOPPER_PLUGIN } from './helpers/stopper.js';

const pairsIn = async (out: string) => (await readMaildir(out)).map((m) => `${m.mailbox} ${m.itemId}`).sort();

/** A 400-event sample archive and the stopper plugin (STOP_AT) in a temporary dir. */
async function sampleWithStopper(t: ExecutionContext) {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 400, seed: 5, edgeCases: false });
  const stopper = join(dir, 'stopper.mjs');
  await writeFile(stopper, STOPPER_PLUGIN);
  return { dir, archive, stopper };
}

const users = (omarsEmail: string) => [
  { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
  { id: 'u_2', displayName: 'Omar', email: omarsEmail },
];
const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2'] }];
const events = Array.from({ length: 3000 }, (_, i) => ({ id: `m_${i}`, conversationId: 'c_1', type: 'message', sentAt: `2026-11-23T${String(9 + Math.floor(i / 3600)).padStart(2, '0')}:${String(Math.floor(i / 60) % 60).padStart(2, '0')}:${String(i % 60).padStart(2, '0')}Z`, senderId: 'u_1', text: `m ${i}` }));

test('the same export delivered again with users.json corrected (same messages files) after a stopped run is read from the start: every item reaches the mailbox the correction adds', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const stopper = join(dir, 'stopper.mjs');
  await writeFile(stopper, STOPPER_PLUGIN);
  const before = await writeArchive(join(dir, 'before.zip'), { manifest: MANIFEST, users: users(''), conversations, messages: { '0.json': events } });
  const after = await writeArchive(join(dir, 'after.zip'), { manifest: MANIFEST, users: users('omar@acme.example'), conversations, messages: { '0.json': events } });
  const common = ['--domain', 'acme.example', '--plugin', stopper, '--state-dir', join(dir, 'state'), '--rejects', join(dir, 'r')];
  const out = join(dir, 'mail');
  const stopped = await cli(['run', before, '--sink', `maildir:${out}`, ...common], { env: { STOP_AT: '120' } });
  t.is(stopped.code, 4, stopped.stderr);
  const again = await cli(['run', after, '--sink', `maildir:${out}`, ...common, '--json']);
  t.is(again.code, 0, again.stderr);
  t.is((JSON.parse(again.stdout) as { itemsDoneEarlier: number }).itemsDoneEarlier, 0, 'no checkpoint of the other archive resumed');
  const pairs = await pairsIn(out);
  t.is(pairs.filter((p) => p.startsWith('omar@acme.example ')).length, 3000, 'every item in the mailbox the correction adds');
  // Jane's copies from the stopped run name only her as recipient: the corrected ones are stored beside them (README, a corrected re-delivery).
  t.is(new Set(pairs.filter((p) => p.startsWith('jane@acme.example '))).size, 3000);
});

test('a user map corrected in place (the same path) after a stopped run is read from the start: every item reaches the mailbox the correction names', async (t) => {
  t.timeout(120_000);
  const { dir, archive, stopper } = await sampleWithStopper(t);
  const map = join(dir, 'map.csv');
  const reference = join(dir, 'reference');
  await writeFile(map, 'user1@acme.example,archive-one@acme.example\n');
  t.is((await cli(['run', archive, '--domain', 'acme.example', '--user-map', map, '--sink', `maildir:${reference}`, '--rejects', join(dir, 'r0')])).code, 0);
  // The first run's map has a typo; the operator corrects the same file.
  await writeFile(map, 'user1@acme.example,archive-onw@acme.example\n');
  const out = join(dir, 'mail');
  const common = ['--domain', 'acme.example', '--user-map', map, '--plugin', stopper, '--state-dir', join(dir, 'state'), '--rejects', join(dir, 'r'), '--sink', `maildir:${out}`];
  t.is((await cli(['run', archive, ...common], { env: { STOP_AT: '150' } })).code, 4);
  await writeFile(map, 'user1@acme.example,archive-one@acme.example\n');
  const fixed = await cli(['run', archive, ...common]);
  t.is(fixed.code, 0, fixed.stderr);
  t.regex(fixed.log, /checkpoint of acme-2026-11-23 was made with other options: read from the start/);
  const wanted = (await pairsIn(reference)).filter((p) => p.startsWith('archive-one@'));
  t.true(wanted.length > 0);
  const got = new Set(await pairsIn(out));
  t.deepEqual(wanted.filter((p) => !got.has(p)), [], 'every item of the corrected mailbox');
});

test('a plugin file changed in place after a stopped run (a fix) makes the next run read from the start; unchanged, it resumes', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 2000, seed: 6, edgeCases: false });
  const stopper = join(dir, 'stopper.mjs');
  await writeFile(stopper, STOPPER_PLUGIN);
  const common = ['--domain', 'acme.example', '--plugin', stopper, '--state-dir', join(dir, 'state'), '--rejects', join(dir, 'r'), '--sink', `maildir:${join(dir, 'mail')}`, '--json'];
  t.is((await cli(['run', archive, ...common], { env: { STOP_AT: '300' } })).code, 4);
  const resumed = await cli(['run', archive, ...common], { env: { STOP_AT: '300' } });
  t.is(resumed.code, 4, 'the same plugin resumes (and stops again 300 items later)');
  t.true((JSON.parse(resumed.stdout) as { itemsDoneEarlier: number }).itemsDoneEarlier > 0);
  await writeFile(stopper, `${STOPPER_PLUGIN}// fixed\n`);
  const fixed = await cli(['run', archive, ...common]);
  t.is(fixed.code, 0, fixed.stderr);
  t.is((JSON.parse(fixed.stdout) as { itemsDoneEarlier: number }).itemsDoneEarlier, 0);
  t.regex(fixed.log, /was made with other options: read from the start/);
});

test('a stopped run resumed into another Maildir folder (?folder=) is read from the start: every item reaches the new folder; a run into that folder again delivers nothing twice', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const stopper = join(dir, 'stopper.mjs');
  await writeFile(stopper, STOPPER_PLUGIN);
  const archive = await writeArchive(join(dir, 'export.zip'), { manifest: MANIFEST, users: users('omar@acme.example'), conversations, messages: { '0.json': events } });
  const out = join(dir, 'mail');
  const common = ['--domain', 'acme.example', '--plugin', stopper, '--state-dir', join(dir, 'state'), '--rejects', join(dir, 'r'), '--json'];
  t.is((await cli(['run', archive, '--sink', `maildir:${out}`, ...common], { env: { STOP_AT: '120' } })).code, 4);
  const moved = await cli(['run', archive, '--sink', `maildir:${out}?folder=.Pivot`, ...common]);
  t.is(moved.code, 0, moved.stderr);
  t.is((JSON.parse(moved.stdout) as { itemsDoneEarlier: number; delivered: number }).itemsDoneEarlier, 0, 'the first folder\'s checkpoint is not resumed');
  t.is((await readMaildir(out, '.Pivot')).length, 6000, 'both mailboxes hold every item in the new folder');
  // Into the same folder again: nothing delivered twice.
  const again = await cli(['run', archive, '--sink', `maildir:${out}?folder=.Pivot`, ...common]);
  t.is(again.code, 0, again.stderr);
  t.is((JSON.parse(again.stdout) as { delivered: number }).delivered, 0);
  t.is((await readMaildir(out, '.Pivot')).length, 6000);
});

test('a shard\'s checkpoint is not resumed by another shard, even once the state dir has lost its shard file (restored from a backup without it): that shard reads from the start, and the two shards together deliver everything (was: 19,782 of 71,185 messages missing, both exit 0)', async (t) => {
  t.timeout(180_000);
  const { dir, archive, stopper } = await sampleWithStopper(t);
  const reference = join(dir, 'reference');
  t.is((await cli(['run', archive, '--domain', 'acme.example', '--plugin', stopper, '--sink', `maildir:${reference}`, '--rejects', join(dir, 'r0')])).code, 0);
  const out = join(dir, 'mail');
  const state = join(dir, 'state');
  const common = ['--domain', 'acme.example', '--plugin', stopper, '--sink', `maildir:${out}`, '--rejects', join(dir, 'r')];
  t.is((await cli(['run', archive, ...common, '--state-dir', state, '--shard', '1/2'], { env: { STOP_AT: '150' } })).code, 4);
  await rm(join(state, 'shard'));
  const second = await cli(['run', archive, ...common, '--state-dir', state, '--shard', '2/2', '--json']);
  t.is(second.code, 0, second.stderr);
  t.is((JSON.parse(second.stdout) as { itemsDoneEarlier: number }).itemsDoneEarlier, 0, 'shard 1/2\'s checkpoint not resumed');
  t.is((await cli(['run', archive, ...common, '--state-dir', join(dir, 'state-1'), '--shard', '1/2'])).code, 0);
  t.deepEqual(await pairsIn(out), await pairsIn(reference));
});
