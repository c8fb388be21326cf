import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/**
 * A zip can only be read safely through its central directory, at its end, so an archive
 * given on stdin is first copied to a private temporary file; `remove` deletes it.
 */
export async function spoolToTempFile(input: Readable): Promise<{ path: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'pivot-archive-stdin-'));
  const path = join(dir, 'archive.zip');
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    await pipeline(input, createWriteStream(path, { flags: 'wx', mode: 0o600 }));
  } catch (err) {
    await remove();
    throw err;
  }
  return { path, remove };
}
