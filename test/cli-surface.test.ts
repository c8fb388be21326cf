// The command line's surface where a slip of the hand meets it: switches given a value, a status
// log or log file pointed into the state dir, a state dir or log file that cannot be used, a log
// file on a full disk, what a refused command line records, and help that says the real defaults.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode } from '../src/errors.js';
import { createLogger, flushLogger } from '../src/logger.js';
import { OPTIONS } from '../src/options/index.js';
import { parseValue, type Origin } from '../src/options/spec.js';
import { generateSample } from '../src/sample/generate.js';
import { maildirOptions } from '../src/sinks/maildir/options.js';
import { cli, runRecords } from './helpers/cli.js';
import { needing } from './helpers/needing.js';
import { tempDir } from './helpers/tmp.js';

const run = promisify(execFile);

/** A small export (no edge cases: every run of it exits 0) and what a run of it needs. */
async function setUp(t: ExecutionContext): Promise<{ dir: string; archive: string; mail: string; args: string[] }> {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 30, seed: 7, edgeCases: false });
  const mail = join(dir, 'mail');
  return { dir, archive, mail, args: ['run', archive, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--quiet'] };
}

const lines = async (path: string) => (await readFile(path, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
const sha256Of = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

test('--dry-run=VALUE takes what the config file takes, true or false: yes, TRUE, an empty value or dryRun=on is refused by name (exit 2) and nothing is delivered or recorded; =true is a dry run', async (t) => {
  t.timeout(180_000);
  const { dir, mail, args } = await setUp(t);
  const statusLog = join(dir, 'status.jsonl');
  for (const written of ['--dry-run=yes', '--dry-run=TRUE', '--dry-run=', '--dryRun=on']) {
    const value = written.split('=')[1]!;
    const refused = await cli([...args, '--status-log', statusLog, written]);
    t.is(refused.code, 2, `${written}: ${refused.stderr}`);
    t.true(refused.stderr.includes(`E_USAGE: --dry-run: ${JSON.stringify(value)} is not true or false`), refused.stderr);
  }
  t.false(existsSync(mail), 'nothing delivered');
  // Meant as dry runs: no failure record either.
  t.false(existsSync(statusLog));
  const dry = await cli([...args, '--dry-run=true']);
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, /^pivot-archive: DRY RUN/);
  t.false(existsSync(mail));
});

test('every other switch of every command too: a value but true or false is refused naming the switch and the value, also in a line cron checks', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const runArgs = ['run', join(dir, 'x.zip'), '--sink', `maildir:${join(dir, 'm')}`, '--domain', 'acme.example'];
  const cases: [string[], string][] = [
    [[...runArgs, '--keep=yes'], '--keep: "yes"'],
    [['run', join(dir, 'x.zip'), '--sink', `maildir:${join(dir, 'm')}`, '--all-domains=1'], '--all-domains: "1"'],
    [[...runArgs, '--json=on'], '--json: "on"'],
    [[...runArgs, '--quiet=True'], '--quiet: "True"'],
    [[...runArgs, '--insecure=no'], '--insecure: "no"'],
    [['import', '--from', 'azblob://c', '--sink', `maildir:${join(dir, 'm')}`, '--again=yes'], '--again: "yes"'],
    [['verify', '--state-dir', dir, '--ledger=yes'], '--ledger: "yes"'],
    [['status', '--state-dir', dir, '--json=1'], '--json: "1"'],
    [['cron', '--print', '--', ...runArgs, '--quiet=on'], '--quiet: "on"'],
  ];
  for (const [args, named] of cases) {
    const result = await cli(args);
    t.is(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    t.true(result.stderr.includes(`E_USAGE: ${named} is not true or false`), result.stderr);
  }
});

test('a switch written as text (a flag, an environment variable) is true or false as the words; in the config file only as JSON', (t) => {
  const dryRun = OPTIONS.find((o) => o.key === 'dryRun')!;
  const env: Origin = { name: 'PIVOT_ARCHIVE_DRY_RUN', code: ErrorCode.CONFIG, text: true };
  t.true(parseValue(dryRun, 'true', env));
  t.false(parseValue(dryRun, 'false', env));
  t.throws(() => parseValue(dryRun, 'yes', env), { code: ErrorCode.CONFIG, message: 'PIVOT_ARCHIVE_DRY_RUN: "yes" is not true or false' });
  t.throws(() => parseValue(dryRun, '1', { name: '--dry-run', code: ErrorCode.USAGE, text: true }), { code: ErrorCode.USAGE, message: '--dry-run: "1" is not true or false' });
  t.throws(() => parseValue(dryRun, 'true', { name: 'config.json: dryRun', code: ErrorCode.CONFIG }), { message: 'config.json: dryRun: "true" is not true or false' });
  t.true(parseValue(dryRun, true, { name: 'config.json: dryRun', code: ErrorCode.CONFIG }));
});

test('--status-log or --log-file that is the state dir\'s ledger (by path, symbolic link or hard link) or another of its own files, or one file given as both, is refused before anything is written (exit 2); the ledger still verifies and the state dir records the refusal', async (t) => {
  t.timeout(240_000);
  const { dir, archive, mail, args } = await setUp(t);
  const state = join(dir, 'state');
  const ledger = join(state, 'ledger.jsonl');
  const first = await cli([...args, '--state-dir', state]);
  t.is(first.code, 0, first.stderr);
  await symlink(ledger, join(dir, 'by-symlink.jsonl'));
  await link(ledger, join(dir, 'by-hard-link.jsonl'));
  const before = await readFile(ledger);
  const cases: [string[], RegExp][] = [
    [['--status-log', ledger], /--status-log \S+ledger\.jsonl is the state dir's ledger/],
    [['--status-log', join(dir, 'by-symlink.jsonl')], /is the state dir's ledger/],
    [['--status-log', join(dir, 'by-hard-link.jsonl')], /is the state dir's ledger/],
    [['--log-file', join(state, 'ledger.jsonl')], /--log-file \S+ is the state dir's ledger/],
    [['--log-file', join(state, 'runs', 'run.log')], /--log-file \S+run\.log is one of the state dir's own files/],
    [['--status-log', join(state, 'lock')], /is one of the state dir's own files/],
    [['--status-log', join(dir, 'both.jsonl'), '--log-file', join(dir, '.', 'both.jsonl')], /are the same file/],
  ];
  for (const [extra, message] of cases) {
    const refused = await cli([...args, '--state-dir', state, ...extra]);
    t.is(refused.code, 2, `${extra.join(' ')}: ${refused.stderr}`);
    t.regex(refused.stderr, message);
  }
  t.false(existsSync(join(state, 'runs', 'run.log')), 'the log file refused was not created');
  // A status log kept beside the ledger, in the state dir but none of its own files, is the user's to keep there (it worked before 2026-11-30).
  const beside = await cli([...args, '--state-dir', state, '--status-log', join(state, 'status.jsonl')]);
  t.is(beside.code, 0, beside.stderr);
  t.true(existsSync(join(state, 'status.jsonl')));
  const ledgerNow = await readFile(ledger);
  t.true(ledgerNow.subarray(0, before.length).equals(before), 'the ledger was only appended to');
  const verified = await cli(['verify', '--state-dir', state, '--sink', `maildir:${mail}`]);
  t.is(verified.code, 0, verified.stdout + verified.stderr);
  // Each refusal is in the state dir's run logs, with the archive's identity.
  const failures = (await runRecords(state)).filter((r) => r.record === 'failure');
  t.is(failures.length, cases.length);
  const sha256 = await sha256Of(archive);
  for (const failure of failures) t.like(failure, { code: ErrorCode.USAGE, exitCode: 2, sha256 });
  // And cron refuses such a line when it is made.
  const cron = await cli(['cron', '--print', '--', ...args, '--state-dir', state, '--status-log', ledger]);
  t.is(cron.code, 2);
  t.regex(cron.stderr, /is the state dir's ledger/);
});

test('a --state-dir that is a file is a setup error (exit 2, E_CONFIG naming it), no stack trace; the status log records the sink\'s kind and the archive\'s size and sha256', async (t) => {
  t.timeout(120_000);
  const { dir, archive, args } = await setUp(t);
  const file = join(dir, 'a-file');
  await writeFile(file, 'not a folder');
  const statusLog = join(dir, 'status.jsonl');
  const result = await cli([...args, '--state-dir', file, '--status-log', statusLog]);
  t.is(result.code, 2, result.stderr);
  t.true(result.log.includes(`E_CONFIG: state dir ${file} cannot be used: ${file} is not a directory`), result.log);
  t.notRegex(result.stderr, /^\s+at /m);
  const [start, failure] = await lines(statusLog);
  // Its kind only: a spec may hold a secret anywhere (test/sink-options.test.ts holds every such spec out of the records).
  t.like(start, { record: 'start', sink: 'maildir:' });
  t.like(failure, { record: 'failure', code: ErrorCode.CONFIG, exitCode: 2, sha256: await sha256Of(archive), size: (await readFile(archive)).length });
});

needing(process.getuid?.() === 0 ? undefined : 'root, to mount a read-only tmpfs', 'a --state-dir on a read-only file system is a setup error (exit 2) that says so (EROFS), not ENOENT and a bug', async (t) => {
  t.timeout(120_000);
  const { dir, args } = await setUp(t);
  const mount = join(dir, 'ro');
  await mkdir(mount);
  await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', mount]);
  t.teardown(() => run('umount', [mount]).then(() => undefined));
  const result = await cli([...args, '--state-dir', join(mount, 'state')]);
  t.is(result.code, 2, result.stderr);
  t.regex(result.log, /E_CONFIG: state dir \S+ro\/state cannot be used: EROFS/);
});

test('a --log-file whose folder is a file is refused at once (exit 2) naming it, and recorded', async (t) => {
  t.timeout(120_000);
  const { dir, args } = await setUp(t);
  await writeFile(join(dir, 'a-file'), 'not a folder');
  const logFile = join(dir, 'a-file', 'run.log');
  const statusLog = join(dir, 'status.jsonl');
  const started = Date.now();
  const result = await cli([...args, '--log-file', logFile, '--status-log', statusLog]);
  t.is(result.code, 2, result.stderr);
  t.true(result.stderr.includes(`E_CONFIG: --log-file ${logFile} cannot be opened for appending: ENOTDIR`), result.stderr);
  t.log(`refused in ${Date.now() - started} ms`);
  t.like((await lines(statusLog)).find((l) => l.record === 'failure'), { code: ErrorCode.CONFIG, exitCode: 2 });
});

const FULL = '/dev/full';
const noFull = existsSync(FULL) ? undefined : `no ${FULL} on this machine`;

needing(noFull, 'a --log-file on a full disk is said once on stderr; the run goes on and exits 0 (the log is not its record)', async (t) => {
  t.timeout(120_000);
  const { args } = await setUp(t);
  const result = await cli([...args, '--log-file', FULL]);
  t.is(result.code, 0, result.stderr);
  t.is(result.stderr.split('\n').filter((l) => l.includes(`the log file ${FULL} cannot be written`)).length, 1, result.stderr);
});

needing(noFull, 'the end of a run does not wait on a log file that cannot be written', async (t) => {
  const said: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((text: string) => said.push(String(text)) > 0) as typeof process.stderr.write;
  try {
    const logger = createLogger({ level: 'info', json: true, file: FULL });
    logger.remove(logger.transports[0]!); // stderr stays quiet
    // Lines over a while, as a run logs them, the file open by then: each write fails ENOSPC.
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (let i = 0; i < 50; i++) {
      logger.warn(`rejected item m_${i}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const started = Date.now();
    await flushLogger(logger);
    t.true(Date.now() - started < 5000, `the end waited ${Date.now() - started} ms`);
  } finally {
    process.stderr.write = write;
  }
  t.is(said.filter((s) => s.includes(`the log file ${FULL} cannot be written`)).length, 1, said.join(''));
});

test('a command line refused for a mistyped flag or a bad value records the archive\'s size and sha256 with the failure', async (t) => {
  t.timeout(120_000);
  const { dir, archive, args } = await setUp(t);
  const identity = { archive, sha256: await sha256Of(archive), size: (await readFile(archive)).length };
  for (const [name, extra] of [['bad-value', ['--max-item-size=10XB']], ['mistyped', ['--settel', '60']]] as const) {
    const statusLog = join(dir, `${name}.jsonl`);
    const result = await cli([...args, '--status-log', statusLog, ...extra]);
    t.is(result.code, 2, result.stderr);
    t.like((await lines(statusLog))[0], { record: 'failure', code: ErrorCode.USAGE, ...identity });
  }
});

test('run --help shows the Maildir sink\'s own defaults, from its option table, in --sink as in the sink options', async (t) => {
  const help = (await cli(['run', '--help'])).stdout.replace(/\s+/g, ' ');
  t.true(help.includes(`concurrency=${maildirOptions.concurrency.default} deliveries held`), /concurrency=\d+ deliveries held/.exec(help)?.[0]);
  t.true(help.includes(`maildir:DIR[?folder=${maildirOptions.folder.default}&concurrency=${maildirOptions.concurrency.default}&links=${maildirOptions.links.default}]`), /--sink .{0,100}/.exec(help)?.[0]);
});
