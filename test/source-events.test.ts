// The messages files' elements as the source yields them: exact bytes, per-item malformed JSON,
// too-large events never held, invalid UTF-8 located, any nesting depth, a BOM; a broken array
// still fails the archive.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { ErrorCode, PivotArchiveError } from '../src/errors.js';
import type { SourceEvent } from '../src/model.js';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { JsonArrayError, JsonArrayScanner } from '../src/sources/pivot-zip/json-array.js';
import { MANIFEST, writeArchive, type Fixture } from './helpers/archive.js';
import { tempDir } from './helpers/tmp.js';

const users = [
  { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
  { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' },
];
const conversations = [{ id: 'c_1', type: 'direct', name: null, members: ['u_1', 'u_2'] }];
const event = (id: string, extra: Record<string, unknown> = {}) => ({ id, conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T08:00:00Z', senderId: 'u_1', text: `text of ${id}`, ...extra });
const base: Fixture = { users, conversations, messages: { 'a.json': [event('a0'), event('a1')] } };

async function readEvents(archive: PivotExportArchive): Promise<SourceEvent[]> {
  const out: SourceEvent[] = [];
  for await (const e of archive.events()) out.push(e as SourceEvent);
  return out;
}

/** Opens a fixture whose messages/m.json holds exactly `bytes` (after messages/a.json). */
async function openWith(t: import('ava').ExecutionContext, bytes: Buffer | string, options: { maxEventBytes?: number; store?: boolean } = {}) {
  const path = await writeArchive(join(await tempDir(t), 'x.zip'), { ...base, extra: { 'messages/m.json': bytes } }, { store: options.store });
  const archive = await PivotExportArchive.open({ path, maxEventBytes: options.maxEventBytes });
  t.teardown(() => archive.close());
  return { archive, events: (await readEvents(archive)).filter((e) => e.position.file === 1) };
}

test('each event comes with its exact bytes: big numbers, odd spacing and escapes are never re-serialised', async (t) => {
  const elements = [
    '{"id":"n1","conversationId":"c_1","type":"message","sentAt":"2026-11-23T08:00:00Z","senderId":"u_1","amount":123456789012345678901234567890,"rate":1.10}',
    '{ "id" : "n2",\n\t"conversationId":"c_1", "type":"message","sentAt":"2026-11-23T08:00:00Z","senderId":"u_1","text":"quote \\" and \\\\ and \\u00e9 and ]}[{"  }',
    '"a string element, with ] and }"',
    '-1.5e+300',
    'null',
    '[1,[2,[3]]]',
  ];
  const { events } = await openWith(t, `\n[ ${elements.join(' ,\r\n')} ]\n`);
  t.deepEqual(events.map((e) => e.bytes?.toString('utf8')), elements);
  t.deepEqual(events.map((e) => e.position.index), [0, 1, 2, 3, 4, 5]);
  t.is((events[0]!.raw as { amount: number }).amount, 1.2345678901234568e29, 'raw is JSON.parse of the bytes');
  t.is((events[1]!.raw as { text: string }).text, 'quote " and \\ and é and ]}[{');
  t.is(events[2]!.raw, 'a string element, with ] and }');
  t.true(events.every((e) => e.malformed === undefined && e.tooLarge === undefined && e.invalidUtf8At === undefined));
});

test('an element that is not valid JSON inside its bounds is yielded malformed, with its bytes; the next ones still come', async (t) => {
  const bad = '{"id":"x", oops}';
  const { archive, events } = await openWith(t, `[${JSON.stringify(event('m0'))},${bad},{"id":"y",},${JSON.stringify(event('m3'))}]`);
  t.is(archive.eventCount, 2 + 4);
  t.is(events.length, 4);
  t.is(events[1]!.bytes!.toString(), bad);
  t.is(events[1]!.raw, undefined);
  t.regex(events[1]!.malformed!, /JSON/);
  t.truthy(events[2]!.malformed);
  t.is((events[3]!.raw as { id: string }).id, 'm3');
  t.is(events[3]!.position.index, 3);
});

test('a broken array still fails the whole archive at open: not an array, unterminated string or array, garbage after ]', async (t) => {
  const dir = await tempDir(t);
  const cases: [string, RegExp][] = [
    ['{"id":"x"}', /expected \[/],
    ['[{"id":"x"}', /not closed/],
    ['[{"id":"x","text":"never ends}]', /string is not closed/],
    ['[{"id":"x"}] trailing', /more after the closing \]/],
    ['[{"id":"x"} {"id":"y"}]', /expected , or \]/],
    ['[{"id":"x"},]', /, is followed by \]/],
    ['[,{"id":"x"}]', /missing before ,/],
    ['', /the file ends/],
    ['\xef\xbb[]', /byte order mark/],
  ];
  for (const [i, [text, why]] of cases.entries()) {
    const path = await writeArchive(join(dir, `b${i}.zip`), { ...base, extra: { 'messages/m.json': Buffer.from(text, 'latin1') } });
    const err = await t.throwsAsync(PivotExportArchive.open({ path }), { instanceOf: PivotArchiveError }, text);
    t.is((err as PivotArchiveError).code, ErrorCode.ARCHIVE_CONTENT, text);
    t.regex(err!.message, /messages\/m\.json is not a JSON array of events/, text);
    t.regex(err!.message, why, text);
  }
});

test('a UTF-8 byte order mark and whitespace before the array are skipped', async (t) => {
  const text = JSON.stringify(event('bom'));
  const { events } = await openWith(t, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(` \r\n\t[${text}] \n`)]));
  t.is(events.length, 1);
  t.is(events[0]!.bytes!.toString(), text);
  t.is((events[0]!.raw as { id: string }).id, 'bom');
});

test('a UTF-8 byte order mark before manifest.json, users.json and conversations.json is passed over too', async (t) => {
  const bom = (value: unknown) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(value))]);
  const path = await writeArchive(join(await tempDir(t), 'bom.zip'), {
    manifest: null,
    users: null,
    conversations: null,
    messages: { '0.json': [event('m_1')] },
    extra: { 'manifest.json': bom(MANIFEST), 'users.json': bom([{ id: 'u_1', displayName: 'U', email: 'u1@acme.example' }]), 'conversations.json': bom([{ id: 'c_1', type: 'room', name: 'R', members: ['u_1'] }]) },
  });
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  t.is(archive.exportId, MANIFEST.exportId);
  t.is(archive.eventCount, 1);
});

test('invalid UTF-8 inside an element is read as U+FFFD and located (offset of the first bad byte in the element)', async (t) => {
  const before = Buffer.from('{"id":"u8","conversationId":"c_1","type":"message","sentAt":"2026-11-23T08:00:00Z","senderId":"u_1","text":"caf');
  const element = Buffer.concat([before, Buffer.from([0xe9]), Buffer.from(' ok \u00e9'), Buffer.from([0xc3]), Buffer.from('"}')]);
  const good = Buffer.from(JSON.stringify(event('fine', { text: 'caf\u00e9 \u{1f600}' })));
  const { events } = await openWith(t, Buffer.concat([Buffer.from('['), element, Buffer.from(','), good, Buffer.from(']')]));
  t.is(events[0]!.invalidUtf8At, before.length);
  t.true(events[0]!.bytes!.equals(element), 'the bytes are kept as they were');
  t.is((events[0]!.raw as { text: string }).text, 'caf\ufffd ok \u00e9\ufffd');
  t.is(events[1]!.invalidUtf8At, undefined);
  t.is((events[1]!.raw as { text: string }).text, 'caf\u00e9 \u{1f600}');
});

test('an element 100,000 levels deep is scanned, parsed and yielded without blowing the stack', async (t) => {
  const depth = 100_000;
  const deep = `{"id":"deep","conversationId":"c_1","type":"message","sentAt":"2026-11-23T08:00:00Z","senderId":"u_1","x":${'['.repeat(depth)}${']'.repeat(depth)}}`;
  const { archive, events } = await openWith(t, `[${deep},${JSON.stringify(event('after'))}]`);
  t.is(archive.eventCount, 4);
  t.is(events[0]!.bytes!.toString(), deep);
  t.is((events[0]!.raw as { id: string }).id, 'deep');
  t.is((events[1]!.raw as { id: string }).id, 'after');
});

test('an element over maxEventBytes is never held: yielded tooLarge with its range, its bytes copied exactly by copyEventBytes', async (t) => {
  t.timeout(120_000);
  // About 20 MiB of text in one string (base64, so it neither is a zip bomb nor compresses away).
  const huge = `{"id":"huge","conversationId":"c_1","type":"message","sentAt":"2026-11-23T08:00:00Z","senderId":"u_1","text":"${randomBytes(15 * 1024 * 1024).toString('base64')}"}`;
  const small = JSON.stringify(event('small'));
  const text = `[${small},\n${huge} , ${small}]`;
  const { archive, events } = await openWith(t, text, { maxEventBytes: 1024 * 1024 });
  t.is(events.length, 3);
  t.is(events[1]!.bytes, undefined);
  t.is(events[1]!.raw, undefined);
  t.deepEqual(events[1]!.tooLarge, { offset: text.indexOf(huge), length: huge.length });
  t.is(events[2]!.bytes!.toString(), small, 'the events after it are read as usual');
  const chunks: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk);
      done();
    },
  });
  await archive.copyEventBytes(events[1]!.position, events[1]!.tooLarge!, out);
  t.true(out.writableFinished);
  t.true(Buffer.concat(chunks).equals(Buffer.from(huge)), 'the exact bytes of the element');
  await t.throwsAsync(archive.copyEventBytes(events[1]!.position, { offset: text.length - 10, length: 100 }, new Writable()), { instanceOf: RangeError });
});

test('an element exactly at the cap is held; one byte over is not', async (t) => {
  const element = JSON.stringify(event('cap'));
  const cap = Buffer.byteLength(element);
  const at = await openWith(t, `[${element}]`, { maxEventBytes: cap });
  t.is(at.events[0]!.bytes!.toString(), element);
  const over = await openWith(t, `[${element}]`, { maxEventBytes: cap - 1 });
  t.deepEqual(over.events[0]!.tooLarge, { offset: 1, length: cap });
});

// The scanner itself, fed the same file cut into chunks of every size: the chunking never shows.

/** What the scanner visits in a chunk, as plain values (an element's text, or the CRC-32 of one over the cap). */
function scanned(scanner: JsonArrayScanner, chunk: Buffer) {
  const out: { index: number; offset: number; length: number; text?: string; crc32?: number }[] = [];
  scanner.scan(chunk, (bytes, from, to, index, offset, length, crc) => out.push(bytes ? { index, offset, length, text: bytes.toString('latin1', from, to) } : { index, offset, length, crc32: crc }));
  return out;
}

function scanAll(file: Buffer, chunkSizes: number[], max = Infinity) {
  const scanner = new JsonArrayScanner(max);
  const out: { index: number; offset: number; length: number; text?: string }[] = [];
  for (let at = 0, k = 0; at < file.length; k++) {
    const size = chunkSizes[k % chunkSizes.length]!;
    for (const e of scanned(scanner, file.subarray(at, at + size))) out.push({ index: e.index, offset: e.offset, length: e.length, text: e.text });
    at += size;
  }
  scanner.end();
  return out;
}

test('the scanner finds the same elements whatever the chunk boundaries (escapes, strings and nesting split anywhere)', (t) => {
  const values: unknown[] = [
    { id: 'a', text: 'back\\slash " quote ] } [ {', nested: { a: [1, { b: 'c\\' }], e: '\\"' } },
    'string "with" \\ escapes\\',
    '\\'.repeat(7) + '"' + '\\'.repeat(4) + '""\\"' + '\\'.repeat(3),
    { ['key \\"}]']: ['\\', '\\\\', '"', '\\"', 'x'.repeat(100)] },
    123.5e-7,
    -12,
    true,
    false,
    null,
    [],
    {},
    [[[['deep']]]],
    { u: '\u00e9\u{1f600}\u2028' },
    '',
  ];
  const texts = values.map((v) => JSON.stringify(v));
  const file = Buffer.from(`\ufeff [${texts.join(',\n ')}\t]\r\n`);
  const expected = texts.map((text, index) => ({ index, offset: file.indexOf(Buffer.from(text), file.indexOf('[')), length: Buffer.byteLength(text), text: Buffer.from(text).toString('latin1') }));
  // indexOf can find an earlier equal text; the offsets must be those of the elements in order.
  let from = 0;
  for (const e of expected) {
    e.offset = file.indexOf(Buffer.from(texts[e.index]!), from);
    from = e.offset + e.length;
  }
  for (const sizes of [[file.length], [1], [2], [3], [7], [1, 2, 3, 5, 8, 13], [64]]) {
    t.deepEqual(scanAll(file, sizes), expected, `chunks of ${sizes.join(',')}`);
  }
  for (const e of scanAll(file, [1])) t.deepEqual(JSON.parse(Buffer.from(e.text!, 'latin1').toString('utf8')), values[e.index]);
});

test('the scanner agrees with JSON.parse on random arrays cut at random places', (t) => {
  let seed = 12345;
  const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)]!;
  const text = () => Array.from({ length: Math.floor(random() * 12) }, () => pick(['"', '\\', 'a', '}', ']', '[', '{', ',', ' ', '\u00e9', '\n'])).join('');
  const value = (depth: number): unknown => {
    const kind = depth > 4 ? pick(['s', 'n', 'l']) : pick(['s', 'n', 'l', 'a', 'o']);
    if (kind === 's') return text();
    if (kind === 'n') return Math.round(random() * 1e6) / 100;
    if (kind === 'l') return pick([true, false, null]);
    if (kind === 'a') return Array.from({ length: Math.floor(random() * 4) }, () => value(depth + 1));
    return Object.fromEntries(Array.from({ length: Math.floor(random() * 4) }, () => [text(), value(depth + 1)]));
  };
  for (let round = 0; round < 300; round++) {
    const values = Array.from({ length: Math.floor(random() * 6) }, () => value(0));
    const file = Buffer.from(JSON.stringify(values, null, pick([0, 1, '\t'])));
    const sizes = Array.from({ length: 5 }, () => 1 + Math.floor(random() * pick([2, 8, 64])));
    const out = scanAll(file, sizes);
    t.deepEqual(out.map((e) => JSON.parse(Buffer.from(e.text!, 'latin1').toString('utf8'))), values, `round ${round}`);
  }
});

test('the scanner drops an element as soon as it is over the cap, keeps going to its end, and reports the bounds', (t) => {
  const big = JSON.stringify({ id: 'big', text: 'x'.repeat(1000) });
  const file = Buffer.from(`[1,${big},2]`);
  for (const sizes of [[file.length], [1], [10]]) {
    const out = scanAll(file, sizes, 100);
    t.deepEqual(out, [
      { index: 0, offset: 1, length: 1, text: '1' },
      { index: 1, offset: 3, length: big.length, text: undefined },
      { index: 2, offset: 4 + big.length, length: 1, text: '2' },
    ]);
  }
});

test('the scanner never recurses: 10 million levels of nesting in one element are just a counter', (t) => {
  const depth = 10_000_000;
  const file = Buffer.alloc(2 * depth + 2);
  file[0] = 0x5b;
  file.fill(0x5b, 1, depth + 1);
  file.fill(0x5d, depth + 1);
  const scanner = new JsonArrayScanner(64);
  const out = [...scanned(scanner, file.subarray(0, 5_000_003)), ...scanned(scanner, file.subarray(5_000_003))];
  scanner.end();
  t.deepEqual(out, [{ index: 0, offset: 1, length: 2 * depth, crc32: out[0]!.crc32 }]);
});

test('the scanner names the byte where a broken array breaks', (t) => {
  const scanner = new JsonArrayScanner(100);
  const error = t.throws(() => scanned(scanner, Buffer.from('[1, 2 3]')), { instanceOf: JsonArrayError });
  t.regex(error!.message, /at byte 6/);
});

test('events() honours backpressure (reads little ahead of its consumer) and stops reading once stop is aborted', async (t) => {
  const many = Array.from({ length: 60_000 }, (_, i) => event(`m_${i}`, { text: `message ${i} ${'x'.repeat(i % 200)}` }));
  const path = await writeArchive(join(await tempDir(t), 'x.zip'), { users, conversations, messages: { 'a.json': many, 'b.json': many.slice(0, 10) } });
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const stop = new AbortController();
  const stream = archive.events(stop.signal);
  const seen: SourceEvent[] = [];
  for await (const e of stream) {
    seen.push(e as SourceEvent);
    if (seen.length === 100) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      t.true(archive.messageBytesRead < archive.messageBytesTotal / 10, `read ${archive.messageBytesRead} of ${archive.messageBytesTotal} bytes for 100 events`);
      stop.abort();
    }
  }
  // Buffered: the high-water mark (64) and at most the rest of the batch (64) in which it was reached.
  t.true(seen.length >= 100 && seen.length <= 100 + 64 + 64, `${seen.length} events after the stop (only what was buffered)`);
  t.true(archive.messageBytesRead < archive.messageBytesTotal / 10);
  t.deepEqual(seen.map((e) => e.position.index).slice(0, 100), [...Array(100).keys()]);
});
