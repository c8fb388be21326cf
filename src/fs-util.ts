import { stat } from 'node:fs/promises';

/** Whether a path exists; errors other than "not found" (permissions, I/O) are thrown, not hidden. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
