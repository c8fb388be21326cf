// What the Maildir sink finds under a message's name decides what it does: the same message is
// skipped, a torn or empty file is replaced, another complete version is kept and ours stored
// beside it; and a tmp/ file it did not make is never touched.
import test, { type ExecutionContext } from 'ava';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Delivery } from '../src/model.js';
import { createSink } from '../src/sinks/index.js';
import { maildirBaseName, maildirVariantName } from '../src/sinks/maildir/index.js';
import { chatDeliveries } from './helpers/chat.js';
import { tempDir } from './helpers/tmp.js';

const MAILBOX = 'jane@acme.example';

/** Event `m_<n>` as export `exportId` builds it, with `text` (a corrected event has other text). */
function event(n: number, exportId = 'first-export', text = `message number ${n}`, day = '2026-11-23'): Delivery {
  const sentAt = new Date(Date.parse(`${day}T10:00:00Z`) + n * 10_000).toISOString();
  return chatDeliveries({ id: `m_${n}`, sentAt, text, exportId, index: n, conversation: { id: 'c_1', name: 'Presence' }, sender: { id: 'u_1', displayName: 'Jane', email: MAILBOX } }, [MAILBOX])[0]!;
}

async function writeAll(root: string, deliveries: Delivery[]): Promise<string[]> {
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  const outcomes = await Promise.all(deliveries.map(async (d) => (await sink.write(d)).outcome));
  await sink.close();
  return outcomes;
}

async function folderOf(root: string): Promise<{ cur: string; tmp: string }> {
  const folder = join(root, MAILBOX, '.INBOX.Pivot');
  for (const sub of ['cur', 'new', 'tmp']) await mkdir(join(folder, sub), { recursive: true });
  return { cur: join(folder, 'cur'), tmp: join(folder, 'tmp') };
}

test('maildir presence: an empty file, or one of NUL bytes only, under a message\'s name is replaced by the complete message; the start of ours is another version, kept, ours stored beside it', async (t) => {
  const root = await tempDir(t);
  const { cur } = await folderOf(root);
  const [empty, zeros, prefix, whole] = [1, 2, 3, 4].map((n) => event(n));
  // As a crash can leave them (a file system that lost the data: nothing, or NUL bytes).
  await writeFile(join(cur, `${maildirBaseName(empty!)}:2,S`), '');
  await writeFile(join(cur, `${maildirBaseName(zeros!)}:2,S`), Buffer.alloc(100));
  // A complete earlier version that a corrected re-delivery only added text to the end of: never overwritten.
  const start = prefix!.message.subarray(0, Math.floor(prefix!.message.length / 2));
  await writeFile(join(cur, `${maildirBaseName(prefix!)}:2,S`), start);
  await writeFile(join(cur, `${maildirBaseName(whole!)}:2,S`), whole!.message);
  const wholeInode = (await stat(join(cur, `${maildirBaseName(whole!)}:2,S`))).ino;
  t.deepEqual(await writeAll(root, [empty!, zeros!, prefix!, whole!]), ['delivered', 'delivered', 'delivered', 'skipped']);
  t.deepEqual((await readdir(cur)).sort(), [...[empty!, zeros!, prefix!, whole!].map((d) => `${maildirBaseName(d)}:2,S`), `${maildirVariantName(prefix!)}:2,S`].sort());
  for (const d of [empty!, zeros!, whole!]) t.true((await readFile(join(cur, `${maildirBaseName(d)}:2,S`))).equals(d.message), d.itemId);
  t.true((await readFile(join(cur, `${maildirBaseName(prefix!)}:2,S`))).equals(start), 'the earlier version is left as it was');
  t.true((await readFile(join(cur, `${maildirVariantName(prefix!)}:2,S`))).equals(prefix!.message));
  t.is((await stat(join(cur, `${maildirBaseName(whole!)}:2,S`))).ino, wholeInode, 'the complete file is left as it was');
  t.deepEqual(await writeAll(root, [empty!, zeros!, prefix!, whole!]), ['skipped', 'skipped', 'skipped', 'skipped']);
});

/**
 * Event `m_<n>` as first exported, delivered into a new root, and its correction by a re-export
 * (same Message-ID and second, other text), not delivered yet.
 */
async function originalDelivered(t: ExecutionContext, n: number) {
  const root = await tempDir(t);
  const { cur } = await folderOf(root);
  const original = event(n, 'first-export', 'the original text');
  const corrected = event(n, 'correcting-export', 'the corrected text');
  t.deepEqual(await writeAll(root, [original]), ['delivered']);
  return { root, cur, original, corrected };
}

test('maildir presence: another complete version under the same identity is kept, ours is stored beside it, and a re-run finds both', async (t) => {
  const { root, cur, original, corrected } = await originalDelivered(t, 1);
  const originalName = `${maildirBaseName(original)}:2,S`;
  const originalInode = (await stat(join(cur, originalName))).ino;
  t.deepEqual(await writeAll(root, [corrected]), ['delivered']);
  const names = (await readdir(cur)).sort();
  t.is(names.length, 2);
  t.true(names.includes(originalName));
  const beside = names.find((n) => n !== originalName)!;
  // Named from the identity plus a short hash of the content: the same second, the same key.
  t.regex(beside, new RegExp(`^${maildirBaseName(original).replace(/\.pivot-archive$/, '').replace(/\./g, '\\.')}\\.C[0-9a-f]{16}\\.pivot-archive:2,S$`));
  t.is((await stat(join(cur, originalName))).ino, originalInode, 'the original is never overwritten');
  t.true((await readFile(join(cur, originalName))).equals(original.message));
  t.true((await readFile(join(cur, beside))).equals(corrected.message));
  // A re-run of either export finds its own version, whatever flags a client gave them since.
  await rename(join(cur, beside), join(cur, beside.replace(/:2,S$/, ':2,FS')));
  t.deepEqual(await writeAll(root, [original, corrected]), ['skipped', 'skipped']);
  t.deepEqual(await writeAll(root, [corrected, original]), ['skipped', 'skipped']);
  t.is((await readdir(cur)).length, 2);
});

test('maildir presence: a corrected event whose original a client renamed is stored beside it, never under a second copy of the original\'s name', async (t) => {
  const { root, cur, original, corrected } = await originalDelivered(t, 2);
  const base = maildirBaseName(original);
  await rename(join(cur, `${base}:2,S`), join(cur, `${base}:2,FS`));
  t.deepEqual(await writeAll(root, [corrected]), ['delivered']);
  const names = (await readdir(cur)).sort();
  t.is(names.length, 2);
  t.true(names.includes(`${base}:2,FS`));
  t.false(names.includes(`${base}:2,S`), 'two files of one base name would be one message to Dovecot');
  t.deepEqual(await writeAll(root, [original, corrected]), ['skipped', 'skipped']);
});

test('maildir presence: the same event exported again under another export id is the message already held, not a new version', async (t) => {
  const root = await tempDir(t);
  const { cur } = await folderOf(root);
  t.deepEqual(await writeAll(root, [event(1, 'first-export'), event(2, 'first-export')]), ['delivered', 'delivered']);
  // Only X-Pivot-Export-Id differs (and so the size).
  t.deepEqual(await writeAll(root, [event(1, 'a-much-longer-export-id-2026-11-24'), event(2, 'x')]), ['skipped', 'skipped']);
  t.is((await readdir(cur)).length, 2);
});

test('maildir presence: a tmp/ file the sink did not make is never removed or replaced (another writer may be writing it)', async (t) => {
  const root = await tempDir(t);
  const { tmp, cur } = await folderOf(root);
  const d = event(4);
  // Another run's live temporary file under the name every earlier version used for this message.
  await writeFile(join(tmp, maildirBaseName(d)), 'being written by another run');
  t.deepEqual(await writeAll(root, [d]), ['delivered']);
  t.is(await readFile(join(tmp, maildirBaseName(d)), 'utf8'), 'being written by another run');
  t.true((await readFile(join(cur, `${maildirBaseName(d)}:2,S`))).equals(d.message));
});

test('maildir presence: a file a client renames again during a run (after the folder was listed) is still found, not delivered twice', async (t) => {
  const root = await tempDir(t);
  const { cur } = await folderOf(root);
  const [first, second] = [event(1), event(2)];
  t.deepEqual(await writeAll(root, [first!]), ['delivered']);
  const base = maildirBaseName(first!);
  await rename(join(cur, `${base}:2,S`), join(cur, `${base}:2,FS`));
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  t.is((await sink.write(second!)).outcome, 'delivered'); // the folder is listed now: it remembers `:2,FS`
  await rename(join(cur, `${base}:2,FS`), join(cur, `${base}:2,FRS`));
  t.is((await sink.write(first!)).outcome, 'skipped');
  await sink.close();
  t.deepEqual((await readdir(cur)).sort(), [`${base}:2,FRS`, `${maildirBaseName(second!)}:2,S`].sort());
});

/** A sink over `root`, opened; `write` gives outcome and location; `close` closes it. */
async function openSink(root: string) {
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  return sink;
}

test('maildir presence: files of ours a client renames for the first time during a re-run, after the folder was listed, are found, not delivered twice', async (t) => {
  const root = await tempDir(t);
  const { cur } = await folderOf(root);
  const folder = join(cur, '..');
  const items = [1, 2, 3, 4].map((n) => event(n));
  t.deepEqual(await writeAll(root, items), ['delivered', 'delivered', 'delivered', 'delivered']);
  const sink = await openSink(root);
  t.is((await sink.write(items[3]!)).outcome, 'skipped'); // the folder is listed now, every file as `:2,S`
  const [flagged, unseen, removed] = items.map((d) => maildirBaseName(d));
  await rename(join(cur, `${flagged}:2,S`), join(cur, `${flagged}:2,FS`));
  await rename(join(cur, `${unseen}:2,S`), join(folder, 'new', unseen!));
  // A message the user deleted during the run is delivered again (as a re-run after the deletion would).
  await rm(join(cur, `${removed}:2,S`));
  const outcomes = await Promise.all(items.slice(0, 3).map((d) => sink.write(d)));
  await sink.close();
  t.deepEqual(outcomes, [
    { outcome: 'skipped', location: `${MAILBOX}/.INBOX.Pivot/cur/${flagged}:2,FS` },
    { outcome: 'skipped', location: `${MAILBOX}/.INBOX.Pivot/new/${unseen}` },
    { outcome: 'delivered', location: `${MAILBOX}/.INBOX.Pivot/cur/${removed}:2,S` },
  ]);
  t.is((await readdir(cur)).length + (await readdir(join(folder, 'new'))).length, 4, 'each item once');
});

test('maildir presence: a file of another day than the run\'s first, renamed during the run, is found (the folder listed again for that day)', async (t) => {
  const root = await tempDir(t);
  const { cur } = await folderOf(root);
  // Two days ago's items are there; nothing of today's: the folder is kept as `Ready` after its listing.
  const earlier = [1, 2].map((n) => event(n, 'earlier-export', undefined, '2026-11-21'));
  t.deepEqual(await writeAll(root, earlier), ['delivered', 'delivered']);
  const sink = await openSink(root);
  t.is((await sink.write(event(1))).outcome, 'delivered');
  const base = maildirBaseName(earlier[0]!);
  await rename(join(cur, `${base}:2,S`), join(cur, `${base}:2,FS`));
  t.deepEqual(await sink.write(earlier[0]!), { outcome: 'skipped', location: `${MAILBOX}/.INBOX.Pivot/cur/${base}:2,FS` });
  // Listed again for 2026-11-21: the other item of that day, renamed after that listing, is found too.
  const other = maildirBaseName(earlier[1]!);
  await rename(join(cur, `${other}:2,S`), join(cur, `${other}:2,RS`));
  t.deepEqual(await sink.write(earlier[1]!), { outcome: 'skipped', location: `${MAILBOX}/.INBOX.Pivot/cur/${other}:2,RS` });
  await sink.close();
  t.is((await readdir(cur)).length, 3);
});

test('maildir presence: a corrected version stored beside the original, renamed during a re-run, is found, not stored twice', async (t) => {
  const { root, cur, original, corrected } = await originalDelivered(t, 3);
  t.deepEqual(await writeAll(root, [corrected]), ['delivered']);
  const sink = await openSink(root);
  t.is((await sink.write(original)).outcome, 'skipped');
  const variant = (await readdir(cur)).find((name) => name.includes('.C'))!;
  await rename(join(cur, variant), join(cur, variant.replace(/:2,S$/, ':2,FS')));
  t.is((await sink.write(corrected)).outcome, 'skipped');
  await sink.close();
  t.is((await readdir(cur)).length, 2);
});

test('maildir presence: many new items of many days at once into a folder holding files of ours are all delivered (each day listed, no write refused)', async (t) => {
  const root = await tempDir(t);
  const { cur } = await folderOf(root);
  t.deepEqual(await writeAll(root, [event(1)]), ['delivered']);
  // A backfill: twelve days, every other one, all in flight together.
  const days = Array.from({ length: 12 }, (_, i) => new Date(Date.parse('2026-10-01T00:00:00Z') + 2 * i * 86_400_000).toISOString().slice(0, 10));
  const items = days.map((day, i) => event(100 + i, 'backfill', undefined, day));
  t.deepEqual(await writeAll(root, items), items.map(() => 'delivered'));
  t.deepEqual(await writeAll(root, [...items, event(1)]), [...items, event(1)].map(() => 'skipped'));
  t.is((await readdir(cur)).length, 13);
});
