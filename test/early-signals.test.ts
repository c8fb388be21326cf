// A SIGTERM while the CLI loads (before a command sets its handlers) is kept for the command, and
// ends the process as usual when no command takes it.
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { cli, runRecords } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';
import { generateSample } from '../src/sample/generate.js';

const MODULE = fileURLToPath(new URL('../src/early-signals.js', import.meta.url));
/**
 * A preloaded module that sends SIGTERM once the bin keeps signals (a listener is there), while
 * the CLI itself still loads; on the main thread only (a preload runs in the Maildir sink's worker too).
 */
const TERM_AT_LOAD = "import { isMainThread } from 'node:worker_threads';\nif (isMainThread) { const wait = setInterval(() => { if (process.listenerCount('SIGTERM') > 0) { clearInterval(wait); process.kill(process.pid, 'SIGTERM'); } }, 1); }\n";

function child(script: string): ReturnType<typeof spawnSync> {
  return spawnSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(MODULE)});\n${script}`], { encoding: 'utf8', timeout: 40_000 });
}

test('a signal kept before a command takes it is handed over, and does not end the process', (t) => {
  const r = child("m.keepEarlySignals(); process.kill(process.pid, 'SIGTERM'); await new Promise((r) => setTimeout(r, 200)); console.log(JSON.stringify(m.takeEarlySignals())); await new Promise((r) => setTimeout(r, 10_500)); console.log('alive');");
  t.is(r.status, 0, String(r.stderr));
  t.deepEqual(String(r.stdout).trim().split('\n'), ['["SIGTERM"]', 'alive']);
});

test('a kept signal no command takes ends the process as the signal does, about 10 s later', (t) => {
  const started = Date.now();
  const r = child("m.keepEarlySignals(); process.kill(process.pid, 'SIGTERM'); await new Promise((r) => setTimeout(r, 25_000)); console.log('not ended');");
  t.is(r.signal, 'SIGTERM');
  t.is(String(r.stdout), '');
  const elapsed = Date.now() - started;
  t.true(elapsed >= 9500 && elapsed < 20_000, `ended after ${elapsed} ms`);
});

test('a run whose SIGTERM came before it set its handlers stops at once with its record (exit 4), not unrecorded (143)', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 200, seed: 3 });
  // The signal arrives while the CLI module loads: a preloaded module sends it right after the bin keeps signals.
  const preload = join(dir, 'term-at-load.mjs');
  await writeFile(preload, TERM_AT_LOAD);
  const state = join(dir, 'state');
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'r'), '--json'], { env: { NODE_OPTIONS: `--import=${preload}` } });
  t.is(result.code, 4, result.stderr);
  t.like(JSON.parse(result.stdout), { interrupted: true });
  const status = await cli(['status', '--state-dir', state, '--json']);
  t.regex(status.stdout, /"interrupted":true/);
});

/** A drop folder holding one settled archive, and a preload that sends SIGTERM as the CLI loads. */
async function dropFolderStoppedAtLoad(t: ExecutionContext): Promise<{ dir: string; inbox: string; preload: string }> {
  const dir = await tempDir(t);
  const inbox = join(dir, 'incoming');
  await mkdir(inbox);
  await generateSample(join(inbox, 'a.zip'), { events: 50, seed: 3 });
  const anHourAgo = new Date(Date.now() - 3_600_000);
  await utimes(join(inbox, 'a.zip'), anHourAgo, anHourAgo);
  const preload = join(dir, 'term-at-load.mjs');
  await writeFile(preload, TERM_AT_LOAD);
  return { dir, inbox, preload };
}

test('a drop-folder run stopped by a signal before its first archive exits 4 and leaves the archive for the next run (not 0: nothing was done)', async (t) => {
  const { dir, inbox, preload } = await dropFolderStoppedAtLoad(t);
  const result = await cli(['run', '--inbox', inbox, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', join(dir, 'state'), '--rejects', join(dir, 'r')], { env: { NODE_OPTIONS: `--import=${preload}` } });
  t.is(result.code, 4, result.stderr);
  t.regex(result.stderr, /stopped by a signal before a\.zip/);
  t.true(existsSync(join(inbox, 'a.zip')));
});

test('a drop-folder run stopped by a signal before an archive records it, as a plain run stopped early does: a failure (E_STOPPED, exit 4) in the run log, the ledger, --status-log and the --json lines', async (t) => {
  const { dir, inbox, preload } = await dropFolderStoppedAtLoad(t);
  const state = join(dir, 'state');
  const statusLog = join(dir, 'status.jsonl');
  const result = await cli(['run', '--inbox', inbox, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', state, '--status-log', statusLog, '--rejects', join(dir, 'r'), '--json'], { env: { NODE_OPTIONS: `--import=${preload}` } });
  t.is(result.code, 4, result.stderr);
  t.like(JSON.parse(result.stdout.trim() || '{}'), { record: 'failure', archive: join(inbox, 'a.zip'), outcome: 'stopped', code: 'E_STOPPED', exitCode: 4 });
  const expected = { record: 'failure', archive: join(inbox, 'a.zip'), code: 'E_STOPPED', exitCode: 4 };
  t.like((await runRecords(state).catch(() => [])).at(-1), expected, 'the state dir records the run');
  t.like(JSON.parse((await readFile(statusLog, 'utf8').catch(() => '')).trim().split('\n').at(-1) || '{}'), expected, 'so does --status-log');
  t.regex(await readFile(join(state, 'ledger.jsonl'), 'utf8').catch(() => ''), /"code":"E_STOPPED"/, 'and the ledger');
  t.true(existsSync(join(inbox, 'a.zip')), 'left for the next run');
});
