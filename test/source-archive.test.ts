// The archive as a file: held open (one descriptor, whatever happens to its path), found
// through a comment of any length, identified by size and sha256, and every entry outside the
// layout noted.
import test from 'ava';
import archiver from 'archiver';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, existsSync } from 'node:fs';
import { open, readFile, readdir, readlink, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, PivotArchiveError } from '../src/errors.js';
import type { SourceEvent } from '../src/model.js';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { MANIFEST, writeArchive, type Fixture } from './helpers/archive.js';
import { tempDir } from './helpers/tmp.js';

const users = [
  { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
  { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' },
];
const conversations = [{ id: 'c_1', type: 'direct', name: null, members: ['u_1', 'u_2'] }];
const events = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T08:00:00Z', senderId: 'u_1', text: `${prefix} message ${i}` }));
const fixture = (prefix: string): Fixture => ({ users, conversations, messages: { 'a.json': events(prefix, 300), 'b.json': events(`${prefix}b`, 300) } });

async function ids(archive: PivotExportArchive): Promise<string[]> {
  const out: string[] = [];
  for await (const e of archive.events()) out.push(String(((e as SourceEvent).raw as { id: string }).id));
  return out;
}

/** The layout's entries, as name -> bytes. */
function layout(prefix = 'p'): Record<string, Buffer> {
  return {
    'manifest.json': Buffer.from(JSON.stringify(MANIFEST)),
    'users.json': Buffer.from(JSON.stringify(users)),
    'conversations.json': Buffer.from(JSON.stringify(conversations)),
    'messages/a.json': Buffer.from(JSON.stringify(events(prefix, 20))),
  };
}

/** Writes a zip with Python's zipfile (a writer independent of ours), with an archive comment. */
function pythonZip(path: string, entries: Record<string, Buffer>, comment: Buffer = Buffer.alloc(0)): string {
  const script = [
    'import base64, json, sys, zipfile',
    'spec = json.load(sys.stdin)',
    'with zipfile.ZipFile(sys.argv[1], "w", compression=zipfile.ZIP_DEFLATED) as zf:',
    '    for name, data in spec["entries"]:',
    '        zf.writestr(name, base64.b64decode(data))',
    '    zf.comment = base64.b64decode(spec["comment"])',
  ].join('\n');
  const input = JSON.stringify({ entries: Object.entries(entries).map(([name, data]) => [name, data.toString('base64')]), comment: comment.toString('base64') });
  execFileSync('python3', ['-c', script, path], { input });
  return path;
}

/** Descriptors of this process open on `path` (Linux /proc). */
async function descriptorsOn(path: string): Promise<number> {
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(join('/proc/self/fd', fd)).catch(() => '');
    if (target === path || target === `${path} (deleted)`) n++;
  }
  return n;
}

test('the archive is held open: a file renamed over its path mid-run changes nothing that is read', async (t) => {
  const dir = await tempDir(t);
  const path = await writeArchive(join(dir, 'pivot.zip'), fixture('first'));
  const other = await writeArchive(join(dir, 'other.zip'), fixture('second'));
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const before = await ids(archive);
  t.is(before[0], 'first0');
  // The exporter delivers again: a new file is renamed over the path.
  await rename(other, path);
  t.deepEqual(await ids(archive), before, 'the same events, read from the file that was opened');
  t.is(archive.attachment('none'), undefined);
  // And the bytes of a too-large event come from the opened file too.
  t.is(archive.messageFiles[0]!.name, 'messages/a.json');
});

test('an archive rewritten in place mid-run fails on the second read at the first 64 KiB block that differs: none of its bytes are read', async (t) => {
  const dir = await tempDir(t);
  // 3,000 events of ~150 bytes: about seven 64 KiB blocks; one event of the fifth changed.
  const path = await writeArchive(join(dir, 'pivot.zip'), { users, conversations, messages: { 'a.json': events('first', 3000) } }, { store: true });
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const bytes = await readFile(path);
  const at = bytes.indexOf('first message 2000"');
  const dataStart = bytes.indexOf('[{');
  t.true(at - dataStart > 4 * 65536 && at - dataStart < 5 * 65536, 'the change stands in the fifth block');
  const handle = await open(path, 'r+');
  await handle.write(Buffer.from('FIRST'), 0, 5, at); // same inode, same length, still valid JSON
  await handle.close();
  const read: string[] = [];
  const err = await t.throwsAsync(
    (async () => {
      for await (const e of archive.events()) read.push(((e as SourceEvent).raw as { text: string }).text);
    })(),
    { instanceOf: PivotArchiveError },
  );
  t.is((err as PivotArchiveError).code, ErrorCode.ARCHIVE_CORRUPT);
  t.regex(err!.message, /bytes 262144-327679 differ from what the first read of the archive saw \(CRC-32\)/);
  t.true(read.length > 1000, `the events of the blocks before are read (${read.length})`);
  t.false(read.some((text) => text.startsWith('FIRST')), 'no byte of the changed block reached the reader');
  t.deepEqual(read, events('first', read.length).map((e) => e.text), 'what was read is what was checked');
});

test('close() releases the one descriptor the archive holds; open() holds none after a failure', async (t) => {
  if (!existsSync('/proc/self/fd')) {
    t.pass('no /proc on this system');
    return;
  }
  const dir = await tempDir(t);
  const path = await writeArchive(join(dir, 'pivot.zip'), { ...fixture('x'), attachments: { a_1: Buffer.from('attachment bytes') } });
  const archive = await PivotExportArchive.open({ path });
  t.is(await descriptorsOn(path), 1, 'one descriptor, held');
  await ids(archive);
  const chunks: Buffer[] = [];
  for await (const chunk of archive.attachment('a_1')!.open()) chunks.push(chunk as Buffer);
  t.is(Buffer.concat(chunks).toString(), 'attachment bytes');
  t.is(await descriptorsOn(path), 1, 'reads never open the path again');
  // A read left half done must not keep the descriptor from closing.
  const iterator = archive.events()[Symbol.asyncIterator]();
  await iterator.next();
  await archive.close();
  t.is(await descriptorsOn(path), 0);
  await iterator.return?.();
  const broken = join(dir, 'broken.zip');
  await writeFile(broken, (await readFile(path)).subarray(0, 1000));
  await t.throwsAsync(PivotExportArchive.open({ path: broken }), { instanceOf: PivotArchiveError });
  t.is(await descriptorsOn(broken), 0);
});

test('a read cut short by close() fails naming the entry, never hangs', async (t) => {
  const dir = await tempDir(t);
  // Random text deflates little: many pieces of the file to read, so the read is still going on at close().
  const noise = (n: number) => events('q', n).map((e) => ({ ...e, text: randomBytes(3000).toString('base64') }));
  const path = await writeArchive(join(dir, 'pivot.zip'), { users, conversations, messages: { 'a.json': noise(2000) } });
  const archive = await PivotExportArchive.open({ path });
  const iterator = archive.events()[Symbol.asyncIterator]();
  await iterator.next();
  await archive.close();
  const drained = (async () => {
    for (let r = await iterator.next(); !r.done; r = await iterator.next());
  })();
  const err = await t.throwsAsync(Promise.race([drained, new Promise((_, reject) => setTimeout(() => reject(new Error('the read hangs')), 10_000))]));
  t.regex(err!.message, /a\.json.*(closed|cannot be read)/);
});

test('an archive comment of 65,535 bytes (the most ZIP allows) is read past, also with ZIP64 records and a fake end record in it', async (t) => {
  const dir = await tempDir(t);
  const expected = events('p', 20).map((e) => e.id);
  const plain = pythonZip(join(dir, 'comment.zip'), layout(), Buffer.alloc(65_535, 'x'));
  t.is(execFileSync('python3', ['-c', 'import sys,zipfile; print(len(zipfile.ZipFile(sys.argv[1]).comment))', plain]).toString().trim(), '65535');
  const archive = await PivotExportArchive.open({ path: plain });
  t.deepEqual(await ids(archive), expected);
  await archive.close();

  // A comment that holds an end-of-central-directory signature (with a plausible record) is not taken for the record.
  const fake = Buffer.alloc(300, 'y');
  fake.writeUInt32LE(0x06054b50, 100);
  fake.writeUInt16LE(0, 120); // its "comment" would end long before the file does
  const tricky = await PivotExportArchive.open({ path: pythonZip(join(dir, 'fake.zip'), layout(), fake) });
  t.deepEqual(await ids(tricky), expected);
  await tricky.close();

  // ZIP64 (archiver writes the ZIP64 end record and locator) with the longest comment.
  const zip64 = join(dir, 'zip64.zip');
  const zip = archiver('zip', { forceZip64: true, comment: 'z'.repeat(65_535) });
  const out = createWriteStream(zip64);
  zip.pipe(out);
  for (const [name, data] of Object.entries(layout())) zip.append(data, { name });
  await zip.finalize();
  if (!out.closed) await once(out, 'close');
  const big = await PivotExportArchive.open({ path: zip64 });
  t.deepEqual(await ids(big), expected);
  await big.close();
});

test('bytes after the end record are tolerated; an archive with no end record is unreadable', async (t) => {
  const dir = await tempDir(t);
  const zip = await readFile(pythonZip(join(dir, 'a.zip'), layout(), Buffer.from('short comment')));
  const trailing = join(dir, 'trailing.zip');
  await writeFile(trailing, Buffer.concat([zip, Buffer.alloc(1000, 0)]));
  const archive = await PivotExportArchive.open({ path: trailing });
  t.is((await ids(archive)).length, 20);
  await archive.close();
  const none = join(dir, 'none.zip');
  const cut = Buffer.from(zip);
  cut.writeUInt32LE(0, zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06])));
  await writeFile(none, cut);
  const err = await t.throwsAsync(PivotExportArchive.open({ path: none }), { instanceOf: PivotArchiveError });
  t.is((err as PivotArchiveError).code, ErrorCode.ARCHIVE_UNREADABLE);
});

test('the archive is identified by its size and the sha256 of the whole file', async (t) => {
  const path = await writeArchive(join(await tempDir(t), 'pivot.zip'), { ...fixture('x'), attachments: { a_1: randomBytes(3 * 1024 * 1024 + 17) } });
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const bytes = await readFile(path);
  t.is(archive.size, (await stat(path)).size);
  t.is(archive.size, bytes.length);
  t.is(archive.sha256, createHash('sha256').update(bytes).digest('hex'));
});

test('entries outside the layout are listed with why, never read; hostile names stay apart', async (t) => {
  const outside: Record<string, string> = {
    'Messages/a.json': 'messages',
    'messages/a.JSON': 'messages',
    'messages/sub/x.json': 'messages',
    './messages/a.json': 'messages',
    'm\u0435ssages/a.json': 'messages', // a Cyrillic е
    'messages/a.json.bak': 'messages',
    'messages/.json': 'messages',
    'extra.json': 'messages',
    'message/0001.json': 'messages',
    ' messages/0001.json': 'messages',
    'msgs/0001.json': 'messages',
    'Manifest.json': 'manifest.json',
    'sub/users.json': 'users.json',
    'Attachments/a_1': 'attachment',
    'attachments': 'attachment',
    'README.txt': 'layout',
    'photos/cat.jpg': 'layout',
  };
  const entries: Record<string, Buffer> = { ...layout(), 'attachments/a_1': Buffer.from('in the layout'), 'attachments/dir/a_2': Buffer.from('an id with a slash'), '../evil.json': Buffer.from('[]') };
  for (const name of Object.keys(outside)) entries[name] = Buffer.from('[{"id":"never read"}]');
  const path = pythonZip(join(await tempDir(t), 'odd.zip'), entries);
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  t.deepEqual(archive.messageFiles.map((f) => f.name), ['messages/a.json']);
  t.deepEqual(archive.hostileEntryNames, ['../evil.json']);
  t.deepEqual(archive.ignoredEntries.map((e) => e.name).sort(), Object.keys(outside).sort());
  for (const { name, why } of archive.ignoredEntries) {
    const kind = outside[name]!;
    t.regex(why, /not read$/, name);
    if (kind === 'messages') t.regex(why, /looks like a messages file/, name);
    else if (kind === 'layout') t.regex(why, /not part of the export layout/, name);
    else if (kind === 'attachment') t.regex(why, /looks like an attachment/, name);
    else t.regex(why, new RegExp(`looks like ${kind.replace('.', '\\.')}`), name);
  }
  t.is(archive.eventCount, 20, 'nothing outside the layout was read');
  t.truthy(archive.attachment('dir/a_2'));
});
