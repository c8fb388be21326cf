// The Maildir sink's syncfs calls go through one perl for the whole run, not a perl spawned per
// group: each spawn forked the whole process, and the copy-on-write faults that followed cost the
// main thread more than the writes (20k events: 40.4 s against 12.5 s). Seen from outside with
// strace: one perl started, a syncfs per group, everything delivered. Without perl (or mkfifo),
// every file and directory is fsynced instead, and the run still delivers everything.
import { execFile } from 'node:child_process';
import { readFile, symlink, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { generateSample } from '../src/sample/generate.js';
import { BIN, REPO_ROOT, readStatusLog } from './helpers/cli.js';
import { pairs, readMaildir } from './helpers/maildir.js';
import { expectedPairs, type ReferenceConversations, type ReferenceUsers } from './helpers/reference.js';
import { needing } from './helpers/needing.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

const run = promisify(execFile);

/** strace's path: the run under it gets a PATH of the test's choosing. */
const strace = await run('sh', ['-c', 'command -v strace']).then(
  ({ stdout }) => stdout.trim(),
  () => '',
);
const noStrace = strace ? undefined : 'strace is not installed (Debian: strace)';

/** The run under strace: its exit code and the system calls named, per process. */
async function tracedRun(dir: string, env: Record<string, string> = {}): Promise<{ code: number; trace: string; archive: string; out: string; status: string }> {
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 400, seed: 7, edgeCases: false });
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const trace = join(dir, 'trace.txt');
  const args = ['-f', '-o', trace, '-e', 'trace=execve,syncfs,fsync', process.execPath, BIN, 'run', archive, '--all-domains', '--sink', `maildir:${out}`, '--status-log', status];
  const code = await run(strace, args, { cwd: REPO_ROOT, env: { ...process.env, ...env } }).then(
    () => 0,
    (err: { code?: number }) => err.code ?? -1,
  );
  return { code, trace: await readFile(trace, 'utf8'), archive, out, status };
}

function expectedFor(archive: string): string[] {
  const entries = readJsonEntriesIndependently(archive);
  const files = Object.keys(entries).filter((n) => n.startsWith('messages/')).sort().map((n) => entries[n] as unknown[]);
  return expectedPairs(entries['users.json'] as ReferenceUsers, entries['conversations.json'] as ReferenceConversations, files, {});
}

needing(noStrace, 'maildir: one perl makes every syncfs of a run (a syncfs per group, one perl started), and the run delivers everything', async (t) => {
  const dir = await tempDir(t);
  const { code, trace, archive, out, status } = await tracedRun(dir);
  t.is(code, 0, trace.slice(-2000));
  t.deepEqual(pairs(await readMaildir(out)), expectedFor(archive));
  const perls = trace.split('\n').filter((l) => /execve\("[^"]*\/perl"/.test(l) && / = 0$/.test(l));
  t.is(perls.length, 1, 'one perl for the run');
  const syncs = trace.split('\n').filter((l) => /\bsyncfs\(\d+\)\s+= 0$/.test(l));
  t.true(syncs.length > 1, `a syncfs per group (${syncs.length})`);
  t.is((await readStatusLog(status)).summary.failed, 0);
});

needing(noStrace, 'maildir: without perl and mkfifo on PATH, every file and directory is fsynced instead (no syncfs), and the run delivers everything', async (t) => {
  const dir = await tempDir(t);
  // A PATH with nothing but what the run itself needs from it: no perl, no mkfifo.
  const bin = join(dir, 'bin');
  await mkdir(bin);
  await symlink(process.execPath, join(bin, 'node'));
  const { code, trace, archive, out } = await tracedRun(dir, { PATH: bin });
  t.is(code, 0, trace.slice(-2000));
  const expected = expectedFor(archive);
  t.deepEqual(pairs(await readMaildir(out)), expected);
  t.false(/\bsyncfs\(/.test(trace), 'no syncfs');
  const fsyncs = trace.split('\n').filter((l) => /\bfsync\(\d+\)\s+= 0$/.test(l));
  t.true(fsyncs.length >= new Set(expected.map((p) => p.split(' ').slice(1).join(' '))).size, `a file's fsync at least per item (${fsyncs.length})`);
});
