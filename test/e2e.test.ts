import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { writeArchive } from './helpers/archive.js';
import { BIN, REPO_ROOT, cli, readStatusLog } from './helpers/cli.js';
import { pairs, readMaildir } from './helpers/maildir.js';
import { expectedPairs, type ReferenceConversations, type ReferenceUsers } from './helpers/reference.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

type Json = Record<string, unknown>;

function expectedFor(archivePath: string, excluded: string[] = [], options: { domains?: string[] } = {}): string[] {
  const entries = readJsonEntriesIndependently(archivePath);
  const files = Object.keys(entries)
    .filter((n) => n.startsWith('messages/'))
    .sort()
    .map((n) => entries[n] as unknown[]);
  return expectedPairs(entries['users.json'] as ReferenceUsers, entries['conversations.json'] as ReferenceConversations, files, { ...options, excluded: new Set(excluded) });
}

test('a generated export lands in the Maildir exactly: nothing missing, nothing twice; a re-run adds nothing', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 3000, messageFiles: 3, seed: 7 });
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const first = await cli(['run', '--all-domains', archive, '--sink', `maildir:${out}`, '--status-log', status, '--rejects', join(dir, 'rejects')]);
  t.is(first.code, 0, first.stderr);
  const expected = expectedFor(archive, ['edge_oversize']);
  const stored = await readMaildir(out);
  t.deepEqual(pairs(stored), expected);
  t.is(new Set(pairs(stored)).size, stored.length, 'no (mailbox, item) twice');
  // INTERNALDATE (the file's mtime) is sentAt; the Date header is the same time to the second.
  for (const m of stored) t.is(Math.floor(m.mtime.getTime() / 1000) * 1000, m.parsed.date!.getTime());
  const { summary, lines } = await readStatusLog(status);
  t.true(summary.balanced);
  t.is(summary.itemsFromSource, 3007);
  t.is(summary.delivered, expected.length);
  t.is(summary.itemsAvailableForImport, expected.length);
  t.deepEqual(summary.rejected, { oversize: 1, 'unknown-conversation': 1, 'missing-field:sentAt': 1, unmapped: 1 });
  t.is(lines.filter((l) => l.outcome === 'delivered').length, expected.length);
  t.is(lines.filter((l) => l.record === 'note' && l.reason === 'attachment-missing').length, 1);
  t.regex(first.stdout, /counters add up\s+yes/);

  const second = await cli(['run', '--all-domains', archive, '--sink', `maildir:${out}`, '--status-log', status, '--rejects', join(dir, 'rejects')]);
  t.is(second.code, 0, second.stderr);
  t.is((await readMaildir(out)).length, stored.length);
  const again = (await readStatusLog(status)).summary;
  t.is(again.delivered, 0);
  t.is(again.skipped, expected.length);
});

test('an archive on stdin is spooled to a temporary file that is removed afterwards', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 200, seed: 3, edgeCases: false });
  const spool = join(dir, 'tmp');
  await mkdir(spool);
  const out = join(dir, 'mail');
  const result = await cli(['run', '--all-domains', '-', '--sink', `maildir:${out}`, '--json'], { stdin: await readFile(archive), env: { TMPDIR: spool } });
  t.is(result.code, 0, result.stderr);
  t.deepEqual(pairs(await readMaildir(out)), expectedFor(archive));
  const summary = JSON.parse(result.stdout) as Json;
  t.is(summary.archive, '-');
  t.is(summary.balanced, true);
  t.deepEqual(await readdir(spool), []);
});

test('an archive on stdin that is no zip is named stdin in the error, not by the temporary file it was spooled to', async (t) => {
  const dir = await tempDir(t);
  const spool = join(dir, 'tmp');
  await mkdir(spool);
  const result = await cli(['run', '--all-domains', '-', '--sink', `maildir:${join(dir, 'mail')}`], { stdin: Buffer.from('not a zip'), env: { TMPDIR: spool } });
  t.is(result.code, 2, result.stderr);
  t.regex(result.log, /E_ARCHIVE_UNREADABLE: stdin: not a readable zip archive/);
  t.notRegex(result.log, new RegExp(spool.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'the spool file, gone by then, is not named');
  t.deepEqual(await readdir(spool), []);
});

test('an archive on stdin with no temporary space to spool it to fails E_TEMPORARY (exit 2), naming where, with a failure record', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 50, seed: 3, edgeCases: false });
  const missing = join(dir, 'no-such-tmp');
  const status = join(dir, 'status.jsonl');
  const result = await cli(['run', '--all-domains', '-', '--sink', `maildir:${join(dir, 'mail')}`, '--status-log', status], { stdin: await readFile(archive), env: { TMPDIR: missing } });
  t.is(result.code, 2, result.stderr);
  t.regex(result.log, new RegExp(`E_TEMPORARY: the archive read from stdin cannot be kept in a temporary file under ${missing}`));
  t.notRegex(result.stderr, /^\s+at /m, 'no stack trace');
  const failure = (await readFile(status, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Json).find((r) => r.record === 'failure');
  t.like(failure, { code: 'E_TEMPORARY', exitCode: 2 });
});

test('a reader of the log that goes away (a closed pipe) does not end the run: it delivers everything, exits 0, and its summary is recorded', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 2000, seed: 3, edgeCases: false });
  const status = join(dir, 'status.jsonl');
  const out = join(dir, 'mail');
  // stderr (the log) into a reader that takes 100 bytes and goes; stdout (the summary) into one that reads nothing.
  const run = `"${process.execPath}" "${BIN}" run "${archive}" --all-domains --sink "maildir:${out}" --status-log "${status}" --log-level info --json 2>&1 >/dev/null | head -c 100 >/dev/null; exit \${PIPESTATUS[0]}`;
  const code = await new Promise<number | null>((resolve) => execFile('bash', ['-c', run]).on('exit', resolve));
  t.is(code, 0);
  const summary = (await readStatusLog(status)).summary;
  t.true(summary.balanced);
  t.is((await readMaildir(out)).length, summary.delivered);
  t.true(summary.delivered > 0);
});

test('the same archive yields byte-identical Maildir files in two runs', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 300, seed: 11 });
  const runs: Awaited<ReturnType<typeof readMaildir>>[] = [];
  for (const name of ['one', 'two']) {
    const result = await cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, name)}`, '--rejects', join(dir, `rejects-${name}`)]);
    t.is(result.code, 0, result.stderr);
    runs.push(await readMaildir(join(dir, name)));
  }
  t.true(runs[0]!.length > 300);
  t.deepEqual(runs[0]!.map((m) => `${m.mailbox}/${m.file}`), runs[1]!.map((m) => `${m.mailbox}/${m.file}`));
  t.true(runs[0]!.every((m, i) => m.raw.equals(runs[1]![i]!.raw)));
});

test('a corrupt archive exits 2 with the reason, before anything is delivered', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 500, seed: 5, edgeCases: false, level: 0 });
  const bytes = await readFile(archive);
  // Damage the last messages bytes: the first events would be deliverable, but nothing may be.
  const at = bytes.lastIndexOf(Buffer.from('"text":"'));
  bytes[at + 9] = bytes[at + 9] === 0x61 ? 0x62 : 0x61;
  await writeFile(archive, bytes);
  const out = join(dir, 'mail');
  const result = await cli(['run', '--all-domains', archive, '--sink', `maildir:${out}`]);
  t.is(result.code, 2);
  t.regex(result.log, /E_ARCHIVE_CORRUPT: .*export\.zip: entry "messages\/0000\.json" fails its CRC-32 check/);
  t.deepEqual(await readMaildir(out), []);
});

test('usage errors exit 2 and say what is wrong; --help lists the commands', async (t) => {
  const help = await cli(['--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /pivot-archive run \[archive\]/);
  t.regex(help.stdout, /pivot-archive sample/);
  const runHelp = await cli(['run', '--help']);
  t.regex(runHelp.stdout, /--max-item-size/);
  t.regex(runHelp.stdout, /Exit codes: 0/);
  const noSink = await cli(['run', 'x.zip']);
  t.is(noSink.code, 2);
  t.regex(noSink.log, /no sink/);
  const unknown = await cli(['run', '--all-domains', 'x.zip', '--sink', 'maildir:/tmp/x', '--frobnicate']);
  t.is(unknown.code, 2);
  t.regex(unknown.log, /Unknown argument: frobnicate/);
  const missing = await cli(['run', '--all-domains', '/nonexistent/x.zip', '--sink', 'maildir:/tmp/x']);
  t.is(missing.code, 2);
  t.regex(missing.log, /E_ARCHIVE_UNREADABLE: \/nonexistent\/x.zip/);
  const badSink = await cli(['run', '--all-domains', 'x.zip', '--sink', 'maildir:/tmp/x?bogus=1']);
  t.is(badSink.code, 2);
  t.regex(badSink.log, /E_SINK_CONFIG: .*unknown option "bogus"/);
});

test('the config file holds what flags hold, flags override it, unknown keys are errors', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 100, seed: 9, edgeCases: false });
  const config = join(dir, 'config.json');
  await writeFile(config, JSON.stringify({ sink: `maildir:${join(dir, 'from-config')}`, domains: ['acme.example'], logLevel: 'warn' }));
  const result = await cli(['run', archive, '--config', config, '--sink', `maildir:${join(dir, 'from-flag')}`]);
  t.is(result.code, 0, result.stderr);
  t.deepEqual(await readMaildir(join(dir, 'from-config')), []);
  const stored = await readMaildir(join(dir, 'from-flag'));
  t.true(stored.length > 0);
  t.true(stored.every((m) => m.mailbox.endsWith('@acme.example')));
  t.deepEqual(pairs(stored), expectedFor(archive, [], { domains: ['acme.example'] }));
  await writeFile(config, JSON.stringify({ sink: 'maildir:x', colour: 'blue' }));
  const bad = await cli(['run', archive, '--config', config]);
  t.is(bad.code, 2);
  t.regex(bad.log, /E_CONFIG: .*unknown key "colour"/);
});

const users = [
  { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
  { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' },
];
const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2'] }];
const message = (id: string, extra: Json = {}) => ({ id, conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_1', text: id, ...extra });

test('an item over --max-item-size is rejected as oversize and kept whole in the rejects folder', async (t) => {
  const dir = await tempDir(t);
  const big = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251));
  const events = [message('m_small'), message('m_big', { attachments: [{ id: 'a_big', fileName: 'big.bin' }] }), message('m_near', { text: 'x'.repeat(150_000) })];
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': events }, attachments: { a_big: big } });
  const out = join(dir, 'mail');
  const rejects = join(dir, 'rejects');
  const status = join(dir, 'status.jsonl');
  const result = await cli(['run', '--all-domains', archive, '--sink', `maildir:${out}`, '--max-item-size', '200KiB', '--rejects', rejects, '--status-log', status, '--max-rejected', '100%']);
  t.is(result.code, 0, result.stderr);
  t.deepEqual(pairs(await readMaildir(out)), ['jane@acme.example m_near', 'jane@acme.example m_small', 'omar@acme.example m_near', 'omar@acme.example m_small']);
  const { lines, summary } = await readStatusLog(status);
  t.deepEqual(summary.rejected, { oversize: 1 });
  const line = lines.find((l) => l.itemId === 'm_big')!;
  t.is(line.outcome, 'rejected');
  t.is(line.reason, 'oversize');
  const kept = String(line.kept);
  t.true(kept.startsWith(rejects));
  t.deepEqual(JSON.parse(await readFile(join(kept, 'event.json'), 'utf8')), events[1]);
  const [attachmentFile] = await readdir(join(kept, 'attachments'));
  t.true((await readFile(join(kept, 'attachments', attachmentFile!))).equals(big));
});

test('bad items are recorded with their reason and the run goes on', async (t) => {
  const dir = await tempDir(t);
  const events = [
    message('m_ok'),
    message('m_conv', { conversationId: 'c_unknown' }),
    message('m_user', { senderId: 'u_unknown' }),
    message('m_type', { type: 'poke' }),
    message('m_time', { sentAt: 'yesterday' }),
    { conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_1' },
    message('m_edit', { type: 'edit' }),
    42,
  ];
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': events } });
  const status = join(dir, 'status.jsonl');
  const result = await cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--status-log', status, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%']);
  t.is(result.code, 0, result.stderr);
  const { summary } = await readStatusLog(status);
  t.deepEqual(summary.rejected, {
    'unknown-conversation': 1,
    'unknown-user': 1,
    'unknown-type': 1,
    'invalid-field:sentAt': 1,
    'missing-field:id': 1,
    'missing-field:targetId': 1,
    'invalid-field': 1,
  });
  t.is(summary.delivered, 2);
  t.true(summary.balanced);
  t.regex(result.log, /rejected item "m_conv" at messages file 0, event \d+ \(unknown-conversation\): .*; kept in \S/);
  // The event without an id is named by where it stands.
  t.regex(result.log, /rejected item "" at messages file 0, event \d+ \(missing-field:id\)/);
});

test('deliveries that fail exit 1, are recorded, and a re-run delivers exactly what is missing', async (t) => {
  const dir = await tempDir(t);
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': [message('m_1'), message('m_2')] } });
  const out = join(dir, 'mail');
  await mkdir(out);
  await writeFile(join(out, 'omar@acme.example'), 'a file where a mailbox folder belongs');
  const status = join(dir, 'status.jsonl');
  const first = await cli(['run', '--all-domains', archive, '--sink', `maildir:${out}`, '--status-log', status]);
  t.is(first.code, 1);
  const { summary, lines } = await readStatusLog(status);
  t.is(summary.failed, 2);
  t.is(summary.delivered, 2);
  t.true(lines.filter((l) => l.outcome === 'failed').every((l) => l.mailbox === 'omar@acme.example' && typeof l.detail === 'string'));
  await (await import('node:fs/promises')).rm(join(out, 'omar@acme.example'));
  const second = await cli(['run', '--all-domains', archive, '--sink', `maildir:${out}`, '--status-log', status]);
  t.is(second.code, 0, second.stderr);
  const again = (await readStatusLog(status)).summary;
  t.deepEqual([again.delivered, again.skipped, again.failed], [2, 2, 0]);
  t.deepEqual(pairs(await readMaildir(out)), ['jane@acme.example m_1', 'jane@acme.example m_2', 'omar@acme.example m_1', 'omar@acme.example m_2']);
});

test('participants follow join and leave across messages files read out of time order', async (t) => {
  const dir = await tempDir(t);
  const people = [...users, { id: 'u_3', displayName: 'Li', email: 'li@acme.example' }];
  const at = (h: number) => `2026-11-23T${String(h).padStart(2, '0')}:00:00Z`;
  const messages = {
    // Read first, but later in the day than the join in b.json.
    'a.json': [message('m_after_join', { sentAt: at(12) }), message('m_after_leave', { sentAt: at(16) })],
    'b.json': [
      message('m_before_join', { sentAt: at(9) }),
      { id: 'j_1', conversationId: 'c_1', type: 'join', sentAt: at(10), senderId: 'u_1', memberId: 'u_3' },
      { id: 'l_1', conversationId: 'c_1', type: 'leave', sentAt: at(14), senderId: 'u_3' },
    ],
  };
  const archive = await writeArchive(join(dir, 'x.zip'), { users: people, conversations, messages });
  const out = join(dir, 'mail');
  const result = await cli(['run', '--all-domains', archive, '--sink', `maildir:${out}`]);
  t.is(result.code, 0, result.stderr);
  const got = pairs(await readMaildir(out)).filter((p) => p.startsWith('li@'));
  t.deepEqual(got, ['li@acme.example j_1', 'li@acme.example l_1', 'li@acme.example m_after_join']);
  t.deepEqual(pairs(await readMaildir(out)), expectedFor(archive));
});

test('the built-in sample runs with the example plugins, and Node has nothing to warn about', async (t) => {
  const dir = await tempDir(t);
  const out = join(dir, 'out');
  const result = await cli(['run', '--all-domains', '--sample', '--sink', `maildir:${out}`, '--status-log', join(dir, 'status.jsonl'), '--plugin', './plugins/redact-card-numbers.js', '--plugin', './plugins/conversation-header.js', '--rejects', join(dir, 'rejects')]);
  t.is(result.code, 0, result.stderr);
  // e.g. MaxListenersExceededWarning, once seen when many deliveries waited on the status log.
  t.notRegex(result.stderr, /Warning/);
  t.regex(result.log, /plugin redact-card-numbers@1.0.0 registered/);
  const stored = await readMaildir(out);
  t.true(stored.length > 1000);
  t.true(stored.every((m) => typeof m.parsed.headers.get('x-pivot-conversation-type') === 'string'));
});

test('hostile entry names are recorded as notes and nothing escapes: only the Maildir and the log are written', async (t) => {
  const dir = await tempDir(t);
  const work = join(dir, 'work');
  await mkdir(work);
  const entries: Record<string, string> = {
    'manifest.json': JSON.stringify({ format: 'pivot-export', version: 1, exportId: 'x', tenant: 'acme', windowStart: '2026-11-23T00:00:00Z', windowEnd: '2026-11-24T00:00:00Z', createdAt: '2026-11-24T00:05:12Z' }),
    'users.json': JSON.stringify(users),
    'conversations.json': JSON.stringify(conversations),
    'messages/0.json': JSON.stringify([message('m_1', { attachments: [{ id: '../../evil', fileName: '../../evil.sh' }] })]),
    '../evil.json': '[]',
    '/tmp/abs-evil.json': '[]',
    'attachments/../../evil': '#!/bin/sh\n',
  };
  const script = join(REPO_ROOT, 'test', 'fixtures', 'pipe_zip.py');
  const input = JSON.stringify(Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, Buffer.from(v).toString('base64')])));
  const archive = join(dir, 'slip.zip');
  await writeFile(archive, execFileSync('python3', [script], { input }));
  const status = join(work, 'status.jsonl');
  const result = await cli(['run', '--all-domains', archive, '--sink', 'maildir:mail', '--status-log', status], { cwd: work });
  // The two hostile .json entries may hold events counted nowhere: the run alarms (5).
  t.is(result.code, 5, result.stderr);
  const { lines, summary } = await readStatusLog(status);
  t.is(summary.entriesNotRead, 2);
  t.deepEqual(lines.filter((l) => l.reason === 'hostile-entry-name').length, 3);
  t.is(summary.delivered, 2);
  t.deepEqual((await readdir(work)).sort(), ['mail', 'status.jsonl']);
  t.deepEqual((await readdir(dir)).sort(), ['slip.zip', 'work']);
  const [stored] = await readMaildir(join(work, 'mail'));
  // Named by the last part of its file name only (no folder a client could save into); its id as it was.
  t.regex(stored!.parsed.text ?? '', /Attachment "evil\.sh" \(\.\.\/\.\.\/evil\) is not included/);
});
