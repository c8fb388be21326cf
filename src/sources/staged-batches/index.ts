import type { BlobItem, ContainerClient } from '@azure/storage-blob';
import { ErrorCode, PivotArchiveError, errorMessage, type ErrorCodeValue } from '../../errors.js';
import { redactSecrets } from '../../redact.js';
import { sha256Hex } from '../../hash.js';
import { readBatch, type BatchManifest, type ReadEntry } from '../../formats/staged-batch/index.js';
import { containerClientFromEnv, describeLocation, exportFolder, exportOfFolder, folderOfBatch, isFolderOf, parseAzureBlobLocation, storageErrorMessage, storageStatusOf, type AzureBlobLocation } from '../../formats/staged-batch/location.js';
import { folderOfIndex, namedForItsTime, parseStagingIndex, type StagedBatchRecord, type StagingIndex } from '../../formats/staged-batch/staging-index.js';
import { STAGING_LOCK, STAGING_RUN, folderOfStagingRun, parseStagingRun, stagedByRecordingRun, type StagingRun } from '../../formats/staged-batch/staging-run.js';

/** What a listing of the staged batches found besides the batches it yields. */
export interface StagedListing {
  /** Export folders listed (by a batch, a staging index, a staging-run record or a staging lock): none, and nothing is staged where the import looked. */
  folders: number;
  /** Batches a staging index lists that are not there (and that were not imported into this sink before they went). */
  gone: string[];
  /** Batches a staging index lists that are not there, marked imported into this sink before they went (their marker outlives them); never with --public-key (a marker is not signed). */
  goneImported: string[];
  /**
   * Batches no finished staging run vouches for, and why (as which error): not imported by this
   * import (see `OutsideBatch`): in an export folder whose latest (trusted) index does not name
   * them, nested in an export folder deeper or shallower than a staging run writes batches, in no
   * export folder at all, or in the folder of an export whose staging index cannot be read.
   */
  outside: Map<string, OutsideBatch>;
  /**
   * Batches of `outside` not read because this sink's marker is on them: an earlier import imported
   * them (a version that did not refuse batches no index names, say); they fail all the same.
   */
  outsideMarked: string[];
  /** Export folders whose staging-run record says a staging run of the export has not finished (or cannot be read), or that hold its staging lock alone. */
  unfinished: { exportId: string; why: string }[];
  /** Export folders whose staging-run record says a staging run of the export finished, naming an index that is not in the folder (deleted since). */
  indexGone: { exportId: string; why: string }[];
  /** Per export, the batches its latest staging index lists. */
  indexed: Map<string, string[]>;
  /** Batches marked imported into this sink before this listing. */
  marked: Set<string>;
  /** Batches there that were passed over (not read) because this sink's marker is on them: imported by an earlier import (`--again` reads them). */
  passedOver: number;
  /** By batch, what its folder's latest staging index records it held (indexes written since the index records it). */
  contents: Map<string, StagedBatchRecord>;
  /** Export folders with batches and no staging index: a batch gone from them cannot be told. */
  unindexed: string[];
  /** Staging indexes passed over because the key the import trusts did not sign them, and why. */
  untrusted: { name: string; why: string }[];
  /** Export folders whose latest staging index cannot be read (storage refuses it, it is no index, it is too large to be one): refused whole. */
  unreadableIndexes: { exportId: string; name: string; why: string }[];
  /** With --public-key, export folders with batches (`batches` of them) and no staging index of their own that the key signed, and why: refused whole. */
  withoutTrustedIndex: { folder: string; why: string; batches: number }[];
}

/** Why a staged batch is not imported (see `StagedListing.outside`). */
export interface OutsideBatch {
  code: ErrorCodeValue;
  why: string;
  /**
   * `unnamed`: in an export folder whose latest index does not name it; `misplaced`: inside an
   * export folder, not at `<folder><file>/<name>.zip` (where a staging run writes its batches);
   * `stray`: in no export folder under the import's prefix; `refused`: in the folder of an export
   * whose staging index cannot be read (`unreadableIndexes` says why); `unsigned`: with
   * --public-key, in an export folder with no staging index of its own that the key signed
   * (`withoutTrustedIndex` says why).
   */
  kind: 'unnamed' | 'misplaced' | 'stray' | 'refused' | 'unsigned';
  /** The export whose folder it is in, when it is in one. */
  exportId?: string;
}

/** What an export folder's latest staging index and its staging-run record say. */
interface FolderView {
  /** Its latest (trusted) index, if it has one of its own. */
  index?: StagingIndex;
  /** The batches that index names. */
  names: Set<string>;
  /** Why a batch the index does not name is not imported (every batch of the folder, when `unreadable`). */
  outside: OutsideBatch;
  /** The folder's latest staging index, when it cannot be read: the folder is refused whole. */
  unreadable?: { name: string; why: string };
  /** With --public-key, why no index of the folder's own is one the key signed, when none is: the folder is refused whole. */
  noTrustedIndex?: string;
  /** What the staging-run record says against the export being whole, if it does (see `StagingRunSays`). */
  run?: StagingRunSays;
  /** The folder has neither a staging-run record nor a staging index blob (an older version's staging, or one emptied under its run: see `unrecordedWhy`). */
  unrecorded: boolean;
}

/**
 * What an export folder's `staging.run` record says against the export being whole: a staging run
 * of it is part-way (or the record cannot be read: nothing says the staging finished), or the
 * staging run that finished names an index that is gone from the folder.
 */
interface StagingRunSays {
  kind: 'part-way' | 'index-gone';
  why: string;
}

/** An export folder's `staging.run` record as read: the record, or why it cannot be read. */
type StagingRunRecord = { name: string; run: StagingRun; unreadable?: undefined } | { name: string; run?: undefined; unreadable: string };

/**
 * What a folder's staging-run record says against the export being whole (see `StagingRunSays`),
 * or undefined: a record marked finished whose index is among `indexes` (the folder's index blobs).
 */
function stagingRunSays({ name, run, unreadable }: StagingRunRecord, indexes: ReadonlySet<string>): StagingRunSays | undefined {
  if (!run) return { kind: 'part-way', why: `its staging-run record ${name} cannot be read (${unreadable}), so a staging run of it may not have finished` };
  if (run.finishedAt === undefined) return { kind: 'part-way', why: `a staging run of it started ${printable(run.startedAt)} (${printable(run.by)}) has not finished (${name})` };
  // Finished, it names the index it wrote: that index gone (a clean-up that left the record), nothing says what the export holds.
  if (!indexes.has(run.index!)) {
    return { kind: 'index-gone', why: `its staging run that started ${printable(run.startedAt)} (${printable(run.by)}) finished ${printable(run.finishedAt)} with the staging index ${printable(run.index!)} (${name} says so), and that index is gone from the export's folder` };
  }
  return undefined;
}

/** A blob larger than what it must be (a staging-run record, a staging index): not read into memory. */
class TooLarge extends Error {}

/** A staging-run record is a line of JSON: anything this large is not one, and is not read into memory. */
const MAX_STAGING_RUN_BYTES = 64 * 1024;

/**
 * A staging index names each batch of its export and what it held (about 250 bytes a batch): this
 * is some 250,000 batches, far more than an export is cut into. An index blob larger than this is
 * not one (a hostile or broken blob) and is never read into memory: its export is refused.
 */
export const MAX_STAGING_INDEX_BYTES = 64 * 1024 * 1024;

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
   * Whether a batch's import marker stands for its import into the sink: not with `--public-key`. A
   * marker is not signed and its name is made from the sink's description alone, so anyone who can
   * write to the container can make one: on a batch that is there it would have the import pass the
   * batch over and call its export whole, on one that is gone hide the deletion.
   */
  get trustsMarkers(): boolean {
    return this.trust === undefined;
  }

  /**
   * Names of the batches not yet imported into the sink `markerKey` stands for (all of them
   * with `again`, and when markers are no proof: `trustsMarkers`), for one export or all. The listing is streamed: a marker blob sorts right
   * after its batch, so one name of look-behind is all the memory it takes. Each export folder
   * listed (by a batch, a staging index, a staging-run record or a staging lock) is looked up once: its latest
   * staging index and its staging-run record. When it has batches, that is done when its first
   * batch is listed, before any is yielded, so that each batch is held against its record there
   * (`found.contents`), and one the index does not name is in `found.outside`, as it is read.
   * When the listing leaves the folder, the batches the index lists that are not there go into
   * `found.gone` (or `found.goneImported`, marked imported into this sink before they went). A
   * folder listed by its staging lock alone (nothing staged yet) has a staging run part-way.
   *
   * Which export folder a blob is in is told by `exportFolderOf`: everything under an export
   * folder is that folder's (a batch nested in it at another depth than a staging run writes is
   * refused, never taken for a batch of a folder of its own), so a folder's blobs are listed
   * together and it is looked up once. A batch in no export folder is refused (`stray`).
   */
  async *pending(markerKey: string, options: { exportId?: string; again?: boolean }, found: StagedListing): AsyncGenerator<string> {
    const prefix = this.listingPrefix(options.exportId);
    let waiting: string | null = null;
    // The export folder being listed: its batches (imported or not), and what it says once looked up.
    let folder: string | undefined;
    const present = new Set<string>();
    // Of them, those staged by a run that writes a staging-run record (their blob metadata says so).
    let recordedRun = 0;
    let view: FolderView | undefined;
    // The folder's staging lock, while nothing else of the folder has been listed (it sorts after its batches and index, before its staging-run record).
    let lockAlone: BlobItem | undefined;
    // Directories above the blob being listed, and whether each is an export folder (see `exportFolderOf`).
    const marks = new Map<string, boolean>();
    const checkFolder = async () => {
      if (folder === undefined) return;
      const looked = view ?? (await this.lookUp(folder, found));
      const { index, run, unreadable, noTrustedIndex, unrecorded } = looked;
      const unfinished =
        (run?.kind === 'part-way' ? run.why : undefined) ?? (lockAlone && lockAloneWhy(lockAlone)) ?? (unrecorded && recordedRun > 0 ? unrecordedWhy(folder, recordedRun) : undefined);
      if (index) {
        found.indexed.set(index.exportId, index.batches);
        // A folder left with its index alone (every batch deleted) is checked too: all of it is gone.
        for (const name of index.batches) {
          if (present.has(name)) continue;
          // Markers are not signed: with a trusted index, one could be a forgery hiding a deleted batch.
          if (found.marked.has(name) && this.trustsMarkers) {
            found.goneImported.push(name);
            continue;
          }
          found.gone.push(name);
          const record = index.contents?.[name];
          if (record) found.contents.set(name, record);
        }
      } else if (present.size > 0 && noTrustedIndex !== undefined) {
        found.withoutTrustedIndex.push({ folder, why: noTrustedIndex, batches: present.size });
      } else if (present.size > 0 && !unreadable) {
        found.unindexed.push(folder);
      }
      if (unfinished) found.unfinished.push({ exportId: exportOfFolder(folder) ?? folder, why: unfinished });
      if (run?.kind === 'index-gone') found.indexGone.push({ exportId: exportOfFolder(folder) ?? folder, why: run.why });
      present.clear();
      recordedRun = 0;
      view = undefined;
    };
    try {
      // With their metadata: a batch's tells whether the run that staged it wrote a staging-run record (`unrecordedWhy`).
      for await (const blob of this.container.listBlobsFlat({ prefix, includeMetadata: true })) {
        const { name } = blob;
        const isBatch = name.endsWith('.zip');
        const own = ownFolderOf(name);
        const lockOf = own === undefined ? lockFolderOf(name) : undefined;
        // A batch, index, staging-run record or lock tells the export folder it is in; anything else (a marker) is the listed folder's.
        const here = own === undefined && lockOf === undefined ? folder : await this.exportFolderOf(name, isBatch ? undefined : (own ?? lockOf), prefix, marks);
        if (here === undefined && isBatch) {
          // In no export folder: no staging run wrote it there, and no index can name it.
          found.outside.set(name, {
            code: ErrorCode.STAGING_UNTRUSTED,
            kind: 'stray',
            why: `it is in no export's folder (a staging run writes every batch as <prefix>/<exportId>/<file>/<name>.zip, and names it in that folder's staging index): no staging run staged it there`,
          });
        } else if (here !== folder) {
          await checkFolder();
          folder = here;
          found.folders++;
          lockAlone = lockOf === undefined ? undefined : blob;
        } else if (own !== undefined) lockAlone = undefined;
        if (isBatch && here !== undefined && folder !== undefined) {
          present.add(name);
          if (stagedByRecordingRun(blob.metadata)) recordedRun++;
          // Also for a batch named to sort after the index: looked up before it is yielded.
          if (!view) {
            view = await this.lookUp(folder, found);
            for (const [batch, record] of Object.entries(view.index?.contents ?? {})) found.contents.set(batch, record);
          }
          const exportId = exportOfFolder(folder) ?? folder;
          if (view.unreadable || view.noTrustedIndex !== undefined) found.outside.set(name, view.outside);
          else if (folderOfBatch(name) !== folder) {
            // Directly in the export's folder, or nested deeper in it: not where a staging run writes a batch, whatever index names it.
            found.outside.set(name, {
              code: ErrorCode.STAGING_UNTRUSTED,
              kind: 'misplaced',
              exportId,
              why: `it is in the folder of export ${printable(exportId)} (${printable(folder)}) but not where a staging run writes its batches (${printable(folder)}<file>/<name>.zip): no staging run staged it there`,
            });
          } else if (view.index && !view.names.has(name)) found.outside.set(name, view.outside);
        }
        // `<batch>.imported-<key>`: this sink's marker (also of a batch that is gone since), or another sink's.
        const at = name.lastIndexOf('.imported-');
        const markedBatch = at > 0 && name.slice(0, at).endsWith('.zip') ? name.slice(0, at) : undefined;
        if (markedBatch !== undefined) {
          if (name === markerName(markedBatch, markerKey)) found.marked.add(markedBatch);
          if (waiting === markedBatch) {
            const outside = found.outside.get(markedBatch);
            // With --public-key a marker is no proof (see `trustsMarkers`): a batch an index vouches for is read again (the sink
            // skips what it holds); one that fails all the same (no finished staging run vouches for it) is not.
            if (found.marked.has(markedBatch) && !options.again && (this.trustsMarkers || outside)) {
              // One its export's unreadable index refuses was imported when an index vouched for it: skipped, as imported (the export fails all the same).
              if (outside && outside.kind !== 'refused') found.outsideMarked.push(markedBatch);
              else if (!outside) found.passedOver++;
              waiting = null;
            }
            continue;
          }
        }
        if (waiting) yield waiting;
        waiting = isBatch ? name : null;
      }
      await checkFolder();
    } catch (err) {
      if (err instanceof PivotArchiveError) throw err;
      throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${this.description}: cannot list the staged batches: ${storageErrorMessage(err)}`);
    }
    if (waiting) yield waiting;
  }

  /**
   * The export folder the listed blob `name` is in: the shallowest directory of its name, from
   * the listing's `prefix` down, that is an export folder by its own marks (a staging index, a
   * staging-run record or a staging lock directly in it; `ownDir`, the directory of such a blob,
   * is one). Else, for a batch, the folder its name says (`<folder><file>/<name>.zip`) when that
   * is under the prefix and of an export folder's shape: a folder without an index (an older
   * staging), as before; else undefined: the batch is in no export folder.
   *
   * So a batch put inside an export folder at another depth (directly in it, or in a folder nested
   * in it named like another export folder) is that export folder's, and is refused there, never
   * taken for a batch of an unindexed folder of its own. `marks` caches what was found of the
   * directories above the blob listed (the listing is in name order: a directory left is never
   * listed again, so only those above the current blob are kept).
   */
  private async exportFolderOf(name: string, ownDir: string | undefined, prefix: string, marks: Map<string, boolean>): Promise<string | undefined> {
    for (const dir of marks.keys()) if (!name.startsWith(dir)) marks.delete(dir);
    if (ownDir !== undefined) marks.set(ownDir, true);
    const last = ownDir ?? name.slice(0, name.lastIndexOf('/') + 1);
    for (let end = name.indexOf('/', prefix.length > 0 ? prefix.length - 1 : 0); end >= 0 && end < last.length; end = name.indexOf('/', end + 1)) {
      const dir = name.slice(0, end + 1);
      let marked = marks.get(dir);
      if (marked === undefined) {
        marked = await this.hasOwnMarks(dir);
        marks.set(dir, marked);
      }
      if (marked) return dir;
    }
    if (ownDir !== undefined) return ownDir;
    const named = folderOfBatch(name);
    return named.length >= prefix.length && exportOfFolder(named) !== undefined ? named : undefined;
  }

  /** Whether a directory holds a staging index, a staging-run record or a staging lock of its own: it is an export folder. */
  private async hasOwnMarks(dir: string): Promise<boolean> {
    for await (const blob of this.container.listBlobsFlat({ prefix: `${dir}index-` })) if (folderOfIndex(blob.name) === dir) return true;
    for await (const blob of this.container.listBlobsFlat({ prefix: `${dir}staging.` })) if (blob.name === `${dir}${STAGING_RUN}` || blob.name === `${dir}${STAGING_LOCK}`) return true;
    return false;
  }

  /** An export folder's latest (trusted) index, if it is the folder's own, and what its staging-run record says against the export being whole. */
  private async lookUp(folder: string, found: StagedListing): Promise<FolderView> {
    // The record before the indexes: a staging run writes its index before it marks its record finished naming it,
    // so a finished record read first names an index the listing after it finds, unless it was deleted.
    const record = await this.stagingRunIn(folder);
    const indexes = await this.indexesIn(folder);
    const { index: latest, unreadable } = await this.latestIndex(indexes, found);
    const run = record && stagingRunSays(record, new Set(indexes));
    const unrecorded = record === undefined && indexes.length === 0;
    if (unreadable) {
      // What the export holds cannot be told (nor which of its batches a finished staging run vouches for): none of them is imported.
      const exportId = exportOfFolder(folder) ?? folder;
      found.unreadableIndexes.push({ exportId, ...unreadable });
      return {
        names: new Set(),
        outside: { code: ErrorCode.ARCHIVE_UNREADABLE, kind: 'refused', exportId, why: `the export's staging index ${unreadable.name} cannot be read (${unreadable.why}): what the export holds cannot be told, so none of its batches is imported` },
        unreadable,
        run,
        unrecorded,
      };
    }
    // An index of another export copied into this folder says nothing of this one's batches: the folder is unindexed (with the key, refused).
    // The folder is told by its own name, not by the import's prefix (an import from a parent prefix lists folders below it).
    const index = latest && isFolderOf(folder, latest.exportId) ? latest : undefined;
    const exportId = exportOfFolder(folder);
    if (this.trust && !index) {
      // Anyone who can write to the container can make an export folder without an index: with the key, only a signed index vouches for batches.
      const noTrustedIndex = `${
        indexes.length === 0
          ? 'it has no staging index'
          : latest
            ? `its latest signed staging index is of export ${printable(latest.exportId)}, not its own`
            : indexes.length === 1
              ? 'its staging index is not signed by the --public-key key'
              : `none of its ${indexes.length} staging indexes is signed by the --public-key key`
      }${run ? `, and ${run.why}` : ''}`;
      return {
        names: new Set(),
        outside: {
          code: ErrorCode.STAGING_UNTRUSTED,
          kind: 'unsigned',
          exportId,
          why: `its export folder ${printable(folder)} has no staging index of its own signed by the --public-key key (${noTrustedIndex}): no staging run that signed what it staged vouches for any of its batches`,
        },
        noTrustedIndex,
        run,
        unrecorded,
      };
    }
    const outside: OutsideBatch = run
      ? {
          code: ErrorCode.STAGING_INCOMPLETE,
          kind: 'unnamed',
          exportId,
          why:
            run.kind === 'part-way'
              ? `the export's latest staging index does not name it, and ${run.why}: it may be that run's, but no finished staging run vouches for it yet`
              : `the export's latest staging index does not name it, and ${run.why}: it may be named by that index, but no index there vouches for it`,
        }
      : {
          code: ErrorCode.STAGING_UNTRUSTED,
          kind: 'unnamed',
          exportId,
          why: `the export's latest ${this.trust ? 'signed ' : ''}staging index (written ${index?.writtenAt}) does not name it, and no staging run of the export is under way: no staging run that finished staged it (someone else put it there, or a staging run of a version before this one stopped part-way)`,
        };
    return { index, names: new Set(index?.batches), outside, run, unrecorded };
  }

  /**
   * The folder's staging-run record, or why it cannot be read (storage refuses it, it is no record),
   * or undefined when there is none. Never throws: a record that cannot be read says nothing
   * finished (`stagingRunSays`), and the import goes on with the rest; it never stops the listing.
   */
  private async stagingRunIn(folder: string): Promise<StagingRunRecord | undefined> {
    const name = `${folder}${STAGING_RUN}`;
    try {
      return { name, run: parseStagingRun(await this.readStagingRun(name)) };
    } catch (err) {
      // A record deleted (or never written) says nothing: the index and batches are held as they are.
      if (storageStatusOf(err) === 404) return undefined;
      return { name, unreadable: storageErrorMessage(err) };
    }
  }

  /** The text of a staging-run record; throws the storage's error (404: there is none), or one for a blob too large to be a record. */
  private readStagingRun(name: string): Promise<string> {
    return this.readSmallBlob(name, MAX_STAGING_RUN_BYTES, 'a staging-run record');
  }

  /**
   * The text of a blob that is at most `max` bytes (`what` names what it must be): its size as
   * storage reports it is held against `max` before any of it is read, and what is read is
   * counted too (a size not reported). Throws the storage's error, or `TooLarge`.
   */
  private async readSmallBlob(name: string, max: number, what: string): Promise<string> {
    const response = await this.container.getBlockBlobClient(name).download();
    const body = response.readableStreamBody;
    if ((response.contentLength ?? 0) > max) {
      body?.destroy();
      throw new TooLarge(`it is ${response.contentLength} bytes, over the ${max}-byte limit of ${what}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body ?? []) {
      size += (chunk as Buffer).length;
      if (size > max) {
        body?.destroy();
        throw new TooLarge(`it is over the ${max}-byte limit of ${what}`);
      }
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  /** Where the listing of the staged batches starts: the export's folder with `exportId`, else the prefix. */
  private listingPrefix(exportId: string | undefined): string {
    return exportId ? exportFolder(this.location, exportId) : this.location.prefix ? `${this.location.prefix}/` : '';
  }

  /**
   * Before an import starts (where its command line is checked): E_USAGE (`nothingStaged`) when the
   * listing would find no export folder where the import looks (a typo in --from or --export),
   * told by the same names as the listing (`pending`) tells its folders by. Lists until the first
   * such blob (the first, as a rule). A listing that fails is E_ARCHIVE_UNREADABLE.
   */
  async checkSomethingStaged(exportId: string | undefined): Promise<void> {
    try {
      for await (const blob of this.container.listBlobsFlat({ prefix: this.listingPrefix(exportId) })) {
        if ((ownFolderOf(blob.name) ?? lockFolderOf(blob.name)) !== undefined) return;
      }
    } catch (err) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${this.description}: cannot list the staged batches: ${storageErrorMessage(err)}`);
    }
    throw await this.nothingStaged(exportId);
  }

  /**
   * E_USAGE for an import that found nothing staged where it looked (a typo in --from or --export):
   * what it was given, and what is there instead: with `exportId` the exports staged under the
   * prefix, else what the level above the prefix holds.
   */
  async nothingStaged(exportId: string | undefined): Promise<PivotArchiveError> {
    const { prefix } = this.location;
    const parent = exportId ? prefix : prefix.slice(0, Math.max(0, prefix.lastIndexOf('/')));
    const where = `azblob://${this.container.accountName}/${this.location.container}${parent ? `/${parent}` : ''}`;
    const shown = 10;
    const names: string[] = [];
    let there: string;
    try {
      for await (const item of this.container.listBlobsByHierarchy('/', { prefix: parent ? `${parent}/` : '' })) {
        if (item.kind !== 'prefix') continue;
        names.push(JSON.stringify(exportId ? (exportOfFolder(item.name) ?? item.name) : item.name));
        if (names.length > shown) break;
      }
      const list = `${names.slice(0, shown).join(', ')}${names.length > shown ? ', ...' : ''}`;
      there = names.length === 0 ? `${where} holds nothing staged` : exportId ? `the exports staged under ${where}: ${list}` : `the folders of ${where}: ${list}`;
    } catch (err) {
      there = `what ${where} holds cannot be listed: ${storageErrorMessage(err)}`;
    }
    const given = `--from ${this.description}${exportId ? ` --export ${exportId}` : ''}`;
    return new PivotArchiveError(ErrorCode.USAGE, `${given}: nothing to import: ${exportId ? `no export ${exportId} is` : 'nothing is'} staged there (no staged batch, no staging index); ${there}`);
  }

  /** The names of an export folder's staging indexes (see `latestIndex`). */
  private async indexesIn(folder: string): Promise<string[]> {
    const names: string[] = [];
    for await (const blob of this.container.listBlobsFlat({ prefix: `${folder}index-` })) if (folderOfIndex(blob.name) === folder) names.push(blob.name);
    return names;
  }

  /**
   * The latest of an export folder's indexes (they sort by time). With `trust`, the latest one it
   * trusts: a newer one that the staging key did not sign (forged by a writer to the container to
   * leave out a batch also deleted) is passed over into `found.untrusted`, and the signed one
   * before it still finds the batch gone.
   */
  private async latestIndex(names: string[], found: StagedListing): Promise<{ index?: StagingIndex; unreadable?: { name: string; why: string } }> {
    for (const name of [...names].sort().reverse()) {
      let note: string;
      try {
        // Held against the limit by the size storage reports, before any of it is read (a hostile blob of gigabytes is never in memory).
        note = await this.readSmallBlob(name, MAX_STAGING_INDEX_BYTES, 'a staging index');
      } catch (err) {
        // Its export is refused (what it holds cannot be told), the rest of the import goes on.
        return { unreadable: { name, why: err instanceof TooLarge ? err.message : storageErrorMessage(err) } };
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
        return { unreadable: { name, why: `it is not a staging index (${printable(errorMessage(err))})` } };
      }
      // A signed index is its name's: an older one copied under a newer name (to bring back a smaller batch list) is not.
      if (this.trust && !namedForItsTime(name, index)) {
        found.untrusted.push({ name, why: `its signed time ${index.writtenAt} is not the one its name says (an older index copied under a newer name)` });
        continue;
      }
      return { index };
    }
    return {};
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

/**
 * The export folder a listed blob shows is there, by the blob's name: a staging index, a
 * staging-run record, a batch (`*.zip`); else undefined (a marker, a lock: see `lockFolderOf`).
 */
function ownFolderOf(name: string): string | undefined {
  return folderOfIndex(name) ?? folderOfStagingRun(name) ?? (name.endsWith('.zip') ? folderOfBatch(name) : undefined);
}

/** The export folder whose staging lock the blob is, or undefined. */
function lockFolderOf(name: string): string | undefined {
  return name.endsWith(`/${STAGING_LOCK}`) ? name.slice(0, -STAGING_LOCK.length) : undefined;
}

/** Text from a staging-run record (written by whoever can write to the container), as a log line may quote it. */
function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?');
}

/**
 * How a folder whose batches (`batches` of them) a staging run that writes a staging-run record
 * staged (their blob metadata says so), with neither that record nor a staging index, says a
 * staging run of the export is part-way: the run writes the record before its first batch and an
 * index when it finishes, so both gone means the folder was emptied under it (the container deleted
 * and created again, a clean-up) and it did not finish there. Not an older version's staging, whose
 * batches lack that metadata (imported with a warning). Was (2026-12-02): taken for one, the import
 * exited 0 having delivered the few batches staged after the wipe.
 */
function unrecordedWhy(folder: string, batches: number): string {
  return `${batches} of its batches in ${printable(folder)} were staged by a staging run that writes a staging-run record (their blob metadata stagingrun), and neither that record (${printable(folder)}${STAGING_RUN}) nor a staging index is there: that run did not finish into this folder (it was emptied under it: the container deleted and created again, or a clean-up), so what it staged before is gone or was never indexed`;
}

/** How a folder that holds its staging lock alone (no batch, index or staging-run record) says a staging run of the export is part-way. */
function lockAloneWhy(lock: BlobItem): string {
  return lock.properties.leaseState === 'leased'
    ? `a staging run of it is under way: it holds the lease on ${lock.name} and has staged nothing yet`
    : `its staging lock ${lock.name} is there and nothing else of it: a staging run of it is starting, or stopped before it staged anything`;
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
