// How the Maildir sink reads a file it finds under a message's name (FileReads): synchronously
// while reads are quick, on the thread pool after a slow one. Both ways must answer the same: the
// bytes (none over the limit), which file it is, ENOENT for nothing there, and NotRegularFile,
// unread, for anything but a regular file (a FIFO read would hang, a link would be followed).
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FileReads, type FileStart } from '../src/sinks/maildir/index.js';
import { isNotRegularFile } from '../src/sinks/maildir/regular-file.js';
import { tempDir } from './helpers/tmp.js';

/** What a read answered, as plain data. */
async function outcome(read: Promise<FileStart>): Promise<string> {
  try {
    const { data, inode } = await read;
    return `data ${data === undefined ? 'none' : JSON.stringify(data.toString())} inode ${inode ? `${inode.dev}:${inode.ino}` : 'none'}`;
  } catch (err) {
    return isNotRegularFile(err) ? `not regular: ${err.kind}` : `error ${String((err as { code?: string }).code)}`;
  }
}

test('a file found is read the same synchronously and on the thread pool (after a slow read): bytes, over the limit, its identity, nothing there, a FIFO, a directory, a symbolic link', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'message');
  await writeFile(file, 'From: a@acme.example\r\n\r\nhello');
  const info = await stat(file);
  execFileSync('mkfifo', [join(dir, 'fifo')]);
  await mkdir(join(dir, 'directory'));
  await symlink(file, join(dir, 'link'));
  const cases: [string, number, boolean][] = [
    [file, 1000, true],
    [file, 1000, false],
    [file, 5, true],
    [join(dir, 'absent'), 1000, false],
    [join(dir, 'fifo'), 1000, false],
    [join(dir, 'directory'), 1000, false],
    [join(dir, 'link'), 1000, false],
  ];
  const expected = [
    `data "From: a@acme.example\\r\\n\\r\\nhello" inode ${info.dev}:${info.ino}`,
    'data "From: a@acme.example\\r\\n\\r\\nhello" inode none',
    `data none inode ${info.dev}:${info.ino}`,
    'error ENOENT',
    'not regular: a FIFO',
    'not regular: a directory',
    'not regular: a symbolic link',
  ];
  // No read slow enough to leave the synchronous way (the product's 2 ms is crossed by a loaded host; see the next test).
  const quick = new FileReads(Infinity);
  const now: string[] = [];
  for (const [path, limit, identify] of cases) now.push(await outcome(quick.read(path, limit, identify)));
  t.deepEqual(now, expected);
  t.false(quick.pooling);
  // Every read slow: the first is made synchronously, and the rest go to the pool.
  const slow = new FileReads(-1);
  const pooled: string[] = [];
  for (const [path, limit, identify] of cases) pooled.push(await outcome(slow.read(path, limit, identify)));
  t.true(slow.pooling);
  t.deepEqual(pooled, expected);
});

test('with the product threshold, a slow read (128 MiB, tens of ms even from the page cache) sends the next reads to the thread pool, and they answer alike', async (t) => {
  const dir = await tempDir(t);
  const big = join(dir, 'big');
  await writeFile(big, Buffer.alloc(128 * 1024 * 1024, 0x61));
  const small = join(dir, 'small');
  await writeFile(small, 'hello');
  const reads = new FileReads();
  const first = await reads.read(big, Infinity, true);
  t.is(first.data?.length, 128 * 1024 * 1024);
  t.true(reads.pooling, 'a read that took longer than 2 ms moves the next to the thread pool');
  t.is((await reads.read(small, 1000, false)).data?.toString(), 'hello');
  t.true(reads.pooling, 'for more than one read');
});
