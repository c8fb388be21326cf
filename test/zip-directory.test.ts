// The zip's own records must agree on what the archive holds (end record, ZIP64 end record,
// central directory), or it is refused: a count one short would hide an entry from this tool
// and not from other readers. Also what the directory entries must be: UTF-8 users.json and
// conversations.json, and no .json set aside uncounted, whatever its name.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, PivotArchiveError, type ErrorCodeValue } from '../src/errors.js';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { PivotZipSource } from '../src/sources/pivot-zip/source.js';
import { MANIFEST } from './helpers/archive.js';
import { cli, runRecords } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';
import { SATURATED_END_RECORD, endRecord, storedEntries, storedZip, zip64EndRecordAndLocator } from './helpers/zip-bytes.js';

const users = [
  { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
  { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' },
];
const conversations = [{ id: 'c_1', type: 'direct', name: null, members: ['u_1', 'u_2'] }];
const event = (id: string) => ({ id, conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T08:00:00Z', senderId: 'u_1', text: `message ${id}` });

/** Five entries; messages/b.json, the last, holds two of the three events. */
function layout(): Record<string, Buffer> {
  return {
    'manifest.json': Buffer.from(JSON.stringify(MANIFEST)),
    'users.json': Buffer.from(JSON.stringify(users)),
    'conversations.json': Buffer.from(JSON.stringify(conversations)),
    'messages/a.json': Buffer.from(JSON.stringify([event('m_1')])),
    'messages/b.json': Buffer.from(JSON.stringify([event('m_2'), event('m_3')])),
  };
}

const { data, records } = storedEntries(layout());
const directory = Buffer.concat(records);

async function opens(t: import('ava').ExecutionContext, dir: string, name: string, bytes: Buffer): Promise<number> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  return archive.eventCount;
}

async function refused(t: import('ava').ExecutionContext, dir: string, name: string, bytes: Buffer, code: ErrorCodeValue, pattern: RegExp): Promise<void> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  const err = await t.throwsAsync(PivotExportArchive.open({ path }), { instanceOf: PivotArchiveError }, name);
  t.is((err as PivotArchiveError).code, code, `${name}: ${err?.message}`);
  t.regex(err!.message, pattern, name);
}

test('an end record whose count is short of, or past, the records its central directory size holds refuses the archive', async (t) => {
  const dir = await tempDir(t);
  t.is(await opens(t, dir, 'whole.zip', Buffer.concat([data, directory, endRecord(5, directory.length, data.length)])), 3);
  // A count of 4 read alone would stop before messages/b.json, and two events would be counted nowhere.
  await refused(t, dir, 'four.zip', Buffer.concat([data, directory, endRecord(4, directory.length, data.length)]), ErrorCode.ARCHIVE_CORRUPT, /the end record \(byte \d+\) says 4 records; the \d+ bytes of the central directory hold 5/);
  await refused(t, dir, 'six.zip', Buffer.concat([data, directory, endRecord(6, directory.length, data.length)]), ErrorCode.ARCHIVE_CORRUPT, /says 6 records; .* hold 5/);
});

test('a ZIP64 end record is held to the central directory, and the end record to the ZIP64 one', async (t) => {
  const dir = await tempDir(t);
  const at = data.length + directory.length;
  const zip64 = (count: number, end: Buffer) => Buffer.concat([data, directory, zip64EndRecordAndLocator(count, directory.length, data.length, at), end]);
  t.is(await opens(t, dir, 'saturated.zip', zip64(5, SATURATED_END_RECORD)), 3);
  t.is(await opens(t, dir, 'both-say-5.zip', zip64(5, endRecord(5, directory.length, data.length))), 3);
  await refused(t, dir, 'zip64-four.zip', zip64(4, SATURATED_END_RECORD), ErrorCode.ARCHIVE_CORRUPT, /the ZIP64 end record \(byte \d+\) says 4 records; .* hold 5/);
  await refused(t, dir, 'end-four.zip', zip64(5, endRecord(4, directory.length, data.length)), ErrorCode.ARCHIVE_CORRUPT, /the end record \(byte \d+\) says 4 records on this disk, the ZIP64 end record \(byte \d+\) 5/);
  await refused(t, dir, 'end-size.zip', zip64(5, endRecord(5, directory.length - 1, data.length)), ErrorCode.ARCHIVE_CORRUPT, new RegExp(`says ${directory.length - 1} directory size, the ZIP64 end record \\(byte \\d+\\) ${directory.length}`));
});

test('the records must fill the central directory exactly, and it must end where its end record starts', async (t) => {
  const dir = await tempDir(t);
  const fourth = directory.length - records[4]!.length;
  // Count and size agree on four records; the fifth (messages/b.json) stands between them and the end record.
  await refused(t, dir, 'hidden.zip', Buffer.concat([data, directory, endRecord(4, fourth, data.length)]), ErrorCode.ARCHIVE_CORRUPT, new RegExp(`central directory at bytes ${data.length}-${data.length + fourth - 1}, which do not end where that record starts`));
  // A size that ends inside the fifth record (its fixed 46 bytes, or its name), the end record placed there.
  for (const into of [10, 49]) {
    const cut = Buffer.concat([data, directory.subarray(0, fourth + into)]);
    await refused(t, dir, `cut-${into}.zip`, Buffer.concat([cut, endRecord(5, fourth + into, data.length)]), ErrorCode.ARCHIVE_CORRUPT, /record 5 \(byte \d+\) runs past the directory's end/);
  }
});

test('65,535 entries with no ZIP64 record, as Python writes them, are read; 65,536 so are refused', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const path = join(dir, 'python.zip');
  const script = [
    'import base64, json, sys, zipfile',
    'entries = json.load(sys.stdin)',
    'with zipfile.ZipFile(sys.argv[1], "w") as zf:',
    '    for name, content in entries: zf.writestr(name, base64.b64decode(content))',
    '    for i in range(65535 - len(entries)): zf.writestr(f"pad/{i:05}/", b"")',
  ].join('\n');
  execFileSync('python3', ['-c', script, path], { input: JSON.stringify(Object.entries(layout()).map(([name, bytes]) => [name, bytes.toString('base64')])) });
  const bytes = await readFile(path);
  const end = bytes.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  t.is(bytes.readUInt16LE(end + 10), 0xffff, 'Python says 65,535 in the end record');
  t.is(bytes.indexOf(Buffer.from([0x50, 0x4b, 0x06, 0x06])), -1, 'and writes no ZIP64 end record');
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  t.is(archive.eventCount, 3);

  const pads: Record<string, string> = {};
  for (let i = 0; i < 65_536 - 5; i++) pads[`pad/${String(i).padStart(5, '0')}/`] = '';
  const many = storedEntries({ ...layout(), ...pads });
  const manyDirectory = Buffer.concat(many.records);
  await refused(t, dir, 'many.zip', Buffer.concat([many.data, manyDirectory, endRecord(0xffff, manyDirectory.length, many.data.length)]), ErrorCode.ARCHIVE_CORRUPT, /says 65535 records; .* hold 65536/);
});

test('an end record in the comment of the real one is refused as ambiguous, also when bytes follow the zip', async (t) => {
  const dir = await tempDir(t);
  // The comment holds a second directory, without messages/b.json, and an end record for it.
  const commentStart = data.length + directory.length + 22;
  const fakeDirectory = Buffer.concat(records.slice(0, 4));
  const reachingEnd = Buffer.concat([fakeDirectory, endRecord(4, fakeDirectory.length, commentStart)]);
  const reaching = Buffer.concat([data, directory, endRecord(5, directory.length, data.length, reachingEnd)]);
  await refused(t, dir, 'reaching.zip', reaching, ErrorCode.ARCHIVE_CORRUPT, /end-of-central-directory records at bytes \d+ and \d+ both end exactly at the end of the file/);
  // A fake whose own comment ends before the file does is passed over: the real one reaches the end.
  const fitting = storedZip(layout(), Buffer.concat([fakeDirectory, endRecord(4, fakeDirectory.length, commentStart), Buffer.from('more comment')]));
  t.is(await opens(t, dir, 'fitting.zip', fitting), 3);
  // With bytes appended, neither reaches the end of the file: the last that fits stands in the other's comment.
  await refused(t, dir, 'appended.zip', Buffer.concat([fitting, Buffer.alloc(100)]), ErrorCode.ARCHIVE_CORRUPT, /the end-of-central-directory record at byte \d+ stands inside the comment of the one at byte \d+/);
});

test('users.json or conversations.json that is not UTF-8 refuses the archive, naming the entry and the byte', async (t) => {
  const dir = await tempDir(t);
  // A Latin-1 exporter: "ü" as the one byte 0xfc.
  const latin1 = (text: string) => Buffer.from(text, 'latin1');
  const badUsers = latin1(JSON.stringify([...users, { id: 'u_9', displayName: 'Jürgen', email: 'jürgen@acme.example' }]));
  await refused(t, dir, 'users.zip', storedZip({ ...layout(), 'users.json': badUsers }), ErrorCode.ARCHIVE_CONTENT, new RegExp(`users\\.json is not UTF-8: byte ${badUsers.indexOf(0xfc)} \\(0xfc\\)`));
  const badConversations = latin1(JSON.stringify([{ ...conversations[0], name: 'Büro' }]));
  await refused(t, dir, 'conversations.zip', storedZip({ ...layout(), 'conversations.json': badConversations }), ErrorCode.ARCHIVE_CONTENT, new RegExp(`conversations\\.json is not UTF-8: byte ${badConversations.indexOf(0xfc)} \\(0xfc\\)`));
  // The same text in UTF-8, with a byte order mark, is read.
  const goodUsers = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(badUsers.toString('latin1'))]);
  t.is(await opens(t, dir, 'utf8.zip', storedZip({ ...layout(), 'users.json': goodUsers })), 3);
});

test('the command line refuses such archives with exit 2 and a failure record naming the code', async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const cases = {
    'count-short.zip': [Buffer.concat([data, directory, endRecord(4, directory.length, data.length)]), ErrorCode.ARCHIVE_CORRUPT],
    'latin1-users.zip': [storedZip({ ...layout(), 'users.json': Buffer.from(JSON.stringify([{ id: 'u_1', displayName: 'Jürgen', email: 'jürgen@acme.example' }]), 'latin1') }), ErrorCode.ARCHIVE_CONTENT],
  } as const;
  for (const [name, [bytes, code]] of Object.entries(cases)) {
    const path = join(dir, name);
    await writeFile(path, bytes);
    const state = join(dir, `state-${name}`);
    const result = await cli(['run', path, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects')]);
    t.is(result.code, 2, `${name}: ${result.stderr}`);
    t.like((await runRecords(state)).find((r) => r.record === 'failure'), { code, exitCode: 2 }, name);
  }
});

test('every hostile .json entry may hold events: it counts as not read (the run alarms), whatever its name', async (t) => {
  const dir = await tempDir(t);
  const hostileJson = ['../messages/b.json', '/export/messages/b.json', 'attachments/../messages/b.json', 'messages/../users.json'];
  const path = join(dir, 'hostile.zip');
  await writeFile(path, storedZip({ ...layout(), ...Object.fromEntries([...hostileJson, '../notes.txt'].map((name) => [name, '[{"id":"never read"}]'])) }));
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  t.deepEqual([...archive.hostileEntryNames].sort(), [...hostileJson, '../notes.txt'].sort());
  t.is(new PivotZipSource(archive, path).summaryFields().counters.entriesNotRead, hostileJson.length);
  // Not hostile, but ".." once folded (U+2025): a .json outside the layout all the same.
  const folded = join(dir, 'folded.zip');
  await writeFile(folded, storedZip({ ...layout(), 'x/\u2025/b.json': '[]' }));
  const other = await PivotExportArchive.open({ path: folded });
  t.teardown(() => other.close());
  t.deepEqual(other.hostileEntryNames, []);
  t.is(new PivotZipSource(other, folded).summaryFields().counters.entriesNotRead, 1);
});
