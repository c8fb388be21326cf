// The index a staging run leaves beside an export's batches, so that an import can tell a batch
// that is gone (deleted by a lifecycle rule, a clean-up, a hand) from one never staged. See SPEC.md.
import { randomBytes } from 'node:crypto';
import { exportFolder, type AzureBlobLocation } from './location.js';

export const INDEX_FORMAT = 'pivot-archive-staging-index';

/** Every batch that holds an export's messages, as one staging run that settled them all staged or found them. */
export interface StagingIndex {
  format: typeof INDEX_FORMAT;
  version: 1;
  exportId: string;
  writtenAt: string;
  batches: string[];
}

/** `<prefix>/<exportId>/index-<time>-<random>.json`: the latest sorts last within its export's folder. */
export function stagingIndexName(location: AzureBlobLocation, exportId: string, at: Date): string {
  const time = at.toISOString().replace(/[-:.]/g, '');
  return `${exportFolder(location, exportId)}index-${time}-${randomBytes(4).toString('hex')}.json`;
}

/** The export folder of an index blob's name, or undefined when it is no index. */
export function folderOfIndex(name: string): string | undefined {
  const match = /^(.*\/)?index-\d{8}T\d{9}Z-[0-9a-f]{8}\.json$/.exec(name);
  return match ? (match[1] ?? '') : undefined;
}

export function stagingIndex(exportId: string, batches: Iterable<string>, at: Date): StagingIndex {
  return { format: INDEX_FORMAT, version: 1, exportId, writtenAt: at.toISOString(), batches: [...batches].sort() };
}

/** The index in a blob's text; throws when it is not one. */
export function parseStagingIndex(text: string): StagingIndex {
  const value = JSON.parse(text) as Partial<StagingIndex>;
  if (value.format !== INDEX_FORMAT || value.version !== 1 || typeof value.exportId !== 'string' || !Array.isArray(value.batches) || !value.batches.every((b) => typeof b === 'string')) {
    throw new Error(`not a ${INDEX_FORMAT} version 1`);
  }
  return value as StagingIndex;
}
