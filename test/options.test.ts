import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, PivotArchiveError } from '../src/errors.js';
import type { runImport } from '../src/import.js';
import {
  DEFAULT_MAX_ITEM_SIZE,
  OPTIONS,
  defaultsOf,
  optionsOf,
  parseSize,
  readConfigFile,
  resolveConfig,
  validateConfigObject,
  yargsOptionsOf,
  yargsPositionalOf,
  type Command,
  type ImportConfig,
  type RunConfig,
} from '../src/options/index.js';
import type { OptionSpec, OptionType } from '../src/options/spec.js';
import { tempDir } from './helpers/tmp.js';

/** A value of each type as a user writes it, what it parses to, and a value that is refused. */
const SAMPLES: Record<OptionType, { written: unknown; flag: unknown; parsed: unknown; bad: unknown }> = {
  string: { written: 'x', flag: 'x', parsed: 'x', bad: 5 },
  boolean: { written: true, flag: true, parsed: true, bad: 'yes' },
  strings: { written: ['a', 'b'], flag: ['a', 'b'], parsed: ['a', 'b'], bad: 'a' },
  size: { written: '2KB', flag: '2KB', parsed: 2000, bad: '10XB' },
  share: { written: '50%', flag: '50%', parsed: 0.5, bad: '150%' },
  seconds: { written: 5, flag: '5', parsed: 5, bad: -1 },
  count: { written: 3, flag: '3', parsed: 3, bad: 1.5 },
  choice: { written: 'debug', flag: 'debug', parsed: 'debug', bad: 'loud' },
  shard: { written: '2/3', flag: '2/3', parsed: { index: 2, count: 3 }, bad: '4/3' },
};

const COMMANDS: Command[] = ['run', 'import'];
/** Flags without which a command is refused (no archive, no sink...). */
// A run's sink is not Maildir here: a Maildir sink needs --domain or --all-domains, which these tests give as flags of their own.
const RUN_SINK = 'imap://archiver@mail.acme.example/';
const BASE: Record<Command, Record<string, unknown>> = { run: { archive: 'x.zip', sink: RUN_SINK }, import: { from: 'azblob://c', sink: 'maildir:m' } };

const fieldsOf = (options: readonly OptionSpec[]) => options.filter((o) => !o.flagOnly).map((o) => o.key).sort();

type ImportConfigOfImport = Parameters<typeof runImport>[0];

test('RunConfig and ImportConfig keep the fields run() and runImport() read, and the table declares each one', (t) => {
  // Compile-time: a missing or extra field in the derived types fails tsc here.
  const runFields: Record<keyof RunConfig, true> = {
    archive: true, sample: true, sink: true, statusLog: true, plugins: true, maxItemSize: true, maxEventSize: true, maxZipRatio: true, maxRejected: true, rejects: true,
    domains: true, allDomains: true, userMap: true, defaultMailbox: true, logLevel: true, json: true, insecure: true, stateDir: true, keepRuns: true,
    logFile: true, inbox: true, keep: true, settleSeconds: true, quiet: true, signingKey: true, dryRun: true, shard: true, pluginTimeout: true,
  };
  const importFields: Record<keyof ImportConfig, true> = {
    from: true, sink: true, exportId: true, again: true, statusLog: true, maxItemSize: true, insecure: true, stateDir: true, keepRuns: true,
    logLevel: true, json: true, logFile: true, signingKey: true, shard: true, quiet: true, publicKey: true,
  };
  // runImport() takes the options' ImportConfig as it is.
  const options: ImportConfig = { from: 'azblob://c', sink: 'maildir:m', again: false, maxItemSize: 1, insecure: false, keepRuns: 0, logLevel: 'info', json: false, quiet: false };
  const forImport: ImportConfigOfImport = options;
  t.is(forImport.from, 'azblob://c');
  t.deepEqual(fieldsOf(optionsOf('run')), Object.keys(runFields).sort());
  t.deepEqual(fieldsOf(optionsOf('import')), Object.keys(importFields).sort());
});

test('each option is declared once: one flag and one key per command', (t) => {
  for (const command of COMMANDS) {
    const options = optionsOf(command);
    t.is(new Set(options.map((o) => o.flag)).size, options.length, command);
    t.is(new Set(options.map((o) => o.key)).size, options.length, command);
  }
  t.is(new Set(OPTIONS.map((o) => o.key)).size, OPTIONS.length);
});

test('every option of the table reaches yargs, with its help and its default shown as written', (t) => {
  for (const command of COMMANDS) {
    const yargsOptions = yargsOptionsOf(command);
    for (const spec of optionsOf(command)) {
      if (spec.positional) {
        t.is(yargsPositionalOf(command)?.name, spec.flag);
        continue;
      }
      const option = yargsOptions[spec.flag];
      t.truthy(option, `${command} --${spec.flag}`);
      t.is(option!.type, spec.type === 'boolean' ? 'boolean' : 'string', spec.flag);
      t.is(option!.array === true, spec.type === 'strings', spec.flag);
      t.true(String(option!.describe).length > 10, spec.flag);
      // yargs gets no default: it would win over the config file.
      t.is(option!.default, undefined, spec.flag);
    }
  }
  t.is(yargsOptionsOf('run')['max-item-size']!.defaultDescription, '10MiB');
  t.is(yargsOptionsOf('run')['max-rejected']!.defaultDescription, '10%');
  t.regex(String(yargsOptionsOf('import')['config']!.describe), /\[env: PIVOT_ARCHIVE_CONFIG\]/);
  t.false('domain' in yargsOptionsOf('import'));
});

test('every config-file key is read from the file and checked: a wrong value names the file and the key as written', (t) => {
  for (const command of COMMANDS) {
    for (const spec of optionsOf(command).filter((o) => !o.flagOnly)) {
      const sample = SAMPLES[spec.type];
      t.deepEqual(validateConfigObject({ [spec.key]: sample.written }, command, 'config.json'), { [spec.key]: sample.parsed }, spec.key);
      const error = t.throws(() => validateConfigObject({ [spec.key]: sample.bad }, command, 'config.json'), { instanceOf: PivotArchiveError });
      t.is(error?.code, ErrorCode.CONFIG);
      t.true(error!.message.startsWith(`config.json: ${spec.key}: `), error!.message);
    }
  }
});

test('every flag is parsed into the config; a wrong value is refused naming the flag as typed', async (t) => {
  for (const command of COMMANDS) {
    for (const spec of optionsOf(command).filter((o) => !o.flagOnly && !o.positional)) {
      const sample = SAMPLES[spec.type];
      // --sample and --inbox are sources: with BASE's archive they would be two.
      const base = spec.key === 'sample' || spec.key === 'inbox' ? { sink: RUN_SINK, 'state-dir': 's' } : BASE[command];
      const config = (await resolveConfig(command, { ...base, [spec.flag]: sample.flag }, {})) as unknown as Record<string, unknown>;
      t.deepEqual(config[spec.key], sample.parsed, `${command} --${spec.flag}`);
      if (spec.type === 'boolean' || spec.type === 'string') continue; // yargs types these
      const error = await t.throwsAsync(resolveConfig(command, { ...base, [spec.flag]: typeof sample.bad === 'number' ? String(sample.bad) : sample.bad }, {}));
      t.true(error!.message.startsWith(`--${spec.flag}: `), error!.message);
      t.is((error as PivotArchiveError).code, ErrorCode.USAGE);
    }
  }
});

test('an empty string value (an unset variable in a crontab) is refused for every string option, by flag and in the config file: never taken as absent', async (t) => {
  for (const command of COMMANDS) {
    for (const spec of optionsOf(command).filter((o) => o.type === 'string')) {
      if (!spec.flagOnly) t.throws(() => validateConfigObject({ [spec.key]: '' }, command, 'config.json'), { message: `config.json: ${spec.key}: is empty` });
      const base = spec.positional ? { sink: RUN_SINK } : BASE[command];
      const error = await t.throwsAsync(resolveConfig(command, { ...base, [spec.flag]: '' }, {}));
      t.regex(error!.message, new RegExp(`${spec.flag}: is empty$`), `${command} --${spec.flag}`);
    }
  }
});

test('bounds: shares beyond 0%..100%, sizes under one byte, negative or fractional counts are refused', async (t) => {
  for (const [flag, value, text] of [
    ['max-rejected', '150%', /--max-rejected: "150%" is not a share such as 10% \(0% to 100%\)/],
    ['max-rejected', '-1%', /not a share/],
    ['max-item-size', '0', /--max-item-size: "0" is not a size/],
    ['max-event-size', '0.5B', /not a size/],
    ['keep-runs', '-1', /--keep-runs: "-1" is not a whole number/],
    ['settle', '1.5', /--settle: "1.5" is not a whole number of seconds/],
    ['log-level', 'loud', /--log-level: "loud" is not one of error, warn, info, verbose, debug/],
  ] as const) {
    await t.throwsAsync(resolveConfig('run', { ...BASE.run, [flag]: value }, {}), { message: text });
  }
  t.is((await resolveConfig('run', { ...BASE.run, 'max-rejected': '100%', 'keep-runs': '0' }, {})).maxRejected, 1);
});

test('sizes: K, M, G and KiB, MiB, GiB are powers of 1024, KB, MB, GB of 1000, in any case', (t) => {
  const origin = { name: '--max-item-size', code: ErrorCode.USAGE } as const;
  const cases: [string | number, number][] = [
    ['10M', 10 * 1024 ** 2],
    ['10m', 10 * 1024 ** 2],
    ['10MiB', 10 * 1024 ** 2],
    ['10mib', 10 * 1024 ** 2],
    ['10MB', 10_000_000],
    ['10mb', 10_000_000],
    ['512K', 512 * 1024],
    ['512kb', 512_000],
    ['2G', 2 * 1024 ** 3],
    ['2GB', 2e9],
    ['1GiB', 1024 ** 3],
    ['100B', 100],
    ['100', 100],
    [1048576, 1048576],
    ['1.5K', 1536],
    [' 10 MiB ', 10 * 1024 ** 2],
  ];
  for (const [written, bytes] of cases) t.is(parseSize(written, origin), bytes, String(written));
  for (const bad of ['10XB', '10MBB', 'M', '', '-1K', '10 M B', 'Infinity', true, ['10']]) {
    t.throws(() => parseSize(bad, origin), { message: /^--max-item-size: .* is not a size such as 10MiB \(K, M, G and KiB, MiB, GiB are powers of 1024; KB, MB, GB are powers of 1000/ }, String(bad));
  }
});

test('defaults come from the table, as written there', (t) => {
  t.is(DEFAULT_MAX_ITEM_SIZE, 10 * 1024 * 1024);
  t.like(defaultsOf('run'), { maxEventSize: 64 * 1024 * 1024, maxRejected: 0.1, rejects: './pivot-rejects', settleSeconds: 60, keepRuns: 0, logLevel: 'info', quiet: false });
  t.deepEqual(defaultsOf('import'), { again: false, maxItemSize: 10 * 1024 * 1024, keepRuns: 0, logLevel: 'info', insecure: false, json: false, quiet: false });
  // Each call has its own lists: a run that adds to them changes no later default.
  defaultsOf('run').plugins!.push('x');
  t.deepEqual(defaultsOf('run').plugins, []);
});

test('unknown config keys are errors naming the key as written, with the known keys; prototype names are unknown too', async (t) => {
  const dir = await tempDir(t);
  const error = t.throws(() => validateConfigObject({ sink: 'maildir:m', colour: 'blue' }, 'run', 'cfg.json'));
  t.regex(error!.message, /^cfg\.json: unknown key "colour"; known: archive, sample, sink, /);
  t.regex(t.throws(() => validateConfigObject({ maxItemSiz: '1M' }, 'run', 'cfg.json'))!.message, /unknown key "maxItemSiz" \(did you mean "maxItemSize"\?\)/);
  // A key of the other command says so, rather than "unknown".
  t.regex(t.throws(() => validateConfigObject({ domains: ['acme.example'] }, 'import', 'cfg.json'))!.message, /cfg\.json: key "domains" is an option of run, not of import/);
  // --config names the file; it is no key in it.
  t.regex(t.throws(() => validateConfigObject({ config: 'other.json' }, 'run', 'cfg.json'))!.message, /unknown key "config"/);
  for (const key of ['__proto__', 'constructor', 'toString']) {
    const file = join(dir, `${key}.json`);
    await writeFile(file, `{"sink": "maildir:m", ${JSON.stringify(key)}: {}}`);
    const refused = await t.throwsAsync(readConfigFile(file, 'import'));
    t.true(refused!.message.includes(`unknown key ${JSON.stringify(key)}`), refused!.message);
    t.is((refused as PivotArchiveError).code, ErrorCode.CONFIG);
  }
});

test('a sink URL is never quoted in an error: it may hold a password', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'c.json');
  await writeFile(file, JSON.stringify({ sink: ['imap://admin:hunter2@mail.example/'] }));
  const error = await t.throwsAsync(readConfigFile(file, 'run'));
  t.is(error!.message, `${file}: sink: must be a string`);
});

test('merge order: defaults < config file < flags; the file named by --config or PIVOT_ARCHIVE_CONFIG, the flag first', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'run.json');
  await writeFile(file, JSON.stringify({ sink: 'maildir:from-file', allDomains: true, quiet: true, maxItemSize: '1M', logLevel: 'warn' }));
  const fromEnv = await resolveConfig('run', { archive: 'x.zip', 'log-level': 'debug' }, { PIVOT_ARCHIVE_CONFIG: file });
  t.like(fromEnv, { sink: 'maildir:from-file', quiet: true, maxItemSize: 1024 ** 2, logLevel: 'debug', maxRejected: 0.1 });
  const other = join(dir, 'other.json');
  await writeFile(other, JSON.stringify({ sink: 'maildir:other', allDomains: true }));
  t.is((await resolveConfig('run', { archive: 'x.zip', config: other }, { PIVOT_ARCHIVE_CONFIG: file })).sink, 'maildir:other');
  // import reads the same variable and checks its file for import's keys.
  const importFile = join(dir, 'import.json');
  await writeFile(importFile, JSON.stringify({ from: 'azblob://staging', sink: 'maildir:m', again: true, maxItemSize: '20MB', stateDir: 'state' }));
  t.like(await resolveConfig('import', {}, { PIVOT_ARCHIVE_CONFIG: importFile }), { from: 'azblob://staging', again: true, maxItemSize: 20_000_000, stateDir: 'state', keepRuns: 0 });
  const runOnly = join(dir, 'run-only.json');
  await writeFile(runOnly, JSON.stringify({ sink: 'maildir:m', domains: ['acme.example'] }));
  await t.throwsAsync(resolveConfig('import', { sink: 'maildir:m' }, { PIVOT_ARCHIVE_CONFIG: runOnly }), { message: `${runOnly}: key "domains" is an option of run, not of import` });
  await t.throwsAsync(resolveConfig('import', {}, { PIVOT_ARCHIVE_CONFIG: join(dir, 'missing.json') }), { message: /^cannot read config file .*missing\.json/ });
});

test('what must be given is named, with the flag and the config key', async (t) => {
  await t.throwsAsync(resolveConfig('import', { sink: 'maildir:m' }, {}), { message: 'no staging: give --from azblob://CONTAINER[/PREFIX] (or "from" in the config file)' });
  await t.throwsAsync(resolveConfig('import', { from: 'azblob://c' }, {}), { message: /^no sink: give --sink maildir:DIR/ });
  await t.throwsAsync(resolveConfig('run', { sink: 'maildir:m' }, {}), { message: /^no archive/ });
  await t.throwsAsync(resolveConfig('run', { ...BASE.run, domain: ['a.example'], 'all-domains': true }, {}), { message: 'give --domain or --all-domains, not both' });
});
