// The start of the Maildir sink's syncfs helper (one perl for the run, spoken to over two FIFOs)
// must not hang the run or stall it: a perl that dies between opening its requests and its
// answers once left the worker blocked for ever in a blocking open of the answers (the run deaf
// to SIGINT and SIGTERM, only SIGKILL ended it); a PATH without perl cost a 10 s wait for a
// helper that could never start. Either way the run falls back to fsyncs and delivers everything.
import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { generateSample } from '../src/sample/generate.js';
import { BIN, cli, readStatusLog } from './helpers/cli.js';
import { pairs, readMaildir } from './helpers/maildir.js';
import { needing } from './helpers/needing.js';
import { expectedPairs, type ReferenceConversations, type ReferenceUsers } from './helpers/reference.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

const run = promisify(execFile);

const strace = await run('sh', ['-c', 'command -v strace']).then(
  ({ stdout }) => stdout.trim(),
  () => '',
);
const noStrace = strace ? undefined : 'strace is not installed (Debian: strace)';

function expectedFor(archive: string): string[] {
  const entries = readJsonEntriesIndependently(archive);
  const files = Object.keys(entries).filter((n) => n.startsWith('messages/')).sort().map((n) => entries[n] as unknown[]);
  return expectedPairs(entries['users.json'] as ReferenceUsers, entries['conversations.json'] as ReferenceConversations, files, {});
}

/** A run of a small archive into a Maildir, with `env`, killed if it takes more than a minute (a hang). */
async function deliver(t: ExecutionContext, dir: string, env: Record<string, string>) {
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 300, seed: 11, edgeCases: false });
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const args = ['run', archive, '--all-domains', '--sink', `maildir:${out}`, '--status-log', status, '--rejects', join(dir, 'rejects')];
  const result = await cli(args, { env, timeoutMs: 60_000 });
  t.is(result.signal, null, `the run hung (killed after 60 s): ${result.log.slice(-1500)}`);
  t.is(result.code, 0, result.log.slice(-1500));
  t.deepEqual(pairs(await readMaildir(out)), expectedFor(archive));
  t.is((await readStatusLog(status)).summary.failed, 0);
}

needing(process.arch === 'x64' || process.arch === 'arm64' ? undefined : `no syncfs number for ${process.arch}`, 'maildir: a syncfs helper that dies between opening its requests and its answers does not hang the run: fsyncs instead, everything delivered (exit 0)', async (t) => {
  const dir = await tempDir(t);
  // A perl that opens its requests (as the helper does first) and dies before opening its answers.
  const bin = join(dir, 'bin');
  const ran = join(dir, 'fake-perl-ran');
  await mkdir(bin);
  await writeFile(join(bin, 'perl'), `#!/bin/sh\n: > '${ran}'\nexec 3<"$3"\nkill -9 $$\n`);
  await chmod(join(bin, 'perl'), 0o755);
  await deliver(t, dir, { PATH: `${bin}:${process.env.PATH ?? ''}` });
  t.truthy(await stat(ran).catch(() => undefined), 'the run started the stand-in perl');
});

needing(noStrace, 'maildir: without perl on PATH (mkfifo there), the run does not wait for a helper that cannot start', async (t) => {
  const dir = await tempDir(t);
  // A PATH with mkfifo but no perl.
  const bin = join(dir, 'bin');
  await mkdir(bin);
  await symlink(process.execPath, join(bin, 'node'));
  const mkfifo = (await run('sh', ['-c', 'command -v mkfifo'])).stdout.trim();
  await symlink(mkfifo, join(bin, 'mkfifo'));
  const trace = join(dir, 'trace.txt');
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 300, seed: 11, edgeCases: false });
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const code = await run(strace, ['-f', '-o', trace, '-e', 'trace=openat,execve', process.execPath, BIN, 'run', archive, '--all-domains', '--sink', `maildir:${out}`, '--status-log', status, '--rejects', join(dir, 'rejects')], { env: { ...process.env, PATH: bin }, timeout: 120_000 }).then(
    () => 0,
    (err: { code?: number }) => err.code ?? -1,
  );
  const lines = (await readFile(trace, 'utf8')).split('\n');
  t.is(code, 0, lines.slice(-20).join('\n'));
  t.true(lines.some((l) => /execve\("[^"]*\/mkfifo"/.test(l) && / = 0$/.test(l)), 'mkfifo ran');
  const waits = lines.filter((l) => /pivot-archive-syncfs-[^/]*\/requests", O_WRONLY\|O_NONBLOCK.* = -1 ENXIO/.test(l));
  t.is(waits.length, 0, 'no wait for a perl that is not there');
  t.deepEqual(pairs(await readMaildir(out)), expectedFor(archive));
  t.is((await readStatusLog(status)).summary.failed, 0);
});
