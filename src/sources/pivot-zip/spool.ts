import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCode, PivotArchiveError, errorMessage, temporarySpaceError } from '../../errors.js';

/**
 * A zip can only be read safely through its central directory, at its end, so an archive
 * given on stdin is first copied to a private temporary file; `remove` deletes it. A temporary
 * directory that cannot take it is E_TEMPORARY; a stdin that fails, E_ARCHIVE_UNREADABLE.
 */
export async function spoolToTempFile(input: Readable): Promise<{ path: string; remove: () => Promise<void> }> {
  const temporary = (err: unknown) => temporarySpaceError('the archive read from stdin', "the archive's size", tmpdir(), err);
  const dir = await mkdtemp(join(tmpdir(), 'pivot-archive-stdin-')).catch((err: unknown) => {
    throw temporary(err);
  });
  const path = join(dir, 'archive.zip');
  const remove = () => rm(dir, { recursive: true, force: true });
  const file = createWriteStream(path, { flags: 'wx', mode: 0o600 });
  let writeFailed = false;
  file.on('error', () => (writeFailed = true));
  try {
    await pipeline(input, file);
  } catch (err) {
    await remove();
    throw writeFailed ? temporary(err) : new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `-: the archive cannot be read from stdin: ${errorMessage(err)}`, { cause: err });
  }
  return { path, remove };
}
