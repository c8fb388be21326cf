// A messages file written as UTF-16 (with or without its byte order mark, either byte order) is
// refused as not a JSON array, and the error says what it found and that it looks like UTF-16.
import test from 'ava';
import { join } from 'node:path';
import { ErrorCode, PivotArchiveError } from '../src/errors.js';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { writeArchive } from './helpers/archive.js';
import { tempDir } from './helpers/tmp.js';

const users = [{ id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' }];
const conversations = [{ id: 'c_1', type: 'direct', name: null, members: ['u_1'] }];
const text = JSON.stringify([{ id: 'm_1', conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T08:00:00Z', senderId: 'u_1', text: 'hi there' }], null, 1);
const utf16le = Buffer.from(text, 'utf16le');
const utf16be = Buffer.from(utf16le).swap16();

test('a UTF-16 messages file is refused naming the entry, the byte found, and UTF-16', async (t) => {
  const dir = await tempDir(t);
  const cases: [string, Buffer, RegExp][] = [
    ['UTF-16LE with its byte order mark', Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le]), /found 0xff \(UTF-16\? JSON must be UTF-8\) at byte 0$/],
    ['UTF-16BE with its byte order mark', Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be]), /found 0xfe \(UTF-16\? JSON must be UTF-8\) at byte 0$/],
    ['UTF-16LE without one', utf16le, /found 0x00 \(UTF-16\? JSON must be UTF-8\) at byte \d+$/],
    ['UTF-16BE without one', utf16be, /found 0x00 \(UTF-16\? JSON must be UTF-8\) at byte 0$/],
  ];
  for (const [i, [what, bytes, why]] of cases.entries()) {
    const path = await writeArchive(join(dir, `u${i}.zip`), { users, conversations, messages: {}, extra: { 'messages/a.json': bytes } });
    const err = await t.throwsAsync(PivotExportArchive.open({ path }), { instanceOf: PivotArchiveError }, what);
    t.is((err as PivotArchiveError).code, ErrorCode.ARCHIVE_CONTENT, what);
    t.regex(err!.message, /messages\/a\.json is not a JSON array of events/, what);
    t.regex(err!.message, why, what);
  }
});

test('a broken array names the byte that breaks it', async (t) => {
  const dir = await tempDir(t);
  const path = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: {}, extra: { 'messages/a.json': '[{"id":"x"}] x' } });
  const err = await t.throwsAsync(PivotExportArchive.open({ path }), { instanceOf: PivotArchiveError });
  t.regex(err!.message, /more after the closing \], found 0x78 at byte 13$/);
});
