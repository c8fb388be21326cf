import type { ContainerClient } from '@azure/storage-blob';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { redactSecrets } from '../../redact.js';
import { sha256Hex } from '../../hash.js';
import { readBatch, type BatchManifest, type ReadEntry } from '../../formats/staged-batch/index.js';
import { containerClientFromEnv, describeLocation, exportFolder, parseAzureBlobLocation, storageErrorMessage, type AzureBlobLocation } from '../../formats/staged-batch/location.js';
import { folderOfIndex, parseStagingIndex, type StagingIndex } from '../../formats/staged-batch/staging-index.js';

/** What a listing of the staged batches found besides the batches it yields. */
export interface StagedListing {
  /** Batches a staging index lists that are not there. */
  gone: string[];
  /** Per export, the batches its latest staging index lists. */
  indexed: Map<string, string[]>;
  /** Batches marked imported into this sink before this listing. */
  marked: Set<string>;
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
  ) {
    this.description = describeLocation(container, location);
  }

  /**
   * Names of the batches not yet imported into the sink `markerKey` stands for (all of them
   * with `again`), for one export or all. The listing is streamed: a marker blob sorts right
   * after its batch, so one name of look-behind is all the memory it takes. Each export's
   * batches are checked against the latest staging index in its folder (which sorts after
   * them): the names of batches it lists that are not there go into `found.gone`.
   */
  async *pending(markerKey: string, options: { exportId?: string; again?: boolean }, found: StagedListing): AsyncGenerator<string> {
    const prefix = options.exportId ? exportFolder(this.location, options.exportId) : this.location.prefix ? `${this.location.prefix}/` : '';
    let waiting: string | null = null;
    // The export folder being listed: its batches (imported or not) and its latest index.
    let folder: string | undefined;
    const present = new Set<string>();
    let latestIndex: string | undefined;
    const checkFolder = async () => {
      if (latestIndex) {
        const index = await this.readIndex(latestIndex);
        found.indexed.set(index.exportId, index.batches);
        if (present.size > 0) found.gone.push(...index.batches.filter((name) => !present.has(name)));
      }
      present.clear();
      latestIndex = undefined;
    };
    try {
      for await (const blob of this.container.listBlobsFlat({ prefix })) {
        const indexFolder = folderOfIndex(blob.name);
        const here = indexFolder ?? (blob.name.endsWith('.zip') ? blob.name.replace(/[^/]+\/[^/]+$/, '') : folder);
        if (here !== folder) {
          await checkFolder();
          folder = here;
        }
        if (indexFolder !== undefined) latestIndex = blob.name;
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

  private async readIndex(name: string): Promise<StagingIndex> {
    try {
      return parseStagingIndex((await this.container.getBlockBlobClient(name).downloadToBuffer()).toString('utf8'));
    } catch (err) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${this.description}: the staging index ${name} cannot be read: ${storageErrorMessage(err)}`);
    }
  }

  /** Downloads one batch and opens it; its messages are checked against the manifest as they are read. */
  async read(name: string, maxMessageSize: number): Promise<{ manifest: BatchManifest; entries: AsyncGenerator<ReadEntry> }> {
    const blob = this.container.getBlockBlobClient(name);
    let zip: Buffer;
    try {
      const size = (await blob.getProperties()).contentLength ?? 0;
      if (size > MAX_BATCH_BYTES) throw new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `staged batch ${name} is ${size} bytes, over the ${MAX_BATCH_BYTES}-byte limit`);
      zip = await blob.downloadToBuffer();
    } catch (err) {
      if (err instanceof PivotArchiveError) throw err;
      throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `staged batch ${name} cannot be downloaded: ${storageErrorMessage(err)}`);
    }
    return readBatch(name, zip, maxMessageSize);
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

/** Parses `azblob://CONTAINER[/PREFIX]` (no options) and reaches it with the credentials in `env`. */
export function openStagedBatches(spec: string, env: NodeJS.ProcessEnv = process.env): StagedBatches {
  const bad = (why: string) => new PivotArchiveError(ErrorCode.USAGE, `--from ${JSON.stringify(redactSecrets(spec))}: ${why}`);
  const { location, query } = parseAzureBlobLocation(spec, bad);
  if ([...query.keys()].length > 0) throw bad('takes no options');
  return new StagedBatches(containerClientFromEnv(location, env, 3), location);
}
