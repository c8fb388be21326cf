import { isUtf8 } from 'node:buffer';
import type { FileHandle } from 'node:fs/promises';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { crc32, createInflateRaw } from 'node:zlib';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';

/** One entry of the zip's central directory, with the numbers we check before reading it. */
export interface ZipEntry {
  name: string;
  compressedSize: number;
  uncompressedSize: number;
  crc32: number;
  offset: number;
  method: number;
  /** Opens a stream of the entry's bytes, checked against the central directory (and `options`, see EntryReadOptions). */
  open(options?: EntryReadOptions): Readable;
}

/** Bytes of an entry that one CRC-32 covers in `EntryReadOptions` blocks (the last block may be shorter). */
export const CRC_BLOCK_BYTES = 64 * 1024;

export interface EntryReadOptions {
  /** Told the length of each piece of bytes as it passes. */
  onBytes?: (n: number) => void;
  /** Filled with the CRC-32 of each CRC_BLOCK_BYTES block of the entry, as it is read. */
  recordBlocks?: number[];
  /**
   * The blocks' CRC-32s a first read recorded: each block is held until it is checked, and the
   * stream fails at the first block that differs, before any of its bytes pass (the file was
   * rewritten in place since). Without it a change is found only by the entry's CRC-32, at its end.
   */
  expectBlocks?: ArrayLike<number>;
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
 * A zip whose own records disagree on what it holds (its end records, ZIP64 end record and
 * central directory): zip readers would differ on which entries it has, so it is refused.
 */
class InconsistentZip extends Error {}

/**
 * Where the end-of-central-directory record starts, searched backwards from the end over the
 * largest comment the format allows (APPNOTE 4.3.16): the record whose comment reaches exactly
 * the end of the file; failing that (bytes were appended after the zip), the last record whose
 * comment fits in the file, as Go's and Python's readers do. -1 if there is none. A signature in
 * a comment or a stored entry is not taken for it: when two records both reach the end of the
 * file, or the last that fits stands inside an earlier one's comment, either could be the zip's
 * own (Python and unzip take the later one), and the archive is refused as ambiguous.
 */
export function findEndOfCentralDirectory(tail: Buffer, tailStart: number, fileSize: number): number {
  /** Records whose comment fits in the file, the last in the file first. */
  const fitting: { at: number; end: number }[] = [];
  for (let i = tail.length - EOCD_SIZE; i >= 0; i--) {
    if (tail.readUInt32LE(i) !== EOCD_SIGNATURE) continue;
    const end = tailStart + i + EOCD_SIZE + tail.readUInt16LE(i + 20);
    if (end <= fileSize) fitting.push({ at: tailStart + i, end });
  }
  const reaching = fitting.filter((r) => r.end === fileSize);
  if (reaching.length > 1) throw new InconsistentZip(`end-of-central-directory records at bytes ${reaching.map((r) => r.at).reverse().join(' and ')} both end exactly at the end of the file: either could be the archive's`);
  if (reaching.length === 1) return reaching[0]!.at;
  const last = fitting[0];
  if (!last) return -1;
  const around = fitting.find((r) => r.at < last.at && r.end >= last.at + EOCD_SIZE);
  if (around) throw new InconsistentZip(`the end-of-central-directory record at byte ${last.at} stands inside the comment of the one at byte ${around.at}: either could be the archive's`);
  return last.at;
}

const LOCAL_HEADER_SIGNATURE = 0x04034b50;
const LOCAL_HEADER_SIZE = 30;
/**
 * What an entry's stored bytes are read in, and what it inflates into. unzipper's entry reader
 * (a parser stream between the reads and zlib's 16 KiB output) read the 187 MB of a 1M-event
 * export's messages in 1.2-1.55 s; plain reads inflated into 64 KiB pieces, 0.6-0.7 s. Larger pieces
 * measured slower for the whole source at times (1 MiB reads or 128 KiB out: 7-9 s against
 * 5-6 s for the 1M events), and each read is read-ahead past what the chain has taken.
 */
const READ_PIECE = 64 * 1024;
const INFLATED_PIECE = 64 * 1024;

/**
 * An entry's stored (compressed) bytes: the local header at its offset says, by its own name
 * and extra lengths, where they start; the central directory says how many there are.
 */
async function* entryData(read: (at: number, length: number) => Promise<Buffer>, offset: number, compressedSize: number, limit: number): AsyncGenerator<Buffer> {
  const header = await read(offset, LOCAL_HEADER_SIZE);
  if (header.length < LOCAL_HEADER_SIZE || header.readUInt32LE(0) !== LOCAL_HEADER_SIGNATURE) throw new Error(`no local header at byte ${offset}`);
  let at = offset + LOCAL_HEADER_SIZE + header.readUInt16LE(26) + header.readUInt16LE(28);
  const end = at + compressedSize;
  // A local extra field that pushes the data into the next entry is an overlap too (the directory check assumed none).
  if (end > limit) throw new Error(`its data would end at byte ${end}, past the next entry, the central directory or the end of the file (byte ${limit})`);
  while (at < end) {
    const piece = await read(at, Math.min(READ_PIECE, end - at));
    if (piece.length === 0) throw new Error(`the file ends at byte ${at}, inside its data`);
    at += piece.length;
    yield piece;
  }
}

async function readTail(read: (start: number, length: number) => Promise<Buffer>, size: number): Promise<{ tail: Buffer; start: number }> {
  const start = Math.max(0, size - EOCD_SIZE - MAX_COMMENT - ZIP64_LOCATOR_SIZE);
  return { tail: await read(start, size - start), start };
}

const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_END_SIGNATURE = 0x06064b50;
const ZIP64_END_SIZE = 56;
const CENTRAL_HEADER_SIGNATURE = 0x02014b50;
const CENTRAL_HEADER_SIZE = 46;
/** The central directory is read in windows of this size (a record longer than it gets a window of its own). */
const DIRECTORY_WINDOW = 64 * 1024;

/** What the central directory says of one entry: only the numbers that are checked and read by. */
interface DirectoryRecord {
  name: string;
  /** Bytes of the name as stored (its decoded form may be longer in UTF-8): the least the local header holds. */
  nameLength: number;
  flags: number;
  method: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  offset: number;
  /** Where its data must end: the next entry's local header, or the central directory (`refuseOverlaps` sets it). */
  limit: number;
}

/** Where the central directory stands, as the end record (or the ZIP64 end record) says. */
interface DirectoryBounds {
  offset: number;
  size: number;
  count: number;
  /** Which record says so, for errors. */
  by: string;
}

/**
 * Where the central directory starts, its size and how many records it holds: from the end
 * record found by `findEndOfCentralDirectory`, or from the ZIP64 end record when a ZIP64 locator
 * stands before it (as Go's reader decides: 65,535 entries fit the end record, and Python writes
 * them there, with no ZIP64 record). Each end-record field is then saturated or says what the
 * ZIP64 one says. The directory must end where the (ZIP64) end record starts: nothing between
 * them, where a record could hide.
 */
async function locateDirectory(read: (at: number, length: number) => Promise<Buffer>, size: number): Promise<DirectoryBounds> {
  const { tail, start } = await readTail(read, size);
  const eocd = findEndOfCentralDirectory(tail, start, size);
  if (eocd < 0) throw new Error(`no end-of-central-directory record in the last ${tail.length} bytes`);
  const record = tail.subarray(eocd - start, eocd - start + EOCD_SIZE);
  const ordinary = { countOnDisk: record.readUInt16LE(8), count: record.readUInt16LE(10), size: record.readUInt32LE(12), offset: record.readUInt32LE(16) };
  const locator = eocd >= ZIP64_LOCATOR_SIZE ? await read(eocd - ZIP64_LOCATOR_SIZE, ZIP64_LOCATOR_SIZE) : Buffer.alloc(0);
  let bounds: DirectoryBounds & { countOnDisk: number };
  let end: number;
  if (locator.length === ZIP64_LOCATOR_SIZE && locator.readUInt32LE(0) === ZIP64_LOCATOR_SIGNATURE) {
    end = safeNumber(locator.readBigUInt64LE(8), 'ZIP64 end record offset');
    const zip64 = await read(end, ZIP64_END_SIZE);
    if (zip64.length < ZIP64_END_SIZE || zip64.readUInt32LE(0) !== ZIP64_END_SIGNATURE) throw new Error('no ZIP64 end-of-central-directory record where its locator points');
    bounds = {
      countOnDisk: safeNumber(zip64.readBigUInt64LE(24), 'ZIP64 record count on this disk'),
      count: safeNumber(zip64.readBigUInt64LE(32), 'ZIP64 record count'),
      size: safeNumber(zip64.readBigUInt64LE(40), 'ZIP64 directory size'),
      offset: safeNumber(zip64.readBigUInt64LE(48), 'ZIP64 directory offset'),
      by: `the ZIP64 end record (byte ${end})`,
    };
    const fields = [['countOnDisk', 'records on this disk', 0xffff], ['count', 'records', 0xffff], ['size', 'directory size', 0xffffffff], ['offset', 'directory offset', 0xffffffff]] as const;
    for (const [field, what, saturated] of fields) {
      if (ordinary[field] !== saturated && ordinary[field] !== bounds[field]) {
        throw new InconsistentZip(`the end record (byte ${eocd}) says ${ordinary[field]} ${what}, ${bounds.by} ${bounds[field]}`);
      }
    }
  } else {
    end = eocd;
    bounds = { ...ordinary, by: `the end record (byte ${eocd})` };
  }
  // One disk: its records are all of them.
  if (bounds.countOnDisk !== bounds.count) throw new InconsistentZip(`${bounds.by} says ${bounds.countOnDisk} records on this disk and ${bounds.count} in all`);
  if (bounds.offset + bounds.size !== end) {
    throw new InconsistentZip(`${bounds.by} puts the central directory at bytes ${bounds.offset}-${bounds.offset + bounds.size - 1}, which do not end where that record starts`);
  }
  return bounds;
}

function safeNumber(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`the ${what} is too large`);
  return Number(value);
}

/** General purpose flag bit 11: the name (and comment) is UTF-8 (APPNOTE 4.4.4). */
const UTF8_NAME_FLAG = 0x800;
/** Bytes 0x80-0xFF in IBM code page 437, the encoding of a zip name without the UTF-8 flag (APPNOTE appendix D). */
const CP437_HIGH =
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

/**
 * An entry's name from its stored bytes: UTF-8 when flagged so, or when the bytes are valid UTF-8
 * (Info-ZIP's zip on Linux writes UTF-8 names without the flag); else code page 437, as APPNOTE
 * says (Windows' own zipper): read as UTF-8, each such byte was U+FFFD, so two names became one.
 */
function entryName(bytes: Buffer, flags: number): string {
  if (flags & UTF8_NAME_FLAG || isUtf8(bytes)) return bytes.toString('utf8');
  let name = '';
  for (const byte of bytes) name += byte < 0x80 ? String.fromCharCode(byte) : CP437_HIGH[byte - 0x80];
  return name;
}

/**
 * The central directory's records, read forward from `offset` in windows, so its size costs a
 * window, and each entry only the few numbers kept (unzipper's own directory made about 1 KB of
 * objects an entry, 20 MB for 20,000 attachments, before anything was checked). Names are read
 * as `entryName` says, sizes and offsets from the ZIP64 extra field when the 32-bit ones are saturated.
 * Read by the directory's size, not its count: the records must fill it exactly, and be as many
 * as the count says (a count short by one would hide the last entry from us, not from others).
 */
async function readDirectoryRecords(read: (at: number, length: number) => Promise<Buffer>, size: number, { offset, size: directorySize, count, by }: DirectoryBounds): Promise<DirectoryRecord[]> {
  let window: Buffer = Buffer.alloc(0);
  let windowStart = offset;
  /** Makes bytes [at, at + length) of the file present in `window`; returns where they start in it. */
  const have = async (at: number, length: number): Promise<number> => {
    if (at < windowStart || at + length > windowStart + window.length) {
      window = await read(at, Math.min(Math.max(length, DIRECTORY_WINDOW), Math.max(size - at, 0)));
      windowStart = at;
      if (window.length < length) throw new Error(`the central directory is cut short at byte ${at + window.length} (record ${records.length + 1})`);
    }
    return at - windowStart;
  };
  const records: DirectoryRecord[] = [];
  const end = offset + directorySize;
  let at = offset;
  const runsPast = () => new InconsistentZip(`central directory record ${records.length + 1} (byte ${at}) runs past the directory's end at byte ${end}, as ${by} gives it`);
  while (at < end) {
    if (at + CENTRAL_HEADER_SIZE > end) throw runsPast();
    let h = await have(at, CENTRAL_HEADER_SIZE);
    if (window.readUInt32LE(h) !== CENTRAL_HEADER_SIGNATURE) throw new Error(`no central directory record at byte ${at} (record ${records.length + 1})`);
    const nameLength = window.readUInt16LE(h + 28);
    const extraLength = window.readUInt16LE(h + 30);
    const length = CENTRAL_HEADER_SIZE + nameLength + extraLength + window.readUInt16LE(h + 32);
    if (at + length > end) throw runsPast();
    h = await have(at, length);
    const flags = window.readUInt16LE(h + 8);
    const name = entryName(window.subarray(h + CENTRAL_HEADER_SIZE, h + CENTRAL_HEADER_SIZE + nameLength), flags);
    let compressedSize = window.readUInt32LE(h + 20);
    let uncompressedSize = window.readUInt32LE(h + 24);
    let localOffset = window.readUInt32LE(h + 42);
    if (compressedSize === 0xffffffff || uncompressedSize === 0xffffffff || localOffset === 0xffffffff) {
      // The ZIP64 extra field (id 1) holds, in this order, each of the three that is saturated.
      const extra = window.subarray(h + CENTRAL_HEADER_SIZE + nameLength, h + CENTRAL_HEADER_SIZE + nameLength + extraLength);
      let field = 0;
      while (field + 4 <= extra.length && extra.readUInt16LE(field) !== 1) field += 4 + extra.readUInt16LE(field + 2);
      const end = field + 4 + (field + 4 <= extra.length ? extra.readUInt16LE(field + 2) : 0);
      let next = field + 4;
      const wide = (what: string) => {
        if (next + 8 > Math.min(end, extra.length)) throw new Error(`entry ${JSON.stringify(name)} has no ZIP64 ${what}`);
        next += 8;
        return safeNumber(extra.readBigUInt64LE(next - 8), `ZIP64 ${what} of entry ${JSON.stringify(name)}`);
      };
      if (uncompressedSize === 0xffffffff) uncompressedSize = wide('uncompressed size');
      if (compressedSize === 0xffffffff) compressedSize = wide('compressed size');
      if (localOffset === 0xffffffff) localOffset = wide('local header offset');
    }
    records.push({
      name,
      nameLength,
      flags,
      method: window.readUInt16LE(h + 10),
      crc32: window.readUInt32LE(h + 16),
      compressedSize,
      uncompressedSize,
      offset: localOffset,
      limit: Infinity,
    });
    at += length;
  }
  if (records.length !== count) throw new InconsistentZip(`${by} says ${count} records; the ${directorySize} bytes of the central directory hold ${records.length}`);
  return records;
}

/**
 * Reads the central directory of a zip held open on one descriptor (or of one in memory) and
 * refuses what a safe reader must refuse: overlapping entries, absurd compression ratios,
 * encryption, unknown compression methods and duplicate names. An entry is read from its local
 * header on, by the sizes the central directory gives (so data descriptors, ZIP64 or not, are
 * never needed), and checked against its length and CRC-32.
 */
export async function readCentralDirectory(
  source: OpenZipFile | { label: string; buffer: Buffer },
  limits: ZipLimits = DEFAULT_ZIP_LIMITS,
): Promise<{ entries: ZipDirectory; hostileNames: string[] }> {
  // A zip held open on disk, or one already in memory (a staged batch); the label names it in errors.
  const archivePath = source.label;
  let read: (at: number, length: number) => Promise<Buffer>;
  let size: number;
  if ('buffer' in source) {
    const { buffer } = source;
    size = buffer.length;
    read = async (at, length) => buffer.subarray(at, at + length);
  } else {
    const { handle } = source;
    size = source.size;
    read = async (at, length) => {
      // Unfilled bytes are never returned (the view ends at bytesRead).
      const buffer = Buffer.allocUnsafe(length);
      const { bytesRead } = await handle.read(buffer, 0, length, at);
      return buffer.subarray(0, bytesRead);
    };
  }
  let records: DirectoryRecord[];
  let centralDirectoryOffset: number;
  try {
    const bounds = await locateDirectory(read, size);
    centralDirectoryOffset = bounds.offset;
    records = await readDirectoryRecords(read, size, bounds);
  } catch (err) {
    if (err instanceof InconsistentZip) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_CORRUPT, `${archivePath}: refused: its zip records disagree on what the archive holds (zip readers would differ on it): ${err.message}`, { cause: err });
    }
    throw new PivotArchiveError(
      ErrorCode.ARCHIVE_UNREADABLE,
      `${archivePath}: not a readable zip archive (truncated or corrupt?): ${errorMessage(err)}`,
      { cause: err },
    );
  }
  /** An entry's stream, and the read of the file under it (closed with the archive). */
  const openEntry = (entry: DirectoryEntry): EntryReads => {
    const data = Readable.from(entryData(read, entry.offset, entry.compressedSize, Math.min(entry.limit, size)), { objectMode: false, highWaterMark: READ_PIECE });
    if ('handle' in source) {
      source.streams?.add(data);
      data.on('close', () => source.streams?.delete(data));
    }
    return { entry: entry.method === 8 ? data.pipe(createInflateRaw({ chunkSize: INFLATED_PIECE })) : data, read: data };
  };

  const kept: DirectoryRecord[] = [];
  const names = new Set<string>();
  const hostileNames: string[] = [];
  for (const record of records) {
    const { name, compressedSize, uncompressedSize } = record;
    if (isHostileEntryName(name)) {
      hostileNames.push(name);
      continue;
    }
    if (uncompressedSize === 0 && name.endsWith('/')) continue; // a directory
    if (names.has(name)) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_HOSTILE, `${archivePath}: entry ${JSON.stringify(name)} appears twice`);
    }
    if (record.flags & 0x1) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${archivePath}: entry ${JSON.stringify(name)} is encrypted`);
    }
    if (record.method !== 0 && record.method !== 8) {
      throw new PivotArchiveError(
        ErrorCode.ARCHIVE_CONTENT,
        `${archivePath}: entry ${JSON.stringify(name)} uses compression method ${record.method}; only STORE and DEFLATE are allowed`,
      );
    }
    if (
      uncompressedSize > 1024 * 1024 &&
      uncompressedSize / Math.max(compressedSize, 1) > limits.maxRatio
    ) {
      throw new PivotArchiveError(
        ErrorCode.ARCHIVE_HOSTILE,
        `${archivePath}: entry ${JSON.stringify(name)} expands ${compressedSize} to ${uncompressedSize} bytes (over ${limits.maxRatio}:1): refused as a zip bomb`,
      );
    }
    if (record.method === 0 && compressedSize !== uncompressedSize) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_CORRUPT, `${archivePath}: stored entry ${JSON.stringify(name)} has inconsistent sizes`);
    }
    names.add(name);
    kept.push(record);
  }
  refuseOverlaps(archivePath, kept, centralDirectoryOffset);
  return { entries: new ZipDirectory(archivePath, openEntry, kept), hostileNames };
}

/** An entry's bytes (inflated, or as stored), and the read of the file they come from (the same stream when stored). */
interface EntryReads {
  entry: Readable;
  read: Readable;
}

/** Per entry in ZipDirectory's float column: sizes, offset and limit (up to 2^53). */
const FLOATS = 4;
/** Per entry in its integer column: CRC-32, method, flags. */
const INTEGERS = 3;

/**
 * The entries of a central directory (directories and hostile names left out) in columns: a
 * name and 44 bytes an entry, where an object an entry in a Map cost about 185 bytes (3.7 MB for
 * an export with 20,000 attachments, held all run). `get` makes the entry it returns.
 */
export class ZipDirectory {
  /** In central directory order. */
  private readonly names: string[];
  /** Rows in name order, for `get`. */
  private readonly byName: Uint32Array;
  private readonly floats: Float64Array;
  private readonly integers: Uint32Array;

  constructor(
    private readonly archivePath: string,
    private readonly reader: (entry: DirectoryEntry) => EntryReads,
    records: readonly DirectoryRecord[],
  ) {
    const n = records.length;
    this.names = records.map((r) => r.name);
    this.floats = new Float64Array(FLOATS * n);
    this.integers = new Uint32Array(INTEGERS * n);
    for (const [row, r] of records.entries()) {
      this.floats.set([r.compressedSize, r.uncompressedSize, r.offset, r.limit], FLOATS * row);
      this.integers.set([r.crc32, r.method, r.flags], INTEGERS * row);
    }
    const names = this.names;
    this.byName = new Uint32Array(n).map((_, row) => row).sort((a, b) => (names[a]! < names[b]! ? -1 : names[a]! > names[b]! ? 1 : 0));
  }

  get size(): number {
    return this.names.length;
  }

  get(name: string): ZipEntry | undefined {
    let low = 0;
    let high = this.byName.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const candidate = this.names[this.byName[middle]!]!;
      if (candidate === name) return this.entry(this.byName[middle]!);
      if (candidate < name) low = middle + 1;
      else high = middle;
    }
    return undefined;
  }

  /** Entry names, in central directory order. */
  keys(): IterableIterator<string> {
    return this.names.values();
  }

  /** Entries, in central directory order. */
  *values(): IterableIterator<ZipEntry> {
    for (let row = 0; row < this.names.length; row++) yield this.entry(row);
  }

  private entry(row: number): DirectoryEntry {
    const [compressedSize, uncompressedSize, offset, limit] = this.floats.subarray(FLOATS * row, FLOATS * row + FLOATS);
    const [crc32, method, flags] = this.integers.subarray(INTEGERS * row, INTEGERS * row + INTEGERS);
    return new DirectoryEntry(this.archivePath, this.reader, this.names[row]!, compressedSize!, uncompressedSize!, crc32!, offset!, limit!, method!, flags!);
  }
}

/** An entry as the central directory gives it: a few numbers, and the archive's one way to read it. */
class DirectoryEntry implements ZipEntry {
  constructor(
    private readonly archivePath: string,
    private readonly reader: (entry: DirectoryEntry) => EntryReads,
    readonly name: string,
    readonly compressedSize: number,
    readonly uncompressedSize: number,
    readonly crc32: number,
    readonly offset: number,
    /** Where its data must end (the next entry, or the central directory). */
    readonly limit: number,
    readonly method: number,
    readonly flags: number,
  ) {}

  open(options: EntryReadOptions = {}): Readable {
    return checkedEntryStream(this.archivePath, this.name, () => this.reader(this), this.crc32, this.uncompressedSize, options);
  }
}

/**
 * Overlapping entries are the trick behind non-recursive zip bombs; no honest writer makes them.
 * Each entry's `limit` is set: its data, wherever its local header puts it, must end there.
 */
function refuseOverlaps(archivePath: string, entries: DirectoryRecord[], centralDirectoryOffset: number): void {
  const sorted = [...entries].sort((a, b) => a.offset - b.offset);
  for (let i = 0; i < sorted.length; i++) {
    const entry = sorted[i]!;
    // 30 bytes of local header plus the name at the least precede the data.
    const end = entry.offset + 30 + entry.nameLength + entry.compressedSize;
    const next = i + 1 < sorted.length ? sorted[i + 1]!.offset : centralDirectoryOffset;
    entry.limit = Number.isFinite(next) ? next : Infinity;
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
  open: () => EntryReads,
  declaredCrc: number,
  declaredSize: number,
  { onBytes, recordBlocks, expectBlocks }: EntryReadOptions,
): Readable {
  let seen = 0;
  let crc = 0;
  const fail = (why: string) =>
    new PivotArchiveError(ErrorCode.ARCHIVE_CORRUPT, `${archivePath}: entry ${JSON.stringify(name)} ${why}`);
  // The block being checked: its CRC-32 so far, its length, and (with expectBlocks) its bytes, held.
  let block = 0;
  let blockCrc = 0;
  let blockFill = 0;
  let held: Buffer[] = [];
  /** Ends the current block: recorded, or checked and let through. */
  const endBlock = (push: (b: Buffer) => void): Error | undefined => {
    const value = blockCrc >>> 0;
    if (recordBlocks) recordBlocks.push(value);
    if (expectBlocks) {
      if (expectBlocks[block] !== value) {
        const start = block * CRC_BLOCK_BYTES;
        return fail(`bytes ${start}-${start + blockFill - 1} differ from what the first read of the archive saw (CRC-32): was the archive rewritten?`);
      }
      for (const part of held) push(part);
      held = [];
    }
    block++;
    blockCrc = 0;
    blockFill = 0;
    return undefined;
  };
  const guard = new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      seen += chunk.length;
      onBytes?.(chunk.length);
      if (seen > declaredSize) {
        done(fail(`inflates past its declared ${declaredSize} bytes`));
        return;
      }
      crc = crc32(chunk, crc);
      if (!recordBlocks && !expectBlocks) {
        done(null, chunk);
        return;
      }
      for (let from = 0; from < chunk.length; ) {
        const part = chunk.subarray(from, from + Math.min(CRC_BLOCK_BYTES - blockFill, chunk.length - from));
        from += part.length;
        blockCrc = crc32(part, blockCrc);
        blockFill += part.length;
        if (expectBlocks) held.push(part);
        if (blockFill === CRC_BLOCK_BYTES) {
          const err = endBlock((b) => this.push(b));
          if (err) return done(err);
        }
      }
      done(null, expectBlocks ? undefined : chunk);
    },
    flush(done: TransformCallback) {
      if (seen !== declaredSize) return done(fail(`ends after ${seen} of ${declaredSize} bytes`));
      const err = blockFill > 0 ? endBlock((b) => this.push(b)) : undefined;
      if (err) done(err);
      else if (crc >>> 0 !== declaredCrc >>> 0) done(fail('fails its CRC-32 check'));
      else done();
    },
  });
  const { entry: raw, read } = open();
  read.on('error', (err: Error) => guard.destroy(fail(`cannot be read: ${err.message}`)));
  // A read of the file closed before its end: the archive was closed under it.
  read.on('close', () => {
    if (!read.readableEnded) guard.destroy(fail('cannot be read: the archive was closed'));
  });
  if (raw !== read) raw.on('error', (err: Error) => guard.destroy(fail(`cannot be read: ${err.message}`)));
  guard.on('close', () => {
    raw.destroy();
    read.destroy();
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
