import test from 'ava';
import { hostname } from 'node:os';
import { execFileSync } from 'node:child_process';
import { appendFile, mkdir, readdir, readFile, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { settleState } from '../src/state/inbox.js';
import { cli, runRecords } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

// Faults of the drop folder (run --inbox): what a later archive's setup error, a full state dir,
// a name taken away mid-run, a held lock or two quick runs must not hide or break.

const old = (minutes: number) => new Date(Date.now() - minutes * 60_000);

async function dropFolder(t: Parameters<typeof tempDir>[0]): Promise<{ dir: string; inbox: string; state: string; mail: string; common: string[] }> {
  const dir = await tempDir(t);
  const inbox = join(dir, 'incoming');
  await mkdir(inbox);
  const state = join(dir, 'state');
  const mail = join(dir, 'mail');
  return { dir, inbox, state, mail, common: ['run', '--all-domains', '--inbox', inbox, '--state-dir', state, '--sink', `maildir:${mail}`, '--rejects', join(dir, 'r'), '--quiet'] };
}

const jsonLines = (stdout: string) => stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

test('--inbox --json: a line for every archive, the refused (a failure record) and the already completed included', async (t) => {
  t.timeout(60_000);
  const { inbox, common } = await dropFolder(t);
  await generateSample(join(inbox, 'a-good.zip'), { events: 40, seed: 1, edgeCases: false });
  await writeFile(join(inbox, 'b-corrupt.zip'), 'not a zip');
  await writeFile(join(inbox, 'c-again.zip'), await readFile(join(inbox, 'a-good.zip')));
  await utimes(join(inbox, 'a-good.zip'), old(30), old(30));
  await utimes(join(inbox, 'b-corrupt.zip'), old(20), old(20));
  await utimes(join(inbox, 'c-again.zip'), old(10), old(10));
  const result = await cli([...common, '--json']);
  t.is(result.code, 2, result.stderr);
  const lines = jsonLines(result.stdout);
  t.is(lines.length, 3, result.stdout);
  t.like(lines[0], { record: 'summary', archive: join(inbox, 'a-good.zip') });
  t.like(lines[1], { record: 'failure', archive: join(inbox, 'b-corrupt.zip'), exitCode: 2 });
  t.regex(String(lines[1]!.code), /^E_ARCHIVE_/);
  t.like(lines[2], { record: 'already-completed', archive: join(inbox, 'c-again.zip'), sha256: lines[0]!.sha256 });
});

/**
 * Two archives; part-way through the first the Maildir root goes (a file in its place): its later
 * deliveries fail, and the second's sink cannot open (a setup error, E_SINK_UNAVAILABLE).
 */
async function sinkGoneAtSecond(t: Parameters<typeof tempDir>[0], json: boolean) {
  const { dir, inbox, mail, common } = await dropFolder(t);
  await generateSample(join(inbox, 'k1.zip'), { events: 200, seed: 1, day: '2026-11-22', edgeCases: false });
  await generateSample(join(inbox, 'k2.zip'), { events: 40, seed: 2, day: '2026-11-23', edgeCases: false });
  await utimes(join(inbox, 'k1.zip'), old(30), old(30));
  await utimes(join(inbox, 'k2.zip'), old(20), old(20));
  const breaker = join(dir, 'breaker.mjs');
  const marker = join(dir, 'broken');
  await writeFile(
    breaker,
    // It waits for the first deliveries to be stored (a message file in a mailbox's cur/) before it breaks the root.
    `import { existsSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
const root = ${JSON.stringify(mail)};
const stored = () => { try { return readdirSync(root).some((m) => { try { return readdirSync(root + '/' + m + '/.INBOX.Pivot/cur').length > 0; } catch { return false; } }); } catch { return false; } };
let n = 0;
export default { name: 'breaker', version: '1.0.0', hostApi: '^1.0.0', async transform(item) {
  if (++n === 100 && !existsSync(${JSON.stringify(marker)})) {
    for (let i = 0; i < 250 && !stored(); i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300));
    writeFileSync(${JSON.stringify(marker)}, '');
    renameSync(root, root + '.gone');
    writeFileSync(root, 'not a Maildir root');
  }
  return item;
} };
`,
  );
  const result = await cli([...common, '--plugin', breaker, ...(json ? ['--json'] : [])]);
  t.deepEqual((await readdir(inbox)).sort(), ['k1.zip', 'k2.zip'], 'both left for the next run');
  return { inbox, result };
}

test('--inbox: a setup error at a later archive (its sink gone) still prints the earlier archive\'s summary, and exits 1 after deliveries, not 2', async (t) => {
  t.timeout(60_000);
  const { result } = await sinkGoneAtSecond(t, false);
  t.is(result.code, 1, result.stderr);
  t.regex(result.stdout, /export acme-2026-11-22 -> maildir:[\s\S]*delivered +[1-9][\s\S]*failed +[1-9]/);
  t.regex(result.stdout, /k2\.zip: stopped \(E_SINK_UNAVAILABLE: /);
  t.regex(result.stdout, /inbox: 1 archive\(s\) handled, 0 still being copied in; stopped at k2\.zip/);
  t.regex(result.log, /k2\.zip: E_SINK_UNAVAILABLE: .*the drop-folder run stops here/);
});

test('--inbox --json: a setup error at a later archive prints the earlier archive\'s summary line, then a failure line for the archive it stopped at', async (t) => {
  t.timeout(60_000);
  const { inbox, result } = await sinkGoneAtSecond(t, true);
  t.is(result.code, 1, result.stderr);
  const lines = jsonLines(result.stdout);
  t.is(lines.length, 2, result.stdout);
  t.like(lines[0], { record: 'summary', archive: join(inbox, 'k1.zip') });
  t.true((lines[0]!.delivered as number) > 0);
  t.true((lines[0]!.failed as number) > 0);
  t.like(lines[1], { record: 'failure', archive: join(inbox, 'k2.zip'), code: 'E_SINK_UNAVAILABLE', outcome: 'stopped' });
});

test('--inbox: a state dir that cannot record an archive completed is no bug: exit 1, the summary printed, the archive left in the drop folder (not failed/)', async (t) => {
  t.timeout(60_000);
  const { inbox, state, common } = await dropFolder(t);
  await generateSample(join(inbox, 'a1.zip'), { events: 40, seed: 1, edgeCases: false });
  await utimes(join(inbox, 'a1.zip'), old(30), old(30));
  // STATE/completed cannot be made (a file in its way), as a full or read-only state dir refuses it.
  await mkdir(state);
  await writeFile(join(state, 'completed'), 'in the way');
  const text = await cli(common);
  t.is(text.code, 1, text.stderr);
  t.regex(text.stdout, /export acme-2026-11-23 -> maildir:/);
  t.regex(text.stdout, /a1\.zip: not-recorded \(E_STATUS_LOG: every item is accounted for, but its completion cannot be recorded/);
  t.notRegex(text.log, /E_INTERNAL|a bug in pivot-archive/);
  t.deepEqual(await readdir(inbox), ['a1.zip'], 'left in place, neither in done/ nor in failed/');
  const json = await cli([...common, '--json']);
  t.is(json.code, 1, json.stderr);
  const lines = jsonLines(json.stdout);
  t.is(lines.length, 1);
  t.like(lines[0], { record: 'summary', notRecorded: { code: 'E_STATUS_LOG' } });
  // Once the state dir can record it, the next run completes it (the sink skips what it holds).
  await rm(join(state, 'completed'));
  const fixed = await cli(common);
  t.is(fixed.code, 0, fixed.stderr);
  t.deepEqual(await readdir(join(inbox, 'done')), ['a1.zip']);
});

test('--inbox: an archive taken out of the drop folder mid-run (another host\'s run moved it) is passed over: no failure, no failed/', async (t) => {
  t.timeout(60_000);
  const { dir, inbox, state, common } = await dropFolder(t);
  await generateSample(join(inbox, 'a1.zip'), { events: 40, seed: 1, day: '2026-11-22', edgeCases: false });
  await generateSample(join(inbox, 'a2.zip'), { events: 40, seed: 2, day: '2026-11-23', edgeCases: false });
  await utimes(join(inbox, 'a1.zip'), old(30), old(30));
  await utimes(join(inbox, 'a2.zip'), old(20), old(20));
  await mkdir(join(dir, 'elsewhere'));
  const taker = join(dir, 'taker.mjs');
  await writeFile(taker, `import { existsSync, renameSync } from 'node:fs';\nlet n = 0;\nexport default { name: 'taker', version: '1.0.0', hostApi: '^1.0.0', transform(item) { if (++n === 10 && existsSync(${JSON.stringify(join(inbox, 'a2.zip'))})) renameSync(${JSON.stringify(join(inbox, 'a2.zip'))}, ${JSON.stringify(join(dir, 'elsewhere', 'a2.zip'))}); return item; } };\n`);
  const result = await cli([...common, '--plugin', taker]);
  t.is(result.code, 0, result.stderr);
  t.regex(result.log, /warn a2\.zip: gone from the drop folder before it was read .*: passed over/);
  t.notRegex(result.log, /E_ARCHIVE_UNREADABLE/);
  t.deepEqual((await readdir(inbox)).sort(), ['done']);
  t.deepEqual(await readdir(join(inbox, 'done')), ['a1.zip']);
  t.false((await runRecords(state)).some((r) => r.record === 'failure'), 'no failure record');
});

test('--inbox: an archive another job (another state dir and sink) moved to done/ before this run read it is read there and left there: this sink gets it too, this state dir records it', async (t) => {
  t.timeout(90_000);
  const { dir, inbox, state, mail, common } = await dropFolder(t);
  await generateSample(join(inbox, 'a1.zip'), { events: 40, seed: 1, day: '2026-11-22', edgeCases: false });
  await generateSample(join(inbox, 'a2.zip'), { events: 40, seed: 2, day: '2026-11-23', edgeCases: false });
  await utimes(join(inbox, 'a1.zip'), old(30), old(30));
  await utimes(join(inbox, 'a2.zip'), old(20), old(20));
  // The other job (its own state dir, another sink) completes a2 while this run reads a1, and moves it to done/.
  const other = join(dir, 'other.mjs');
  await writeFile(other, `import { existsSync, mkdirSync, renameSync } from 'node:fs';\nlet n = 0;\nexport default { name: 'other-job', version: '1.0.0', hostApi: '^1.0.0', transform(item) { if (++n === 10 && existsSync(${JSON.stringify(join(inbox, 'a2.zip'))})) { mkdirSync(${JSON.stringify(join(inbox, 'done'))}, { recursive: true }); renameSync(${JSON.stringify(join(inbox, 'a2.zip'))}, ${JSON.stringify(join(inbox, 'done', 'a2.zip'))}); } return item; } };\n`);
  const result = await cli([...common, '--plugin', other, '--json']);
  t.is(result.code, 0, result.stderr);
  const lines = jsonLines(result.stdout);
  t.like(lines.find((l) => l.archive === join(inbox, 'done', 'a2.zip')), { record: 'summary', exportId: 'acme-2026-11-23', failed: 0 }, 'a2 read where the other job left it');
  t.regex(result.log, /warn a2\.zip: moved to done\/ by another run before this one read it/);
  t.true((await readMaildir(mail)).some((m) => m.raw.includes('acme-2026-11-23')), "a2's messages are in this run's sink");
  t.deepEqual((await readdir(join(inbox, 'done'))).sort(), ['a1.zip', 'a2.zip'], 'left in done/, not moved again');
  const status = await cli(['status', '--state-dir', state, '--export', 'acme-2026-11-23']);
  t.is(status.code, 0, status.stdout);
  t.regex(status.stdout, /COMPLETE/);
});

test('--inbox: a run that finds the lock held (exit 3) leaves a run log of its own with the failure, as a plain run does', async (t) => {
  const { inbox, state, common } = await dropFolder(t);
  await generateSample(join(inbox, 'a1.zip'), { events: 40, seed: 1, edgeCases: false });
  await utimes(join(inbox, 'a1.zip'), old(30), old(30));
  await mkdir(state);
  // Held by a live process of this host (this test's).
  await writeFile(join(state, 'lock'), JSON.stringify({ pid: process.pid, host: hostname(), startedAt: new Date().toISOString() }));
  const result = await cli([...common, '--status-log', join(state, '..', 'status.jsonl')]);
  t.is(result.code, 3, result.stderr);
  t.deepEqual(await readdir(inbox), ['a1.zip']);
  const records = await runRecords(state);
  t.is(records.length, 1);
  t.like(records[0], { record: 'failure', code: 'E_LOCKED', exitCode: 3, archive: inbox });
  t.regex(await readFile(join(state, '..', 'status.jsonl'), 'utf8'), /"record":"failure".*"code":"E_LOCKED"/);
  t.false((await readdir(state)).includes('ledger.jsonl'), "the holder's ledger is not touched");
  const status = await cli(['status', '--state-dir', state]);
  t.regex(status.stdout, /E_LOCKED/);
});

test('--inbox: a state dir that cannot be locked (a file in its place, as a full or read-only disk refuses the lock) records the failure in --status-log, as a plain run does: exit 2', async (t) => {
  const { dir, inbox, state, common } = await dropFolder(t);
  await generateSample(join(inbox, 'a1.zip'), { events: 40, seed: 1, edgeCases: false });
  await utimes(join(inbox, 'a1.zip'), old(30), old(30));
  await writeFile(state, 'not a directory');
  const statusLog = join(dir, 'status.jsonl');
  const result = await cli([...common, '--status-log', statusLog]);
  t.is(result.code, 2, result.stderr);
  t.regex(result.log, /E_CONFIG: state dir .* cannot be used/);
  t.deepEqual(await readdir(inbox), ['a1.zip'], 'left for the next run');
  const records = (await readFile(statusLog, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  t.like(records.at(-1), { record: 'failure', code: 'E_CONFIG', exitCode: 2, archive: inbox }, 'the run is recorded where it can be');
});

test('a state dir whose checkpoints/ cannot be made (a file in its place, as a full or read-only disk refuses it) is a setup error (E_CONFIG, exit 2), not a bug: the drop folder stops there and moves no archive to failed/', async (t) => {
  t.timeout(90_000);
  const { dir, inbox, state, common } = await dropFolder(t);
  await generateSample(join(inbox, 'a1.zip'), { events: 40, seed: 1, day: '2026-11-22', edgeCases: false });
  await generateSample(join(inbox, 'a2.zip'), { events: 40, seed: 2, day: '2026-11-23', edgeCases: false });
  await utimes(join(inbox, 'a1.zip'), old(30), old(30));
  await utimes(join(inbox, 'a2.zip'), old(20), old(20));
  await mkdir(state);
  await writeFile(join(state, 'checkpoints'), 'in the way');
  const plain = await cli(['run', join(inbox, 'a1.zip'), '--all-domains', '--state-dir', state, '--sink', `maildir:${join(dir, 'plain')}`, '--rejects', join(dir, 'r'), '--quiet']);
  t.is(plain.code, 2, plain.stderr);
  t.regex(plain.log, /E_CONFIG: state dir .* cannot be used: .*checkpoints is not a directory/);
  const result = await cli(common);
  t.is(result.code, 2, result.stderr);
  t.notRegex(result.log, /E_INTERNAL|a bug in pivot-archive/);
  t.deepEqual((await readdir(inbox)).sort(), ['a1.zip', 'a2.zip'], 'both left for the next run, none in failed/');
});

test('settleState: an archive is taken once its mtime is --settle old, or once runs have seen it unchanged for --settle seconds (a future mtime), never after a quick second look', (t) => {
  const now = Date.parse('2026-11-23T12:00:00Z');
  const file = { dev: 1, ino: 2, size: 1000, mtimeMs: now - 5_000 };
  t.like(settleState(file, undefined, now, 60), { settled: false, seenAt: now });
  // Seen 3 s ago as it is: a retry within the settle window does not take a copy that stalled.
  t.like(settleState(file, { ...file, seenAt: now - 3_000 }, now, 60), { settled: false, seenAt: now - 3_000 });
  // Grown since: seen afresh.
  t.like(settleState({ ...file, size: 2000 }, { ...file, seenAt: now - 3_000 }, now, 60), { settled: false, seenAt: now });
  // An mtime 60 s old has settled.
  t.like(settleState({ ...file, mtimeMs: now - 60_000 }, undefined, now, 60), { settled: true });
  // In the future (a writer's clock ahead): settled once seen unchanged for 60 s of runs.
  const ahead = { ...file, mtimeMs: now + 3_600_000 };
  t.like(settleState(ahead, undefined, now, 60), { settled: false, future: true });
  t.like(settleState(ahead, { ...ahead, seenAt: now - 10_000 }, now, 60), { settled: false });
  t.like(settleState(ahead, { ...ahead, seenAt: now - 60_000 }, now, 60), { settled: true });
  // A record from the old format (no seenAt), or a seenAt ahead of this clock, counts from now.
  t.like(settleState(ahead, { ...ahead } as never, now, 60), { settled: false, seenAt: now });
  t.like(settleState(ahead, { ...ahead, seenAt: now + 120_000 }, now, 60), { settled: false, seenAt: now });
  // --settle 0 waits for nothing.
  t.like(settleState(ahead, undefined, now, 0), { settled: true });
});

test('--inbox: two runs a few seconds apart within --settle leave an archive still being copied in (the second does not take it)', async (t) => {
  t.timeout(60_000);
  const { inbox, common } = await dropFolder(t);
  await generateSample(join(inbox, 'copying.zip'), { events: 40, seed: 1, edgeCases: false });
  const size = (await readFile(join(inbox, 'copying.zip'))).length;
  // Half written, the copy stalled.
  await truncate(join(inbox, 'copying.zip'), Math.floor(size / 2));
  for (const n of [1, 2]) {
    const result = await cli([...common, '--settle', '60']);
    t.is(result.code, 0, `run ${n}: ${result.stderr}`);
    t.regex(result.stdout, /0 archive\(s\) handled, 1 still being copied in/, `run ${n}`);
  }
  t.deepEqual(await readdir(inbox), ['copying.zip']);
});

test('--inbox: an archive in failed/ that changed after it was moved there (a copy still being written) is said, so the operator moves it back', async (t) => {
  t.timeout(60_000);
  const { inbox, common } = await dropFolder(t);
  await writeFile(join(inbox, 'half.zip'), 'PK\u0003\u0004 the first bytes of a copy');
  await utimes(join(inbox, 'half.zip'), old(30), old(30));
  const first = await cli(common);
  t.is(first.code, 2, first.stderr);
  t.deepEqual((await readdir(join(inbox, 'failed'))).sort(), ['half.zip', 'half.zip.reason.txt']);
  const second = await cli(common);
  t.notRegex(second.log, /changed after it was moved there/, 'unchanged: nothing said');
  await appendFile(join(inbox, 'failed', 'half.zip'), ' and the rest of it');
  const third = await cli(common);
  t.regex(third.log, /warn failed\/half\.zip changed after it was moved there .*move it back into /);
});

test('--inbox: a directory or a FIFO named like an archive is warned of at every run (a cron run logs warnings), never read; the archives beside it run', async (t) => {
  t.timeout(60_000);
  const { inbox, mail, common } = await dropFolder(t);
  await generateSample(join(inbox, 'a-good.zip'), { events: 40, seed: 1, edgeCases: false });
  await utimes(join(inbox, 'a-good.zip'), old(30), old(30));
  await mkdir(join(inbox, 'b-unpacked.zip'));
  execFileSync('mkfifo', [join(inbox, 'c-pipe.zip')]);
  const result = await cli([...common, '--log-level', 'warn']);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stderr, /b-unpacked\.zip: named like an archive but not a file \(a directory\): never read/);
  t.regex(result.stderr, /c-pipe\.zip: named like an archive but not a file \(a FIFO\): never read/);
  t.true((await readMaildir(mail)).length > 0);
});

test('--inbox: an archive read in done/ (another job moved it there) that this run did not complete is read there again by the next run, until it completes', async (t) => {
  t.timeout(120_000);
  const { dir, inbox, state, common } = await dropFolder(t);
  await generateSample(join(inbox, 'a1.zip'), { events: 40, seed: 1, day: '2026-11-22', edgeCases: false });
  // More events than the run reads ahead, so the stop leaves some unread.
  await generateSample(join(inbox, 'a2.zip'), { events: 1000, seed: 2, day: '2026-11-23', edgeCases: false });
  await utimes(join(inbox, 'a1.zip'), old(30), old(30));
  await utimes(join(inbox, 'a2.zip'), old(20), old(20));
  // The other job moves a2 to done/ while this run reads a1; this run is then stopped at a2's first item (the marker: once).
  const marker = join(dir, 'stop-at-a2');
  await writeFile(marker, '');
  const plugin = join(dir, 'other-then-stop.mjs');
  await writeFile(
    plugin,
    `import { existsSync, mkdirSync, renameSync, unlinkSync } from 'node:fs';\nlet n = 0;\nexport default { name: 'other-then-stop', version: '1.0.0', hostApi: '^1.0.0', transform(item) {\n` +
      `  if (++n === 10 && existsSync(${JSON.stringify(join(inbox, 'a2.zip'))})) { mkdirSync(${JSON.stringify(join(inbox, 'done'))}, { recursive: true }); renameSync(${JSON.stringify(join(inbox, 'a2.zip'))}, ${JSON.stringify(join(inbox, 'done', 'a2.zip'))}); }\n` +
      `  if (item.sentAt.startsWith('2026-11-23') && existsSync(${JSON.stringify(marker)})) { unlinkSync(${JSON.stringify(marker)}); process.kill(process.pid, 'SIGTERM'); }\n` +
      `  return item; } };\n`,
  );
  const first = await cli([...common, '--plugin', plugin]);
  t.is(first.code, 4, first.stderr);
  const a2 = async () => (await cli(['status', '--state-dir', state, '--export', 'acme-2026-11-23'])).code;
  t.not(await a2(), 0, 'a2 not complete after the stopped run');
  // The next night: a2 is nowhere in the drop folder, only in done/. Was: exit 0, a2 never read again, for ever INCOMPLETE.
  const second = await cli([...common, '--plugin', plugin]);
  t.is(second.code, 0, second.stderr);
  t.is(await a2(), 0, 'a2 read again in done/ and completed');
  t.deepEqual((await readdir(join(inbox, 'done'))).sort(), ['a1.zip', 'a2.zip'], 'left in done/');
  // Completed: not read again.
  const third = await cli([...common, '--plugin', plugin, '--json']);
  t.is(third.code, 0, third.stderr);
  t.deepEqual(jsonLines(third.stdout), []);
});

test('--inbox: an archive whose name takes all 255 bytes, refused: its reason file beside it in failed/ is named within 255 bytes (cut short at a character, with a hash) and names it; one of the same name refused again goes to failed/ too, not left to fail every night', async (t) => {
  t.timeout(60_000);
  const { inbox, common } = await dropFolder(t);
  // 125 two-byte characters: a cut in the middle of one would not be UTF-8.
  const name = `${'é'.repeat(125)}x.zip`;
  t.is(Buffer.byteLength(name), 255);
  const refuse = async (bytes: string) => {
    await writeFile(join(inbox, name), bytes);
    await utimes(join(inbox, name), old(30), old(30));
    return cli(common);
  };
  const first = await refuse('not a zip');
  t.is(first.code, 2, first.stderr);
  const reasons = async () => (await readdir(join(inbox, 'failed'))).filter((f) => f.endsWith('.reason.txt'));
  const [reason] = await reasons();
  // Was: ENAMETOOLONG, no reason file at all.
  t.truthy(reason, first.stderr);
  t.true(Buffer.byteLength(reason!) <= 255);
  t.regex(reason!, /^(é)+~[0-9a-f]{12}\.reason\.txt$/);
  const text = await readFile(join(inbox, 'failed', reason!), 'utf8');
  t.regex(text, /^E_ARCHIVE_UNREADABLE: /);
  t.regex(text, new RegExp(`\narchive: ${name.replace('.', '\\.')}\n$`));
  // Was: failed/NAME.1 too long to be made, so the archive stayed in the drop folder and failed again every night.
  const second = await refuse('still not a zip');
  t.is(second.code, 2, second.stderr);
  t.deepEqual(await readdir(inbox), ['failed']);
  t.is((await readdir(join(inbox, 'failed'))).length, 4);
  t.is((await reasons()).length, 2);
  await appendFile(join(inbox, 'failed', name), ' and the rest of it');
  const third = await cli(common);
  t.is(third.code, 0, third.stderr);
  t.regex(third.log, new RegExp(`warn failed/${name.replace('.', '\\.')} changed after it was moved there`));
});
