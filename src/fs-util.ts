import { constants } from 'node:fs';
import type { Writable } from 'node:stream';
import { mkdir, open, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

/** Whether a path exists; errors other than "not found" (permissions, I/O) are thrown, not hidden. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (isCode(err, 'ENOENT')) return false;
    throw err;
  }
}

/**
 * `mkdir -p`, one level at a time, so a failure says why. Node's recursive mkdir loops for ever
 * where mkdir answers ENOENT though the parent is there (under /proc: a run hung at 100% CPU, deaf
 * to SIGTERM, unrecorded; helper-115), and answers ENOENT for a read-only file system. Returns the
 * first directory it made, if any. A file in the way fails ENOTDIR.
 */
export async function makeDirectory(path: string): Promise<string | undefined> {
  const missing: string[] = [];
  for (let dir = resolve(path); ; dir = dirname(dir)) {
    try {
      const found = await stat(dir);
      // The path itself there already: a directory, or a file in the way.
      if (missing.length === 0 && !found.isDirectory()) throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${path}'`), { code: 'ENOTDIR', path });
      break;
    } catch (err) {
      if (!isCode(err, 'ENOENT')) throw err;
      missing.unshift(dir);
      if (dir === dirname(dir)) break;
    }
  }
  for (const dir of missing) {
    try {
      await mkdir(dir);
    } catch (err) {
      if (!isCode(err, 'EEXIST')) throw err;
    }
  }
  return missing[0];
}

/** Whether `err` is a system error with this code (ENOENT, EEXIST...). */
export function isCode(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === code;
}

/** What link(2) answers where a file system has no hard links (some SMB and FUSE mounts, vfat, exFAT). */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV']);

/** Whether `err`, from link(2), says the file system has no hard links. */
export function noHardLinks(err: unknown): boolean {
  return NO_HARD_LINKS.has((err as NodeJS.ErrnoException | undefined)?.code ?? '');
}

/** fsyncs a directory, so the names created in it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Coalesces directory fsyncs: every caller waits for a sync that started after it asked,
 * so many renames share one fsync.
 */
export class DirectorySync {
  private inFlight: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  constructor(private readonly dir: string) {}

  sync(): Promise<void> {
    if (this.queued) return this.queued;
    if (!this.inFlight) return this.start();
    this.queued = this.inFlight
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        return this.start();
      });
    return this.queued;
  }

  private start(): Promise<void> {
    const run = fsyncDir(this.dir);
    const tracked: Promise<void> = run.finally(() => {
      if (this.inFlight === tracked) this.inFlight = null;
    });
    tracked.catch(() => undefined); // the caller of start() sees the failure
    this.inFlight = tracked;
    return run;
  }
}

/**
 * Resolves on the stream's next 'drain', or when it fails (the caller then throws its error).
 * Every writer held up shares one wait, kept in `holder.drain` (each `once` would add listeners).
 */
export function drained(out: Writable, holder: { drain?: Promise<void> }): Promise<void> {
  holder.drain ??= new Promise<void>((resolve) => {
    const done = () => {
      out.off('drain', done);
      out.off('error', done);
      holder.drain = undefined;
      resolve();
    };
    out.on('drain', done);
    out.on('error', done);
  });
  return holder.drain;
}

/**
 * Resolves once everything written to `out` so far has reached the file; rejects with the writer's
 * failure: `failure()`, or what `fail` records of this write's error unless the writer has one
 * already (the write's own callback may come before the stream's 'error' event: one failure either way).
 */
export function flushed(out: Writable, failure: () => Error | undefined, fail: (err: Error) => Error): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = failure();
    if (failed) return reject(failed);
    out.write('', (err) => {
      const failed = err ? fail(err) : failure();
      if (failed) reject(failed);
      else resolve();
    });
  });
}
