// One benchmark stage in its own process, so its peak RSS is its own. Prints one JSON line.
import { open, readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { readCentralDirectory, readEntryBuffer } from '../src/formats/zip/index.js';
import { runPipeline } from '../src/pipeline.js';
import { PivotZipSource } from '../src/sources/pivot-zip/source.js';
import { createLogger } from '../src/logger.js';
import { createSink } from '../src/sinks/index.js';
import type { Sink } from '../src/sinks/sink.js';
import { StatusLog } from '../src/status-log.js';
import { PluginRegistry } from '../src/transforms/plugins/index.js';
import { DEFAULT_MAX_ITEM_SIZE } from '../src/options/index.js';
import { runExitCode } from '../src/exit-policy.js';
import { RejectsFolder } from '../src/formats/rejects/index.js';
import { LedgerWriter } from '../src/ledger/writer.js';
import { formatVerify, verify } from '../src/verify.js';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { maildirFloor, maildirGroupFloor, naiveMaildir, shapeOf, type DeliveryShape } from './maildir-baselines.js';
import { floorBodies, graphFloor } from './graph-floor.js';
import type { Delivery } from '../src/model.js';

const [stage, archivePath, out] = process.argv.slice(2) as [string, string, string | undefined];

/** Takes every delivery and keeps none: measures the chain up to the sink. */
const discardSink: Sink = {
  kind: 'discard',
  description: 'discard',
  maxInFlight: 8,
  open: async () => undefined,
  write: async () => ({ outcome: 'delivered' }),
  close: async () => undefined,
};

let bytes = 0;
/** The same sink, counting the message bytes it is given (for MB/s). */
function countingBytes(sink: Sink): Sink & { inner: Sink } {
  return {
    inner: sink,
    kind: sink.kind,
    description: sink.description,
    maxInFlight: sink.maxInFlight,
    maxInFlightBytes: sink.maxInFlightBytes,
    open: () => sink.open(),
    write: (d) => ((bytes += d.message.length), sink.write(d)),
    // The end-of-run look at what was written is part of a run's cost.
    ...(sink.lostSinceWritten ? { lostSinceWritten: () => sink.lostSinceWritten!() } : {}),
    ...(sink.writesEnded ? { writesEnded: () => sink.writesEnded!() } : {}),
    close: () => sink.close(),
  };
}

/** The chain with a sink that only notes each delivery's shape: the items the maildir stage stores. */
async function deliveryShapes(): Promise<{ events: number; shapes: DeliveryShape[] }> {
  const shapes: DeliveryShape[] = [];
  const archive = await PivotExportArchive.open({ path: archivePath });
  const summary = await runPipeline(new PivotZipSource(archive, archivePath), {
    ...chainOptions(await StatusLog.open([], 'bench')),
    sink: { ...discardSink, write: async (d) => (shapes.push(shapeOf(d)), { outcome: 'delivered' }) },
  });
  await archive.close();
  return { events: summary.itemsFromSource, shapes };
}

function chainOptions(statusLog: StatusLog) {
  return {
    plugins: new PluginRegistry(),
    fanOut: { domains: [], userMap: new Map() },
    maxItemSize: DEFAULT_MAX_ITEM_SIZE,
    maxRejected: 1,
    // A stage with no output folder of its own (the Graph rows) keeps its rejects under the temp dir, not the working dir.
    rejects: new RejectsFolder(`${out || join(tmpdir(), 'pivot-bench')}-rejects`),
    statusLog,
    logger: createLogger({ level: 'error', json: false }),
  };
}

/** What a stage did; `seconds` when only part of it is timed. */
async function measure(): Promise<{ events: number; deliveries: number; bytes?: number; seconds?: number; cpu?: NodeJS.CpuUsage }> {
  switch (stage) {
    case 'floor':
    case 'floor-group': {
      // Only the file operations are timed: the shapes are gathered first.
      const { events, shapes } = await deliveryShapes();
      const { seconds, cpu } = stage === 'floor' ? await maildirFloor(out!, shapes) : await maildirGroupFloor(out!, shapes);
      return { events, deliveries: shapes.length, bytes: shapes.reduce((sum, s) => sum + s.size, 0), seconds, cpu };
    }
    case 'naive-maildir':
      return naiveMaildir(archivePath, out!);
    case 'source': {
      const archive = await PivotExportArchive.open({ path: archivePath });
      let events = 0;
      // Read as the chain reads it (highland takes a stream's 'data' events), not through an async
      // iterator: its promise per event was a third of what the row allocated.
      await new Promise((resolve, reject) => archive.events().on('data', () => events++).on('end', resolve).on('error', reject));
      await archive.close();
      return { events, deliveries: 0 };
    }
    case 'naive-json-parse': {
      // The baseline a streaming reader is compared with: each messages file parsed whole.
      const handle = await open(archivePath, 'r');
      const { entries } = await readCentralDirectory({ label: archivePath, handle, size: (await handle.stat()).size });
      let events = 0;
      for (const entry of [...entries.values()].filter((e) => e.name.startsWith('messages/'))) {
        events += (JSON.parse((await readEntryBuffer(entry, 2 ** 31 - 1)).toString('utf8')) as unknown[]).length;
      }
      await handle.close();
      return { events, deliveries: 0 };
    }
    case 'verify': {
      // Reads back what the maildir-ledger stage delivered: the ledger checked, every message hashed.
      const result = await verify({ stateDir: `${out}-state`, sink: `maildir:${out}`, checkpoints: [], insecure: false }, createLogger({ level: 'error', json: false }));
      if (result.exitCode !== 0 || !result.store) throw new Error(`verify failed: ${formatVerify(result)}`);
      return { events: result.ledger.records, deliveries: result.store.intact };
    }
    case 'mime':
    case 'maildir':
    case 'maildir-ledger':
    case 'imap':
    case 'azblob':
    case 'graph': {
      const archive = await PivotExportArchive.open({ path: archivePath });
      const spec = stage === 'imap' || stage === 'azblob' || stage === 'graph' ? process.env.PIVOT_BENCH_SINK! : `maildir:${out}`;
      // With a ledger, as a run with --state-dir keeps one: every outcome hashed, chained and written.
      const ledger = stage === 'maildir-ledger' ? await LedgerWriter.open(join(`${out}-state`, 'ledger.jsonl')) : undefined;
      const sink = countingBytes(stage === 'mime' ? discardSink : await createSink(spec, { cwd: process.cwd() }));
      await sink.open();
      const statusLog = await StatusLog.open([], 'bench', ledger);
      // A run's start record names its archive: verify (the next stage) calls an export read to its end only by it.
      if (ledger) {
        await statusLog.write({ record: 'start', command: 'run', tool: { name: 'pivot-archive', version: 'bench' }, host: 'bench', archive: archivePath, size: archive.size, sha256: archive.sha256, exportId: archive.exportId, tenant: archive.tenant, eventsInArchive: archive.eventCount, sink: sink.description, options: {} });
      }
      const summary = await runPipeline(new PivotZipSource(archive, archivePath), { ...chainOptions(statusLog), sink });
      await sink.close();
      if (ledger) {
        await ledger.seal('bench', undefined, join(`${out}-state`, 'checkpoint.note'));
        await ledger.close();
      }
      await archive.close();
      if (!summary.balanced) throw new Error('counters do not add up');
      if (stage === 'imap' || stage === 'graph') {
        // A re-run or a resume skips what the server holds: a skip is a delivery settled too.
        const inner = (sink as unknown as { inner?: { stats?: unknown; client?: { stats?: unknown } } }).inner;
        const stats = inner?.stats ?? inner?.client?.stats;
        // The exit code the CLI's policy gives this summary (this script's own exit says only that it ran).
        process.stderr.write(`  ${stage}: delivered ${summary.delivered}, skipped ${summary.skipped}, failed ${summary.failed}; a CLI run would exit ${runExitCode(summary)}; ${JSON.stringify(stats ?? {})}\n`);
        return { events: summary.itemsFromSource, deliveries: summary.delivered + summary.skipped, bytes };
      }
      return { events: summary.itemsFromSource, deliveries: summary.delivered, bytes };
    }
    case 'graph-floor': {
      // Only the creates are timed: the bodies are built first, from the archive's first messages.
      const messages: Delivery[] = [];
      const archive = await PivotExportArchive.open({ path: archivePath });
      const summary = await runPipeline(new PivotZipSource(archive, archivePath), {
        ...chainOptions(await StatusLog.open([], 'bench')),
        sink: { ...discardSink, write: async (d) => (messages.length < 400 && messages.push(d), { outcome: 'delivered' }) },
      });
      await archive.close();
      const requests = Number(process.env.PIVOT_BENCH_FLOOR_REQUESTS);
      const { seconds, cpu } = await graphFloor(process.env.PIVOT_BENCH_GRAPH_URL!, floorBodies(messages), requests, Number(process.env.PIVOT_BENCH_FLOOR_MAILBOXES), process.env);
      return { events: summary.itemsFromSource, deliveries: requests, seconds, cpu };
    }
    default:
      throw new Error(`unknown stage ${stage}`);
  }
}

const start = performance.now();
const { events, deliveries, bytes: messageBytes = 0, seconds = (performance.now() - start) / 1000, cpu = process.cpuUsage() } = await measure();
// VmHWM, not getrusage's maxrss: Linux carries maxrss over from the parent across exec.
const peakKiB = Number(/VmHWM:\s+(\d+) kB/.exec(await readFile('/proc/self/status', 'utf8'))?.[1]);
process.stdout.write(JSON.stringify({ stage, events, deliveries, messageBytes, seconds, userCpu: cpu.user / 1e6, systemCpu: cpu.system / 1e6, peakRssMB: peakKiB / 1024 }) + '\n');
