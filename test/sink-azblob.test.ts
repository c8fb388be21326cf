import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import unzipper from 'unzipper';
import { ContainerSASPermissions } from '@azure/storage-blob';
import { createAzureBlobSink } from '../src/sinks/azblob/index.js';
import { parseAzureBlobSpec } from '../src/sinks/azblob/config.js';
import { parseStagingRun } from '../src/formats/staged-batch/staging-run.js';
import { redactSecrets } from '../src/redact.js';
import { AZURITE_BLOB, azuriteMissingMessage, readStagedAt, rewriteStaged, startAzurite, type Azurite } from './helpers/azurite.js';
import { createAzureBlobReader } from '../src/sinks/azblob/reader.js';
import { cli } from './helpers/cli.js';
import { freePort } from './helpers/net.js';
import { alterOneByte, delivery, everyCase, readerCases, sinkConformance, withServer } from './helpers/sink-conformance.js';
import { azureBlobOptions } from '../src/sinks/azblob/options.js';
import { tempDir } from './helpers/tmp.js';

withServer('Azurite (Azure Blob)', AZURITE_BLOB ? undefined : azuriteMissingMessage(), () => {
  let azurite: Azurite;
  let stores = 0;

  test.before(async () => {
    azurite = await startAzurite();
  });
  test.after.always(async () => {
    await azurite?.dispose();
  });

  /** Every .eml of every staged batch for a mailbox, read with the SDK and unzipper, not our reader. */
  async function readStaged(container: string, mailbox: string): Promise<Buffer[]> {
    const found: Buffer[] = [];
    const client = azurite.container(container);
    if (!(await client.exists())) return found;
    for await (const blob of client.listBlobsFlat()) {
      // Batches only (a run also leaves its index of them).
      if (!blob.name.endsWith('.zip')) continue;
      const zip = (await unzipper.Open.buffer(await client.getBlockBlobClient(blob.name).downloadToBuffer())) as { files: unknown };
      const files = zip.files as { path: string; buffer(): Promise<Buffer> }[];
      const manifest = JSON.parse((await files.find((f) => f.path === 'manifest.json')!.buffer()).toString()) as { entries: { name: string; mailbox: string }[] };
      for (const entry of manifest.entries.filter((e) => e.mailbox === mailbox)) found.push(await files.find((f) => f.path === entry.name)!.buffer());
    }
    return found;
  }

  const KEY_SECRET = 'c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Q=';
  const SAS_SECRET = 'Sig-Not-Real-42';

  sinkConformance(
    {
      name: 'azblob',
      async store() {
        const container = `conformance-${++stores}`;
        return {
          create: async () => createAzureBlobSink(`azblob://${container}/staging?linger=50`, { env: azurite.env }),
          read: (mailbox) => readStaged(container, mailbox),
          async breakStore() {
            // The container deleted under the open sink: every upload is refused (404).
            await azurite.container(container).delete();
            return { mailbox: 'jane@acme.example', repair: async () => undefined };
          },
          readAt: (location) => readStagedAt(azurite.container(container), location),
          reader: async () => createAzureBlobReader(`azblob://${container}/staging`, { env: azurite.env }),
          tamper: {
            // The batch uploaded again with one entry changed; its manifest (and its sha256 there) kept.
            alter: (_mailbox, location) => rewriteStaged(azurite.container(container), location, (files, entry) => files.map((f) => (f.name === entry ? { ...f, data: alterOneByte(f.data) } : f))),
            // The entry dropped from the batch and from its manifest.
            remove: (_mailbox, location) =>
              rewriteStaged(azurite.container(container), location, (files, entry) =>
                files.flatMap((f) => {
                  if (f.name === entry) return [];
                  if (f.name !== 'manifest.json') return [f];
                  const manifest = JSON.parse(f.data.toString('utf8')) as { entries: { name: string }[] };
                  return [{ ...f, data: Buffer.from(JSON.stringify({ ...manifest, entries: manifest.entries.filter((e) => e.name !== entry) })) }];
                }),
              ),
          },
        };
      },
      unusableReader: async () => createAzureBlobReader('azblob://never-made', { env: azurite.env }),
      options: azureBlobOptions,
      withOptions: async (query) => createAzureBlobSink(`azblob://config-check/x?${query}`, { env: azurite.env }),
      unusable: async () =>
        createAzureBlobSink('azblob://nowhere?retries=0', { env: { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString.replace(`:${azurite.port}/`, `:${await freePort()}/`) } }),
      secrets: [
        {
          secret: KEY_SECRET,
          create: async () =>
            createAzureBlobSink('azblob://secret-check', { env: { AZURE_STORAGE_CONNECTION_STRING: `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${KEY_SECRET};BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;` } }),
        },
        { secret: SAS_SECRET, create: async () => createAzureBlobSink('azblob://secret-check', { env: { AZURE_STORAGE_ACCOUNT_URL: `http://127.0.0.1:1/devstoreaccount1?sv=2021-08-06&sig=${SAS_SECRET}` } }) },
        { secret: SAS_SECRET, create: async () => createAzureBlobSink('azblob://secret-check', { env: { AZURE_STORAGE_ACCOUNT_URL: 'http://127.0.0.1:1/devstoreaccount1', AZURE_STORAGE_SAS_TOKEN: `?sv=2021-08-06&sig=${SAS_SECRET}` } }) },
      ],
    },
    // A staged batch has no flags a mail client could change.
    [...everyCase, ...readerCases],
  );

  test('azblob spec: validated before any I/O; unknown options, bad names and missing credentials are E_SINK_CONFIG', (t) => {
    const env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString };
    t.like(parseAzureBlobSpec('azblob://pivot-staging/acme/nightly?messages=10&mib=2'), { container: 'pivot-staging', prefix: 'acme/nightly', messages: 10, maxBatchBytes: 2 * 1024 * 1024 });
    t.throws(() => parseAzureBlobSpec('azblob://pivot-staging?bogus=1'), { code: 'E_SINK_CONFIG', message: /unknown option "bogus"/ });
    t.throws(() => parseAzureBlobSpec('azblob://Pivot_Staging'), { code: 'E_SINK_CONFIG', message: /container/ });
    t.throws(() => parseAzureBlobSpec('azblob://pivot-staging/../x'), { code: 'E_SINK_CONFIG', message: /prefix/ });
    t.throws(() => parseAzureBlobSpec('azblob://pivot-staging?messages=0'), { code: 'E_SINK_CONFIG', message: /messages must be/ });
    t.throws(() => createAzureBlobSink('azblob://pivot-staging', { env: {} }), { code: 'E_SINK_CONFIG', message: /AZURE_STORAGE_CONNECTION_STRING/ });
    const sink = createAzureBlobSink('azblob://pivot-staging/acme', { env });
    t.is(sink.description, 'azblob://devstoreaccount1/pivot-staging/acme');
    t.false(sink.description.includes('AccountKey'));
  });

  test('azblob: a run never told its export was settled (stopped part-way, or with items it could not keep) leaves its batches and no index', async (t) => {
    const sink = createAzureBlobSink('azblob://unsettled/x?linger=20', { env: azurite.env });
    await sink.open();
    t.is((await sink.write(delivery(1))).outcome, 'delivered');
    sink.exportSettled('another-export');
    await sink.close();
    const names = [];
    for await (const b of azurite.container('unsettled').listBlobsFlat()) names.push(b.name);
    t.deepEqual(names.map((n) => n.replace(/\/0000\/[^/]*\.zip$/, '/0000/BATCH.zip')), ['x/conformance/0000/BATCH.zip', 'x/conformance/staging.run'], names.join(', '));
    // The staging run stays part-way for an import: not marked finished.
    const run = parseStagingRun((await azurite.container('unsettled').getBlobClient('x/conformance/staging.run').downloadToBuffer()).toString('utf8'));
    t.is(run.finishedAt, undefined);
  });

  test('azblob: a run that gave an idle export up, then stages it again after another run staged it whole, says its staging is under way again until it indexes it', async (t) => {
    t.timeout(120_000);
    const exportId = 'acme-2026-11-23';
    const record = async () => parseStagingRun((await azurite.container('retaken').getBlobClient(`ex/${exportId}/staging.run`).downloadToBuffer()).toString('utf8'));
    const sink = createAzureBlobSink('azblob://retaken/ex?linger=20', { env: azurite.env });
    await sink.open();
    t.is((await sink.write({ ...delivery(1), exportId })).outcome, 'delivered');
    // Idle for its idle time (at least 5 s): its lease given up, another run stages the export whole.
    await new Promise((resolve) => setTimeout(resolve, 7000));
    const other = await cli(['run', '--sample', '--sink', 'azblob://retaken/ex', '--rejects', join(await tempDir(t), 'r'), '--quiet'], { env: azurite.env as Record<string, string> });
    t.is(other.code, 0, other.log);
    t.not((await record()).finishedAt, undefined, 'the other run finished it');
    t.is((await sink.write({ ...delivery(2), exportId })).outcome, 'delivered');
    t.is((await record()).finishedAt, undefined, 'under way again while this run stages it');
    sink.exportSettled(exportId);
    await sink.close();
    t.not((await record()).finishedAt, undefined, 'finished by this run once indexed');
  });

  test('azblob: a run whose export went idle (its lease given up) and no other run took it marks its staging finished at close (was: left under way, an import refused the export as part-way after the run exited 0)', async (t) => {
    t.timeout(120_000);
    const exportId = 'acme-2026-11-23';
    const sink = createAzureBlobSink('azblob://idle-close/ex?linger=20', { env: azurite.env });
    await sink.open();
    t.is((await sink.write({ ...delivery(1), exportId })).outcome, 'delivered');
    // Idle for its idle time (at least 5 s) before the run ends: a loaded host's end of run takes that long.
    await new Promise((resolve) => setTimeout(resolve, 7000));
    sink.exportSettled(exportId);
    await sink.close();
    const run = parseStagingRun((await azurite.container('idle-close').getBlobClient(`ex/${exportId}/staging.run`).downloadToBuffer()).toString('utf8'));
    t.not(run.finishedAt, undefined);
    t.regex(String(run.index), /index-/);
  });

  test('azblob: blob names and metadata stay ASCII for a non-ASCII export id (Azure refuses other metadata; Azurite would not)', async (t) => {
    const sink = createAzureBlobSink('azblob://metadata-check/x?linger=20', { env: azurite.env });
    await sink.open();
    const d = { ...delivery(3), exportId: 'désk/2026 ü' };
    t.is((await sink.write(d)).outcome, 'delivered');
    sink.exportSettled('désk/2026 ü');
    await sink.close();
    const blobs = [];
    for await (const b of azurite.container('metadata-check').listBlobsFlat({ includeMetadata: true })) if (!b.name.endsWith('/staging.run')) blobs.push(b);
    t.is(blobs.length, 2, 'the batch and the index of the run (beside its staging run record)');
    for (const b of blobs) t.regex(b.name, /^[\x21-\x7e]+$/);
    t.true(blobs[1]!.name.startsWith(`x/${encodeURIComponent('désk/2026 ü')}/index-`), blobs[1]!.name);
    const [blob] = blobs;
    t.regex(blob!.name, /^[\x21-\x7e]+$/);
    t.true(blob!.name.startsWith(`x/${encodeURIComponent('désk/2026 ü')}/0000/0000000-`));
    for (const value of Object.values(blob!.metadata ?? {})) t.regex(value, /^[\x20-\x7e]*$/);
    t.is(decodeURIComponent(blob!.metadata!.exportid!), 'désk/2026 ü');
    t.is(blob!.metadata!.itemcount, '1');
    t.is(blob!.metadata!.firsttime, new Date(d.internalDate).toISOString());
  });

  test('azblob: a SAS never reaches the log, the status log or the summary, even when storage refuses it', async (t) => {
    const dir = await tempDir(t);
    const secret = 'NotARealSignatureButSecret123';
    const env = { AZURE_STORAGE_ACCOUNT_URL: `http://127.0.0.1:${azurite.port}/devstoreaccount1?sv=2021-08-06&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=${secret}` };
    const status = join(dir, 'status.jsonl');
    const result = await cli(['run', '--sample', '--sink', 'azblob://sas-check?retries=0', '--status-log', status, '--rejects', join(dir, 'rejects'), '--log-level', 'debug'], { env });
    t.is(result.code, 2, 'storage refuses the forged SAS before anything is delivered');
    t.regex(result.log, /cannot reach the container: .*HTTP 403/);
    t.false(result.stderr.includes(secret));
    t.false(result.stdout.includes(secret));
    t.false((await readFile(status, 'utf8')).includes(secret));
  });

  test('azblob: a SAS that cannot do what staging needs (a create-only one) fails the run before anything is read, naming what it lacks; one with r, l, c and w stages', async (t) => {
    const dir = await tempDir(t);
    const container = azurite.container('sas-permissions');
    await container.createIfNotExists();
    const run = async (permissions: string) => {
      const sas = new URL(await container.generateSasUrl({ permissions: ContainerSASPermissions.parse(permissions), expiresOn: new Date(Date.now() + 3_600_000) })).search;
      const env = { AZURE_STORAGE_ACCOUNT_URL: `http://127.0.0.1:${azurite.port}/devstoreaccount1${sas}` };
      return cli(['run', '--sample', '--sink', 'azblob://sas-permissions/p', '--status-log', join(dir, `${permissions}.jsonl`), '--rejects', join(dir, 'rejects')], { env });
    };
    const createOnly = await run('c');
    t.is(createOnly.code, 2, createOnly.stderr);
    t.regex(createOnly.log, /the SAS allows sp=c, and staging needs r \(.*\), l \(.*\), w \(/);
    t.is((await readFile(join(dir, 'c.jsonl'), 'utf8')).split('\n').filter((l) => l.includes('"outcome":"delivered"')).length, 0, 'nothing staged');
    const enough = await run('rlcw');
    t.is(enough.code, 0, enough.stderr);
  });

  test('redactSecrets masks SAS signatures, account keys and URL passwords', (t) => {
    t.is(redactSecrets('GET https://a.blob.core.windows.net/c/b?sv=2021&sig=abc%2Fdef&se=1 failed'), 'GET https://a.blob.core.windows.net/c/b?sv=2021&sig=***&se=1 failed');
    t.is(redactSecrets('DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k/ey==;EndpointSuffix=core.windows.net'), 'DefaultEndpointsProtocol=https;AccountName=a;AccountKey=***;EndpointSuffix=core.windows.net');
    t.is(redactSecrets('BlobEndpoint=https://a/;SharedAccessSignature=sv=1&sig=x'), 'BlobEndpoint=https://a/;SharedAccessSignature=***');
  });

  test('azblob: two runs staging the same batch at once store it once; the loser is told skipped by the conditional create', async (t) => {
    const spec = 'azblob://race-check/x?linger=20';
    const [a, b] = [createAzureBlobSink(spec, { env: azurite.env }), createAzureBlobSink(spec, { env: azurite.env })];
    await a.open();
    await b.open();
    const stored = await Promise.all([a.write(delivery(5)), b.write(delivery(5))]);
    const outcomes = stored.map((s) => s.outcome);
    await Promise.all([a.close(), b.close()]);
    t.deepEqual(outcomes.sort(), ['delivered', 'skipped']);
    t.is(stored[0]!.location, stored[1]!.location, 'both name the one staged copy');
    t.is((await readStaged('race-check', 'jane@acme.example')).length, 1);
  });
});
