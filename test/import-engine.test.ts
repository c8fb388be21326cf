// import through the one engine, with the staging store replaced by an in-memory one (the
// Azurite end-to-end tests cover the real store): what the summary and the exit code say.
import test from 'ava';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, ExitCode, PivotArchiveError } from '../src/errors.js';
import { runExitCode } from '../src/exit-policy.js';
import { batchZipStream, manifestFor, readBatch } from '../src/formats/staged-batch/index.js';
import { createLogger } from '../src/logger.js';
import type { Delivery } from '../src/model.js';
import { runPipeline } from '../src/pipeline.js';
import { createSink } from '../src/sinks/index.js';
import type { StagedBatches, StagedListing } from '../src/sources/staged-batches/index.js';
import { StagedBatchSource } from '../src/sources/staged-batches/source.js';
import { StatusLog } from '../src/status-log.js';
import { PluginRegistry } from '../src/transforms/plugins/index.js';
import { chatDeliveries } from './helpers/chat.js';
import { tempDir } from './helpers/tmp.js';

function delivery(n: number, mailbox: string): Delivery {
  const sentAt = new Date(Date.parse('2026-11-23T10:00:00Z') + n * 60_000).toISOString();
  return chatDeliveries({ id: `m_${n}`, sentAt, text: `message ${n}`, exportId: 'acme-1', index: n }, [mailbox])[0]!;
}

async function batchZip(deliveries: Delivery[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of batchZipStream(manifestFor('acme-1', deliveries), deliveries.map((d) => d.message))) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Batches by name: a zip, or an error its download fails with. */
function memoryStaging(batches: Map<string, Buffer | Error>, marked: string[]): StagedBatches {
  const staging = {
    description: 'azblob://memory/staging',
    async *pending(_key: string, _options: unknown, found: StagedListing) {
      found.folders++;
      yield* batches.keys();
    },
    async read(name: string, maxMessageSize: number) {
      const zip = batches.get(name)!;
      if (zip instanceof Error) throw zip;
      return readBatch(name, zip, maxMessageSize);
    },
    async markImported(name: string) {
      marked.push(name);
    },
  };
  return staging as unknown as StagedBatches;
}

test('import: a staged batch that cannot be read is recorded failed and fails the import (exit 1); the others are delivered and marked', async (t) => {
  const dir = await tempDir(t);
  const good = [delivery(1, 'ann@acme.example'), delivery(1, 'bob@acme.example'), delivery(2, 'ann@acme.example')];
  const marked: string[] = [];
  const staging = memoryStaging(
    new Map<string, Buffer | Error>([
      ['acme-1/0000/0000000-a.zip', new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, 'staged batch cannot be downloaded: HTTP 403')],
      ['acme-1/0000/0000000-b.zip', await batchZip(good)],
    ]),
    marked,
  );
  const logger = createLogger({ level: 'error', json: false });
  const statusLog = await StatusLog.open([join(dir, 'status.jsonl')], 'test-run');
  const sink = await createSink(`maildir:${join(dir, 'mail')}`, { cwd: dir });
  await sink.open();
  const source = new StagedBatchSource(staging, { markerKey: 'k', sinkDescription: sink.description, again: false, maxItemSize: 1e7, statusLog, logger });
  const summary = await runPipeline(source, { sink, plugins: new PluginRegistry(), fanOut: { domains: [], userMap: new Map() }, maxItemSize: 1e7, maxRejected: 1, statusLog, logger });
  await sink.close();
  await statusLog.close();
  t.like(summary, { source: 'staged-batches', batchesImported: 1, batchesFailed: 1, itemsStaged: 3, delivered: 3, failed: 0, balanced: true, interrupted: false });
  t.deepEqual(marked, ['acme-1/0000/0000000-b.zip']);
  t.is(runExitCode(summary), ExitCode.DELIVERY_FAILED);
  t.deepEqual((await readdir(join(dir, 'mail'))).sort(), ['ann@acme.example', 'bob@acme.example']);
});

test('import: a listing that finds no export folder once the import has begun (what the up-front check saw deleted since) fails E_STAGING_INCOMPLETE, exit 1: never an empty success, nor a usage error after the start', async (t) => {
  const dir = await tempDir(t);
  const staging = {
    description: 'azblob://memory/staging',
    // Nothing listed: `found.folders` stays 0.
    async *pending() {},
  } as unknown as StagedBatches;
  const logger = createLogger({ level: 'error', json: false });
  const statusLog = await StatusLog.open([join(dir, 'status.jsonl')], 'test-run');
  const sink = await createSink(`maildir:${join(dir, 'mail')}`, { cwd: dir });
  await sink.open();
  const source = new StagedBatchSource(staging, { markerKey: 'k', sinkDescription: sink.description, exportId: 'acme-1', again: false, maxItemSize: 1e7, statusLog, logger });
  const summary = await runPipeline(source, { sink, plugins: new PluginRegistry(), fanOut: { domains: [], userMap: new Map() }, maxItemSize: 1e7, maxRejected: 1, statusLog, logger });
  await sink.close();
  await statusLog.close();
  t.is(summary.error?.code, ErrorCode.STAGING_INCOMPLETE);
  t.regex(summary.error!.message, /^azblob:\/\/memory\/staging \(export acme-1\): what was staged there when this import began is gone/);
  t.deepEqual(summary.exportsImportedWhole, []);
  t.is(runExitCode(summary), ExitCode.DELIVERY_FAILED);
});
