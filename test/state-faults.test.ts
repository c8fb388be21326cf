// The state dir's lock when it cannot be written whole (a full disk): no empty or torn lock is left
// for the next runs to wait 10 minutes on. A full disk is stood in for by RLIMIT_FSIZE 0 (any user
// may lower it): the lock's write fails (EFBIG), as on a full tmpfs (ENOSPC).
import test from 'ava';
import { mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StateDir } from '../src/state/index.js';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

/** The command line with no file of its own allowed to grow (writes fail EFBIG; SIGXFSZ ignored so the write returns the error). */
const cliNoFileSpace = (args: string[]) => cli(args, { shell: 'trap "" XFSZ; ulimit -f 0' });

test('a lock that cannot be written (disk full) is removed by the run that failed to write it: that run exits 2, the next one runs', async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 30, seed: 3, edgeCases: false });
  const state = join(dir, 'state');
  const args = (out: string) => ['run', archive, '--all-domains', '--sink', `maildir:${join(dir, out)}`, '--state-dir', state, '--rejects', join(dir, 'rejects')];
  const full = await cliNoFileSpace(args('first'));
  t.is(full.code, 2, full.stderr);
  t.regex(full.stderr, /cannot lock state dir .*EFBIG/);
  t.false((await readdir(state)).includes('lock'), 'no lock is left behind');
  t.false((await readdir(state)).includes('lock.break'));
  const next = await cli(args('second'));
  t.is(next.code, 0, next.stderr);
  t.true((await readMaildir(join(dir, 'second'))).length > 0);
});

test('a lock is never seen half written (made whole, then linked into place): an empty or torn one (a crash of an older version) is held for the 10-minute lease, then taken over', async (t) => {
  const dir = await tempDir(t);
  for (const [name, content] of [['empty', ''], ['torn', '{"pid":12']] as const) {
    const state = new StateDir(join(dir, name));
    await mkdir(state.dir);
    await writeFile(state.lockPath, content);
    await t.throwsAsync(state.lock(), { code: 'E_LOCKED' }, `${name}, fresh`);
    const aMinuteAgo = new Date(Date.now() - 60_000);
    await utimes(state.lockPath, aMinuteAgo, aMinuteAgo);
    await t.throwsAsync(state.lock(), { code: 'E_LOCKED' }, `${name}, a minute old: its maker may be slow`);
    const pastTheLease = new Date(Date.now() - 11 * 60_000);
    await utimes(state.lockPath, pastTheLease, pastTheLease);
    const release = await state.lock();
    t.truthy(await state.holder(), `${name}: taken over`);
    await release();
    t.false((await readdir(state.dir)).includes('lock'));
  }
});

test("a state dir whose shard cannot be recorded (its first sharded run on a full disk; here a folder in the way of shard's temporary file) is a setup error (E_CONFIG naming it, exit 2), not a bug (70)", async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 30, seed: 3, edgeCases: false });
  const state = join(dir, 'state');
  await mkdir(join(state, 'shard.tmp'), { recursive: true });
  const result = await cli(['run', archive, '--all-domains', '--shard', '1/2', '--sink', `maildir:${join(dir, 'mail')}`, '--state-dir', state, '--rejects', join(dir, 'rejects')]);
  t.is(result.code, 2, result.stderr);
  t.regex(result.stderr, /E_CONFIG: state dir .* cannot be used: its shard cannot be recorded/);
  t.notRegex(result.stderr, /E_INTERNAL/);
});
