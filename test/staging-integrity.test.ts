// What `import --from azblob://...` does with staging blobs that are not what a finished staging run
// left, against a real Azurite:
// - a well-formed batch of the export that the export's (signed) staging index does not name, put
//   anywhere inside the export's folder (directly in it, or in a folder nested in it that looks like
//   an export folder of its own): never delivered, refused naming the blob (E_STAGING_UNTRUSTED),
//   recorded failed, the rest imported, exit 1, the export not whole. Before, such a batch was taken
//   for one of an unindexed folder of its own: delivered, the export called whole, exit 0;
// - a staging index that cannot be read (not JSON, refused by storage) or is too large to be one:
//   that export is refused with its own error naming the blob, the other exports of the import are
//   imported whole, exit non-zero. Before, the whole import stopped at the listing (or, too large,
//   the blob was read whole into memory first).
import test from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { MAX_STAGING_INDEX_BYTES } from '../src/sources/staged-batches/index.js';
import { batchEntries, blobNamesIn, stagedContents, startAzuriteWithSample, type Azurite, type AzuriteWithSample } from './helpers/azurite.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

const EXPORT_ID = 'acme-2026-11-23';
const OTHER_ID = 'acme-2026-11-22';

let azurite: Azurite;
let env: Record<string, string>;
let workDir: string;
let archive: string;
/** The same export id, other content: what a planted batch is cut from. */
let donorArchive: string;
/** Another export (another day): what must still be imported beside a spoiled one. */
let otherArchive: string;
let key: string;

let fixture: AzuriteWithSample | undefined;
test.before(async () => {
  fixture = await startAzuriteWithSample({ events: 80, seed: 81 });
  ({ azurite, env, workDir, archive } = fixture);
  donorArchive = join(workDir, 'donor.zip');
  await generateSample(donorArchive, { events: 80, messageFiles: 2, seed: 82 });
  otherArchive = join(workDir, 'other.zip');
  await generateSample(otherArchive, { events: 80, messageFiles: 2, seed: 83, day: '2026-11-22' });
  key = join(workDir, 'staging.key');
  const made = await cli(['keygen', '--out', key, '--name', 'staging']);
  if (made.code !== 0) throw new Error(`keygen exit ${made.code}: ${made.stderr}`);
});
test.after.always(() => fixture?.dispose());

const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const sha256 = (raw: Buffer) => createHash('sha256').update(raw).digest('hex');

/** `where`: `container[/prefix]`. */
async function stage(where: string, from: string, options: string[] = []): Promise<void> {
  const run = await cli(['run', from, '--sink', `azblob://${where}?messages=20&linger=50`, '--rejects', join(workDir, `rejects-${where.replace(/\W/g, '-')}`), '--quiet', ...options], { env });
  if (run.code !== 0) throw new Error(`staging into ${where}: exit ${run.code}: ${run.log}`);
}

const entriesOf = (container: string, name: string) => batchEntries(azurite.container(container), name);
const staged = (container: string, prefix: string) => stagedContents(azurite.container(container), prefix);

/** Copies a blob (bytes and metadata) to another name, in the same container or another. */
async function copyBlob(from: { container: string; name: string }, to: { container: string; name: string }): Promise<void> {
  const source = azurite.container(from.container).getBlockBlobClient(from.name);
  const body = await source.downloadToBuffer();
  await azurite.container(to.container).getBlockBlobClient(to.name).upload(body, body.length, { metadata: (await source.getProperties()).metadata });
}

interface Summary {
  delivered: number;
  failed: number;
  batchesImported: number;
  batchesFailed: number;
  batchesRefused: number;
  stagingIndexesUnreadable: number;
  exportsImportedWhole: string[];
  exportsNotWhole: string[];
  error?: { code: string; message: string };
}

async function importInto(from: string, dir: string, options: string[] = []) {
  const status = join(dir, 'import.jsonl');
  const imp = await cli(['import', '--from', `azblob://${from}`, '--sink', `maildir:${join(dir, 'mail')}`, '--state-dir', join(dir, 'state'), '--status-log', status, '--json', ...options], { env, timeoutMs: 240_000 });
  let summary: Summary;
  try {
    summary = JSON.parse(imp.stdout) as Summary;
  } catch {
    throw new Error(`import --from ${from}: exit ${imp.code}, no summary: ${imp.log}`);
  }
  return { code: imp.code, log: imp.log, summary, statusLines: (await readStatusLog(status)).lines };
}

async function complete(dir: string, exportId: string): Promise<boolean> {
  const status = await cli(['status', '--state-dir', join(dir, 'state'), '--export', exportId, '--json']);
  return (JSON.parse(status.stdout) as { account: { complete: boolean } }).account.complete;
}

const trusting = () => ['--public-key', `${key}.pub`];

// Finding 1: a batch the signed index does not name, inside the export's folder but not at the depth
// a staging run writes batches at, was read as a batch of another (unindexed) folder.
for (const { title, container, prefix, plantedName } of [
  {
    title: 'directly in the folder of an export staged at the container root',
    container: 'rooted',
    prefix: '',
    // Sorts after the export's index and staging-run record.
    plantedName: `${EXPORT_ID}/zzzz-planted.zip`,
  },
  {
    title: 'directly in the export folder under a prefix, sorting between its batches and its index',
    container: 'staging',
    prefix: 'between',
    // Before, the listing left the export's folder there and came back to it: its batches were also called gone.
    plantedName: `between/${EXPORT_ID}/a-planted.zip`,
  },
  {
    title: 'in a folder nested in the export folder that looks like a folder of the same export',
    container: 'staging',
    prefix: 'nested',
    plantedName: `nested/${EXPORT_ID}/zzzz/${EXPORT_ID}/0000/0000000-planted.zip`,
  },
]) {
  test.serial(`a well-formed batch of the export that its signed index does not name, ${title}: never delivered, refused naming it (E_STAGING_UNTRUSTED), recorded failed, the rest imported, exit 1, not whole; with --public-key and without`, async (t) => {
    t.timeout(300_000);
    const where = prefix ? `${container}/${prefix}` : container;
    await stage(where, archive, ['--signing-key', key]);
    const donorWhere = `staging/donor-${container}`;
    await stage(donorWhere, donorArchive);
    const indexed = await staged(container, prefix ? `${prefix}/${EXPORT_ID}` : EXPORT_ID);
    t.true(indexed.batches.length >= 2, `${indexed.batches.length} batches`);
    const [donor] = await blobNamesIn(azurite.container('staging'), `donor-${container}`, /\.zip$/);
    await copyBlob({ container: 'staging', name: donor! }, { container, name: plantedName });
    const plantedEntries = await entriesOf(container, plantedName);
    t.true(plantedEntries.length > 0);
    const plantedBytes = new Set(plantedEntries.map((e) => e.sha256));

    for (const trust of [trusting(), []]) {
      const label = trust.length > 0 ? 'with --public-key' : 'without --public-key';
      const dir = await tempDir(t);
      const { code, log, summary, statusLines } = await importInto(where, dir, trust);
      t.is(code, 1, `${label}: ${log}`);
      t.is(summary.error?.code, 'E_STAGING_UNTRUSTED', label);
      t.true(summary.error?.message.includes(plantedName), `${label}: ${summary.error?.message}`);
      t.regex(log, new RegExp(`E_STAGING_UNTRUSTED: staged batch ${escaped(plantedName)} is not imported: `), label);
      t.like(summary, { delivered: indexed.messages, failed: plantedEntries.length, batchesImported: indexed.batches.length, batchesFailed: 1, batchesRefused: 1 }, label);
      t.like(statusLines.find((l) => l.record === 'batch' && l.batch === plantedName), { outcome: 'failed', items: plantedEntries.length }, label);
      t.deepEqual(summary.exportsImportedWhole, [], label);
      t.true(summary.exportsNotWhole.includes(EXPORT_ID), label);
      const mail = await readMaildir(join(dir, 'mail'));
      t.is(mail.length, indexed.messages, `${label}: exactly what was staged is delivered`);
      t.false(
        mail.some((m) => plantedBytes.has(sha256(m.raw))),
        `${label}: nothing of the planted batch is delivered`,
      );
      t.false(await complete(dir, EXPORT_ID), label);
    }
  });
}

test.serial('a batch directly under the import prefix, in no export folder: refused (E_STAGING_UNTRUSTED) naming it, recorded failed, never delivered; the export beside it is imported', async (t) => {
  t.timeout(300_000);
  await stage('staging/stray', archive, ['--signing-key', key]);
  await stage('staging/stray-donor', donorArchive);
  const indexed = await staged('staging', `stray/${EXPORT_ID}`);
  const [donor] = await blobNamesIn(azurite.container('staging'), 'stray-donor', /\.zip$/);
  const planted = 'stray/planted.zip';
  await copyBlob({ container: 'staging', name: donor! }, { container: 'staging', name: planted });
  const plantedEntries = await entriesOf('staging', planted);
  const dir = await tempDir(t);
  const { code, log, summary, statusLines } = await importInto('staging/stray', dir, trusting());
  t.is(code, 1, log);
  t.is(summary.error?.code, 'E_STAGING_UNTRUSTED');
  t.true(summary.error?.message.includes(planted), summary.error?.message);
  t.like(summary, { delivered: indexed.messages, failed: plantedEntries.length, batchesFailed: 1, batchesRefused: 1 });
  t.like(statusLines.find((l) => l.record === 'batch' && l.batch === planted), { outcome: 'failed' });
  t.is((await readMaildir(join(dir, 'mail'))).length, indexed.messages);
  t.deepEqual(summary.exportsImportedWhole, []);
});

/** Two exports staged (signed) under `prefix`: the spoiled one (EXPORT_ID) and the other (OTHER_ID). */
async function stageTwo(prefix: string) {
  await stage(`staging/${prefix}`, otherArchive, ['--signing-key', key]);
  await stage(`staging/${prefix}`, archive, ['--signing-key', key]);
  const other = await staged('staging', `${prefix}/${OTHER_ID}`);
  const spoiled = await staged('staging', `${prefix}/${EXPORT_ID}`);
  const [index] = await blobNamesIn(azurite.container('staging'), `${prefix}/${EXPORT_ID}`, /\/index-[^/]+\.json$/);
  return { other, spoiled, index: index! };
}

/** What an import must do beside a spoiled export: the other one imported whole, the spoiled one refused and recorded. */
async function checkSpoiled(
  t: import('ava').ExecutionContext,
  label: string,
  result: Awaited<ReturnType<typeof importInto>> & { from: string },
  dir: string,
  expected: { other: { messages: number; batches: string[] }; spoiled: { batches: string[] }; indexName: string; code: string; why: RegExp },
) {
  const { code, log, summary, statusLines } = result;
  t.not(code, 0, `${label}: ${log}`);
  t.not(code, null, label);
  // The other export is imported whole; nothing of the spoiled one is delivered, each of its batches recorded failed.
  t.like(summary, { delivered: expected.other.messages, batchesImported: expected.other.batches.length, batchesFailed: expected.spoiled.batches.length }, `${label}: ${log}`);
  t.like(summary, { batchesRefused: expected.spoiled.batches.length, stagingIndexesUnreadable: 1 }, label);
  t.is(summary.error?.code, expected.code, `${label}: ${summary.error?.message}`);
  t.true(summary.error?.message.includes(expected.indexName), `${label}: ${summary.error?.message}`);
  t.regex(summary.error!.message, expected.why, label);
  t.regex(log, new RegExp(`${expected.code}: the staging index ${escaped(expected.indexName)} of export ${EXPORT_ID} cannot be read`), label);
  t.is((await readMaildir(join(dir, 'mail'))).length, expected.other.messages, label);
  for (const name of expected.spoiled.batches) t.like(statusLines.find((l) => l.record === 'batch' && l.batch === name), { outcome: 'failed' }, `${label}: ${name}`);
  for (const name of expected.other.batches) t.like(statusLines.find((l) => l.record === 'batch' && l.batch === name), { outcome: 'imported' }, `${label}: ${name}`);
  t.deepEqual(summary.exportsNotWhole, [EXPORT_ID], label);
  t.false(await complete(dir, EXPORT_ID), label);
  // The other export, imported alone into the same sink: whole.
  const alone = await importInto(result.from, dir, ['--export', OTHER_ID]);
  t.is(alone.code, 0, `${label}: ${alone.log}`);
  t.deepEqual(alone.summary.exportsImportedWhole, [OTHER_ID], label);
}

test.serial("a staging index that is not JSON, or that storage refuses to read (Archive tier): that export is refused with its own error naming the index, the other export under the prefix is imported whole, exit non-zero", async (t) => {
  t.timeout(300_000);
  const { other, spoiled, index } = await stageTwo('unreadable');
  const blob = azurite.container('staging').getBlockBlobClient(index);
  const garbage = 'not a staging index {\u0000';
  await blob.upload(garbage, Buffer.byteLength(garbage));
  const dir = await tempDir(t);
  const notJson = await importInto('staging/unreadable', dir);
  await checkSpoiled(t, 'not JSON', { ...notJson, from: 'staging/unreadable' }, dir, { other, spoiled, indexName: index, code: 'E_ARCHIVE_UNREADABLE', why: /is not a staging index/ });
  // That export alone: nothing delivered, every batch of it recorded failed, exit 2 (an input that cannot be read, nothing delivered).
  const alone = await importInto('staging/unreadable', await tempDir(t), ['--export', EXPORT_ID]);
  t.is(alone.code, 2, alone.log);
  t.like(alone.summary, { delivered: 0, batchesImported: 0, batchesFailed: spoiled.batches.length, error: { code: 'E_ARCHIVE_UNREADABLE' } });
  t.deepEqual(alone.summary.exportsNotWhole, [EXPORT_ID]);

  // Refused by storage (a lifecycle rule moved it to the Archive tier), with the key given: nothing to check a signature on.
  await blob.setAccessTier('Archive');
  t.is(await blob.downloadToBuffer().then(() => undefined, (err: { statusCode?: number }) => err.statusCode), 409, 'Azurite refuses to read an archived blob');
  const archivedDir = await tempDir(t);
  const archived = await importInto('staging/unreadable', archivedDir, trusting());
  await checkSpoiled(t, 'archived', { ...archived, from: 'staging/unreadable' }, archivedDir, { other, spoiled, indexName: index, code: 'E_ARCHIVE_UNREADABLE', why: /HTTP 409 BlobArchived/ });
});

test.serial('a staging index blob over the size limit is never read: that export is refused naming the blob and its size, the other export is imported whole, exit non-zero; with --public-key and without', async (t) => {
  t.timeout(300_000);
  const { other, spoiled, index } = await stageTwo('huge');
  // A newer index just over the limit: a page blob (sparse: nothing of it is written, its size is what storage reports).
  const hugeName = index.replace(/index-\d{8}T\d{9}Z-[0-9a-f]{8}/, 'index-20990101T000000000Z-0badf00d');
  const size = MAX_STAGING_INDEX_BYTES + 512;
  await azurite.container('staging').getPageBlobClient(hugeName).create(size);
  t.is((await azurite.container('staging').getBlockBlobClient(hugeName).getProperties()).contentLength, size);
  for (const trust of [[], trusting()]) {
    const label = trust.length > 0 ? 'with --public-key' : 'without --public-key';
    const dir = await tempDir(t);
    const started = Date.now();
    const result = await importInto('staging/huge', dir, trust);
    await checkSpoiled(t, label, { ...result, from: 'staging/huge' }, dir, {
      other,
      spoiled,
      indexName: hugeName,
      code: 'E_ARCHIVE_UNREADABLE',
      why: new RegExp(`it is ${size} bytes, over the ${MAX_STAGING_INDEX_BYTES}-byte limit of a staging index`),
    });
    t.log(`${label}: ${Date.now() - started} ms`);
  }
});
