import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, type Stats } from 'node:fs';
import { link, lstat, open, rename, stat, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { positionText, type AttachmentRef, type ExportContext, type Rejection } from '../../model.js';
import type { ZipEntry } from '../zip/index.js';
import { fileSha256, sha256Hex } from '../../hash.js';
import { fsyncDir, isCode, makeDirectory, noHardLinks } from '../../fs-util.js';
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
 * keep 1 GiB (a copy each where the file system has no hard links: see publish). Names come from
 * hashes, never from the archive.
 */
export class RejectsFolder {
  /** Per export folder: attachment id -> its content-addressed file, once written this run. */
  private readonly stored = new Map<string, Promise<string>>();

  constructor(readonly dir: string) {}

  /**
   * Keeps the item; resolves to its folder. Rejects when anything could not be written durably.
   * The event's bytes are written to a temporary file and published by a hard link that never
   * replaces (a checked rename where there are no hard links: see publish): a folder kept by an
   * earlier run is never rewritten (a crash mid-rewrite would leave neither copy), and when it holds other bytes (a corrected re-delivery of the export, its event
   * at the same place changed) this version is kept beside it, in `<folder>.<sha256 prefix>`.
   */
  async keep(source: RejectsSource, item: Rejection): Promise<string> {
    const exportDir = join(this.dir, safeName(source.exportId));
    const id = item.itemId || `(no id) ${positionText(item.position)}`;
    const place = `${safeName(id)}@${item.position.file}.${item.position.index}`;
    await makeDirectory(exportDir);
    const temporary = temporaryName(exportDir);
    let folder: string;
    try {
      const digest = await writeDurably(temporary, async (out) => {
        if (item.bytes) out.end(item.bytes);
        else if (item.tooLarge) await source.copyEventBytes(item.position, item.tooLarge, out);
        // Only an item a plugin made has no bytes of its own in the archive.
        else out.end(JSON.stringify(item.raw));
      });
      folder = join(exportDir, place);
      if (!(await publish(temporary, folder, 'event.json', digest))) {
        folder = join(exportDir, `${place}.${digest.slice(0, VERSION_DIGITS)}`);
        if (!(await publish(temporary, folder, 'event.json', digest))) {
          throw new Error(`${join(folder, 'event.json')} holds other bytes than this version of the event (sha256 ${digest}), which it is named after`);
        }
      }
    } finally {
      await unlink(temporary).catch(() => undefined);
    }
    // The reason of this version, replaced whole (a rename): it says why the latest run rejected it.
    const reasonTemporary = temporaryName(folder);
    try {
      await writeDurably(reasonTemporary, async (out) => {
        out.end(`${item.reason}: ${oneLine(item.detail)}\n`);
      });
      await rename(reasonTemporary, join(folder, 'reason.txt'));
    } catch (err) {
      await unlink(reasonTemporary).catch(() => undefined);
      throw err;
    }
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
      // Kept by an earlier run: the same bytes stay linked; other bytes (a corrected re-delivery) go beside them.
      const digest = basename(blob);
      if (!(await publish(blob, join(folder, 'attachments'), safeName(ref.id), digest, true))) {
        await publish(blob, join(folder, 'attachments'), `${safeName(ref.id)}.${digest.slice(0, VERSION_DIGITS)}`, digest, true);
      }
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
        const temporary = temporaryName(dir);
        try {
          const digest = await writeDurably(temporary, (out) => pipeline(entry.open(), out));
          const final = join(dir, digest);
          // Never replaced: the same bytes under the same name, and the links made to it before stay its links.
          await link(temporary, final).catch(async (err: unknown) => {
            if (isCode(err, 'EEXIST')) return;
            if (!noHardLinks(err)) throw err;
            // Named by its bytes: whoever may rename the same name over it in between puts the same bytes there.
            await moveIfFree(temporary, final);
          });
          await unlink(temporary).catch((err: unknown) => {
            if (!isCode(err, 'ENOENT')) throw err;
          });
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

/** Versions of one event kept beside the first are told apart by this many hex digits of their sha256. */
const VERSION_DIGITS = 16;

/** A name in `dir` no other writer uses (a dot first: no kept item is named so). */
function temporaryName(dir: string): string {
  return join(dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/**
 * Publishes the durable file `temporary` (its sha256 `digest`) as `folder/name` by a hard link,
 * never replacing a file there: true when it is there now (linked, or the same bytes kept
 * before), false when that name holds other bytes. `shared` (an attachment's blob, which other
 * items link to) stays where it is; else `temporary` may be gone once published.
 *
 * A file system without hard links (link fails EPERM, ENOTSUP...: vfat, exFAT, some SMB and FUSE
 * mounts) gets a rename instead, made only when `lstat` finds the name free just before: rename(2)
 * replaces, so a writer that makes that name between the look and the rename loses its file. A
 * look after it finds that loss when it is ours (another file there now: an error, so the item is
 * not kept and the next run keeps it), not when the other writer's was lost. A shared file is
 * first copied beside the name (fsynced), so such an item's attachment takes its space again.
 */
async function publish(temporary: string, folder: string, name: string, digest: string, shared = false): Promise<boolean> {
  await makeDirectory(folder);
  const target = join(folder, name);
  try {
    await link(temporary, target);
    return true;
  } catch (err) {
    if (!isCode(err, 'EEXIST')) {
      if (!noHardLinks(err)) throw err;
      if (!(await lstatIfThere(target))) return moveIntoPlace(shared ? await durableCopy(temporary, folder) : temporary, target, digest, shared);
    }
  }
  return holds(target, await stat(temporary), digest);
}

/** Whether `target` holds the bytes of sha256 `digest`: it is the file `ours`, or one with the same bytes. */
async function holds(target: string, ours: Stats, digest: string): Promise<boolean> {
  // The same file (an attachment's blob linked before) needs no reading.
  const there = await stat(target);
  return (there.ino === ours.ino && there.dev === ours.dev) || (await fileSha256(target)) === digest;
}

/** `lstat` of `path`, or undefined when nothing is named so. */
async function lstatIfThere(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if (isCode(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/** Renames `from` to `to` when nothing is named `to` just before (see publish); whether it did. */
async function moveIfFree(from: string, to: string): Promise<boolean> {
  if (await lstatIfThere(to)) return false;
  await rename(from, to);
  return true;
}

/**
 * publish's rename, where there are no hard links: `from` (durable, sha256 `digest`) becomes `to`
 * if that name is still free, and is then looked at again. A copy (`copied`) is removed when not
 * used. True when `to` holds the bytes now; false when another file took the name first.
 */
async function moveIntoPlace(from: string, to: string, digest: string, copied: boolean): Promise<boolean> {
  const ours = await stat(from);
  try {
    if (!(await moveIfFree(from, to))) return await holds(to, ours, digest);
  } finally {
    if (copied) await unlink(from).catch(() => undefined);
  }
  if (await holds(to, ours, digest)) return true;
  throw new Error(`${to} was replaced by another file while this one was published by a rename (this file system has no hard links), so these bytes (sha256 ${digest}) are not kept there`);
}

/**
 * A durable copy of `path` under a temporary name in `folder`, streamed: copyFile fails ENOSYS on
 * some of these file systems (fusefat).
 */
async function durableCopy(path: string, folder: string): Promise<string> {
  const copy = temporaryName(folder);
  try {
    await writeDurably(copy, (out) => pipeline(createReadStream(path), out));
  } catch (err) {
    await unlink(copy).catch(() => undefined);
    throw err;
  }
  return copy;
}

/**
 * Writes a file through `fill`, then fsyncs it, so a kept original survives a crash; resolves to
 * the sha256 (hex) of what was written.
 */
async function writeDurably(path: string, fill: (out: Writable) => Promise<void>): Promise<string> {
  const hash = createHash('sha256');
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  const filled = fill(hashing).catch((err: unknown) => {
    hashing.destroy(err as Error); // the file's write stream is closed, not left open
    throw err;
  });
  await Promise.all([filled, pipeline(hashing, createWriteStream(path))]);
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}
