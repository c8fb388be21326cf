import type { AttachmentRef } from '../../model.js';
import type { PivotExportArchive } from '../../sources/pivot-zip/index.js';
import { base64Size } from '../mime/index.js';

export const DEFAULT_MAX_ITEM_SIZE = 10 * 1024 * 1024;

/**
 * A lower bound of the message size from the central directory alone: when the attachments
 * by themselves exceed the limit, their bytes are never read into memory.
 */
export function attachmentsLowerBound(archive: PivotExportArchive, refs: readonly AttachmentRef[]): number {
  let total = 0;
  for (const ref of refs) {
    const entry = archive.attachment(ref.id);
    if (entry) total += base64Size(entry.uncompressedSize);
  }
  return total;
}
