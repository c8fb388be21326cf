import test from 'ava';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { ITEM_CSV_COLUMNS, csvField, writeItemsCsv } from '../src/report/csv.js';
import type { ItemLine } from '../src/ledger/account.js';
import { HOSTILE, reportFixture } from './helpers/report-account.js';
import { PYTHON_MISSING, needingTools, readCsvIndependently } from './helpers/report-tools.js';
import { tempDir } from './helpers/tmp.js';

/** A field as a spreadsheet-safe CSV holds it: a formula start gets a leading single quote. */
const safe = (v: unknown) => (v === undefined || v === null ? '' : /^[=+\-@\t\r]/.test(String(v)) ? `'${String(v)}` : String(v));

test('csvField: RFC 4180 quoting, and a formula start neutralised with a leading quote (OWASP)', (t) => {
  t.is(csvField('plain'), 'plain');
  t.is(csvField('a,b'), '"a,b"');
  t.is(csvField('say "hi"'), '"say ""hi"""');
  t.is(csvField('two\nlines'), '"two\nlines"');
  t.is(csvField('cr\rhere'), '"cr\rhere"');
  t.is(csvField('=1+1'), `"'=1+1"`);
  t.is(csvField('+1'), `"'+1"`);
  t.is(csvField('-1'), `"'-1"`);
  t.is(csvField('@SUM(A1)'), `"'@SUM(A1)"`);
  t.is(csvField('\tx'), `"'\tx"`);
  t.is(csvField('\rx'), `"'\rx"`);
  t.is(csvField('=HYPERLINK("u","c")'), `"'=HYPERLINK(""u"",""c"")"`);
  t.is(csvField('a=1'), 'a=1');
  t.is(csvField(1234), '1234');
  t.is(csvField(undefined), '');
  t.is(csvField(null), '');
  t.is(csvField('m\u202Egnp.exe'), 'm\u202Egnp.exe');
  // A value that starts with a quote gets one more: `=1` and `'=1` are never written alike.
  t.is(csvField("'=1"), `"''=1"`);
  t.is(csvField("'quoted"), `"''quoted"`);
  t.not(csvField('=1'), csvField("'=1"));
  // The README's rule gives every value back: drop the first character of a field that starts with
  // a quote followed by one of = + - @ TAB CR or a quote.
  const back = (field: string) => {
    const unquoted = field.startsWith('"') ? field.slice(1, -1).replace(/""/g, '"') : field;
    return /^'[=+\-@\t\r']/.test(unquoted) ? unquoted.slice(1) : unquoted;
  };
  for (const value of ['=1', "'=1", "''=1", "'", "'a", 'a', '-1', "'-1", '@x', "it's"]) t.is(back(csvField(value)), value, value);
});

test('the header names the columns; lines end CRLF; a BOM only when asked', async (t) => {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const line: ItemLine = { itemId: 'm_1', conversationId: 'c_1', mailbox: 'a@acme.example', outcome: 'delivered', size: 10, runId: 'r1', at: '2026-11-24T02:00:00.000Z' };
  t.is(await writeItemsCsv([line], out), 1);
  t.is(Buffer.concat(chunks).toString('utf8'), `${ITEM_CSV_COLUMNS.join(',')}\r\nm_1,c_1,a@acme.example,delivered,,,,10,,,,r1,2026-11-24T02:00:00.000Z\r\n`);
  t.false(out.writableEnded, 'out is left open unless `end` is asked for');
  const bom = new PassThrough();
  const b: Buffer[] = [];
  bom.on('data', (c: Buffer) => b.push(c));
  t.is(await writeItemsCsv([], bom, { bom: true, end: true }), 0);
  t.true(bom.writableEnded);
  t.deepEqual([...Buffer.concat(b).subarray(0, 3)], [0xef, 0xbb, 0xbf]);
});

test('streams with backpressure: a slow output never holds more than about one chunk, and lines are read as it drains', async (t) => {
  let buffered = 0;
  let written = 0;
  let rowsWritten = -1; // the header
  const out = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _enc, done) {
      written += chunk.length;
      buffered = Math.max(buffered, this.writableLength);
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) rowsWritten++;
      setTimeout(done, 1);
    },
  });
  let produced = 0;
  let maxAhead = 0;
  async function* lines(): AsyncGenerator<ItemLine> {
    for (let i = 0; i < 100_000; i++) {
      produced++;
      maxAhead = Math.max(maxAhead, produced - Math.max(0, rowsWritten));
      yield { itemId: `m_${i}`, conversationId: 'c_0001', mailbox: `u${i % 30}@acme.example`, outcome: 'delivered', sha256: 'ab'.repeat(32), runId: 'run-1', at: '2026-11-24T02:00:00.000Z' };
    }
  }
  t.is(await writeItemsCsv(lines(), out, { end: true }), 100_000);
  t.true(written > 10_000_000, `${written} bytes`);
  t.true(buffered < 200_000, `at most ${buffered} bytes waited in the output`);
  t.true(maxAhead < 2000, `lines were read at most ${maxAhead} ahead of the output`);
  t.log(`${written} bytes; at most ${buffered} bytes buffered, lines read at most ${maxAhead} ahead`);
});

test('a failing output rejects the write, and one closed while full does not hang it', async (t) => {
  const failing = new Writable({
    write(_chunk, _enc, done) {
      done(new Error('EIO: disk on fire'));
    },
  });
  const many = Array.from({ length: 5000 }, (_, i): ItemLine => ({ itemId: `m_${i}`, conversationId: 'c', mailbox: null, outcome: 'rejected', runId: 'r', at: 'x'.repeat(100) }));
  await t.throwsAsync(writeItemsCsv(many, failing), { message: /disk on fire/ });

  const stuck = new Writable({ highWaterMark: 1024, write() {} }); // never calls back: never drains
  const pending = writeItemsCsv(many, stuck);
  setTimeout(() => stuck.destroy(), 20);
  await t.throwsAsync(pending, { message: /closed before the item list was written/ });
});

needingTools('report CSV (Python csv)', [PYTHON_MISSING], () => {
  test('Python csv reads the item list back: the header, one row per item, hostile fields exact, formula starts quoted', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'items.csv');
    const { lines } = reportFixture({ failed: true });
    const rows = await writeItemsCsv(lines, createWriteStream(path), { end: true });
    t.is(rows, lines.length);
    const read = await readCsvIndependently(path);
    t.deepEqual(read[0], [...ITEM_CSV_COLUMNS]);
    t.is(read.length, 1 + lines.length);
    lines.forEach((line, i) => t.deepEqual(read[i + 1], ITEM_CSV_COLUMNS.map((c) => safe(line[c]))));
    // The hostile values: exactly themselves (markup, quotes, &, U+202E), or with the one leading quote.
    const hostile = read.find((r) => r[0]!.startsWith('m_<script>'))!;
    t.is(hostile[0], HOSTILE.itemId);
    t.is(hostile[10], HOSTILE.kept);
    t.true(hostile[0]!.includes('\u202E'));
    const formula = read.find((r) => r[1]!.includes('HYPERLINK'))!;
    t.is(formula[1], `'${HOSTILE.conversationId}`);
    for (const id of HOSTILE.formulaItemIds) t.true(read.some((r) => r[0] === `'${id}`), `'${JSON.stringify(id)} is quoted`);
    t.true(read.some((r) => r[2] === HOSTILE.mailbox));
    t.true(read.some((r) => r[3] === 'failed' && r[4] === 'sink-error'));
    t.true(read.some((r) => r[3] === 'failed' && r[4] === 'not-kept' && r[2] === ''));
    // No cell a spreadsheet would run.
    for (const r of read) for (const cell of r) t.notRegex(cell, /^[=+\-@\t\r]/);
    // RFC 4180 line ends, UTF-8 without a BOM by default.
    const bytes = await readFile(path);
    t.not(bytes[0], 0xef);
    t.is(bytes.subarray(0, bytes.indexOf(0x0a) + 1).toString(), `${ITEM_CSV_COLUMNS.join(',')}\r\n`);
  });

  test('an async iterable of lines is written the same as an array', async (t) => {
    const dir = await tempDir(t);
    const { lines } = reportFixture();
    async function* slowly(): AsyncGenerator<ItemLine> {
      for (const line of lines) {
        if (Math.random() < 0.01) await new Promise((resolve) => setImmediate(resolve));
        yield line;
      }
    }
    await writeItemsCsv(lines, createWriteStream(join(dir, 'a.csv')), { end: true });
    await writeItemsCsv(slowly(), createWriteStream(join(dir, 'b.csv')), { end: true });
    t.deepEqual(await readFile(join(dir, 'b.csv')), await readFile(join(dir, 'a.csv')));
    t.is((await readCsvIndependently(join(dir, 'b.csv'))).length, 1 + lines.length);
  });
});
