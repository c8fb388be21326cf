import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { AttachmentRef, RawEvent } from '../../model.js';
import type { PivotExportArchive } from '../../sources/pivot-zip/index.js';
import { base64Size } from '../mime/index.js';
import { sha256Hex } from '../../hash.js';

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

/** A file-system-safe, unique folder name for an item id that may hold anything. */
export function safeName(id: string): string {
  const readable = id.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_').slice(0, 60);
  return `${readable}.${sha256Hex(id).slice(0, 12)}`;
}

/**
 * Keeps what was not delivered: the event's JSON exactly as read, and the bytes of its
 * attachments streamed from the archive (never all in memory), under
 * `<rejects>/<exportId>/<item>/`. Names come from hashes, never from the archive.
 */
export class RejectsFolder {
  constructor(readonly dir: string) {}

  async keep(archive: PivotExportArchive, raw: RawEvent, reason: string): Promise<string> {
    const id = typeof raw.id === 'string' ? raw.id : JSON.stringify(raw).slice(0, 200);
    const folder = join(this.dir, safeName(archive.manifest.exportId), safeName(id));
    await mkdir(folder, { recursive: true });
    await writeFile(join(folder, 'event.json'), JSON.stringify(raw, null, 2) + '\n');
    await writeFile(join(folder, 'reason.txt'), reason + '\n');
    const refs = Array.isArray(raw.attachments) ? (raw.attachments as AttachmentRef[]) : [];
    for (const ref of refs) {
      const entry = ref && typeof ref.id === 'string' ? archive.attachment(ref.id) : undefined;
      if (!entry) continue;
      await mkdir(join(folder, 'attachments'), { recursive: true });
      await pipeline(entry.open(), createWriteStream(join(folder, 'attachments', safeName(ref.id))));
    }
    return folder;
  }
}
