import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, PivotArchiveError } from '../src/errors.js';
import { checkInteger, choice, integer, parseSinkOptions, text } from '../src/sinks/options.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const TABLE = {
  folder: text({ default: 'Pivot', form: 'NAME', help: 'where' }),
  mode: choice({ choices: ['json', 'importMime'], default: 'json', help: 'how' }),
  credential: choice({ choices: ['app', 'managedIdentity'], default: 'app', help: 'who' }),
  retries: integer({ default: 3, min: 0, max: 50, help: 'how often' }),
};

const bad = (why: string) => new PivotArchiveError(ErrorCode.SINK_CONFIG, `test sink: ${why}`);
const parse = (query: string) => parseSinkOptions(TABLE, query, bad);

/** The forms a pasted secret can take in text: as typed, percent-encoded, JSON-escaped. */
function forms(secret: string): string[] {
  return [...new Set([secret, encodeURIComponent(secret), JSON.stringify(secret).slice(1, -1)])];
}

function refusal(t: import('ava').ExecutionContext, query: string): string {
  const err = t.throws(() => parse(query), { code: 'E_SINK_CONFIG' }, query);
  return err?.message ?? '';
}

test('sink options: a pair without "=" is refused without repeating it, and says to write name=value', (t) => {
  for (const secret of ['S3cretPw', 'Xy8Q~abc.DEF_ghi-123', 'p@ss w0rd', 'folder2']) {
    const message = refusal(t, `folder=x&${encodeURIComponent(secret)}`);
    t.regex(message, /option 2 of the query has no "=": write name=value/);
    for (const form of forms(secret)) t.false(message.includes(form), `${form} shows in ${message}`);
  }
  // A known option without its value is named: its name is no secret.
  t.regex(refusal(t, 'retries'), /option "retries" has no value: write retries=VALUE/);
  // A near miss of a name gets its guess, still without the text itself.
  const near = refusal(t, 'retires');
  t.regex(near, /did you mean "retries"\?/);
  t.false(near.includes('retires'));
});

test('sink options: an unknown key is named as typed when it looks like an option name, with the nearest one', (t) => {
  t.regex(refusal(t, 'bogus=1'), /unknown option "bogus" \(known: folder, mode, credential, retries\)/);
  t.regex(refusal(t, 'retires=3'), /unknown option "retires"; did you mean "retries"\?/);
  t.regex(refusal(t, 'Mode=json'), /unknown option "Mode"; did you mean "mode"\?/);
  t.regex(refusal(t, 'fo%6Cder2=x'), /unknown option "fo%6Cder2"; did you mean "folder"\?/);
  t.regex(refusal(t, 'client.secret-id_2=x'), /unknown option "client.secret-id_2"/);
});

test('sink options: an unknown key that looks like no option name (a pasted secret) is not repeated', (t) => {
  for (const [query, secret] of [
    ['Xy8Q~abc.DEF_ghi-123=1', 'Xy8Q~abc.DEF_ghi-123'],
    ['p%40ss%20w0rd=1', 'p@ss w0rd'],
    ['1hunter2=1', '1hunter2'],
    [`${'a'.repeat(41)}=1`, 'a'.repeat(41)],
    // A short base64 secret: its padding reads as "=" and a value of "=".
    ['dGhpc2lzYXNlY3JldA==', 'dGhpc2lzYXNlY3JldA'],
  ] as const) {
    const message = refusal(t, `folder=x&${query}`);
    t.regex(message, /unknown option \(option 2 of the query; it is not repeated here, in case it is a secret\) \(known: /, query);
    for (const form of forms(secret)) t.false(message.includes(form), `${form} shows in ${message}`);
  }
});

test('sink options: a value that is no choice is repeated only when it is a choice in other case', (t) => {
  const secret = refusal(t, 'credential=MyS3cret');
  t.regex(secret, /credential must be app or managedIdentity \(the value given is not repeated here, in case it is a secret\) \(who\)/);
  t.false(secret.includes('MyS3cret'));
  t.regex(refusal(t, 'mode=importmime'), /mode must be json or importMime, not "importmime"; did you mean "importMime"\? \(how\)/);
  // A near miss is guessed without being repeated.
  const near = refusal(t, 'mode=importMim');
  t.regex(near, /mode must be json or importMime \(the value given is not repeated[^)]*\); did you mean "importMime"\?/);
  t.false(near.includes('importMim"'));
});

test('sink options: a bad whole number is repeated only when it is a number', (t) => {
  const secret = refusal(t, 'retries=hunter2');
  t.regex(secret, /retries must be a whole number from 0 to 50 \(the value given is not repeated here, in case it is a secret\)/);
  t.false(secret.includes('hunter2'));
  for (const number of ['51', '-1', '1.5', '0099999999']) t.regex(refusal(t, `retries=${number}`), new RegExp(`retries must be a whole number from 0 to 50, not "${number.replace('.', '\\.')}"`));
  t.is(parse('retries=007').retries, 7);
  // Outside a query (a port) the same rule holds.
  t.throws(() => checkInteger('port', '99999', { min: 1, max: 65535 }, bad), { message: /port must be a whole number from 1 to 65535, not "99999"/ });
  t.false(t.throws(() => checkInteger('port', 's3cret', { min: 1, max: 65535 }, bad))!.message.includes('s3cret'));
});

test('sink options: what is fine still parses, defaults filled in', (t) => {
  t.deepEqual(parse('folder=A%2FB&mode=importMime&retries=0&'), { folder: 'A/B', mode: 'importMime', credential: 'app', retries: 0 });
  t.deepEqual(parse(''), { folder: 'Pivot', mode: 'json', credential: 'app', retries: 3 });
  t.regex(refusal(t, 'retries=1&retries=2'), /option "retries" is given twice/);
});

const TENANT = 'contoso.onmicrosoft.com';
const APP = '11111111-2222-3333-4444-555555555555';

/**
 * Secrets pasted into each sink's spec, through the real command line: stderr (the JSON log) and
 * the status log name what is wrong and never hold the secret.
 */
const PASTED: { what: string; sink: string; secret: string; says: RegExp }[] = [
  { what: 'a bare pair (graph)', sink: `graph://${TENANT}/?clientId=${APP}&S3cretPw`, secret: 'S3cretPw', says: /option 2 of the query has no "=": write name=value/ },
  { what: 'an Entra secret as a bare pair (imap)', sink: `imap://archiver@127.0.0.1/?tls=none&Xy8Q~abc.DEF_ghi-123`, secret: 'Xy8Q~abc.DEF_ghi-123', says: /option 2 of the query has no "="/ },
  { what: 'a bad choice (graph)', sink: `graph://${TENANT}/?clientId=${APP}&credential=MyS3cret`, secret: 'MyS3cret', says: /credential must be app or managedIdentity \(the value given is not repeated/ },
  { what: 'a bad choice (imap)', sink: `imap://127.0.0.1/?auth=xoauth2&credential=MyS3cret`, secret: 'MyS3cret', says: /credential must be app or managedIdentity/ },
  { what: 'a bad integer (graph)', sink: `graph://${TENANT}/?clientId=${APP}&retries=hunter2`, secret: 'hunter2', says: /retries must be a whole number from 0 to 50 \(the value given is not repeated/ },
  { what: 'a bad integer (azblob)', sink: 'azblob://pivot-staging/acme?retries=hunter2', secret: 'hunter2', says: /retries must be a whole number/ },
  { what: 'an unknown key that is a secret (maildir)', sink: 'maildir:/tmp/never?Xy8Q~abc.DEF_ghi-123=1', secret: 'Xy8Q~abc.DEF_ghi-123', says: /unknown option \(option 1 of the query; it is not repeated/ },
];

/** The status log's failure record. */
function failureOf(statusLog: string): { code: string; error: string } {
  const failure = statusLog.trim().split('\n').map((line) => JSON.parse(line) as { record: string; code: string; error: string }).find((r) => r.record === 'failure');
  if (!failure) throw new Error(`no failure record in ${statusLog}`);
  return failure;
}

for (const { what, sink, secret, says } of PASTED) {
  test(`CLI: ${what} is refused, exit 2, and stderr and the status log never hold the secret`, async (t) => {
    const dir = await tempDir(t);
    const statusLog = join(dir, 'status.jsonl');
    const result = await cli(['run', '--sample', '--all-domains', '--sink', sink, '--status-log', statusLog], { cwd: dir });
    t.is(result.code, 2, result.stderr);
    t.regex(result.log, /E_SINK_CONFIG: /);
    t.regex(result.log, says);
    const status = await readFile(statusLog, 'utf8');
    t.like(failureOf(status), { code: 'E_SINK_CONFIG' });
    t.regex(failureOf(status).error, says);
    for (const form of forms(secret)) {
      t.false(result.stderr.includes(form), `${form} in stderr: ${result.stderr}`);
      t.false(result.stdout.includes(form), `${form} in stdout`);
      t.false(status.includes(form), `${form} in the status log: ${status}`);
    }
  });
}

test('CLI: a typo\'d option is still named, with the nearest one, in stderr and the status log', async (t) => {
  const dir = await tempDir(t);
  const statusLog = join(dir, 'status.jsonl');
  const result = await cli(['run', '--sample', '--all-domains', '--sink', `graph://${TENANT}/?clientId=${APP}&retires=3`, '--status-log', statusLog], { cwd: dir });
  t.is(result.code, 2, result.stderr);
  const says = /E_SINK_CONFIG: Graph sink graph:\/\/contoso\.onmicrosoft\.com: unknown option "retires"; did you mean "retries"\?/;
  t.regex(result.log, says);
  t.regex(failureOf(await readFile(statusLog, 'utf8')).error, /unknown option "retires"; did you mean "retries"\?/);
});
