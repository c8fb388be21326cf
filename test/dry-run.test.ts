import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { writeArchive } from './helpers/archive.js';
import { cli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

interface DryRunJson {
  dryRun: boolean;
  mailboxes: Record<string, number>;
  sink: string;
  alarm?: string;
  balanced: boolean;
  delivered: number;
  skipped: number;
  itemsDoneEarlier: number;
  rejected: Record<string, number>;
  [counter: string]: unknown;
}

/** Every file and folder under `root`: path, kind, size, mtime and content hash; a lock taken and released shows in its folder's mtime. */
async function snapshot(root: string): Promise<string[]> {
  const rows: string[] = [];
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const info = await stat(path);
      if (info.isDirectory()) {
        rows.push(`${rel}${name}/ ${info.mtimeMs}`);
        await walk(path, `${rel}${name}/`);
      } else {
        rows.push(`${rel}${name} ${info.size} ${info.mtimeMs} ${createHash('sha256').update(await readFile(path)).digest('hex')}`);
      }
    }
  };
  rows.push(`./ ${(await stat(root)).mtimeMs}`);
  await walk(root, '');
  return rows;
}

/** The counters a run and its dry run must agree on. */
const COUNTERS = ['exportId', 'eventsInArchive', 'itemsFromSource', 'itemsAddedByPlugins', 'itemsDoneEarlier', 'rejected', 'rejectedTotal', 'itemsRouted', 'itemsAvailableForImport', 'delivered', 'skipped', 'failed', 'rejectedNotKept', 'notes', 'balanced', 'interrupted'];
const countersOf = (s: Record<string, unknown>) => Object.fromEntries(COUNTERS.map((k) => [k, s[k]]));

test('a dry run of the sample counts per mailbox what the real run then delivers, and writes nothing: no Maildir, rejects, state dir or status log', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const out = join(dir, 'mail');
  const where = ['--sink', `maildir:${out}`, '--rejects', join(dir, 'rejects'), '--state-dir', join(dir, 'state'), '--status-log', join(dir, 'status.jsonl')];
  const args = ['run', '--sample', '--domain', 'acme.example', ...where, '--json'];

  const dry = await cli([...args, '--dry-run']);
  t.is(dry.code, 0, dry.stderr);
  const planned = JSON.parse(dry.stdout) as DryRunJson;
  t.true(planned.dryRun);
  t.true(planned.balanced);
  t.is(planned.sink, `dry run (would deliver to maildir:${out})`);
  t.true(Object.keys(planned.mailboxes).length > 1);
  t.deepEqual(Object.keys(planned.mailboxes), Object.keys(planned.mailboxes).sort(), 'sorted by mailbox');
  t.is(Object.values(planned.mailboxes).reduce((a, b) => a + b, 0), planned.delivered);
  t.is(planned.rejected.unmapped, 1, 'rejects are counted by reason as usual');
  t.deepEqual(await readdir(dir), [], 'nothing written: no Maildir root, --rejects, --state-dir or --status-log');
  t.notRegex(dry.log, /resuming/);

  const real = await cli(args);
  t.is(real.code, 0, real.stderr);
  const done = JSON.parse(real.stdout) as Record<string, unknown>;
  t.deepEqual(countersOf(planned), countersOf(done));
  const stored = await readMaildir(out);
  const perMailbox: Record<string, number> = {};
  for (const m of stored) perMailbox[m.mailbox] = (perMailbox[m.mailbox] ?? 0) + 1;
  t.deepEqual(planned.mailboxes, perMailbox, 'the files the real run wrote, per mailbox');
  t.deepEqual((await readdir(dir)).sort(), ['mail', 'rejects', 'state', 'status.jsonl']);

  // Now that all four exist, a dry run leaves every byte, name and mtime of them as it was.
  const before = await snapshot(dir);
  const again = await cli([...args, '--dry-run']);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(await snapshot(dir), before);
  // A dry run does not look into the sink: what a run would skip counts as delivered.
  t.deepEqual((JSON.parse(again.stdout) as DryRunJson).mailboxes, planned.mailboxes);
});

test('the printed dry run is the normal summary under a dry-run title, then every mailbox and its items, sorted', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 200, seed: 4, edgeCases: false });
  const result = await cli(['run', archive, '--domain', 'acme.example', '--sink', `maildir:${join(dir, 'mail')}`, '--rejects', join(dir, 'rejects'), '--dry-run']);
  t.is(result.code, 0, result.stderr);
  const lines = result.stdout.trimEnd().split('\n');
  t.regex(lines[0]!, /^pivot-archive: DRY RUN: nothing was delivered, kept in --rejects or recorded/);
  t.regex(lines[1]!, /^pivot-archive: export \S+ -> dry run \(would deliver to maildir:/);
  t.regex(result.stdout, /delivered\s+\d+/);
  t.regex(result.stdout, /counters add up\s+yes/);
  const json = JSON.parse((await cli(['run', archive, '--domain', 'acme.example', '--sink', `maildir:${join(dir, 'mail')}`, '--dry-run', '--json'])).stdout) as DryRunJson;
  const entries = Object.entries(json.mailboxes);
  const heading = lines.findIndex((l) => l.startsWith('  items each mailbox would receive'));
  t.is(lines[heading], `  items each mailbox would receive (${entries.length} mailboxes, ${json.delivered} items):`);
  t.deepEqual(
    lines.slice(heading + 1).map((l) => l.trim().split(/\s+/)),
    entries.map(([mailbox, n]) => [mailbox, String(n)]),
  );
  t.deepEqual(await readdir(dir), ['export.zip']);
});

test('a typo in --domain: the dry run rejects everything as unmapped and exits 5 with the alarm, as the real run would', async (t) => {
  const dir = await tempDir(t);
  const args = ['run', '--sample', '--domain', 'acme.exmaple', '--sink', `maildir:${join(dir, 'mail')}`, '--rejects', join(dir, 'rejects'), '--state-dir', join(dir, 'state'), '--status-log', join(dir, 'status.jsonl'), '--dry-run'];
  const json = await cli([...args, '--json']);
  t.is(json.code, 5, json.stderr);
  const summary = JSON.parse(json.stdout) as DryRunJson;
  t.regex(summary.alarm ?? '', /nothing was delivered: all \d+ items read were rejected \(\d+ as unmapped; check --domain/);
  t.true(summary.rejected.unmapped! > 1000);
  t.deepEqual(summary.mailboxes, {});
  t.true(summary.balanced);
  const text = await cli(args);
  t.is(text.code, 5);
  t.regex(text.stdout, /ALARM: nothing was delivered: .* as unmapped/);
  t.regex(text.stdout, /no mailbox would receive anything/);
  t.deepEqual(await readdir(dir), [], 'a rejects folder that does not exist is not created');
});

test('a dry run still validates: a bad --sink spec exits 2, a maildir sink still needs --domain, a typo\'d flag is named with a guess', async (t) => {
  const dir = await tempDir(t);
  const badOption = await cli(['run', '--sample', '--domain', 'acme.example', '--sink', `maildir:${join(dir, 'm')}?bogus=1`, '--dry-run']);
  t.is(badOption.code, 2);
  t.regex(badOption.log, /E_SINK_CONFIG: .*unknown option "bogus"/);
  const badScheme = await cli(['run', '--sample', '--domain', 'acme.example', '--sink', `maildri:${join(dir, 'm')}`, '--dry-run']);
  t.is(badScheme.code, 2);
  t.regex(badScheme.log, /E_SINK_CONFIG: unknown sink/);
  const noDomain = await cli(['run', '--sample', '--sink', `maildir:${join(dir, 'm')}`, '--dry-run']);
  t.is(noDomain.code, 2);
  t.regex(noDomain.log, /E_USAGE: a maildir sink creates a mailbox for every participant/);
  const typo = await cli(['run', '--sample', '--domain', 'acme.example', '--sink', `maildir:${join(dir, 'm')}`, '--dry-rn']);
  t.is(typo.code, 2);
  t.regex(typo.stderr, /Unknown argument: dry-rn; did you mean --dry-run\?/);
  t.deepEqual(await readdir(dir), []);
  const help = await cli(['run', '--help']);
  t.regex(help.stdout.replace(/\s+/g, ' '), /--dry-run read and check everything .* \(with --inbox: reads every settled archive, moves none\)/);
});

test('a dry run does not resume from the checkpoint a failed run left in the state dir, and leaves it as it is', async (t) => {
  const dir = await tempDir(t);
  const users = [
    { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
    { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' },
  ];
  const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2'] }, { id: 'c_2', type: 'room', name: 'Jane alone', members: ['u_1'] }];
  const message = (id: string, conversationId: string, senderId: string) => ({ id, conversationId, type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId, text: id });
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': [message('m_1', 'c_2', 'u_1'), message('m_2', 'c_1', 'u_1'), message('m_3', 'c_1', 'u_2')] } });
  const out = join(dir, 'mail');
  await mkdir(out);
  await writeFile(join(out, 'omar@acme.example'), 'a file where a mailbox folder belongs');
  const state = join(dir, 'state');
  const args = ['run', archive, '--all-domains', '--sink', `maildir:${out}`, '--state-dir', state, '--rejects', join(dir, 'rejects')];
  const failed = await cli(args);
  t.is(failed.code, 1);
  t.true((await readdir(join(state, 'checkpoints'))).some((n) => n.endsWith('.json')), 'the failed run left a checkpoint');
  const before = await snapshot(dir);
  const dry = await cli([...args, '--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  const summary = JSON.parse(dry.stdout) as DryRunJson;
  t.is(summary.itemsDoneEarlier, 0);
  t.deepEqual(summary.mailboxes, { 'jane@acme.example': 3, 'omar@acme.example': 2 });
  t.notRegex(dry.log, /resuming/);
  t.deepEqual(await snapshot(dir), before);
  // The real re-run does resume from it (so the dry run above had something to ignore).
  await rm(join(out, 'omar@acme.example'));
  const resumed = await cli(args);
  t.is(resumed.code, 0, resumed.stderr);
  t.regex(resumed.log, /resuming .* from an earlier run's checkpoint/);
});

test('--inbox --dry-run reads every settled archive and moves, records and locks nothing', async (t) => {
  const dir = await tempDir(t);
  const inbox = join(dir, 'incoming');
  await mkdir(inbox);
  const old = (minutes: number) => new Date(Date.now() - minutes * 60_000);
  await generateSample(join(inbox, 'day1.zip'), { events: 40, seed: 1, day: '2026-11-22', edgeCases: false });
  await generateSample(join(inbox, 'day2.zip'), { events: 40, seed: 2, day: '2026-11-23', edgeCases: false });
  await writeFile(join(inbox, 'broken.zip'), 'not a zip at all');
  for (const [name, minutes] of [['day1.zip', 30], ['day2.zip', 20], ['broken.zip', 10]] as const) await utimes(join(inbox, name), old(minutes), old(minutes));
  const state = join(dir, 'state');
  const before = await snapshot(dir);
  const args = ['run', '--all-domains', '--inbox', inbox, '--state-dir', state, '--sink', `maildir:${join(dir, 'mail')}`, '--rejects', join(dir, 'rejects'), '--dry-run'];
  const result = await cli(args);
  t.is(result.code, 2, 'the broken archive fails as it would in a run');
  t.is(result.stdout.match(/^pivot-archive: DRY RUN/gm)?.length, 2);
  t.regex(result.stdout, /pivot-archive: broken\.zip: failed-archive \(E_ARCHIVE_UNREADABLE/);
  t.regex(result.stdout, /inbox: 3 archive\(s\) read \(dry run: none moved or recorded\)/);
  t.regex(result.log, /broken\.zip: .*a run would move it to failed\/ \(dry run: left in place\)/);
  t.deepEqual(await snapshot(dir), before);
  const json = await cli([...args, '--json']);
  // A line per archive: the two summaries, then the broken archive's failure line (README "--json").
  const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as DryRunJson & { record?: string; code?: string });
  t.like(lines[2], { record: 'failure', code: 'E_ARCHIVE_UNREADABLE' });
  const summaries = lines.slice(0, 2);
  t.deepEqual(summaries.map((s) => s.dryRun), [true, true]);
  t.true(summaries.every((s) => s.delivered > 0 && s.balanced));
  t.is(lines.length, 3);
  t.deepEqual(await snapshot(dir), before);
});

test('dryRun can come from the config file; a flag turns it off', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 50, seed: 6, edgeCases: false });
  const config = join(dir, 'config.json');
  await writeFile(config, JSON.stringify({ sink: `maildir:${join(dir, 'mail')}`, domains: ['acme.example'], dryRun: true }));
  const dry = await cli(['run', archive, '--config', config, '--json']);
  t.is(dry.code, 0, dry.stderr);
  t.true((JSON.parse(dry.stdout) as DryRunJson).dryRun);
  t.deepEqual((await readdir(dir)).sort(), ['config.json', 'export.zip']);
  const real = await cli(['run', archive, '--config', config, '--no-dry-run', '--json']);
  t.is(real.code, 0, real.stderr);
  t.is((JSON.parse(real.stdout) as Record<string, unknown>).dryRun, undefined);
  t.true((await readMaildir(join(dir, 'mail'))).length > 0);
});

test('with --signing-key the dry run checks the key as a run would, and writes no ledger, lock or run log', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 60, seed: 8, edgeCases: false });
  const key = join(dir, 'ledger.key');
  t.is((await cli(['keygen', '--out', key, '--name', 'acme'])).code, 0);
  const state = join(dir, 'state');
  const args = ['run', archive, '--domain', 'acme.example', '--sink', `maildir:${join(dir, 'mail')}`, '--rejects', join(dir, 'rejects'), '--state-dir', state, '--signing-key', key];
  const real = await cli(args);
  t.is(real.code, 0, real.stderr);
  t.true((await readdir(state)).includes('ledger.jsonl'));
  const before = await snapshot(dir);
  const dry = await cli([...args, '--dry-run', '--json']);
  t.is(dry.code, 0, dry.stderr);
  t.true((JSON.parse(dry.stdout) as DryRunJson).dryRun);
  t.deepEqual(await snapshot(dir), before, 'the ledger, its checkpoint note, the lock and runs/ are as they were');
  const missingKey = await cli([...args.slice(0, -1), join(dir, 'nokey'), '--dry-run']);
  t.is(missingKey.code, 2);
  t.regex(missingKey.log, /--signing-key .*nokey cannot be read/);
  const noState = await cli(['run', archive, '--domain', 'acme.example', '--sink', `maildir:${join(dir, 'mail')}`, '--signing-key', key, '--dry-run']);
  t.is(noState.code, 2);
  t.regex(noState.log, /--signing-key \(or PIVOT_ARCHIVE_SIGNING_KEY\) signs the ledger kept in --state-dir \(and a staging run.s index\): give --state-dir too/);
  t.deepEqual(await snapshot(dir), before);
});
