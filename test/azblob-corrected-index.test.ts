// Blob staging of a corrected re-delivery (the same events, one with other bytes) against a real
// Azurite: the staging index the second run leaves names every batch the export holds, also the
// one holding only the first version, which nothing of the second run is found in. Was: that
// batch was left out of the index, so when it went missing the import exited 0, one version
// short, saying nothing.
import test from 'ava';
import { join } from 'node:path';
import { writeArchive } from './helpers/archive.js';
import { blobNamesIn, AZURITE_BLOB, azuriteMissingMessage, startAzurite, type Azurite } from './helpers/azurite.js';
import { cli } from './helpers/cli.js';
import { ATTACHMENT_BYTES, CORRECTED_EXPORT } from './helpers/corrected-export.js';
import { tempDir } from './helpers/tmp.js';

let azurite: Azurite;
test.before(async () => {
  if (!AZURITE_BLOB) throw new Error(azuriteMissingMessage());
  azurite = await startAzurite();
  await azurite.container('staging').createIfNotExists();
});
test.after.always(async () => {
  await azurite?.dispose();
});

const blobNames = (prefix: string) => blobNamesIn(azurite.container('staging'), prefix);

/** The batches the newest staging index names. */
async function indexed(prefix: string): Promise<string[]> {
  const latest = (await blobNames(prefix)).filter((n) => /\/index-[^/]+\.json$/.test(n)).at(-1)!;
  const text = (await azurite.container('staging').getBlockBlobClient(latest).downloadToBuffer()).toString('utf8');
  return ((JSON.parse(text.slice(text.indexOf('{'))) as { batches: string[] }).batches).map((b) => (b.startsWith(`${prefix}/`) ? b : `${prefix}/${b}`)).sort();
}

async function stage(prefix: string, archive: string, dir: string, query: string): Promise<void> {
  const run = await cli(['run', archive, '--sink', `azblob://staging/${prefix}?${query}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--quiet'], { env: azurite.env as Record<string, string> });
  if (run.code !== 0) throw new Error(`staging exit ${run.code}: ${run.log}`);
}

test.serial('the index after a corrected re-delivery names the batch holding only the first version: that batch gone, the import fails', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const first = await writeArchive(join(dir, 'a.zip'), CORRECTED_EXPORT);
  const corrected = await writeArchive(join(dir, 'a-corrected.zip'), { ...CORRECTED_EXPORT, attachments: { a_1: ATTACHMENT_BYTES } });
  // One message a batch: the first version of m_att gets batches of its own.
  await stage('v', first, dir, 'messages=1&linger=50');
  const firstBatches = (await blobNames('v')).filter((n) => n.endsWith('.zip'));
  await stage('v', corrected, dir, 'messages=1&linger=50');
  const batches = (await blobNames('v')).filter((n) => n.endsWith('.zip'));
  t.true(batches.length > firstBatches.length, 'the corrected version was staged beside the first');
  t.deepEqual(await indexed('v'), batches, 'the newest index names every batch');

  // A first-run batch the second run found nothing of its own in: the first version of m_att.
  const env = azurite.env as Record<string, string>;
  const importOf = (out: string) => cli(['import', '--from', 'azblob://staging/v', '--sink', `maildir:${join(out, 'mail')}`, '--state-dir', join(out, 'state'), '--json'], { env });
  const whole = await importOf(join(dir, 'whole'));
  t.is(whole.code, 0, whole.log);
  t.is((JSON.parse(whole.stdout) as { delivered: number }).delivered, 8, 'both versions of m_att and the two other messages, to two mailboxes');
  const firstOnly: string[] = [];
  for (const name of firstBatches) {
    const text = (await azurite.container('staging').getBlockBlobClient(name).downloadToBuffer()).toString('latin1');
    if (text.includes('m_att')) firstOnly.push(name);
  }
  t.is(firstOnly.length, 2, 'the first version of m_att, for each of the two mailboxes');
  for (const name of firstOnly) await azurite.container('staging').deleteBlob(name);
  const short = await importOf(join(dir, 'short'));
  t.is(short.code, 1, short.log);
  t.is((JSON.parse(short.stdout) as { error?: { code: string } }).error?.code, 'E_STAGING_INCOMPLETE');
});

test.serial('a re-delivery whose events moved to other windows: the index still names the batches of the windows it did not stage into', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const first = await writeArchive(join(dir, 'a.zip'), CORRECTED_EXPORT);
  // The same export without its first event: the others move one window down, the last window is not visited.
  const events = CORRECTED_EXPORT.messages['0.json'];
  const shorter = await writeArchive(join(dir, 'b.zip'), { ...CORRECTED_EXPORT, messages: { '0.json': events.slice(1) } });
  await stage('w', first, dir, 'messages=1&linger=50&events=1');
  await stage('w', shorter, dir, 'messages=1&linger=50&events=1');
  const batches = (await blobNames('w')).filter((n) => n.endsWith('.zip'));
  t.true(batches.some((n) => /\/0000\/0000002-/.test(n)), 'the first run staged into window 2');
  t.deepEqual(await indexed('w'), batches);
});
