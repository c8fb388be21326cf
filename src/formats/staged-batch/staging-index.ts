// The index a staging run leaves beside an export's batches, so that an import can tell a batch
// that is gone (deleted by a lifecycle rule, a clean-up, a hand) from one never staged. See SPEC.md.
import { randomBytes } from 'node:crypto';
import { exportFolder, type AzureBlobLocation } from './location.js';
import { splitNote } from '../signed-note/index.js';

export const INDEX_FORMAT = 'pivot-archive-staging-index';

/**
 * What a batch held when staging wrote it (or found it): its number of messages and the sha256 of
 * its `manifest.json` (whose entries carry each message's sha256). An import fails a batch that
 * holds anything else as a whole. `sha256` is absent only when staging could not read a batch
 * another run committed under the same name.
 */
export interface StagedBatchRecord {
  items: number;
  sha256?: string;
}

/** Every batch that holds an export's messages, as one staging run that settled them all staged or found them. */
export interface StagingIndex {
  format: typeof INDEX_FORMAT;
  version: 1;
  exportId: string;
  writtenAt: string;
  batches: string[];
  /**
   * By batch name, what each batch of `batches` held (written since the check of batches against
   * the index; an index without it, from an older version, names batches only). A reader that
   * does not know it ignores it, so the version stays 1.
   */
  contents?: Record<string, StagedBatchRecord>;
}

/** `<prefix>/<exportId>/index-<time>-<random>.json`: the latest sorts last within its export's folder. */
export function stagingIndexName(location: AzureBlobLocation, exportId: string, at: Date): string {
  return `${exportFolder(location, exportId)}${indexNameStart(at.toISOString())}${randomBytes(4).toString('hex')}.json`;
}

/** `index-<time>-`: how an index's name starts, from the time it was written. */
function indexNameStart(writtenAt: string): string {
  return `index-${writtenAt.replace(/[-:.]/g, '')}-`;
}

/** The index blob `name` is named for the time `index` says it was written (a signed index moved under another name is not). */
export function namedForItsTime(name: string, index: StagingIndex): boolean {
  return name.slice(name.lastIndexOf('/') + 1).startsWith(indexNameStart(index.writtenAt));
}

/** The export folder of an index blob's name, or undefined when it is no index. */
export function folderOfIndex(name: string): string | undefined {
  const match = /^(.*\/)?index-\d{8}T\d{9}Z-[0-9a-f]{8}\.json$/.exec(name);
  return match ? (match[1] ?? '') : undefined;
}

export function stagingIndex(exportId: string, batches: Iterable<string>, at: Date, contents?: ReadonlyMap<string, StagedBatchRecord>): StagingIndex {
  const names = [...batches].sort();
  const index: StagingIndex = { format: INDEX_FORMAT, version: 1, exportId, writtenAt: at.toISOString(), batches: names };
  if (contents) {
    index.contents = {};
    for (const name of names) {
      const record = contents.get(name);
      if (record) index.contents[name] = record.sha256 === undefined ? { items: record.items } : { items: record.items, sha256: record.sha256 };
    }
  }
  return index;
}

/**
 * The index blob's text: its JSON on one line, as a signed note when the staging run was given a
 * signing key (`sign` makes it one: a blank line, then the signature line), so that an import
 * given the public key trusts no index a writer to the container made (SPEC.md).
 */
export function stagingIndexText(index: StagingIndex, sign?: (text: string) => string): string {
  const text = `${JSON.stringify(index)}\n`;
  return sign ? sign(text) : text;
}

/** The index in a blob's text (a signed note's text part: the JSON line); throws when it is not one. */
export function parseStagingIndex(note: string): StagingIndex {
  const value = JSON.parse(splitNote(note).text) as Partial<StagingIndex>;
  if (value.format !== INDEX_FORMAT || value.version !== 1 || typeof value.exportId !== 'string' || !Array.isArray(value.batches) || !value.batches.every((b) => typeof b === 'string')) {
    throw new Error(`not a ${INDEX_FORMAT} version 1`);
  }
  if (value.contents !== undefined) {
    if (typeof value.contents !== 'object' || value.contents === null || Array.isArray(value.contents)) throw new Error('its contents is not an object');
    for (const [name, record] of Object.entries(value.contents)) {
      const r = record as Partial<StagedBatchRecord> | null;
      if (typeof r !== 'object' || r === null || !Number.isSafeInteger(r.items) || r.items! < 0 || (r.sha256 !== undefined && (typeof r.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.sha256)))) {
        throw new Error(`its record of batch ${name} is not a count of messages and a sha256`);
      }
    }
  }
  return value as StagingIndex;
}
