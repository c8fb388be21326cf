// `verify` of a Maildir store under a low open-file limit (`ulimit -n`): it read 64 files at once
// beside the 64 group files of its list of messages to find, met EMFILE and exited 70 (a bug in
// this tool, as the exit code says) with Node's error alone. Now, as `run`: under MIN_OPEN_FILES
// (64) it is refused, E_OPEN_FILE_LIMIT, exit 2, naming the limit; from 64 up it keeps within the
// limit and checks everything. Never 70, never 0 without the check.
import test from 'ava';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

/** The least open-file limit a run (and now verify) starts under: src/launch.ts MIN_OPEN_FILES. */
const MIN_OPEN_FILES = 64;

/** The command line under `ulimit -n limit` (soft), killed after a minute (a hang is a failure). */
const cliLimited = (limit: number, args: string[]) => cli(args, { shell: `ulimit -n ${limit}`, timeoutMs: 60_000 });

test('verify of a Maildir store under ulimit -n 64 reads it back whole within the limit: exit 0, every message intact, the same counts as under the usual limit', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  // Many mailboxes (and so group files) and more messages in one mailbox than files read at once.
  await generateSample(archive, { events: 300, seed: 4, users: 80 });
  const mail = join(dir, 'mail');
  const state = join(dir, 'state');
  const run = await cli(['run', archive, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--quiet']);
  t.is(run.code, 0, run.stderr.slice(0, 2000));
  const args = ['verify', '--state-dir', state, '--sink', `maildir:${mail}`];
  const usual = await cli([...args, '--json']);
  t.is(usual.code, 0, usual.stdout + usual.stderr.slice(0, 2000));
  const expected = JSON.parse(usual.stdout) as { store: { checked: number; intact: number } };
  t.true(expected.store.checked > 200, `${expected.store.checked} messages checked`);

  const limited = await cliLimited(MIN_OPEN_FILES, args);
  t.is(limited.signal, null, limited.stderr.slice(0, 2000));
  t.notRegex(limited.stderr, /EMFILE/);
  t.is(limited.code, 0, limited.stdout + limited.stderr.slice(0, 2000));
  t.true(limited.stdout.includes(`intact ${expected.store.intact}, missing 0, altered 0, unexpected 0`), limited.stdout);
  t.regex(limited.stdout, /^verified: the ledger holds, and everything it records is there, unaltered$/m);
  const json = await cliLimited(MIN_OPEN_FILES, [...args, '--json']);
  t.is(json.code, 0, json.stderr.slice(0, 2000));
  t.like(JSON.parse(json.stdout), { exitCode: 0, store: { checked: expected.store.checked, intact: expected.store.intact, missing: [], altered: [], unexpected: [] } });
});

test('verify under an open-file limit below 64 is refused as a run is: E_OPEN_FILE_LIMIT naming the limit, exit 2, never 70 or 0', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 60, seed: 4 });
  const mail = join(dir, 'mail');
  const state = join(dir, 'state');
  const run = await cli(['run', archive, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--quiet']);
  t.is(run.code, 0, run.stderr.slice(0, 2000));
  for (const limit of [48]) {
    for (const extra of [['--sink', `maildir:${mail}`], ['--ledger']]) {
      const r = await cliLimited(limit, ['verify', '--state-dir', state, ...extra]);
      const what = `ulimit -n ${limit} ${extra.join(' ')}: exit ${r.code} ${r.signal ?? ''} ${r.stdout} ${r.stderr.slice(0, 1500)}`;
      t.is(r.signal, null, what);
      t.is(r.code, 2, what);
      t.regex(r.stderr, new RegExp(`E_OPEN_FILE_LIMIT: the open-file limit \\(ulimit -n\\) is ${limit}, too low to verify: pivot-archive needs at least ${MIN_OPEN_FILES} open files`), what);
      t.regex(r.stderr, /ulimit -n 1024/, what);
      t.notRegex(r.stdout, /^verified/m, what);
    }
  }
});
