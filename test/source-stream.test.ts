// The source's unit stream under the chain's real consumption: piped, with async work per unit
// that reads from the same archive (attachments) while the source reads ahead.
import test, { type ExecutionContext } from 'ava';
import _ from 'highland';
import { execFileSync } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { RejectsFolder } from '../src/formats/rejects/index.js';
import { readEntryBuffer } from '../src/formats/zip/index.js';
import { createLogger } from '../src/logger.js';
import { runPipeline } from '../src/pipeline.js';
import { createSink } from '../src/sinks/index.js';
import { LOOK_STOPPED, type Sink } from '../src/sinks/sink.js';
import { StatusLog } from '../src/status-log.js';
import { PluginRegistry } from '../src/transforms/plugins/index.js';
import { readStatusLog } from './helpers/cli.js';
import { inOrder } from '../src/pipeline/in-order.js';
import type { Unit } from '../src/pipeline/unit.js';
import { generateSample } from '../src/sample/generate.js';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { PivotZipSource } from '../src/sources/pivot-zip/source.js';
import { tempDir } from './helpers/tmp.js';
import { runExitCode } from '../src/exit-policy.js';
import { formatSummary } from '../src/summary.js';

test('pivot-zip source: every event reaches a consumer that awaits attachment reads per unit (no stall while the source reads ahead)', async (t) => {
  const path = (await generateSample(join(await tempDir(t), 'a.zip'), { events: 1000 })).path;
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const source = new PivotZipSource(archive, path);
  let attachmentsRead = 0;
  const count = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`stalled after ${source.progress().read} of ${archive.eventCount} events`)), 20_000);
    _<Unit>(source.read())
      .through(
        inOrder({ count: 1 }, async (unit: Unit) => {
          const refs = unit.kind === 'event' && Array.isArray((unit.event.raw as { attachments?: unknown })?.attachments) ? ((unit.event.raw as { attachments: { id: string }[] }).attachments) : [];
          for (const ref of refs) {
            const entry = archive.attachment(ref.id);
            if (entry) {
              await readEntryBuffer(entry, 64 * 1024 * 1024);
              attachmentsRead++;
            }
          }
          return unit;
        }),
      )
      .stopOnError(reject)
      .toArray((units) => {
        clearTimeout(timer);
        resolve(units.length);
      });
  });
  t.is(count, archive.eventCount);
  t.true(attachmentsRead > 0, 'the sample has attachments, so reads overlapped the source');
  t.true(source.exhausted);
});

test('a chain stopped by an error (a messages file rewritten in place) waits for the deliveries in flight: the summary counts them, and no outcome line follows it', async (t) => {
  const dir = await tempDir(t);
  // Two messages files: the first one's deliveries are in flight (a slow sink) when the second fails its check.
  const path = (await generateSample(join(dir, 'a.zip'), { events: 400, messageFiles: 2, edgeCases: false })).path;
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const second = Number(execFileSync('python3', ['-c', 'import sys,zipfile;i=zipfile.ZipFile(sys.argv[1]).getinfo("messages/0001.json");print(i.header_offset+100)', path]).toString());
  const handle = await open(path, 'r+');
  await handle.write(Buffer.alloc(64, 0x41), 0, 64, second);
  await handle.close();
  const statusPath = join(dir, 'status.jsonl');
  const statusLog = await StatusLog.open([statusPath], 'test-run');
  const logger = createLogger({ level: 'error', json: false });
  const maildir = await createSink(`maildir:${join(dir, 'mail')}`, { cwd: dir });
  const sink: Sink = { kind: maildir.kind, description: maildir.description, maxInFlight: 100_000, open: () => maildir.open(), close: () => maildir.close(), write: async (d) => (await new Promise((r) => setTimeout(r, 300)), maildir.write(d)) };
  await sink.open();
  const summary = await runPipeline(new PivotZipSource(archive, path), { sink, plugins: new PluginRegistry(), fanOut: { domains: [], userMap: new Map() }, maxItemSize: 1e7, maxRejected: 1, rejects: new RejectsFolder(join(dir, 'rejects')), statusLog, logger });
  await sink.close();
  await statusLog.close();
  t.regex(summary.error?.code ?? '', /^E_ARCHIVE_/);
  const { lines } = await readStatusLog(statusPath);
  t.is(lines.findIndex((l) => l.record === 'summary'), lines.length - 1, 'the summary is the last line');
  t.true(summary.delivered > 0);
  t.is(lines.filter((l) => l.outcome === 'delivered').length, summary.delivered);
});

/** A 50-event archive, its source and status log, and the stop signal of a run of it. */
async function stoppable(t: ExecutionContext) {
  const dir = await tempDir(t);
  const path = (await generateSample(join(dir, 'a.zip'), { events: 50, edgeCases: false })).path;
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const statusLog = await StatusLog.open([join(dir, 'status.jsonl')], 'test-run');
  const stop = new AbortController();
  const source = new PivotZipSource(archive, path);
  const run = (sink: Sink, progress?: () => void) =>
    runPipeline(source, { sink, plugins: new PluginRegistry(), fanOut: { domains: [], userMap: new Map() }, maxItemSize: 1e7, maxRejected: 1, rejects: new RejectsFolder(join(dir, 'rejects')), statusLog, logger: createLogger({ level: 'error', json: false }), stop: stop.signal, ...(progress ? { progress } : {}) }).finally(() => statusLog.close());
  return { dir, stop, source, run };
}

/**
 * A sink whose writes wait for the signal, then fail as a stopping sink fails what it has not
 * stored (the first `failingFirst` fail at once, for a reason of their own); it gives the signal
 * once every event was read.
 */
function heldUntilStopped(stop: AbortController, source: PivotZipSource, failingFirst = 0): Sink {
  let writes = 0;
  const write = () =>
    new Promise<never>((_resolve, reject) => {
      if (writes++ < failingFirst) return reject(new Error('mailbox over quota'));
      if (source.exhausted && !stop.signal.aborted) setTimeout(() => stop.abort(), 50);
      stop.signal.addEventListener('abort', () => reject(new Error('stopped by a signal before it was stored (a re-run delivers it)')), { once: true });
    });
  return { kind: 'maildir', description: 'held', maxInFlight: 100_000, open: async () => undefined, close: async () => undefined, write };
}

test('a signal after the last event was read, while deliveries are in flight that the sink then fails as stopped: the run is interrupted (exit 4), not a run of failed deliveries', async (t) => {
  const { stop, source, run } = await stoppable(t);
  const summary = await run(heldUntilStopped(stop, source));
  t.true(source.exhausted);
  t.true(summary.failed > 0);
  t.is(summary.delivered, 0);
  t.true(summary.interrupted);
  t.is(summary.failedOnStop, summary.failed);
  t.is(runExitCode(summary), 4);
});

test('a delivery that failed for its own reason before the signal still makes the stopped run exit 1', async (t) => {
  const { stop, source, run } = await stoppable(t);
  const summary = await run(heldUntilStopped(stop, source, 1));
  t.true(summary.interrupted);
  t.is(summary.failedOnStop, summary.failed - 1);
  t.is(runExitCode(summary), 1);
});

test('a signal after every delivery settled changes nothing: the run is complete, not interrupted', async (t) => {
  const { dir, stop, source, run } = await stoppable(t);
  const maildir = await createSink(`maildir:${join(dir, 'mail')}`, { cwd: dir });
  await maildir.open();
  const summary = await run(maildir, () => source.exhausted && stop.abort());
  await maildir.close();
  t.true(stop.signal.aborted);
  t.true(summary.delivered > 0);
  t.is(summary.failed, 0);
  t.false(summary.interrupted);
  t.is(runExitCode(summary), 0);
});

test('a signal after every delivery settled that cuts the sink\'s end-of-run look short (LOOK_STOPPED): the run is interrupted (exit 4, lookStopped), not complete, and not failed as storage lost', async (t) => {
  const { dir, stop, source, run } = await stoppable(t);
  const maildir = await createSink(`maildir:${join(dir, 'mail')}`, { cwd: dir });
  await maildir.open();
  t.teardown(() => maildir.close());
  // The signal comes once the chain has made its last write (the Maildir writes, not told of it, all settle); the look then answers as the IMAP and Graph sinks do once stopped.
  const sink: Sink = { kind: maildir.kind, description: maildir.description, maxInFlight: maildir.maxInFlight, open: async () => undefined, close: async () => undefined, write: (d) => maildir.write(d), writesEnded: () => stop.abort(), lostSinceWritten: async () => (stop.signal.aborted ? LOOK_STOPPED : undefined) };
  const summary = await run(sink);
  t.true(source.exhausted);
  t.true(stop.signal.aborted);
  t.true(summary.delivered > 0);
  t.is(summary.failed, 0);
  t.true(summary.interrupted);
  t.true(summary.lookStopped);
  t.is(summary.storageLost, undefined);
  t.is(summary.error, undefined);
  t.is(runExitCode(summary), 4);
  t.regex(formatSummary(summary), /stopped on a signal after every item settled, while the sink looked at the folders it wrote to: they are not confirmed in place/);
});

test('the chain tells the sink `writesEnded` once, after its last write call and before any write has settled or the end-of-run look (a sink that waits to fill batches would wait for nothing)', async (t) => {
  const { source, run } = await stoppable(t);
  const calls: string[] = [];
  const settle: (() => void)[] = [];
  const sink: Sink = {
    kind: 'maildir',
    description: 'recording',
    maxInFlight: 100_000,
    open: async () => undefined,
    close: async () => undefined,
    write: () => (calls.push('write'), new Promise((resolve) => settle.push(() => resolve({ outcome: 'delivered' })))),
    writesEnded: () => {
      calls.push('ended');
      // The writes settle only now: a chain that waited for them before telling would hang here.
      for (const s of settle.splice(0)) setImmediate(s);
    },
    lostSinceWritten: async () => void calls.push('look'),
  };
  const summary = await run(sink);
  t.true(source.exhausted);
  t.true(summary.delivered > 0);
  t.is(calls.filter((c) => c === 'write').length, summary.delivered);
  t.deepEqual(calls.slice(-2), ['ended', 'look']);
  t.is(calls.filter((c) => c === 'ended').length, 1);
});

test('a sink whose end-of-run look throws: the run rejects with that error, and leaves no progress ticker running and no listener on the stop signal', async (t) => {
  const { dir, stop, source } = await stoppable(t);
  const statusLog = await StatusLog.open([join(dir, 'status.jsonl')], 'test-run');
  t.teardown(() => statusLog.close());
  let ticks = 0;
  const sink: Sink = { kind: 'maildir', description: 'look fails', maxInFlight: 8, open: async () => undefined, close: async () => undefined, write: async () => ({ outcome: 'delivered' }), lostSinceWritten: () => Promise.reject(new Error('look failed')) };
  const running = runPipeline(source, { sink, plugins: new PluginRegistry(), fanOut: { domains: [], userMap: new Map() }, maxItemSize: 1e7, maxRejected: 1, rejects: new RejectsFolder(join(dir, 'rejects')), statusLog, logger: createLogger({ level: 'error', json: false }), stop: stop.signal, progress: () => ticks++, progressEveryMs: 5 });
  t.is(getEventListeners(stop.signal, 'abort').length, 1, 'listening while it runs');
  await t.throwsAsync(running, { message: 'look failed' });
  const at = ticks;
  await new Promise((resolve) => setTimeout(resolve, 60));
  t.is(ticks, at, 'no progress after the run ended');
  t.is(getEventListeners(stop.signal, 'abort').length, 0);
});
