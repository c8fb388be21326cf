import test from 'ava';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import archiver from 'archiver';
import unzipper from 'unzipper';
import { generateSample } from '../src/sample/generate.js';
import { startAzurite, type Azurite } from './helpers/azurite.js';
import { startIdentityEndpoint } from './helpers/identity-endpoint.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

interface StagedBatch {
  name: string;
  metadata: Record<string, string>;
  manifest: { exportId: string; entries: { name: string; mailbox: string; itemId: string; messageId: string; sha256: string }[] };
  files: Map<string, Buffer>;
}

/** Every staged batch in a container, read with the SDK and unzipper (not with our reader). */
async function readStaging(azurite: Azurite, container: string): Promise<StagedBatch[]> {
  const client = azurite.container(container);
  const batches: StagedBatch[] = [];
  for await (const blob of client.listBlobsFlat({ includeMetadata: true })) {
    if (!blob.name.endsWith('.zip')) continue;
    const zip = (await unzipper.Open.buffer(await client.getBlockBlobClient(blob.name).downloadToBuffer())) as { files: { path: string; buffer(): Promise<Buffer> }[] };
    const files = new Map<string, Buffer>();
    for (const f of zip.files) files.set(f.path, await f.buffer());
    batches.push({ name: blob.name, metadata: blob.metadata ?? {}, manifest: JSON.parse(files.get('manifest.json')!.toString()) as StagedBatch['manifest'], files });
  }
  return batches;
}

async function makeArchive(dir: string, seed: number, events = 3000): Promise<string> {
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events, messageFiles: 2, seed });
  return archive;
}

test('archive -> Blob staging -> import -> Maildir equals a direct run, byte for byte; re-runs stage and import nothing twice', async (t) => {
  t.timeout(600_000);
  const azurite = await startAzurite();
  t.teardown(() => azurite.dispose());
  const dir = await tempDir(t);
  const archive = await makeArchive(dir, 41);
  const rejects = ['--rejects', join(dir, 'rejects')];
  const direct = join(dir, 'direct');
  t.is((await cli(['run', '--all-domains', archive, '--sink', `maildir:${direct}`, ...rejects])).code, 0);

  const sink = 'azblob://pivot-staging/acme?messages=200';
  const staged = await cli(['run', archive, '--sink', sink, '--status-log', join(dir, 'stage.jsonl'), ...rejects], { env: azurite.env as Record<string, string> });
  t.is(staged.code, 0, staged.stderr);
  const stageSummary = (await readStatusLog(join(dir, 'stage.jsonl'))).summary;
  t.true(stageSummary.balanced);
  t.true(stageSummary.delivered > 0);
  t.is(stageSummary.skipped, 0);
  const batches = await readStaging(azurite, 'pivot-staging');
  t.true(batches.length > 5, `expected several batches, got ${batches.length}`);
  const keys = batches.flatMap((b) => b.manifest.entries.map((e) => `${e.mailbox} ${e.messageId}`));
  t.is(keys.length, stageSummary.delivered);
  t.is(new Set(keys).size, keys.length, 'no (mailbox, Message-ID) staged twice');
  for (const b of batches) {
    t.true(b.name.startsWith('acme/acme-2026-11-23/'), b.name);
    t.is(b.metadata.itemcount, String(b.manifest.entries.length));
    t.is(decodeURIComponent(b.metadata.exportid!), 'acme-2026-11-23');
    t.true(b.manifest.entries.length <= 200);
  }

  const imported = join(dir, 'imported');
  const imp = await cli(['import', '--from', 'azblob://pivot-staging/acme', '--sink', `maildir:${imported}`, '--status-log', join(dir, 'import.jsonl')], { env: azurite.env as Record<string, string> });
  t.is(imp.code, 0, imp.stderr);
  const want = await readMaildir(direct);
  const got = await readMaildir(imported);
  t.deepEqual(got.map((m) => `${m.mailbox}/${m.file}`), want.map((m) => `${m.mailbox}/${m.file}`));
  t.true(got.every((m, i) => m.raw.equals(want[i]!.raw)), 'byte-identical messages');
  t.true(got.every((m, i) => m.mtime.getTime() === want[i]!.mtime.getTime()), 'same INTERNALDATE');
  // An item's copies are hard links to one file in both (import gives them one copyKey, as fan-out
  // does); at most an item whose copies straddle two batches gets a second file.
  const files = async (root: string, stored: typeof got) =>
    new Set(await Promise.all(stored.map(async (m) => (await stat(join(root, m.mailbox, '.INBOX.Pivot', 'cur', m.file))).ino))).size;
  const directFiles = await files(direct, want);
  t.true(directFiles < want.length / 2, `${directFiles} files for ${want.length} messages`);
  t.true((await files(imported, got)) <= directFiles + batches.length);

  // Staging the same export again uploads nothing; importing again reads nothing.
  const again = await cli(['run', archive, '--sink', sink, '--status-log', join(dir, 'stage2.jsonl'), ...rejects], { env: azurite.env as Record<string, string> });
  t.is(again.code, 0, again.stderr);
  const againSummary = (await readStatusLog(join(dir, 'stage2.jsonl'))).summary;
  t.is(againSummary.delivered, 0);
  t.is(againSummary.skipped, stageSummary.delivered);
  t.is((await readStaging(azurite, 'pivot-staging')).length, batches.length);
  const reimport = await cli(['import', '--from', 'azblob://pivot-staging/acme', '--sink', `maildir:${imported}`, '--json'], { env: azurite.env as Record<string, string> });
  t.is(reimport.code, 0, reimport.stderr);
  t.like(JSON.parse(reimport.stdout), { batchesImported: 0, itemsStaged: 0 });
  const forced = await cli(['import', '--from', 'azblob://pivot-staging/acme', '--sink', `maildir:${imported}`, '--again', '--json'], { env: azurite.env as Record<string, string> });
  t.like(JSON.parse(forced.stdout), { batchesImported: batches.length, delivered: 0, skipped: stageSummary.delivered, balanced: true });
  t.is((await readMaildir(imported)).length, want.length);
});

test('a tampered staged batch is detected on import: the altered message fails, the rest is delivered, the batch stays pending', async (t) => {
  t.timeout(300_000);
  const azurite = await startAzurite();
  t.teardown(() => azurite.dispose());
  const dir = await tempDir(t);
  const archive = await makeArchive(dir, 42, 600);
  const env = azurite.env as Record<string, string>;
  t.is((await cli(['run', archive, '--sink', 'azblob://staging', '--rejects', join(dir, 'rejects')], { env })).code, 0);
  const [victim] = await readStaging(azurite, 'staging');
  // Re-zip the batch with one message altered and upload it over the original.
  const altered = victim!.manifest.entries[1]!;
  const zip = archiver('zip');
  for (const [name, bytes] of victim!.files) zip.append(name === altered.name ? Buffer.concat([bytes, Buffer.from('\r\nX-Injected: 1\r\n')]) : bytes, { name });
  void zip.finalize();
  const chunks: Buffer[] = [];
  for await (const c of zip) chunks.push(c as Buffer);
  const body = Buffer.concat(chunks);
  await azurite.container('staging').getBlockBlobClient(victim!.name).upload(body, body.length);

  const out = join(dir, 'mail');
  const status = join(dir, 'import.jsonl');
  const imp = await cli(['import', '--from', 'azblob://staging', '--sink', `maildir:${out}`, '--status-log', status, '--json'], { env });
  t.is(imp.code, 1, imp.stderr);
  const summary = JSON.parse(imp.stdout) as { failed: number; batchesFailed: number; balanced: boolean };
  t.like(summary, { failed: 1, batchesFailed: 1, balanced: true });
  const lines = (await readFile(status, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const failure = lines.find((l) => l.outcome === 'failed')!;
  t.like(failure, { itemId: altered.itemId, mailbox: altered.mailbox, reason: 'staged-mismatch' });
  t.regex(String(failure.detail), /sha256/);
  const stored = await readMaildir(out);
  t.false(stored.some((m) => m.raw.includes('X-Injected')), 'the altered message is never imported');
  t.false(stored.some((m) => m.mailbox === altered.mailbox && m.parsed.messageId === altered.messageId));
  const stagedTotal = (await readStaging(azurite, 'staging')).reduce((n, b) => n + b.manifest.entries.length, 0);
  t.is(stored.length, stagedTotal - 1, 'every other message is delivered');
  // The batch was not marked: a later import tries it again (and fails again, loudly).
  const state = join(dir, 'state');
  const again = await cli(['import', '--from', 'azblob://staging', '--sink', `maildir:${out}`, '--state-dir', state, '--json'], { env });
  t.like(JSON.parse(again.stdout), { failed: 1, batchesFailed: 1 });
  // A scheduled import keeps its history like a run: `status` shows it, with what failed.
  const report = await cli(['status', '--state-dir', state]);
  t.regex(report.stdout, /import azblob:\/\/devstoreaccount1\/staging -> maildir:/);
  t.regex(report.stdout, new RegExp(`failed: batch ${victim!.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: 1 message\\(s\\) failed`));
  t.regex(report.stdout, new RegExp(`failed: item ${altered.itemId} -> ${altered.mailbox.replace('.', '\\.')}: .*sha256`));
  // And one at a time: while another process holds the state dir, an import does nothing, exit 3.
  await writeFile(join(state, 'lock'), JSON.stringify({ pid: process.pid, host: hostname(), startedAt: new Date().toISOString() }));
  const locked = await cli(['import', '--from', 'azblob://staging', '--sink', `maildir:${join(dir, 'other')}`, '--state-dir', state], { env });
  t.is(locked.code, 3, locked.stderr);
  t.regex(locked.log, /E_LOCKED: another run holds/);
  t.deepEqual(await readMaildir(join(dir, 'other')), []);
});

test('a staged batch that is gone (deleted after staging) fails the import (E_STAGING_INCOMPLETE, exit 1) naming it, also from a parent prefix, while the rest is imported; staged again, the import completes', async (t) => {
  t.timeout(300_000);
  const azurite = await startAzurite();
  t.teardown(() => azurite.dispose());
  const dir = await tempDir(t);
  const archive = await makeArchive(dir, 43, 600);
  const env = azurite.env as Record<string, string>;
  const stage = () => cli(['run', archive, '--sink', 'azblob://staging/acme?messages=100', '--rejects', join(dir, 'rejects')], { env });
  t.is((await stage()).code, 0);
  const client = azurite.container('staging');
  const names: string[] = [];
  for await (const blob of client.listBlobsFlat({ prefix: 'acme/' })) names.push(blob.name);
  t.is(names.filter((n) => /\/index-\d{8}T\d{9}Z-[0-9a-f]{8}\.json$/.test(n)).length, 1, names.join(' '));
  const batches = await readStaging(azurite, 'staging');
  const [victim, ...rest] = batches;
  await client.deleteBlob(victim!.name);

  // From a parent prefix (the container's root) the staging index is the export folder's own all the same.
  const fromRoot = await cli(['import', '--from', 'azblob://staging', '--sink', `maildir:${join(dir, 'mail-root')}`, '--json'], { env });
  t.is(fromRoot.code, 1, fromRoot.stdout);
  const rootSummary = JSON.parse(fromRoot.stdout) as { error: { code: string; message: string }; exportsWithoutIndex?: number };
  t.is(rootSummary.error.code, 'E_STAGING_INCOMPLETE');
  t.true(rootSummary.error.message.includes(victim!.name), rootSummary.error.message);

  const out = join(dir, 'mail');
  const status = join(dir, 'import.jsonl');
  const state = join(dir, 'state');
  const imp = await cli(['import', '--from', 'azblob://staging/acme', '--sink', `maildir:${out}`, '--status-log', status, '--state-dir', state, '--json'], { env });
  t.is(imp.code, 1, imp.stderr);
  const summary = JSON.parse(imp.stdout) as { error: { code: string; message: string }; batchesImported: number };
  t.is(summary.error.code, 'E_STAGING_INCOMPLETE');
  t.true(summary.error.message.includes(victim!.name), summary.error.message);
  t.is(summary.batchesImported, rest.length);
  t.is((await readMaildir(out)).length, rest.reduce((n, b) => n + b.manifest.entries.length, 0));
  const exportId = victim!.manifest.exportId;
  const statusOf = () => cli(['status', '--state-dir', state, '--export', exportId, '--json']);
  const incomplete = await statusOf();
  t.is(incomplete.code, 1, 'an import that missed a batch leaves the export INCOMPLETE');
  t.false((JSON.parse(incomplete.stdout) as { account: { complete: boolean } }).account.complete);

  // Staging again stages what is missing; the next import delivers it and is whole.
  t.is((await stage()).code, 0);
  const again = await cli(['import', '--from', 'azblob://staging/acme', '--sink', `maildir:${out}`, '--state-dir', state, '--json'], { env });
  t.is(again.code, 0, again.stderr);
  t.deepEqual((JSON.parse(again.stdout) as { exportsImportedWhole: string[] }).exportsImportedWhole, [exportId]);
  t.is((await readMaildir(out)).length, batches.reduce((n, b) => n + b.manifest.entries.length, 0));
  const complete = await statusOf();
  t.is(complete.code, 0, complete.stdout);
  t.true((JSON.parse(complete.stdout) as { account: { complete: boolean } }).account.complete);
});

test('Azurite stopped mid-run: failures are recorded, exit 1; after a restart a re-run completes the staging with nothing twice', async (t) => {
  t.timeout(300_000);
  const azurite = await startAzurite({ persistent: true });
  t.teardown(() => azurite.dispose());
  const dir = await tempDir(t);
  const archive = await makeArchive(dir, 43, 6000);
  const env = azurite.env as Record<string, string>;
  const rejects = ['--rejects', join(dir, 'rejects')];
  const sink = 'azblob://staging/acme?messages=100&retries=0';
  // Stop the emulator once the first batches are there, and keep it down until the run ends.
  const running = cli(['run', archive, '--sink', sink, '--status-log', join(dir, 'first.jsonl'), ...rejects], { env });
  const client = azurite.container('staging');
  for (;;) {
    const names: string[] = [];
    try {
      for await (const b of client.listBlobsFlat()) names.push(b.name);
    } catch {
      // the container is not there yet
    }
    if (names.length >= 3) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  await azurite.stop();
  const first = await running;
  t.is(first.code, 1, first.stderr);
  const firstSummary = (await readStatusLog(join(dir, 'first.jsonl'))).summary;
  t.true(firstSummary.failed > 0);
  t.true(firstSummary.delivered > 0);
  t.true(firstSummary.balanced);

  await azurite.start();
  const second = await cli(['run', archive, '--sink', sink, '--status-log', join(dir, 'second.jsonl'), ...rejects], { env });
  t.is(second.code, 0, second.stderr);
  const secondSummary = (await readStatusLog(join(dir, 'second.jsonl'))).summary;
  t.is(secondSummary.skipped, firstSummary.delivered, 'what the first run staged is skipped');
  t.is(secondSummary.delivered, firstSummary.failed, 'what failed is staged now');
  const keys = (await readStaging(azurite, 'staging')).flatMap((b) => b.manifest.entries.map((e) => `${e.mailbox} ${e.messageId}`));
  t.is(keys.length, secondSummary.itemsAvailableForImport);
  t.is(new Set(keys).size, keys.length, 'no (mailbox, Message-ID) staged twice');
});

test('Azure AD: with AZURE_STORAGE_ACCOUNT_URL alone, staging and import authenticate with a managed-identity token over HTTPS', async (t) => {
  t.timeout(300_000);
  const azurite = await startAzurite({ oauth: true });
  t.teardown(() => azurite.dispose());
  const identity = await startIdentityEndpoint();
  t.teardown(() => identity.close());
  const dir = await tempDir(t);
  const archive = await makeArchive(dir, 44, 300);
  const rejects = ['--rejects', join(dir, 'rejects')];
  const direct = join(dir, 'direct');
  t.is((await cli(['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${direct}`, ...rejects])).code, 0);
  const env = { AZURE_STORAGE_ACCOUNT_URL: azurite.accountUrl, NODE_EXTRA_CA_CERTS: azurite.certFile!, ...identity.env };
  const staged = await cli(['run', '--max-rejected', '100%', archive, '--sink', 'azblob://aad-staging', ...rejects], { env });
  t.is(staged.code, 0, staged.stderr);
  t.true(identity.tokensIssued() > 0, 'the token came from the identity endpoint');
  const imported = join(dir, 'imported');
  const imp = await cli(['import', '--from', 'azblob://aad-staging', '--sink', `maildir:${imported}`], { env });
  t.is(imp.code, 0, imp.stderr);
  const want = await readMaildir(direct);
  const got = await readMaildir(imported);
  t.deepEqual(got.map((m) => `${m.mailbox}/${m.file}`), want.map((m) => `${m.mailbox}/${m.file}`));
  // Without a token source the run stops before delivering anything, with the library's reason.
  const noIdentity = await cli(['run', archive, '--sink', 'azblob://aad-staging', ...rejects], { env: { AZURE_STORAGE_ACCOUNT_URL: azurite.accountUrl, NODE_EXTRA_CA_CERTS: azurite.certFile!, IDENTITY_ENDPOINT: '', IDENTITY_HEADER: '' } });
  t.is(noIdentity.code, 2);
  t.regex(noIdentity.log, /cannot reach the container: .*(credential|token|Managed Identity)/i);
});
