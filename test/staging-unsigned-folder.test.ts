// `import --public-key` against export folders that no staging index the key signed vouches for,
// against a real Azurite: a folder of batches with no index at all (what anyone who can write to
// the container can make, and what a staging before indexes left), one whose index is unsigned,
// and one whose index another key signed. With the key, every batch of such a folder is refused
// (recorded failed, counted in `batchesRefused`, nothing of it delivered, kept in the container),
// the import fails E_STAGING_UNTRUSTED naming the folder and what to do, exit 1; the signed export
// beside it is imported. Before, such a folder was imported with a warning, exit 0 for a folder
// without an index. Without the key an index-less folder is imported, with the warning, as before.
import test from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { asStagedByOlderVersion, blobNamesIn, stagedContents, startAzuriteWithSample, type Azurite, type AzuriteWithSample } from './helpers/azurite.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

const SIGNED_ID = 'acme-2026-11-23';
const UNSIGNED_ID = 'acme-2026-11-22';

let azurite: Azurite;
let env: Record<string, string>;
let workDir: string;
/** The export staged with the staging key. */
let signedArchive: string;
/** The export put beside it with no index, an unsigned index, or one another key signed. */
let unsignedArchive: string;
let key: string;
let otherKey: string;

let fixture: AzuriteWithSample | undefined;
test.before(async () => {
  fixture = await startAzuriteWithSample({ events: 80, seed: 81 });
  ({ azurite, env, workDir, archive: signedArchive } = fixture);
  unsignedArchive = join(workDir, 'unsigned.zip');
  await generateSample(unsignedArchive, { events: 80, messageFiles: 2, seed: 83, day: '2026-11-22' });
  key = join(workDir, 'staging.key');
  otherKey = join(workDir, 'other.key');
  for (const out of [key, otherKey]) {
    const made = await cli(['keygen', '--out', out, '--name', 'staging']);
    if (made.code !== 0) throw new Error(`keygen exit ${made.code}: ${made.stderr}`);
  }
});
test.after.always(() => fixture?.dispose());

const container = () => azurite.container('staging');
const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const sha256 = (raw: Buffer) => createHash('sha256').update(raw).digest('hex');
const trusting = () => ['--public-key', `${key}.pub`];

/** Stages `archive` into `staging/<prefix>`, its index signed by `signingKey` (unsigned without one). */
async function stage(prefix: string, archive: string, signingKey?: string): Promise<void> {
  const signing = signingKey ? ['--signing-key', signingKey] : [];
  const run = await cli(['run', archive, '--sink', `azblob://staging/${prefix}?messages=20&linger=50`, '--rejects', join(workDir, `rejects-${prefix.replace(/\W/g, '-')}`), '--quiet', ...signing], { env });
  if (run.code !== 0) throw new Error(`staging into ${prefix}: exit ${run.code}: ${run.log}`);
}

/** The batches under `staging/<folder>`, and the sha256 of each message they hold (read with unzipper, not our reader). */
const stagedIn = (folder: string) => stagedContents(container(), folder);

/** The signed export under `prefix`, and beside it a folder of the other export's batches copied from `donor` without its index or staging-run record. */
async function stageWithIndexlessFolder(prefix: string): Promise<{ signed: Awaited<ReturnType<typeof stagedIn>>; indexless: Awaited<ReturnType<typeof stagedIn>>; folder: string }> {
  await stage(prefix, signedArchive, key);
  const donor = `${prefix}-donor`;
  await stage(donor, unsignedArchive);
  for (const name of await blobNamesIn(container(), `${donor}/${UNSIGNED_ID}`, /\.zip$/)) {
    const source = container().getBlockBlobClient(name);
    const body = await source.downloadToBuffer();
    await container().getBlockBlobClient(`${prefix}/${name.slice(donor.length + 1)}`).upload(body, body.length, { metadata: (await source.getProperties()).metadata });
  }
  // As an older version (or a forger) staged them: not marked by a staging run that records itself, which would fail the import as part-way.
  await asStagedByOlderVersion(container(), `${prefix}/${UNSIGNED_ID}`);
  const folder = `${prefix}/${UNSIGNED_ID}/`;
  const indexless = await stagedIn(folder.slice(0, -1));
  if ((await blobNamesIn(container(), folder.slice(0, -1))).length !== indexless.batches.length) throw new Error(`${folder} holds more than batches`);
  return { signed: await stagedIn(`${prefix}/${SIGNED_ID}`), indexless, folder };
}

interface Summary {
  delivered: number;
  failed: number;
  batchesImported: number;
  batchesFailed: number;
  batchesRefused: number;
  exportsWithoutIndex: number;
  stagingIndexesUntrusted: number;
  exportsImportedWhole: string[];
  exportsNotWhole: string[];
  error?: { code: string; message: string };
}

async function importInto(from: string, dir: string, options: string[] = []) {
  const status = join(dir, `import-${Date.now()}.jsonl`);
  const imp = await cli(['import', '--from', `azblob://staging/${from}`, '--sink', `maildir:${join(dir, 'mail')}`, '--state-dir', join(dir, 'state'), '--status-log', status, '--json', ...options], { env, timeoutMs: 240_000 });
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

/** What every refusal of a folder without a trusted index must be: the folder's batches refused and kept, the signed export delivered, exit 1. */
async function checkRefused(
  t: import('ava').ExecutionContext,
  label: string,
  result: Awaited<ReturnType<typeof importInto>>,
  dir: string,
  expected: { signed: { messages: number; batches: string[] }; refused: { messages: number; batches: string[]; bytes: Set<string> }; folder: string; why: RegExp },
) {
  const { code, log, summary, statusLines } = result;
  t.is(code, 1, `${label}: ${log}`);
  t.is(summary.error?.code, 'E_STAGING_UNTRUSTED', `${label}: ${summary.error?.message}`);
  const message = summary.error?.message ?? '';
  t.true(message.includes(expected.folder), `${label}: the error names the folder: ${message}`);
  t.regex(message, expected.why, label);
  t.regex(message, /stage that export again with --signing-key .*import that export without --public-key/, `${label}: the error says what to do`);
  t.regex(log, new RegExp(`E_STAGING_UNTRUSTED: the export folder ${escaped(expected.folder)} has no staging index of its own signed by the --public-key key`), label);
  t.like(
    summary,
    { delivered: expected.signed.messages, failed: expected.refused.messages, batchesImported: expected.signed.batches.length, batchesFailed: expected.refused.batches.length, batchesRefused: expected.refused.batches.length },
    `${label}: ${log}`,
  );
  for (const name of expected.refused.batches) {
    const line = statusLines.find((l) => l.record === 'batch' && l.batch === name);
    t.like(line, { outcome: 'failed' }, `${label}: ${name}`);
    t.regex(String(line?.detail), new RegExp(`^E_STAGING_UNTRUSTED: staged batch ${escaped(name)} is not imported: its export folder ${escaped(expected.folder)} has no staging index`), label);
  }
  for (const name of expected.signed.batches) t.like(statusLines.find((l) => l.record === 'batch' && l.batch === name), { outcome: 'imported' }, `${label}: ${name}`);
  const mail = await readMaildir(join(dir, 'mail'));
  t.is(mail.length, expected.signed.messages, `${label}: exactly the signed export is delivered`);
  t.false(
    mail.some((m) => expected.refused.bytes.has(sha256(m.raw))),
    `${label}: nothing of the refused folder is delivered`,
  );
  t.deepEqual(summary.exportsImportedWhole, [], label);
  t.deepEqual(summary.exportsNotWhole, [UNSIGNED_ID], label);
  t.false(await complete(dir, UNSIGNED_ID), label);
  // Kept to be examined: the import deletes nothing.
  for (const name of expected.refused.batches) t.true(await container().getBlockBlobClient(name).exists(), `${label}: ${name} is kept`);
}

test.serial('an export folder with no staging index beside a signed export: with --public-key every batch of it is refused and kept, the error names the folder and what to do, exit 1 (also with --export); without the key it is imported with the warning, as before', async (t) => {
  t.timeout(600_000);
  const { signed, indexless, folder } = await stageWithIndexlessFolder('indexless');
  t.true(indexless.batches.length >= 2, `${indexless.batches.length} batches`);

  const dir = await tempDir(t);
  const result = await importInto('indexless', dir, trusting());
  await checkRefused(t, 'the prefix', result, dir, { signed, refused: indexless, folder, why: new RegExp(`\\(${escaped(folder)}: it has no staging index\\)`) });
  t.is(result.summary.exportsWithoutIndex, 0, 'refused, not imported as a folder without an index');

  // That export alone: nothing delivered, every batch refused, exit 1 (not an input that cannot be read: batches no one vouches for).
  const aloneDir = await tempDir(t);
  const alone = await importInto('indexless', aloneDir, [...trusting(), '--export', UNSIGNED_ID]);
  t.is(alone.code, 1, alone.log);
  t.like(alone.summary, { delivered: 0, failed: indexless.messages, batchesFailed: indexless.batches.length, batchesRefused: indexless.batches.length, error: { code: 'E_STAGING_UNTRUSTED' } });
  t.true(alone.summary.error?.message.includes(folder), alone.summary.error?.message);

  // Without the key, an older staging (made before indexes) is imported as before: with the warning, never reported whole.
  const blindDir = await tempDir(t);
  const blind = await importInto('indexless', blindDir);
  t.is(blind.code, 0, blind.log);
  t.like(blind.summary, { delivered: signed.messages + indexless.messages, batchesFailed: 0, batchesRefused: 0, exportsWithoutIndex: 1 });
  t.regex(blind.log, new RegExp(`the staged batches under ${escaped(folder)} have no staging index`));
  t.deepEqual(blind.summary.exportsImportedWhole, [SIGNED_ID]);
  t.false(await complete(blindDir, UNSIGNED_ID));

  // The same sink, now with the key: what the import without it put there is not read again, but each batch fails, exit 1.
  // The signed export's batches are read again (a marker is no proof with the key), and the sink holds them all.
  const again = await importInto('indexless', blindDir, trusting());
  t.is(again.code, 1, again.log);
  t.like(again.summary, { delivered: 0, failed: 0, batchesImported: signed.batches.length, batchesFailed: indexless.batches.length, batchesRefused: indexless.batches.length, error: { code: 'E_STAGING_UNTRUSTED' } });
  t.true(again.summary.error?.message.includes(folder), again.summary.error?.message);
  for (const name of indexless.batches) {
    t.regex(String(again.statusLines.find((l) => l.record === 'batch' && l.batch === name)?.detail), /^E_STAGING_UNTRUSTED: staged batch \S+ was imported into this sink by an earlier import .*but its export folder/, name);
  }
  t.deepEqual(again.summary.exportsNotWhole, [UNSIGNED_ID]);
  t.false(await complete(blindDir, UNSIGNED_ID));
});

for (const { title, signer } of [
  { title: 'unsigned', signer: undefined },
  { title: 'signed by another key', signer: () => otherKey },
]) {
  test.serial(`an export folder whose staging index is ${title}, beside a signed export: with --public-key every batch of it is refused and kept, the index passed over, exit 1`, async (t) => {
    t.timeout(600_000);
    const prefix = `index-${title.replace(/\W/g, '-')}`;
    await stage(prefix, signedArchive, key);
    await stage(prefix, unsignedArchive, signer?.());
    const folder = `${prefix}/${UNSIGNED_ID}/`;
    const refused = await stagedIn(`${prefix}/${UNSIGNED_ID}`);
    const signed = await stagedIn(`${prefix}/${SIGNED_ID}`);
    t.true(refused.batches.length >= 2, `${refused.batches.length} batches`);
    const [index, ...more] = await blobNamesIn(container(), `${prefix}/${UNSIGNED_ID}`, /\/index-[^/]+\.json$/);
    t.is(more.length, 0);

    const dir = await tempDir(t);
    const result = await importInto(prefix, dir, trusting());
    await checkRefused(t, title, result, dir, { signed, refused, folder, why: new RegExp(`\\(${escaped(folder)}: its staging index is not signed by the --public-key key\\)`) });
    t.is(result.summary.stagingIndexesUntrusted, 1);
    t.regex(result.log, new RegExp(`E_STAGING_UNTRUSTED: the staging index ${escaped(index!)} is not trusted`));
  });
}
