// A staging run given --signing-key signs each staging index (a signed note), and an import given
// the matching --public-key trusts only indexes that key signed, against a real Azurite. The attack
// the unsigned index cannot stop: a writer to the container deletes a batch and uploads a newer
// index that leaves it out. Without the key the import calls the export whole; with it the forged
// index is passed over (E_STAGING_UNTRUSTED), the signed one before it finds the batch gone
// (E_STAGING_INCOMPLETE), exit 1, and nothing is reported imported whole.
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { importMarkerKey } from '../src/sources/staged-batches/index.js';
import { blobNamesIn, stagedContents, startAzuriteWithSample, type Azurite, type AzuriteWithSample } from './helpers/azurite.js';
import { cli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

const EXPORT_ID = 'acme-2026-11-23';
let azurite: Azurite;
let env: Record<string, string>;
let workDir: string;
let archive: string;
let key: string;
let otherKey: string;

let fixture: AzuriteWithSample | undefined;
test.before(async () => {
  fixture = await startAzuriteWithSample({ events: 400, seed: 46 });
  ({ azurite, env, workDir, archive } = fixture);
  key = join(workDir, 'staging.key');
  otherKey = join(workDir, 'other.key');
  for (const [out, name] of [[key, 'staging'], [otherKey, 'staging']] as const) {
    const made = await cli(['keygen', '--out', out, '--name', name]);
    if (made.code !== 0) throw new Error(`keygen exit ${made.code}: ${made.stderr}`);
  }
});
test.after.always(() => fixture?.dispose());

const container = () => azurite.container('staging');

const blobNames = (prefix: string, pattern: RegExp) => blobNamesIn(container(), prefix, pattern);

async function text(name: string): Promise<string> {
  return (await container().getBlockBlobClient(name).downloadToBuffer()).toString('utf8');
}

async function upload(name: string, body: string): Promise<void> {
  await container().getBlockBlobClient(name).upload(body, Buffer.byteLength(body));
}

async function stage(prefix: string, signingKey = key): Promise<void> {
  const run = await cli(['run', archive, '--sink', `azblob://staging/${prefix}?messages=60`, '--rejects', join(workDir, `rejects-${prefix}`), '--signing-key', signingKey, '--quiet'], { env });
  if (run.code !== 0) throw new Error(`staging exit ${run.code}: ${run.log}`);
}

interface Summary {
  delivered: number;
  batchesImported: number;
  stagingIndexesUntrusted?: number;
  exportsImportedWhole: string[];
  error?: { code: string; message: string };
}

async function importInto(prefix: string, dir: string, options: string[] = []): Promise<{ code: number | null; log: string; summary: Summary }> {
  const imp = await cli(['import', '--from', `azblob://staging/${prefix}`, '--sink', `maildir:${join(dir, 'mail')}`, '--state-dir', join(dir, 'state'), '--json', ...options], { env });
  return { code: imp.code, log: imp.log, summary: JSON.parse(imp.stdout) as Summary };
}

async function complete(dir: string): Promise<boolean> {
  const status = await cli(['status', '--state-dir', join(dir, 'state'), '--export', EXPORT_ID, '--json']);
  return (JSON.parse(status.stdout) as { account: { complete: boolean } }).account.complete;
}

/** A newer index than `real` (a later time in its name) that leaves `drop` out: what a writer to the container can make. */
function forgedIndex(realName: string, realText: string, drop: string, sign?: (text: string) => string): { name: string; body: string } {
  const real = JSON.parse(realText.slice(0, realText.indexOf('\n') + 1)) as { batches: string[]; contents: Record<string, unknown> };
  const forged = { ...real, writtenAt: '2099-01-01T00:00:00.000Z', batches: real.batches.filter((b) => b !== drop), contents: Object.fromEntries(Object.entries(real.contents).filter(([b]) => b !== drop)) };
  const body = `${JSON.stringify(forged)}\n`;
  return { name: realName.replace(/index-\d{8}T\d{9}Z-/, 'index-20990101T000000000Z-'), body: sign ? sign(body) : body };
}

test.serial('a staging run with --signing-key (no --state-dir needed) signs its index; an import with --public-key trusts it and imports the export whole', async (t) => {
  t.timeout(300_000);
  await stage('signed');
  const [indexName, ...more] = await blobNames('signed', /\/index-[^/]+\.json$/);
  t.is(more.length, 0);
  const note = await text(indexName!);
  // A signed note (c2sp.org/signed-note): the JSON line, a blank line, the signature line of the key's name.
  t.regex(note, /^\{[^\n]*\}\n\n\u2014 staging [A-Za-z0-9+/]+=*\n$/);
  t.is((JSON.parse(note.slice(0, note.indexOf('\n'))) as { exportId: string }).exportId, EXPORT_ID);
  const dir = await tempDir(t);
  const { code, log, summary } = await importInto('signed', dir, ['--public-key', `${key}.pub`]);
  t.is(code, 0, log);
  t.deepEqual(summary.exportsImportedWhole, [EXPORT_ID]);
  t.falsy(summary.stagingIndexesUntrusted);
  t.true(await complete(dir));
});

test.serial('a batch deleted and a newer unsigned index leaving it out: without --public-key the import is fooled; with it the forged index is passed over and the batch found gone, exit 1, not whole', async (t) => {
  t.timeout(300_000);
  await stage('forged');
  const [indexName] = await blobNames('forged', /\/index-[^/]+\.json$/);
  const batches = await blobNames('forged', /\.zip$/);
  t.true(batches.length >= 3, `${batches.length} batches`);
  const victim = batches[1]!;
  const forged = forgedIndex(indexName!, await text(indexName!), victim);
  await container().deleteBlob(victim);
  await upload(forged.name, forged.body);

  // The limit the README states for an import without the key: the forged index stands for the folder.
  const fooled = await tempDir(t);
  const blind = await importInto('forged', fooled);
  t.is(blind.code, 0, blind.log);
  t.deepEqual(blind.summary.exportsImportedWhole, [EXPORT_ID]);

  const dir = await tempDir(t);
  const { code, log, summary } = await importInto('forged', dir, ['--public-key', `${key}.pub`]);
  t.is(code, 1, log);
  t.deepEqual(summary.exportsImportedWhole, []);
  t.is(summary.stagingIndexesUntrusted, 1);
  t.regex(log, new RegExp(`E_STAGING_UNTRUSTED: the staging index ${forged.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not trusted: it is not signed`));
  // The signed index before it still lists the deleted batch: found gone.
  t.is(summary.error?.code, 'E_STAGING_INCOMPLETE');
  t.true(summary.error?.message.includes(victim), summary.error?.message);
  t.is((await readMaildir(join(dir, 'mail'))).length, blind.summary.delivered, 'every batch still there is imported');
  t.false(await complete(dir));
});

test.serial('an import marker forged on a batch that is there (its name is made from the sink description alone): with --public-key the batch is imported all the same, every message in the mailbox, exit 0; the next import reads every batch again and delivers nothing twice', async (t) => {
  t.timeout(300_000);
  await stage('marked');
  const batches = await blobNames('marked', /\.zip$/);
  t.true(batches.length >= 3, `${batches.length} batches`);
  const dir = await tempDir(t);
  // What anyone who can write to the container can make, for a sink whose description they can guess.
  await upload(`${batches[1]!}.imported-${importMarkerKey(`maildir:${join(dir, 'mail')}`)}`, '{}');
  const staged = await stagedContents(container(), 'marked');

  const first = await importInto('marked', dir, ['--public-key', `${key}.pub`]);
  t.is(first.code, 0, first.log);
  t.is(first.summary.batchesImported, batches.length, 'the marked batch is read too');
  t.is((await readMaildir(join(dir, 'mail'))).length, staged.messages, 'every staged message is in the mailbox');
  t.deepEqual(first.summary.exportsImportedWhole, [EXPORT_ID]);
  t.true(await complete(dir));

  const next = await importInto('marked', dir, ['--public-key', `${key}.pub`]);
  t.is(next.code, 0, next.log);
  t.like(next.summary, { batchesImported: batches.length, delivered: 0 });
  t.is((await readMaildir(join(dir, 'mail'))).length, staged.messages, 'nothing twice');
  t.deepEqual(next.summary.exportsImportedWhole, [EXPORT_ID]);
});

test.serial('an index signed by another key, or the signed index altered, is not trusted; with no signed index left the export is not whole and the import exits 1', async (t) => {
  t.timeout(300_000);
  await stage('other');
  const [indexName] = await blobNames('other', /\/index-[^/]+\.json$/);
  const real = await text(indexName!);
  // Altered after signing: one batch taken out of the JSON line, the signature line kept.
  const altered = real.replace(/"batches":\["[^"]+",/, '"batches":[');
  t.not(altered, real);
  await upload(indexName!, altered);
  // And a newer index signed by a key of the same name that is not the staging key.
  await stage('other-signer', otherKey);
  const [otherName] = await blobNames('other-signer', /\/index-[^/]+\.json$/);
  await upload(otherName!.replace('other-signer/', 'other/').replace(/index-\d{8}T\d{9}Z-/, 'index-20990101T000000000Z-'), await text(otherName!));

  const dir = await tempDir(t);
  const { code, log, summary } = await importInto('other', dir, ['--public-key', `${key}.pub`]);
  t.is(code, 1, log);
  t.is(summary.stagingIndexesUntrusted, 2);
  t.is(summary.error?.code, 'E_STAGING_UNTRUSTED');
  t.regex(log, /another key signed it, or it was changed since/);
  t.deepEqual(summary.exportsImportedWhole, []);
  t.false(await complete(dir));
});

test('import --public-key that cannot be read or is no verifier key: exit 2 before anything is imported', async (t) => {
  const dir = await tempDir(t);
  const missing = await cli(['import', '--from', 'azblob://staging/signed', '--sink', `maildir:${join(dir, 'mail')}`, '--public-key', join(dir, 'nokey.pub')], { env });
  t.is(missing.code, 2, missing.log);
  t.regex(missing.log, /E_CONFIG.*--public-key .*nokey\.pub cannot be read: ENOENT/);
  // The private key given where the public one belongs: refused, its content never shown.
  const privateText = await readFile(key, 'utf8');
  const wrong = await cli(['import', '--from', 'azblob://staging/signed', '--sink', `maildir:${join(dir, 'mail')}`, '--public-key', key], { env });
  t.is(wrong.code, 2, wrong.log);
  // PRIVATE+KEY+NAME+ID+DATA: DATA (base64, which may hold "+") is the secret.
  const secret = privateText.trim().split('+').slice(4).join('+');
  t.true(secret.length > 40);
  t.false(wrong.log.includes(secret) || wrong.log.includes(secret.slice(0, 16)), 'the key is not quoted');
  t.deepEqual(await readMaildir(join(dir, 'mail')).catch(() => []), []);
});

test.serial('a signed index copied under a newer name is not trusted: its signed time is not its name', async (t) => {
  t.timeout(300_000);
  await stage('moved');
  const [indexName] = await blobNames('moved', /\/index-[^/]+\.json$/);
  const copy = indexName!.replace(/index-\d{8}T\d{9}Z-/, 'index-20990101T000000000Z-');
  await upload(copy, await text(indexName!));
  const dir = await tempDir(t);
  const { code, log, summary } = await importInto('moved', dir, ['--public-key', `${key}.pub`]);
  t.is(code, 1, log);
  t.is(summary.stagingIndexesUntrusted, 1);
  t.regex(log, new RegExp(`${copy.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not trusted: its signed time \\S+ is not the one its name says`));
  t.deepEqual(summary.exportsImportedWhole, []);
});
