// The folders a checkpoint keeps (src/state/checkpoint.ts; Sink.foldersToLook and resumeFolders):
// what the runs it skips wrote to, so the run that resumes looks at them. Here the checkpoint on
// its own, with a sink's side played by the test; the whole run: test/kill.test.ts.
import test from 'ava';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256Hex } from '../src/hash.js';
import type { EventPosition } from '../src/model.js';
import type { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { Checkpoint, type CheckpointFolders } from '../src/state/checkpoint.js';
import type { StatusLog } from '../src/status-log.js';
import { tempDir } from './helpers/tmp.js';

const archive = { manifest: { exportId: 'acme-2026-11-23' }, sha256: 'ab'.repeat(32) } as unknown as PivotExportArchive;
const statusLog = { flush: async () => undefined } as unknown as StatusLog;
const OPTIONS = { sink: 'maildir:/srv/mail' };
const at = (index: number): EventPosition => ({ file: 0, index });
const checkpointPath = (state: string) => join(state, 'checkpoints', `${sha256Hex(`${archive.manifest.exportId}\n${archive.sha256}`)}.json`);
/** Past the time a checkpoint waits between saves. */
const afterSaveInterval = () => new Promise((r) => setTimeout(r, 1100));

/** A sink's side that keeps `folders` and records what it was given. */
function sinkSide(folders: Record<string, unknown> = {}, accepts = true) {
  const given: Record<string, unknown>[] = [];
  const side: CheckpointFolders = { resume: (f) => (given.push(f), accepts), current: () => folders };
  return { side, given };
}

test('checkpoint: saved with the sink\'s folders; the run that resumes it gives them back to the sink before anything else', async (t) => {
  const state = await tempDir(t);
  const first = await Checkpoint.load(state, archive, statusLog, OPTIONS, true, sinkSide({ 'jane@acme.example': 17 }).side);
  first.settled(at(4), true);
  await first.finish(false);
  const saved = JSON.parse(await readFile(checkpointPath(state), 'utf8')) as { resumeAt: EventPosition; folders: unknown };
  t.deepEqual(saved.resumeAt, at(4));
  t.deepEqual(saved.folders, { 'jane@acme.example': 17 });

  const { side, given } = sinkSide();
  const resumed = await Checkpoint.load(state, archive, statusLog, OPTIONS, true, side);
  t.deepEqual(resumed.resumeAt, at(4));
  t.is(resumed.discarded, undefined);
  t.deepEqual(given, [{ 'jane@acme.example': 17 }]);
});

test('checkpoint: one without folders (an earlier version\'s), or with folders the sink refuses, is set aside: the run reads from the start', async (t) => {
  const state = await tempDir(t);
  await mkdir(join(state, 'checkpoints'), { recursive: true });
  const write = (extra: object) => writeFile(checkpointPath(state), JSON.stringify({ resumeAt: at(9), addedByPlugins: 0, options: JSON.stringify(OPTIONS), ...extra }));

  await write({});
  const old = await Checkpoint.load(state, archive, statusLog, OPTIONS, true, sinkSide().side);
  t.is(old.resumeAt, null);
  t.regex(String(old.discarded), /keeps none of the folders its runs wrote to/);
  // A sink that keeps no folders (none to look at) resumes it as before.
  const none: CheckpointFolders = { resume: () => false, current: () => undefined };
  t.deepEqual((await Checkpoint.load(state, archive, statusLog, OPTIONS, true, none)).resumeAt, at(9));

  await write({ folders: { 'jane@acme.example': 'not an identity' } });
  const refused = await Checkpoint.load(state, archive, statusLog, OPTIONS, true, sinkSide({}, false).side);
  t.is(refused.resumeAt, null);
  t.regex(String(refused.discarded), /keeps folders the sink cannot take/);
  await write({ folders: ['not', 'by', 'mailbox'] });
  const { side, given } = sinkSide();
  t.is((await Checkpoint.load(state, archive, statusLog, OPTIONS, true, side)).resumeAt, null);
  t.deepEqual(given, [], 'not handed to the sink at all');
});

test('checkpoint: storage lost, told when the write failed, removes it at once and no later settle saves one (a save then could leave the lost folder out, which the sink forgot)', async (t) => {
  const state = await tempDir(t);
  const checkpoint = await Checkpoint.load(state, archive, statusLog, OPTIONS, true, sinkSide({ 'jane@acme.example': 17 }).side);
  await afterSaveInterval();
  checkpoint.settled(at(3), true);
  // Saved in the background: wait for the file.
  while (!(await readdir(join(state, 'checkpoints'))).some((n) => n.endsWith('.json'))) await new Promise((r) => setTimeout(r, 10));
  checkpoint.storageLost();
  // Earlier items go on settling in stream order, past the save interval.
  await afterSaveInterval();
  checkpoint.settled(at(5), true);
  checkpoint.settled(at(6), true);
  await checkpoint.finish(false);
  t.deepEqual((await readdir(join(state, 'checkpoints'))).filter((n) => n.endsWith('.json')), []);
});

test('checkpoint: folders that have not changed (the same object from the sink) are not serialised again at each save', async (t) => {
  const state = await tempDir(t);
  let serialised = 0;
  const folders = { toJSON: () => (serialised++, { 'jane@acme.example': 17 }) };
  const checkpoint = await Checkpoint.load(state, archive, statusLog, OPTIONS, true, { resume: () => true, current: () => folders });
  for (const index of [3, 5]) {
    await afterSaveInterval();
    checkpoint.settled(at(index), true);
  }
  await checkpoint.finish(false);
  const saved = JSON.parse(await readFile(checkpointPath(state), 'utf8')) as { resumeAt: EventPosition; folders: unknown };
  t.deepEqual(saved.resumeAt, at(5));
  t.deepEqual(saved.folders, { 'jane@acme.example': 17 });
  t.is(serialised, 1, 'three saves, one serialisation');
});
