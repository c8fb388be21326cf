// Option values a hostile hunt typed, each reproduced through the command line: a value that
// means two things, one with no bound, an empty one, a repeated flag, a path taken where it
// should not be. Each must be refused naming what was typed (exit 2), or taken as documented.
import test from 'ava';
import { existsSync } from 'node:fs';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OPTIONS, resolveConfig } from '../src/options/index.js';
import type { OptionSpec } from '../src/options/spec.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const RUN_SINK = 'imap://archiver@mail.acme.example/';

test('--max-rejected: a bare whole number (a count? a percentage? a fraction?) is refused, naming what to write; 10%, 0.1, 0 and 100% are taken (was: 1 was taken as 100%)', async (t) => {
  const dir = await tempDir(t);
  const mail = join(dir, 'mail');
  for (const value of ['1', '5', '1.0']) {
    const result = await cli(['run', '--sample', '--sink', `maildir:${mail}`, '--all-domains', '--max-rejected', value, '--dry-run'], { cwd: dir });
    t.is(result.code, 2, `${value}: ${result.stderr}`);
    t.regex(result.stderr, new RegExp(`E_USAGE: --max-rejected: "${value.replace('.', '\\.')}" is ambiguous .*write a percentage such as ${value === '5' ? '5' : '1'}% or 100%, or a fraction below 1 such as 0\\.1`), value);
  }
  // In the config file too (a JSON number).
  const config = join(dir, 'config.json');
  await writeFile(config, JSON.stringify({ maxRejected: 1 }));
  const fromFile = await cli(['run', '--sample', '--sink', `maildir:${mail}`, '--all-domains', '--config', config, '--dry-run'], { cwd: dir });
  t.is(fromFile.code, 2, fromFile.stderr);
  t.regex(fromFile.stderr, /E_CONFIG: .*config\.json: maxRejected: 1 is ambiguous/);
  t.false(existsSync(mail));
  for (const [value, share] of [['10%', 0.1], ['0.1', 0.1], ['0.05', 0.05], ['0', 0], ['0%', 0], ['100%', 1], ['0.5%', 0.005]] as const) {
    t.is((await resolveConfig('run', { archive: 'x.zip', sink: RUN_SINK, 'max-rejected': value }, {})).maxRejected, share, value);
  }
  // The help says so.
  t.regex((await cli(['run', '--help'])).stdout.replace(/\s+/g, ' '), /--max-rejected share of the items .*\(a percentage such as 10%, or a fraction below 1 such as 0\.1\)/);
});

test('--settle has a bound: 0 to 86400 seconds (a day), by flag and in the config file (was: any number, 99999999999999999999 left every archive waiting for ever, unsaid)', async (t) => {
  const dir = await tempDir(t);
  for (const value of ['86401', '99999999999999999999']) {
    const result = await cli(['run', '--inbox', dir, '--state-dir', join(dir, 'state'), '--sink', `maildir:${join(dir, 'mail')}`, '--all-domains', '--settle', value, '--dry-run'], { cwd: dir });
    t.is(result.code, 2, `${value}: ${result.stderr}`);
    t.regex(result.stderr, new RegExp(`E_USAGE: --settle: "${value}" is not 0 to 86400 seconds`));
  }
  await t.throwsAsync(resolveConfig('run', { archive: 'x.zip', sink: RUN_SINK }, { PIVOT_ARCHIVE_CONFIG: await configFile(dir, { settleSeconds: 1e30 }) }), { message: /config\.json: settleSeconds: 1e\+30 is not 0 to 86400 seconds/ });
  t.is((await resolveConfig('run', { archive: 'x.zip', sink: RUN_SINK, settle: '86400' }, {})).settleSeconds, 86400);
  t.is((await resolveConfig('run', { archive: 'x.zip', sink: RUN_SINK, settle: '0' }, {})).settleSeconds, 0);
  t.regex((await cli(['run', '--help'])).stdout.replace(/\s+/g, ' '), /--settle with --inbox: seconds an archive must be unmodified before it is read \(0 to 86400\)/);
  // Every option in seconds has its bounds.
  t.deepEqual(OPTIONS.filter((o: OptionSpec) => o.type === 'seconds' && o.range === undefined).map((o) => o.flag), []);
});

test('sizes and counts too large to mean anything are refused as such, never taken as Infinity or 1e+26 (was: --max-item-size 999...9 was Infinity, --keep-runs 1e+23 taken)', async (t) => {
  const dir = await tempDir(t);
  const huge = '9'.repeat(400);
  for (const [flag, value, text] of [
    ['max-item-size', `${huge}G`, /--max-item-size: "9{400}G" is too large \(at most 9007199254740991 bytes\)/],
    ['max-item-size', '99999999999999999999999999', /--max-item-size: "99999999999999999999999999" is too large/],
    ['max-event-size', '1e309', /--max-event-size: "1e309" is not a size such as 10MiB/],
    ['keep-runs', '99999999999999999999', /--keep-runs: "99999999999999999999" is too large \(at most 9007199254740991\)/],
    ['max-zip-ratio', huge, /--max-zip-ratio: "9{400}" is too large/],
  ] as const) {
    const result = await cli(['run', '--sample', '--sink', `maildir:${join(dir, 'mail')}`, '--all-domains', `--${flag}`, value, '--dry-run'], { cwd: dir });
    t.is(result.code, 2, `${flag} ${value}: ${result.stderr}`);
    t.regex(result.stderr, text, flag);
  }
  // A JSON number in the config file: 1e300 is a whole number to JavaScript.
  await t.throwsAsync(resolveConfig('run', { archive: 'x.zip', sink: RUN_SINK }, { PIVOT_ARCHIVE_CONFIG: await configFile(dir, { keepRuns: 1e300 }) }), { message: /config\.json: keepRuns: 1e\+300 is too large/ });
  t.is((await resolveConfig('run', { archive: 'x.zip', sink: RUN_SINK, 'max-item-size': '8PB' }, {}).catch((err: Error) => err.message)), '--max-item-size: "8PB" is not a size such as 10MiB (K, M, G and KiB, MiB, GiB are powers of 1024; KB, MB, GB are powers of 1000; B or a bare number is bytes; any case)');
  t.is((await resolveConfig('run', { archive: 'x.zip', sink: RUN_SINK, 'max-item-size': '1000000G', 'keep-runs': '9007199254740991' }, {})).maxItemSize, 1e6 * 1024 ** 3);
});

/** A config file in `dir` holding `content`. */
async function configFile(dir: string, content: object): Promise<string> {
  const path = join(dir, 'config.json');
  await writeFile(path, JSON.stringify(content));
  return path;
}

test('maildir://./m (a URL whose host is "."): refused naming what to write, nothing written anywhere; maildir:./m is under the working directory (was: written to /m)', async (t) => {
  const dir = await tempDir(t);
  const name = `pivot-hostile-${process.pid}-${Date.now()}`;
  t.teardown(() => rm(join('/', name), { recursive: true, force: true }));
  for (const sink of [`maildir://./${name}`, `maildir://${name}/mail`, `maildir://../${name}`]) {
    const result = await cli(['run', '--sample', '--sink', sink, '--all-domains', '--rejects', join(dir, 'rejects')], { cwd: dir });
    t.is(result.code, 2, `${sink}: ${result.stderr}`);
    const host = /^maildir:\/\/([^/]*)/.exec(sink)![1]!;
    t.true(result.log.includes(`E_SINK_CONFIG: maildir sink "${sink}": "//${host}" reads as a URL's host, not as a folder: write maildir:${host}/... for a folder under the working directory, or maildir:/ABSOLUTE/PATH`), result.stderr);
    t.false(existsSync(join('/', name)), `${sink}: written at the root`);
  }
  // cron --print checks it as the run would.
  t.is((await cli(['cron', '--print', '--', 'run', '--inbox', dir, '--state-dir', dir, '--sink', `maildir://./${name}`, '--all-domains'], { cwd: dir })).code, 2);
  // The forms that name a folder: relative to the working directory, or absolute (maildir:///srv/mail as a file URL).
  const relative = await cli(['run', '--sample', '--sink', `maildir:./${name}`, '--all-domains', '--rejects', join(dir, 'rejects'), '--max-rejected', '100%'], { cwd: dir });
  t.is(relative.code, 0, relative.stderr);
  t.true(existsSync(join(dir, name)));
  const absolute = await cli(['run', '--sample', '--sink', `maildir://${join(dir, 'abs')}`, '--all-domains', '--rejects', join(dir, 'rejects'), '--max-rejected', '100%'], { cwd: dir });
  t.is(absolute.code, 0, absolute.stderr);
  t.true(existsSync(join(dir, 'abs')));
});

test('sample: --files NaN, --events abc, --seed 1.5, --files 0 and an empty --out are usage errors (exit 2) naming the flag and what was typed, and leave no file (was: --files NaN exit 13 with a truncated zip, --out "" exit 70)', async (t) => {
  const dir = await tempDir(t);
  const out = join(dir, 's.zip');
  for (const [args, text] of [
    [['--files', 'NaN'], /E_USAGE: --files: "NaN" is not a whole number/],
    [['--files', '0'], /E_USAGE: --files: "0" is not 1 to 10000/],
    [['--events', 'abc'], /E_USAGE: --events: "abc" is not a whole number/],
    [['--events', '1e300'], /E_USAGE: --events: "1e300" is not a whole number/],
    [['--seed', '1.5'], /E_USAGE: --seed: "1.5" is not a whole number/],
  ] as const) {
    const result = await cli(['sample', '--out', out, ...(args[0] === '--events' ? [] : ['--events', '5']), ...args], { cwd: dir });
    t.is(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    t.regex(result.stderr, text, args.join(' '));
    t.false(existsSync(out), `${args.join(' ')}: a file was left`);
  }
  const empty = await cli(['sample', '--out', '', '--events', '5'], { cwd: dir });
  t.is(empty.code, 2, empty.stderr);
  t.regex(empty.stderr, /E_USAGE: --out: is empty/);
  // A place that cannot be written: a usage error naming it, nothing left behind.
  for (const where of [dir, join(dir, 'no', 'such', 'dir', 's.zip')]) {
    const result = await cli(['sample', '--out', where, '--events', '5'], { cwd: dir });
    t.is(result.code, 2, result.stderr);
    t.true(result.stderr.includes(`E_USAGE: cannot write --out ${where}: `), result.stderr);
  }
  t.deepEqual(await readdir(dir), []);
  const made = await cli(['sample', '--out', out, '--events', '5', '--files', '2', '--seed', '7'], { cwd: dir });
  t.is(made.code, 0, made.stderr);
  t.deepEqual(await readdir(dir), ['s.zip'], 'no temporary file left beside it');
});

test('status --last: a value that is not a whole number of 1 or more is a usage error naming it (was: --last NaN said "no runs", exit 0)', async (t) => {
  const dir = await tempDir(t);
  for (const value of ['NaN', 'abc', '-1', '0', '2.5']) {
    const result = await cli(['status', '--state-dir', dir, '--last', value]);
    t.is(result.code, 2, `${value}: ${result.stderr}`);
    t.regex(result.stderr, new RegExp(`E_USAGE: --last: "${value.replace('.', '\\.')}" is not`), value);
    t.is(result.stdout, '');
  }
  t.is((await cli(['status', '--state-dir', dir, '--last', '3'])).code, 0);
  // verify --sample alike.
  const sample = await cli(['verify', '--state-dir', dir, '--sample', 'NaN']);
  t.is(sample.code, 2, sample.stderr);
  t.regex(sample.stderr, /E_USAGE: --sample: "NaN" is not a whole number/);
});

test('a flag of run or import given twice is named as given twice, its values not quoted (was: "--sink: must be a string")', async (t) => {
  const dir = await tempDir(t);
  for (const [command, args, flag] of [
    ['run', ['--sample', '--all-domains', '--sink', 'imap://archiver@a.example/', '--sink', `maildir:${join(dir, 'b')}`], 'sink'],
    ['run', ['--sample', '--all-domains', '--sink', `maildir:${join(dir, 'b')}`, '--max-item-size', '1M', '--max-item-size', '2M'], 'max-item-size'],
    ['run', ['--sample', '--all-domains', '--sink', `maildir:${join(dir, 'b')}`, '--settle', '1', '--settle', '2', '--settle', '3'], 'settle'],
    ['import', ['--from', 'azblob://c', '--from', 'azblob://d', '--sink', `maildir:${join(dir, 'b')}`], 'from'],
  ] as const) {
    const result = await cli([command, ...args], { cwd: dir });
    t.is(result.code, 2, `${flag}: ${result.stderr}`);
    const times = args.filter((a) => a === `--${flag}`).length;
    t.regex(result.stderr, new RegExp(`E_USAGE: --${flag} is given ${times} times; give it once`), flag);
    t.notRegex(result.stderr, /archiver@|maildir:|azblob:\/\/d/, 'the values are not quoted');
  }
  t.false(existsSync(join(dir, 'b')));
});

test('an empty entry of a repeatable flag (--plugin "", --domain "") is refused by name, by flag and in the config file (was: --plugin "" tried to load the install folder node_modules/)', async (t) => {
  const dir = await tempDir(t);
  const mail = join(dir, 'mail');
  for (const [flag, extra] of [['plugin', ['--all-domains']], ['domain', []]] as const) {
    const result = await cli(['run', '--sample', '--sink', `maildir:${mail}`, ...extra, `--${flag}`, ''], { cwd: dir });
    t.is(result.code, 2, result.stderr);
    t.regex(result.stderr, new RegExp(`E_USAGE: --${flag}: an entry is empty`));
    t.notRegex(result.stderr, /node_modules/);
  }
  const fromFile = await cli(['run', '--sample', '--sink', `maildir:${mail}`, '--all-domains', '--config', await configFile(dir, { plugins: ['./a.js', ''] })], { cwd: dir });
  t.is(fromFile.code, 2, fromFile.stderr);
  t.regex(fromFile.stderr, /E_CONFIG: .*config\.json: plugins: an entry is empty/);
  t.false(existsSync(mail));
});

test('a config file that starts with a UTF-8 byte order mark (Notepad writes one) is read as the JSON after it, for the run and for recording its refusal (was: "is not valid JSON", no position)', async (t) => {
  const dir = await tempDir(t);
  const config = join(dir, 'config.json');
  const status = join(dir, 'status.jsonl');
  await writeFile(config, `\uFEFF${JSON.stringify({ maxItemSize: '1M', statusLog: status, allDomains: true })}`);
  t.is((await resolveConfig('run', { archive: 'x.zip', sink: RUN_SINK, config }, {})).maxItemSize, 1024 ** 2);
  // A flag refused: the failure is recorded in the status log the file names.
  const refused = await cli(['run', '--sample', '--sink', `maildir:${join(dir, 'mail')}`, '--config', config, '--max-rejected', '5'], { cwd: dir });
  t.is(refused.code, 2, refused.stderr);
  t.regex(refused.stderr, /--max-rejected: "5" is ambiguous/);
  t.regex(await readFile(status, 'utf8'), /"record":"failure".*--max-rejected/);
});
