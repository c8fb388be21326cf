import test from 'ava';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { ErrorCode } from '../src/errors.js';
import { createSink, createStoreReader, sinkOptionsHelp } from '../src/sinks/index.js';
import { parseMaildirSpec } from '../src/sinks/maildir/config.js';
import { MaildirSink, maildirBaseName, maildirSinkFactory } from '../src/sinks/maildir/index.js';
import { sha256Hex } from '../src/hash.js';
import { alterOneByte, delivery, everyCase, noSecretInDescription, readerCases, readerIgnoresClientFlags, sinkConformance } from './helpers/sink-conformance.js';
import { maildirOptions } from '../src/sinks/maildir/options.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';
import { chatDeliveries } from './helpers/chat.js';

const roots: string[] = [];
test.after.always(() => Promise.all(roots.map((r) => rm(r, { recursive: true, force: true }))));

sinkConformance(
  {
    name: 'maildir',
    async store() {
      const root = await mkdtemp(join(tmpdir(), 'pivot-maildir-'));
      roots.push(root);
      return {
        create: async () => createSink(`maildir:${root}`, { cwd: '/' }),
        async read(mailbox) {
          return (await readMaildir(root)).filter((m) => m.mailbox === mailbox).map((m) => m.raw);
        },
        async breakStore() {
          // A file where the mailbox's folder must be: every mkdir below it fails (ENOTDIR), even for root.
          const mailbox = 'broken@acme.example';
          await writeFile(join(root, mailbox), 'not a folder');
          return { mailbox, repair: () => rm(join(root, mailbox)) };
        },
        readAt: (location) => readFile(join(root, location)).catch(() => undefined),
        reader: async () => maildirSinkFactory.reader!(`maildir:${root}`, { cwd: '/' }),
        tamper: {
          async alter(_mailbox, location) {
            const path = join(root, location);
            await writeFile(path, alterOneByte(await readFile(path)));
          },
          remove: (_mailbox, location) => rm(join(root, location)),
          async clientChanges(_mailbox, locations) {
            // As Dovecot renames them for a client: back to new/ (unseen, no flags), flagged, seen and answered.
            const [first, ...others] = locations.map((l) => join(root, l));
            const base = (path: string) => basename(path).replace(/:2,.*$/, '');
            await rename(first!, join(dirname(dirname(first!)), 'new', base(first!)));
            for (const [i, path] of others.entries()) await rename(path, join(dirname(path), `${base(path)}:2,${i === 0 ? 'FS' : 'RS'}`));
          },
        },
      };
    },
    options: maildirOptions,
    withOptions: (query) => createSink(`maildir:/srv/mail?${query}`, { cwd: '/' }),
    async unusable() {
      const root = await mkdtemp(join(tmpdir(), 'pivot-maildir-'));
      roots.push(root);
      await writeFile(join(root, 'file'), 'not a folder');
      return createSink(`maildir:${join(root, 'file')}`, { cwd: '/' });
    },
    async unusableReader() {
      const root = await mkdtemp(join(tmpdir(), 'pivot-maildir-'));
      roots.push(root);
      return maildirSinkFactory.reader!(`maildir:${join(root, 'missing')}`, { cwd: '/' });
    },
  },
  // No secret: a Maildir spec holds a path and options only.
  [...everyCase.filter((c) => c !== noSecretInDescription), ...readerCases, readerIgnoresClientFlags],
);

test('maildir reader: reads without making anything: no root, no mailbox folder, no listing of its own', async (t) => {
  const root = join(await tempDir(t), 'root');
  const reader = maildirSinkFactory.reader!(`maildir:${root}`, { cwd: '/' });
  await t.throwsAsync(reader.open(), { code: ErrorCode.SINK_UNAVAILABLE, message: /maildir root .*root cannot be read/ });
  await t.throwsAsync(stat(root), { code: 'ENOENT' });
  await mkdir(root);
  await reader.open();
  const wanted = { messageId: delivery(1).messageId, sentAt: new Date(delivery(1).internalDate).toISOString() };
  const { held, unexpected } = await reader.mailbox('jane@acme.example', [wanted], { sample: false });
  t.deepEqual([held.size, unexpected], [0, []]);
  t.deepEqual(await reader.mailboxes(), []);
  t.deepEqual(await readdir(root), []);
  await reader.close();
});

test('maildir reader: a content-named variant (another version beside ours) is found by its location, and the other version is unexpected', async (t) => {
  const root = await tempDir(t);
  const original = delivery(1);
  const corrected = { ...original, message: Buffer.from(original.message.toString('latin1').replace('message number 1', 'message number one'), 'latin1') };
  t.false(corrected.message.equals(original.message));
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  const first = await sink.write(original);
  const second = await sink.write(corrected);
  await sink.close();
  t.regex(second.location!, /\.C[0-9a-f]{16}\.pivot-archive:2,S$/);
  const reader = maildirSinkFactory.reader!(`maildir:${root}`, { cwd: '/' });
  await reader.open();
  const wanted = { messageId: corrected.messageId, sentAt: new Date(corrected.internalDate).toISOString(), location: second.location! };
  const { held, unexpected } = await reader.mailbox('jane@acme.example', [wanted], { sample: false });
  t.is(held.get(wanted)?.sha256, sha256Hex(corrected.message));
  t.is(held.get(wanted)?.location, second.location);
  t.deepEqual(unexpected.map((u) => u.location), [first.location]);
});

test('maildir: Maildir++ layout with the .INBOX.Pivot folder, seen flag and mtime = sentAt', async (t) => {
  const root = await tempDir(t);
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  const d = delivery(3);
  await sink.write(d);
  await sink.close();
  const home = join(root, 'jane@acme.example');
  for (const sub of ['cur', 'new', 'tmp', '.INBOX.Pivot/cur', '.INBOX.Pivot/new', '.INBOX.Pivot/tmp']) t.true((await stat(join(home, sub))).isDirectory(), sub);
  t.is(await readFile(join(home, '.INBOX.Pivot', 'maildirfolder'), 'utf8'), '');
  const files = await readdir(join(home, '.INBOX.Pivot', 'cur'));
  t.deepEqual(files, [`${maildirBaseName(d)}:2,S`]);
  t.is((await stat(join(home, '.INBOX.Pivot', 'cur', files[0]!))).mtimeMs, d.internalDate);
  t.deepEqual(await readdir(join(home, '.INBOX.Pivot', 'tmp')), []);
});

test('maildir: the folder name is configurable for a Courier-style INBOX. namespace', async (t) => {
  const root = await tempDir(t);
  const sink = await createSink(`maildir:${root}?folder=.Pivot`, { cwd: '/' });
  await sink.open();
  await sink.write(delivery(1));
  await sink.close();
  t.is((await readMaildir(root, '.Pivot')).length, 1);
});

test('maildir: every address gets a folder of its own inside the root (/, %, a leading dot, control characters written %XX), found again by a re-run and by the reader', async (t) => {
  const root = join(await tempDir(t), 'root');
  const hostile: Record<string, string> = {
    '../escape@acme.example': '%2E.%2Fescape@acme.example',
    'a/../../b@acme.example': 'a%2F..%2F..%2Fb@acme.example',
    'a/b@acme.example': 'a%2Fb@acme.example',
    'a%2Fb@acme.example': 'a%252Fb@acme.example',
    '.hidden@acme.example': '%2Ehidden@acme.example',
    'x@y/../../z': 'x@y%2F..%2F..%2Fz',
    'back\\slash@acme.example': 'back%5Cslash@acme.example',
    'nul\u0000@acme.example': 'nul%00@acme.example',
  };
  const all = Object.keys(hostile).map((mailbox) => delivery(1, mailbox));
  t.deepEqual(await writeAllTo(root, all), all.map(() => 'delivered'));
  t.deepEqual(await readdir(join(root, '..')), ['root']);
  t.deepEqual((await readdir(root)).sort(), Object.values(hostile).sort());
  t.deepEqual(await writeAllTo(root, all), all.map(() => 'skipped'), 'a re-run finds each in its folder');
  const reader = await maildirSinkFactory.reader!(`maildir:${root}`, { cwd: '/' });
  t.deepEqual(await reader.mailboxes(), Object.keys(hostile).sort());
  // What is not an address has no folder: its delivery fails with the reason, and nothing is made.
  const sink = await createSink(`maildir:${join(root, '..', 'other')}`, { cwd: '/' });
  await sink.open();
  for (const mailbox of ['..', '', 'no-at-sign', '@acme.example']) {
    const err = await t.throwsAsync(sink.write(delivery(1, mailbox)), { message: /is not an address/ });
    t.is((err as { code?: string }).code, ErrorCode.SINK_WRITE, mailbox);
  }
  await sink.close();
});

/** One sink's life over `root`: open, write every delivery at once, close; the outcomes. */
async function writeAllTo(root: string, deliveries: ReturnType<typeof delivery>[]) {
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  const outcomes = await Promise.all(deliveries.map(async (d) => (await sink.write(d)).outcome));
  await sink.close();
  return outcomes;
}

test('maildir: a message whose flags a mail client changed (the file renamed) is not delivered again by a re-run', async (t) => {
  const root = await tempDir(t);
  const folder = join(root, 'jane@acme.example', '.INBOX.Pivot');
  const writeAll = (deliveries: ReturnType<typeof delivery>[]) => writeAllTo(root, deliveries);
  const firstDay = [1, 2, 3].map((n) => delivery(n));
  t.deepEqual(await writeAll(firstDay), ['delivered', 'delivered', 'delivered']);
  // Flagged, and marked unread, as Dovecot renames them for a client.
  const cur = join(folder, 'cur');
  await rename(join(cur, `${maildirBaseName(firstDay[0]!)}:2,S`), join(cur, `${maildirBaseName(firstDay[0]!)}:2,FS`));
  await rename(join(cur, `${maildirBaseName(firstDay[1]!)}:2,S`), join(cur, `${maildirBaseName(firstDay[1]!)}:2,`));
  // The re-run of that export skips all three; the next day's export (reusing id m_1) is new.
  t.deepEqual(await writeAll([...firstDay, delivery(1, undefined, true)]), ['skipped', 'skipped', 'skipped', 'delivered']);
  t.is((await readdir(cur)).length, 4);
  t.deepEqual((await readMaildir(root)).map((m) => m.parsed.date?.toISOString()).sort(), ['2026-11-23T23:59:10.000Z', '2026-11-23T23:59:20.000Z', '2026-11-23T23:59:30.000Z', '2026-11-24T00:00:11.000Z']);
});

test('maildir: a re-export under a new export id after a client changed flags delivers nothing twice', async (t) => {
  const root = await tempDir(t);
  const folder = join(root, 'jane@acme.example', '.INBOX.Pivot');
  const writeAll = (deliveries: ReturnType<typeof delivery>[]) => writeAllTo(root, deliveries);
  const firstDay = [1, 2, 3, 4].map((n) => delivery(n));
  t.deepEqual(await writeAll(firstDay), ['delivered', 'delivered', 'delivered', 'delivered']);
  const cur = join(folder, 'cur');
  const base = (d: ReturnType<typeof delivery>) => maildirBaseName(d);
  await rename(join(cur, `${base(firstDay[0]!)}:2,S`), join(cur, `${base(firstDay[0]!)}:2,FS`));
  await rename(join(cur, `${base(firstDay[1]!)}:2,S`), join(cur, `${base(firstDay[1]!)}:2,`));
  // A server that moved one back to new/ (no flags at all) still holds it.
  await rename(join(cur, `${base(firstDay[2]!)}:2,S`), join(folder, 'new', base(firstDay[2]!)));
  // The same events in an export with another id: only its X-Pivot-Export-Id header differs.
  const reexport = firstDay.map((d) => {
    const message = Buffer.from(d.message.toString('utf8').replace('X-Pivot-Export-Id: conformance\r\n', 'X-Pivot-Export-Id: conformance-reexport-7\r\n'));
    t.false(message.equals(d.message));
    return { ...d, exportId: 'conformance-reexport-7', message };
  });
  t.deepEqual(await writeAll(reexport), ['skipped', 'skipped', 'skipped', 'skipped']);
  t.is((await readdir(cur)).length, 3);
  t.is((await readdir(join(folder, 'new'))).length, 1);
  t.is((await readMaildir(root)).length, 4);
});

test('maildir: an item\'s copies for other mailboxes are hard links to its first durable file, each still its own message', async (t) => {
  const root = await tempDir(t);
  const mailboxes = ['a@acme.example', 'b@acme.example', 'c@acme.example'];
  const fanOut = (n: number) => {
    // As the pipeline does: the item's copies share one copyKey (and its bytes).
    const one = delivery(n);
    return mailboxes.map((mailbox) => ({ ...one, mailbox, copyKey: `item-${n}` }));
  };
  const deliverAll = async (spec: string, deliveries: ReturnType<typeof delivery>[]) => {
    const sink = await createSink(spec, { cwd: '/' });
    await sink.open();
    const outcomes = await Promise.all(deliveries.map(async (d) => (await sink.write(d)).outcome));
    await sink.close();
    return outcomes;
  };
  const fileOf = (mailbox: string, d: ReturnType<typeof delivery>, flags = 'S') => join(root, mailbox, '.INBOX.Pivot', 'cur', `${maildirBaseName(d)}:2,${flags}`);
  const item = fanOut(1);
  t.deepEqual(await deliverAll(`maildir:${root}`, item), ['delivered', 'delivered', 'delivered']);
  const stats = await Promise.all(mailboxes.map((m) => stat(fileOf(m, item[0]!))));
  t.is(new Set(stats.map((s) => s.ino)).size, 1, 'one file, three names');
  t.true(stats.every((s) => s.nlink === 3 && s.mtimeMs === item[0]!.internalDate));
  // One mailbox's client flags its copy (a rename) and another's expunges it: the rest stay.
  await rename(fileOf('a@acme.example', item[0]!), fileOf('a@acme.example', item[0]!, 'FS'));
  await rm(fileOf('b@acme.example', item[0]!));
  t.true((await readFile(fileOf('c@acme.example', item[0]!))).equals(item[0]!.message));
  t.deepEqual(await deliverAll(`maildir:${root}`, item), ['skipped', 'delivered', 'skipped']);
  t.is((await stat(fileOf('c@acme.example', item[0]!))).nlink, 2, "c's file is still a's (renamed) too");
  t.true((await readFile(fileOf('b@acme.example', item[0]!))).equals(item[0]!.message), 'b has it again');
  // links=0: a file of its own for every copy.
  const separate = fanOut(2);
  t.deepEqual(await deliverAll(`maildir:${root}?links=0`, separate), ['delivered', 'delivered', 'delivered']);
  const own = await Promise.all(mailboxes.map((m) => stat(fileOf(m, separate[0]!))));
  t.is(new Set(own.map((s) => s.ino)).size, 3);
  t.deepEqual((await readMaildir(root)).map((m) => m.mailbox).sort(), ['a@acme.example', 'a@acme.example', 'b@acme.example', 'b@acme.example', 'c@acme.example', 'c@acme.example']);
});

test('maildir: a temporary file left by a killed run is replaced, and the message delivered once', async (t) => {
  const root = await tempDir(t);
  const d = delivery(5);
  const tmp = join(root, 'jane@acme.example', '.INBOX.Pivot', 'tmp');
  await mkdir(tmp, { recursive: true });
  await writeFile(join(tmp, maildirBaseName(d)), 'half written');
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  t.is((await sink.write(d)).outcome, 'delivered');
  await sink.close();
  const stored = await readMaildir(root);
  t.is(stored.length, 1);
  t.true(stored[0]!.raw.equals(d.message));
});

test('maildir: the sink spec is validated before any I/O; unknown options are errors', async (t) => {
  t.throws(() => parseMaildirSpec('maildir:/x?folders=.Pivot', '/'), { message: /unknown option "folders"/ });
  t.throws(() => parseMaildirSpec('maildir:', '/'), { message: /names no folder/ });
  t.throws(() => parseMaildirSpec('maildir:/x?folder=../up', '/'), { message: /not a Maildir\+\+ folder name/ });
  t.throws(() => parseMaildirSpec('maildir:/x?concurrency=0', '/'), { message: /concurrency/ });
  await t.throwsAsync(createSink('ftp://x', { cwd: '/' }), { message: /unknown sink "ftp:\/\/x"/ });
  const config = parseMaildirSpec('maildir:out?concurrency=4', '/srv');
  t.deepEqual(config, { root: '/srv/out', folder: '.INBOX.Pivot', concurrency: 4, links: true });
  t.false(parseMaildirSpec('maildir:out?links=0', '/srv').links);
  t.throws(() => parseMaildirSpec('maildir:/x?links=yes', '/'), { message: /links must be 1/ });
  t.true((await createSink('maildir:out', { cwd: '/srv' })) instanceof MaildirSink);
});

test('sinkOptionsHelp: every sink\'s form and options, with defaults and bounds, from the tables the parser uses', (t) => {
  const help = sinkOptionsHelp();
  for (const line of ['maildir:DIR[', 'imap[s]://ADMIN@HOST', 'azblob://CONTAINER', 'concurrency=4096', '(1-65536)', 'links=1|0', 'retryDelay=500', '(0-600000 ms)', 'mib=8', '(default PIVOT_IMAP_PASSWORD)']) {
    t.true(help.includes(line), line);
  }
  t.is(help.match(/^imap\[s\]/gm)?.length, 1, 'imap and imaps share one section');
});

test('maildir: a re-run that finds a file a client renamed (flags, new/) resolves that file as the location', async (t) => {
  const root = await tempDir(t);
  const days = [1, 2, 3].map((n) => delivery(n));
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  const first = await Promise.all(days.map((d) => sink.write(d)));
  await sink.close();
  const folder = 'jane@acme.example/.INBOX.Pivot';
  t.deepEqual(first.map((s) => s.location), days.map((d) => `${folder}/cur/${maildirBaseName(d)}:2,S`));
  await rename(join(root, first[0]!.location!), join(root, folder, 'cur', `${maildirBaseName(days[0]!)}:2,FS`));
  await rename(join(root, first[1]!.location!), join(root, folder, 'new', maildirBaseName(days[1]!)));
  const again = await createSink(`maildir:${root}`, { cwd: '/' });
  await again.open();
  const rerun = await Promise.all(days.map((d) => again.write(d)));
  await again.close();
  t.deepEqual(rerun, [
    { outcome: 'skipped', location: `${folder}/cur/${maildirBaseName(days[0]!)}:2,FS` },
    { outcome: 'skipped', location: `${folder}/new/${maildirBaseName(days[1]!)}` },
    { outcome: 'skipped', location: first[2]!.location },
  ]);
});

test('maildir: an item sent before 1970 (a negative time in its file name) is still ours: a re-run after a client renamed it skips it, and the reader finds it', async (t) => {
  const root = await tempDir(t);
  const early = chatDeliveries({ id: 'm_early', sentAt: '1969-12-31T23:59:59.000Z', text: 'before the epoch', exportId: 'conformance', index: 0 }, ['jane@acme.example'])[0]!;
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  const first = await sink.write(early);
  await sink.close();
  t.regex(basename(first.location!), /^-1\.P[0-9a-f]{32}\.pivot-archive:2,S$/);
  const flagged = join(dirname(first.location!), `${maildirBaseName(early)}:2,FS`);
  await rename(join(root, first.location!), join(root, flagged));
  const again = await createSink(`maildir:${root}`, { cwd: '/' });
  await again.open();
  t.deepEqual(await again.write(early), { outcome: 'skipped', location: flagged });
  await again.close();
  t.is((await readdir(join(root, dirname(first.location!)))).length, 1, 'one file, not a second copy');
  const reader = maildirSinkFactory.reader!(`maildir:${root}`, { cwd: '/' });
  await reader.open();
  const wanted = { messageId: early.messageId, sentAt: new Date(early.internalDate).toISOString(), location: first.location! };
  const { held, unexpected } = await reader.mailbox('jane@acme.example', [wanted], { sample: false });
  t.is(held.get(wanted)?.sha256, sha256Hex(early.message));
  t.deepEqual(unexpected, []);
});

test('createStoreReader: the reader of the store a spec names, validated as the sink is; unknown schemes are E_SINK_CONFIG', async (t) => {
  const root = await tempDir(t);
  const reader = await createStoreReader(`maildir:${root}?folder=.Pivot`, { cwd: '/' });
  t.is(reader.description, `maildir:${root}?folder=.Pivot`, "another folder is another store");
  await reader.open();
  await t.throwsAsync(createStoreReader('maildir:/x?folders=.Pivot', { cwd: '/' }), { code: ErrorCode.SINK_CONFIG, message: /unknown option "folders"/ });
  await t.throwsAsync(createStoreReader('ftp://x', { cwd: '/' }), { code: ErrorCode.SINK_CONFIG, message: /unknown sink "ftp:\/\/x"/ });
});
