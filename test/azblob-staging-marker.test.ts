// What an import from Blob staging makes of an export's `staging.run` record, against a real
// Azurite, where the record says more than the index and batches beside it: a record marked
// finished whose index is gone (a clean-up that deleted the folder but the record, or the index of
// a corrected re-staging and its new batches) means the export is not whole, and the import fails
// naming the export and the index (before, it exited 0, with nothing imported or with the older
// index's batches called the whole export); a record that cannot be read (moved to the Archive
// tier by a lifecycle rule, or garbage) fails its export as part-way after the rest was imported
// (before, a record storage refused stopped the import at the listing, the other exports with it).
import test from 'ava';
import { join } from 'node:path';
import { readBatch } from '../src/formats/staged-batch/index.js';
import { generateSample } from '../src/sample/generate.js';
import { asStagedByOlderVersion, blobNamesIn, startAzuriteWithSample, type Azurite, type AzuriteWithSample } from './helpers/azurite.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

const EXPORT_ID = 'acme-2026-11-23';
/** An export of the day before: its folder sorts before EXPORT_ID's. */
const EARLIER_ID = 'acme-2026-11-22';

let azurite: Azurite;
let env: Record<string, string>;
let workDir: string;
let archive: string;
/** The same export id, other content: a corrected re-delivery of the day. */
let corrected: string;
let earlier: string;

let fixture: AzuriteWithSample | undefined;
test.before(async () => {
  fixture = await startAzuriteWithSample({ events: 300, seed: 61 });
  ({ azurite, env, workDir, archive } = fixture);
  corrected = join(workDir, 'corrected.zip');
  await generateSample(corrected, { events: 300, messageFiles: 2, seed: 62 });
  earlier = join(workDir, 'earlier.zip');
  await generateSample(earlier, { events: 300, messageFiles: 2, seed: 63, day: '2026-11-22' });
});
test.after.always(() => fixture?.dispose());

const container = () => azurite.container('staging');
const blobNames = (prefix: string, pattern?: RegExp) => blobNamesIn(container(), prefix, pattern);
const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

async function stage(prefix: string, from: string): Promise<void> {
  const run = await cli(['run', from, '--sink', `azblob://staging/${prefix}?messages=20&linger=50`, '--rejects', join(workDir, `rejects-${prefix}`), '--quiet'], { env });
  if (run.code !== 0) throw new Error(`staging exit ${run.code}: ${run.log}`);
}

interface Summary {
  delivered: number;
  skipped: number;
  failed: number;
  batchesImported: number;
  batchesFailed: number;
  exportsWithoutIndex: number;
  exportsImportedWhole: string[];
  exportsNotWhole: string[];
  error?: { code: string; message: string };
}

async function importInto(from: string, dir: string, options: string[] = []): Promise<{ code: number | null; log: string; summary: Summary; statusLines: Record<string, unknown>[] }> {
  const status = join(dir, 'import.jsonl');
  const imp = await cli(['import', '--from', `azblob://staging/${from}`, '--sink', `maildir:${join(dir, 'mail')}`, '--state-dir', join(dir, 'state'), '--status-log', status, '--json', ...options], { env });
  return { code: imp.code, log: imp.log, summary: JSON.parse(imp.stdout) as Summary, statusLines: (await readStatusLog(status)).lines };
}

async function complete(dir: string, exportId = EXPORT_ID): Promise<boolean> {
  const status = await cli(['status', '--state-dir', join(dir, 'state'), '--export', exportId, '--json']);
  return (JSON.parse(status.stdout) as { account: { complete: boolean } }).account.complete;
}

/** The (mailbox, Message-ID) entries staged in the batches under `prefix`, counted from their manifests. */
async function messagesIn(prefix: string): Promise<number> {
  let n = 0;
  for (const name of await blobNames(prefix, /\.zip$/)) n += (await readBatch(name, await container().getBlockBlobClient(name).downloadToBuffer(), 1e7)).manifest.entries.length;
  return n;
}

/** The name of the index that the export's finished `staging.run` record names. */
async function recordedIndex(prefix: string): Promise<string> {
  const record = JSON.parse((await container().getBlockBlobClient(`${prefix}/${EXPORT_ID}/staging.run`).downloadToBuffer()).toString('utf8')) as { finishedAt?: string; index?: string };
  if (!record.finishedAt || !record.index) throw new Error(`the staging.run of ${prefix} is not marked finished: ${JSON.stringify(record)}`);
  return record.index;
}

test.serial("a finished staging.run left alone in the export's folder (its index and batches deleted): the import fails naming the export and the index it names (E_STAGING_INCOMPLETE, exit 1), not an empty success; with --export too", async (t) => {
  t.timeout(300_000);
  await stage('cleaned', archive);
  const index = await recordedIndex('cleaned');
  t.true((await blobNames('cleaned')).includes(index), 'the record names the index the run wrote');
  // Someone cleaned the folder up, but not the record.
  for (const name of await blobNames('cleaned')) if (!name.endsWith('/staging.run')) await container().deleteBlob(name);
  t.deepEqual(await blobNames('cleaned'), [`cleaned/${EXPORT_ID}/staging.run`]);

  for (const options of [[], ['--export', EXPORT_ID]]) {
    const dir = await tempDir(t);
    const { code, log, summary } = await importInto('cleaned', dir, options);
    t.is(code, 1, log);
    t.is(summary.error?.code, 'E_STAGING_INCOMPLETE');
    t.regex(summary.error!.message, new RegExp(`^the staging index of export ${EXPORT_ID} is gone \\(.*finished \\S+ with the staging index ${escaped(index)} \\(cleaned/${EXPORT_ID}/staging\\.run says so\\), and that index is gone from the export's folder\\)`));
    t.like(summary, { delivered: 0, batchesImported: 0 });
    t.deepEqual(summary.exportsImportedWhole, []);
    t.deepEqual(summary.exportsNotWhole, [EXPORT_ID]);
    t.false(await complete(dir));
  }
});

test.serial("the index a finished staging.run names deleted, its batches left (no other index): they are imported, the import fails (E_STAGING_INCOMPLETE, exit 1), not whole; the record deleted too, the batches' metadata says a staging run that records itself staged them: part-way (exit 1); without it (as an older version's staging), the import warns and exits 0", async (t) => {
  t.timeout(300_000);
  await stage('unindexed', archive);
  const index = await recordedIndex('unindexed');
  const staged = await messagesIn('unindexed');
  await container().deleteBlob(index);
  const dir = await tempDir(t);
  const { code, log, summary } = await importInto('unindexed', dir);
  t.is(code, 1, log);
  t.is(summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.true(summary.error!.message.includes(index), summary.error!.message);
  t.like(summary, { delivered: staged, failed: 0, exportsWithoutIndex: 1 });
  t.deepEqual(summary.exportsImportedWhole, []);
  t.deepEqual(summary.exportsNotWhole, [EXPORT_ID]);
  t.false(await complete(dir));

  await container().deleteBlob(`unindexed/${EXPORT_ID}/staging.run`);
  // Its batches say a staging run that writes a staging-run record staged them: with neither record nor index, part-way.
  const wiped = await importInto('unindexed', await tempDir(t));
  t.is(wiped.code, 1, wiped.log);
  t.regex(wiped.summary.error!.message, /^the staging of export acme-2026-11-23 is part-way \(\d+ of its batches in unindexed\/acme-2026-11-23\/ were staged by a staging run that writes a staging-run record/);
  await asStagedByOlderVersion(container(), 'unindexed');
  const blind = await importInto('unindexed', await tempDir(t));
  t.is(blind.code, 0, blind.log);
  t.regex(blind.log, /warn the staged batches under unindexed\/acme-2026-11-23\/ have no staging index/);
  t.like(blind.summary, { delivered: staged, exportsWithoutIndex: 1 });
  t.deepEqual(blind.summary.exportsImportedWhole, []);
});

test.serial("a corrected re-staging's index and its new batches deleted, the first staging's index and batches left: the finished staging.run names the index that is gone, so the older index is not taken for the export whole (exit 1, E_STAGING_INCOMPLETE); staged again, the import is whole", async (t) => {
  t.timeout(300_000);
  await stage('rolledback', archive);
  const first = await blobNames('rolledback', /\/index-[^/]+\.json$/);
  const v1 = await blobNames('rolledback', /\.zip$/);
  await stage('rolledback', corrected);
  const index = await recordedIndex('rolledback');
  t.false(first.includes(index));
  const v2 = (await blobNames('rolledback', /\.zip$/)).filter((name) => !v1.includes(name));
  t.true(v2.length >= 2, `${v2.length} batches of the corrected staging`);
  // The corrected staging rolled back by hand: its index and its new batches deleted, the record left.
  for (const name of [index, ...v2]) await container().deleteBlob(name);
  t.deepEqual(await blobNames('rolledback', /\/index-[^/]+\.json$/), first);

  const dir = await tempDir(t);
  const { code, log, summary } = await importInto('rolledback', dir);
  t.is(code, 1, log);
  t.is(summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.regex(summary.error!.message, new RegExp(`^the staging index of export ${EXPORT_ID} is gone \\(.*${escaped(index)}`));
  t.regex(log, new RegExp(`E_STAGING_INCOMPLETE: the staging index of export ${EXPORT_ID} is gone: `));
  t.is(summary.batchesImported, v1.length, 'the batches the older index names are imported');
  t.deepEqual(summary.exportsImportedWhole, []);
  t.deepEqual(summary.exportsNotWhole, [EXPORT_ID]);
  t.false(await complete(dir));

  await stage('rolledback', corrected);
  const whole = await importInto('rolledback', dir);
  t.is(whole.code, 0, whole.log);
  t.deepEqual(whole.summary.exportsImportedWhole, [EXPORT_ID]);
  t.true(await complete(dir));
});

test.serial("a staging.run that cannot be read (moved to the Archive tier; garbage) fails its export as part-way after the rest is imported: the other export of the import is imported whole, the import exits 1 naming the export and the record (E_STAGING_INCOMPLETE), never stops at the listing", async (t) => {
  t.timeout(300_000);
  // Two exports under one prefix; the one whose record cannot be read sorts first.
  await stage('mixed', earlier);
  await stage('mixed', archive);
  const earlierMessages = await messagesIn(`mixed/${EARLIER_ID}`);
  const laterMessages = await messagesIn(`mixed/${EXPORT_ID}`);
  const laterBatches = (await blobNames(`mixed/${EXPORT_ID}`, /\.zip$/)).length;
  const record = `mixed/${EARLIER_ID}/staging.run`;
  const garbage = 'not a staging-run record\u0000\u00ff';

  // Garbage first: Azurite refuses to write over an archived blob.
  for (const spoiled of ['garbage', 'archived'] as const) {
    const blob = container().getBlockBlobClient(record);
    if (spoiled === 'archived') {
      // A lifecycle rule's work: the record is there, and storage will not give its bytes.
      await blob.setAccessTier('Archive');
      const refused = await blob.downloadToBuffer().then(() => undefined, (err: { statusCode?: number }) => err.statusCode);
      t.is(refused, 409, 'Azurite refuses to read an archived blob');
    } else {
      await blob.upload(garbage, Buffer.byteLength(garbage));
      t.is((await blob.downloadToBuffer()).toString('utf8'), garbage);
    }
    const dir = await tempDir(t);
    const { code, log, summary, statusLines } = await importInto('mixed', dir);
    t.is(code, 1, `${spoiled}: ${log}`);
    t.is(summary.error?.code, 'E_STAGING_INCOMPLETE', spoiled);
    t.regex(summary.error!.message, new RegExp(`^the staging of export ${EARLIER_ID} is part-way \\(its staging-run record ${escaped(record)} cannot be read \\(`), spoiled);
    if (spoiled === 'archived') t.regex(summary.error!.message, /\(HTTP 409 BlobArchived\)/);
    t.notRegex(log, /cannot list the staged batches|E_ARCHIVE_UNREADABLE/, spoiled);
    // Both exports' batches (each named by its export's index) are imported; only the one whose record cannot be read is not whole.
    t.like(summary, { delivered: earlierMessages + laterMessages, failed: 0, batchesFailed: 0 }, spoiled);
    t.is(statusLines.filter((l) => l.record === 'batch' && l.outcome === 'imported' && String(l.batch).startsWith(`mixed/${EXPORT_ID}/`)).length, laterBatches, spoiled);
    t.is((await readMaildir(join(dir, 'mail'))).length, earlierMessages + laterMessages, spoiled);
    t.deepEqual(summary.exportsNotWhole, [EARLIER_ID], spoiled);
    t.deepEqual(summary.exportsImportedWhole, [], spoiled);
    t.false(await complete(dir, EARLIER_ID), spoiled);
    // The other export alone is whole (its batches all imported into this sink above).
    const alone = await importInto('mixed', dir, ['--export', EXPORT_ID]);
    t.is(alone.code, 0, `${spoiled}: ${alone.log}`);
    t.deepEqual(alone.summary.exportsImportedWhole, [EXPORT_ID], spoiled);
    t.true(await complete(dir, EXPORT_ID), spoiled);
  }
});
