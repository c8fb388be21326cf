import test, { type ExecutionContext } from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import { hostname } from 'node:os';
import { copyFile, mkdir, readdir, readFile, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS, launchAssignments } from '../src/launch.js';
import { generateSample } from '../src/sample/generate.js';
import { StateDir } from '../src/state/index.js';
import { cli, runRecords, startCli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';
import { STOPPER_PLUGIN } from './helpers/stopper.js';

test('one run at a time per state dir: a second run exits 3 at once and does nothing', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 2000, seed: 12 });
  const state = join(dir, 'state');
  const args = (out: string) => ['run', '--all-domains', archive, '--sink', `maildir:${join(dir, out)}`, '--state-dir', state, '--rejects', join(dir, 'rejects')];
  const first = startCli(args('first'));
  // Wait until the first run holds the lock.
  for (let i = 0; i < 200 && !(await readdir(state).catch(() => [] as string[])).includes('lock'); i++) await new Promise((r) => setTimeout(r, 25));
  const second = await cli(args('second'));
  t.is(second.code, 3);
  t.regex(second.log, /E_LOCKED: another run holds .*lock \(pid \d+ on /);
  t.deepEqual(await readMaildir(join(dir, 'second')), []);
  t.is(await first.exited, 0);
  t.false((await readdir(state)).includes('lock'), 'the lock is released');
  // The run that found the lock held left a record of its own, which status shows.
  const runs = await runRecords(state);
  t.true(runs.some((r) => r.record === 'failure' && r.code === 'E_LOCKED' && r.exitCode === 3), JSON.stringify(runs.map((r) => r.record)));
  t.regex((await cli(['status', '--state-dir', state])).stdout, /E_LOCKED/);
});

test('a command line the parser refuses (a mistyped flag) is recorded where the run would have kept its records', async (t) => {
  const dir = await tempDir(t);
  const state = join(dir, 'state');
  const statusLog = join(dir, 'status.jsonl');
  const typo = await cli(['run', join(dir, 'x.zip'), '--all-domains', '--sink', `maildir:${join(dir, 'm')}`, '--state-dir', state, '--status-log', statusLog, '--setle', '60']);
  t.is(typo.code, 2);
  t.regex(typo.stderr, /did you mean --settle/);
  for (const records of [await runRecords(state), (await readFile(statusLog, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>)]) {
    t.like(records.find((r) => r.record === 'failure'), { code: 'E_USAGE', exitCode: 2 });
  }
});

test('a run refused for a value (a flag, the environment, the config file) is recorded once: one run log, one failure in the ledger', async (t) => {
  const dir = await tempDir(t);
  const badConfig = join(dir, 'bad.json');
  await writeFile(badConfig, '{"maxItemSize": "10XB"}');
  for (const [name, extra, env] of [['flag', ['--shard', '0/3'], {}], ['env', [], { PIVOT_ARCHIVE_SHARD: '4/3' }], ['config', ['--config', badConfig], {}]] as const) {
    const state = join(dir, `state-${name}`);
    const result = await cli(['run', join(dir, 'x.zip'), '--all-domains', '--sink', `maildir:${join(dir, 'm')}`, '--state-dir', state, ...extra], { env });
    t.is(result.code, 2, name);
    t.is((await readdir(join(state, 'runs'))).length, 1, `${name}: one run log`);
    const ledger = (await readFile(join(state, 'ledger.jsonl'), 'utf8')).trim().split('\n').map((line) => (JSON.parse(line) as { record: string }).record);
    t.deepEqual(ledger.filter((r) => r === 'failure'), ['failure'], `${name}: ${ledger.join(' ')}`);
  }
});

test('a stale lock left by a killed run is taken over', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 50, seed: 13, edgeCases: false });
  const state = join(dir, 'state');
  await mkdir(state);
  // A pid that is not running: the largest pid a Linux system hands out, plus one.
  await writeFile(join(state, 'lock'), JSON.stringify({ pid: 4194305, host: hostname(), startedAt: '2026-11-23T02:30:00Z' }));
  // And the takeover's own turn file, left by a run killed while it broke the lock: its process is gone too.
  await writeFile(join(state, 'lock.break'), JSON.stringify({ pid: 4194305, host: hostname(), token: 'x' }));
  const result = await cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, 'out')}`, '--state-dir', state]);
  t.is(result.code, 0, result.stderr);
  t.true((await readMaildir(join(dir, 'out'))).length > 0);
});

test('runs that find one stale lock at the same instant: exactly one takes it over, the others are refused E_LOCKED', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const stateDir = fileURLToPath(new URL('../src/state/index.js', import.meta.url));
  // Each process takes the lock at one agreed instant, holds it 1.5 s, and says when it held it (a
  // process started late under load may take it after the first let go: holding in turn is fine).
  const locker = `import { StateDir } from ${JSON.stringify(stateDir)};
const [dir, at] = [process.argv[2], Number(process.argv[3])];
await new Promise((r) => setTimeout(r, at - Date.now()));
try { const release = await new StateDir(dir).lock(); const from = Date.now(); await new Promise((r) => setTimeout(r, 1500)); const to = Date.now(); await release(); console.log(from + '-' + to); }
catch (e) { console.log(e.code); }`;
  await writeFile(join(dir, 'locker.mjs'), locker);
  for (let trial = 0; trial < 4; trial++) {
    const state = join(dir, `state${trial}`);
    await mkdir(state);
    // The largest pid Linux hands out, plus one: a run killed long ago.
    await writeFile(join(state, 'lock'), JSON.stringify({ pid: 4194305, host: hostname(), startedAt: '2026-11-23T02:30:00Z' }));
    const at = String(Date.now() + 1500);
    const answers = await Promise.all(Array.from({ length: 8 }, () => new Promise<string>((resolve, reject) => execFile(process.execPath, [join(dir, 'locker.mjs'), state, at], (err, stdout) => (err ? reject(err) : resolve(stdout.trim()))))));
    const held = answers.filter((a) => a !== 'E_LOCKED').map((a) => a.split('-').map(Number) as [number, number]).sort((x, y) => x[0] - y[0]);
    t.true(held.length >= 1 && held.every(([from, to]) => from > 0 && to >= from), `trial ${trial}: ${answers.join(' ')}`);
    for (let i = 1; i < held.length; i++) t.true(held[i]![0] >= held[i - 1]![1], `trial ${trial}: two held the lock at once: ${answers.join(' ')}`);
  }
});

test('a lock not renewed for 10 minutes is taken over whoever held it (another host: a CronJob pod of last night; a lock torn by a crash); a fresh one of another host is not', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 50, seed: 13, edgeCases: false });
  const state = join(dir, 'state');
  await mkdir(state);
  const lock = join(state, 'lock');
  const run = (out: string) => cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, out)}`, '--state-dir', state]);
  const elevenMinutesAgo = new Date(Date.now() - 11 * 60_000);
  for (const [content, out] of [[JSON.stringify({ pid: 1, host: 'pivot-archive-import-29384721-1', startedAt: '2026-11-23T02:30:00Z' }), 'other-host'], ['', 'torn']] as const) {
    await writeFile(lock, content);
    await utimes(lock, elevenMinutesAgo, elevenMinutesAgo);
    const result = await run(out);
    t.is(result.code, 0, `${out}: ${result.stderr}`);
    t.true((await readMaildir(join(dir, out))).length > 0);
  }
  await writeFile(lock, JSON.stringify({ pid: 1, host: 'another-host', startedAt: new Date().toISOString() }));
  const held = await run('held');
  t.is(held.code, 3);
  t.regex(held.log, /E_LOCKED: another run holds .*pid 1 on another-host/);
});

test('every run is kept under the state dir; status shows the last runs and what failed', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 30, seed: 14, edgeCases: false });
  const state = join(dir, 'state');
  const out = join(dir, 'out');
  await mkdir(out);
  await writeFile(join(out, 'user1@acme.example'), 'a file where a mailbox belongs');
  const config = join(dir, 'config.json');
  await writeFile(config, JSON.stringify({ sink: `maildir:${out}`, stateDir: state, allDomains: true }));
  // The config file named by PIVOT_ARCHIVE_CONFIG holds everything the flags hold.
  t.is((await cli(['run', archive], { env: { PIVOT_ARCHIVE_CONFIG: config } })).code, 1);
  t.is((await cli(['run', archive], { env: { PIVOT_ARCHIVE_CONFIG: config } })).code, 1);
  t.is((await readdir(join(state, 'runs'))).length, 2);
  const status = await cli(['status', '--state-dir', state, '--last', '1']);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /runs\/.*\.jsonl\npivot-archive: export acme-2026-11-23/);
  t.regex(status.stdout, /skipped \(already there\)\s+\d+/);
  t.regex(status.stdout, /failed: item m_\d+ -> user1@acme\.example: /);
  t.is(status.stdout.match(/runs\//g)?.length, 1);
  const json = await cli(['status', '--state-dir', state, '--json']);
  const runs = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { summary: { failed: number; delivered: number } });
  t.is(runs.length, 2);
  t.true(runs.every((r) => r.summary.failed > 0));
  t.is(runs[0]!.summary.delivered, 0, 'the newest run first: it had nothing left to deliver');
});

test('--keep-runs keeps only the newest run logs under the state dir', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 20, seed: 15, edgeCases: false });
  const state = join(dir, 'state');
  for (let i = 0; i < 3; i++) t.is((await cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, 'out')}`, '--state-dir', state, '--keep-runs', '2'])).code, 0);
  const runs = await readdir(join(state, 'runs'));
  t.is(runs.length, 2);
  const newest = await cli(['status', '--state-dir', state, '--json', '--last', '1']);
  t.is((JSON.parse(newest.stdout) as { summary: { skipped: number } }).summary.skipped > 0, true, 'the newest run (all skipped) is kept');
});

test('cron --print gives a crontab line with absolute paths and quoted arguments', async (t) => {
  const result = await cli(['cron', '--print', '--at', '02:30', '--', 'run', '--inbox', '/srv/pivot in', '--state-dir', '/srv/pivot/state', '--domain', 'acme.example', '--sink', 'maildir:/srv/mail?folder=.Pivot']);
  t.is(result.code, 0, result.stderr);
  const line = result.stdout.trim();
  t.regex(line, /^30 2 \* \* \* cd \S+ && (?:[A-Z_]+=\S+ )*\S*node (?:--\S+ )+\/\S+\/bin\/pivot-archive\.js run --inbox '\/srv\/pivot in' --state-dir \/srv\/pivot\/state --domain acme\.example --sink 'maildir:\/srv\/mail\?folder=\.Pivot'$/);
  t.true(line.includes(`&& ${launchAssignments().join(' ')} ${process.execPath} ${NODE_FLAGS.join(' ')} /`), "started as the bin starts (test/launch.test.ts)");
  const bad = await cli(['cron', '--print', '--at', '25:00', '--', 'run']);
  t.is(bad.code, 2);
  t.regex(bad.log, /not a time of day/);
});

test('--inbox: settled archives oldest first (.zip in any case), done/ and failed/ moves, a file still being copied is left, another file named, nothing twice', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const inbox = join(dir, 'incoming');
  await mkdir(inbox);
  const old = (minutes: number) => new Date(Date.now() - minutes * 60_000);
  await generateSample(join(inbox, 'day1.zip'), { events: 40, seed: 1, day: '2026-11-22', edgeCases: false });
  await generateSample(join(inbox, 'DAY2.ZIP'), { events: 40, seed: 2, day: '2026-11-23', edgeCases: false });
  await writeFile(join(inbox, 'broken.zip'), 'not a zip at all');
  await generateSample(join(inbox, 'copying.zip'), { events: 40, seed: 3, day: '2026-11-24', edgeCases: false });
  await writeFile(join(inbox, 'notes.txt'), 'ignored');
  await utimes(join(inbox, 'day1.zip'), old(30), old(30));
  await utimes(join(inbox, 'DAY2.ZIP'), old(20), old(20));
  await utimes(join(inbox, 'broken.zip'), old(10), old(10));
  const state = join(dir, 'state');
  const out = join(dir, 'mail');
  const args = ['run', '--all-domains', '--inbox', inbox, '--state-dir', state, '--sink', `maildir:${out}`, '--settle', '60'];
  const first = await cli(args);
  t.is(first.code, 2, 'an archive failed as a whole');
  t.regex(first.stdout, /export acme-2026-11-22[\s\S]*export acme-2026-11-23/, 'oldest first');
  t.regex(first.stdout, /1 still being copied in/);
  t.deepEqual((await readdir(inbox)).sort(), ['copying.zip', 'done', 'failed', 'notes.txt']);
  t.deepEqual((await readdir(join(inbox, 'done'))).sort(), ['DAY2.ZIP', 'day1.zip']);
  t.regex(first.log, /notes\.txt: not a \*\.zip, left alone/);
  t.deepEqual((await readdir(join(inbox, 'failed'))).sort(), ['broken.zip', 'broken.zip.reason.txt']);
  t.regex(await readFile(join(inbox, 'failed', 'broken.zip.reason.txt'), 'utf8'), /E_ARCHIVE_UNREADABLE/);
  const afterFirst = (await readMaildir(out)).length;
  t.true(afterFirst > 0);

  // The same archive dropped again is recognised by its sha256 and not delivered again.
  await copyFile(join(inbox, 'done', 'day1.zip'), join(inbox, 'again.zip'));
  await utimes(join(inbox, 'again.zip'), old(5), old(5));
  await utimes(join(inbox, 'copying.zip'), old(5), old(5));
  const second = await cli(args);
  t.is(second.code, 0, second.stderr);
  t.regex(second.stdout, /again\.zip: already-completed/);
  t.regex(second.stdout, /export acme-2026-11-24/);
  t.deepEqual((await readdir(join(inbox, 'done'))).sort(), ['DAY2.ZIP', 'again.zip', 'copying.zip', 'day1.zip']);
  const stored = await readMaildir(out);
  // The sample reuses event ids from day to day (the spec makes them unique per export only).
  t.is(new Set(stored.map((m) => `${m.mailbox} ${m.itemId} ${m.parsed.date?.toISOString()}`)).size, stored.length, 'nothing twice');
  t.true(stored.length > afterFirst);
});

test('--inbox: a dangling link among the archives goes to failed/ with its reason and a failure record; the others still run', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const inbox = join(dir, 'incoming');
  await mkdir(inbox);
  const old = new Date(Date.now() - 30 * 60_000);
  await generateSample(join(inbox, 'day1.zip'), { events: 40, seed: 1, day: '2026-11-22', edgeCases: false });
  await utimes(join(inbox, 'day1.zip'), old, old);
  await symlink(join(dir, 'gone.zip'), join(inbox, 'dangling.zip'));
  const state = join(dir, 'state');
  const result = await cli(['run', '--all-domains', '--inbox', inbox, '--state-dir', state, '--sink', `maildir:${join(dir, 'mail')}`]);
  t.is(result.code, 2, result.stderr);
  t.notRegex(result.stderr, /^\s+at /m, 'no stack trace');
  t.deepEqual(await readdir(join(inbox, 'done')), ['day1.zip']);
  t.deepEqual((await readdir(join(inbox, 'failed'))).sort(), ['dangling.zip', 'dangling.zip.reason.txt']);
  t.regex(await readFile(join(inbox, 'failed', 'dangling.zip.reason.txt'), 'utf8'), /E_ARCHIVE_UNREADABLE/);
  const records = (await runRecords(state)).filter((r) => r.record === 'failure');
  t.is(records.length, 1);
  t.regex(String(records[0]!.archive), /dangling\.zip$/);
});

test('--inbox: a drop folder that cannot be read exits 2 (E_CONFIG) and leaves a failure record in the state dir', async (t) => {
  const dir = await tempDir(t);
  const state = join(dir, 'state');
  const result = await cli(['run', '--all-domains', '--inbox', join(dir, 'missing'), '--state-dir', state, '--sink', `maildir:${join(dir, 'mail')}`]);
  t.is(result.code, 2);
  t.regex(result.log, /E_CONFIG: cannot read inbox/);
  const records = await runRecords(state);
  t.like(records.find((r) => r.record === 'failure'), { code: 'E_CONFIG', exitCode: 2 });
});

const pairsIn = async (out: string) => (await readMaildir(out)).map((m) => `${m.mailbox} ${m.itemId}`).sort();

/**
 * An archive of 400 events, the pairs one plain run delivers from it, and a plugin that stops a
 * run (as Ctrl-C does) when its STOP_AT-th item reaches the plugins (never without STOP_AT).
 */
async function resumeFixture(t: ExecutionContext): Promise<{ dir: string; archive: string; stopper: string; referencePairs: string[] }> {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 400, seed: 5, edgeCases: false });
  const reference = join(dir, 'reference');
  t.is((await cli(['run', archive, '--domain', 'acme.example', '--sink', `maildir:${reference}`, '--rejects', join(dir, 'r0')])).code, 0);
  const stopper = join(dir, 'stopper.mjs');
  await writeFile(stopper, STOPPER_PLUGIN);
  return { dir, archive, stopper, referencePairs: await pairsIn(reference) };
}

test('a checkpoint is resumed only under the options that made it: a run with a mistyped --domain stopped part-way, re-run with the right one, delivers every item and the export adds up', async (t) => {
  t.timeout(120_000);
  const { dir, archive, stopper, referencePairs } = await resumeFixture(t);
  const state = join(dir, 'state');
  const out = join(dir, 'mail');
  const common = ['--sink', `maildir:${out}`, '--state-dir', state, '--rejects', join(dir, 'r1'), '--max-rejected', '100%'];
  const typo = await cli(['run', archive, '--domain', 'acme.exmaple', '--plugin', stopper, ...common], { env: { STOP_AT: '150' } });
  t.is(typo.code, 4, typo.stderr);
  const fixed = await cli(['run', archive, '--domain', 'acme.example', ...common]);
  t.is(fixed.code, 0, fixed.stderr);
  t.regex(fixed.log, /checkpoint of acme-2026-11-23 was made with other options: read from the start/);
  t.deepEqual(await pairsIn(out), referencePairs);
  const status = JSON.parse((await cli(['status', '--state-dir', state, '--export', 'acme-2026-11-23', '--json'])).stdout) as { account: { complete: boolean; balanced: boolean } };
  t.like(status.account, { complete: true, balanced: true });
});

test('a checkpoint is not resumed into another sink: a run into a mistyped Maildir root stopped part-way, re-run into the right one, delivers every item there', async (t) => {
  t.timeout(120_000);
  const { dir, archive, stopper, referencePairs } = await resumeFixture(t);
  // The same plugin in both runs (the options match but for the sink).
  const common = ['--domain', 'acme.example', '--plugin', stopper, '--state-dir', join(dir, 'state'), '--rejects', join(dir, 'r1')];
  const typo = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mial')}`, ...common], { env: { STOP_AT: '150' } });
  t.is(typo.code, 4, typo.stderr);
  const fixed = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, ...common, '--json']);
  t.is(fixed.code, 0, fixed.stderr);
  t.is((JSON.parse(fixed.stdout) as { itemsDoneEarlier: number }).itemsDoneEarlier, 0, 'nothing taken as done by the run into the other sink');
  t.deepEqual(await pairsIn(join(dir, 'mail')), referencePairs);
});

test('a checkpoint that cannot be saved mid-run does not crash the run: it delivers everything, ends with the error in its summary (exit 1) and leaves its records', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 1000, seed: 5, edgeCases: false, messageFiles: 1 });
  // The checkpoint's file name (export id and the archive's sha256), worked out independently (Python's zipfile): a directory where its temporary file goes.
  const name = execFileSync('python3', ['-c', `import sys,zipfile,json,hashlib
m=json.loads(zipfile.ZipFile(sys.argv[1]).read('manifest.json'))
print(hashlib.sha256((m['exportId']+'\\n'+hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest()).encode()).hexdigest())`, archive]).toString().trim();
  const state = join(dir, 'state');
  await mkdir(join(state, 'checkpoints', `${name}.json.tmp`), { recursive: true });
  // Slow enough (2 ms an item) that the checkpoint is saved during the run.
  const slow = join(dir, 'slow.mjs');
  await writeFile(slow, "export default { name: 'slow', version: '1.0.0', hostApi: '^1.0.0', async transform(item) { await new Promise((r) => setTimeout(r, 2)); return item; } };\n");
  const status = join(dir, 'status.jsonl');
  const out = join(dir, 'mail');
  const result = await cli(['run', archive, '--all-domains', '--sink', `maildir:${out}`, '--state-dir', state, '--status-log', status, '--plugin', slow, '--rejects', join(dir, 'r'), '--json']);
  t.is(result.code, 1, result.stderr);
  const summary = JSON.parse(result.stdout) as { delivered: number; balanced: boolean; error: { code: string; message: string } };
  t.true(summary.balanced);
  t.regex(summary.error.message, /the checkpoint .* cannot be saved/);
  t.is((await readMaildir(out)).length, summary.delivered);
  t.true((await readFile(status, 'utf8')).includes('"record":"summary"'));
});

test('--inbox needs --state-dir, and excludes an archive argument', async (t) => {
  const noState = await cli(['run', '--inbox', '/tmp', '--sink', 'maildir:/tmp/x']);
  t.is(noState.code, 2);
  t.regex(noState.log, /--inbox needs --state-dir/);
  const both = await cli(['run', 'x.zip', '--inbox', '/tmp', '--state-dir', '/tmp/s', '--sink', 'maildir:/tmp/x']);
  t.is(both.code, 2);
  t.regex(both.log, /give one of/);
});

test('--inbox: an archive dropped over the same name while the run reads it is left for the next run, never moved to done/ unread', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const inbox = join(dir, 'incoming');
  await mkdir(inbox);
  const old = new Date(Date.now() - 30 * 60_000);
  await generateSample(join(inbox, 'acme.zip'), { events: 40, seed: 1, day: '2026-11-22', edgeCases: false });
  await generateSample(join(dir, 'next.zip'), { events: 40, seed: 2, day: '2026-11-23', edgeCases: false });
  await utimes(join(inbox, 'acme.zip'), old, old);
  await utimes(join(dir, 'next.zip'), old, old);
  // The exporter drops the next day's export as README advises (copied under another name, then mv'd in), mid-run.
  const dropper = join(dir, 'dropper.mjs');
  await writeFile(dropper, `import { renameSync } from 'node:fs';\nlet n = 0;\nexport default { name: 'dropper', version: '1.0.0', hostApi: '^1.0.0', transform(item) { if (++n === 10) renameSync(${JSON.stringify(join(dir, 'next.zip'))}, ${JSON.stringify(join(inbox, 'acme.zip'))}); return item; } };\n`);
  const state = join(dir, 'state');
  const out = join(dir, 'mail');
  const common = ['run', '--all-domains', '--inbox', inbox, '--state-dir', state, '--sink', `maildir:${out}`, '--rejects', join(dir, 'r')];
  const first = await cli([...common, '--plugin', dropper]);
  t.is(first.code, 0, first.stderr);
  t.regex(first.log, /acme\.zip: replaced or changed while it was read: the new file is left for the next run/);
  t.deepEqual(await readdir(inbox), ['acme.zip'], 'the new export stays in the drop folder');
  const second = await cli(common);
  t.is(second.code, 0, second.stderr);
  t.regex(second.stdout, /export acme-2026-11-23/, 'the next run delivers the new export');
  t.deepEqual(await readdir(join(inbox, 'done')), ['acme.zip']);
  t.deepEqual((await readdir(join(state, 'completed'))).length, 2);
});

test('--inbox: an archive whose time is in the future (a writer\'s clock ahead) is left until runs have seen it unchanged for --settle seconds, then taken', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const inbox = join(dir, 'incoming');
  await mkdir(inbox);
  await generateSample(join(inbox, 'ahead.zip'), { events: 40, seed: 1, edgeCases: false });
  const ahead = new Date(Date.parse('2099-01-01T00:00:00Z'));
  await utimes(join(inbox, 'ahead.zip'), ahead, ahead);
  const args = ['run', '--all-domains', '--inbox', inbox, '--state-dir', join(dir, 'state'), '--sink', `maildir:${join(dir, 'mail')}`, '--rejects', join(dir, 'r'), '--settle', '2'];
  const first = await cli(args);
  t.is(first.code, 0, first.stderr);
  t.regex(first.log, /ahead\.zip: .*in the future: it is taken once runs have seen it unchanged for 2 s/);
  t.regex(first.stdout, /1 still being copied in/);
  // (A run again at once leaves it too: test/inbox-faults.test.ts.)
  await new Promise((r) => setTimeout(r, 2_100));
  const second = await cli(args);
  t.is(second.code, 0, second.stderr);
  t.regex(second.log, /ahead\.zip: unchanged for 2 s since a run first saw it so: taken/);
  t.regex(second.stdout, /export acme-2026-11-23/);
  t.deepEqual(await readdir(join(inbox, 'done')), ['ahead.zip']);
});

test('run logs are numbered in the order runs began, whatever the clock said: status shows the run begun last first, after a run whose clock ran hours ahead and after logs of older versions; --keep-runs drops the first begun', async (t) => {
  const dir = await tempDir(t);
  const state = new StateDir(join(dir, 'state'));
  const summary = (runId: string) => `${JSON.stringify({ record: 'summary', runId, exportId: 'e', delivered: 1, failed: 0 })}\n`;
  await mkdir(join(dir, 'state', 'runs'), { recursive: true });
  // An older version's log (named by its start time).
  await writeFile(join(dir, 'state', 'runs', '2026-11-30T02-30-00-000Z-41.jsonl'), summary('older-version'));
  const ahead = await state.newRunLog(0, new Date(Date.now() + 3 * 3600_000));
  await writeFile(ahead, summary('clock-ahead'));
  const now = await state.newRunLog(0, new Date());
  await writeFile(now, summary('clock-right'));
  t.deepEqual((await state.runs(10)).map((r) => r.summary?.runId), ['clock-right', 'clock-ahead', 'older-version']);
  const next = await state.newRunLog(3);
  t.deepEqual((await readdir(join(dir, 'state', 'runs'))).sort(), [ahead, now].map((p) => p.slice(p.lastIndexOf('/') + 1)).sort(), 'the newest 3 with the one to come: the older version\'s log alone gone');
  t.regex(next, /run-00000003-/);
});
