import type { ContainerClient } from '@azure/storage-blob';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { redactSecrets } from '../../redact.js';
import { sha256Hex } from '../../hash.js';
import { readBatch, type BatchManifest, type ReadEntry } from '../../formats/staged-batch/index.js';
import { containerClientFromEnv, describeLocation, exportFolder, isFolderOf, parseAzureBlobLocation, storageErrorMessage, type AzureBlobLocation } from '../../formats/staged-batch/location.js';
import { folderOfIndex, namedForItsTime, parseStagingIndex, type StagedBatchRecord, type StagingIndex } from '../../formats/staged-batch/staging-index.js';

/** What a listing of the staged batches found besides the batches it yields. */
export interface StagedListing {
  /** Batches a staging index lists that are not there. */
  gone: string[];
  /** Per export, the batches its latest staging index lists. */
  indexed: Map<string, string[]>;
  /** Batches marked imported into this sink before this listing. */
  marked: Set<string>;
  /** By batch, what its folder's latest staging index records it held (indexes written since the index records it). */
  contents: Map<string, StagedBatchRecord>;
  /** Export folders with batches and no staging index: a batch gone from them cannot be told. */
  unindexed: string[];
  /** Staging indexes passed over because the key the import trusts did not sign them, and why. */
  untrusted: { name: string; why: string }[];
}

/** Whether the key an import trusts signed a staging index's note (see `openSignedText` in src/formats/signed-note). */
export type IndexTrust = (note: string) => 'verified' | 'failed' | 'unsigned' | 'not checked';

/** A batch read: its manifest and messages, and why it is not what staging recorded, if it is not. */
export interface ReadStagedBatch {
  manifest: BatchManifest;
  entries: AsyncGenerator<ReadEntry>;
  /** How the batch differs from the staging index's record of it (or its blob metadata's count): failed whole. */
  mismatch?: string;
  /** The count of messages staging recorded for it (index, else blob metadata), when known. */
  recordedItems?: number;
}

/**
 * A batch is downloaded whole and read through its central directory (never streamed from its
 * local headers), so one batch is what import holds in memory: the sink cuts them at `mib` (at most
 * 256 MiB, 8 by default); anything larger than this was not written by it and is refused.
 */
const MAX_BATCH_BYTES = 320 * 1024 * 1024;

/**
 * The staged batches under `azblob://CONTAINER/PREFIX` (see SPEC.md): listed in name order,
 * read one at a time, and marked once imported into a given sink, so that the next import
 * starts where the last one stopped.
 */
export class StagedBatches {
  readonly description: string;

  constructor(
    private readonly container: ContainerClient,
    private readonly location: AzureBlobLocation,
    /** With `--public-key`: an export folder's index is its latest one this trusts; the others are passed over and reported. */
    private readonly trust?: IndexTrust,
  ) {
    this.description = describeLocation(container, location);
  }

  /**
   * Names of the batches not yet imported into the sink `markerKey` stands for (all of them
   * with `again`), for one export or all. The listing is streamed: a marker blob sorts right
   * after its batch, so one name of look-behind is all the memory it takes. Every export folder
   * listed, by a batch or by a staging index alone, is checked against its latest staging index
   * (which sorts after the batches): the names of batches it lists that are not there go into
   * `found.gone`, with their records in `found.contents`. When the folder has batches, that index is
   * looked up when the listing enters the folder, before any of its batches is yielded, so that
   * each batch is held against its record there (`found.contents`) as it is read.
   */
  async *pending(markerKey: string, options: { exportId?: string; again?: boolean }, found: StagedListing): AsyncGenerator<string> {
    const prefix = options.exportId ? exportFolder(this.location, options.exportId) : this.location.prefix ? `${this.location.prefix}/` : '';
    let waiting: string | null = null;
    // The export folder being listed: its batches (imported or not) and its latest index.
    let folder: string | undefined;
    const present = new Set<string>();
    // The folder's latest (trusted) index, looked up when the listing entered it by a batch; else from the indexes listed.
    let entryIndex: StagingIndex | undefined;
    let entered = false;
    let listedIndexes: string[] = [];
    const checkFolder = async () => {
      const latest = entered ? entryIndex : await this.latestIndex(listedIndexes, found);
      // An index of another export copied into this folder says nothing of this one's batches: the folder is unindexed.
      // The folder is told by its own name, not by the import's prefix (an import from a parent prefix lists folders below it).
      const index = latest && folder !== undefined && !isFolderOf(folder, latest.exportId) ? undefined : latest;
      if (index) {
        found.indexed.set(index.exportId, index.batches);
        // A folder left with its index alone (every batch deleted) is checked too: all of it is gone.
        for (const name of index.batches) {
          if (present.has(name)) continue;
          found.gone.push(name);
          const record = index.contents?.[name];
          if (record) found.contents.set(name, record);
        }
      } else if (present.size > 0 && folder !== undefined) {
        found.unindexed.push(folder);
      }
      present.clear();
      entryIndex = undefined;
      entered = false;
      listedIndexes = [];
    };
    try {
      for await (const blob of this.container.listBlobsFlat({ prefix })) {
        const indexFolder = folderOfIndex(blob.name);
        const here = indexFolder ?? (blob.name.endsWith('.zip') ? blob.name.replace(/[^/]+\/[^/]+$/, '') : folder);
        if (here !== folder) {
          await checkFolder();
          folder = here;
          if (indexFolder === undefined && here !== undefined && blob.name.endsWith('.zip')) {
            entryIndex = await this.latestIndexIn(here, found);
            entered = true;
            for (const [name, record] of Object.entries(entryIndex?.contents ?? {})) found.contents.set(name, record);
          }
        }
        if (indexFolder !== undefined) listedIndexes.push(blob.name);
        else if (blob.name.endsWith('.zip')) present.add(blob.name);
        if (waiting && blob.name.startsWith(`${waiting}.imported-`)) {
          if (blob.name === markerName(waiting, markerKey)) {
            found.marked.add(waiting);
            if (!options.again) waiting = null;
          }
          continue;
        }
        if (waiting) yield waiting;
        waiting = blob.name.endsWith('.zip') ? blob.name : null;
      }
      await checkFolder();
    } catch (err) {
      if (err instanceof PivotArchiveError) throw err;
      throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${this.description}: cannot list the staged batches: ${storageErrorMessage(err)}`);
    }
    if (waiting) yield waiting;
  }

  /** The latest staging index of an export folder (see `latestIndex`), if it has one. */
  private async latestIndexIn(folder: string, found: StagedListing): Promise<StagingIndex | undefined> {
    const names: string[] = [];
    for await (const blob of this.container.listBlobsFlat({ prefix: `${folder}index-` })) if (folderOfIndex(blob.name) === folder) names.push(blob.name);
    return this.latestIndex(names, found);
  }

  /**
   * The latest of an export folder's indexes (they sort by time). With `trust`, the latest one it
   * trusts: a newer one that the staging key did not sign (forged by a writer to the container to
   * leave out a batch also deleted) is passed over into `found.untrusted`, and the signed one
   * before it still finds the batch gone.
   */
  private async latestIndex(names: string[], found: StagedListing): Promise<StagingIndex | undefined> {
    for (const name of [...names].sort().reverse()) {
      let note: string;
      try {
        note = (await this.container.getBlockBlobClient(name).downloadToBuffer()).toString('utf8');
      } catch (err) {
        throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${this.description}: the staging index ${name} cannot be read: ${storageErrorMessage(err)}`);
      }
      const signature = this.trust?.(note);
      if (signature !== undefined && signature !== 'verified') {
        found.untrusted.push({ name, why: signature === 'unsigned' ? 'it is not signed' : 'its signature is not one of the --public-key key on this text (another key signed it, or it was changed since)' });
        continue;
      }
      let index: StagingIndex;
      try {
        index = parseStagingIndex(note);
      } catch (err) {
        throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${this.description}: the staging index ${name} cannot be read: ${storageErrorMessage(err)}`);
      }
      // A signed index is its name's: an older one copied under a newer name (to bring back a smaller batch list) is not.
      if (this.trust && !namedForItsTime(name, index)) {
        found.untrusted.push({ name, why: `its signed time ${index.writtenAt} is not the one its name says (an older index copied under a newer name)` });
        continue;
      }
      return index;
    }
    return undefined;
  }

  /**
   * Downloads one batch and opens it; its messages are checked against the manifest as they are
   * read. The batch is held against what staging recorded of it: the staging index's `recorded`
   * (its count of messages and its manifest's sha256), else its blob metadata's `itemcount`;
   * one that holds anything else comes back with `mismatch` (the caller fails it whole).
   */
  async read(name: string, maxMessageSize: number, recorded?: StagedBatchRecord): Promise<ReadStagedBatch> {
    const blob = this.container.getBlockBlobClient(name);
    let zip: Buffer;
    let itemcount: string | undefined;
    try {
      const properties = await blob.getProperties();
      itemcount = properties.metadata?.itemcount;
      const size = properties.contentLength ?? 0;
      if (size > MAX_BATCH_BYTES) throw new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `staged batch ${name} is ${size} bytes, over the ${MAX_BATCH_BYTES}-byte limit`);
      zip = await blob.downloadToBuffer();
    } catch (err) {
      if (err instanceof PivotArchiveError) throw err;
      throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `staged batch ${name} cannot be downloaded: ${storageErrorMessage(err)}`);
    }
    const batch = await readBatch(name, zip, maxMessageSize);
    const held = batch.manifest.entries.length;
    let mismatch: string | undefined;
    let recordedItems: number | undefined;
    if (recorded) {
      recordedItems = recorded.items;
      if (held !== recorded.items) mismatch = `its manifest lists ${held} message(s) where the staging index records ${recorded.items}`;
      else if (recorded.sha256 !== undefined && recorded.sha256 !== batch.manifestSha256) mismatch = `its manifest.json is not the one the staging index records (sha256 ${batch.manifestSha256} where ${recorded.sha256} was recorded)`;
    }
    // Without the index's sha256 (an older staging, a batch no index lists), the count the sink wrote beside the batch.
    if (!mismatch && recorded?.sha256 === undefined && itemcount !== undefined) {
      recordedItems ??= /^\d+$/.test(itemcount) ? Number(itemcount) : undefined;
      if (itemcount !== String(held)) mismatch = `its manifest lists ${held} message(s) where its blob metadata itemcount records ${JSON.stringify(itemcount)}`;
    }
    return { ...batch, ...(mismatch ? { mismatch } : {}), ...(recordedItems !== undefined ? { recordedItems } : {}) };
  }

  /** Records that `name` is wholly in the sink: the next import skips it. */
  async markImported(name: string, markerKey: string, info: Record<string, unknown>): Promise<void> {
    const body = JSON.stringify({ ...info, importedAt: new Date().toISOString() });
    await this.container.getBlockBlobClient(markerName(name, markerKey)).upload(body, Buffer.byteLength(body), {
      blobHTTPHeaders: { blobContentType: 'application/json' },
    });
  }
}

function markerName(batch: string, markerKey: string): string {
  return `${batch}.imported-${markerKey}`;
}

/** A sink's marker key: the same sink (kind and place, no secret) gets the same key on every host. */
export function importMarkerKey(sinkDescription: string): string {
  return sha256Hex(redactSecrets(sinkDescription)).slice(0, 16);
}

/** Parses `azblob://CONTAINER[/PREFIX]` (no options: credentials come from the environment). */
export function parseStagedFrom(spec: string): AzureBlobLocation {
  const bad = (why: string) => new PivotArchiveError(ErrorCode.USAGE, `--from ${JSON.stringify(redactSecrets(spec))}: ${why}`);
  const { location, query } = parseAzureBlobLocation(spec, bad);
  if ([...query.keys()].length > 0) throw bad('takes no options');
  return location;
}

/** `parseStagedFrom`, and the container reached with the credentials in `env`. */
export function openStagedBatches(spec: string, env: NodeJS.ProcessEnv = process.env, trust?: IndexTrust): StagedBatches {
  const location = parseStagedFrom(spec);
  return new StagedBatches(containerClientFromEnv(location, env, 3), location, trust);
}
