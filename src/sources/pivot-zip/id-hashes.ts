import { closeSync, mkdtempSync, openSync, readSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { temporarySpaceError } from '../../errors.js';
import { hash64, keyOf, lastHash } from '../../hash.js';

/** Hashes held in memory at once: 1 MiB. */
const HASHES_PER_CHUNK = 128 * 1024;
/** Hashes read at a time from each written chunk while they are merged: 32 KiB. */
const HASHES_PER_READ = 4 * 1024;

/**
 * 64-bit id hashes, 8 bytes an event and never the ids themselves. One chunk is held in memory;
 * a full chunk is sorted and written to a temporary file, so a day of any size costs the run
 * 1 MiB of memory here (8 bytes an event of temporary disk). The file is unlinked as soon as it
 * is made: it goes with its descriptor, whatever ends the run.
 */
export class IdHashes {
  /** Two words a hash (low, high). */
  private readonly words: Uint32Array;
  /** Hashes in `words`. */
  private filled = 0;
  private file?: number;
  /** Chunks written to the file, each `perChunk` hashes, sorted. */
  private written = 0;

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

  /** Keys of the hashes seen more than once (the only ids that can repeat); lets the file go. */
  repeated(): Set<number> {
    const repeated = new Set<number>();
    try {
      const held = this.words.subarray(0, 2 * this.filled);
      sortHashes(held);
      const runs = [new Run(held)];
      for (let chunk = 0; chunk < this.written; chunk++) runs.push(new Run(new Uint32Array(2 * Math.min(HASHES_PER_READ, this.perChunk)), this.file, chunk * this.perChunk * 8, this.perChunk));
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
      return repeated;
    } finally {
      this.discard();
    }
  }

  /** Lets the temporary file go (a checking pass that fails half way calls it). */
  discard(): void {
    if (this.file !== undefined) closeSync(this.file);
    this.file = undefined;
    this.written = 0;
    this.filled = 0;
  }

  private readonly describe = (err: unknown) => temporarySpaceError("the ids' hashes", '8 bytes an event', this.tempDir, err);

  private writeChunk(): void {
    sortHashes(this.words);
    try {
      this.file ??= temporaryFile(this.tempDir);
      const bytes = new Uint8Array(this.words.buffer, this.words.byteOffset, this.words.byteLength);
      for (let done = 0; done < bytes.length; ) done += writeSync(this.file, bytes, done, bytes.length - done, this.written * bytes.length + done);
    } catch (err) {
      this.discard();
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
    const bytes = new Uint8Array(this.words.buffer, this.words.byteOffset, hashes * 8);
    try {
      for (let done = 0; done < bytes.length; ) {
        const read = readSync(this.file, bytes, done, bytes.length - done, this.position + done);
        if (read === 0) throw new Error('the temporary file ended early');
        done += read;
      }
    } catch (err) {
      throw describe(err);
    }
    this.position += bytes.length;
    this.left -= hashes;
    this.at = 0;
    this.length = 2 * hashes;
    return true;
  }
}

/** Which of a hash's two words (low, high) is the upper half of the 64-bit value they make in memory. */
const MAJOR_WORD = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1 ? 1 : 0;

/** Sorts (low, high) word pairs as 64-bit values, in place (the byte order does not matter: equal hashes end up side by side). */
function sortHashes(words: Uint32Array): void {
  new BigUint64Array(words.buffer, words.byteOffset, words.length / 2).sort();
}
