// open() finds a Maildir root the sink cannot write into, once, before any delivery:
// E_SINK_UNAVAILABLE naming the root and the reason (the command line exits 2), instead of one
// failed delivery per message.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode } from '../src/errors.js';
import { createSink } from '../src/sinks/index.js';
import { cli } from './helpers/cli.js';
import { delivery } from './helpers/sink-conformance.js';
import { needing } from './helpers/needing.js';
import { tempDir } from './helpers/tmp.js';

const run = promisify(execFile);

/** Why a kernel feature the test needs is not usable here (probed once, on a scratch folder), or undefined. */
async function unusable(probe: (dir: string) => Promise<void>): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'the test runs as root';
  const dir = await mkdtemp(join(tmpdir(), 'pivot-probe-'));
  try {
    await probe(dir);
    return undefined;
  } catch (err) {
    return (err as Error).message.trim();
  } finally {
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

const noReadOnlyMount = await unusable(async (dir) => {
  await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', dir]);
  await run('umount', [dir]);
});
const noImmutable = await unusable(async (dir) => {
  await run('chattr', ['+i', dir]);
  await run('chattr', ['-i', dir]);
});


async function refused(t: ExecutionContext, root: string, reason: RegExp): Promise<void> {
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  const err = await t.throwsAsync(sink.open());
  t.is((err as { code?: string } | undefined)?.code, ErrorCode.SINK_UNAVAILABLE);
  t.true(err?.message.includes(root), `names the root: ${err?.message}`);
  t.regex(err?.message ?? '', reason);
  // And it is not open: a write is refused, not attempted.
  await t.throwsAsync(sink.write(delivery(1)), { code: ErrorCode.SINK_CLOSED });
}

test('maildir open: a root whose parent is a regular file is refused at open (ENOTDIR)', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'file'), 'not a folder');
  await refused(t, join(dir, 'file', 'maildir'), /ENOTDIR/);
});

test('maildir open: a root that is a regular file is refused at open', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'file'), 'not a folder');
  await refused(t, join(dir, 'file'), /not a directory/);
});

needing(noReadOnlyMount, 'maildir open: a root on a read-only file system is refused at open (EROFS)', async (t) => {
  const dir = await tempDir(t);
  const mount = join(dir, 'ro');
  await mkdir(mount);
  await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', mount]);
  t.teardown(() => run('umount', [mount]).then(() => undefined));
  await refused(t, mount, /EROFS/);
  await refused(t, join(mount, 'below'), /EROFS/);
});

needing(noImmutable, 'maildir open: an immutable root (chattr +i) is refused at open, even for root (EPERM)', async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'immutable');
  await mkdir(root);
  await run('chattr', ['+i', root]);
  t.teardown(() => run('chattr', ['-i', root]).then(() => undefined));
  await refused(t, root, /EPERM/);
  t.deepEqual(await readdir(root), []);
});

test('maildir open: a writable root, made or found, is left with no probe file in it', async (t) => {
  const dir = await tempDir(t);
  for (const root of [dir, join(dir, 'made', 'here')]) {
    const sink = await createSink(`maildir:${root}`, { cwd: '/' });
    await sink.open();
    await sink.close();
  }
  t.deepEqual(await readdir(dir), ['made']);
  t.deepEqual(await readdir(join(dir, 'made', 'here')), []);
  await rmdir(join(dir, 'made', 'here'));
});

test('maildir open: the command line stops at once with exit 2 and one error naming the root, not an error per delivery', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'file'), 'not a folder');
  const root = join(dir, 'file', 'mail');
  const result = await cli(['run', '--sample', '--domain', 'acme.example', '--sink', `maildir:${root}`, '--rejects', join(dir, 'rejects')]);
  t.is(result.code, 2, result.log);
  const errors = result.log.split('\n').filter((line) => /^error /.test(line));
  t.is(errors.length, 1, result.log);
  t.regex(errors[0] ?? '', /E_SINK_UNAVAILABLE/);
  t.true(errors[0]?.includes(root));
});
