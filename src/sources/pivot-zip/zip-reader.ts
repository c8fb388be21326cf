import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { crc32 } from 'node:zlib';
import unzipper from 'unzipper';
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
  stream(): Readable;
}

/**
 * Reads the central directory with unzipper's `Open.file` (never the streaming `Parse`, which
 * misreads ZIP64 data descriptors and hangs on truncated input) and refuses what a safe
 * reader must refuse: overlapping entries, absurd compression ratios, encryption,
 * unknown compression methods and duplicate names.
 */
export async function readCentralDirectory(
  source: string | { label: string; buffer: Buffer },
  limits: ZipLimits = DEFAULT_ZIP_LIMITS,
): Promise<{ entries: Map<string, ZipEntry>; hostileNames: string[] }> {
  // A path on disk, or a zip already in memory (a staged batch); the label names it in errors.
  const archivePath = typeof source === 'string' ? source : source.label;
  let files: UnzipperFile[];
  let centralDirectoryOffset: number;
  try {
    const opened = typeof source === 'string' ? unzipper.Open.file(source) : unzipper.Open.buffer(source.buffer);
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
    entries.set(name, {
      name,
      compressedSize,
      uncompressedSize,
      crc32: file.crc32 >>> 0,
      offset: Number(file.offsetToLocalFileHeader),
      method: file.compressionMethod,
      open: (onBytes) => checkedEntryStream(archivePath, name, file, uncompressedSize, onBytes),
    });
  }
  refuseOverlaps(archivePath, [...entries.values()], centralDirectoryOffset);
  return { entries, hostileNames };
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
 * the length and CRC-32 match it: a truncated, corrupt or bomb entry cannot pass.
 */
function checkedEntryStream(archivePath: string, name: string, file: UnzipperFile, declaredSize: number, onBytes?: (n: number) => void): Readable {
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
      else if (crc >>> 0 !== file.crc32 >>> 0) done(fail('fails its CRC-32 check'));
      else done();
    },
  });
  let raw: Readable;
  try {
    raw = file.stream();
  } catch (err) {
    queueMicrotask(() => guard.destroy(fail(`cannot be read: ${errorMessage(err)}`)));
    return guard;
  }
  raw.on('error', (err: Error) => guard.destroy(fail(`cannot be read: ${err.message}`)));
  guard.on('close', () => raw.destroy());
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
