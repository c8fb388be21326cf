import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { PivotArchiveError, type ErrorCodeValue } from '../../errors.js';
import { entryAddress, type EntryAddress, type ZipEntry } from '../../formats/zip/index.js';
import type { IdHashes } from './id-hashes.js';

/*
 * The checking pass (every messages file read once before any delivery: counts, id hashes,
 * joins and leaves) on worker threads, a file at a time each, so an export's files are read on
 * every core: the pass took half of the source's time on one thread. The workers read the
 * archive through the descriptor the archive holds (threads share it), never by its path, so
 * they read the very file the delivery pass reads.
 */

export interface WorkerSetup {
  label: string;
  fd: number;
  size: number;
  maxEventBytes: number;
}

/** A join or leave as the worker parsed it, its id's hash key, and where it stands in its file. */
export interface ParsedChange {
  raw: Record<string, unknown>;
  key: number;
  index: number;
}

export type ToWorker = { kind: 'file'; file: number; entry: EntryAddress } | { kind: 'taken' };
export type ToMain =
  | { kind: 'hashes'; file: number; words: Uint32Array; changes: ParsedChange[] }
  | { kind: 'checked'; file: number; events: number; tooLarge: [number, number][] }
  | { kind: 'failed'; file: number; code?: ErrorCodeValue; message: string };

/** What the pass found in one messages file (its joins and leaves are given to `changed` as they come). */
export interface FileCheck {
  events: number;
  /** Index and CRC-32 of each element over the cap (never held). */
  tooLarge: [number, number][];
}

/** Workers at most: each costs a few MB, and the files are read from one disk. */
const MOST_WORKERS = 4;

/**
 * Checks `files` (messages entries of the archive open on `fd`) on worker threads: every id's
 * hash goes into `ids`, every join or leave to `changed` (with its file's number). A file that
 * fails fails the pass; when several fail, the first in file order is the one thrown, as a
 * one-thread pass would. The workers are gone when this settles, so the descriptor may close.
 */
export async function checkMessagesFiles(
  setup: WorkerSetup,
  files: readonly ZipEntry[],
  ids: IdHashes,
  changed: (file: number, change: ParsedChange) => void,
): Promise<FileCheck[]> {
  const checks = new Array<FileCheck>(files.length);
  const failures = new Map<number, Error>();
  const workers: Worker[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let next = 0;
      let busy = 0;
      const give = (worker: Worker) => {
        // Past a failed file nothing more is read: only an earlier file's failure could come first.
        if (next < files.length && next < Math.min(...failures.keys())) {
          worker.postMessage({ kind: 'file', file: next, entry: entryAddress(files[next]!) } satisfies ToWorker);
          next++;
          busy++;
        } else if (busy === 0) resolve();
      };
      for (let i = 0; i < Math.min(files.length, availableParallelism(), MOST_WORKERS); i++) {
        // None of the process's flags: some (--input-type with -e) refuse a worker loaded from a file.
        const worker = new Worker(new URL('./first-pass-worker.js', import.meta.url), { workerData: setup satisfies WorkerSetup, execArgv: [] });
        workers.push(worker);
        worker.on('message', (message: ToMain) => {
          try {
            if (message.kind === 'hashes') {
              ids.pushHashes(message.words);
              for (const change of message.changes) changed(message.file, change);
              worker.postMessage({ kind: 'taken' } satisfies ToWorker);
              return;
            }
            if (message.kind === 'checked') checks[message.file] = { events: message.events, tooLarge: message.tooLarge };
            else failures.set(message.file, message.code ? new PivotArchiveError(message.code, message.message) : new Error(message.message));
            busy--;
            give(worker);
          } catch (err) {
            reject(err);
          }
        });
        worker.on('error', reject);
        worker.on('exit', (code) => reject(new Error(`the archive's checking thread stopped (exit code ${code})`)));
        give(worker);
      }
    });
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  if (failures.size > 0) throw failures.get(Math.min(...failures.keys()));
  return checks;
}
