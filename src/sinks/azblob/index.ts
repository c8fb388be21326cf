import { hostname } from 'node:os';
import type { BlobLeaseClient, BlockBlobClient, ContainerClient } from '@azure/storage-blob';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import type { Delivery } from '../../model.js';
import { firstFew, markStorageLost, type Sink, type SinkFactory, type Stored, type WriteOutcome } from '../sink.js';
import { LifecycleSink, SinkLifecycle } from '../lifecycle.js';
import { stoppableSleep } from '../stoppable-sleep.js';
import { sha256Hex } from '../../hash.js';
import { batchZipStream, manifestBytes, manifestFor, readBatch, stagedKey } from '../../formats/staged-batch/index.js';
import { containerClientFromEnv, describeLocation, exportFolder, storageErrorMessage, storageStatusOf, type AzureBlobLocation } from '../../formats/staged-batch/location.js';
import { stagingIndex, stagingIndexName, stagingIndexText, type StagedBatchRecord } from '../../formats/staged-batch/staging-index.js';
import { RUN_FORMAT, STAGED_BY_RECORDING_RUN, stagingLockName, stagingRunName, stagingRunText, type StagingRun } from '../../formats/staged-batch/staging-run.js';
import { parseAzureBlobSpec, type AzureBlobSinkConfig } from './config.js';
import { createAzureBlobReader } from './reader.js';
import { InFlight } from '../../in-flight.js';

/** `<file>/<window>-`: the blob names of one window of events start with this. */
function windowPrefix(location: AzureBlobLocation, d: Delivery, windowEvents: number): string {
  const window = Math.floor(d.position.index / windowEvents);
  return `${exportFolder(location, d.exportId)}${String(d.position.file).padStart(4, '0')}/${String(window).padStart(7, '0')}-`;
}

/** The staging lease's duration in seconds (Azure allows 15-60); tests shorten it with `LEASE_SECONDS_ENV`. */
export const DEFAULT_LEASE_SECONDS = 60;
export const LEASE_SECONDS_ENV = 'PIVOT_ARCHIVE_STAGING_LEASE_SECONDS';

function leaseSecondsFrom(env: NodeJS.ProcessEnv): number {
  const given = env[LEASE_SECONDS_ENV];
  if (given === undefined || given === '') return DEFAULT_LEASE_SECONDS;
  const seconds = /^\d+$/.test(given) ? Number(given) : NaN;
  if (!(seconds >= 15 && seconds <= 60)) throw new PivotArchiveError(ErrorCode.SINK_CONFIG, `${LEASE_SECONDS_ENV} must be a whole number of seconds from 15 to 60`);
  return seconds;
}

/**
 * One run's lease on an export's `staging.lock` (see SPEC.md): taken before the run reads what the
 * export holds, renewed every third of its duration while the run stages, and given up (the lock
 * deleted) when the sink closes. A lease held by another run is waited for up to one lease
 * duration (a killed run's lease expires in that time; a live run's is renewed), then the export
 * fails. A lease not renewed in time is lost: the export's remaining writes fail.
 */
class StagingLease {
  private readonly blob: BlockBlobClient;
  private client: BlobLeaseClient | undefined;
  /** The lease is ours until then at least (a duration from the start of the request that took or renewed it). */
  private validUntil = 0;
  private lost: string | undefined;
  private ended = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    container: ContainerClient,
    private readonly name: string,
    private readonly exportId: string,
    private readonly seconds: number,
    private readonly description: string,
    private readonly stop?: AbortSignal,
  ) {
    this.blob = container.getBlockBlobClient(name);
  }

  private fail(why: string): PivotArchiveError {
    return new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: export ${this.exportId}: ${why}`);
  }

  async acquire(): Promise<void> {
    const started = Date.now();
    const giveUp = started + (this.seconds + 5) * 1000;
    for (;;) {
      if (this.stop?.aborted) throw this.fail('stopped by a signal while waiting for the staging lease (a re-run stages it)');
      await this.createLock();
      const client = this.blob.getBlobLeaseClient();
      const at = Date.now();
      try {
        await client.acquireLease(this.seconds);
        this.client = client;
        this.validUntil = at + this.seconds * 1000;
        break;
      } catch (err) {
        const status = storageStatusOf(err);
        // 404: the lock was deleted between its creation and the lease (its run ended): made again.
        if (status !== 409 && status !== 404) throw this.fail(`cannot take the staging lease on ${this.name}: ${storageErrorMessage(err)}`);
        if (Date.now() >= giveUp) {
          const holder = await this.holder();
          throw this.fail(
            `another staging run${holder} is staging this export into this prefix now: it has held the lease on ${this.name} for the ${Math.round((Date.now() - started) / 1000)} s this run waited. ` +
              'This run stages none of it now (two runs at once would stage messages twice): run again once that run has ended',
          );
        }
        // A stop ends the wait; the loop's next turn fails the export as stopped.
        await stoppableSleep(Math.min(2000, (this.seconds * 1000) / 10), this.stop);
      }
    }
    // Who holds it, for a run that finds it held (best effort: the lease is what counts).
    const since = new Date().toISOString();
    await this.blob.setMetadata({ holder: encodeURIComponent(`${hostname()} pid ${process.pid}`), since }, { conditions: { leaseId: this.client!.leaseId } }).catch(() => undefined);
    this.schedule();
  }

  /** The lock blob, made if absent (empty); one there already (leased or not) is fine. */
  private async createLock(): Promise<void> {
    try {
      await this.blob.upload('', 0, { conditions: { ifNoneMatch: '*' } });
    } catch (err) {
      const status = storageStatusOf(err);
      if (status === 409 || status === 412) return;
      throw this.fail(`cannot create the staging lock ${this.name}: ${storageErrorMessage(err)}`);
    }
  }

  /** ` (<host> pid <pid>, since <time>)` from the lock's metadata, or ''. */
  private async holder(): Promise<string> {
    try {
      const { metadata } = await this.blob.getProperties();
      if (!metadata?.holder) return '';
      let who = metadata.holder;
      try {
        who = decodeURIComponent(who);
      } catch {
        // kept as it is
      }
      return ` (${who.replace(/[^\x20-\x7e]/g, '?')}${metadata.since ? `, since ${metadata.since}` : ''})`;
    } catch {
      return '';
    }
  }

  private schedule(ms = (this.seconds * 1000) / 3): void {
    this.timer = setTimeout(() => void this.renew(), ms);
    // A sink never closed (a crashed run) must not be kept alive by it.
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    if (this.ended || this.lost) return;
    const at = Date.now();
    try {
      await this.client!.renewLease({ abortSignal: AbortSignal.timeout((this.seconds * 1000) / 3) });
      this.validUntil = at + this.seconds * 1000;
    } catch (err) {
      const status = storageStatusOf(err);
      // The lease is another's now, or the lock is gone: lost. Anything else is tried again at the next renewal.
      if (status === 409 || status === 404 || status === 412) this.lost = `the staging lease on ${this.name} was lost (${storageErrorMessage(err)})`;
      // Storage slow or out of reach: tried again soon, not a third of the lease later (one hiccup must not cost the lease).
      else if (!this.ended) return this.schedule(2000);
    }
    if (!this.ended && !this.lost) this.schedule();
  }

  get isLost(): boolean {
    return this.lost !== undefined;
  }

  /**
   * Throws unless the lease is still surely this run's (a quarter of its duration left at least):
   * short of that, this upload fails (the renewals keep trying); expired, the lease is lost.
   */
  check(): void {
    if (!this.lost && Date.now() > this.validUntil) this.lost = `the staging lease on ${this.name} could not be renewed in time (another run may take the export over)`;
    if (this.lost) throw this.fail(`${this.lost}; this run stages none of it any more (staging on without the lease could stage messages twice): run again`);
    if (Date.now() > this.validUntil - (this.seconds * 1000) / 4) throw this.fail(`the staging lease on ${this.name} has not been renewed for a while (storage slow or out of reach): not staged now, a re-run stages it`);
  }

  /** Stops renewing and gives the lease up: the lock deleted under it (or, refused, the lease released); else it expires. */
  async release(): Promise<void> {
    this.ended = true;
    clearTimeout(this.timer);
    const client = this.client;
    if (!client) return;
    const abortSignal = () => AbortSignal.timeout(10_000);
    try {
      await this.blob.delete({ conditions: { leaseId: client.leaseId }, abortSignal: abortSignal() });
    } catch (err) {
      // A SAS that may not delete: the lease released, the empty lock left. Unreachable storage: it expires.
      if (storageStatusOf(err) !== undefined) await client.releaseLease({ abortSignal: abortSignal() }).catch(() => undefined);
    }
  }
}

/** uploadStream's block size: a typical batch (a few hundred KiB zipped) is one block. */
const UPLOAD_BLOCK_BYTES = 1024 * 1024;

/** The largest staged batch read back to learn what a window already holds. */
export const MAX_BATCH_DOWNLOAD = 320 * 1024 * 1024;

interface Waiter {
  delivery: Delivery;
  resolve(stored: Stored): void;
  reject(err: unknown): void;
}

/** A batch committed (or found committed): its blob and its entries' names, in the order of its deliveries. */
interface Uploaded {
  outcome: WriteOutcome;
  name: string;
  entries: string[];
}

interface OpenBatch {
  window: string;
  exportId: string;
  waiters: Waiter[];
  bytes: number;
  lastWrite: number;
  timer: NodeJS.Timeout;
}

/**
 * What one window of events already has in storage (from earlier runs, read once) and what
 * this run staged in it: (mailbox, Message-ID) -> where it is (`<blob>#<entry>`, see
 * `stagedLocation`), once that batch is committed. Only the current window is kept, so memory
 * stays bounded by one window.
 */
interface WindowIndex {
  prefix: string;
  loaded: Promise<void>;
  staged: Map<string, Promise<string>>;
}

/** Where a staged message is, as the ledger records it: `<blob name>#<entry name in the batch>`. */
export function stagedLocation(blob: string, entry: string): string {
  return `${blob}#${entry}`;
}

/**
 * Stages messages as zip batches in Azure Blob storage (see SPEC.md). A write resolves when
 * the batch holding it is committed (or found there already), so a delivery counts only once
 * it is durable.
 */
/** What a staging run does with a SAS (its `sp` letters): read and list what was staged, write (the lease needs it). */
const STAGING_PERMISSIONS = [
  ['r', 'to read what earlier runs staged'],
  ['l', 'to list it'],
  ['w', "to write, which leasing the export's staging.lock needs"],
] as const;

export class AzureBlobSink extends LifecycleSink implements Sink {
  readonly kind = 'azblob';
  readonly description: string;
  readonly maxInFlight: number;
  readonly maxInFlightBytes: number;
  // The staging index of a run names every batch of the export (an import finds a gone one by it).
  readonly readsWholeExport = true;
  private batch: OpenBatch | null = null;
  private window: WindowIndex | null = null;
  private readonly exportHasBatches = new Map<string, Promise<boolean>>();
  /**
   * By export, this run's staging lease on it: taken before a window of it is read, given up after
   * `idleMs` with no batch of it open or committing (so that another run waiting for it gets it;
   * what this run read of the export is then read again under the next lease). One not taken, or
   * lost, stays: every later write of the export fails.
   */
  private readonly leases = new Map<string, { lease: StagingLease; taken: Promise<void> }>();
  /** By export, its batches open or committing, and the timer that gives its lease up when none has been for `idleMs`. */
  private readonly busy = new Map<string, { batches: number; idle?: NodeJS.Timeout }>();
  /** By export, the giving up of its last lease: a new one is taken after it. */
  private readonly releasing = new Map<string, Promise<void>>();
  private readonly idleMs: number;
  private readonly commits = new InFlight();
  /** Uploads running, and those waiting for one of the `concurrency` slots. */
  private uploading = 0;
  private readonly uploadQueue: (() => void)[] = [];
  /** By export, the batches that hold what this run staged or found staged, for the index it leaves. */
  private readonly batchesOf = new Map<string, Set<string>>();
  /**
   * By blob name, what each batch this run uploaded or found held (its count of messages and its
   * manifest's sha256): the index records it, and an import fails a batch that holds anything else.
   */
  private readonly contents = new Map<string, StagedBatchRecord>();
  private writeFailed = false;
  /**
   * By export, this run's `staging.run` record (see staging-run.ts), written before its first batch
   * is staged, and the ETag it was written with: marked finished after the index only if no later
   * run wrote its own since.
   */
  private readonly runs = new Map<string, Promise<{ run: StagingRun; etag?: string }>>();
  /**
   * By export, the record this run last wrote, kept when an idle export's lease is given up (which
   * drops `runs`, so a later batch says under way again): marked finished after the index if no
   * other run wrote its own since (`If-Match`). Was: dropped with it, so a run whose end took
   * longer than the idle time (a loaded host) left its staging under way, and exited 0.
   */
  private readonly lastRuns = new Map<string, Promise<{ run: StagingRun; etag?: string }>>();
  /** Exports the run read to the end with every item settled: the only ones an index may call whole. */
  private readonly settled = new Set<string>();
  protected readonly lifecycle = new SinkLifecycle('azblob', {
    open: () => this.reachContainer(),
    drain: () => this.seal(),
    flush: async () => {
      try {
        await this.committed();
        await this.writeIndexes();
      } finally {
        for (const { idle } of this.busy.values()) clearTimeout(idle);
        await Promise.all([...this.leases.values()].map(({ lease, taken }) => taken.then(() => lease.release(), () => undefined)));
        await Promise.all(this.releasing.values());
      }
    },
  });

  constructor(
    readonly config: AzureBlobSinkConfig,
    private readonly container: ContainerClient,
    /** Signs each staging index (`--signing-key`), so that an import given the public key can trust it. */
    private readonly signNote?: (text: string) => string,
    private readonly leaseOptions: { seconds?: number; stop?: AbortSignal } = {},
  ) {
    super();
    this.description = describeLocation(container, config);
    // Enough in flight to fill the open batch while `concurrency` others upload.
    this.maxInFlight = config.messages * (config.concurrency + 1);
    this.maxInFlightBytes = config.maxBatchBytes * (config.concurrency + 1);
    // Long enough that a stalled source (GC, a big attachment, a slow plugin) keeps the lease and what it read of the export.
    this.idleMs = Math.max(5000, 2 * config.lingerMs);
  }


  private async reachContainer(): Promise<void> {
    try {
      await this.container.createIfNotExists();
    } catch (err) {
      // A SAS that may write blobs but not create containers is fine; any other refusal (a bad
      // signature, a wrong key, no such account) stops the run before anything is read.
      if ((err as { code?: string }).code !== 'AuthorizationPermissionMismatch') {
        throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `${this.description}: cannot reach the container: ${storageErrorMessage(err)}`);
      }
    }
    // A SAS names what it allows (`sp`): one that cannot do what staging needs fails here, before
    // anything is read, not item by item (a create-only SAS failed every item at its lease).
    const granted = new URL(this.container.url).searchParams.get('sp');
    const missing = granted === null ? [] : STAGING_PERMISSIONS.filter(([p]) => !granted.includes(p));
    if (missing.length > 0) {
      throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `${this.description}: the SAS allows sp=${granted}, and staging needs ${missing.map(([p, why]) => `${p} (${why})`).join(', ')} too: give it one with r, l, c and w (and d, to remove the export's lock at the end)`);
    }
  }

  /** Adds a delivery to the open batch (sealing it first if it is full or of another window); settles when its batch is committed. */
  protected store(delivery: Delivery): Promise<Stored> {
    const window = windowPrefix(this.config, delivery, this.config.windowEvents);
    const size = delivery.message.length;
    const open = this.batch;
    if (open && (open.window !== window || open.waiters.length >= this.config.messages || open.bytes + size > this.config.maxBatchBytes)) this.seal();
    const batch = (this.batch ??= this.newBatch(window, delivery.exportId));
    batch.bytes += size;
    batch.lastWrite = Date.now();
    return new Promise<Stored>((resolve, reject) => batch.waiters.push({ delivery, resolve, reject })).then(
      (stored) => {
        const name = stored.location?.slice(0, stored.location.indexOf('#'));
        if (name) this.batchOf(delivery.exportId, name);
        return stored;
      },
      (err: unknown) => {
        this.writeFailed = true;
        throw err;
      },
    );
  }

  /** Records that batch `name` holds messages of the export, for the index this run leaves. */
  private batchOf(exportId: string, name: string): void {
    let names = this.batchesOf.get(exportId);
    if (!names) this.batchesOf.set(exportId, (names = new Set()));
    names.add(name);
  }

  exportSettled(exportId: string): void {
    this.settled.add(exportId);
  }

  /**
   * After a run that read its export to the end and whose every write was staged (or found
   * staged): per export, an index naming each batch that holds its messages, so that an import
   * can tell a batch that is gone. A run with a failed write, or stopped part-way, or with items
   * it could not keep, leaves none (its view is not whole; the last whole one stands): an import
   * would take its batches for the whole export.
   */
  private async writeIndexes(): Promise<void> {
    if (this.writeFailed) return;
    for (const [exportId, batches] of this.batchesOf) {
      if (!this.settled.has(exportId)) continue;
      const ours = [...batches];
      const listed = await this.addUnvisitedBatches(exportId, batches);
      // Gone since this run staged or found them (the container emptied under the run, before its lease renewal could tell): no index may name them.
      const gone = ours.filter((name) => !listed.has(name));
      if (gone.length > 0) {
        throw markStorageLost(
          new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: export ${exportId}: ${gone.length} batch(es) this run staged or found staged are gone from the container (${firstFew(gone)}): deleted during the run (the container emptied?); no index is written, so an import calls the staging part-way: run the staging again`),
        );
      }
      const at = new Date();
      const body = stagingIndexText(stagingIndex(exportId, batches, at, this.contents), this.signNote);
      const name = stagingIndexName(this.config, exportId, at);
      try {
        await this.container.getBlockBlobClient(name).upload(body, Buffer.byteLength(body), { blobHTTPHeaders: { blobContentType: 'application/json' } });
      } catch (err) {
        throw new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: the index of export ${exportId}'s batches cannot be written (an import could not tell a batch that goes missing): ${storageErrorMessage(err)}`);
      }
      await this.finishRun(exportId, name, at);
    }
  }

  /**
   * Before the first batch of an export is staged: its `staging.run` record says a staging run is
   * under way, so that an import does not take an older index (and the batches beside it) for the
   * export whole while this run has staged part of it. Not written, nothing of the export is staged.
   */
  private startRun(exportId: string): Promise<unknown> {
    let started = this.runs.get(exportId);
    if (!started) {
      const run: StagingRun = { format: RUN_FORMAT, version: 1, exportId, startedAt: new Date().toISOString(), by: `${hostname()} pid ${process.pid}` };
      const body = stagingRunText(run);
      started = this.container
        .getBlockBlobClient(stagingRunName(this.config, exportId))
        .upload(body, Buffer.byteLength(body), { blobHTTPHeaders: { blobContentType: 'application/json' } })
        .then(
          ({ etag }) => ({ run, etag }),
          (err: unknown) => {
            // Tried again by the export's next batch.
            this.runs.delete(exportId);
            throw new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: export ${exportId}: the record that its staging is under way (${stagingRunName(this.config, exportId)}) cannot be written, so nothing of it is staged: ${storageErrorMessage(err)}`);
          },
        );
      this.runs.set(exportId, started);
    }
    return started;
  }

  /**
   * The export's `staging.run` record marked finished, naming the index just written. Only if it is
   * still this run's (`If-Match`): a run that started since keeps its record, under way.
   */
  private async finishRun(exportId: string, index: string, at: Date): Promise<void> {
    const started = await (this.runs.get(exportId) ?? this.lastRuns.get(exportId))?.catch(() => undefined);
    if (!started) return;
    const body = stagingRunText({ ...started.run, finishedAt: at.toISOString(), index });
    try {
      await this.container.getBlockBlobClient(stagingRunName(this.config, exportId)).upload(body, Buffer.byteLength(body), {
        blobHTTPHeaders: { blobContentType: 'application/json' },
        conditions: { ifMatch: started.etag },
      });
    } catch (err) {
      if (storageStatusOf(err) === 412 || storageStatusOf(err) === 404) return;
      throw new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: export ${exportId} is indexed, but its staging cannot be marked finished in ${stagingRunName(this.config, exportId)} (an import calls it part-way until a staging run marks it): ${storageErrorMessage(err)}`);
    }
  }

  /**
   * Batches of the export in windows this run staged nothing into (an earlier run's, of events a
   * corrected export no longer has there): the index names every batch the export holds. Answers
   * every batch listed there.
   */
  private async addUnvisitedBatches(exportId: string, batches: Set<string>): Promise<Set<string>> {
    const listed = new Set<string>();
    try {
      for await (const blob of this.container.listBlobsFlat({ prefix: exportFolder(this.config, exportId) })) {
        if (blob.name.endsWith('.zip')) listed.add(blob.name);
        if (!blob.name.endsWith('.zip') || batches.has(blob.name)) continue;
        batches.add(blob.name);
        // Its manifest recorded when it can be read; else no record, and the import holds the batch
        // to the count written beside it (a guess of 0 would fail a good batch).
        const size = blob.properties.contentLength ?? 0;
        if (size > MAX_BATCH_DOWNLOAD) continue;
        try {
          const { manifest, manifestSha256 } = await readBatch(blob.name, await this.container.getBlockBlobClient(blob.name).downloadToBuffer(), 0);
          this.contents.set(blob.name, { items: manifest.entries.length, sha256: manifestSha256 });
        } catch {
          this.contents.delete(blob.name);
        }
      }
    } catch (err) {
      throw new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: cannot list export ${exportId}'s batches for its index: ${storageErrorMessage(err)}`);
    }
    return listed;
  }

  /** Every commit started has ended (a commit settles its writes before it lets go of its upload slot). */
  private async committed(): Promise<void> {
    await this.commits.idle();
  }

  private newBatch(window: string, exportId: string): OpenBatch {
    this.busyWith(exportId, +1);
    // Upload what is there when no write came for `lingerMs` (the end of the stream, a slow stage).
    const check = () => {
      if (this.batch !== batch) return;
      const idle = Date.now() - batch.lastWrite;
      if (idle >= this.config.lingerMs) this.seal();
      else batch.timer = setTimeout(check, this.config.lingerMs - idle);
    };
    const batch: OpenBatch = { window, exportId, waiters: [], bytes: 0, lastWrite: Date.now(), timer: setTimeout(check, this.config.lingerMs) };
    return batch;
  }

  /** Closes the open batch and starts committing it, in seal order per window. */
  private seal(): void {
    const batch = this.batch;
    if (!batch) return;
    this.batch = null;
    clearTimeout(batch.timer);
    if (this.window?.prefix !== batch.window) this.window = this.loadWindow(batch.window, batch.waiters[0]!.delivery.exportId);
    void this.commits.track(this.commit(this.window, batch.waiters)).finally(() => this.busyWith(batch.exportId, -1));
  }

  private async commit(window: WindowIndex, waiters: Waiter[]): Promise<void> {
    try {
      await window.loaded;
    } catch (err) {
      if (this.window === window) this.window = null; // read it again for the next batch
      for (const w of waiters) w.reject(err);
      return;
    }
    // Decided synchronously after `loaded`, so batches of a window see each other in seal order;
    // a second copy of a (mailbox, Message-ID) waits for the first and is then `skipped`.
    let settle!: { resolve(o: Uploaded): void; reject(e: unknown): void };
    const committed = new Promise<Uploaded>((resolve, reject) => (settle = { resolve, reject }));
    committed.catch(() => undefined);
    const fresh: Waiter[] = [];
    for (const w of waiters) {
      const key = stagedKey(w.delivery);
      const earlier = window.staged.get(key);
      if (earlier) earlier.then((location) => w.resolve({ outcome: 'skipped', location }), w.reject);
      else {
        const index = fresh.push(w) - 1;
        const location = committed.then(({ name, entries }) => stagedLocation(name, entries[index]!));
        location.catch(() => undefined);
        window.staged.set(key, location);
      }
    }
    if (fresh.length === 0) return;
    // A finished upload hands its slot straight to the next waiting one.
    if (this.uploading < this.config.concurrency) this.uploading++;
    else await new Promise<void>((resolve) => this.uploadQueue.push(resolve));
    try {
      // Nothing is staged without the export's lease (lost: the export's remaining writes fail).
      this.leases.get(fresh[0]!.delivery.exportId)?.lease.check();
      const uploaded = await this.upload(window.prefix, fresh.map((w) => w.delivery));
      settle.resolve(uploaded);
      fresh.forEach((w, i) => w.resolve({ outcome: uploaded.outcome, location: stagedLocation(uploaded.name, uploaded.entries[i]!) }));
    } catch (err) {
      settle.reject(err);
      for (const w of fresh) w.reject(err);
    } finally {
      const next = this.uploadQueue.shift();
      if (next) next();
      else this.uploading--;
    }
  }

  /**
   * Uploads one batch under a name made from its (mailbox, Message-ID) list, created only if
   * absent: a batch already there (a re-run that cut the same batch) means `skipped`.
   */
  private async upload(prefix: string, deliveries: Delivery[]): Promise<Uploaded> {
    const exportId = deliveries[0]!.exportId;
    const manifest = manifestFor(exportId, deliveries);
    const name = `${prefix}${sha256Hex(deliveries.map(stagedKey).join('\n')).slice(0, 16)}.zip`;
    const times = deliveries.map((d) => d.internalDate);
    const zip = batchZipStream(manifest, deliveries.map((d) => d.message));
    // The batch's name holds its (mailbox, Message-ID) list: one already there has these entries.
    const uploaded = (outcome: WriteOutcome): Uploaded => ({ outcome, name, entries: manifest.entries.map((e) => e.name) });
    try {
      // Recorded before the upload resolves: the writes it settles may be the last before the index.
      this.contents.set(name, { items: deliveries.length, sha256: sha256Hex(manifestBytes(manifest)) });
      await this.container.getBlockBlobClient(name).uploadStream(zip, UPLOAD_BLOCK_BYTES, 2, {
        conditions: { ifNoneMatch: '*' },
        blobHTTPHeaders: { blobContentType: 'application/zip' },
        // ASCII only: Azure refuses other metadata values (Azurite does not, so tests check it).
        metadata: {
          format: 'pivot-archive-staged-batch-1',
          exportid: encodeURIComponent(exportId),
          itemcount: String(deliveries.length),
          firsttime: new Date(Math.min(...times)).toISOString(),
          lasttime: new Date(Math.max(...times)).toISOString(),
          // Staged by a run that recorded itself in staging.run: with neither that record nor an index beside it, an import fails the export as part-way.
          ...STAGED_BY_RECORDING_RUN,
        },
      });
      return uploaded('delivered');
    } catch (err) {
      // 409 BlobAlreadyExists (412 from some gateways): another run committed this very batch.
      const status = storageStatusOf(err);
      if (status === 409 || status === 412) {
        await this.recordFound(name, deliveries.length);
        return uploaded('skipped');
      }
      this.contents.delete(name);
      throw new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: batch ${name} (${deliveries.length} messages) was not stored: ${storageErrorMessage(err)}`);
    } finally {
      zip.destroy();
    }
  }

  /** Reads the manifests of the batches an earlier run staged in this window, if the export has any. */
  private loadWindow(prefix: string, exportId: string): WindowIndex {
    const staged = new Map<string, Promise<string>>();
    const loaded = (async () => {
      // One staging run per export at a time: what the export holds is read only under its lease.
      const { lease, taken } = this.lease(exportId);
      await taken;
      lease.check();
      await this.startRun(exportId);
      if (!(await this.hasBatches(exportId))) return;
      for await (const blob of this.container.listBlobsFlat({ prefix })) {
        if (!blob.name.endsWith('.zip')) continue;
        const size = blob.properties.contentLength ?? 0;
        if (size > MAX_BATCH_DOWNLOAD) throw new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: staged batch ${blob.name} is ${size} bytes, too large to check`);
        const zip = await this.container.getBlockBlobClient(blob.name).downloadToBuffer();
        const { manifest, manifestSha256 } = await readBatch(blob.name, zip, 0); // the manifest only; no message is read
        this.contents.set(blob.name, { items: manifest.entries.length, sha256: manifestSha256 });
        for (const entry of manifest.entries) staged.set(stagedKey(entry), Promise.resolve(stagedLocation(blob.name, entry.name)));
        // Named in the index even when this run finds nothing of its own in it (a batch holding
        // only an earlier version of a corrected item): left out, it could go unnoticed.
        this.batchOf(exportId, blob.name);
      }
    })().catch((err: unknown) => {
      throw err instanceof PivotArchiveError ? err : new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: cannot read what ${prefix} already holds: ${storageErrorMessage(err)}`);
    });
    loaded.catch(() => undefined);
    return { prefix, loaded, staged };
  }

  /**
   * What a batch another run committed under this name holds, for the index: read back (its name
   * is made from the same (mailbox, Message-ID) list, so it holds `items` messages; its manifest
   * may still differ, e.g. in a message's bytes). Unreadable, only the count is recorded.
   */
  private async recordFound(name: string, items: number): Promise<void> {
    try {
      const client = this.container.getBlockBlobClient(name);
      const size = (await client.getProperties()).contentLength ?? 0;
      if (size > MAX_BATCH_DOWNLOAD) throw new Error(`${size} bytes`);
      const { manifest, manifestSha256 } = await readBatch(name, await client.downloadToBuffer(), 0);
      this.contents.set(name, { items: manifest.entries.length, sha256: manifestSha256 });
    } catch {
      this.contents.set(name, { items });
    }
  }

  /** This run's lease on an export, taken when it has none (a failure to take it fails every later write of the export). */
  private lease(exportId: string): { lease: StagingLease; taken: Promise<void> } {
    let held = this.leases.get(exportId);
    if (!held) {
      const seconds = this.leaseOptions.seconds ?? DEFAULT_LEASE_SECONDS;
      const lease = new StagingLease(this.container, stagingLockName(this.config, exportId), exportId, seconds, this.description, this.leaseOptions.stop);
      // After this run's last lease of the export is given up (its lock deleted), not beside it.
      const taken = (this.releasing.get(exportId) ?? Promise.resolve()).then(() => lease.acquire());
      taken.catch(() => undefined);
      this.leases.set(exportId, (held = { lease, taken }));
    }
    return held;
  }

  /** Counts an export's batches open or committing; with none for `idleMs`, its lease is given up. */
  private busyWith(exportId: string, change: 1 | -1): void {
    let state = this.busy.get(exportId);
    if (!state) this.busy.set(exportId, (state = { batches: 0 }));
    state.batches += change;
    clearTimeout(state.idle);
    state.idle = undefined;
    if (state.batches > 0 || !this.lifecycle.isOpen) return;
    state.idle = setTimeout(() => this.giveUp(exportId), this.idleMs);
    state.idle.unref();
  }

  /**
   * Gives up an idle export's lease, so that another run waiting for it may stage it. What this run
   * read of the export (its window, whether it has batches, its `staging.run` record) is dropped:
   * read again under the next lease, it holds what the other run staged meanwhile. A lease not taken, or lost, is kept: the
   * export's later writes fail.
   */
  private giveUp(exportId: string): void {
    const state = this.busy.get(exportId);
    const held = this.leases.get(exportId);
    if (!held || (state && state.batches > 0) || !this.lifecycle.isOpen) return;
    void held.taken.then(
      () => {
        if (this.leases.get(exportId) !== held || held.lease.isLost || (this.busy.get(exportId)?.batches ?? 0) > 0 || !this.lifecycle.isOpen) return;
        this.leases.delete(exportId);
        this.exportHasBatches.delete(exportId);
        // Another run may stage the export and mark its staging finished meanwhile: under the next lease this run says it is under way again.
        const run = this.runs.get(exportId);
        if (run) this.lastRuns.set(exportId, run);
        this.runs.delete(exportId);
        if (this.window?.prefix.startsWith(exportFolder(this.config, exportId))) this.window = null;
        const done = held.lease.release();
        this.releasing.set(exportId, done);
        void done.finally(() => {
          if (this.releasing.get(exportId) === done) this.releasing.delete(exportId);
        });
      },
      () => undefined,
    );
  }

  /** Whether anything of this export is staged yet: a first run then lists nothing per window. */
  private hasBatches(exportId: string): Promise<boolean> {
    let known = this.exportHasBatches.get(exportId);
    if (!known) {
      known = (async () => {
        const page = await this.container.listBlobsFlat({ prefix: exportFolder(this.config, exportId) }).byPage({ maxPageSize: 1 }).next();
        // Batches (`NNNN/...`) sort before the index and the lock: a lock alone is nothing staged.
        const first = page.done ? undefined : page.value.segment.blobItems[0];
        return first !== undefined && first.name !== stagingLockName(this.config, exportId);
      })();
      // A failed look is not remembered: the next batch asks again.
      known.catch(() => this.exportHasBatches.delete(exportId));
      this.exportHasBatches.set(exportId, known);
    }
    return known;
  }
}

/** The spec parsed, and a client of its container from the environment's credentials (no request made). */
export function azureBlobStore(spec: string, options: { env?: NodeJS.ProcessEnv } = {}): { config: AzureBlobSinkConfig; container: ContainerClient } {
  const config = parseAzureBlobSpec(spec);
  return { config, container: containerClientFromEnv(config, options.env ?? process.env, config.retries) };
}

export function createAzureBlobSink(spec: string, options: { env?: NodeJS.ProcessEnv; signNote?: (text: string) => string; stop?: AbortSignal } = {}): AzureBlobSink {
  const { config, container } = azureBlobStore(spec, options);
  return new AzureBlobSink(config, container, options.signNote, { seconds: leaseSecondsFrom(options.env ?? process.env), stop: options.stop });
}

export const azureBlobSinkFactory: SinkFactory = {
  scheme: 'azblob',
  create: (spec, options) => createAzureBlobSink(spec, { signNote: options.signNote, stop: options.stop }),
  check: (spec) => void parseAzureBlobSpec(spec),
  reader: (spec) => createAzureBlobReader(spec),
};
