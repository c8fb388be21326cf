import type { FileHandle } from 'node:fs/promises';
import { PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import { crc32 } from 'node:zlib';
import unzipper, { type CustomSource } from 'unzipper';
import unzipEntry from 'unzipper/lib/Open/unzip.js';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';

/** One entry of the zip's central directory, with the numbers we check before reading it. */
export interface ZipEntry {
  name: string;
  compressedSize: number;
  uncompressedSize: number;
  crc32: number;
  offset: number;
  method: number;
  /** Opens a stream of the entry's bytes, checked against the central directory; `onBytes` counts them. */
  open(onBytes?: (n: number) => void): Readable;
}

export interface ZipLimits {
  /** Largest uncompressed/compressed ratio accepted for entries over 1 MiB (zip bomb guard). */
  maxRatio: number;
}

// Chat JSON deflates about 5-20:1; deflate cannot pass about 1032:1, which zero-filled bombs approach.
export const DEFAULT_ZIP_LIMITS: ZipLimits = { maxRatio: 200 };

/** Entry names that must never be trusted: absolute, `..`, backslash, NUL or control characters. */
export function isHostileEntryName(name: string): boolean {
  return (
    name.startsWith('/') ||
    /^[a-zA-Z]:/.test(name) ||
    name.includes('\\') ||
    /[\u0000-\u001f\u007f]/.test(name) ||
    name.split('/').some((part) => part === '..')
  );
}

interface UnzipperFile {
  path: string;
  pathBuffer: Buffer;
  type: string;
  flags: number;
  compressionMethod: number;
  compressedSize: number;
  uncompressedSize: number;
  crc32: number;
  offsetToLocalFileHeader: number;
  fileNameLength: number;
  extraFieldLength: number;
}

/** A zip held open: every read goes through this one descriptor, whatever happens to its path. */
export interface OpenZipFile {
  label: string;
  handle: FileHandle;
  size: number;
  /** Every read stream made on the handle and not closed yet: destroyed before the handle closes. */
  streams?: Set<Readable>;
}

const EOCD_SIGNATURE = 0x06054b50;
/** The end-of-central-directory record: 22 bytes, then a comment of up to 65,535 bytes. */
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;
/** The ZIP64 end-of-central-directory locator stands just before the EOCD record. */
const ZIP64_LOCATOR_SIZE = 20;

/**
 * Where the end-of-central-directory record starts, searched backwards from the end over the
 * largest comment the format allows (APPNOTE 4.3.16): the record whose comment reaches exactly
 * the end of the file, so a comment (or a stored entry) holding the signature cannot be taken
 * for it; failing that (bytes were appended after the zip), the last record whose comment fits
 * in the file, as Go's and Python's readers do. -1 if there is none.
 */
export function findEndOfCentralDirectory(tail: Buffer, tailStart: number, fileSize: number): number {
  let fits = -1;
  for (let i = tail.length - EOCD_SIZE; i >= 0; i--) {
    if (tail.readUInt32LE(i) !== EOCD_SIGNATURE) continue;
    const end = tailStart + i + EOCD_SIZE + tail.readUInt16LE(i + 20);
    if (end === fileSize) return tailStart + i;
    if (end < fileSize && fits < 0) fits = tailStart + i;
  }
  return fits;
}

/**
 * Bytes [start, end) of a held file, read with positioned reads. Unlike fs.createReadStream on a
 * borrowed descriptor, destroying it never closes the descriptor (unzipper destroys what it has read enough of).
 */
export function rangeStream(handle: FileHandle, start: number, end: number): Readable {
  let position = start;
  return new Readable({
    highWaterMark: 64 * 1024,
    read(wanted) {
      const length = Math.min(wanted, end - position);
      if (length <= 0) {
        this.push(null);
        return;
      }
      handle.read(Buffer.allocUnsafe(length), 0, length, position).then(
        ({ bytesRead, buffer }) => {
          position += bytesRead;
          this.push(bytesRead === 0 ? null : buffer.subarray(0, bytesRead));
        },
        (err: Error) => this.destroy(err),
      );
    },
  });
}

/**
 * unzipper's reading options for a zip of `size` bytes whose tail is `tail`. unzipper takes the
 * first signature in the `tailSize` bytes it reads from the end (80 by default, so a comment over
 * 58 bytes made the zip unreadable): it is given exactly the bytes from the record found above.
 */
function tailOptions(tail: Buffer, tailStart: number, size: number): { tailSize: number } {
  const eocd = findEndOfCentralDirectory(tail, tailStart, size);
  if (eocd < 0) throw new Error(`no end-of-central-directory record in the last ${tail.length} bytes`);
  return { tailSize: size - eocd };
}

async function readTail(read: (start: number, length: number) => Promise<Buffer>, size: number): Promise<{ tail: Buffer; start: number }> {
  const start = Math.max(0, size - EOCD_SIZE - MAX_COMMENT - ZIP64_LOCATOR_SIZE);
  return { tail: await read(start, size - start), start };
}

/**
 * Reads the central directory with unzipper's `Open.custom` over one held descriptor (never the streaming `Parse`, which
 * misreads ZIP64 data descriptors and hangs on truncated input) and refuses what a safe
 * reader must refuse: overlapping entries, absurd compression ratios, encryption,
 * unknown compression methods and duplicate names.
 */
export async function readCentralDirectory(
  source: OpenZipFile | { label: string; buffer: Buffer },
  limits: ZipLimits = DEFAULT_ZIP_LIMITS,
): Promise<{ entries: Map<string, ZipEntry>; hostileNames: string[] }> {
  // A zip held open on disk, or one already in memory (a staged batch); the label names it in errors.
  const archivePath = source.label;
  // The range streams an entry read makes (unzipper makes them inside its entry reader, synchronously).
  let capture: Readable[] | undefined;
  let files: UnzipperFile[];
  let centralDirectoryOffset: number;
  let custom: CustomSource;
  try {
    let opened: Promise<unknown>;
    if ('buffer' in source) {
      const { buffer } = source;
      const { tail, start } = await readTail(async (at, length) => buffer.subarray(at, at + length), buffer.length);
      // As unzipper's Open.buffer reads a buffer.
      custom = { size: async () => buffer.length, stream: (at, length) => new PassThrough().end(buffer.subarray(at, length ? at + length : undefined)) as PassThrough };
      opened = unzipper.Open.custom(custom, tailOptions(tail, start, buffer.length));
    } else {
      const { handle, size } = source;
      const read = async (at: number, length: number) => {
        const buffer = Buffer.alloc(length);
        const { bytesRead } = await handle.read(buffer, 0, length, at);
        return buffer.subarray(0, bytesRead);
      };
      const { tail, start } = await readTail(read, size);
      // A read of the directory that fails must fail open(), never hang it or go unhandled.
      let readFailed: (err: Error) => void = () => undefined;
      const failure = new Promise<never>((_, reject) => (readFailed = reject));
      failure.catch(() => undefined);
      custom = {
        size: async () => size,
        // unzipper's own file source reads one byte past start+length (an inclusive end); so do we.
        stream: (at: number, length?: number) => {
          const stream = rangeStream(handle, at, length ? Math.min(at + length + 1, size) : size);
          source.streams?.add(stream);
          stream.on('close', () => source.streams?.delete(stream));
          if (capture) capture.push(stream);
          else stream.on('error', (err: Error) => readFailed(err));
          return stream;
        },
      };
      // Once the directory is read, `failure` is settled: a pending promise would keep what the
      // race resolved with (unzipper's whole directory) alive as long as `custom` is.
      opened = Promise.race([unzipper.Open.custom(custom, tailOptions(tail, start, size)), failure]).finally(() => {
        readFailed(new Error('the directory was read'));
        readFailed = () => undefined;
      });
    }
    const directory = (await opened) as unknown as {
      files: UnzipperFile[];
      offsetToStartOfCentralDirectory: number;
    };
    files = directory.files;
    centralDirectoryOffset = Number(directory.offsetToStartOfCentralDirectory);
  } catch (err) {
    throw new PivotArchiveError(
      ErrorCode.ARCHIVE_UNREADABLE,
      `${archivePath}: not a readable zip archive (truncated or corrupt?): ${errorMessage(err)}`,
      { cause: err },
    );
  }
  /**
   * An entry's stream and the range streams it reads, as unzipper's `file.stream()` makes them,
   * from the few numbers an entry keeps: unzipper's file objects (dates, raw names, extra fields,
   * closures) cost about 1 KB each, 20 MB for an export with 20,000 attachments.
   */
  const openEntry = (entry: DirectoryEntry): { entry: Readable; ranges: Readable[] } => {
    capture = [];
    try {
      // unzipper's window for the local header: the central directory's name and extra lengths, plus 1,000 bytes to spare.
      const length = 30 + 1000 + entry.headerLengths + entry.compressedSize;
      const vars = { flags: entry.flags, compressionMethod: entry.method, compressedSize: entry.compressedSize, uncompressedSize: entry.uncompressedSize };
      return { entry: unzipEntry(custom, entry.offset, undefined, vars, length), ranges: capture };
    } finally {
      capture = undefined;
    }
  };

  const entries = new Map<string, ZipEntry>();
  const hostileNames: string[] = [];
  for (const file of files) {
    const name = file.path;
    if (isHostileEntryName(name)) {
      hostileNames.push(name);
      continue;
    }
    if (file.type === 'Directory') continue;
    if (entries.has(name)) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_HOSTILE, `${archivePath}: entry ${JSON.stringify(name)} appears twice`);
    }
    if (file.flags & 0x1) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${archivePath}: entry ${JSON.stringify(name)} is encrypted`);
    }
    if (file.compressionMethod !== 0 && file.compressionMethod !== 8) {
      throw new PivotArchiveError(
        ErrorCode.ARCHIVE_CONTENT,
        `${archivePath}: entry ${JSON.stringify(name)} uses compression method ${file.compressionMethod}; only STORE and DEFLATE are allowed`,
      );
    }
    const compressedSize = Number(file.compressedSize);
    const uncompressedSize = Number(file.uncompressedSize);
    if (
      uncompressedSize > 1024 * 1024 &&
      uncompressedSize / Math.max(compressedSize, 1) > limits.maxRatio
    ) {
      throw new PivotArchiveError(
        ErrorCode.ARCHIVE_HOSTILE,
        `${archivePath}: entry ${JSON.stringify(name)} expands ${compressedSize} to ${uncompressedSize} bytes (over ${limits.maxRatio}:1): refused as a zip bomb`,
      );
    }
    if (file.compressionMethod === 0 && compressedSize !== uncompressedSize) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_CORRUPT, `${archivePath}: stored entry ${JSON.stringify(name)} has inconsistent sizes`);
    }
    entries.set(
      name,
      new DirectoryEntry(archivePath, openEntry, name, compressedSize, uncompressedSize, file.crc32 >>> 0, Number(file.offsetToLocalFileHeader), file.compressionMethod, file.flags, (file.fileNameLength || 0) + (file.extraFieldLength || 0)),
    );
  }
  refuseOverlaps(archivePath, [...entries.values()], centralDirectoryOffset);
  return { entries, hostileNames };
}

/** An entry as the central directory gives it: a few numbers, and the archive's one way to read it. */
class DirectoryEntry implements ZipEntry {
  constructor(
    private readonly archivePath: string,
    private readonly reader: (entry: DirectoryEntry) => { entry: Readable; ranges: Readable[] },
    readonly name: string,
    readonly compressedSize: number,
    readonly uncompressedSize: number,
    readonly crc32: number,
    readonly offset: number,
    readonly method: number,
    readonly flags: number,
    /** Its name's and extra field's lengths in the central directory. */
    readonly headerLengths: number,
  ) {}

  open(onBytes?: (n: number) => void): Readable {
    return checkedEntryStream(this.archivePath, this.name, () => this.reader(this), this.crc32, this.uncompressedSize, onBytes);
  }
}

/** Overlapping entries are the trick behind non-recursive zip bombs; no honest writer makes them. */
function refuseOverlaps(archivePath: string, entries: ZipEntry[], centralDirectoryOffset: number): void {
  const sorted = [...entries].sort((a, b) => a.offset - b.offset);
  for (let i = 0; i < sorted.length; i++) {
    const entry = sorted[i]!;
    // 30 bytes of local header plus the name at the least precede the data.
    const end = entry.offset + 30 + Buffer.byteLength(entry.name) + entry.compressedSize;
    const next = i + 1 < sorted.length ? sorted[i + 1]!.offset : centralDirectoryOffset;
    if (Number.isFinite(next) && end > next) {
      throw new PivotArchiveError(
        ErrorCode.ARCHIVE_HOSTILE,
        `${archivePath}: entry ${JSON.stringify(entry.name)} overlaps the next entry or the central directory: refused`,
      );
    }
  }
}

/**
 * The entry's bytes, never more than the central directory declares, and failing unless
 * the length and CRC-32 match it: a truncated, corrupt or bomb entry cannot pass. A read of the
 * file that fails, or that stops because the archive was closed, fails the stream (never hangs it).
 */
function checkedEntryStream(
  archivePath: string,
  name: string,
  open: () => { entry: Readable; ranges: Readable[] },
  declaredCrc: number,
  declaredSize: number,
  onBytes?: (n: number) => void,
): Readable {
  let seen = 0;
  let crc = 0;
  const fail = (why: string) =>
    new PivotArchiveError(ErrorCode.ARCHIVE_CORRUPT, `${archivePath}: entry ${JSON.stringify(name)} ${why}`);
  const guard = new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      seen += chunk.length;
      onBytes?.(chunk.length);
      if (seen > declaredSize) {
        done(fail(`inflates past its declared ${declaredSize} bytes`));
        return;
      }
      crc = crc32(chunk, crc);
      done(null, chunk);
    },
    flush(done: TransformCallback) {
      if (seen !== declaredSize) done(fail(`ends after ${seen} of ${declaredSize} bytes`));
      else if (crc >>> 0 !== declaredCrc >>> 0) done(fail('fails its CRC-32 check'));
      else done();
    },
  });
  let raw: Readable;
  let ranges: Readable[];
  try {
    ({ entry: raw, ranges } = open());
  } catch (err) {
    queueMicrotask(() => guard.destroy(fail(`cannot be read: ${errorMessage(err)}`)));
    return guard;
  }
  let whole = false;
  raw.once('finish', () => (whole = true));
  for (const range of ranges) {
    range.on('error', (err: Error) => guard.destroy(fail(`cannot be read: ${err.message}`)));
    // unzipper destroys the file read once the entry is whole; before that, a close means the archive was closed.
    range.on('close', () => {
      if (!range.readableEnded && !whole) guard.destroy(fail('cannot be read: the archive was closed'));
    });
  }
  raw.on('error', (err: Error) => guard.destroy(fail(`cannot be read: ${err.message}`)));
  guard.on('close', () => {
    raw.destroy();
    for (const range of ranges) range.destroy();
  });
  return raw.pipe(guard);
}

/** Reads a whole (small) entry into memory, with a cap. */
export async function readEntryBuffer(entry: ZipEntry, maxBytes: number): Promise<Buffer> {
  if (entry.uncompressedSize > maxBytes) {
    throw new PivotArchiveError(
      ErrorCode.ARCHIVE_CONTENT,
      `entry ${JSON.stringify(entry.name)} is ${entry.uncompressedSize} bytes, over the ${maxBytes}-byte limit for it`,
    );
  }
  const chunks: Buffer[] = [];
  for await (const chunk of entry.open()) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
