// Duplicate event ids (found with 8 bytes an event, marked on every later use), and membership
// changed only by join/leave events that would be delivered.
import test from 'ava';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { SourceEvent } from '../src/model.js';
import { PivotExportArchive, plainId } from '../src/sources/pivot-zip/index.js';
import { IdHashes } from '../src/sources/pivot-zip/id-hashes.js';
import { idKey } from '../src/hash.js';
import { isRejection } from '../src/model.js';
import { validateEvent } from '../src/transforms/validate/index.js';
import { expectedPairs } from './helpers/reference.js';
import { writeArchive, type Fixture } from './helpers/archive.js';
import { tempDir } from './helpers/tmp.js';

const users = ['u_1', 'u_2', 'u_3', 'u_4', 'u_5', 'u_6'].map((id) => ({ id, displayName: id, email: `${id.replace('_', '')}@acme.example` }));
const conversations = [
  { id: 'c_1', type: 'room', name: 'Rates', members: ['u_1', 'u_2'] },
  { id: 'c_2', type: 'room', name: 'FX', members: ['u_1'] },
];
const clock = Date.parse('2026-11-23T08:00:00Z');
const at = (minute: number) => new Date(clock + minute * 60_000).toISOString();
const message = (id: unknown, minute: number, extra: Record<string, unknown> = {}) => ({ id, conversationId: 'c_1', type: 'message', sentAt: at(minute), senderId: 'u_1', text: `text ${String(id)}`, ...extra });
const change = (type: 'join' | 'leave', id: string, minute: number, extra: Record<string, unknown> = {}) => ({ id, conversationId: 'c_1', type, sentAt: at(minute), senderId: 'u_1', ...extra });

async function open(t: import('ava').ExecutionContext, messages: Fixture['messages']) {
  const path = await writeArchive(join(await tempDir(t), 'x.zip'), { users, conversations, messages });
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  return archive;
}

async function all(archive: PivotExportArchive): Promise<SourceEvent[]> {
  const out: SourceEvent[] = [];
  for await (const e of archive.events()) out.push(e as SourceEvent);
  return out;
}

const duplicates = (events: SourceEvent[]) => events.filter((e) => e.duplicateOf).map((e) => ({ at: e.position, first: e.duplicateOf }));

test('two different events with one id in one file: the later one carries duplicateOf (the first one\'s position)', async (t) => {
  const archive = await open(t, { 'a.json': [message('m_1', 0), message('dup', 1), message('m_3', 2), message('dup', 3, { text: 'another text' }), message('dup', 4)] });
  const events = await all(archive);
  t.deepEqual(duplicates(events), [
    { at: { file: 0, index: 3 }, first: { file: 0, index: 1 } },
    { at: { file: 0, index: 4 }, first: { file: 0, index: 1 } },
  ]);
  // events() always reads from the start (a resumed run filters afterwards): the same marks again.
  t.deepEqual(duplicates(await all(archive)), duplicates(events));
  const rejected = validateEvent(archive, events[3]!);
  t.true(isRejection(rejected) && rejected.reason === 'duplicate-id');
  t.false(isRejection(validateEvent(archive, events[1]!)));
});

test('an id reused across two messages files is a duplicate of the one in the earlier file (name order)', async (t) => {
  const archive = await open(t, { 'b.json': [message('m_b', 5), message('shared', 6)], 'a.json': [message('shared', 9), message('m_a', 10)] });
  t.deepEqual(duplicates(await all(archive)), [{ at: { file: 1, index: 1 }, first: { file: 0, index: 0 } }]);
});

test('ids that are not strings are never duplicates (the validator rejects them as missing-field:id)', async (t) => {
  const archive = await open(t, { 'a.json': [message(7, 0), message(7, 1), message('7', 2), message({ a: 1 }, 3), message({ a: 1 }, 4), message(null, 5), message(null, 6), message('7', 7)] });
  const events = await all(archive);
  t.deepEqual(duplicates(events), [{ at: { file: 0, index: 7 }, first: { file: 0, index: 2 } }]);
  const rejected = validateEvent(archive, events[1]!);
  t.true(isRejection(rejected) && rejected.reason === 'missing-field:id');
});

test('among 100,000 distinct ids, only the reused ones are marked', async (t) => {
  const many = Array.from({ length: 100_000 }, (_, i) => message(`m_${i}`, 0));
  many.push(message('m_99999', 1), message('m_0', 2), message('m_5000', 3));
  const archive = await open(t, { 'a.json': many });
  t.deepEqual(duplicates(await all(archive)), [
    { at: { file: 0, index: 100_000 }, first: { file: 0, index: 99_999 } },
    { at: { file: 0, index: 100_001 }, first: { file: 0, index: 0 } },
    { at: { file: 0, index: 100_002 }, first: { file: 0, index: 5000 } },
  ]);
});

test('id hashes kept in chunks, the full ones written to a temporary file: an id repeated within a chunk, across chunks, or three times is found; the others are not; nothing is left behind', async (t) => {
  const dir = await tempDir(t);
  // Chunks of 3 hashes: a repeat within the first chunk, across neighbouring and distant chunks, one in the last partial chunk.
  const ids = ['a', 'b', 'a', 'c', 'd', 'e', 'b', 'f', 'g', 'h', 'i', 'j', 'c', 'k', 'c', 'l'];
  const hashes = new IdHashes(3, dir);
  t.deepEqual(ids.map((id) => hashes.push(id)), ids.map(idKey));
  t.deepEqual([...hashes.repeated()].sort(), ['a', 'b', 'c'].map(idKey).sort());
  // The same as a plain set, over many chunks (each read back in several windows).
  const many = new IdHashes(10_000, dir);
  const seen = new Set<string>();
  const reused = new Set<number>();
  for (let i = 0; i < 50_000; i++) {
    const id = `m_${(i * 7919) % 47_000}`;
    many.push(id);
    if (seen.has(id)) reused.add(idKey(id));
    seen.add(id);
  }
  t.is(reused.size, 3000);
  t.deepEqual([...many.repeated()].sort(), [...reused].sort());
  t.deepEqual([...new IdHashes(3, dir).repeated()], []);
  t.deepEqual(await readdir(dir), [], 'the temporary file is gone');
});

test('id hashes that cannot be written to the temporary directory fail with E_TEMPORARY naming it', (t) => {
  const missing = join('/nonexistent-pivot-archive-tmp', 'x');
  const hashes = new IdHashes(2, missing);
  hashes.push('a');
  hashes.push('b');
  const err = t.throws(() => hashes.push('c'));
  t.is((err as { code?: string }).code, 'E_TEMPORARY');
  t.true(err!.message.includes(missing), err!.message);
});

test('the plain id of an element within a chunk is read from its bounds alone: a pattern of the next element never counts for it', (t) => {
  const elements = ['{"id":"a","t":"x"}', '{"id":"b","text":"line\\nbreak"}', '{"id":"c","t":"y"}', '{"id":"d","type":"join"}', '{"id":"e","t":"z"}', '{"id":"f","id":"g"}', '{"id":"h"}', '{"id":"i","type":"leave"}', '{"id":"j"}'];
  const chunk = Buffer.from(`[${elements.join(',')}]`);
  const ids = [];
  for (let from = 1, k = 0; k < elements.length; k++) {
    const to = from + Buffer.byteLength(elements[k]!);
    ids.push(plainId(chunk, from, to));
    from = to + 1;
  }
  t.deepEqual(ids, ['a', undefined, 'c', undefined, 'e', undefined, 'h', undefined, 'j']);
  // The same elements each alone agree.
  t.deepEqual(elements.map((e) => plainId(Buffer.from(e))), ids);
});

test('the checking pass reads an id from the bytes only when they plainly say it; a repeated key, an escape, a non-ASCII id or a join/leave is parsed', (t) => {
  t.is(plainId(Buffer.from('{"id":"m_1","type":"message","text":"hi"}')), 'm_1');
  for (const element of [
    '{"id":"x","text":"t","id":"dup"}', // JSON.parse keeps the last id
    '{"id":"d\\u0075p","type":"message"}', // an escape in the id
    '{"id":"x","text":"say \\"hi\\""}', // an escape anywhere
    '{"id":"düp","type":"message"}', // not ASCII
    '{"id":"j","type":"join"}',
    '{"id":"l","type":"leave"}',
    '{ "id":"x"}',
    '{"type":"message","id":"x"}',
    '{"id":"x',
  ]) t.is(plainId(Buffer.from(element)), undefined, element);
});

test('duplicates and membership are the same whatever path the checking pass takes for an event', async (t) => {
  const line = (fields: string) => `{"id":${fields},"conversationId":"c_1","sentAt":"${at(1)}","senderId":"u_1"}`;
  const bytes = `[${[
    line('"dup","type":"message"'),
    line('"x","type":"message","id":"dup"'), // parsed: its id is the last one, dup
    line('"d\\u0075p","type":"message"'), // parsed: dup, escaped
    line('"düp","type":"message"'),
    line('"düp","type":"message"'), // a non-ASCII id, repeated
    line('"j_raw","type":"join","memberId":"u_6"'),
    line('"late","type":"message"'),
  ].join(',\n')}]`;
  const path = await writeArchive(join(await tempDir(t), 'raw.zip'), { users, conversations, messages: {}, extra: { 'messages/a.json': bytes } });
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  t.deepEqual(duplicates(await all(archive)), [
    { at: { file: 0, index: 1 }, first: { file: 0, index: 0 } },
    { at: { file: 0, index: 2 }, first: { file: 0, index: 0 } },
    { at: { file: 0, index: 4 }, first: { file: 0, index: 3 } },
  ]);
  t.true([...archive.membership.membersAt('c_1', { time: Date.parse(at(1)), subMs: 0, file: 0, index: 6 })].includes('u_6'));
});

test('only join/leave events the validator accepts, first of their id, change membership', async (t) => {
  const file0 = [
    message('m_0', 0),
    change('join', 'j_bad_sender', 1, { senderId: 'u_nobody', memberId: 'u_3' }), // unknown sender
    change('join', 'j_bad_member', 2, { memberId: 'u_ghost' }), // unknown member
    change('join', 'j_bad_date', 3, { memberId: 'u_4', sentAt: '2026-02-31T10:00:00Z' }), // impossible date (Date.parse says March 3)
    change('join', 'm_0', 4, { memberId: 'u_5' }), // reuses the id of m_0: rejected duplicate-id
    change('join', 'j_bad_conversation', 5, { conversationId: 'c_nowhere', memberId: 'u_6' }),
    change('join', 'j_no_zone', 6, { memberId: 'u_6', sentAt: '2026-11-23T08:06:00' }), // no zone: invalid
    change('leave', 'l_no_time', 7, { memberId: 'u_1', sentAt: undefined }),
    change('join', 'j_ok', 8, { senderId: 'u_3' }), // valid: u_3 joins
    change('leave', 'l_ok', 9, { memberId: 'u_2' }), // valid: u_2 leaves
    change('join', 'j_other_room', 10, { conversationId: 'c_2', memberId: 'u_4' }), // valid, in c_2
    message('m_11', 20),
  ];
  const file1 = [
    change('join', 'j_ok', 11, { memberId: 'u_5' }), // reuses j_ok's id: the first counts, this one does not
    change('leave', 'm_11', 12, { memberId: 'u_3' }), // reuses a message's id, in a later file
    message('m_late', 30),
  ];
  const archive = await open(t, { 'a.json': file0, 'b.json': file1 });
  const late = { time: Date.parse(at(30)), subMs: 0, file: 1, index: 2 };
  // A hand-made expectation (the shared reference in test/helpers/reference.ts knows none of
  // these rules: it applies every join/leave with a parsable date, see below).
  t.deepEqual([...archive.membership.membersAt('c_1', late)].sort(), ['u_1', 'u_3']);
  t.deepEqual([...archive.membership.membersAt('c_2', late)].sort(), ['u_1', 'u_4']);
  t.deepEqual([...archive.membership.membersAt('c_nowhere', late)], []);
  t.deepEqual([...archive.membership.membersAt('c_1', { time: Date.parse(at(8)), subMs: 0, file: 0, index: 8 })].sort(), ['u_1', 'u_2'], 'before the valid join');

  // Delivery agrees: the last message goes to the members it computes, the bad join/leave are rejected.
  const events = await all(archive);
  const outcome = new Map(events.map((e) => [`${e.position.file}:${e.position.index}`, validateEvent(archive, e)]));
  const lastItem = outcome.get('1:2')!;
  t.false(isRejection(lastItem));
  if (!isRejection(lastItem)) t.deepEqual(lastItem.participants.map((u) => u.id).sort(), ['u_1', 'u_3']);
  const rejected = [...outcome.entries()].filter(([, o]) => isRejection(o)).map(([k, o]) => `${k} ${isRejection(o) ? o.reason : ''}`);
  t.deepEqual(rejected, ['0:1 unknown-user', '0:2 unknown-user', '0:3 invalid-field:sentAt', '0:4 duplicate-id', '0:5 unknown-conversation', '0:6 invalid-field:sentAt', '0:7 missing-field:sentAt', '1:0 duplicate-id', '1:1 duplicate-id']);

  // The naive reference would still route the last message to u_4, u_5, u_6 (and not to u_3, left by a duplicate).
  const reference = expectedPairs(users, conversations, [file0, file1]).filter((pair) => pair.endsWith(' m_late'));
  t.notDeepEqual(reference, ['u1@acme.example m_late', 'u3@acme.example m_late']);
});

test('an export of 120 messages files: every event counted in order, an id reused 110 files later marked, a join in one file counted for events in later ones', async (t) => {
  const messages: Fixture['messages'] = {};
  for (let f = 0; f < 120; f++) messages[`f${String(f).padStart(3, '0')}.json`] = Array.from({ length: 40 }, (_, i) => message(`m_${f}_${i}`, f));
  messages['f005.json']!.push(message('reused', 5));
  messages['f115.json']!.push(message('reused', 115));
  messages['f050.json']!.push(change('join', 'j_1', 50, { memberId: 'u_3' }));
  const archive = await open(t, messages);
  t.is(archive.eventCount, 120 * 40 + 3);
  const events = await all(archive);
  t.deepEqual(events.map((e) => (e.raw as { id: string }).id), Object.values(messages).flat().map((e) => (e as { id: string }).id));
  t.deepEqual(duplicates(events), [{ at: { file: 115, index: 40 }, first: { file: 5, index: 40 } }]);
  t.false([...archive.membersAt('c_1', { time: Date.parse(at(49)), subMs: 0, file: 49, index: 0 })].includes('u_3'));
  t.true([...archive.membersAt('c_1', { time: Date.parse(at(100)), subMs: 0, file: 100, index: 0 })].includes('u_3'));
});

test('two broken messages files: the first in name order is the one named', async (t) => {
  // a.json is long and breaks at its very end; b.json breaks at its first byte.
  const long = JSON.stringify(Array.from({ length: 20_000 }, (_, i) => message(`m_${i}`, 0)));
  const path = await writeArchive(join(await tempDir(t), 'x.zip'), { users, conversations, messages: {}, extra: { 'messages/a.json': long.slice(0, -1), 'messages/b.json': 'oops' } });
  const err = await t.throwsAsync(PivotExportArchive.open({ path }));
  t.regex(err!.message, /messages\/a\.json is not a JSON array of events: the array is not closed/);
});

test('an id with a lone surrogate (valid JSON, not well-formed Unicode) is rejected invalid-field:id: two such ids would share one Message-ID', async (t) => {
  const archive = await open(t, { 'a.json': [message('m_\ud800', 0), message('m_\udbff', 0), message('m_\ud83d\ude00', 0)] });
  const [first, second, paired] = (await all(archive)).map((e) => validateEvent(archive, e));
  for (const lone of [first, second]) t.like(lone, { reason: 'invalid-field:id' });
  t.regex((first as { detail: string }).detail, /not well-formed Unicode/);
  t.false(isRejection(paired!), 'a surrogate pair (an emoji) is well-formed');
});
