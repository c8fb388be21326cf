// Under a very low open-file limit (`ulimit -n` 24 to 40) the command line failed EMFILE while it
// loaded its modules (Node's loader reads every import of a module at once), exit 2 with Node's
// error alone and no record. Now: under 256 the bin has modules read one at a time
// (src/launch.ts), a run under MIN_OPEN_FILES is refused with its record (E_OPEN_FILE_LIMIT, exit
// 2, naming the limit), and where even that cannot load, it says so, naming the limit and why
// nothing could be recorded. Never a hang, a crash or exit 0.
import test from 'ava';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

/** The command line under `ulimit -n limit` (soft), killed after a minute (a hang is a failure). */
const cliLimited = (limit: number, args: string[]) => cli(args, { shell: `ulimit -n ${limit}`, timeoutMs: 60_000 });

/** The least open-file limit a run starts under (src/launch.ts MIN_OPEN_FILES), written out so that this file runs against a build without it. */
const MIN_OPEN_FILES = 64;

async function records(path: string): Promise<Record<string, unknown>[]> {
  return (await readFile(path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

test('a run under ulimit -n 22 to 40 exits 2 naming the open-file limit, never hangs, crashes or runs; where it can load, its refusal is recorded in the state dir (run log, ledger)', async (t) => {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 40, seed: 2 });
  const outcomes: string[] = [];
  for (const limit of [22, 24, 26, 28, 30, 32, 36, 40]) {
    const state = join(dir, `state-${limit}`);
    const r = await cliLimited(limit, ['run', archive, '--sink', `maildir:${join(dir, `mail-${limit}`)}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, `rejects-${limit}`)]);
    const what = `ulimit -n ${limit}: exit ${r.code} ${r.signal ?? ''} ${r.stderr.slice(0, 1500)}`;
    t.is(r.signal, null, what);
    t.is(r.code, 2, what);
    t.notRegex(r.stderr, /triggerUncaughtException|node:internal/, what);
    t.true(r.stderr.includes(`open-file limit (ulimit -n) is ${limit}`), what);
    t.regex(r.stderr, /ulimit -n 1024/, what);
    t.is(r.stdout.includes('delivered'), false, what);
    const logs = await readdir(join(state, 'runs')).catch(() => []);
    if (logs.length === 0) {
      // Nothing could load: said, with why there is no record.
      t.regex(r.stderr, /cannot start: EMFILE: too many open files/, what);
      t.regex(r.stderr, /nothing was recorded: the modules that write the run log and the ledger are the ones that could not be read/, what);
      outcomes.push(`${limit}: not recorded`);
      continue;
    }
    t.regex(r.stderr, new RegExp(`E_OPEN_FILE_LIMIT: the open-file limit \\(ulimit -n\\) is ${limit}, too low to run: pivot-archive needs at least ${MIN_OPEN_FILES} open files`), what);
    const [runLog] = await records(join(state, 'runs', logs[0]!));
    t.like(runLog, { record: 'failure', code: 'E_OPEN_FILE_LIMIT', exitCode: 2, archive }, what);
    const ledger = await records(join(state, 'ledger.jsonl'));
    t.like(ledger.find((l) => l.record === 'failure'), { code: 'E_OPEN_FILE_LIMIT', exitCode: 2 }, what);
    t.is(ledger.at(-1)!.record, 'checkpoint', what);
    outcomes.push(`${limit}: recorded`);
  }
  t.log(outcomes.join(', '));
  // From some 28 up (node itself holds some 18 descriptors) the refusal is recorded, whatever the host.
  for (const limit of [32, 36, 40]) t.true(outcomes.includes(`${limit}: recorded`), outcomes.join(', '));
  // And the state dir's status says why.
  const status = await cli(['status', '--state-dir', join(dir, 'state-40')]);
  t.regex(status.stdout, /FAILED before delivering \(exit 2\): E_OPEN_FILE_LIMIT: the open-file limit \(ulimit -n\) is 40/);
});

test('under ulimit -n 64 (modules read one at a time) a run delivers everything, exit 0, and its ledger and store verify', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 300, seed: 4 });
  const mail = join(dir, 'mail');
  const state = join(dir, 'state');
  const r = await cliLimited(MIN_OPEN_FILES, ['run', archive, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--json']);
  t.is(r.code, 0, r.stderr.slice(0, 3000));
  const summary = JSON.parse(r.stdout) as { delivered: number; failed: number; itemsAvailableForImport: number };
  t.is(summary.failed, 0);
  t.is(summary.delivered, summary.itemsAvailableForImport);
  const verified = await cliLimited(MIN_OPEN_FILES, ['verify', '--state-dir', state, '--sink', `maildir:${mail}`]);
  t.is(verified.code, 0, verified.stdout + verified.stderr.slice(0, 2000));
});
