import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { link, open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { positionText, type AttachmentRef, type ExportContext, type Rejection } from '../../model.js';
import type { ZipEntry } from '../zip/index.js';
import { sha256Hex } from '../../hash.js';
import { fsyncDir, makeDirectory } from '../../fs-util.js';
import { PivotArchiveError } from '../../errors.js';
import { oneLine } from '../one-line.js';

/** A file-system-safe, unique folder name for an item id that may hold anything. */
export function safeName(id: string): string {
  const readable = id.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_').slice(0, 60);
  return `${readable}.${sha256Hex(id).slice(0, 12)}`;
}

/** What the rejects folder needs of the export a rejected item came from. */
export type RejectsSource = Pick<ExportContext, 'exportId' | 'attachment' | 'copyEventBytes'>;

/**
 * Keeps what was not delivered, durably (fsynced) before its outcome is recorded, under
 * `<rejects>/<exportId>/<item>@<file>.<index>/`: `event.json` holds the event's exact bytes as
 * they stood in the archive (never re-serialised), `reason.txt` why. Attachment bytes are kept
 * once per export, content-addressed in `<rejects>/<exportId>/attachments/<sha256>`, and each
 * item's `attachments/<id>` is a hard link to them: four events that share a 1 GiB attachment
 * keep 1 GiB. Names come from hashes, never from the archive.
 */
export class RejectsFolder {
  /** Per export folder: attachment id -> its content-addressed file, once written this run. */
  private readonly stored = new Map<string, Promise<string>>();

  constructor(readonly dir: string) {}

  /** Keeps the item; resolves to its folder. Rejects when anything could not be written durably. */
  async keep(source: RejectsSource, item: Rejection): Promise<string> {
    const exportDir = join(this.dir, safeName(source.exportId));
    const id = item.itemId || `(no id) ${positionText(item.position)}`;
    const folder = join(exportDir, `${safeName(id)}@${item.position.file}.${item.position.index}`);
    await makeDirectory(folder);
    await writeDurably(join(folder, 'event.json'), async (out) => {
      if (item.bytes) out.end(item.bytes);
      else if (item.tooLarge) await source.copyEventBytes(item.position, item.tooLarge, out);
      // Only an item a plugin made has no bytes of its own in the archive.
      else out.end(JSON.stringify(item.raw));
    });
    await writeDurably(join(folder, 'reason.txt'), async (out) => {
      out.end(`${item.reason}: ${oneLine(item.detail)}\n`);
    });
    const refs = Array.isArray(item.raw.attachments) ? (item.raw.attachments as AttachmentRef[]) : [];
    let linked = false;
    for (const ref of refs) {
      const entry = ref && typeof ref.id === 'string' ? source.attachment(ref.id) : undefined;
      if (!entry) continue;
      await makeDirectory(join(folder, 'attachments'));
      let blob: string;
      try {
        blob = await this.attachmentBlob(exportDir, ref.id, entry);
      } catch (err) {
        // An attachment the archive cannot give back (it fails its CRC, say) is said where it would
        // be: the item is kept all the same (else it fails to be kept on every run, for ever).
        if (!(err instanceof PivotArchiveError && err.code.startsWith('E_ARCHIVE_'))) throw err;
        await writeDurably(join(folder, 'attachments', `${safeName(ref.id)}.unreadable.txt`), async (out) => void out.end(`${err.code}: ${err.message}\n`));
        linked = true;
        continue;
      }
      await link(blob, join(folder, 'attachments', safeName(ref.id))).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err; // kept by an earlier run
      });
      linked = true;
    }
    if (linked) await fsyncDir(join(folder, 'attachments'));
    await fsyncDir(folder);
    await fsyncDir(exportDir);
    return folder;
  }

  /** The attachment's content-addressed file, written (streamed, hashed, fsynced) once per export. */
  private attachmentBlob(exportDir: string, id: string, entry: ZipEntry): Promise<string> {
    const key = `${exportDir}\n${id}`;
    let blob = this.stored.get(key);
    if (!blob) {
      blob = (async () => {
        const dir = join(exportDir, 'attachments');
        await makeDirectory(dir);
        const temporary = join(dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
        const hash = createHash('sha256');
        const hashing = new Transform({
          transform(chunk: Buffer, _encoding, done) {
            hash.update(chunk);
            done(null, chunk);
          },
        });
        try {
          await writeDurably(temporary, async (out) => {
            await pipeline(entry.open(), hashing, out);
          });
          const final = join(dir, hash.digest('hex'));
          await rename(temporary, final); // same bytes under the same name: replacing is harmless
          await fsyncDir(dir);
          return final;
        } catch (err) {
          await unlink(temporary).catch(() => undefined);
          throw err;
        }
      })();
      blob.catch(() => this.stored.delete(key));
      this.stored.set(key, blob);
    }
    return blob;
  }
}

/** Writes a file through `fill`, then fsyncs it, so a kept original survives a crash. */
async function writeDurably(path: string, fill: (out: Writable) => Promise<void>): Promise<void> {
  const out = createWriteStream(path);
  const finished = new Promise<void>((resolve, reject) => {
    out.on('finish', resolve);
    out.on('error', reject);
  });
  await Promise.all([fill(out), finished]);
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
