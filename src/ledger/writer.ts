import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { open, rename, stat, truncate, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ErrorCode, PivotArchiveError, errorMessage } from '../errors.js';
import { drained, flushed, fsyncDir, makeDirectory } from '../fs-util.js';
import { sha256Hex } from '../hash.js';
import { redactedJson } from '../redact.js';
import type { CheckpointRecord, LogRecord } from '../status-log.js';
import { signedNote, type SigningKey } from './note.js';

/** The `prev` of the first line. */
export const GENESIS = '0'.repeat(64);
/** How much of the ledger's end is read to find its last line (more is read if one line is longer). */
const TAIL_CHUNK = 256 * 1024;

/** A ledger line: the record, numbered and chained to the line before by that line's sha256. */
export type LedgerLine = { seq: number; prev: string } & LogRecord;

/** The log's name in its checkpoints: derived from its first line, so it never changes. */
export function originOf(firstLineHash: string): string {
  return `pivot-archive/ledger/${firstLineHash.slice(0, 16)}`;
}

function ledgerError(path: string, what: string, err?: unknown): PivotArchiveError {
  return new PivotArchiveError(ErrorCode.LEDGER, `ledger ${path}: ${what}${err ? `: ${errorMessage(err)}` : ''}`, { cause: err });
}

/**
 * The append-only ledger of a state dir (see src/ledger/SPEC.md). One writer at a time: the state
 * dir's lock. Opening reads only its end (the last line's hash and number); a line a crash cut
 * short is cut off and said so in the next record. A write error fails every later write with
 * E_LEDGER, like the status log: the run stops rather than go on unrecorded.
 */
export class LedgerWriter {
  private failed?: PivotArchiveError;
  /** The one wait for 'drain' that every append held up shares. */
  private readonly waiting: { drain?: Promise<void> } = {};

  private constructor(
    readonly path: string,
    private readonly out: WriteStream,
    private seq: number,
    private head: string,
    private origin: string | undefined,
    /** Bytes of a line cut short by a crash, removed on open: recorded by the first record written. */
    readonly tornBytes: number,
    /** The file's size once every line appended so far is written: another size means another writer. */
    private bytes: number,
  ) {
    out.on('error', (err) => {
      this.failed ??= ledgerError(path, 'cannot be written', err);
    });
  }

  static async open(path: string): Promise<LedgerWriter> {
    try {
      await makeDirectory(dirname(path));
      const end = await lastLine(path);
      if (end.torn > 0) await truncate(path, end.length);
      const out = createWriteStream(path, { flags: 'a' });
      await once(out, 'open');
      return new LedgerWriter(path, out, end.seq, end.head, end.origin, end.torn, end.length);
    } catch (err) {
      if (err instanceof PivotArchiveError) throw err;
      throw ledgerError(path, 'cannot be opened', err);
    }
  }

  /** Records in the ledger, and the sha256 of its last line. */
  get state(): { size: number; head: string } {
    return { size: this.seq, head: this.head };
  }

  /**
   * Appends a record given as the JSON text the status log wrote (secrets already masked): the
   * line is that object with `seq` and `prev` put first, the same bytes as serialising them together.
   */
  async append(recordJson: string): Promise<void> {
    if (this.failed) throw this.failed;
    const line = `{"seq":${this.seq},"prev":"${this.head}",${recordJson.slice(1)}`;
    this.head = sha256Hex(line);
    this.origin ??= originOf(this.head);
    this.seq++;
    const text = line + '\n';
    this.bytes += Buffer.byteLength(text);
    if (!this.out.write(text)) await drained(this.out, this.waiting);
    if (this.failed) throw this.failed;
  }

  /** Resolves once every line so far reached the file (not the disk: see `seal`). */
  flush(): Promise<void> {
    return flushed(this.out, () => this.failed, (err) => (this.failed ??= ledgerError(this.path, 'cannot be written', err)));
  }

  /**
   * Closes a run: a checkpoint record (size, head, time; signed when a key is given), the ledger
   * synced to disk, and the note also written to `notePath` (replaced whole), for copying off the host.
   */
  async seal(runId: string, key: SigningKey | undefined, notePath: string): Promise<CheckpointRecord> {
    // Lines of another writer among ours (the state dir's lock taken from a run paused past its
    // lease on another host) break the chain: no checkpoint seals that, and the run fails.
    await this.flush();
    const size = await stat(this.path).then((s) => s.size, () => undefined);
    if (size !== this.bytes) {
      this.failed ??= ledgerError(this.path, `holds ${size ?? 'no'} bytes where this run's lines end at ${this.bytes}: another writer appended to it meanwhile (was the state dir's lock taken over?); not sealed; run "pivot-archive verify" and keep the file for inspection`);
      throw this.failed;
    }
    const at = new Date().toISOString();
    const body = { origin: this.origin ?? originOf(GENESIS), size: this.seq, head: this.head, time: at };
    const record: CheckpointRecord = {
      record: 'checkpoint',
      runId,
      at,
      size: body.size,
      head: body.head,
      note: signedNote(body, key),
      ...(key ? { signedBy: { name: key.name, keyId: key.keyId.toString('hex') } } : {}),
    };
    await this.append(redactedJson(record));
    await this.flush();
    try {
      await syncFile(this.path);
      const temporary = `${notePath}.tmp-${process.pid}`;
      await writeFile(temporary, record.note);
      await syncFile(temporary);
      await rename(temporary, notePath);
      await fsyncDir(dirname(notePath));
    } catch (err) {
      throw ledgerError(this.path, 'cannot be synced to disk', err);
    }
    return record;
  }

  async close(): Promise<void> {
    if (this.failed) {
      this.out.destroy();
      throw this.failed;
    }
    await new Promise<void>((resolve) => {
      this.out.once('error', () => resolve());
      this.out.end(() => resolve());
    });
    if (this.failed) throw this.failed;
  }
}

async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * The ledger's end: how many records, the last line's hash, the log's origin (from its first
 * line), and how many bytes at the end are a line a crash cut short (no newline). A last line that
 * is complete but not a record of ours is tampering or damage: refused, for `verify` to report.
 */
async function lastLine(path: string): Promise<{ seq: number; head: string; origin?: string; length: number; torn: number }> {
  const size = await stat(path).then(
    (s) => s.size,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return 0;
      throw err;
    },
  );
  if (size === 0) return { seq: 0, head: GENESIS, length: 0, torn: 0 };
  const handle = await open(path, 'r');
  try {
    const firstLine = await readLineAt(handle, 0, size);
    let from = Math.max(0, size - TAIL_CHUNK);
    for (;;) {
      const tail = Buffer.alloc(size - from);
      await handle.read(tail, 0, tail.length, from);
      const complete = tail.lastIndexOf(0x0a);
      const torn = tail.length - (complete + 1);
      const start = complete < 0 ? -1 : tail.lastIndexOf(0x0a, complete - 1);
      if (complete >= 0 && (start >= 0 || from === 0)) {
        const line = tail.subarray(start + 1, complete).toString('utf8');
        const seq = (JSON.parse(line) as { seq?: unknown }).seq;
        if (typeof seq !== 'number' || !Number.isInteger(seq)) throw new Error('not a record');
        return { seq: seq + 1, head: sha256Hex(line), origin: firstLine && originOf(sha256Hex(firstLine)), length: size - torn, torn };
      }
      if (complete < 0 && from === 0) return { seq: 0, head: GENESIS, length: 0, torn: size };
      from = Math.max(0, from - TAIL_CHUNK);
    }
  } catch (err) {
    throw ledgerError(path, `its last line is not a ledger record (damaged or changed?); run "pivot-archive verify --ledger" and keep the file for inspection; nothing was appended`, err);
  } finally {
    await handle.close();
  }
}

/** The first line of the file (without its newline), or undefined when there is none complete. */
async function readLineAt(handle: import('node:fs/promises').FileHandle, at: number, size: number): Promise<string | undefined> {
  let length = Math.min(size, TAIL_CHUNK);
  for (;;) {
    const buf = Buffer.alloc(length);
    await handle.read(buf, 0, length, at);
    const end = buf.indexOf(0x0a);
    if (end >= 0) return buf.subarray(0, end).toString('utf8');
    if (length === size) return undefined;
    length = Math.min(size, length * 4);
  }
}
