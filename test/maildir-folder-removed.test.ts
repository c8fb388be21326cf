// The Maildir sink's folder removed during the run (src/sinks/maildir/SPEC.md, "A folder removed
// during the run"): rm -rf of the Pivot folder or of the whole mailbox, or the folder removed and
// made again at the same path (a client, Dovecot, another writer). Before, the first case failed
// every later item of the mailbox with a bare ENOENT (the run's checkpoint then kept, so a re-run
// skipped what went with the folder), and the last one stored into the new folder as if nothing
// had happened. Now the write that finds it so fails as storage lost, and the next one stores into
// the folder made anew. (The whole run across such a removal: test/folder-deleted-midrun.test.ts.)
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createSink } from '../src/sinks/index.js';
import { maildirBaseName, mailboxFolderName } from '../src/sinks/maildir/index.js';
import { storageLost } from '../src/sinks/sink.js';
import { chatDeliveries } from './helpers/chat.js';
import { needing, tmpfsMissing } from './helpers/needing.js';
import { delivery } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';

const run = promisify(execFile);

const noTmpfs = await tmpfsMissing();

const WAYS = {
  /** rm -rf of the Pivot folder. */
  'the folder removed': async (home: string) => rm(join(home, '.INBOX.Pivot'), { recursive: true, force: true }),
  /** rm -rf of the mailbox's whole Maildir. */
  'the whole mailbox removed': async (home: string) => rm(home, { recursive: true, force: true }),
  /** The folder removed, then an empty one made at its path (as Dovecot makes one a client creates). */
  'the folder removed and made again': async (home: string) => {
    const folder = join(home, '.INBOX.Pivot');
    await rm(folder, { recursive: true, force: true });
    for (const sub of ['cur', 'new', 'tmp']) await mkdir(join(folder, sub), { recursive: true });
    await writeFile(join(folder, 'maildirfolder'), '');
  },
  /** Only its cur/ removed and made again (where the messages are). */
  'its cur/ removed and made again': async (home: string) => {
    const cur = join(home, '.INBOX.Pivot', 'cur');
    await rm(cur, { recursive: true, force: true });
    await mkdir(cur);
  },
};

for (const [way, remove] of Object.entries(WAYS)) {
  for (const links of [1, 0]) {
    test(`maildir: ${way} during the run (links=${links}): the next write into it (a copy of an item stored for another mailbox) fails as storage lost, naming it; the one after stores into the folder made anew; writes to another mailbox go on`, async (t) => {
      const root = await tempDir(t);
      const sink = await createSink(`maildir:${root}?links=${links}`, { cwd: '/' });
      await sink.open();
      const jane = join(root, mailboxFolderName('jane@acme.example'));
      t.is((await sink.write(delivery(1))).outcome, 'delivered');
      t.is((await sink.write(delivery(2, 'omar@acme.example'))).outcome, 'delivered');
      await remove(jane);

      // Item 3 for omar, then its copy for jane: with links=1 a hard link to omar's file (a link into the folder), else a file of its own.
      const [omar3, jane3] = chatDeliveries({ id: 'm_3', sentAt: '2026-11-23T23:59:30.000Z', text: 'message number 3', exportId: 'conformance', index: 3 }, ['omar@acme.example', 'jane@acme.example']);
      t.is((await sink.write(omar3!)).outcome, 'delivered');
      const lost = await t.throwsAsync(sink.write(jane3!));
      t.true(storageLost(lost), `storage lost: ${lost?.message}`);
      t.regex(lost!.message, /^maildir: not stored: the folder was removed during the run: .*jane@acme\.example\/\.INBOX\.Pivot.*: the next run reads the export from the start \(no checkpoint\)/);
      t.is((await sink.write(delivery(4, 'omar@acme.example'))).outcome, 'delivered');
      // Prepared again: made (where gone), listed, stored into.
      const again = await sink.write(delivery(5));
      t.deepEqual(again, { outcome: 'delivered', location: `jane@acme.example/.INBOX.Pivot/cur/${maildirBaseName(delivery(5))}:2,S` });
      t.is((await sink.write(delivery(6))).outcome, 'delivered');
      await sink.close();
      // 1 went with the folder; 3 failed (in a folder made again it was published there, and a re-run finds it).
      const cur = await readdir(join(jane, '.INBOX.Pivot', 'cur'));
      const held = [1, 3, 5, 6].filter((n) => cur.includes(`${maildirBaseName(n === 3 ? jane3! : delivery(n))}:2,S`));
      t.deepEqual(held, way.endsWith('made again') ? [3, 5, 6] : [5, 6]);
      t.is(cur.length, held.length);
      t.is((await readdir(join(jane, '.INBOX.Pivot', 'tmp'))).length, 0, 'nothing left in tmp/');
      t.is((await readdir(join(root, mailboxFolderName('omar@acme.example'), '.INBOX.Pivot', 'cur'))).length, 3);
    });
  }
}

test('maildir: writes in flight into a folder removed under them all fail as storage lost, none stored twice; a re-run of them stores each once', async (t) => {
  const root = await tempDir(t);
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  const jane = join(root, mailboxFolderName('jane@acme.example'));
  t.is((await sink.write(delivery(0))).outcome, 'delivered');
  await WAYS['the folder removed and made again'](jane);
  const results = await Promise.allSettled(Array.from({ length: 40 }, (_, n) => sink.write(delivery(n + 1))));
  const failed = results.filter((r) => r.status === 'rejected');
  // At least the writes of the first group find the folder another; the rest store into it once it is prepared again.
  t.true(failed.length > 0);
  for (const r of failed) t.true(storageLost((r as PromiseRejectedResult).reason), String((r as PromiseRejectedResult).reason));
  const again = await Promise.all(Array.from({ length: 40 }, (_, n) => sink.write(delivery(n + 1))));
  await sink.close();
  t.is(again.filter((s) => s.outcome === 'delivered').length + again.filter((s) => s.outcome === 'skipped').length, 40);
  t.is((await readdir(join(jane, '.INBOX.Pivot', 'cur'))).length, 40, 'each of 1..40 once (0 went with the folder)');
});

// A run stopped (or killed) with items left keeps a checkpoint, and the run that resumes skips the
// items before it: a folder removed between the two runs went with them. The checkpoint keeps the
// folders (`foldersToLook`), and the resumed sink (`resumeFolders`) finds it so, whether or not it
// writes to that mailbox again. Before, the resumed run looked only at folders it wrote to itself,
// and a mailbox it wrote to again was made anew in silence: exit 0 with the earlier items gone.
for (const [way, remove] of Object.entries(WAYS)) {
  test(`maildir: ${way} between a stopped run and the run that resumes it: the look names it (never written again), and a write into it fails as storage lost`, async (t) => {
    const root = await tempDir(t);
    const first = await createSink(`maildir:${root}`, { cwd: '/' });
    await first.open();
    for (const [n, mailbox] of [[1, 'jane@acme.example'], [2, 'omar@acme.example'], [3, 'ruth@acme.example']] as const) t.is((await first.write(delivery(n, mailbox))).outcome, 'delivered');
    const kept = JSON.parse(JSON.stringify(first.foldersToLook!())) as Record<string, unknown>;
    await first.close();
    t.deepEqual(Object.keys(kept).sort(), ['jane@acme.example', 'omar@acme.example', 'ruth@acme.example']);
    await remove(join(root, mailboxFolderName('jane@acme.example')));
    await remove(join(root, mailboxFolderName('omar@acme.example')));

    const resumed = await createSink(`maildir:${root}`, { cwd: '/' });
    t.true(resumed.resumeFolders!(kept));
    await resumed.open();
    // omar is written to again: the folder prepared is not the one the earlier run wrote to.
    const lost = await t.throwsAsync(resumed.write(delivery(4, 'omar@acme.example')));
    t.true(storageLost(lost), `storage lost: ${lost?.message}`);
    t.regex(lost!.message, /^maildir: not stored: the folder was removed since the earlier run this one resumes wrote to it: .*omar@acme\.example\/\.INBOX\.Pivot\/cur is another directory/);
    // The next write there goes into the folder made anew.
    t.is((await resumed.write(delivery(5, 'omar@acme.example'))).outcome, 'delivered');
    t.is((await resumed.write(delivery(6, 'ruth@acme.example'))).outcome, 'delivered');
    // jane is never written to again: the look at the end finds it; ruth's folder is in place.
    const look = await resumed.lostSinceWritten!();
    const reason = typeof look === 'object' ? look.reason : look;
    t.deepEqual(typeof look === 'object' && look.mailboxes, ['jane@acme.example']);
    t.regex(String(reason), /^maildir: 1 folder\(s\) this run wrote to or found items in were removed during the run, after their last write \(.*jane@acme\.example\/\.INBOX\.Pivot\/cur \(written by the earlier run this one resumes\)\)/);
    t.notRegex(String(reason), /ruth|omar/);
    // What the next checkpoint keeps: every folder still to look at, earlier ones too (omar's the new one).
    t.deepEqual(Object.keys(resumed.foldersToLook!()).sort(), ['jane@acme.example', 'omar@acme.example', 'ruth@acme.example']);
    await resumed.close();
  });
}

test('maildir: folders of another form (a hand-edited or foreign checkpoint) are not taken', async (t) => {
  const root = await tempDir(t);
  for (const folders of [{ 'jane@acme.example': 'x' }, { 'jane@acme.example': -1 }, { 'no-at-sign': 5 }, { 'jane@acme.example': 1.5 }]) {
    const sink = await createSink(`maildir:${root}`, { cwd: '/' });
    t.false(sink.resumeFolders!(folders), JSON.stringify(folders));
    t.deepEqual(sink.foldersToLook!(), {}, 'nothing of it kept');
  }
});

for (const under of [false, true]) {
  const where = under ? 'a folder on a file system' : 'a file system\'s mount point';
  needing(noTmpfs, `maildir: the root (${where}) unmounted before the end-of-run look: its folders are unconfirmed, none named lost (was: every mailbox named lost, failing every earlier export there); the root emptied on its own file system names them all`, async (t) => {
    const dir = await tempDir(t);
    const mountPoint = join(dir, 'fs');
    await mkdir(mountPoint);
    const root = under ? join(mountPoint, 'mail') : mountPoint;
    const mailboxes = ['jane@acme.example', 'omar@acme.example'];
    /** A sink on a fresh tmpfs that has written one item to each mailbox; `away` done, its look. */
    const lookAfter = async (away: () => Promise<void>) => {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mountPoint]);
      try {
        const sink = await createSink(`maildir:${root}`, { cwd: '/' });
        await sink.open();
        for (const [n, mailbox] of mailboxes.entries()) t.is((await sink.write(delivery(n + 1, mailbox))).outcome, 'delivered');
        await away();
        const look = await sink.lostSinceWritten!();
        await sink.close();
        return typeof look === 'object' ? look : { reason: look, mailboxes: [] };
      } finally {
        await run('umount', ['-l', mountPoint]).catch(() => undefined);
      }
    };
    const unmounted = await lookAfter(() => run('umount', ['-l', mountPoint]).then(() => undefined));
    t.deepEqual(unmounted.mailboxes, []);
    const elsewhere = under ? `the Maildir root ${root} is gone and ${mountPoint} above it is on another file system` : `the Maildir root ${root} is on another file system`;
    t.true(String(unmounted.reason).startsWith(`maildir: whether the 2 folder(s) this run wrote to or found items in are still in place could not be confirmed: ${elsewhere} than the one the run wrote to (unmounted?)`), String(unmounted.reason));

    // The root's folders removed where they were: gone, each mailbox named.
    const emptied = await lookAfter(async () => {
      for (const name of await readdir(root)) await rm(join(root, name), { recursive: true, force: true });
      if (under) await rm(root, { recursive: true });
    });
    t.deepEqual([...emptied.mailboxes].sort(), mailboxes);
    t.regex(String(emptied.reason), /^maildir: 2 folder\(s\) this run wrote to or found items in were removed during the run/);
  });
}
