import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

/**
 * A test that needs something of the machine (a kernel feature, root to mount a tmpfs): `missing`
 * says why it cannot run here. In CI its absence fails; elsewhere it is a visible skip.
 */
export function needing(missing: string | undefined, title: string, body: (t: ExecutionContext) => Promise<void>): void {
  if (!missing) return void test(title, body);
  if (process.env.CI) return void test(title, (t) => t.fail(`not usable here: ${missing}`));
  console.warn(`\n*** skipped (${missing}): ${title} ***\n`);
  test.skip(`${title} (skipped: ${missing})`, body);
}

/** Why a small tmpfs cannot be mounted here (a test that fills one, or unmounts it), or undefined. */
export async function tmpfsMissing(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'the test runs as root (it mounts a tmpfs)';
  const run = promisify(execFile);
  const dir = await mkdtemp(join(tmpdir(), 'pivot-probe-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]);
    await run('umount', [dir]);
    return undefined;
  } catch (err) {
    return (err as Error).message.trim();
  } finally {
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
