// Reads staged batches back for `verify` (see ../SPEC.md, "Reading a store back"): each batch blob
// downloaded once, its manifest read, and every entry hashed as it is inflated.
import type { ContainerClient } from '@azure/storage-blob';
import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { readBatch, type StagedEntry } from '../../formats/staged-batch/index.js';
import { describeLocation, storageErrorMessage, storageStatusOf } from '../../formats/staged-batch/location.js';
import { readCentralDirectory } from '../../formats/zip/index.js';
import { Digest, eachLimited, secondOf } from '../held.js';
import type { HeldMessage, StoreReader, WantedMessage } from '../sink.js';
import type { AzureBlobSinkConfig } from './config.js';
import { azureBlobStore, MAX_BATCH_DOWNLOAD, stagedLocation } from './index.js';

/** Batch blobs downloaded at once. */
const DOWNLOADS_AT_ONCE = 4;
/**
 * Batches read in a sample kept for the next mailboxes (a batch holds several mailboxes'
 * messages): their entries' hashes, never their bytes.
 */
const BATCHES_KEPT = 128;

/** A staged message as its batch holds it: the manifest's entry, where it is, and the hash of its bytes. */
interface IndexedEntry {
  entry: StagedEntry;
  location: string;
  sha256: string;
  size: number;
}

/** `<blob name>` of a `<blob name>#<entry>` location. */
function blobOf(location: string): string {
  return location.slice(0, location.lastIndexOf('#'));
}

export class AzureBlobReader implements StoreReader {
  readonly description: string;
  /** Every batch of the prefix, read once (for unexpected messages, and wanted ones without a location), by mailbox. */
  private everything: Promise<Map<string, IndexedEntry[]>> | undefined;
  /** The batches a sample read, most recently used last (see BATCHES_KEPT). */
  private readonly kept = new Map<string, Promise<IndexedEntry[]>>();

  constructor(
    readonly config: AzureBlobSinkConfig,
    private readonly container: ContainerClient,
  ) {
    this.description = describeLocation(container, config);
  }

  /** The container must be there and readable; nothing is created. */
  async open(): Promise<void> {
    let exists: boolean;
    try {
      exists = await this.container.exists();
    } catch (err) {
      throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `${this.description}: cannot reach the container: ${storageErrorMessage(err)}`, { cause: err });
    }
    if (!exists) throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `${this.description}: the container does not exist`);
  }

  async mailbox(mailbox: string, wanted: WantedMessage[], { sample }: { sample: boolean }): Promise<{ held: Map<WantedMessage, HeldMessage>; unexpected: Omit<HeldMessage, 'sha256' | 'size'>[] }> {
    const held = new Map<WantedMessage, HeldMessage>();
    const used = new Set<IndexedEntry>();
    const take = (w: WantedMessage, found: IndexedEntry) => {
      used.add(found);
      held.set(w, { messageId: found.entry.messageId, sentAt: new Date(found.entry.internalDate).toISOString(), location: found.location, sha256: found.sha256, size: found.size });
    };
    const ours = (found: IndexedEntry, w: WantedMessage) => found.entry.mailbox === mailbox && found.entry.messageId === w.messageId;
    if (sample && !this.everything) {
      // By location: only the batches the wanted messages name are read.
      const batches = new Map<string, IndexedEntry[]>();
      const named = [...new Set(wanted.flatMap((w) => (w.location?.includes('#') ? [blobOf(w.location)] : [])))];
      await eachLimited(named, DOWNLOADS_AT_ONCE, async (blob) => {
        batches.set(blob, await this.keptBatch(blob));
      });
      for (const w of wanted) {
        const found = w.location === undefined ? undefined : batches.get(blobOf(w.location))?.find((e) => e.location === w.location && ours(e, w));
        if (found) take(w, found);
      }
      if (held.size === wanted.length) return { held, unexpected: [] };
    }
    const entries = (await this.index()).get(mailbox) ?? [];
    const byLocation = new Map(entries.map((e) => [e.location, e]));
    for (const w of wanted) {
      if (held.has(w)) continue;
      const at = w.location === undefined ? undefined : byLocation.get(w.location);
      // Else by Message-ID and sentAt's second: the item's identity.
      const found = at && ours(at, w) ? at : entries.find((e) => !used.has(e) && ours(e, w) && secondOf(e.entry.internalDate) === secondOf(w.sentAt));
      if (found) take(w, found);
    }
    const unexpected = sample
      ? []
      : entries.filter((e) => !used.has(e)).map((e) => ({ messageId: e.entry.messageId, sentAt: new Date(e.entry.internalDate).toISOString(), location: e.location }));
    return { held, unexpected };
  }

  /** The mailboxes the staged batches hold messages for. */
  async mailboxes(): Promise<string[]> {
    return [...(await this.index()).keys()].sort();
  }

  async close(): Promise<void> {}

  /** A batch read for a sample, kept for the next mailboxes' samples. */
  private keptBatch(name: string): Promise<IndexedEntry[]> {
    const batch = this.kept.get(name) ?? this.readBlob(name);
    this.kept.delete(name);
    this.kept.set(name, batch);
    batch.catch(() => this.kept.delete(name));
    if (this.kept.size > BATCHES_KEPT) this.kept.delete(this.kept.keys().next().value!);
    return batch;
  }

  private index(): Promise<Map<string, IndexedEntry[]>> {
    this.everything ??= (async () => {
      const names: string[] = [];
      try {
        for await (const blob of this.container.listBlobsFlat({ prefix: this.config.prefix ? `${this.config.prefix}/` : '' })) {
          if (blob.name.endsWith('.zip')) names.push(blob.name);
        }
      } catch (err) {
        throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `${this.description}: cannot list the staged batches: ${storageErrorMessage(err)}`, { cause: err });
      }
      const byMailbox = new Map<string, IndexedEntry[]>();
      const batches = new Map<string, IndexedEntry[]>();
      await eachLimited(names, DOWNLOADS_AT_ONCE, async (name) => {
        batches.set(name, await this.readBlob(name));
      });
      for (const name of names.sort()) {
        for (const found of batches.get(name)!) {
          const list = byMailbox.get(found.entry.mailbox);
          if (list) list.push(found);
          else byMailbox.set(found.entry.mailbox, [found]);
        }
      }
      return byMailbox;
    })();
    this.everything.catch(() => (this.everything = undefined));
    return this.everything;
  }

  /**
   * One batch's entries, each hashed as it is inflated (what the batch holds, whatever its manifest
   * says). A batch that is gone, or that is not a batch any more, holds nothing.
   */
  private async readBlob(name: string): Promise<IndexedEntry[]> {
    let zip: Buffer;
    try {
      const client = this.container.getBlockBlobClient(name);
      const size = (await client.getProperties()).contentLength ?? 0;
      if (size > MAX_BATCH_DOWNLOAD) throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `${this.description}: staged batch ${name} is ${size} bytes, too large to read back`);
      zip = await client.downloadToBuffer();
    } catch (err) {
      if (storageStatusOf(err) === 404) return [];
      if (err instanceof PivotArchiveError) throw err;
      throw new PivotArchiveError(ErrorCode.SINK_UNAVAILABLE, `${this.description}: cannot read staged batch ${name}: ${storageErrorMessage(err)}`, { cause: err });
    }
    let manifest;
    let files;
    try {
      ({ manifest } = await readBatch(name, zip, 0));
      ({ entries: files } = await readCentralDirectory({ label: `staged batch ${name}`, buffer: zip }));
    } catch {
      return [];
    }
    const found: IndexedEntry[] = [];
    for (const entry of manifest.entries) {
      const file = files.get(entry.name);
      if (!file) continue;
      const digest = new Digest();
      try {
        for await (const chunk of file.open()) digest.update(chunk as Buffer);
      } catch {
        // A check of the zip failed (CRC, size): what was read is what it holds, and differs.
      }
      found.push({ entry, location: stagedLocation(name, entry.name), ...digest.result() });
    }
    return found;
  }
}

export function createAzureBlobReader(spec: string, options: { env?: NodeJS.ProcessEnv } = {}): AzureBlobReader {
  const { config, container } = azureBlobStore(spec, options);
  return new AzureBlobReader(config, container);
}
