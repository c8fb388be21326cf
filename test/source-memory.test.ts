// What an open archive keeps in memory for the run: the first pass's working lists go when open()
// returns. Checked in a heap snapshot (V8's own count of what is reachable), not by our code.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { getHeapSnapshot } from 'node:v8';
import { join } from 'node:path';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { writeArchive } from './helpers/archive.js';
import { tempDir } from './helpers/tmp.js';

/** The heap snapshot's text: its strings table holds every string still reachable. */
async function heapText(): Promise<string> {
  const chunks: string[] = [];
  for await (const chunk of getHeapSnapshot()) chunks.push(String(chunk));
  return chunks.join('');
}

/**
 * The strings matching `pattern` that stay reachable, looked for until none is or for about 4 s:
 * what the code that just ran left in V8's handles, or a stream's callbacks not yet let go on a
 * busy machine, goes within a few turns of the event loop; what is kept for the run does not.
 */
async function reachable(pattern: RegExp): Promise<string[]> {
  let found: string[] = [];
  for (let look = 0; look < 40; look++) {
    await sleep(look === 0 ? 20 : 100);
    found = (await heapText()).match(pattern) ?? [];
    if (found.length === 0) break;
  }
  return found;
}

/**
 * An archive of 400 joins and leaves (ids `membership-change-N`) and then one message, written
 * from a scope of its own so that none of its strings stays reachable from the test.
 */
async function archiveOfChanges(dir: string): Promise<string> {
  const users = Array.from({ length: 20 }, (_, i) => ({ id: `u_${i}`, displayName: `User ${i}`, email: `user${i}@acme.example` }));
  const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_0'] }];
  const changes = Array.from({ length: 400 }, (_, i) => ({
    id: `membership-change-${i}`,
    conversationId: 'c_1',
    type: i % 2 === 0 ? 'join' : 'leave',
    sentAt: `2026-11-23T08:${String(Math.floor(i / 60)).padStart(2, '0')}:${String(i % 60).padStart(2, '0')}Z`,
    senderId: `u_${1 + (Math.floor(i / 2) % 19)}`,
  }));
  const message = { id: 'after-the-changes', conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_0', text: 'hello' };
  return writeArchive(join(dir, 'pivot.zip'), { users, conversations, messages: { 'a.json': [...changes, message] } });
}

test('the join/leave events of the first pass are not kept while the archive is open (only the membership timeline is)', async (t) => {
  const path = await archiveOfChanges(await tempDir(t));
  t.deepEqual(await reachable(/membership-change-\d+/g), [], 'the fixture itself keeps none of the ids');
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  t.deepEqual(await reachable(/membership-change-\d+/g), [], 'event ids of join/leave events are still reachable after open()');
  // The timeline itself still answers: every join was followed by its leave, so only u_0 remains.
  t.deepEqual([...archive.membership.membersAt('c_1', { time: Date.parse('2026-11-23T09:00:00Z'), subMs: 0, file: 0, index: 400 })], ['u_0']);
});
