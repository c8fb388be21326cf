import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, PivotArchiveError } from '../src/errors.js';
import { readUserMap, targetMailboxes } from '../src/transforms/fan-out/index.js';
import { tempDir } from './helpers/tmp.js';

async function mapOf(t: import('ava').ExecutionContext, content: string | Buffer): Promise<[string, string][]> {
  const path = join(await tempDir(t), 'map.csv');
  await writeFile(path, content);
  return [...(await readUserMap(path))];
}

/** readUserMap fails with a CONFIG error that names the file and the line, and says what is wrong. */
async function refused(t: import('ava').ExecutionContext, content: string | Buffer, line: number, why: RegExp): Promise<void> {
  const dir = await tempDir(t);
  const path = join(dir, 'users.csv');
  await writeFile(path, content);
  const err = await t.throwsAsync(readUserMap(path), { instanceOf: PivotArchiveError }, JSON.stringify(content));
  t.is((err as PivotArchiveError).code, ErrorCode.CONFIG);
  t.true(err!.message.startsWith(`${path}:${line}: `), err!.message);
  t.regex(err!.message, why);
}

test('a header line is skipped when its second cell is a header word, in any case, after comments', async (t) => {
  t.deepEqual(await mapOf(t, 'pivot,mailbox\nu_1,a@acme.example\n'), [['u_1', 'a@acme.example']]);
  t.deepEqual(await mapOf(t, 'Pivot email , MAILBOX\nu_1,a@acme.example\n'), [['u_1', 'a@acme.example']]);
  t.deepEqual(await mapOf(t, '"key","Email"\nu_1,a@acme.example\n'), [['u_1', 'a@acme.example']]);
  t.deepEqual(await mapOf(t, '# exported 2026-11-23\n\npivot,mailbox\nu_1,a@acme.example\n'), [['u_1', 'a@acme.example']]);
});

test('a first line with an invalid mailbox is an error, not a header', async (t) => {
  await refused(t, 'u_1,not-an-address\nu_2,b@acme.example\n', 1, /the mailbox \(second cell\) is not a valid email address: it has no @/);
  await refused(t, '# comment\nu_1,jane doe@acme.example\n', 2, /not a valid email address: .*space/);
  // Only the first line can be a header.
  await refused(t, 'pivot,mailbox\nu_1,a@acme.example\nu_2,mailbox\n', 3, /not a valid email address/);
});

test('a line without a comma is an error, first line or not', async (t) => {
  await refused(t, 'u_2 b@acme.example\nu_1,a@acme.example\n', 1, /no comma/);
  await refused(t, 'u_1,a@acme.example\n\nu_2 b@acme.example\n', 3, /no comma: expected "pivot email or user id,mailbox"$/);
});

test('a line with three cells, an empty key or an empty mailbox is an error', async (t) => {
  await refused(t, 'u_1,a@acme.example\nu_2,b@acme.example,extra\n', 2, /3 cells; expected 2/);
  await refused(t, 'pivot,mailbox,comment\nu_1,a@acme.example\n', 1, /header line has 3 cells/);
  await refused(t, 'u_1,a@acme.example\n,b@acme.example\n', 2, /key .* is empty/);
  await refused(t, 'u_1,a@acme.example\nu_2,\n', 2, /mailbox .* is empty/);
  await refused(t, 'u_1,"a@acme.example\n', 1, /no closing quote/);
});

test('a key given twice is an error when the mailboxes differ, and fine when they are the same mailbox', async (t) => {
  await refused(t, 'u_1,a@acme.example\nu_2,c@acme.example\nu_1,b@acme.example\n', 3, /the key \(first cell\) is mapped twice: on line 1 to another mailbox$/);
  await refused(t, 'Jane@ACME.example,a@acme.example\njane@acme.example,b@acme.example\n', 2, /mapped twice/);
  await refused(t, 'anna@bücher.example,a@acme.example\nanna@xn--bcher-kva.example,b@acme.example\n', 2, /mapped twice/);
  t.deepEqual(await mapOf(t, 'u_1,A@acme.example\nu_1,a@ACME.example\n'), [['u_1', 'a@acme.example']]);
});

test('a key with an @ that is not an address is an error (it could never match)', async (t) => {
  await refused(t, 'jane.doe@acme,jane@acme.example\n', 1, /the key \(first cell\) has an @ but is not a valid email address .*user id/);
});

test('BOM, CRLF and CR line ends are read; quoted cells may hold commas', async (t) => {
  t.deepEqual(await mapOf(t, '\uFEFFpivot,mailbox\r\nu_1,a@acme.example\r\n'), [['u_1', 'a@acme.example']]);
  t.deepEqual(await mapOf(t, '\uFEFFu_1,a@acme.example\r\nu_2,b@acme.example'), [['u_1', 'a@acme.example'], ['u_2', 'b@acme.example']]);
  t.deepEqual(await mapOf(t, 'u_1,a@acme.example\ru_2,b@acme.example\r'), [['u_1', 'a@acme.example'], ['u_2', 'b@acme.example']]);
  t.deepEqual(await mapOf(t, '"u,1", "a@acme.example"\n"say ""hi""",b@acme.example\n'), [['u,1', 'a@acme.example'], ['say "hi"', 'b@acme.example']]);
  await refused(t, '\uFEFFu_1,a@acme.example\r\nu_2\r\n', 2, /no comma/);
});

test('a file that is not UTF-8 is an error that says so', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'latin1.csv');
  await writeFile(path, Buffer.from('u_1,j\xfcrgen@acme.example\n', 'latin1'));
  const err = await t.throwsAsync(readUserMap(path));
  t.is((err as PivotArchiveError).code, ErrorCode.CONFIG);
  t.regex(err!.message, /latin1\.csv is not UTF-8/);
});

test('mailboxes and email keys come out canonical: NFC, lower case, A-label domain', async (t) => {
  const map = await mapOf(t, 'u_1,anna@BÜCHER.example\nJÜRGEN@Acme.Example,用户@例子.广告\nu_3,Ju\u0308rgen@xn--bcher-kva.example\n');
  t.deepEqual(map, [
    ['u_1', 'anna@xn--bcher-kva.example'],
    ['jürgen@acme.example', '用户@xn--fsqu00a.xn--4rr70v'],
    ['u_3', 'jürgen@xn--bcher-kva.example'],
  ]);
  const userMap = new Map(map);
  const people = [{ id: 'u_9', email: 'jürgen@ACME.example' }, { id: 'u_1', email: null }];
  t.deepEqual(targetMailboxes(people, { domains: ['bücher.example', '例子.广告'], userMap }), ['anna@xn--bcher-kva.example', '用户@xn--fsqu00a.xn--4rr70v']);
});
