// What an import from Blob staging does when what it finds is not what a finished staging run left,
// against a real Azurite: nothing staged where it looks (a typo in --from or --export) is a usage
// error, not an empty success; a batch deleted after this sink imported it (its marker kept) is not
// called lost; a batch the export's latest index does not name is never imported silently; and a
// staging run stopped part-way (a corrected re-staging beside an older, complete index), or one that
// has just started (its folder holds its lock alone), makes the import fail naming the export, never
// call it whole. Before, each of these exited wrongly, or said what was not so.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RUN_FORMAT, stagingRunText } from '../src/formats/staged-batch/staging-run.js';
import { generateSample } from '../src/sample/generate.js';
import { batchEntries, blobNamesIn, startAzuriteWithSample, type Azurite, type AzuriteWithSample } from './helpers/azurite.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';
import { STOPPER_PLUGIN } from './helpers/stopper.js';

const EXPORT_ID = 'acme-2026-11-23';

let azurite: Azurite;
let env: Record<string, string>;
let workDir: string;
let archive: string;
/** The same export id, other content: a corrected re-delivery of the day. */
let corrected: string;
let key: string;

let fixture: AzuriteWithSample | undefined;
test.before(async () => {
  fixture = await startAzuriteWithSample({ events: 300, seed: 51 });
  ({ azurite, env, workDir, archive } = fixture);
  corrected = join(workDir, 'corrected.zip');
  await generateSample(corrected, { events: 300, messageFiles: 2, seed: 52 });
  key = join(workDir, 'staging.key');
  const made = await cli(['keygen', '--out', key, '--name', 'staging']);
  if (made.code !== 0) throw new Error(`keygen exit ${made.code}: ${made.stderr}`);
});
test.after.always(() => fixture?.dispose());

const container = () => azurite.container('staging');

const blobNames = (prefix: string, pattern: RegExp) => blobNamesIn(container(), prefix, pattern);

/** The (mailbox, Message-ID) entries of a staged batch, read with unzipper (not our reader). */
const entriesOf = (name: string) => batchEntries(container(), name);

async function stage(prefix: string, from: string, options: string[] = [], extraEnv: Record<string, string> = {}): Promise<{ code: number | null; log: string }> {
  const run = await cli(['run', from, '--sink', `azblob://staging/${prefix}?messages=20&linger=50`, '--rejects', join(workDir, `rejects-${prefix}`), '--quiet', ...options], { env: { ...env, ...extraEnv } });
  return { code: run.code, log: run.log };
}

interface Summary {
  delivered: number;
  skipped: number;
  failed: number;
  batchesImported: number;
  batchesImportedEarlier: number;
  batchesFailed: number;
  exportsImportedWhole: string[];
  error?: { code: string; message: string };
}

async function importInto(from: string, dir: string, options: string[] = []): Promise<{ code: number | null; log: string; summary: Summary; statusLines: Record<string, unknown>[] }> {
  const status = join(dir, 'import.jsonl');
  const imp = await cli(['import', '--from', `azblob://staging/${from}`, '--sink', `maildir:${join(dir, 'mail')}`, '--state-dir', join(dir, 'state'), '--status-log', status, '--json', ...options], { env });
  return { code: imp.code, log: imp.log, summary: JSON.parse(imp.stdout) as Summary, statusLines: (await readStatusLog(status)).lines };
}

async function complete(dir: string): Promise<boolean> {
  const status = await cli(['status', '--state-dir', join(dir, 'state'), '--export', EXPORT_ID, '--json']);
  return (JSON.parse(status.stdout) as { account: { complete: boolean } }).account.complete;
}

/** `prefix` staged from the sample and imported once into the Maildir of a fresh dir (exit 0): that dir, the import, and the batches. */
async function stagedAndImported(t: ExecutionContext, prefix: string): Promise<{ dir: string; first: Awaited<ReturnType<typeof importInto>>; batches: string[] }> {
  t.is((await stage(prefix, archive)).code, 0);
  const dir = await tempDir(t);
  const first = await importInto(prefix, dir);
  t.is(first.code, 0, first.log);
  return { dir, first, batches: await blobNames(prefix, /\.zip$/) };
}

const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test.serial('an import that finds nothing staged (a typo in --from, an --export that matches no staged export) is a usage error found before the import starts, exit 2, naming what is there, and recorded (start and failure records, no summary); everything already imported is exit 0', async (t) => {
  t.timeout(300_000);
  t.is((await stage('typo/acme', archive)).code, 0);
  const dir = await tempDir(t);
  const state = join(dir, 'typo-state');
  const status = join(dir, 'typo.jsonl');
  const wrongPrefix = await cli(['import', '--from', 'azblob://staging/typo/acmee', '--sink', `maildir:${join(dir, 'mail')}`, '--state-dir', state, '--status-log', status, '--json'], { env });
  t.is(wrongPrefix.code, 2, wrongPrefix.log);
  // Refused as any usage error before the import starts: a failure record on stdout with --json, not a summary of counters.
  const prefixFailure = JSON.parse(wrongPrefix.stdout) as { record: string; code: string; exitCode: number; error: string };
  t.like(prefixFailure, { record: 'failure', code: 'E_USAGE', exitCode: 2 });
  t.regex(prefixFailure.error, /--from azblob:\/\/devstoreaccount1\/staging\/typo\/acmee: nothing to import: nothing is staged there .*the folders of azblob:\/\/devstoreaccount1\/staging\/typo: "typo\/acme\/"/);
  // Every run leaves its record, this one too: a start record and a failure record, in the status log and the state dir.
  const records = (await readStatusLog(status)).lines;
  t.deepEqual(records.map((r) => r.record), ['start', 'failure']);
  t.like(records[0], { command: 'import', archive: 'azblob://staging/typo/acmee' });
  t.like(records[1], { code: 'E_USAGE', exitCode: 2 });
  t.regex(String(records[1]!.error), /nothing to import: nothing is staged there/);
  const shown = await cli(['status', '--state-dir', state]);
  t.regex(shown.stdout, /FAILED before delivering \(exit 2\): E_USAGE: --from \S+: nothing to import/, shown.stdout);

  const wrongExport = await cli(['import', '--from', 'azblob://staging/typo/acme', '--export', 'acme-2026-11-32', '--sink', `maildir:${join(dir, 'mail')}`, '--json'], { env });
  t.is(wrongExport.code, 2, wrongExport.log);
  const exportFailure = JSON.parse(wrongExport.stdout) as { record: string; code: string; error: string };
  t.like(exportFailure, { record: 'failure', code: 'E_USAGE' });
  t.regex(exportFailure.error, new RegExp(`--export acme-2026-11-32: nothing to import: no export acme-2026-11-32 is staged there .*the exports staged under azblob://devstoreaccount1/staging/typo/acme: "${EXPORT_ID}"`));
  // What people read: the usage error, no summary (no counters that do not add up, no run to finish).
  const printed = await cli(['import', '--from', 'azblob://staging/typo/acmee', '--sink', `maildir:${join(dir, 'mail')}`], { env });
  t.is(printed.code, 2, printed.log);
  t.is(printed.stdout, '');
  t.regex(printed.log, /E_USAGE: --from \S+: nothing to import: nothing is staged there/);
  t.notRegex(printed.log, /counters add up|run it again/);
  t.deepEqual(await readMaildir(join(dir, 'mail')).catch(() => []), []);

  const first = await importInto('typo/acme', dir, ['--export', EXPORT_ID]);
  t.is(first.code, 0, first.log);
  t.true(first.summary.delivered > 0);
  const again = await importInto('typo/acme', dir, ['--export', EXPORT_ID]);
  t.is(again.code, 0, again.log);
  t.like(again.summary, { batchesImported: 0, delivered: 0 });
  t.deepEqual(again.summary.exportsImportedWhole, [EXPORT_ID]);
});

test.serial('an import into a Maildir emptied at the same path passes every batch over on its marker: still exit 0 (a repeat of a complete import looks the same), but the summary counts the batches passed over and the log warns that nothing was imported, naming --again, which re-imports them; some passed over beside one read is said at info level', async (t) => {
  t.timeout(300_000);
  const { dir, first, batches } = await stagedAndImported(t, 'emptied');
  t.like(first.summary, { batchesImported: batches.length, batchesImportedEarlier: 0 });
  t.notRegex(first.log, /passed over/);
  const messages = first.summary.delivered;

  await rm(join(dir, 'mail'), { recursive: true, force: true });
  const blind = await importInto('emptied', dir);
  t.is(blind.code, 0, blind.log);
  t.like(blind.summary, { delivered: 0, batchesImported: 0, batchesImportedEarlier: batches.length });
  t.regex(blind.log, new RegExp(`warn nothing imported: all ${batches.length} staged batches found were passed over as imported by an earlier import \\(their import marker for maildir:\\S+ is in the container\\)\\. If that sink was emptied, moved or replaced since, .*import again with --again`));
  // What people read: the row in the text summary.
  const text = await cli(['import', '--from', 'azblob://staging/emptied', '--sink', `maildir:${join(dir, 'mail')}`, '--quiet'], { env });
  t.is(text.code, 0, text.log);
  t.regex(text.stdout, new RegExp(`batches passed over \\(imported earlier; --again re-imports\\) +${batches.length}\\n`));

  const again = await importInto('emptied', dir, ['--again']);
  t.is(again.code, 0, again.log);
  t.like(again.summary, { delivered: messages, batchesImported: batches.length, batchesImportedEarlier: 0 });
  t.is((await readMaildir(join(dir, 'mail'))).length, messages);

  // One marker gone: that batch is read (its messages skipped as there), the rest passed over, said without a warning.
  await container().deleteBlob((await blobNames('emptied', /\.zip\.imported-/))[0]!);
  const partial = await importInto('emptied', dir);
  t.is(partial.code, 0, partial.log);
  t.like(partial.summary, { delivered: 0, batchesImported: 1, batchesImportedEarlier: batches.length - 1 });
  t.regex(partial.log, new RegExp(`info ${batches.length - 1} staged batches passed over as imported by an earlier import \\(.*\\); --again re-imports them`));
  t.notRegex(partial.log, /warn nothing imported/);
});

test.serial('a batch deleted after this sink imported it (its marker kept) counts as imported: the next import exits 0, the export whole; an import into another sink finds it gone', async (t) => {
  t.timeout(300_000);
  const { dir, batches } = await stagedAndImported(t, 'pruned');
  const victim = batches[1]!;
  t.is((await blobNames('pruned', /\.zip\.imported-/)).length, batches.length, 'every batch marked');
  // A clean-up of what was imported: the batch goes, its marker stays.
  await container().deleteBlob(victim);

  const next = await importInto('pruned', dir);
  t.is(next.code, 0, next.log);
  t.is(next.summary.error, undefined);
  t.deepEqual(next.summary.exportsImportedWhole, [EXPORT_ID]);
  t.regex(next.log, new RegExp(`1 staged batch that the staging index lists is gone from staging but was imported into this sink before .*${escaped(victim)}`));
  t.true(await complete(dir));

  const other = await tempDir(t);
  const elsewhere = await importInto('pruned', other);
  t.is(elsewhere.code, 1, elsewhere.log);
  t.is(elsewhere.summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.true(elsewhere.summary.error?.message.includes(victim), elsewhere.summary.error?.message);
  t.deepEqual(elsewhere.summary.exportsImportedWhole, []);

  // With a signed index and --public-key a marker is no proof (it is not signed: whoever deleted the
  // batch could have written it): the batch is gone, before an import into this sink or not.
  t.is((await stage('pruned-signed', archive, ['--signing-key', key])).code, 0);
  const signed = await tempDir(t);
  const trusting = ['--public-key', `${key}.pub`];
  t.is((await importInto('pruned-signed', signed, trusting)).code, 0);
  const signedVictim = (await blobNames('pruned-signed', /\.zip$/))[1]!;
  await container().deleteBlob(signedVictim);
  const forged = await importInto('pruned-signed', signed, trusting);
  t.is(forged.code, 1, forged.log);
  t.is(forged.summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.true(forged.summary.error?.message.includes(signedVictim), forged.summary.error?.message);
  t.deepEqual(forged.summary.exportsImportedWhole, []);
});

test.serial("a well-formed batch of the export that its latest index does not name, put into the export's folder, is refused: not imported, recorded failed, exit 1, not whole; with the signed index and --public-key, and with an unsigned one", async (t) => {
  t.timeout(300_000);
  t.is((await stage('planted', archive, ['--signing-key', key])).code, 0);
  t.is((await stage('donor', corrected)).code, 0);
  const indexed = await blobNames('planted', /\.zip$/);
  // A batch of the same export id, made by a staging run elsewhere, copied in under a name of its shape.
  const [donor] = await blobNames('donor', /\.zip$/);
  const planted = donor!.replace(/^donor\//, 'planted/');
  const source = container().getBlockBlobClient(donor!);
  const body = await source.downloadToBuffer();
  await container().getBlockBlobClient(planted).upload(body, body.length, { metadata: (await source.getProperties()).metadata });
  const plantedEntries = await entriesOf(planted);
  const indexedBytes = new Set<string>();
  let indexedMessages = 0;
  for (const name of indexed) {
    const entries = await entriesOf(name);
    for (const e of entries) indexedBytes.add(e.sha256);
    indexedMessages += entries.length;
  }

  for (const trust of [['--public-key', `${key}.pub`], []]) {
    const dir = await tempDir(t);
    const { code, log, summary, statusLines } = await importInto('planted', dir, trust);
    t.is(code, 1, log);
    t.is(summary.error?.code, 'E_STAGING_UNTRUSTED');
    t.true(summary.error?.message.includes(planted), summary.error?.message);
    t.like(summary, { delivered: indexedMessages, failed: plantedEntries.length, batchesFailed: 1, batchesImported: indexed.length });
    t.deepEqual(summary.exportsImportedWhole, []);
    t.regex(log, new RegExp(`E_STAGING_UNTRUSTED: staged batch ${escaped(planted)} is not imported: the export's latest ${trust.length > 0 ? 'signed ' : ''}staging index \\(written \\S+\\) does not name it`));
    t.like(statusLines.find((l) => l.record === 'batch' && l.batch === planted), { outcome: 'failed', items: plantedEntries.length });
    const mail = await readMaildir(join(dir, 'mail'));
    t.is(mail.length, indexedMessages, 'nothing of the planted batch is delivered');
    // The other run's messages share Message-IDs with this one's (same export id, same item ids), not bytes.
    const plantedBytes = new Set(plantedEntries.map((e) => e.sha256));
    const sha256 = (raw: Buffer) => createHash('sha256').update(raw).digest('hex');
    t.true(mail.every((m) => indexedBytes.has(sha256(m.raw))), 'a mailbox holds the staged bytes');
    t.false(mail.some((m) => plantedBytes.has(sha256(m.raw))));
    t.false(await complete(dir));
  }
});

test.serial('a corrected re-staging stopped part-way beside the older complete index: the import fails naming the export (E_STAGING_INCOMPLETE), delivers none of the new batches, is not whole; staged to the end, the import is whole', async (t) => {
  t.timeout(300_000);
  t.is((await stage('restaged', archive)).code, 0);
  const v1 = await blobNames('restaged', /\.zip$/);
  // An importer that took the first staging whole before the re-staging began.
  const early = await tempDir(t);
  t.is((await importInto('restaged', early)).code, 0);
  t.true(await complete(early));
  const stopper = join(workDir, 'stopper.mjs');
  await writeFile(stopper, STOPPER_PLUGIN);
  const stopped = await stage('restaged', corrected, ['--plugin', stopper], { STOP_AT: '150' });
  t.is(stopped.code, 4, stopped.log);
  const v2 = (await blobNames('restaged', /\.zip$/)).filter((n) => !v1.includes(n));
  t.true(v2.length >= 2, `${v2.length} batches of the stopped run`);
  t.is((await blobNames('restaged', /\/index-[^/]+\.json$/)).length, 1, 'the first run\'s index alone');

  const dir = await tempDir(t);
  const { code, log, summary, statusLines } = await importInto('restaged', dir);
  t.is(code, 1, log);
  t.is(summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.regex(summary.error!.message, new RegExp(`the staging of export ${EXPORT_ID} is part-way \\(a staging run of it started \\S+ \\(\\S+ pid \\d+\\) has not finished \\(restaged/${EXPORT_ID}/staging\\.run\\)\\)`));
  t.deepEqual(summary.exportsImportedWhole, []);
  t.is(summary.batchesImported, v1.length);
  t.is(summary.batchesFailed, v2.length);
  for (const name of v2) t.like(statusLines.find((l) => l.record === 'batch' && l.batch === name), { outcome: 'failed' });
  let v1Messages = 0;
  for (const name of v1) v1Messages += (await entriesOf(name)).length;
  t.is((await readMaildir(join(dir, 'mail'))).length, v1Messages, 'none of the stopped run\'s batches delivered');
  t.false(await complete(dir));
  // The importer that had it whole: its next import finds the staging part-way, and status no longer calls the export complete on the earlier import's word.
  const again = await importInto('restaged', early);
  t.is(again.code, 1, again.log);
  t.is(again.summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.false(await complete(early));

  t.is((await stage('restaged', corrected)).code, 0);
  const whole = await importInto('restaged', dir);
  t.is(whole.code, 0, whole.log);
  t.deepEqual(whole.summary.exportsImportedWhole, [EXPORT_ID]);
  t.true(await complete(dir));
});

test.serial('a batch its latest index does not name that an earlier import (an older version) imported into this sink, its marker there: the import fails (exit 1, not whole) saying it was imported, and records and counts it failed; with --again too', async (t) => {
  t.timeout(300_000);
  t.is((await stage('upgraded', archive)).code, 0);
  t.is((await stage('upgraded-donor', corrected)).code, 0);
  const dir = await tempDir(t);
  const first = await importInto('upgraded', dir);
  t.is(first.code, 0, first.log);
  const indexed = await blobNames('upgraded', /\.zip$/);
  // What an older version left: a batch no index names, imported and marked by it for this sink.
  const [donor] = await blobNames('upgraded-donor', /\.zip$/);
  const planted = donor!.replace(/^upgraded-donor\//, 'upgraded/');
  const body = await container().getBlockBlobClient(donor!).downloadToBuffer();
  await container().getBlockBlobClient(planted).upload(body, body.length);
  const [marker] = await blobNames('upgraded', /\.zip\.imported-/);
  const markerBody = await container().getBlockBlobClient(marker!).downloadToBuffer();
  await container().getBlockBlobClient(`${planted}${marker!.slice(marker!.lastIndexOf('.imported-'))}`).upload(markerBody, markerBody.length);

  const next = await importInto('upgraded', dir);
  t.is(next.code, 1, next.log);
  t.like(next.summary, { batchesImported: 0, batchesFailed: 1, delivered: 0, failed: 0 });
  t.is(next.summary.error?.code, 'E_STAGING_UNTRUSTED');
  t.regex(next.summary.error!.message, new RegExp(`^1 staged batch that no staging index names \\(${escaped(planted)}\\) was imported into this sink by an earlier import \\(its import marker for this sink is there\\), but no staging run that finished vouches for it; check .* then stage the export again \\(its index then names it\\) or delete it; no export is reported imported whole by this import$`));
  t.notRegex(next.summary.error!.message, /not imported/);
  const record = next.statusLines.find((l) => l.record === 'batch' && l.batch === planted);
  t.like(record, { outcome: 'failed' });
  t.regex(String(record?.detail), /^E_STAGING_UNTRUSTED: staged batch \S+ was imported into this sink by an earlier import \(its import marker for this sink is there\), but the export's latest staging index \(written \S+\) does not name it/);
  t.deepEqual(next.summary.exportsImportedWhole, []);

  // --again reads it (and fails it whole, none of it delivered again): the error still says an earlier import imported it.
  const again = await importInto('upgraded', dir, ['--again']);
  t.is(again.code, 1, again.log);
  t.like(again.summary, { batchesImported: indexed.length, batchesFailed: 1, delivered: 0, failed: (await entriesOf(planted)).length });
  t.regex(again.summary.error!.message, new RegExp(`^1 staged batch that no staging index names \\(${escaped(planted)}\\) was imported into this sink by an earlier import`));
  t.deepEqual(again.summary.exportsImportedWhole, []);
});

test.serial('a folder that holds only a staging lock (a staging run that has just started) or only an unfinished staging-run record: the import fails naming the export as part-way (E_STAGING_INCOMPLETE, exit 1), not as nothing staged', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const lock = container().getBlockBlobClient(`starting/${EXPORT_ID}/staging.lock`);
  await lock.upload('', 0);
  const lease = lock.getBlobLeaseClient();
  await lease.acquireLease(60);
  try {
    for (const options of [[], ['--export', EXPORT_ID]]) {
      const underWay = await importInto('starting', dir, options);
      t.is(underWay.code, 1, underWay.log);
      t.is(underWay.summary.error?.code, 'E_STAGING_INCOMPLETE');
      t.regex(underWay.summary.error!.message, new RegExp(`^the staging of export ${EXPORT_ID} is part-way \\(a staging run of it is under way: it holds the lease on starting/${EXPORT_ID}/staging\\.lock and has staged nothing yet\\)`));
    }
  } finally {
    await lease.releaseLease();
  }
  const left = await importInto('starting', dir);
  t.is(left.code, 1, left.log);
  t.regex(left.summary.error!.message, new RegExp(`^the staging of export ${EXPORT_ID} is part-way \\(its staging lock starting/${EXPORT_ID}/staging\\.lock is there and nothing else of it: a staging run of it is starting, or stopped before it staged anything\\)`));

  const run = stagingRunText({ format: RUN_FORMAT, version: 1, exportId: EXPORT_ID, startedAt: new Date().toISOString(), by: 'stager pid 7' });
  await container().getBlockBlobClient(`recorded/${EXPORT_ID}/staging.run`).upload(run, run.length);
  const recorded = await importInto('recorded', dir);
  t.is(recorded.code, 1, recorded.log);
  t.is(recorded.summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.regex(recorded.summary.error!.message, new RegExp(`^the staging of export ${EXPORT_ID} is part-way \\(a staging run of it started \\S+ \\(stager pid 7\\) has not finished \\(recorded/${EXPORT_ID}/staging\\.run\\)\\)`));
  t.deepEqual(await readMaildir(join(dir, 'mail')), []);
});
