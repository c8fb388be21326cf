// Import holds each staged batch against what staging recorded of it (the staging index's count of
// messages and manifest sha256, else the blob metadata's itemcount), against a real Azurite: a batch
// rewritten with entries removed (its metadata kept), emptied, or deleted fails whole, exit 1, and
// the export is not reported imported whole; so does an export whose every batch was deleted (its
// index alone left). The text summary shows what the JSON counts of it.
import test from 'ava';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import archiver from 'archiver';
import unzipper from 'unzipper';
import { generateSample } from '../src/sample/generate.js';
import { writeArchive } from './helpers/archive.js';
import { asStagedByOlderVersion, startAzuriteWithSample, type Azurite, type AzuriteWithSample } from './helpers/azurite.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

interface Entry {
  name: string;
  mailbox: string;
  itemId: string;
  messageId: string;
}
interface Batch {
  name: string;
  metadata: Record<string, string>;
  manifestBytes: Buffer;
  manifest: { exportId: string; entries: Entry[] };
  files: Map<string, Buffer>;
}
interface Summary {
  delivered: number;
  failed: number;
  batchesImported: number;
  batchesFailed: number;
  itemsStaged: number;
  itemsStagedNotRead: number;
  exportsWithoutIndex: number;
  exportsImportedWhole: string[];
  balanced: boolean;
  error?: { code: string; message: string };
}

const EXPORT_ID = 'acme-2026-11-23';
let azurite: Azurite;
let archive: string;
let env: Record<string, string>;

let workDir: string | undefined;

let fixture: AzuriteWithSample | undefined;
test.before(async () => {
  fixture = await startAzuriteWithSample({ events: 600, seed: 45 });
  ({ azurite, env, workDir, archive } = fixture);
});
test.after.always(() => fixture?.dispose());

/**
 * A test-side read or delete against Azurite, tried again when the connection was dropped (the
 * helper's client tries once, for the tests that stop Azurite; under load a kept-alive socket can hang up).
 */
async function retried<T>(call: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await call();
    } catch (err) {
      if (tries >= 3 || (err as { code?: string }).code !== 'ECONNRESET') throw err;
    }
  }
}

async function batchesUnder(prefix: string): Promise<Batch[]> {
  const client = azurite.container('staging');
  const batches: Batch[] = [];
  for await (const blob of client.listBlobsFlat({ prefix: `${prefix}/`, includeMetadata: true })) {
    if (!blob.name.endsWith('.zip')) continue;
    const zip = (await unzipper.Open.buffer(await retried(() => client.getBlockBlobClient(blob.name).downloadToBuffer()))) as { files: { path: string; buffer(): Promise<Buffer> }[] };
    const files = new Map<string, Buffer>();
    for (const f of zip.files) files.set(f.path, await f.buffer());
    const manifestBytes = files.get('manifest.json')!;
    batches.push({ name: blob.name, metadata: blob.metadata ?? {}, manifestBytes, manifest: JSON.parse(manifestBytes.toString()) as Batch['manifest'], files });
  }
  return batches;
}

async function indexesUnder(prefix: string): Promise<string[]> {
  const names: string[] = [];
  for await (const blob of azurite.container('staging').listBlobsFlat({ prefix: `${prefix}/` })) if (/\/index-[^/]+\.json$/.test(blob.name)) names.push(blob.name);
  return names;
}

async function stage(prefix: string, from = archive): Promise<void> {
  const dir = join(archive, '..');
  const run = await cli(['run', from, '--sink', `azblob://staging/${prefix}?messages=100`, '--rejects', join(dir, `rejects-${prefix}-${basename(from)}`), '--quiet'], { env });
  if (run.code !== 0) throw new Error(`staging exit ${run.code}: ${run.stderr}`);
}

/** The batch rewritten (zip and manifest) with `drop` of its manifest's entries removed; its blob metadata (itemcount) kept. */
async function rewrite(batch: Batch, drop: (entries: Entry[]) => Entry[]): Promise<void> {
  const gone = new Set(drop(batch.manifest.entries).map((e) => e.name));
  const manifest = { ...batch.manifest, entries: batch.manifest.entries.filter((e) => !gone.has(e.name)) };
  const zip = archiver('zip');
  zip.append(Buffer.from(JSON.stringify(manifest)), { name: 'manifest.json' });
  for (const [name, bytes] of batch.files) if (name !== 'manifest.json' && !gone.has(name)) zip.append(bytes, { name });
  void zip.finalize();
  const chunks: Buffer[] = [];
  for await (const c of zip) chunks.push(c as Buffer);
  const body = Buffer.concat(chunks);
  await azurite.container('staging').getBlockBlobClient(batch.name).upload(body, body.length, { metadata: batch.metadata });
}

async function importInto(prefix: string, dir: string, options: string[] = []): Promise<{ code: number | null; log: string; summary: Summary; statusLines: Record<string, unknown>[] }> {
  const status = join(dir, 'import.jsonl');
  const imp = await cli(['import', '--from', `azblob://staging/${prefix}`, '--sink', `maildir:${join(dir, 'mail')}`, '--state-dir', join(dir, 'state'), '--status-log', status, '--json', ...options], { env });
  return { code: imp.code, log: imp.log, summary: JSON.parse(imp.stdout) as Summary, statusLines: (await readStatusLog(status)).lines };
}

/** An import's summary as people read it (no --json), into a Maildir of its own. */
async function importText(prefix: string, dir: string): Promise<{ code: number | null; text: string }> {
  const imp = await cli(['import', '--from', `azblob://staging/${prefix}`, '--sink', `maildir:${join(dir, 'mail')}`], { env });
  return { code: imp.code, text: imp.stdout };
}

/** The value of a summary row (`  label   value`), or undefined when the row is not shown. */
function summaryRow(text: string, label: string): string | undefined {
  const escaped = label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^  ${escaped} +(\\S+)$`, 'm').exec(text)?.[1];
}

async function exportComplete(dir: string): Promise<{ code: number | null; complete: boolean }> {
  const status = await cli(['status', '--state-dir', join(dir, 'state'), '--export', EXPORT_ID, '--json']);
  return { code: status.code, complete: (JSON.parse(status.stdout) as { account: { complete: boolean } }).account.complete };
}

const total = (batches: Batch[]) => batches.reduce((n, b) => n + b.manifest.entries.length, 0);

test.serial('a batch rewritten with entries removed from its manifest and zip (metadata kept) fails whole, exit 1, not imported whole; deleted and staged again, the import completes', async (t) => {
  t.timeout(300_000);
  await stage('drop');
  const batches = await batchesUnder('drop');
  t.true(batches.length >= 3, `${batches.length} batches`);
  // The index records each batch's count and its manifest's sha256.
  const [indexName] = await indexesUnder('drop');
  const index = JSON.parse((await azurite.container('staging').getBlockBlobClient(indexName!).downloadToBuffer()).toString()) as { version: number; batches: string[]; contents: Record<string, { items: number; sha256: string }> };
  t.is(index.version, 1);
  t.deepEqual(index.batches, batches.map((b) => b.name).sort());
  for (const b of batches) t.deepEqual(index.contents[b.name], { items: b.manifest.entries.length, sha256: createHash('sha256').update(b.manifestBytes).digest('hex') });

  const victim = batches.find((b) => b.manifest.entries.length === 100)!;
  t.truthy(victim);
  t.is(victim.manifest.exportId, EXPORT_ID);
  await rewrite(victim, (entries) => entries.slice(0, 10));
  const dir = await tempDir(t);
  const { code, log, summary, statusLines } = await importInto('drop', dir);
  t.is(code, 1, log);
  t.like(summary, { batchesFailed: 1, batchesImported: batches.length - 1, failed: 90, itemsStagedNotRead: 10, delivered: total(batches) - 100, balanced: true });
  t.deepEqual(summary.exportsImportedWhole, []);
  t.regex(log, new RegExp(`E_STAGING_INCOMPLETE: staged batch ${victim.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} does not hold what the staging run recorded: its manifest lists 90 message\\(s\\) where the staging index records 100`));
  t.like(statusLines.find((l) => l.record === 'batch' && l.batch === victim.name), { outcome: 'failed' });
  t.is(statusLines.filter((l) => l.outcome === 'failed' && l.reason === 'staged-mismatch' && l.exportId === EXPORT_ID).length, 90);
  const got = await readMaildir(join(dir, 'mail'));
  t.is(got.length, total(batches) - 100, 'none of the batch is delivered');
  t.false(got.some((m) => victim.manifest.entries.some((e) => e.mailbox === m.mailbox && e.messageId === m.parsed.messageId)));
  t.like(await exportComplete(dir), { code: 1, complete: false });

  // The remedy the error names: delete the batch, stage again, import again.
  await azurite.container('staging').deleteBlob(victim.name);
  await stage('drop');
  const again = await importInto('drop', dir);
  t.is(again.code, 0, again.log);
  t.deepEqual(again.summary.exportsImportedWhole, [EXPORT_ID]);
  t.is((await readMaildir(join(dir, 'mail'))).length, total(batches));
  t.like(await exportComplete(dir), { code: 0, complete: true });
});

test.serial('a batch whose manifest is emptied (its messages removed, metadata kept) fails whole: exit 1, its staged count reported not read, not imported whole', async (t) => {
  t.timeout(300_000);
  await stage('empty');
  const batches = await batchesUnder('empty');
  const victim = batches[1]!;
  const count = victim.manifest.entries.length;
  await rewrite(victim, (entries) => entries);
  const dir = await tempDir(t);
  const { code, log, summary, statusLines } = await importInto('empty', dir);
  t.is(code, 1, log);
  t.like(summary, { batchesFailed: 1, batchesImported: batches.length - 1, failed: 0, itemsStagedNotRead: count, delivered: total(batches) - count, balanced: true });
  t.deepEqual(summary.exportsImportedWhole, []);
  t.regex(log, new RegExp(`its manifest lists 0 message\\(s\\) where the staging index records ${count}`));
  t.like(statusLines.find((l) => l.record === 'batch' && l.batch === victim.name), { outcome: 'failed' });
  t.false(statusLines.some((l) => l.record === 'batch' && l.batch === victim.name && l.outcome === 'imported'));
  t.like(await exportComplete(dir), { code: 1, complete: false });
});

test.serial('a batch deleted: the import fails (E_STAGING_INCOMPLETE) counting it failed; with the index deleted too, the import warns and does not report the export whole (and fails while the finished staging.run names that index)', async (t) => {
  t.timeout(300_000);
  await stage('gone');
  const batches = await batchesUnder('gone');
  const victim = batches[1]!;
  const count = victim.manifest.entries.length;
  const client = azurite.container('staging');
  await client.deleteBlob(victim.name);
  const dir = await tempDir(t);
  const { code, log, summary, statusLines } = await importInto('gone', dir);
  t.is(code, 1, log);
  t.is(summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.like(summary, { batchesFailed: 1, batchesImported: batches.length - 1, itemsStagedNotRead: count, delivered: total(batches) - count });
  t.like(statusLines.find((l) => l.record === 'batch' && l.batch === victim.name), { outcome: 'failed', items: count });
  t.like(await exportComplete(dir), { code: 1, complete: false });

  for (const name of await indexesUnder('gone')) await client.deleteBlob(name);
  // The finished staging.run still names the index: it is gone, so the export is not whole (exit 1).
  const named = await importInto('gone', await tempDir(t));
  t.is(named.code, 1, named.log);
  t.is(named.summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.regex(named.summary.error!.message, /^the staging index of export acme-2026-11-23 is gone/);
  t.like(named.summary, { exportsWithoutIndex: 1, batchesImported: batches.length - 1 });
  // Without the record either (as an older version staged it): nothing says an index was there.
  await client.deleteBlob(`gone/${EXPORT_ID}/staging.run`);
  await asStagedByOlderVersion(client, 'gone');
  const other = await tempDir(t);
  const blind = await importInto('gone', other);
  t.is(blind.code, 0, blind.log);
  t.regex(blind.log, /warn the staged batches under gone\/acme-2026-11-23\/ have no staging index .*a batch gone from there cannot be told/);
  t.like(blind.summary, { exportsWithoutIndex: 1, batchesImported: batches.length - 1 });
  t.deepEqual(blind.summary.exportsImportedWhole, []);
  t.like(await exportComplete(other), { code: 1, complete: false });
});

test.serial('staged data whose index predates the per-batch record (names only) is still read, a batch checked against its metadata itemcount', async (t) => {
  t.timeout(300_000);
  await stage('old');
  const batches = await batchesUnder('old');
  const client = azurite.container('staging');
  const [indexName] = await indexesUnder('old');
  const { contents: _, ...oldIndex } = JSON.parse((await client.getBlockBlobClient(indexName!).downloadToBuffer()).toString()) as Record<string, unknown>;
  const body = JSON.stringify(oldIndex);
  await client.getBlockBlobClient(indexName!).upload(body, body.length);
  const victim = batches[0]!;
  const count = victim.manifest.entries.length;
  await rewrite(victim, (entries) => entries.slice(0, 5));
  const dir = await tempDir(t);
  const { code, log, summary } = await importInto('old', dir);
  t.is(code, 1, log);
  t.like(summary, { batchesFailed: 1, batchesImported: batches.length - 1, failed: count - 5, itemsStagedNotRead: 5, delivered: total(batches) - count });
  t.deepEqual(summary.exportsImportedWhole, []);
  t.regex(log, new RegExp(`its manifest lists ${count - 5} message\\(s\\) where its blob metadata itemcount records "${count}"`));
});

test.serial('the text summary of an import shows the staging problems its JSON counts (messages not read, exports without an index) when there are any, and no such row when there are none', async (t) => {
  t.timeout(300_000);
  await stage('text');
  const batches = await batchesUnder('text');
  const notRead = 'staged messages not read (batch gone, unreadable, altered)';
  const withoutIndex = 'exports without a staging index (gone batches not detectable)';
  const whole = await importText('text', await tempDir(t));
  t.is(whole.code, 0, whole.text);
  t.is(summaryRow(whole.text, 'messages staged (in those batches)'), String(total(batches)), whole.text);
  t.is(summaryRow(whole.text, notRead), undefined, whole.text);
  t.is(summaryRow(whole.text, withoutIndex), undefined, whole.text);

  const client = azurite.container('staging');
  const victim = batches[0]!;
  await client.deleteBlob(victim.name);
  const gone = await importText('text', await tempDir(t));
  t.is(gone.code, 1, gone.text);
  t.is(summaryRow(gone.text, notRead), String(victim.manifest.entries.length), gone.text);
  t.is(summaryRow(gone.text, withoutIndex), undefined, gone.text);

  for (const name of await indexesUnder('text')) await client.deleteBlob(name);
  // As an older version staged it: no index, no staging.run record (one that names the deleted index fails the import).
  await client.deleteBlob(`text/${EXPORT_ID}/staging.run`);
  await asStagedByOlderVersion(client, 'text');
  const blind = await importText('text', await tempDir(t));
  t.is(blind.code, 0, blind.text);
  t.is(summaryRow(blind.text, withoutIndex), '1', blind.text);
  t.is(summaryRow(blind.text, notRead), undefined, blind.text);
});

test.serial('an export whose every batch was deleted (its index kept) is found: each batch its index lists failed, its messages counted not read, E_STAGING_INCOMPLETE; exit 1 beside an export imported and alone (lost deliveries, not a usage error); status calls it incomplete', async (t) => {
  t.timeout(300_000);
  const otherArchive = join(workDir!, 'other.zip');
  const other = await generateSample(otherArchive, { events: 300, seed: 46, day: '2026-11-24' });
  await stage('allgone');
  await stage('allgone', otherArchive);
  const batches = await batchesUnder('allgone');
  const lost = batches.filter((b) => b.manifest.exportId === EXPORT_ID);
  const kept = batches.filter((b) => b.manifest.exportId === other.exportId);
  t.true(lost.length >= 3 && kept.length >= 1 && lost.length + kept.length === batches.length, `${lost.length} + ${kept.length} batches`);
  const client = azurite.container('staging');
  for (const b of lost) await retried(() => client.deleteBlob(b.name));
  t.is((await indexesUnder(`allgone/${EXPORT_ID}`)).length, 1, 'the index of the export is left');

  const dir = await tempDir(t);
  const { code, log, summary, statusLines } = await importInto('allgone', dir);
  t.is(code, 1, log);
  t.is(summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.like(summary, { batchesFailed: lost.length, batchesImported: kept.length, failed: 0, itemsStagedNotRead: total(lost), delivered: total(kept), exportsWithoutIndex: 0 });
  t.deepEqual(summary.exportsImportedWhole, []);
  t.regex(log, new RegExp(`E_STAGING_INCOMPLETE: ${lost.length} staged batches that the staging run listed are gone \\(allgone/${EXPORT_ID}/`));
  for (const b of lost) {
    t.like(statusLines.find((l) => l.record === 'batch' && l.batch === b.name), { outcome: 'failed', items: b.manifest.entries.length, detail: 'listed by the staging index, not in the container' });
  }
  const got = await readMaildir(join(dir, 'mail'));
  t.is(got.length, total(kept));

  // The export alone: nothing of it to deliver, and still a delivery failure.
  const alone = await tempDir(t);
  const only = await importInto('allgone', alone, ['--export', EXPORT_ID]);
  t.is(only.code, 1, only.log);
  t.is(only.summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.like(only.summary, { batchesFailed: lost.length, batchesImported: 0, itemsStagedNotRead: total(lost), delivered: 0 });
  t.like(await exportComplete(alone), { code: 1, complete: false });
});

test.serial('a staging run stopped part-way leaves no index and its staging.run record says so (an import of its batches fails, E_STAGING_INCOMPLETE, not the export whole); then a batch it staged deleted: the next staging run reads the whole export (no checkpoint resume), so its index names every batch; the gone messages are staged again and the import is whole', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const state = join(dir, 'stage-state');
  // Stops its own run (SIGTERM) at the 400th item: the earlier items settled, a checkpoint saved.
  const plugin = join(dir, 'stop.mjs');
  await writeFile(plugin, `let n = 0;\nexport default { name: 'stop', hostApi: '^1.0.0', async transform(item) {\n  if (++n === 400) { process.kill(process.pid, 'SIGTERM'); await new Promise((r) => setTimeout(r, 200)); }\n  return item;\n} };\n`);
  const args = ['run', archive, '--sink', 'azblob://staging/resumed?messages=100', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--quiet', '--json'];
  const stopped = await cli([...args, '--plugin', plugin], { env });
  t.is(stopped.code, 4, stopped.stderr);
  const staged = await batchesUnder('resumed');
  t.true(staged.length >= 2, `${staged.length} batches before the stop`);
  // Its batches are part of the export: an index of them would let an import call the export whole.
  t.deepEqual(await indexesUnder('resumed'), []);
  const early = await tempDir(t);
  const partial = await importInto('resumed', early);
  t.is(partial.code, 1, partial.log);
  t.is(partial.summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.regex(partial.summary.error!.message, new RegExp(`the staging of export ${EXPORT_ID} is part-way \\(a staging run of it started .* has not finished \\(resumed/${EXPORT_ID}/staging\\.run\\)`));
  // With no index there is nothing to hold them against: imported, as an older version's staging is.
  t.is(partial.summary.delivered, total(staged));
  t.deepEqual(partial.summary.exportsImportedWhole, []);
  t.is(partial.summary.exportsWithoutIndex, 1);
  t.like(await exportComplete(early), { code: 1, complete: false });
  const gone = staged[0]!;
  await retried(() => azurite.container('staging').deleteBlob(gone.name));

  const again = await cli(args, { env });
  t.is(again.code, 0, again.stderr);
  const summary = JSON.parse(again.stdout) as { itemsDoneEarlier: number; delivered: number };
  t.is(summary.itemsDoneEarlier, 0, 'read from the start');
  t.true(summary.delivered >= gone.manifest.entries.length, 'the gone messages staged again');
  t.regex(again.log, /its index names every item of the export, so acme-2026-11-23 is read from the start/);

  const { code, summary: imported } = await importInto('resumed', dir);
  t.is(code, 0);
  const pairs = new Set((await batchesUnder('resumed')).flatMap((b) => b.manifest.entries.map((e) => `${e.mailbox} ${e.messageId}`)));
  t.is(imported.delivered + (imported as unknown as { skipped: number }).skipped, pairs.size);
  t.true(gone.manifest.entries.every((e) => pairs.has(`${e.mailbox} ${e.messageId}`)), 'every message of the gone batch is staged again');
  t.deepEqual(imported.exportsImportedWhole, [EXPORT_ID]);
  t.is((await readMaildir(join(dir, 'mail'))).length, pairs.size);
});

test.serial('a staging run that could not read a messages file (exit 5: its events counted nowhere) leaves no index: the import of what it staged fails (E_STAGING_INCOMPLETE), not the export whole', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const users = [{ id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' }, { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' }];
  const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2'] }];
  const event = (id: string) => ({ id, conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_1', text: id });
  // Messages/1.json is outside the layout (another case): not read, so the run alarms.
  const unread = await writeArchive(join(dir, 'unread.zip'), { users, conversations, messages: { '0.json': [event('m_1')] }, extra: { 'Messages/1.json': JSON.stringify([event('m_2')]) } });
  const run = await cli(['run', unread, '--sink', 'azblob://staging/unread', '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--quiet'], { env });
  t.is(run.code, 5, run.stderr);
  t.is((await batchesUnder('unread')).length, 1);
  t.deepEqual(await indexesUnder('unread'), []);
  const imported = await importInto('unread', dir);
  t.is(imported.code, 1, imported.log);
  t.is(imported.summary.error?.code, 'E_STAGING_INCOMPLETE', 'its staging.run record is not marked finished');
  t.is(imported.summary.delivered, 2, imported.log);
  t.deepEqual(imported.summary.exportsImportedWhole, []);
  t.like(await exportComplete(dir), { code: 1, complete: false });
});

test.serial("a batch of another export put under a batch's name fails whole as its folder's export (its messages charged to neither export's account as delivered); an index of another export copied into a folder makes that folder unindexed, not its batches 'gone'", async (t) => {
  t.timeout(300_000);
  const other = join(archive, '..', 'other-day.zip');
  await generateSample(other, { events: 300, seed: 46, day: '2026-11-24' });
  await stage('swap');
  await stage('swap', other);
  const ours = (await batchesUnder(`swap/${EXPORT_ID}`)).find((b) => b.manifest.entries.length === 100)!;
  const theirs = (await batchesUnder('swap/acme-2026-11-24')).find((b) => b.manifest.entries.length === 100)!;
  t.truthy(ours && theirs);
  // The other day's batch, its metadata too, under our batch's name.
  const container = azurite.container('staging');
  const body = await container.getBlockBlobClient(theirs.name).downloadToBuffer();
  await container.getBlockBlobClient(ours.name).upload(body, body.length, { metadata: theirs.metadata });
  const dir = await tempDir(t);
  const { code, log, summary, statusLines } = await importInto('swap', dir);
  t.is(code, 1, log);
  t.regex(log, /E_STAGING_INCOMPLETE: staged batch .* in the folder of export "acme-2026-11-23", holds messages of export "acme-2026-11-24"/);
  t.is(statusLines.filter((l) => l.outcome === 'failed' && l.exportId === EXPORT_ID).length, theirs.manifest.entries.length, "charged to our export, whose batch is not there");
  t.deepEqual(summary.exportsImportedWhole, ['acme-2026-11-24']);
  t.like(await exportComplete(dir), { code: 1, complete: false });

  // The other day's index copied into our folder under a name that sorts last: it names nothing of ours.
  const [theirIndex] = await indexesUnder('swap/acme-2026-11-24');
  const copied = `swap/${EXPORT_ID}/index-29991231T235959999Z-ffffffff.json`;
  const indexBody = await container.getBlockBlobClient(theirIndex!).downloadToBuffer();
  await container.getBlockBlobClient(copied).upload(indexBody, indexBody.length);
  const again = await importInto('swap', await tempDir(t));
  t.is(again.summary.exportsWithoutIndex, 1, again.log);
  t.false(/listed by the staging index, not in the container/.test(JSON.stringify(again.statusLines)), "the other day's batches are not called gone");
  t.false(again.summary.exportsImportedWhole.includes(EXPORT_ID));
});
