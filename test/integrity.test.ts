// Nothing lost at the edges: each test here failed on the main of 2026-11-26 (issue 8).
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { writeArchive } from './helpers/archive.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { pairs, readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

type Json = Record<string, unknown>;

const users = [
  { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
  { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' },
  { id: 'u_3', displayName: 'Li', email: 'li@acme.example' },
];
const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2'] }];
const message = (id: string, extra: Json = {}) => ({ id, conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_1', text: id, ...extra });
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** The raw bytes of a zip entry, read by Python's zipfile (not by our reader). */
function entryBytes(archive: string, name: string): Buffer {
  return execFileSync('python3', ['-c', 'import sys,zipfile;sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))', archive, name], { maxBuffer: 1 << 30 });
}

/** Every `kept` folder of the status log's rejected lines, by item id. */
function keptByItem(lines: Json[]): Map<string, string> {
  return new Map(lines.filter((l) => l.outcome === 'rejected').map((l) => [String(l.itemId), String(l.kept)]));
}

test('two different events with one id in one export: the first is delivered, the second rejected duplicate-id and kept; a re-run adds nothing', async (t) => {
  const dir = await tempDir(t);
  const events = [message('m_dup', { text: 'the first' }), message('m_dup', { text: 'the second, same second' }), message('m_ok')];
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': events } });
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const args = ['run', archive, '--sink', `maildir:${out}`, '--domain', 'acme.example', '--status-log', status, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%'];
  const first = await cli(args);
  t.is(first.code, 0, first.stderr);
  const { lines, summary } = await readStatusLog(status);
  t.deepEqual(summary.rejected, { 'duplicate-id': 1 });
  const stored = await readMaildir(out);
  t.deepEqual(pairs(stored), ['jane@acme.example m_dup', 'jane@acme.example m_ok', 'omar@acme.example m_dup', 'omar@acme.example m_ok']);
  t.true(stored.filter((m) => m.itemId === 'm_dup').every((m) => m.parsed.text?.includes('the first')));
  const kept = keptByItem(lines).get('m_dup')!;
  t.like(JSON.parse(await readFile(join(kept, 'event.json'), 'utf8')), { text: 'the second, same second' });
  const again = await cli(args);
  t.is(again.code, 0, again.stderr);
  const second = (await readStatusLog(status)).summary;
  t.deepEqual([second.delivered, second.skipped, second.failed], [0, 4, 0]);
  t.is((await readMaildir(out)).length, 4);
});

test('a rejected item whose id holds line breaks is kept with a reason.txt of one line: the id cannot forge another reason', async (t) => {
  const dir = await tempDir(t);
  const forged = { ...message('x\nreason: ok-fake\n'), conversationId: 'nope' };
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': [forged, message('m_ok')] } });
  const status = join(dir, 'status.jsonl');
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', status, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%']);
  t.is(result.code, 0, result.stderr);
  const kept = keptByItem((await readStatusLog(status)).lines).get('x\nreason: ok-fake\n')!;
  const reason = await readFile(join(kept, 'reason.txt'), 'utf8');
  t.is(reason.split('\n').length, 2, reason);
  t.regex(reason, /^unknown-conversation: event x\\u000areason: ok-fake\\u000a names unknown conversation "nope"\n$/);
});

test('only valid join/leave events change who receives what (checked against a hand-made expectation)', async (t) => {
  const dir = await tempDir(t);
  const room = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1'] }];
  const at = (h: number, extra: Json) => ({ conversationId: 'c_1', senderId: 'u_1', sentAt: `2026-11-23T${String(h).padStart(2, '0')}:00:00Z`, ...extra });
  const events = [
    at(8, { id: 'j_unknown_sender', type: 'join', senderId: 'u_nobody', memberId: 'u_2' }),
    { ...at(8, { id: 'j_bad_date', type: 'join', memberId: 'u_2' }), sentAt: '2026-02-31T10:00:00Z' },
    at(8, { id: 'j_unknown_member', type: 'join', memberId: 'u_ghost' }),
    at(9, { id: 'j_li', type: 'join', memberId: 'u_3' }),
    at(9, { id: 'j_li', type: 'leave', memberId: 'u_3' }), // a reused id: rejected, so Li stays
    at(10, { id: 'm_after', type: 'message', text: 'who gets this?' }),
  ];
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations: room, messages: { '0.json': events } });
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const result = await cli(['run', archive, '--sink', `maildir:${out}`, '--domain', 'acme.example', '--status-log', status, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%']);
  t.is(result.code, 0, result.stderr);
  const { summary } = await readStatusLog(status);
  t.deepEqual(summary.rejected, { 'unknown-user': 2, 'invalid-field:sentAt': 1, 'duplicate-id': 1 });
  // Jane is the only member at windowStart; of the joins only Li's is valid.
  t.deepEqual(pairs(await readMaildir(out)).filter((p) => p.endsWith('m_after')), ['jane@acme.example m_after', 'li@acme.example m_after']);
});

test('an impossible date is rejected, never moved to another day', async (t) => {
  const dir = await tempDir(t);
  const events = [message('m_feb31', { sentAt: '2026-02-31T10:00:00Z' }), message('m_hour25', { sentAt: '2026-11-23T25:00:00Z' }), message('m_ok')];
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': events } });
  const status = join(dir, 'status.jsonl');
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', status, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%']);
  t.is(result.code, 0, result.stderr);
  const { lines } = await readStatusLog(status);
  for (const id of ['m_feb31', 'm_hour25']) t.like(lines.find((l) => l.itemId === id), { outcome: 'rejected', reason: 'invalid-field:sentAt' });
});

test('a rejected item that cannot be kept is failed (not-kept), exits 1, and says where it should have been', async (t) => {
  const dir = await tempDir(t);
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': [message('m_ok'), message('m_bad', { conversationId: 'c_none' })] } });
  const blocker = join(dir, 'not-a-folder');
  await writeFile(blocker, 'a file where the rejects folder should be');
  const status = join(dir, 'status.jsonl');
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', status, '--rejects', join(blocker, 'rejects'), '--max-rejected', '100%', '--json']);
  t.is(result.code, 1, result.stderr);
  const { lines, summary } = await readStatusLog(status);
  t.like(lines.find((l) => l.itemId === 'm_bad'), { outcome: 'failed', reason: 'not-kept' });
  t.true(String(lines.find((l) => l.itemId === 'm_bad')!.detail).includes(join(blocker, 'rejects')));
  t.is(summary.rejectedNotKept, 1);
  t.is(summary.delivered, 2);
  t.is((JSON.parse(result.stdout) as { rejectedNotKept: number }).rejectedNotKept, 1);
});

test('a kept event is the exact bytes of the archive: big numbers, odd spacing and 100,000 levels of nesting survive', async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const odd = '{ "id" : "m_num", "conversationId":"c_none", "type":"message", "sentAt":"2026-11-23T09:00:00Z", "senderId":"u_1", "n": 123456789012345678901234567890, "d": 0.1000000000000000000000000000000001 , "e":"\\u00e9" }';
  const depth = 100_000;
  const deep = `{"id":"m_deep","conversationId":"c_none","type":"message","sentAt":"2026-11-23T09:00:00Z","senderId":"u_1","x":${'['.repeat(depth)}${']'.repeat(depth)}}`;
  const deepValid = `{"id":"m_deep_ok","conversationId":"c_1","type":"message","sentAt":"2026-11-23T09:00:00Z","senderId":"u_1","text":"deep","x":${'['.repeat(depth)}${']'.repeat(depth)}}`;
  const file = `[${odd},\n  ${deep},${deepValid}]`;
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: {}, extra: { 'messages/0.json': file } });
  const status = join(dir, 'status.jsonl');
  const out = join(dir, 'mail');
  const result = await cli(['run', archive, '--sink', `maildir:${out}`, '--domain', 'acme.example', '--status-log', status, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%']);
  t.is(result.code, 0, result.stderr);
  t.notRegex(result.stderr, /Maximum call stack/);
  const kept = keptByItem((await readStatusLog(status)).lines);
  t.is(await readFile(join(kept.get('m_num')!, 'event.json'), 'utf8'), odd);
  t.is(await readFile(join(kept.get('m_deep')!, 'event.json'), 'utf8'), deep);
  t.deepEqual(pairs(await readMaildir(out)), ['jane@acme.example m_deep_ok', 'omar@acme.example m_deep_ok']);
});

test('an attachment shared by four oversize events is kept once (content-addressed), each event pointing at it', async (t) => {
  const dir = await tempDir(t);
  const big = Buffer.from(Array.from({ length: 1024 * 1024 }, (_, i) => (i * 7919) % 251));
  const events = ['m_a', 'm_b', 'm_c', 'm_d'].map((id) => message(id, { attachments: [{ id: 'a_big', fileName: 'big.bin' }] }));
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': [...events, message('m_ok')] }, attachments: { a_big: big } });
  const rejects = join(dir, 'rejects');
  const status = join(dir, 'status.jsonl');
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--max-item-size', '512KiB', '--rejects', rejects, '--status-log', status, '--max-rejected', '100%']);
  t.is(result.code, 0, result.stderr);
  const kept = keptByItem((await readStatusLog(status)).lines);
  t.is(kept.size, 4);
  const inodes = new Set<number>();
  for (const folder of kept.values()) {
    const [name] = await readdir(join(folder, 'attachments'));
    const path = join(folder, 'attachments', name!);
    t.true((await readFile(path)).equals(big));
    inodes.add((await stat(path)).ino);
  }
  t.is(inodes.size, 1, 'one copy of the bytes on disk');
  const du = Number(execFileSync('du', ['-sb', rejects]).toString().split('\t')[0]);
  t.true(du < 2 * big.length, `rejects folder holds ${du} bytes`);
});

test('an event too large to hold is rejected event-too-large, its exact bytes streamed to the rejects folder; the run goes on', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const huge = `{"id":"m_huge","conversationId":"c_1","type":"message","sentAt":"2026-11-23T09:00:00Z","senderId":"u_1","text":"${randomBytes(15 * 1024 * 1024).toString('base64')}"}`;
  const file = `[${JSON.stringify(message('m_before'))},${huge},${JSON.stringify(message('m_after'))}]`;
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: {}, extra: { 'messages/0.json': file } });
  const status = join(dir, 'status.jsonl');
  const out = join(dir, 'mail');
  const result = await cli(['run', archive, '--sink', `maildir:${out}`, '--domain', 'acme.example', '--status-log', status, '--rejects', join(dir, 'rejects'), '--max-event-size', '1MiB', '--max-rejected', '100%']);
  t.is(result.code, 0, result.stderr);
  const { lines } = await readStatusLog(status);
  const line = lines.find((l) => l.outcome === 'rejected')!;
  t.is(line.reason, 'event-too-large');
  t.is(sha256(await readFile(join(String(line.kept), 'event.json'))), sha256(Buffer.from(huge)));
  t.deepEqual(pairs(await readMaildir(out)), ['jane@acme.example m_after', 'jane@acme.example m_before', 'omar@acme.example m_after', 'omar@acme.example m_before']);
  t.is(entryBytes(archive, 'messages/0.json').length, Buffer.byteLength(file));
});

test('a status log that cannot be written (disk full) ends the run with a documented code naming the log, before any delivery', async (t) => {
  const dir = await tempDir(t);
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': [message('m_1'), message('m_2')] } });
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', '/dev/full', '--rejects', join(dir, 'rejects'), '--json']);
  // The start record cannot be written: the run stops before the sink is fed (records-first.test.ts).
  t.is(result.code, 2, result.stderr);
  t.regex(result.log, /\/dev\/full/);
  t.notRegex(result.stderr, /^\s+at /m, 'no stack trace');
  t.like(JSON.parse(result.stdout), { record: 'failure', code: 'E_STATUS_LOG', exitCode: 2 });
  t.deepEqual(await readMaildir(join(dir, 'mail')).catch(() => []), []);
});

/** A plugin that does something to the archive file when the first item reaches it. */
async function archiveTamperingPlugin(dir: string, body: string): Promise<string> {
  const path = join(dir, 'tamper.mjs');
  await writeFile(
    path,
    `import fs from 'node:fs';\nlet done = false;\nexport default { name: 'tamper', version: '1.0.0', hostApi: '^1.0.0', transform(item) {\n  if (!done) { done = true; ${body} }\n  return item;\n} };\n`,
  );
  return path;
}

test('an archive replaced mid-run (renamed over) is still read as it was checked: the run holds what it opened', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 2000, seed: 3, edgeCases: false });
  const other = join(dir, 'other.zip');
  await generateSample(other, { events: 500, seed: 9, edgeCases: false });
  const reference = join(dir, 'reference');
  t.is((await cli(['run', archive, '--sink', `maildir:${reference}`, '--all-domains', '--rejects', join(dir, 'r0')])).code, 0);
  const plugin = await archiveTamperingPlugin(dir, `fs.renameSync(${JSON.stringify(other)}, ${JSON.stringify(archive)});`);
  const out = join(dir, 'mail');
  const result = await cli(['run', archive, '--sink', `maildir:${out}`, '--all-domains', '--plugin', plugin, '--rejects', join(dir, 'r1'), '--json']);
  t.is(result.code, 0, result.stderr);
  t.deepEqual(pairs(await readMaildir(out)), pairs(await readMaildir(reference)));
});

test('an archive rewritten in place mid-run fails with a summary and exit 1 (deliveries happened), never exit 2', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 20000, seed: 3, messageFiles: 1, edgeCases: false });
  // Near the end of the messages file's compressed bytes (found by Python's zipfile), overwritten in place.
  const middle = Number(execFileSync('python3', ['-c', 'import sys,zipfile;i=zipfile.ZipFile(sys.argv[1]).getinfo("messages/0000.json");print(i.header_offset+i.compress_size*9//10)', archive]).toString());
  const plugin = await archiveTamperingPlugin(dir, `const fd = fs.openSync(${JSON.stringify(archive)}, 'r+'); fs.writeSync(fd, Buffer.alloc(4096, 0x41), 0, 4096, ${middle}); fs.closeSync(fd);`);
  const status = join(dir, 'status.jsonl');
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--all-domains', '--plugin', plugin, '--rejects', join(dir, 'r'), '--status-log', status, '--json']);
  t.is(result.code, 1, result.stderr);
  const summary = JSON.parse(result.stdout) as { delivered: number; error: { code: string; message: string } };
  t.true(summary.delivered > 0);
  t.regex(summary.error.code, /^E_ARCHIVE_/);
  t.like((await readStatusLog(status)).summary, { delivered: summary.delivered });
});

test('a run that delivers nothing, or rejects more than --max-rejected, exits 5 with an alarm in the summary', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 300, seed: 5 });
  const typo = await cli(['run', archive, '--sink', `maildir:${join(dir, 'a')}`, '--domain', 'acme.exmaple', '--rejects', join(dir, 'r'), '--json']);
  t.is(typo.code, 5, typo.stderr);
  const summary = JSON.parse(typo.stdout) as { alarm: string; balanced: boolean; delivered: number };
  t.regex(summary.alarm, /nothing was delivered/);
  t.true(summary.balanced, 'every item is still accounted for');
  const tiny = await cli(['run', archive, '--sink', `maildir:${join(dir, 'b')}`, '--domain', 'acme.example', '--max-item-size', '1KiB', '--rejects', join(dir, 'r')]);
  t.is(tiny.code, 5);
  t.regex(tiny.stdout, /ALARM: .*rejected, over --max-rejected 10%/);
  const normal = await cli(['run', archive, '--sink', `maildir:${join(dir, 'c')}`, '--domain', 'acme.example', '--rejects', join(dir, 'r')]);
  t.is(normal.code, 0, normal.stderr);
  const strict = await cli(['run', archive, '--sink', `maildir:${join(dir, 'd')}`, '--domain', 'acme.example', '--rejects', join(dir, 'r'), '--max-rejected', '0%', '--json']);
  t.is(strict.code, 5);
  t.regex((JSON.parse(strict.stdout) as { alarm: string }).alarm, /over --max-rejected 0%/);
  const badShare = await cli(['run', archive, '--sink', `maildir:${join(dir, 'd')}`, '--domain', 'acme.example', '--max-rejected', '150%']);
  t.is(badShare.code, 2);
});

test('a maildir run needs --domain or --all-domains, so other firms\' traders get no mailbox by default', async (t) => {
  const dir = await tempDir(t);
  const bare = await cli(['run', '--sample', '--sink', `maildir:${join(dir, 'a')}`, '--rejects', join(dir, 'r')]);
  t.is(bare.code, 2);
  t.regex(bare.log, /--domain .*--all-domains/);
  t.deepEqual(await readMaildir(join(dir, 'a')), []);
  const both = await cli(['run', '--sample', '--sink', `maildir:${join(dir, 'a')}`, '--domain', 'acme.example', '--all-domains']);
  t.is(both.code, 2);
  const scoped = await cli(['run', '--sample', '--sink', `maildir:${join(dir, 'b')}`, '--domain', 'acme.example', '--rejects', join(dir, 'r')]);
  t.is(scoped.code, 0, scoped.stderr);
  const mailboxes = new Set((await readMaildir(join(dir, 'b'))).map((m) => m.mailbox));
  t.true(mailboxes.size > 0);
  t.true([...mailboxes].every((m) => m.endsWith('@acme.example')), [...mailboxes].join(' '));
});

test('config keys that are Object.prototype names are unknown keys, named in the error', async (t) => {
  const dir = await tempDir(t);
  for (const key of ['constructor', 'toString', 'hasOwnProperty', '__proto__']) {
    const config = join(dir, `${key}.json`);
    await writeFile(config, `{"sink": "maildir:${join(dir, 'm')}", "domains": ["acme.example"], ${JSON.stringify(key)}: {}}`);
    const result = await cli(['run', '--sample', '--config', config]);
    t.is(result.code, 2, key);
    t.true(result.log.includes(`unknown key ${JSON.stringify(key)}`), `${key}: ${result.log}`);
  }
});

test('a corrupt archive run with --state-dir leaves a run record with its error, name and sha256; status shows it', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'corrupt.zip');
  const bytes = Buffer.concat([Buffer.from('PK\u0003\u0004'), Buffer.alloc(5000, 7)]);
  await writeFile(archive, bytes);
  const state = join(dir, 'state');
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'm')}`, '--domain', 'acme.example', '--state-dir', state]);
  t.is(result.code, 2);
  const [log] = await readdir(join(state, 'runs'));
  const records = (await readFile(join(state, 'runs', log!), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Json);
  const failure = records.find((r) => r.record === 'failure')!;
  t.like(failure, { archive, sha256: sha256(bytes), code: 'E_ARCHIVE_UNREADABLE', exitCode: 2 });
  const status = await cli(['status', '--state-dir', state]);
  t.is(status.code, 0);
  t.notRegex(status.stdout, /no runs recorded/);
  t.true(status.stdout.includes(sha256(bytes)), status.stdout);
  t.regex(status.stdout, /E_ARCHIVE_UNREADABLE/);
});

test('the drop folder: a poison archive goes to failed/ with its reason, one with a 15 MB event is delivered with it kept, and the next archives still run', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const inbox = join(dir, 'in');
  await (await import('node:fs/promises')).mkdir(inbox);
  await writeFile(join(inbox, 'a-corrupt.zip'), Buffer.concat([Buffer.from('PK\u0003\u0004'), randomBytes(4000)]));
  const huge = `{"id":"m_huge","conversationId":"c_1","type":"message","sentAt":"2026-11-23T09:00:00Z","senderId":"u_1","text":"${randomBytes(15 * 1024 * 1024).toString('base64')}"}`;
  await writeArchive(join(inbox, 'b-poison-event.zip'), { users, conversations, messages: {}, extra: { 'messages/0.json': `[${JSON.stringify(message('m_1'))},${huge}]` } });
  await writeArchive(join(inbox, 'c-good.zip'), { users, conversations, manifest: { ...(await import('./helpers/archive.js')).MANIFEST, exportId: 'acme-good' }, messages: { '0.json': [message('m_2')] } });
  const out = join(dir, 'mail');
  const args = ['run', '--inbox', inbox, '--state-dir', join(dir, 'state'), '--sink', `maildir:${out}`, '--domain', 'acme.example', '--settle', '0', '--max-event-size', '1MiB', '--max-rejected', '100%', '--rejects', join(dir, 'rejects')];
  const result = await cli(args);
  t.is(result.code, 2, result.stderr);
  t.deepEqual((await readdir(join(inbox, 'failed'))).sort(), ['a-corrupt.zip', 'a-corrupt.zip.reason.txt']);
  t.regex(await readFile(join(inbox, 'failed', 'a-corrupt.zip.reason.txt'), 'utf8'), /E_ARCHIVE_UNREADABLE/);
  t.deepEqual((await readdir(join(inbox, 'done'))).sort(), ['b-poison-event.zip', 'c-good.zip']);
  t.deepEqual(pairs(await readMaildir(out)), ['jane@acme.example m_1', 'jane@acme.example m_2', 'omar@acme.example m_1', 'omar@acme.example m_2']);
  const again = await cli(args);
  t.is(again.code, 0, again.stderr);
});

test('an event with an impossible time is rejected, and its record carries no time it never had (no roll-over to 1 March or the next day)', async (t) => {
  const dir = await tempDir(t);
  const events = [message('m_feb', { sentAt: '2026-02-29T10:00:00Z' }), message('m_24', { sentAt: '2026-11-23T24:00:00Z' }), ...Array.from({ length: 18 }, (_, i) => message(`m_${i}`))];
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': events } });
  const status = join(dir, 'status.jsonl');
  t.is((await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', status, '--rejects', join(dir, 'rejects')])).code, 0);
  const { lines } = await readStatusLog(status);
  for (const id of ['m_feb', 'm_24']) {
    const line = lines.find((l) => l.itemId === id)!;
    t.like(line, { outcome: 'rejected', reason: 'invalid-field:sentAt' }, id);
    t.false('sentAt' in line, `${id}: ${String(line.sentAt)}`);
  }
});

test('an attachment that fails its CRC rejects its item attachment-unreadable, which is kept (with a note where the attachment would be), not failed for ever', async (t) => {
  const dir = await tempDir(t);
  const secret = 'attachment bytes that will be damaged in the zip';
  const events = [message('m_att', { attachments: [{ id: 'a1', fileName: 'a.txt' }] }), ...Array.from({ length: 19 }, (_, i) => message(`m_${i}`))];
  const bytes = await readFile(await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': events }, attachments: { a1: Buffer.from(secret) } }, { store: true }));
  const at = bytes.indexOf(secret);
  bytes[at] ^= 0x20; // the data changed, the central directory's CRC-32 not
  const archive = join(dir, 'bad-crc.zip');
  await writeFile(archive, bytes);
  const status = join(dir, 'status.jsonl');
  const args = ['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', status, '--rejects', join(dir, 'rejects'), '--state-dir', join(dir, 'state')];
  const result = await cli(args);
  t.is(result.code, 0, result.stderr);
  const { lines, summary } = await readStatusLog(status);
  t.is(summary.rejectedNotKept, 0);
  const line = lines.find((l) => l.itemId === 'm_att')!;
  t.like(line, { outcome: 'rejected', reason: 'attachment-unreadable' });
  const [noteName, ...others] = await readdir(join(String(line.kept), 'attachments'));
  t.deepEqual(others, []);
  t.regex(noteName!, /^a1.*\.unreadable\.txt$/);
  const note = await readFile(join(String(line.kept), 'attachments', noteName!), 'utf8');
  t.regex(note, /E_ARCHIVE_CORRUPT: .*CRC-32/);
  t.is((await cli(args)).code, 0, 'a re-run completes too');
});

test('input changed or ignored is recorded: bytes that are not UTF-8 and entries outside the layout each leave a note; entries named like messages files but not read make the run alarm (exit 5), and the export is never called complete', async (t) => {
  const dir = await tempDir(t);
  const bad = Buffer.concat([Buffer.from('[{"id":"m_latin1","conversationId":"c_1","type":"message","sentAt":"2026-11-23T09:00:00Z","senderId":"u_1","text":"caf'), Buffer.from([0xe9]), Buffer.from('"}]')]);
  const lookalike = 'm\u0435ssages/0.json'; // a Cyrillic е
  // A messages file whose name holds a control character is set aside as hostile: it may hold events too.
  const hostile = 'messages/5\u0001.json';
  const extra = { 'messages/0.json': bad, 'Messages/1.json': '[]', 'messages/2.JSON': '[]', 'messages/sub/3.json': '[]', './messages/4.json': '[]', [lookalike]: '[]', [hostile]: '[]' };
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: {}, extra });
  const status = join(dir, 'status.jsonl');
  const out = join(dir, 'mail');
  const state = join(dir, 'state');
  const result = await cli(['run', archive, '--sink', `maildir:${out}`, '--domain', 'acme.example', '--status-log', status, '--rejects', join(dir, 'rejects'), '--state-dir', state]);
  t.is(result.code, 5, result.stderr);
  const { lines, summary } = await readStatusLog(status);
  t.is(summary.entriesNotRead, 6);
  // Every event read is accounted for, but the entries passed over may hold more: the export's account says so.
  const account = await cli(['status', '--state-dir', state, '--export', 'acme-2026-11-23', '--json']);
  t.is(account.code, 1, account.stdout);
  t.like(JSON.parse(account.stdout), { account: { complete: false, balanced: true, items: { entriesNotRead: 6 } } });
  t.regex((await cli(['status', '--state-dir', state, '--export', 'acme-2026-11-23'])).stdout, /INCOMPLETE[^]*6 archive entries named like a messages file NOT read/);
  t.regex(String(summary.alarm), /6 archive entries are named like a messages file but not as messages\/<name>\.json .* counted nowhere/);
  const notes = lines.filter((l) => l.record === 'note');
  t.like(notes.find((n) => n.reason === 'invalid-utf8'), { itemId: 'm_latin1' });
  t.regex(String(notes.find((n) => n.reason === 'invalid-utf8')!.detail), /byte 117 of the event/);
  const ignored = notes.filter((n) => n.reason === 'ignored-entry').map((n) => String(n.detail));
  for (const name of ['Messages/1.json', 'messages/2.JSON', 'messages/sub/3.json', './messages/4.json', lookalike]) {
    t.true(ignored.some((d) => d.includes(JSON.stringify(name))), `${name}: ${ignored.join(' | ')}`);
  }
  t.true(notes.some((n) => n.reason === 'hostile-entry-name' && String(n.detail).includes(JSON.stringify(hostile))));
  t.is(summary.notes, notes.length);
  t.deepEqual(pairs(await readMaildir(out)), ['jane@acme.example m_latin1', 'omar@acme.example m_latin1']);
});

test('a plugin\'s stray promise that rejects (and a timer that throws) stops the run as SIGTERM does: its summary recorded with E_INTERNAL, exit 70, never an unrecorded exit 1; a run after it finishes the export', async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 2000, seed: 4, edgeCases: false });
  const reference = join(dir, 'reference');
  t.is((await cli(['run', archive, '--sink', `maildir:${reference}`, '--all-domains', '--rejects', join(dir, 'r0')])).code, 0);
  for (const [name, stray] of [
    ['rejection', `Promise.reject(new Error('audit service down'));`],
    ['timer', `setTimeout(() => { throw new Error('audit service down'); }, 0);`],
  ]) {
    const plugin = await archiveTamperingPlugin(dir, stray!);
    const out = join(dir, `mail-${name}`);
    const state = join(dir, `state-${name}`);
    const status = join(dir, `status-${name}.jsonl`);
    const args = ['run', archive, '--sink', `maildir:${out}`, '--all-domains', '--rejects', join(dir, `r-${name}`), '--state-dir', state, '--status-log', status, '--json'];
    const result = await cli([...args, '--plugin', plugin]);
    t.is(result.code, 70, `${name}: ${result.stderr}`);
    const summary = JSON.parse(result.stdout) as { error: { code: string; message: string } };
    t.is(summary.error.code, 'E_INTERNAL', name);
    t.regex(summary.error.message, /no code handled .*audit service down/, name);
    t.like((await readStatusLog(status)).summary, { error: { code: 'E_INTERNAL' } });
    const again = await cli(args);
    t.is(again.code, 0, `${name}, the run after: ${again.stderr}`);
    t.deepEqual(pairs(await readMaildir(out)), pairs(await readMaildir(reference)), name);
  }
});
