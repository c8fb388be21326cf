// Whether an id is one of the archive's events' ids (asked by the plugin stage of the ids plugins
// give items): the first pass's hashes, merged, sorted, each once, looked up a block at a time.
import test from 'ava';
import { mkdir, readdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { hash64, lastHash } from '../src/hash.js';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { IdHashes } from '../src/sources/pivot-zip/id-hashes.js';
import { writeArchive } from './helpers/archive.js';
import { tempDir } from './helpers/tmp.js';

/** Hashes in a block of the merged file (4 KiB), as id-hashes.ts writes them. */
const BLOCK = 512;

/** The 64-bit value an id's hash is sorted by: its two words as they stand in memory. */
function sortValue(id: string): bigint {
  hash64(id);
  return new BigUint64Array(new Uint32Array([lastHash.low, lastHash.high]).buffer)[0]!;
}

/** Ids not among `present` whose hash sorts below all of theirs, above all, and between. */
function absent(present: readonly string[]): { below: string; above: string; between: string[] } {
  const values = present.map(sortValue);
  const least = values.reduce((a, b) => (a < b ? a : b));
  const most = values.reduce((a, b) => (a > b ? a : b));
  let below: string | undefined;
  let above: string | undefined;
  const between: string[] = [];
  for (let i = 0; below === undefined || above === undefined || between.length < 100; i++) {
    const id = `absent_${i}`;
    const value = sortValue(id);
    if (value < least) below ??= id;
    else if (value > most) above ??= id;
    else if (between.length < 100) between.push(id);
  }
  return { below, above, between };
}

test('the merged hashes of several chunk files: every id pushed is found (the first and last hash, either side of each block edge), no other', async (t) => {
  const dir = await tempDir(t);
  // Chunks of 700 hashes, so the merged blocks of 512 straddle them; ids repeated within and across chunks shift the blocks.
  const hashes = new IdHashes(700, dir);
  const distinct = Array.from({ length: 5000 }, (_, i) => `m_${i}`);
  const pushed = [...distinct, 'm_7', 'm_4999', 'm_0', 'm_2500', 'm_2500'];
  for (const id of pushed) hashes.push(id);
  t.is(hashes.repeated().size, 4);
  const sorted = [...distinct].sort((a, b) => (sortValue(a) < sortValue(b) ? -1 : 1));
  const edges = [0, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK - 1, 2 * BLOCK, 9 * BLOCK - 1, 9 * BLOCK, sorted.length - 1];
  for (const at of edges) t.true(hashes.has(sorted[at]!), `the id at ${at} in hash order`);
  t.true(distinct.every((id) => hashes.has(id)));
  const { below, above, between } = absent(distinct);
  t.false(hashes.has(below), 'below the first hash');
  t.false(hashes.has(above), 'above the last hash');
  for (const id of between) t.false(hashes.has(id), id);
  hashes.close();
  t.throws(() => hashes.has('m_0'), { message: /closed/ });
  t.deepEqual(await readdir(dir), [], 'nothing is left behind');
});

test('a day that fills no chunk is looked up in memory; a day of no ids has none', (t) => {
  const hashes = new IdHashes(100, '/nonexistent-pivot-archive-tmp');
  const ids = Array.from({ length: 60 }, (_, i) => `m_${i}`);
  for (const id of [...ids, 'm_3']) hashes.push(id);
  t.is(hashes.repeated().size, 1);
  t.true(ids.every((id) => hashes.has(id)));
  const { below, above, between } = absent(ids);
  t.false([below, above, ...between].some((id) => hashes.has(id)));
  hashes.close();
  const none = new IdHashes(100, '/nonexistent-pivot-archive-tmp');
  t.is(none.repeated().size, 0);
  t.false(none.has('m_0'));
  t.false(none.has(''));
  none.close();
});

test('merged hashes that cannot be written to the temporary directory fail with E_TEMPORARY naming it', async (t) => {
  const dir = join(await tempDir(t), 'gone');
  await mkdir(dir);
  const hashes = new IdHashes(2, dir);
  for (const id of ['a', 'b', 'c']) hashes.push(id);
  // The chunk was written; the directory goes before the merge makes its own file there.
  await rmdir(dir);
  const err = t.throws(() => hashes.repeated());
  t.is((err as { code?: string }).code, 'E_TEMPORARY');
  t.true(err!.message.includes(dir), err!.message);
  t.throws(() => hashes.has('a'), { message: /closed/ });
});

test('the archive says which ids its events have: plain, parsed (an escape, a join) or repeated; not ids that are no string, nor any other', async (t) => {
  const dir = await tempDir(t);
  const event = (id: unknown, extra: Record<string, unknown> = {}) => ({ id, conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_1', text: 'hi', ...extra });
  const path = await writeArchive(join(dir, 'x.zip'), {
    users: [{ id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' }],
    conversations: [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1'] }],
    messages: {
      'a.json': [event('m_1'), event('d\u00fcp'), event('say "hi"'), event('j_1', { type: 'join', memberId: 'u_1' })],
      'b.json': [event('m_1'), event(7), event({ id: 'nested' }), event('m_2')],
    },
  });
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  for (const id of ['m_1', 'd\u00fcp', 'say "hi"', 'j_1', 'm_2']) t.true(archive.hasEventId(id), id);
  for (const id of ['7', 'nested', 'm_3', 'M_1', '', 'dup']) t.false(archive.hasEventId(id), id);
});
