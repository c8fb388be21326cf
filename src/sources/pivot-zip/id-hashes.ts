import { closeSync, mkdtempSync, openSync, readSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { temporarySpaceError } from '../../errors.js';
import { hash64, keyOf, lastHash } from '../../hash.js';

/** Hashes held in memory at once: 1 MiB. */
const HASHES_PER_CHUNK = 128 * 1024;
/** Hashes read at a time from each written chunk while they are merged: 32 KiB. */
const HASHES_PER_READ = 4 * 1024;
/** Hashes in a block of the merged file: 4 KiB, what one lookup reads. */
const HASHES_PER_BLOCK = 512;

/**
 * 64-bit id hashes, 8 bytes an event and never the ids themselves. One chunk is held in memory;
 * a full chunk is sorted and written to a temporary file, so a day of any size costs the run
 * 1 MiB of memory here (8 bytes an event of temporary disk). `repeated()` merges the chunks into
 * the distinct hashes, sorted, which `has()` then looks in until `close()`: a 4 KiB block of them
 * read a lookup, 16 KiB of memory a million events (see DistinctHashes). Every file is unlinked
 * as soon as it is made: it goes with its descriptor, whatever ends the run.
 */
export class IdHashes {
  /** Two words a hash (low, high); let go once merged. */
  private words: Uint32Array;
  /** Hashes in `words`. */
  private filled = 0;
  private file?: number;
  /** Chunks written to the file, each `perChunk` hashes, sorted. */
  private written = 0;
  /** What `repeated()` merged, until `close()`. */
  private distinct?: DistinctHashes;

  constructor(
    private readonly perChunk = HASHES_PER_CHUNK,
    private readonly tempDir = tmpdir(),
  ) {
    this.words = new Uint32Array(2 * perChunk);
  }

  /** Adds the hash of `id`; returns its key. */
  push(id: string): number {
    hash64(id);
    if (this.filled === this.perChunk) this.writeChunk();
    this.words[2 * this.filled] = lastHash.low;
    this.words[2 * this.filled + 1] = lastHash.high;
    this.filled++;
    return keyOf(lastHash.low, lastHash.high);
  }

  /**
   * Keys of the hashes seen more than once (the only ids that can repeat). The chunks are merged
   * into the distinct hashes, which `has()` looks in from then on; the chunks' memory and file go.
   */
  repeated(): Set<number> {
    const repeated = new Set<number>();
    try {
      const held = this.words.subarray(0, 2 * this.filled);
      sortHashes(held);
      const runs = [new Run(held)];
      for (let chunk = 0; chunk < this.written; chunk++) runs.push(new Run(new Uint32Array(2 * Math.min(HASHES_PER_READ, this.perChunk)), this.file, chunk * this.perChunk * 8, this.perChunk));
      // A day that filled no chunk keeps its distinct hashes in memory (at most a chunk's worth).
      const distinct = (this.distinct = new DistinctHashes(this.written * this.perChunk + this.filled, this.written > 0 ? this.tempDir : undefined, this.describe));
      // A k-way merge of the sorted runs: equal hashes come out one after the other.
      const heap = runs.filter((run) => run.fill(this.describe));
      const before = (a: Run, b: Run) => a.major() < b.major() || (a.major() === b.major() && a.minor() < b.minor());
      const siftDown = (i: number) => {
        for (;;) {
          const l = 2 * i + 1;
          if (l >= heap.length) return;
          const child = l + 1 < heap.length && before(heap[l + 1]!, heap[l]!) ? l + 1 : l;
          if (!before(heap[child]!, heap[i]!)) return;
          [heap[i], heap[child]] = [heap[child]!, heap[i]!];
          i = child;
        }
      };
      for (let i = (heap.length >> 1) - 1; i >= 0; i--) siftDown(i);
      let lastLow = -1;
      let lastHigh = -1;
      while (heap.length > 0) {
        const run = heap[0]!;
        const low = run.words[run.at]!;
        const high = run.words[run.at + 1]!;
        if (low === lastLow && high === lastHigh) repeated.add(keyOf(low, high));
        else distinct.add(low, high);
        lastLow = low;
        lastHigh = high;
        run.at += 2;
        if (run.at === run.length && !run.fill(this.describe)) {
          const last = heap.pop()!;
          if (heap.length === 0) break;
          heap[0] = last;
        }
        siftDown(0);
      }
      distinct.end();
      return repeated;
    } catch (err) {
      this.close();
      throw err;
    } finally {
      this.releaseChunks();
    }
  }

  /**
   * Whether `id`'s hash is one of the merged hashes: a lookup in memory, or one 4 KiB read. Two ids
   * with one 64-bit hash would make an id that no event has look like one of them.
   */
  has(id: string): boolean {
    if (!this.distinct) throw new Error('the id hashes are not merged yet, or closed');
    hash64(id);
    return this.distinct.has(lastHash.low, lastHash.high);
  }

  /** Lets every temporary file and the memory go (a checking pass that fails half way calls it too). */
  close(): void {
    this.releaseChunks();
    this.distinct?.close();
    this.distinct = undefined;
  }

  private releaseChunks(): void {
    if (this.file !== undefined) closeSync(this.file);
    this.file = undefined;
    this.written = 0;
    this.filled = 0;
    this.words = new Uint32Array(0);
  }

  private readonly describe = (err: unknown) => temporarySpaceError("the ids' hashes", '8 bytes an event, twice that while they are merged', this.tempDir, err);

  private writeChunk(): void {
    sortHashes(this.words);
    try {
      this.file ??= temporaryFile(this.tempDir);
      writeAll(this.file, bytesOf(this.words, this.perChunk), this.written * this.perChunk * 8);
    } catch (err) {
      this.close();
      throw this.describe(err);
    }
    this.written++;
    this.filled = 0;
  }
}

/** A file of our own under `dir`, already unlinked. */
function temporaryFile(dir: string): number {
  const home = mkdtempSync(join(dir, 'pivot-archive-ids-'));
  try {
    const path = join(home, 'hashes');
    const file = openSync(path, 'wx+', 0o600);
    unlinkSync(path);
    return file;
  } finally {
    rmdirSync(home);
  }
}

/**
 * The distinct hashes, added in order by the merge. A day's that all fit one chunk stay in memory
 * (8 bytes an event); a larger day's go to an unlinked temporary file in 4 KiB blocks, and only
 * the first hash of each block stays in memory (16 KiB for a million events): a lookup finds its
 * block there and reads that one block.
 */
class DistinctHashes {
  /** All the hashes (in memory), or one block: the one being written, then the one last read. */
  private readonly words: Uint32Array;
  private count = 0;
  /** The first hash of each block of the file. */
  private readonly firsts: Uint32Array;
  private readonly file?: number;

  /** `most`: how many hashes may come; `tempDir`: where their file goes, or none to keep them in memory. */
  constructor(
    most: number,
    tempDir: string | undefined,
    private readonly describe: (err: unknown) => Error,
  ) {
    if (tempDir === undefined) {
      this.words = new Uint32Array(2 * most);
      this.firsts = new Uint32Array(0);
      return;
    }
    this.words = new Uint32Array(2 * HASHES_PER_BLOCK);
    this.firsts = new Uint32Array(2 * Math.ceil(most / HASHES_PER_BLOCK));
    try {
      this.file = temporaryFile(tempDir);
    } catch (err) {
      throw describe(err);
    }
  }

  /** Adds a hash greater than every one added before. */
  add(low: number, high: number): void {
    const at = this.file === undefined ? this.count : this.count % HASHES_PER_BLOCK;
    this.words[2 * at] = low;
    this.words[2 * at + 1] = high;
    this.count++;
    if (this.file === undefined) return;
    if (at === 0) {
      const block = (this.count - 1) / HASHES_PER_BLOCK;
      this.firsts[2 * block] = low;
      this.firsts[2 * block + 1] = high;
    }
    if (at === HASHES_PER_BLOCK - 1) this.writeBlock(this.file);
  }

  /** Writes the last block, when it is partly filled. */
  end(): void {
    if (this.file !== undefined && this.count % HASHES_PER_BLOCK > 0) this.writeBlock(this.file);
  }

  has(low: number, high: number): boolean {
    const value = sortValue(low, high);
    if (this.file === undefined) return holds(hashesOf(this.words, this.count), value);
    const block = lastAtMost(hashesOf(this.firsts, Math.ceil(this.count / HASHES_PER_BLOCK)), value);
    if (block < 0) return false;
    const hashes = Math.min(HASHES_PER_BLOCK, this.count - block * HASHES_PER_BLOCK);
    try {
      readAll(this.file, bytesOf(this.words, hashes), block * HASHES_PER_BLOCK * 8);
    } catch (err) {
      throw this.describe(err);
    }
    return holds(hashesOf(this.words, hashes), value);
  }

  close(): void {
    if (this.file !== undefined) closeSync(this.file);
  }

  /** The block `add` just filled (or the last, partly filled one). */
  private writeBlock(file: number): void {
    const block = Math.floor((this.count - 1) / HASHES_PER_BLOCK);
    try {
      writeAll(file, bytesOf(this.words, this.count - block * HASHES_PER_BLOCK), block * HASHES_PER_BLOCK * 8);
    } catch (err) {
      throw this.describe(err);
    }
  }
}

/** One sorted run of hashes being merged: the chunk in memory, or a written one read a window at a time. */
class Run {
  at = 0;
  length = 0;
  private left: number;

  constructor(
    readonly words: Uint32Array,
    private readonly file?: number,
    private position = 0,
    hashes = words.length / 2,
  ) {
    this.left = hashes;
  }

  major(): number {
    return this.words[this.at + MAJOR_WORD]!;
  }

  minor(): number {
    return this.words[this.at + 1 - MAJOR_WORD]!;
  }

  /** Makes the next hashes current; false when the run is done. */
  fill(describe: (err: unknown) => Error): boolean {
    if (this.file === undefined) {
      // The chunk in memory is whole from the start.
      if (this.length > 0 || this.left === 0) return false;
      this.length = 2 * this.left;
      this.left = 0;
      return true;
    }
    if (this.left === 0) return false;
    const hashes = Math.min(this.left, this.words.length / 2);
    try {
      readAll(this.file, bytesOf(this.words, hashes), this.position);
    } catch (err) {
      throw describe(err);
    }
    this.position += hashes * 8;
    this.left -= hashes;
    this.at = 0;
    this.length = 2 * hashes;
    return true;
  }
}

/** The bytes of the first `hashes` hashes of `words`. */
function bytesOf(words: Uint32Array, hashes: number): Uint8Array {
  return new Uint8Array(words.buffer, words.byteOffset, hashes * 8);
}

/** The first `hashes` hashes of `words` as the 64-bit values they are sorted by. */
function hashesOf(words: Uint32Array, hashes: number): BigUint64Array {
  return new BigUint64Array(words.buffer, words.byteOffset, hashes);
}

/** One hash's two words, and the 64-bit value they make in memory: what the hashes are sorted by. */
const probeWords = new Uint32Array(2);
const probeValue = new BigUint64Array(probeWords.buffer);

function sortValue(low: number, high: number): bigint {
  probeWords[0] = low;
  probeWords[1] = high;
  return probeValue[0]!;
}

/** The index of the last of `sorted` not above `value`; -1 when all are. */
function lastAtMost(sorted: BigUint64Array, value: bigint): number {
  let after = 0;
  let end = sorted.length;
  while (after < end) {
    const middle = (after + end) >>> 1;
    if (sorted[middle]! <= value) after = middle + 1;
    else end = middle;
  }
  return after - 1;
}

function holds(sorted: BigUint64Array, value: bigint): boolean {
  const at = lastAtMost(sorted, value);
  return at >= 0 && sorted[at] === value;
}

/** Reads `bytes.length` bytes of `file` from `position`, all of them. */
function readAll(file: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.length; ) {
    const read = readSync(file, bytes, done, bytes.length - done, position + done);
    if (read === 0) throw new Error('the temporary file ended early');
    done += read;
  }
}

function writeAll(file: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(file, bytes, done, bytes.length - done, position + done);
}

/** Which of a hash's two words (low, high) is the upper half of the 64-bit value they make in memory. */
const MAJOR_WORD = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1 ? 1 : 0;

/** Sorts (low, high) word pairs, in place, by the 64-bit values they make in memory: the order the merge keeps and lookups search (`sortValue`). */
function sortHashes(words: Uint32Array): void {
  new BigUint64Array(words.buffer, words.byteOffset, words.length / 2).sort();
}
