import test from 'ava';
import { hostname } from 'node:os';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { cli, startCli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

test('one run at a time per state dir: a second run exits 3 at once and does nothing', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 2000, seed: 12 });
  const state = join(dir, 'state');
  const args = (out: string) => ['run', archive, '--sink', `maildir:${join(dir, out)}`, '--state-dir', state, '--rejects', join(dir, 'rejects')];
  const first = startCli(args('first'));
  // Wait until the first run holds the lock.
  for (let i = 0; i < 200 && !(await readdir(state).catch(() => [] as string[])).includes('lock'); i++) await new Promise((r) => setTimeout(r, 25));
  const second = await cli(args('second'));
  t.is(second.code, 3);
  t.regex(second.stderr, /E_LOCKED: another run holds .*lock \(pid \d+ on /);
  t.deepEqual(await readMaildir(join(dir, 'second')), []);
  t.is(await first.exited, 0);
  t.false((await readdir(state)).includes('lock'), 'the lock is released');
});

test('a stale lock left by a killed run is taken over', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 50, seed: 13, edgeCases: false });
  const state = join(dir, 'state');
  await mkdir(state);
  // A pid that is not running: the largest pid a Linux system hands out, plus one.
  await writeFile(join(state, 'lock'), JSON.stringify({ pid: 4194305, host: hostname(), startedAt: '2026-11-23T02:30:00Z' }));
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'out')}`, '--state-dir', state]);
  t.is(result.code, 0, result.stderr);
  t.true((await readMaildir(join(dir, 'out'))).length > 0);
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
  await writeFile(config, JSON.stringify({ sink: `maildir:${out}`, stateDir: state }));
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

test('cron --print gives a crontab line with absolute paths and quoted arguments', async (t) => {
  const result = await cli(['cron', '--print', '--at', '02:30', '--', 'run', '--inbox', '/srv/pivot in', '--sink', 'maildir:/srv/mail?folder=.Pivot']);
  t.is(result.code, 0, result.stderr);
  const line = result.stdout.trim();
  t.regex(line, /^30 2 \* \* \* cd \S+ && \S*node --optimize-for-size \/\S+\/bin\/pivot-archive\.js run --inbox '\/srv\/pivot in' --sink 'maildir:\/srv\/mail\?folder=\.Pivot'$/);
  const bad = await cli(['cron', '--print', '--at', '25:00', '--', 'run']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /not a time of day/);
});
