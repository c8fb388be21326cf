import _ from 'highland';
import { ErrorCode, PivotArchiveError } from './errors.js';
import type { RejectsFolder } from './formats/rejects/index.js';
import type { Logger } from './logger.js';
import { LOOK_STOPPED, type Sink } from './sinks/sink.js';
import type { Source } from './sources/source.js';
import type { RunSummary, StatusLog } from './status-log.js';
import { fanOutStage } from './transforms/fan-out/stage.js';
import type { FanOutConfig } from './transforms/fan-out/index.js';
import { buildStage } from './transforms/mime/stage.js';
import type { PluginRegistry } from './transforms/plugins/index.js';
import { pluginStage } from './transforms/plugins/stage.js';
import { shardStage, type Shard } from './transforms/shard/index.js';
import { sizeBoundStage, sizeLimitStage } from './transforms/size-filter/index.js';
import { validateStage } from './transforms/validate/index.js';
import { inOrder, inTurn } from './pipeline/in-order.js';
import { Recorder, chainError, type PluginSplits, type Progress } from './pipeline/recorder.js';
import { Settler } from './pipeline/settle.js';
import { step, type Unit } from './pipeline/unit.js';

export type { Progress } from './pipeline/recorder.js';

export interface PipelineOptions {
  sink: Sink;
  plugins: PluginRegistry;
  fanOut: FanOutConfig;
  /** --shard K/N: only this shard's mailboxes are delivered (fan-out), and shard 1 alone keeps rejected items. */
  shard?: Shard;
  maxItemSize: number;
  /** Share of the items read that may be rejected before the summary raises an alarm. */
  maxRejected: number;
  /** Where rejected items are kept (a source of built messages rejects nothing). */
  rejects?: RejectsFolder;
  /** The archive's checkpoint (with --state-dir): it keeps the items plugins added before it. */
  checkpoint?: PluginSplits;
  statusLog: StatusLog;
  logger: Logger;
  /** Aborted on SIGINT/SIGTERM: no new unit is read, the ones in flight finish. */
  stop?: AbortSignal;
  /** Called every `progressEveryMs` (and once at the end) with how far the run is. */
  progress?: (p: Progress) => void;
  progressEveryMs?: number;
  /**
   * After the chain, before the summary is written: the caller's last steps (the sink closed, the
   * checkpoint settled). What fails there sets the summary's `error`, so the record says it.
   */
  beforeSummary?: (summary: RunSummary) => Promise<void>;
}

/**
 * The chain. highland pulls one unit at a time through it, so a slow sink slows the reader.
 * Each stage handles its kind of unit and passes the rest on (see pipeline/unit.ts); the last
 * one settles every unit (delivered, kept as rejected, or failed) and the source is told.
 * A failure of the chain itself (the status log cannot be written, the archive changed under
 * the run) stops reading; the summary says so, with the counters of what was done.
 */
export async function runPipeline(source: Source, o: PipelineOptions): Promise<RunSummary> {
  const archive = source.export;
  const recorder = new Recorder(o.statusLog, o.logger, o.sink.kind, archive?.exportId ?? null, o.shard, o.checkpoint);
  // Reading stops on SIGINT/SIGTERM (o.stop) or when the chain halts itself; what is in flight settles either way.
  const halt = new AbortController();
  const stopReading = o.stop ? AbortSignal.any([o.stop, halt.signal]) : halt.signal;
  const settler = new Settler(o.sink, o.rejects, archive, recorder, o.maxItemSize, (reason) => halt.abort(reason), () => source.storageLost?.());
  // A signal after the last event was read still cuts the run short when deliveries in flight fail on it (a sink stops what it has not stored).
  let failedAtStop = 0;
  const atStop = () => (failedAtStop = recorder.progress(source).failed);
  // Removed at the end: a drop folder's runs share one signal, and each listener would hold its run's archive.
  if (o.stop && !o.stop.aborted) o.stop.addEventListener('abort', atStop, { once: true });
  const ticker = o.progress && setInterval(() => o.progress!(recorder.progress(source)), o.progressEveryMs ?? 1000);
  // Units the source had read ahead when reading stopped: left for the next run, never sent through the chain (a plugin that hangs would take its time limit for each).
  let leftAtStop = 0;
  let chainFailure: Awaited<ReturnType<typeof finish>>;
  let look: Awaited<ReturnType<NonNullable<Sink['lostSinceWritten']>>>;
  try {
    chainFailure = await finish(async () => {
      for (const n of source.notes) await recorder.note(n.reason, n.detail, { conversationId: n.conversationId });
      await drain(
        _<Unit>(source.read(stopReading))
          .reject(() => stopReading.aborted && ++leftAtStop > 0)
          .doto((unit) => recorder.read(unit.kind))
          .through(step('event', archive && validateStage(archive, recorder)))
          .through(step('item', archive && pluginStage(o.plugins, archive, recorder, o.logger, o.checkpoint?.idsGivenEarlier)))
          .through(step('item', archive && sizeBoundStage(archive, o.maxItemSize)))
          .through(step('item', archive && buildStage(archive, o.maxItemSize, recorder)))
          .through(step('built', sizeLimitStage(o.maxItemSize)))
          .through(step('built', archive && fanOutStage(o.fanOut, archive.exportId, recorder)))
          .through(shardStage(o.shard, recorder))
          .through(inOrder(settler.limit, settler.settle, () => o.sink.writesEnded?.()))
          .through(inTurn((settled) => source.settled(settled.position, settled.ok, settled.storageFault))),
      );
    });
    // A chain stopped by an error may leave settles in flight: counted before the summary, never recorded after it.
    await settler.idle();
    // A folder removed after its mailbox's last write: no write was left to find it, the sink looks once (see Sink.lostSinceWritten).
    look = await o.sink.lostSinceWritten?.();
  } finally {
    // Whatever threw: a ticker left running would keep the process alive, a listener its run's archive.
    clearInterval(ticker);
    o.stop?.removeEventListener('abort', atStop);
  }
  // A halt (a sink refusing its own spec) or a fault outside the chain (a promise nobody handled) stops reading as SIGTERM does, and is the run's error.
  const stopped = halt.signal.aborted ? halt.signal.reason : o.stop?.reason;
  const lost = typeof look === 'object' ? look : undefined;
  const error = chainFailure ?? (stopped instanceof PivotArchiveError ? chainError(stopped) : undefined) ?? (lost ? { code: ErrorCode.SINK_WRITE, message: lost.reason } : undefined);
  o.progress?.(recorder.progress(source));
  if (error) o.logger.error(`run stopped: ${error.code}: ${error.message}`);
  const failedOnStop = o.stop?.aborted ? recorder.progress(source).failed - failedAtStop : 0;
  const cutShort = (o.stop?.aborted ?? false) && (!source.exhausted || failedOnStop > 0 || leftAtStop > 0);
  // A stop that cut short only the sink's look (every item settled) leaves folders unconfirmed: exit 0 says every item is there.
  // Such a run keeps no checkpoint (resuming past the end would look at nothing); one with items left keeps it.
  const lookStopped = !cutShort && look === LOOK_STOPPED;
  const interrupted = !error && (cutShort || lookStopped);
  const summary = recorder.summarise(source, o.sink.description, { error, interrupted, failedOnStop: interrupted ? failedOnStop : 0, storageLost: lost !== undefined, mailboxesLost: lost?.mailboxes, lookStopped });
  await o.beforeSummary?.(summary);
  return recorder.writeSummary(summary, o.maxRejected);
}

/** Runs the chain to its end; what stopped it, if anything, as the summary states it. */
async function finish(chain: () => Promise<void>): Promise<{ code: string; message: string } | undefined> {
  try {
    await chain();
    return undefined;
  } catch (err) {
    return chainError(err);
  }
}

function drain<T>(stream: Highland.Stream<T>): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.stopOnError((err: Error) => reject(err)).done(() => resolve());
  });
}
