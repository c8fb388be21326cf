// Opening a name of ours for reading, in the sink (a file found under the name it would write) and
// in `verify`: only a regular file is ever read. Whatever else stands under a message's name (a
// FIFO, a socket, a device, a directory, a symbolic link: nothing this tool makes) is never read
// and never followed, and opening it cannot block.
import fs from 'node:fs';
import { isCode } from '../../fs-util.js';

/**
 * Read-only; a symbolic link is not followed (ELOOP, so nothing outside the store is ever read
 * through one); a FIFO opens at once instead of waiting for a writer; a terminal is never made
 * the controlling one. The opened descriptor is then fstat'ed: only a regular file is read.
 */
const FOR_READING = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | (fs.constants.O_NOCTTY ?? 0);

/** What stands under a name, for a message: `a FIFO`, `a directory`, ... */
export function kindOf(info: fs.Stats): string {
  if (info.isFIFO()) return 'a FIFO';
  if (info.isDirectory()) return 'a directory';
  if (info.isSymbolicLink()) return 'a symbolic link';
  if (info.isSocket()) return 'a socket';
  if (info.isCharacterDevice()) return 'a character device';
  if (info.isBlockDevice()) return 'a block device';
  return 'of an unknown kind';
}

/** Something other than a regular file stands under a name of ours (code `ENOTREGULAR`). */
export class NotRegularFile extends Error {
  readonly code = 'ENOTREGULAR';
  constructor(
    readonly path: string,
    /** `a FIFO`, `a directory`, `a symbolic link`, ... */
    readonly kind: string,
  ) {
    super(`not a regular file: ${kind}`);
  }
}

export function isNotRegularFile(err: unknown): err is NotRegularFile {
  return err instanceof NotRegularFile;
}

/**
 * Opens `path` for reading if it is a regular file, and gives its descriptor and fstat (the
 * caller closes it); else fails with `NotRegularFile` (or the open's own error: ENOENT when
 * nothing is there). The type is that of the descriptor opened, so a name swapped between a
 * look and the open cannot slip through. Callback fs: the reads that follow are (see callers).
 */
export function openRegular(path: string, callback: (err: NodeJS.ErrnoException | NotRegularFile | null, fd: number, info: fs.Stats) => void): void {
  fs.open(path, FOR_READING, (err, fd) => {
    if (err) {
      if (isCode(err, 'ENOENT')) return callback(err, -1, undefined as never);
      return fs.lstat(path, (statErr, info) => callback(openFailure(path, err, statErr, info), -1, undefined as never));
    }
    fs.fstat(fd, (statErr, info) => {
      if (statErr) return fs.close(fd, () => callback(statErr, -1, undefined as never));
      if (!info.isFile()) return fs.close(fd, () => callback(new NotRegularFile(path, kindOf(info)), -1, undefined as never));
      callback(null, fd, info);
    });
  });
}

/** `openRegular`, synchronously (the sink's quick reads, `FileReads`): the descriptor and its fstat, or the same errors. */
export function openRegularSync(path: string): { fd: number; info: fs.Stats } {
  let fd: number;
  try {
    fd = fs.openSync(path, FOR_READING);
  } catch (err) {
    if (isCode(err, 'ENOENT')) throw err;
    let info: fs.Stats | undefined;
    let statErr: NodeJS.ErrnoException | null = null;
    try {
      info = fs.lstatSync(path);
    } catch (e) {
      statErr = e as NodeJS.ErrnoException;
    }
    throw openFailure(path, err as NodeJS.ErrnoException, statErr, info);
  }
  let info: fs.Stats;
  try {
    info = fs.fstatSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  if (info.isFile()) return { fd, info };
  fs.closeSync(fd);
  throw new NotRegularFile(path, kindOf(info));
}

/**
 * Why an open of `path` failed, given what an lstat of it then found: ELOOP (a symbolic link,
 * O_NOFOLLOW) or ENXIO (a socket, a device without its driver) is what stands there; a name gone
 * since is ENOENT; a regular file that failed to open keeps its own error.
 */
function openFailure(path: string, err: NodeJS.ErrnoException, statErr: NodeJS.ErrnoException | null, info: fs.Stats | undefined): NodeJS.ErrnoException | NotRegularFile {
  if (!statErr && info && !info.isFile()) return new NotRegularFile(path, kindOf(info));
  if (statErr && isCode(statErr, 'ENOENT')) return statErr;
  return err;
}
