import type { ContainerClient } from '@azure/storage-blob';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import type { Delivery } from '../../model.js';
import type { Sink, SinkFactory, Stored, WriteOutcome } from '../sink.js';
import { LifecycleSink, SinkLifecycle } from '../lifecycle.js';
import { sha256Hex } from '../../hash.js';
import { batchZipStream, manifestBytes, manifestFor, readBatch, stagedKey } from '../../formats/staged-batch/index.js';
import { containerClientFromEnv, describeLocation, exportFolder, storageErrorMessage, type AzureBlobLocation } from '../../formats/staged-batch/location.js';
import { stagingIndex, stagingIndexName, stagingIndexText, type StagedBatchRecord } from '../../formats/staged-batch/staging-index.js';
import { parseAzureBlobSpec, type AzureBlobSinkConfig } from './config.js';
import { createAzureBlobReader } from './reader.js';

/** `<file>/<window>-`: the blob names of one window of events start with this. */
function windowPrefix(location: AzureBlobLocation, d: Delivery, windowEvents: number): string {
  const window = Math.floor(d.position.index / windowEvents);
  return `${exportFolder(location, d.exportId)}${String(d.position.file).padStart(4, '0')}/${String(window).padStart(7, '0')}-`;
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
  private readonly commits = new Set<Promise<void>>();
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
  /** Exports the run read to the end with every item settled: the only ones an index may call whole. */
  private readonly settled = new Set<string>();
  protected readonly lifecycle = new SinkLifecycle('azblob', {
    open: () => this.reachContainer(),
    drain: () => this.seal(),
    flush: async () => {
      await this.committed();
      await this.writeIndexes();
    },
  });

  constructor(
    readonly config: AzureBlobSinkConfig,
    private readonly container: ContainerClient,
    /** Signs each staging index (`--signing-key`), so that an import given the public key can trust it. */
    private readonly signNote?: (text: string) => string,
  ) {
    super();
    this.description = describeLocation(container, config);
    // Enough in flight to fill the open batch while `concurrency` others upload.
    this.maxInFlight = config.messages * (config.concurrency + 1);
    this.maxInFlightBytes = config.maxBatchBytes * (config.concurrency + 1);
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
  }

  /** Adds a delivery to the open batch (sealing it first if it is full or of another window); settles when its batch is committed. */
  protected store(delivery: Delivery): Promise<Stored> {
    const window = windowPrefix(this.config, delivery, this.config.windowEvents);
    const size = delivery.message.length;
    const open = this.batch;
    if (open && (open.window !== window || open.waiters.length >= this.config.messages || open.bytes + size > this.config.maxBatchBytes)) this.seal();
    const batch = (this.batch ??= this.newBatch(window));
    batch.bytes += size;
    batch.lastWrite = Date.now();
    return new Promise<Stored>((resolve, reject) => batch.waiters.push({ delivery, resolve, reject })).then(
      (stored) => {
        const name = stored.location?.slice(0, stored.location.indexOf('#'));
        let names = this.batchesOf.get(delivery.exportId);
        if (!names) this.batchesOf.set(delivery.exportId, (names = new Set()));
        if (name) names.add(name);
        return stored;
      },
      (err: unknown) => {
        this.writeFailed = true;
        throw err;
      },
    );
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
      const at = new Date();
      const body = stagingIndexText(stagingIndex(exportId, batches, at, this.contents), this.signNote);
      try {
        await this.container.getBlockBlobClient(stagingIndexName(this.config, exportId, at)).upload(body, Buffer.byteLength(body), { blobHTTPHeaders: { blobContentType: 'application/json' } });
      } catch (err) {
        throw new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: the index of export ${exportId}'s batches cannot be written (an import could not tell a batch that goes missing): ${storageErrorMessage(err)}`);
      }
    }
  }

  /** Every commit started has ended (a commit settles its writes before it lets go of its upload slot). */
  private async committed(): Promise<void> {
    while (this.commits.size > 0) await Promise.allSettled([...this.commits]);
  }

  private newBatch(window: string): OpenBatch {
    // Upload what is there when no write came for `lingerMs` (the end of the stream, a slow stage).
    const check = () => {
      if (this.batch !== batch) return;
      const idle = Date.now() - batch.lastWrite;
      if (idle >= this.config.lingerMs) this.seal();
      else batch.timer = setTimeout(check, this.config.lingerMs - idle);
    };
    const batch: OpenBatch = { window, waiters: [], bytes: 0, lastWrite: Date.now(), timer: setTimeout(check, this.config.lingerMs) };
    return batch;
  }

  /** Closes the open batch and starts committing it, in seal order per window. */
  private seal(): void {
    const batch = this.batch;
    if (!batch) return;
    this.batch = null;
    clearTimeout(batch.timer);
    if (this.window?.prefix !== batch.window) this.window = this.loadWindow(batch.window, batch.waiters[0]!.delivery.exportId);
    const commit = this.commit(this.window, batch.waiters);
    this.commits.add(commit);
    void commit.finally(() => this.commits.delete(commit));
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
        },
      });
      return uploaded('delivered');
    } catch (err) {
      // 409 BlobAlreadyExists (412 from some gateways): another run committed this very batch.
      const status = (err as { statusCode?: number }).statusCode;
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
      if (!(await this.hasBatches(exportId))) return;
      for await (const blob of this.container.listBlobsFlat({ prefix })) {
        if (!blob.name.endsWith('.zip')) continue;
        const size = blob.properties.contentLength ?? 0;
        if (size > MAX_BATCH_DOWNLOAD) throw new PivotArchiveError(ErrorCode.SINK_WRITE, `${this.description}: staged batch ${blob.name} is ${size} bytes, too large to check`);
        const zip = await this.container.getBlockBlobClient(blob.name).downloadToBuffer();
        const { manifest, manifestSha256 } = await readBatch(blob.name, zip, 0); // the manifest only; no message is read
        this.contents.set(blob.name, { items: manifest.entries.length, sha256: manifestSha256 });
        for (const entry of manifest.entries) staged.set(stagedKey(entry), Promise.resolve(stagedLocation(blob.name, entry.name)));
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

  /** Whether anything of this export is staged yet: a first run then lists nothing per window. */
  private hasBatches(exportId: string): Promise<boolean> {
    let known = this.exportHasBatches.get(exportId);
    if (!known) {
      known = (async () => {
        const page = await this.container.listBlobsFlat({ prefix: exportFolder(this.config, exportId) }).byPage({ maxPageSize: 1 }).next();
        return !page.done && page.value.segment.blobItems.length > 0;
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

export function createAzureBlobSink(spec: string, options: { env?: NodeJS.ProcessEnv; signNote?: (text: string) => string } = {}): AzureBlobSink {
  const { config, container } = azureBlobStore(spec, options);
  return new AzureBlobSink(config, container, options.signNote);
}

export const azureBlobSinkFactory: SinkFactory = {
  scheme: 'azblob',
  create: (spec, options) => createAzureBlobSink(spec, { signNote: options.signNote }),
  check: (spec) => void parseAzureBlobSpec(spec),
  reader: (spec) => createAzureBlobReader(spec),
};
