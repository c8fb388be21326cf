import test from 'ava';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { StateDir } from '../src/state/index.js';
import { formatStatus } from '../src/state/report.js';
import type { FailureRecord, RunSummary } from '../src/status-log.js';
import { TOOL } from '../src/version.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

test('a typo\'d command is named, with the nearest command, exit 2; its flags are not listed as unknown', async (t) => {
  const typo = await cli(['rnu', 'x.zip', '--sink', 'maildir:/tmp/x', '--all-domains']);
  t.is(typo.code, 2);
  t.true(typo.stderr.includes('E_USAGE: unknown command "rnu"; did you mean "run"?'), typo.stderr);
  t.notRegex(typo.stderr, /Unknown argument/);
  const far = await cli(['archive', 'x.zip']);
  t.is(far.code, 2);
  t.regex(far.stderr, /unknown command "archive"; the commands are run, import, sample, status, keygen, verify, report, cron/);
  t.regex((await cli(['stauts', '--state-dir', 'x'])).stderr, /did you mean "status"\?/);
});

test('a typo\'d flag is named once, with the nearest flag of its command', async (t) => {
  const sink = await cli(['run', 'x.zip', '--sinkk', 'maildir:/tmp/x']);
  t.is(sink.code, 2);
  t.regex(sink.stderr, /E_USAGE: Unknown argument: sinkk; did you mean --sink\?/);
  // yargs also lists the camelCase twin of a dashed name: it is left out.
  const size = await cli(['run', 'x.zip', '--sink', 'maildir:/tmp/x', '--max-itme-size', '1M']);
  t.regex(size.stderr, /Unknown argument: max-itme-size; did you mean --max-item-size\?/);
  // import's flags, not run's.
  t.regex((await cli(['import', '--from', 'azblob://c', '--sink', 'maildir:m', '--agian'])).stderr, /Unknown argument: agian; did you mean --again\?/);
  t.regex((await cli(['status', '--state-dir', 'x', '--jsn'])).stderr, /Unknown argument: jsn; did you mean --json\?/);
});

test('a flag spelt in another case or with a dash too many is refused, never taken and ignored (was: exit 0, a --DRY-RUN delivered and a --STATE-DIR made none)', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 's.zip');
  await generateSample(archive, { events: 20, seed: 3, edgeCases: false });
  const mail = join(dir, 'mail');
  for (const [flag, meant] of [
    [['--STATE-DIR', join(dir, 'st')], 'state-dir'],
    [['--state-Dir', join(dir, 'st')], 'state-dir'],
    [['--DRY-RUN'], 'dry-run'],
    [['--dry--run'], 'dry-run'],
    [['---dry-run'], 'dry-run'],
    [['--dry-run-'], 'dry-run'],
    [['--MAX-REJECTED', '1%'], 'max-rejected'],
  ] as const) {
    const result = await cli(['run', archive, '--sink', `maildir:${mail}`, '--all-domains', ...flag]);
    t.is(result.code, 2, flag.join(' '));
    t.regex(result.stderr, new RegExp(`E_USAGE: Unknown argument: ${flag[0].slice(2)}; did you mean --${meant}\\?`), flag.join(' '));
  }
  t.false(existsSync(mail), 'nothing delivered');
  t.regex((await cli(['status', '--STATE-DIR', dir])).stderr, /Unknown argument: STATE-DIR; did you mean --state-dir\?/);
  // The declared name, its camelCase and its no- form are still taken.
  const camelCase = await cli(['run', archive, '--sink', `maildir:${mail}`, '--all-domains', '--dryRun', '--json']);
  t.is(camelCase.code, 0, camelCase.stderr);
  t.false(existsSync(mail), '--dryRun is a dry run');
  t.is((await cli(['run', archive, '--sink', `maildir:${mail}`, '--all-domains', '--no-dry-run'])).code, 0);
  t.true(existsSync(mail));
});

test('a usage error never quotes a password, even in a word yargs does not know, a stray word, or a sink URL typed as the archive', async (t) => {
  const dir = await tempDir(t);
  const result = await cli(['run', 'a.zip', 'imap://admin:hunter2@mail.example/', '--sink', 'maildir:m']);
  t.is(result.code, 2);
  t.regex(result.stderr, /E_USAGE: an extra word \(not repeated here/);
  t.false(result.stderr.includes('hunter2'));
  // A bare password as a stray word, and a sink URL where the archive goes: no record holds either (helper-115: both reached the ledger).
  for (const [n, words] of [['a.zip', 'Hunter2Secret'], ['imap://admin:Hunter2Secret@127.0.0.1/']].entries()) {
    const state = join(dir, `state${n}`);
    const status = join(dir, `status${n}.jsonl`);
    const refused = await cli(['run', ...words, '--sink', `maildir:${join(dir, 'm')}`, '--all-domains', '--state-dir', state, '--status-log', status, '--json']);
    t.is(refused.code, 2, refused.stderr);
    t.regex(refused.stderr, n === 0 ? /E_USAGE: an extra word \(not repeated here/ : /E_USAGE: the archive is a file path \(or - for stdin\), not a URL \(imap:\/\/\.\.\., not repeated here\)/);
    const written = [refused.stdout, refused.stderr, await readFile(status, 'utf8')];
    for (const file of await readdir(state, { recursive: true, withFileTypes: true })) if (file.isFile()) written.push(await readFile(join(file.parentPath, file.name), 'utf8'));
    t.true(written.length > 3, 'the state dir holds the failure');
    for (const w of written) t.false(w.includes('Hunter2Secret'));
  }
});

test('--version prints the package version, exit 0', async (t) => {
  const result = await cli(['--version']);
  t.is(result.code, 0);
  t.is(result.stdout.trim(), TOOL.version);
  t.regex(result.stdout, /^\d+\.\d+\.\d+/);
});

test('--help shows defaults as written, the size units and the config variable', async (t) => {
  const run = await cli(['run', '--help']);
  t.is(run.code, 0);
  t.regex(run.stdout, /--max-item-size[^\n]*(\n[^-\n][^\n]*)*\[default: 10MiB\]/);
  t.regex(run.stdout, /--max-rejected[^\n]*(\n[^-\n][^\n]*)*\[default: 10%\]/);
  t.regex(run.stdout.replace(/\s+/g, ' '), /Sizes \(e\.g\. 10MiB, 10M, 10MB\): K, M, G and KiB, MiB, GiB are powers of 1024; KB, MB, GB are powers of 1000/);
  const imp = await cli(['import', '--help']);
  t.regex(imp.stdout.replace(/\s+/g, ' '), /--config JSON config file.*\[env: PIVOT_ARCHIVE_CONFIG\]/);
  t.regex(imp.stdout, /--log-file/);
});

test('a bad size on the command line is refused naming the flag as typed, for run and import', async (t) => {
  const dir = await tempDir(t);
  const bad = await cli(['run', '--sample', '--sink', `maildir:${join(dir, 'm')}`, '--all-domains', '--max-item-size', '10XB']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /E_USAGE: --max-item-size: "10XB" is not a size such as 10MiB/);
  const imp = await cli(['import', '--from', 'azblob://c', '--sink', 'maildir:m', '--max-item-size', '10 parsecs']);
  t.is(imp.code, 2);
  t.regex(imp.stderr, /--max-item-size: "10 parsecs" is not a size/);
});

test('a flag or config value refused before the run starts is still recorded: a failure record in the status log and the state dir it names (exit 2)', async (t) => {
  const dir = await tempDir(t);
  const status = join(dir, 's.jsonl');
  const state = join(dir, 'state');
  const byFlag = await cli(['run', 'x.zip', '--sink', `maildir:${join(dir, 'm')}`, '--state-dir', state, '--status-log', status, '--max-item-size', '10XB']);
  t.is(byFlag.code, 2);
  const records = (text: string) => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  t.like(records(await readFile(status, 'utf8'))[0], { record: 'failure', code: 'E_USAGE', exitCode: 2, archive: 'x.zip' });
  const [runLog] = await readdir(join(state, 'runs'));
  t.like(records(await readFile(join(state, 'runs', runLog!), 'utf8'))[0], { record: 'failure', code: 'E_USAGE' });
  t.true((await readFile(join(state, 'ledger.jsonl'), 'utf8')).includes('"record":"failure"'), 'in the ledger too');
  // From the config file: the state dir it names gets the record.
  const config = join(dir, 'c.json');
  const fromFile = join(dir, 'state2');
  await writeFile(config, JSON.stringify({ maxItemSize: '10XB', stateDir: fromFile }));
  const byFile = await cli(['import', '--from', 'azblob://c', '--sink', `maildir:${join(dir, 'm')}`, '--config', config]);
  t.is(byFile.code, 2);
  const [fileLog] = await readdir(join(fromFile, 'runs'));
  t.like(records(await readFile(join(fromFile, 'runs', fileLog!), 'utf8'))[0], { record: 'failure', code: 'E_CONFIG' });
});

test('cron --print checks the command it schedules as run and import read it; a missing archive is fine', async (t) => {
  const dir = await tempDir(t);
  const ok = await cli(['cron', '--print', '--', 'run', join(dir, 'not-there-yet.zip'), '--sink', 'maildir:/srv/mail', '--all-domains', '--max-item-size', '10M']);
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /not-there-yet\.zip --sink maildir:\/srv\/mail --all-domains --max-item-size 10M$/m);
  const direct = await cli(['run', 'x.zip', '--sink', 'maildir:/srv/mail', '--max-item-size', '10XB']);
  const scheduled = await cli(['cron', '--print', '--', 'run', 'x.zip', '--sink', 'maildir:/srv/mail', '--max-item-size', '10XB']);
  t.is(scheduled.code, 2);
  t.is(scheduled.stdout, '', 'no crontab line for a command that would fail');
  t.is(scheduled.stderr, direct.stderr, 'the same error as the command itself');
  for (const [words, error] of [
    [['run', 'x.zip', '--sinkk', 'maildir:x'], /Unknown argument: sinkk; did you mean --sink\?/],
    [['rnu', 'x.zip'], /unknown command "rnu"; did you mean "run"\?/],
    [['import', '--from', 'azblob://c', '--sink', 'maildir:m', '--keep-runs', 'many'], /--keep-runs: "many" is not a whole number/],
    [['import', '--config', join(dir, 'missing.json')], /E_CONFIG: cannot read config file .*missing\.json/],
    [['run', '--inbox', 'in', '--state-dir', 'st', '--log-level', 'loud'], /--log-level: "loud" is not one of error, warn/],
    // The sink spec as the run parses it: a password in the URL, an unknown sink option (the secret itself is not needed now).
    [['run', '--inbox', 'in', '--state-dir', 'st', '--sink', 'imap://admin:SeKr1tXYZZY@mail.acme.example/'], /E_SINK_CONFIG: IMAP sink: the URL must not carry a password/],
    [['run', '--inbox', 'in', '--state-dir', 'st', '--domain', 'acme.example', '--sink', 'maildir:/srv/mail?bogus=1'], /E_SINK_CONFIG: maildir sink "maildir:\/srv\/mail": unknown option "bogus"/],
    [['import', '--from', 'azblob://c', '--sink', 'imap://a@mail.acme.example/?pool=0'], /pool must be/],
  ] as const) {
    const result = await cli(['cron', '--print', '--', ...words]);
    t.is(result.code, 2, words.join(' '));
    t.regex(result.stderr, error);
    t.is(result.stdout, '', 'no crontab line');
    t.false(result.stderr.includes('SeKr1tXYZZY'));
  }
  // Secrets come from the run's environment, not the one the line is made in.
  const imap = await cli(['cron', '--print', '--', 'run', '--inbox', 'in', '--state-dir', 'st', '--sink', 'imap://archiver@mail.acme.example/?folder=Pivot'], { env: { PIVOT_IMAP_PASSWORD: '' } });
  t.is(imap.code, 0, imap.stderr);
  // A config file named on the scheduled line is checked too.
  const config = join(dir, 'c.json');
  await writeFile(config, JSON.stringify({ sink: 'maildir:m', maxItemSize: '1 parsec' }));
  const badFile = await cli(['cron', '--print', '--', 'run', '--inbox', 'in', '--config', config]);
  t.is(badFile.code, 2);
  t.true(badFile.stderr.includes(`E_CONFIG: ${config}: maxItemSize: "1 parsec" is not a size`), badFile.stderr);
  // What a run needs and what goes with what, as the run checks them, when the line (with its config file, if it names one) is all there is.
  await writeFile(config, JSON.stringify({ sink: 'maildir:m' }));
  for (const [words, error] of [
    [['run', 'x.zip', '--sink', 'maildir:/srv/mail'], /a maildir sink creates a mailbox for every participant it delivers to: give --domain/],
    [['run', 'x.zip', '--config', config], /a maildir sink creates a mailbox for every participant it delivers to: give --domain/],
    [['run', '--inbox', 'in', '--sink', 'maildir:/srv/mail', '--domain', 'acme.example'], /--inbox needs --state-dir/],
    [['run', '--sink', 'maildir:/srv/mail', '--domain', 'acme.example'], /no archive: give a path/],
    [['import', '--from', 'azblob://c'], /no sink: give --sink/],
  ] as const) {
    const direct = await cli(words as unknown as string[]);
    const result = await cli(['cron', '--print', '--', ...words]);
    t.is(result.code, 2, words.join(' '));
    t.regex(result.stderr, error);
    t.is(result.stderr, direct.stderr, 'the same error as the command itself');
    t.is(result.stdout, '', 'no crontab line');
  }
  // This shell's PIVOT_ARCHIVE_CONFIG is not cron's: the line is checked as cron runs it, without it.
  const leaning = await cli(['cron', '--print', '--', 'run', 'x.zip', '--sink', 'maildir:/srv/mail'], { env: { PIVOT_ARCHIVE_CONFIG: config } });
  t.is(leaning.code, 2, leaning.stderr);
  t.regex(leaning.stderr, /give --domain/);
  const named = await cli(['cron', '--print', '--', 'run', 'x.zip', '--sink', 'maildir:/srv/mail', '--domain', 'acme.example'], { env: { PIVOT_ARCHIVE_CONFIG: config } });
  t.is(named.code, 0, named.stderr);
});

test('a config file that is not JSON (a trailing comma, empty, cut short) is E_CONFIG naming it, exit 2, for run and import, by flag and by variable', async (t) => {
  const dir = await tempDir(t);
  const config = join(dir, 'bad.json');
  for (const text of ['{"sink":"maildir:m","domains":["acme.example"],}', '', '{"sink":"maildir:m"']) {
    await writeFile(config, text);
    for (const [args, env] of [[['run', 'x.zip', '--config', config], {}], [['import', '--config', config], {}], [['run', 'x.zip'], { PIVOT_ARCHIVE_CONFIG: config }]] as const) {
      const result = await cli([...args], { env });
      t.is(result.code, 2, `${JSON.stringify(text)} ${args.join(' ')}: ${result.log}`);
      t.true(result.log.includes(`E_CONFIG: config file ${config} is not valid JSON`), result.log);
      t.false(/at \w+ \(|SyntaxError/.test(result.log), 'no stack trace');
    }
  }
  // Never a word of the file: V8's message quotes the text around the error (a password, a secret given to --config by mistake).
  for (const text of ['{"sink": "imap://admin:S3cretPassw0rd@host/", "n": tru}', 'S3cretPassw0rd', '{"sink": "imap://admin:S3cretPassw0rd@host/" x}']) {
    await writeFile(config, text);
    const result = await cli(['run', 'x.zip', '--config', config]);
    t.is(result.code, 2);
    t.regex(result.log, /is not valid JSON/);
    t.false(/S3cret|tru|Passw/.test(result.log), result.log);
  }
  // A key given twice is refused (JSON.parse would keep the last one without a word).
  await writeFile(config, '{"sink": "maildir:m", "domains": ["acme.example"], "dryRun": true, "domains": ["acme.exmaple"]}');
  const twice = await cli(['run', 'x.zip', '--config', config]);
  t.is(twice.code, 2);
  t.regex(twice.log, /E_CONFIG: .*bad\.json: key "domains" is given twice/);
  // A nested key, or one in a string, is not a top-level key.
  await writeFile(config, '{"sink": "maildir:m", "domains": ["acme.example", "{\\"sink\\": 1,"], "userMap": null}');
  t.notRegex((await cli(['run', 'x.zip', '--config', config])).log, /given twice/);
});

test('import reads --config and PIVOT_ARCHIVE_CONFIG, checked like run\'s: errors name the file and the key', async (t) => {
  const dir = await tempDir(t);
  const config = join(dir, 'import.json');
  await writeFile(config, JSON.stringify({ from: 'azblob://staging', sink: 'maildir:m', colour: 'blue' }));
  const viaFlag = await cli(['import', '--config', config]);
  t.is(viaFlag.code, 2);
  t.true(viaFlag.log.includes(`E_CONFIG: ${config}: unknown key "colour"; known: from, sink, exportId, again, statusLog`), viaFlag.log);
  await writeFile(config, JSON.stringify({ from: 'azblob://staging', sink: 'maildir:m', maxItemSize: '10XB' }));
  const viaEnv = await cli(['import'], { env: { PIVOT_ARCHIVE_CONFIG: config } });
  t.is(viaEnv.code, 2);
  t.true(viaEnv.log.includes(`E_CONFIG: ${config}: maxItemSize: "10XB" is not a size`), viaEnv.log);
  // The flag wins over the file.
  const overridden = await cli(['import', '--max-item-size', '1X'], { env: { PIVOT_ARCHIVE_CONFIG: config } });
  t.regex(overridden.log, /--max-item-size: "1X"/);
  // from and sink may come from the file, but must come from somewhere.
  const none = await cli(['import', '--sink', 'maildir:m']);
  t.is(none.code, 2);
  t.regex(none.log, /no staging: give --from azblob:\/\/CONTAINER\[\/PREFIX\] \(or "from" in the config file\)/);
});

test('quiet can be set in the config file', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'x.zip');
  await generateSample(archive, { events: 50, seed: 3, edgeCases: false });
  const config = join(dir, 'c.json');
  await writeFile(config, JSON.stringify({ sink: `maildir:${join(dir, 'm')}`, allDomains: true, rejects: join(dir, 'r'), quiet: true }));
  const quiet = await cli(['run', archive, '--config', config]);
  t.is(quiet.code, 0, quiet.stderr);
  t.notRegex(quiet.log, /progress:/);
  // The flag overrides the file's quiet.
  const loud = await cli(['run', archive, '--config', config, '--no-quiet']);
  t.is(loud.code, 0, loud.stderr);
  t.regex(loud.log, /progress: items 50\/50/);
});

const summary = (over: Partial<RunSummary>): RunSummary => ({
  record: 'summary', runId: 'r1', at: '2026-11-23T02:31:00Z', source: 'pivot-zip', archive: 'a.zip', sha256: 'ab', exportId: 'acme-1', tenant: 'acme', sink: 'maildir:m', startedAt: '2026-11-23T02:30:00Z', finishedAt: '2026-11-23T02:31:00Z',
  eventsInArchive: 20, itemsFromSource: 20, itemsAddedByPlugins: 0, itemsDoneEarlier: 0, rejected: { oversize: 2 }, rejectedTotal: 2, itemsRouted: 18, itemsAvailableForImport: 18,
  delivered: 6, skipped: 0, failed: 12, rejectedNotKept: 0, notes: 0, interrupted: false, balanced: true, ...over,
});

test('status --json holds what the human view shows: counters, failure, failed items, per run, newest first', async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'runs'));
  const failedItems = Array.from({ length: 12 }, (_, i) => ({ record: 'item', outcome: 'failed', itemId: `m_${i}`, mailbox: 'jane@acme.example', detail: 'disk full' }));
  const failure: FailureRecord = { record: 'failure', runId: 'r0', at: 'y', archive: 'bad.zip', sha256: 'cd', size: 10, startedAt: 'x', finishedAt: 'y', code: 'E_ARCHIVE_CORRUPT', exitCode: 2, error: 'not a zip' };
  const lines = (records: object[]) => records.map((r) => JSON.stringify(r) + '\n').join('');
  await writeFile(join(dir, 'runs', '2026-11-21.jsonl'), lines([{ record: 'item', outcome: 'delivered', itemId: 'm_0' }]));
  await writeFile(join(dir, 'runs', '2026-11-22.jsonl'), lines([failure]));
  await writeFile(join(dir, 'runs', '2026-11-23.jsonl'), lines([...failedItems, summary({})]));
  const state = new StateDir(dir);
  const runs = (await formatStatus(state, 10, true)).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(runs.map((r) => basename(r.log as string)), ['2026-11-23.jsonl', '2026-11-22.jsonl', '2026-11-21.jsonl']);
  t.like(runs[0], { summary: { delivered: 6, failed: 12, rejected: { oversize: 2 }, rejectedTotal: 2, balanced: true }, failure: null, stopped: false, failedTotal: 12 });
  t.deepEqual(runs[0]!.failed, failedItems.slice(0, 10));
  t.like(runs[1], { summary: null, failure: { code: 'E_ARCHIVE_CORRUPT', error: 'not a zip', sha256: 'cd' }, stopped: false, failedTotal: 0 });
  t.like(runs[2], { summary: null, failure: null, stopped: true });
  // The human view of the same runs shows the same things.
  const human = await formatStatus(state, 10, false);
  t.regex(human, /failed\s+12/);
  t.is(human.match(/failed: item m_\d+ -> jane@acme\.example: disk full/g)?.length, 10);
  t.regex(human, /\.\.\. and 2 more failed/);
  t.regex(human, /FAILED before delivering \(exit 2\): E_ARCHIVE_CORRUPT: not a zip/);
  t.regex(human, /no summary: the run was killed, or could not write its records/);
  // Through the command line, --last too.
  const last = await cli(['status', '--state-dir', dir, '--json', '--last', '1']);
  t.is(last.code, 0, last.stderr);
  t.like(JSON.parse(last.stdout), { summary: { exportId: 'acme-1', delivered: 6 }, failedTotal: 12 });
});

test('status of a state dir that does not exist is E_CONFIG naming it (exit 2), not "no runs" with exit 0; an empty one has no runs', async (t) => {
  const dir = await tempDir(t);
  for (const args of [['--state-dir', join(dir, 'typo')], ['--state-dir', dir, '--state-dir', join(dir, 'typo')]]) {
    const missing = await cli(['status', ...args]);
    t.is(missing.code, 2, args.join(' '));
    t.true(missing.stderr.includes(`E_CONFIG: ${join(dir, 'typo')} is not a state dir`), missing.stderr);
  }
  const empty = await cli(['status', '--state-dir', dir]);
  t.is(empty.code, 0);
  t.regex(empty.stdout, /no runs recorded/);
});

test('a typo in a required flag of verify, report or keygen is named with the nearest flag, not as the missing one', async (t) => {
  const verify = await cli(['verify', '--statedir', '/tmp/x']);
  t.is(verify.code, 2);
  t.regex(verify.stderr, /Unknown argument: statedir; did you mean --state-dir\?/);
  const keygen = await cli(['keygen', '--ou', '/tmp/x']);
  t.regex(keygen.stderr, /Unknown argument: ou; did you mean --out\?/);
  const report = await cli(['report', '--state-dir', '/tmp/x', '--exprot', 'a', '--out', 'r.html']);
  t.regex(report.stderr, /Unknown argument: exprot; did you mean --export\?/);
});

test('a flag given twice to a command that takes it once is a usage error naming it (exit 2), not a crash', async (t) => {
  const dir = await tempDir(t);
  for (const [flag, args] of [
    ['out', ['report', '--state-dir', dir, '--export', 'x', '--out', 'a.html', '--out', 'b.html']],
    ['state-dir', ['report', '--state-dir', dir, '--state-dir', dir, '--export', 'x', '--out', 'a.html']],
    ['sink', ['verify', '--state-dir', dir, '--sink', 'maildir:a', '--sink', 'maildir:b']],
    ['out', ['sample', '--out', join(dir, 'a.zip'), '--out', join(dir, 'b.zip'), '--events', '3']],
    ['out', ['keygen', '--out', join(dir, 'k'), '--out', join(dir, 'l')]],
  ] as const) {
    const result = await cli([...args]);
    t.is(result.code, 2, args.join(' '));
    t.regex(result.stderr, new RegExp(`E_USAGE: --${flag} is given 2 times; give it once`), args.join(' '));
  }
  t.deepEqual(await readdir(dir), [], 'nothing written');
});

test('with --json, a run or import that fails before its summary still answers one JSON object on stdout', async (t) => {
  const dir = await tempDir(t);
  const missing = await cli(['run', join(dir, 'none.zip'), '--all-domains', '--sink', `maildir:${join(dir, 'm')}`, '--json']);
  t.is(missing.code, 2);
  t.like(JSON.parse(missing.stdout), { record: 'failure', code: 'E_ARCHIVE_UNREADABLE', exitCode: 2 });
  const typo = await cli(['import', '--from', 'azblob://c', '--sink', `maildir:${join(dir, 'm')}`, '--json', '--sinkk', 'x']);
  t.is(typo.code, 2);
  t.like(JSON.parse(typo.stdout), { record: 'failure', code: 'E_USAGE', exitCode: 2 });
});

test('cron --print checks import\'s --from as import reads it: a SAS written into it is refused unquoted, a malformed one named', async (t) => {
  const sas = await cli(['cron', '--print', '--', 'import', '--from', 'azblob://staging/acme?sv=2020-08-04&sig=SECRETSIG', '--sink', 'maildir:/srv/mail']);
  t.is(sas.code, 2);
  t.is(sas.stdout, '');
  t.false(`${sas.stdout}${sas.stderr}`.includes('SECRETSIG'));
  t.regex(sas.stderr, /--from .*takes no options/);
  const garbage = await cli(['cron', '--print', '--', 'import', '--from', 'garbage', '--sink', 'maildir:/srv/mail']);
  t.is(garbage.code, 2);
  t.regex(garbage.stderr, /is not of the form azblob:/);
  const good = await cli(['cron', '--print', '--', 'import', '--from', 'azblob://staging/acme', '--sink', 'maildir:/srv/mail']);
  t.is(good.code, 0, good.stderr);
  t.regex(good.stdout, /import --from azblob:\/\/staging\/acme/);
});

test('a status log, state dir, rejects folder or Maildir root under a directory where mkdir answers ENOENT though its parent is there (/proc) fails at once, exit 2 or 1, never hangs (was: Node\'s recursive mkdir spun for ever, deaf to SIGTERM)', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 's.zip');
  await generateSample(archive, { events: 20, seed: 4, edgeCases: false });
  const base = ['run', archive, '--all-domains', '--quiet'];
  for (const [args, code, error] of [
    [['--sink', `maildir:${join(dir, 'm1')}`, '--status-log', '/proc/nope/s.jsonl'], 2, /E_STATUS_LOG: cannot open status log \/proc\/nope\/s\.jsonl: ENOENT/],
    [['--sink', `maildir:${join(dir, 'm2')}`, '--state-dir', '/proc/nope/state'], 2, /E_CONFIG: state dir \/proc\/nope\/state cannot be used: ENOENT/],
    [['--sink', 'maildir:/proc/nope/mail'], 2, /maildir root \/proc\/nope\/mail cannot be made: ENOENT/],
    [['--sink', `maildir:${join(dir, 'm3')}`, '--max-item-size', '600', '--rejects', '/proc/nope/rejects'], 1, /could not be kept in the rejects folder \/proc\/nope\/rejects: ENOENT/],
  ] as const) {
    const result = await cli([...base, ...args]);
    t.is(result.code, code, `${args.join(' ')}: ${result.stderr.slice(0, 500)}`);
    t.regex(result.stderr, error);
  }
});
