import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, NoteReason, PivotArchiveError, type ErrorCodeValue } from '../src/errors.js';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { PivotZipSource } from '../src/sources/pivot-zip/source.js';
import { isHostileEntryName } from '../src/formats/zip/index.js';
import { MANIFEST, writeArchive, type Fixture } from './helpers/archive.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const users = [
  { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
  { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' },
];
const conversations = [{ id: 'c_1', type: 'direct', name: null, members: ['u_1', 'u_2'] }];
const events = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => ({
    id: `${prefix}${i}`,
    conversationId: 'c_1',
    type: 'message',
    sentAt: new Date(Date.parse('2026-11-23T08:00:00Z') + i * 1000).toISOString(),
    senderId: i % 2 ? 'u_1' : 'u_2',
    text: `message ${i} 0123456789`,
  }));
const fixture: Fixture = { users, conversations, messages: { 'b.json': events('b', 50), 'a.json': events('a', 50) } };

async function readAll(archive: PivotExportArchive): Promise<string[]> {
  const ids: string[] = [];
  for await (const { raw } of archive.events()) ids.push(String(raw.id));
  return ids;
}

async function expectArchiveError(t: import('ava').ExecutionContext, path: string, code: ErrorCodeValue, pattern?: RegExp) {
  const err = await t.throwsAsync(PivotExportArchive.open({ path }), { instanceOf: PivotArchiveError });
  t.is((err as PivotArchiveError).code, code, err?.message);
  if (pattern) t.regex(err!.message, pattern);
}

const expectedOrder = [...events('a', 50), ...events('b', 50)].map((e) => e.id);

test('reads an archive made by archiver (streamed, data descriptors), files in name order', async (t) => {
  const path = await writeArchive(join(await tempDir(t), 'x.zip'), fixture);
  const archive = await PivotExportArchive.open({ path });
  t.is(archive.manifest.exportId, MANIFEST.exportId);
  t.is(archive.eventCount, 100);
  t.deepEqual(await readAll(archive), expectedOrder);
});

test('reads a ZIP64 archive made by archiver, and a STORE one', async (t) => {
  const dir = await tempDir(t);
  for (const options of [{ zip64: true }, { store: true }]) {
    const archive = await PivotExportArchive.open({ path: await writeArchive(join(dir, `${Object.keys(options)[0]}.zip`), fixture, options) });
    t.deepEqual(await readAll(archive), expectedOrder);
  }
});

function pipeZip(entries: Record<string, string | Buffer>, zip64: boolean): Buffer {
  const script = fileURLToPath(new URL('../../test/fixtures/pipe_zip.py', import.meta.url));
  const input = JSON.stringify(Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, Buffer.from(v).toString('base64')])));
  return execFileSync('python3', [script, ...(zip64 ? ['zip64'] : [])], { input, maxBuffer: 1 << 30 });
}

function fixtureEntries(): Record<string, string> {
  return {
    'messages/b.json': JSON.stringify(events('b', 50)),
    'manifest.json': JSON.stringify(MANIFEST),
    'users.json': JSON.stringify(users),
    'conversations.json': JSON.stringify(conversations),
    'messages/a.json': JSON.stringify(events('a', 50)),
  };
}

test('reads archives written through a pipe by another zip writer (data descriptors, with and without ZIP64)', async (t) => {
  const dir = await tempDir(t);
  for (const zip64 of [false, true]) {
    const bytes = pipeZip(fixtureEntries(), zip64);
    // A data descriptor signature follows the entry data when the writer could not seek back.
    t.true(bytes.includes(Buffer.from([0x50, 0x4b, 0x07, 0x08])));
    if (zip64) t.is(bytes.readUInt16LE(4), 45, 'the first local header needs ZIP64 (version 4.5)');
    const path = join(dir, `pipe-${zip64}.zip`);
    await writeFile(path, bytes);
    t.deepEqual(await readAll(await PivotExportArchive.open({ path })), expectedOrder);
  }
});

test('a truncated archive fails with a clear error, and does not hang', async (t) => {
  t.timeout(20_000);
  const dir = await tempDir(t);
  const whole = await readFile(await writeArchive(join(dir, 'x.zip'), fixture));
  for (const keep of [whole.length - 10, Math.floor(whole.length / 2), 100]) {
    const path = join(dir, `cut-${keep}.zip`);
    await writeFile(path, whole.subarray(0, keep));
    await expectArchiveError(t, path, ErrorCode.ARCHIVE_UNREADABLE, /not a readable zip archive/);
  }
});

test('a corrupted byte inside a messages file fails the CRC check when the archive is opened', async (t) => {
  const dir = await tempDir(t);
  const bytes = await readFile(await writeArchive(join(dir, 'x.zip'), fixture, { store: true }));
  const at = bytes.indexOf('message 7 0123456789');
  bytes[at + 8] = '8'.charCodeAt(0); // still valid JSON: only the CRC can tell
  const path = join(dir, 'bad.zip');
  await writeFile(path, bytes);
  await expectArchiveError(t, path, ErrorCode.ARCHIVE_CORRUPT, /CRC-32/);
});

test('a zip bomb entry is refused by its compression ratio; --max-zip-ratio raises the limit, 0 lifts it, for a day with one huge repetitive attachment', async (t) => {
  const dir = await tempDir(t);
  const path = await writeArchive(join(dir, 'bomb.zip'), { ...fixture, attachments: { a_zero: Buffer.alloc(64 * 1024 * 1024) } });
  await expectArchiveError(t, path, ErrorCode.ARCHIVE_HOSTILE, /attachments\/a_zero.*zip bomb/);
  const lifted = await PivotExportArchive.open({ path, maxZipRatio: 0 });
  t.is(lifted.eventCount, 100);
  await lifted.close();
  const run = (extra: string[]) => cli(['run', path, '--all-domains', '--sink', `maildir:${join(dir, 'mail')}`, '--rejects', join(dir, 'r'), ...extra]);
  const refused = await run([]);
  t.is(refused.code, 2);
  t.regex(refused.log, /E_ARCHIVE_HOSTILE: .*refused as a zip bomb/);
  t.is((await run(['--max-zip-ratio', '0'])).code, 0);
  t.is((await run(['--max-zip-ratio', 'lots'])).code, 2);
});

test('an entry that inflates past the size its central directory declares is cut off', async (t) => {
  const dir = await tempDir(t);
  const bytes = await readFile(await writeArchive(join(dir, 'x.zip'), fixture));
  // Lower the declared uncompressed size of messages/a.json in the central directory.
  const name = Buffer.from('messages/a.json');
  let header = -1;
  for (let i = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])); i >= 0; i = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), i + 4)) {
    if (bytes.subarray(i + 46, i + 46 + name.length).equals(name)) header = i;
  }
  t.true(header > 0);
  bytes.writeUInt32LE(100, header + 24);
  const path = join(dir, 'liar.zip');
  await writeFile(path, bytes);
  await expectArchiveError(t, path, ErrorCode.ARCHIVE_CORRUPT, /inflates past its declared 100 bytes/);
});

test('overlapping entries are refused', async (t) => {
  const dir = await tempDir(t);
  const bytes = await readFile(await writeArchive(join(dir, 'x.zip'), { ...fixture, attachments: { a_1: Buffer.from('one'), a_2: Buffer.from('two') } }, { store: true }));
  const central = (name: string) => {
    for (let i = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])); i >= 0; i = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), i + 4)) {
      if (bytes.subarray(i + 46, i + 46 + name.length).toString() === name) return i;
    }
    throw new Error(name);
  };
  // Point attachments/a_2 at the local header of messages/a.json.
  bytes.writeUInt32LE(bytes.readUInt32LE(central('messages/a.json') + 42), central('attachments/a_2') + 42);
  const path = join(dir, 'overlap.zip');
  await writeFile(path, bytes);
  await expectArchiveError(t, path, ErrorCode.ARCHIVE_HOSTILE, /overlaps/);
});

test('a local header whose extra field pushes its data into the next entry is refused, not read from there', async (t) => {
  const dir = await tempDir(t);
  const bytes = await readFile(await writeArchive(join(dir, 'x.zip'), fixture, { store: true }));
  const name = Buffer.from('messages/a.json');
  let local = -1;
  for (let i = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x03, 0x04])); i >= 0; i = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x03, 0x04]), i + 4)) {
    if (bytes.subarray(i + 30, i + 30 + name.length).equals(name)) local = i;
  }
  t.true(local >= 0);
  // The central directory still says where the entry is and how long; only its local extra length grows.
  bytes.writeUInt16LE(bytes.readUInt16LE(local + 28) + 64, local + 28);
  const path = join(dir, 'shifted.zip');
  await writeFile(path, bytes);
  await expectArchiveError(t, path, ErrorCode.ARCHIVE_CORRUPT, /messages\/a\.json.*past the next entry/);
});

test('zip-slip and other hostile entry names are set aside, never read as archive content', async (t) => {
  const hostile = ['../evil.json', '/etc/passwd', 'messages\\c.json', 'messages/../../x.json', 'attachments/\u0001a', 'attachments/\u0000a'];
  // Python's zipfile cuts names at NUL: write a placeholder of the same length and patch it in.
  const entries: Record<string, string> = { ...fixtureEntries() };
  for (const name of hostile) entries[name.replace('\u0000', 'Z')] = '[]';
  const bytes = pipeZip(entries, false);
  const placeholder = Buffer.from('attachments/Za');
  for (let i = bytes.indexOf(placeholder); i >= 0; i = bytes.indexOf(placeholder, i + 1)) bytes[i + 12] = 0;
  const path = join(await tempDir(t), 'slip.zip');
  await writeFile(path, bytes);
  const archive = await PivotExportArchive.open({ path });
  t.deepEqual([...archive.hostileEntryNames].sort(), [...hostile].sort());
  t.is(archive.messageFiles.length, 2);
  t.deepEqual(await readAll(archive), expectedOrder);
  for (const name of hostile) t.true(isHostileEntryName(name), name);
  for (const name of ['messages/a.json', 'attachments/a_77', 'messages/..json']) t.false(isHostileEntryName(name), name);
});

test('a missing required entry, an unknown version or a bad messages file fails the archive', async (t) => {
  const dir = await tempDir(t);
  for (const missing of ['manifest', 'users', 'conversations'] as const) {
    const path = await writeArchive(join(dir, `no-${missing}.zip`), { ...fixture, [missing]: null });
    await expectArchiveError(t, path, ErrorCode.ARCHIVE_MISSING_ENTRY, new RegExp(`${missing}.json is missing`));
  }
  await expectArchiveError(t, await writeArchive(join(dir, 'v2.zip'), { ...fixture, manifest: { ...MANIFEST, version: 2 } }), ErrorCode.ARCHIVE_VERSION, /version 2/);
  await expectArchiveError(t, await writeArchive(join(dir, 'nomsg.zip'), { ...fixture, messages: {} }), ErrorCode.ARCHIVE_MISSING_ENTRY, /messages/);
  const notArray = await writeArchive(join(dir, 'obj.zip'), { ...fixture, extra: { 'messages/c.json': '{"id":1}' } });
  await expectArchiveError(t, notArray, ErrorCode.ARCHIVE_CONTENT, /messages\/c.json is not a JSON array/);
  const broken = await writeArchive(join(dir, 'broken.zip'), { ...fixture, extra: { 'messages/c.json': '[{"id":"x"},' } });
  await expectArchiveError(t, broken, ErrorCode.ARCHIVE_CONTENT, /messages\/c.json/);
  const noWindow = await writeArchive(join(dir, 'nowin.zip'), { ...fixture, manifest: { ...MANIFEST, windowStart: 'yesterday' } });
  await expectArchiveError(t, noWindow, ErrorCode.ARCHIVE_CONTENT, /windowStart/);
});

test('conversation members that cannot be addressed (not in users.json, not an id, no list) are said in notes naming the conversation, and the events still go to the others', async (t) => {
  const many = Array.from({ length: 12 }, (_, i) => `ghost_${i}`);
  const path = await writeArchive(join(await tempDir(t), 'members.zip'), {
    users,
    conversations: [
      { id: 'c_1', type: 'group', name: 'desk', members: ['u_1', 'u_2', 'u_9'] },
      { id: 'c_2', type: 'room', name: 'big', members: ['u_1', 7, null, ...many] },
      { id: 'c_3', type: 'group', name: 'no list' },
      { id: 'c_4', type: 'direct', name: null, members: ['u_1', 'u_2'] },
    ],
    messages: { 'a.json': events('a', 2) },
  });
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const notes = new PivotZipSource(archive, path).notes.filter((n) => n.reason === NoteReason.UNKNOWN_MEMBER);
  t.deepEqual(notes.map((n) => n.conversationId), ['c_1', 'c_2', 'c_3']);
  t.regex(notes[0]!.detail, /conversation "c_1" lists 1 member not in users.json \("u_9"\): no mailbox of theirs can be found/);
  t.regex(notes[1]!.detail, /lists 2 members that are not a user id \(passed over\); lists 12 members not in users\.json \("ghost_0", .*"ghost_9", \.\.\.\)/);
  t.notRegex(notes[1]!.detail, /ghost_10/);
  t.regex(notes[2]!.detail, /conversation "c_3" has no list of members/);
  // The events of c_1 still go to its members that are users.
  t.deepEqual([...archive.membersAt('c_1', { time: Date.parse('2026-11-23T09:00:00Z'), subMs: 0, file: 0, index: 0 })].sort(), ['u_1', 'u_2', 'u_9']);
});

test('an attachment entry no event names is said in a note naming the entry; one an event names, even a rejected event, is not', async (t) => {
  const named = { ...events('n', 1)[0]!, id: 'n_att', attachments: [{ id: 'a_1', name: 'a.pdf' }] };
  // Rejected (no sender) but read: it still names its attachment.
  const rejected = { id: 'r_att', conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', attachments: [{ id: 'a_3' }] };
  const path = await writeArchive(join(await tempDir(t), 'unnamed.zip'), {
    users,
    conversations: [{ id: 'c_1', type: 'direct', name: null, members: ['u_1', 'u_2'] }],
    messages: { 'a.json': [...events('a', 3), named, rejected] },
    attachments: { a_1: Buffer.from('named'), a_2: Buffer.from('no event names me'), a_3: Buffer.from('named by a rejected event'), 'a 4': Buffer.from('nor me') },
  });
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const notes = new PivotZipSource(archive, path).notes.filter((n) => n.reason === NoteReason.UNNAMED_ATTACHMENT);
  t.deepEqual(notes.map((n) => n.detail.match(/^archive entry "([^"]+)"/)?.[1]).sort(), ['attachments/a 4', 'attachments/a_2']);
  t.regex(notes[0]!.detail, /an attachment no event names .*its bytes stay in the archive, in no message/);
});
