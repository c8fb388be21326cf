import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import yargs, { type Argv, type InferredOptionTypes, type Options } from 'yargs';
import { hideBin, Parser } from 'yargs/helpers';
import { SIZE_UNITS_HELP, checkFlags, flagOrigin, givenTwice, nearest, optionsOf, parseBoolean, parseWholeNumber, recordTargets, resolveConfig, yargsOptionsOf, yargsPositionalOf, type Command, type ImportConfig, type RunConfig } from './options/index.js';
import type { InputIdentity } from './job.js';
import { ErrorCode, ExitCode, PivotArchiveError, errorCodeOf, errorMessage } from './errors.js';
import { errorExitCode, worseExitCode } from './exit-policy.js';
import type { Logger } from './logger.js';
import { redactSecrets } from './redact.js';
import { visible } from './formats/one-line.js';
import { TOOL } from './version.js';
import type { RunResult } from './run.js';
import { takeEarlySignals } from './early-signals.js';
import { consoleToLog } from './console-to-log.js';
import { MIN_OPEN_FILES, openFileLimit } from './launch.js';
import { checkSinkSpec, sinkOptionsHelp } from './sinks/index.js';
import { formatSummary } from './summary.js';
import type { InboxArchiveResult } from './state/inbox.js';
import type { RunSummary } from './status-log.js';
import { StateDir, checkRecordPaths } from './state/index.js';
import { accountVerdict, crontabLine, formatExportStatus, formatStatus, statusOfShards, unrecordedRunsHint } from './state/report.js';

// Each command's own modules (the delivery chain with libmime and highland, winston, the plugins'
// semver, a sink's client library) are loaded when that command runs, not at every start: the
// command line alone (--help, --version, status, cron) would otherwise load some 280 modules.

const EXAMPLES = `Exit codes: 0 every item accounted for; 1 some items failed (not delivered, or rejected and not kept); 2 usage, config, sink or archive error before any delivery; 3 another run holds the state dir; 4 stopped by SIGINT/SIGTERM (run again to finish); 5 everything accounted for, but nothing was delivered or more items than --max-rejected were rejected (a mapping mistake?); 70 a bug in pivot-archive.`;

const SIZES = `Sizes (e.g. 10MiB, 10M, 10MB): ${SIZE_UNITS_HELP}.`;

// The options of the commands that have no config file; run's and import's are in src/options/.
// A number is read as typed (type 'string') and parsed by wholeNumberFlag: yargs' 'number' makes
// NaN of `abc`, which then passed as a number (`--files NaN` hung the sample, `--last NaN` said "no runs").

/** More messages files than a day has minutes is no export's shape. */
const MAX_SAMPLE_FILES = 10_000;
const SAMPLE_OPTIONS = {
  out: { type: 'string', demandOption: true, describe: 'path of the .zip to write' },
  events: { type: 'string', default: '1000', describe: 'number of chat events' },
  seed: { type: 'string', default: '1', describe: 'the same seed makes the same archive (0 to 4294967295)' },
  files: { type: 'string', describe: `number of messages/*.json files (1 to ${MAX_SAMPLE_FILES})` },
  'edge-cases': { type: 'boolean', default: true, describe: 'add bad, oversize and hostile items' },
} as const;
const STATUS_OPTIONS = {
  'state-dir': { type: 'string', array: true, demandOption: true, describe: 'the state dir given to run or import (repeatable: each shard\'s, with --export one account of the whole export)' },
  last: { type: 'string', default: '10', describe: 'how many runs, newest first' },
  export: { type: 'string', describe: "one export's account across all its runs (killed, resumed, re-run), from the ledger" },
  'public-key': { type: 'string', describe: 'with --export: verifier key (keygen\'s .pub file or its text) to check the ledger\'s signatures' },
  json: { type: 'boolean', describe: 'one JSON object per run (its summary or failure, and the items that failed); with --export, the account' },
} as const;
const KEYGEN_OPTIONS = {
  out: { type: 'string', demandOption: true, describe: 'file for the private key (mode 0600, never replaced); the public key goes to FILE.pub' },
  name: { type: 'string', describe: 'key name in signatures [default: pivot-archive-HOSTNAME]' },
} as const;
const REPORT_OPTIONS = {
  'state-dir': { type: 'string', demandOption: true, describe: 'the state dir whose ledger.jsonl is read' },
  export: { type: 'string', demandOption: true, describe: 'the export id (e.g. acme-2026-11-23)' },
  out: { type: 'string', demandOption: true, describe: 'the HTML file to write (self-contained: no network, no external assets)' },
  csv: { type: 'string', describe: "also write every item's final outcome to this CSV file" },
  'public-key': { type: 'string', describe: "verifier key (keygen's .pub file, or its text): the report says whether the ledger's signature verified" },
  checkpoint: { type: 'string', array: true, default: [] as string[], describe: 'a checkpoint note copied off the host earlier (repeatable)' },
} as const;
const VERIFY_OPTIONS = {
  'state-dir': { type: 'string', array: true, demandOption: true, describe: 'the state dir whose ledger.jsonl is checked (repeatable: each shard\'s, each checked on its own)' },
  sink: { type: 'string', describe: 'the store to read back, as given to run (maildir:DIR, imap://..., azblob://...); without it only the ledger is checked' },
  ledger: { type: 'boolean', describe: 'check the ledger only (chain, checkpoints, signatures), even when --sink is given' },
  export: { type: 'string', describe: 'only the messages of this export id' },
  since: { type: 'string', describe: 'only runs started at or after this date/time (ISO 8601)' },
  sample: { type: 'string', describe: 'check a random sample of N messages (for very large stores; says so)' },
  'public-key': { type: 'string', describe: "verifier key (keygen's .pub file, or its text) the checkpoints must be signed with" },
  checkpoint: { type: 'string', array: true, default: [] as string[], describe: 'a checkpoint note copied off the host earlier (repeatable): the ledger must still hold what it covers' },
  insecure: { type: 'boolean', default: false, describe: 'allow IMAP without TLS, or Graph and its login host over http, to a host that is not loopback' },
  json: { type: 'boolean', describe: 'the result as one JSON object' },
} as const;
const CRON_OPTIONS = {
  print: { type: 'boolean', demandOption: true, describe: 'print the line (nothing is installed)' },
  at: { type: 'string', default: '02:30', describe: "time of day, HH:MM, in the cron daemon's time zone" },
} as const;

/** A whole-number flag of a command that has no config file, from `min` to `max`: refused naming the flag and the value as typed. */
function wholeNumberFlag(value: string | number, flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  return parseWholeNumber(value, flagOrigin({ flag }), 'a whole number', { min, max });
}

/**
 * A command's `options`, each flag not declared repeatable refused when given twice (yargs makes
 * an array of a repeated one, which the command would not expect), and its booleans checked as
 * written in `args`.
 */
function onlyOnce<T, O extends Record<string, Options>>(y: Argv<T>, options: O, args: string[]): Argv<Omit<T, keyof O> & InferredOptionTypes<O>> {
  return y.options(options).check((argv) => {
    for (const [flag, option] of Object.entries(options)) {
      const value: unknown = argv[flag];
      if (!option.array && Array.isArray(value)) throw givenTwice(flag, value.length);
      // An unset variable (`--out "$OUT"`): as run's string options, never taken as a path.
      if (option.type === 'string' && ([value] as unknown[]).flat().includes('')) throw new PivotArchiveError(ErrorCode.USAGE, `--${flag}: is empty`);
    }
    return checkBooleansWritten(args, options);
  });
}

/** A flag's name as yargs also takes it, camelCase (`dryRun` for `dry-run`). */
const camel = (name: string) => name.replace(/-+([^-])/g, (_, c: string) => c.toUpperCase());

/**
 * Each boolean flag of `options` given `=VALUE` in `args` (before a `--`) takes what the config
 * file takes, true or false, else the command line is refused naming it: yargs reads any other
 * VALUE as false, so `--dry-run=yes` would deliver.
 */
function checkBooleansWritten(args: string[], options: Record<string, Options>): true {
  const booleans = Object.keys(options).filter((flag) => options[flag]!.type === 'boolean');
  const end = args.indexOf('--');
  for (const arg of end < 0 ? args : args.slice(0, end)) {
    const [, name, value] = /^--([^=]+)=([\s\S]*)$/.exec(arg) ?? [];
    const flag = booleans.find((f) => f === name || camel(f) === name);
    if (flag !== undefined) parseBoolean(value, flagOrigin({ flag }));
  }
  return true;
}

/** The flags of each command, for the "did you mean" of a typo'd one. */
const FLAGS: Record<string, string[]> = {
  run: optionsOf('run').filter((o) => !o.positional).map((o) => o.flag),
  import: optionsOf('import').map((o) => o.flag),
  sample: Object.keys(SAMPLE_OPTIONS),
  status: Object.keys(STATUS_OPTIONS),
  keygen: Object.keys(KEYGEN_OPTIONS),
  verify: Object.keys(VERIFY_OPTIONS),
  report: Object.keys(REPORT_OPTIONS),
  cron: Object.keys(CRON_OPTIONS),
};
const COMMANDS = Object.keys(FLAGS);

/**
 * `execute` runs the command; `check` only parses and validates it as it would run (for
 * `cron --print -- COMMAND...`), so a typo is found when the line is made, not at night.
 */
type Mode = 'execute' | 'check';

/** yargs' argv with a lone "-" positional put back: yargs hands it over as "". */
function flagsOf(argv: Record<string, unknown>, args: string[]): Record<string, unknown> {
  return argv.archive === '' && args.includes('-') ? { ...argv, archive: '-' } : argv;
}

async function runCommand(config: RunConfig): Promise<number> {
  // Loaded where the logger is (before the run): a module that cannot load (a broken install) fails the run with its record.
  const [{ progressReporter }, { dryRunSummary, formatDryRun }, { run }, inboxRuns] = await Promise.all([import('./progress.js'), import('./dry-run.js'), import('./run.js'), config.inbox ? import('./state/inbox.js') : undefined]);
  return withLoggerAndSignals({ level: config.logLevel, json: config.json, file: config.logFile }, async (logger, stop) => {
    const progress = progressReporter(logger, { quiet: config.quiet, tty: process.stderr.isTTY === true && !config.json });
    const runOptions = { stop, progress: progress.report, progressEveryMs: progress.everyMs };
    const print = ({ summary: recorded, mailboxes }: RunResult, extra?: Record<string, unknown>) => {
      const summary = masked(recorded);
      // A dry run's summary comes with the items each mailbox would receive (src/dry-run.ts).
      const dry = mailboxes && dryRunSummary(summary, mailboxes);
      process.stdout.write((config.json ? JSON.stringify({ ...(dry ?? summary), ...extra }) : dry ? formatDryRun(dry) : formatSummary(summary)) + '\n');
    };
    if (config.inbox) {
      const inbox = await inboxRuns!.runInbox(config, logger, runOptions);
      progress.end();
      // Every archive read or refused is said, a line each with --json: its summary, or what became of it (README "--json"); one gone before it was read is in the log only.
      for (const r of inbox.results) {
        // Completed, but the state dir could not record it (full): the summary, and (a field with --json, a line without) why it stays.
        const notRecorded = r.outcome === 'not-recorded' ? { code: r.code, error: redactSecrets((r.reason ?? '').replace(`${r.code}: `, '')) } : undefined;
        if (r.run) {
          print(r.run, notRecorded && { notRecorded });
          if (notRecorded && !config.json) process.stdout.write(`pivot-archive: ${visible(r.archive)}: not-recorded (${notRecorded.code}: ${visible(notRecorded.error)})\n`);
        } else if (config.json) process.stdout.write(JSON.stringify(inboxRecord(r, resolve(config.inbox))) + '\n');
        else process.stdout.write(`pivot-archive: ${visible(r.archive)}: ${r.outcome}${r.reason ? ` (${visible(redactSecrets(r.reason))})` : ''}\n`);
      }
      const stopped = inbox.results.find((r) => r.outcome === 'stopped');
      const handled = inbox.results.length - (stopped ? 1 : 0);
      if (!config.json) process.stdout.write(`pivot-archive: inbox: ${handled} archive(s) ${config.dryRun ? 'read (dry run: none moved or recorded)' : 'handled'}, ${inbox.waiting.length} still being copied in${stopped ? `; stopped at ${stopped.archive} (it and the archives after it are left for the next run)` : ''}\n`);
      return inbox.exitCode;
    }
    const result = await run(config, logger, runOptions);
    progress.end();
    print(result);
    return result.exitCode;
  });
}

/** A summary as stdout shows it: its error's message masked as every record's is (a plugin's stray error may quote a secret). */
function masked(summary: RunSummary): RunSummary {
  return summary.error ? { ...summary, error: { ...summary.error, message: redactSecrets(summary.error.message) } } : summary;
}

/**
 * The --json line of a drop-folder archive that has no summary: `already-completed` (its sha256
 * is recorded), or a `failure` (refused as a whole and moved to failed/, or a setup error that
 * stopped the drop-folder run at it), shaped like the failure line of a plain run.
 */
function inboxRecord(r: InboxArchiveResult, inbox: string): Record<string, unknown> {
  // Named by its path in the drop folder, as the summaries name theirs.
  const archive = join(inbox, r.archive);
  if (r.outcome === 'already-completed') return { record: 'already-completed', archive, ...(r.sha256 ? { sha256: r.sha256 } : {}) };
  const error = (r.reason ?? '').startsWith(`${r.code}: `) ? r.reason!.slice(`${r.code}: `.length) : (r.reason ?? '');
  return { record: 'failure', archive, outcome: r.outcome, code: r.code ?? ErrorCode.INTERNAL, exitCode: r.exitCode ?? ExitCode.INTERNAL, error: redactSecrets(error) };
}

async function importCommand(config: ImportConfig): Promise<number> {
  return withLoggerAndSignals({ level: config.logLevel, json: config.json, file: config.logFile }, async (logger, stop) => {
    // Loaded on use: import brings the Azure Storage client (about 25 MB) that runs need not.
    const [{ runImport }, { progressReporter }] = await Promise.all([import('./import.js'), import('./progress.js')]);
    const progress = progressReporter(logger, { quiet: config.quiet, tty: process.stderr.isTTY === true && !config.json });
    const { summary, exitCode } = await runImport(config, logger, { stop, progress: progress.report, progressEveryMs: progress.everyMs });
    progress.end();
    process.stdout.write((config.json ? JSON.stringify(masked(summary)) : formatSummary(masked(summary))) + '\n');
    return exitCode;
  });
}

async function verifyCommand(argv: { 'state-dir': (string | number)[]; sink?: string; ledger?: boolean; export?: string; since?: string; sample?: string; 'public-key'?: string; checkpoint: (string | number)[]; insecure: boolean; json?: boolean }): Promise<number> {
  const sample = argv.sample === undefined ? undefined : wholeNumberFlag(argv.sample, 'sample', 1);
  // Several state dirs (one per shard): each ledger checked on its own, in turn; the worst exit code wins.
  if (argv['state-dir'].length > 1) {
    // The state dirs of a sharded export: every shard once, or the store is not checked whole (exit 2).
    await (await import('./verify.js')).checkShardSet(argv['state-dir'].map(String));
    let worst = 0;
    for (const dir of argv['state-dir']) worst = Math.max(worst, await verifyCommand({ ...argv, 'state-dir': [dir] }));
    return worst;
  }
  return withLoggerAndSignals({ level: 'warn', json: argv.json ?? false }, async (logger) => {
    checkOpenFileLimit('verify');
    const { verify, formatVerify } = await import('./verify.js');
    const result = await verify(
      {
        stateDir: String(argv['state-dir'][0]),
        sink: argv.ledger ? undefined : argv.sink,
        exportId: argv.export,
        since: argv.since,
        sample,
        publicKey: argv['public-key'],
        checkpoints: argv.checkpoint.map(String),
        insecure: argv.insecure,
      },
      logger,
    );
    process.stdout.write(argv.json ? `${JSON.stringify(result)}\n` : formatVerify(result));
    return result.exitCode;
  });
}

/** How long a run stopping after a failure nobody handled may take to finish what is in flight. */
const FAULT_GRACE_MS = 120_000;

/**
 * Logs human-readable on a terminal, JSON lines with --json or off a terminal (cron, log
 * collectors); SIGINT/SIGTERM abort `stop`, so no further item is read and those in flight finish.
 */
async function withLoggerAndSignals(
  options: { level: string; json: boolean; file?: string },
  body: (logger: Logger, stop: AbortSignal) => Promise<number>,
): Promise<number> {
  const { createLogger, flushLogger, reopenLogFile } = await import('./logger.js');
  const logger = createLogger({ level: options.level, json: options.json || !process.stderr.isTTY, file: options.file });
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (stop.signal.aborted) return;
    logger.warn(`${signal}: stopping after the items in flight; run again to finish`);
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  for (const signal of takeEarlySignals()) onSignal(signal);
  // A plugin's stray promise or timer that fails would end the process at once, unrecorded, exit 1
  // ("items failed"): the run stops as on SIGTERM instead, its summary recorded, exit 70.
  // A fault after the chain (while the run closes its sink or records) is in no summary: the exit code says it.
  let faulted = false;
  let giveUp: NodeJS.Timeout | undefined;
  const onFault = (err: unknown) => {
    faulted = true;
    const fault = new PivotArchiveError(ErrorCode.INTERNAL, `a failure no code handled (a plugin's stray promise or timer, or a bug): ${errorMessage(err)}`);
    logger.error(`${fault.code}: ${fault.message}; stopping after the items in flight`);
    if (!stop.signal.aborted) stop.abort(fault);
    // What failed may have left a promise of ours unsettled: a run that cannot stop must not hang cron for
    // ever (nor end at once with node's exit 13: the timer keeps the process alive until then).
    giveUp ??= setTimeout(() => {
      logger.error(`${fault.code}: the run did not stop within ${FAULT_GRACE_MS / 1000} s of the failure; exiting`);
      void flushLogger(logger).finally(() => exit.call(process, ExitCode.INTERNAL));
    }, FAULT_GRACE_MS);
  };
  process.on('unhandledRejection', onFault);
  process.on('uncaughtException', onFault);
  // A plugin's process.exit() ended the run at once with the code it gave: exit 0 with nothing
  // delivered and no summary (helper-114). While the command runs it throws instead: in a
  // transform, that item is rejected (kept, naming the plugin); in a timer, it is a fault as above.
  const exit = process.exit;
  process.exit = ((code?: number | string | null) => {
    throw new PivotArchiveError(ErrorCode.INTERNAL, `process.exit(${code ?? ''}) was called while the command was under way (by a plugin?): refused, the exit is the command's`);
  }) as typeof process.exit;
  // Whatever else ends the process before the command returns (process.exit kept from before) is never exit 0.
  let returned = false;
  const onExit = () => {
    if (returned) return;
    process.exitCode = ExitCode.INTERNAL;
    process.stderr.write(`pivot-archive: ${ErrorCode.INTERNAL}: the process was made to exit before the command ended (by a plugin?)\n`);
  };
  process.on('exit', onExit);
  const restoreConsole = consoleToLog(logger);
  // With a log file SIGHUP means "reopen it" (logrotate); without one it keeps its usual meaning.
  const onHangup = () => {
    reopenLogFile(logger, options.file!);
    logger.info(`SIGHUP: log file ${options.file} reopened`);
  };
  if (options.file) process.on('SIGHUP', onHangup);
  try {
    const code = await body(logger, stop.signal);
    return faulted ? worseExitCode(code, ExitCode.INTERNAL) : code;
  } catch (err) {
    report(logger, err);
    if (options.json) printFailure(err);
    return errorExitCode(err);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onHangup);
    restoreConsole();
    clearTimeout(giveUp);
    process.off('unhandledRejection', onFault);
    process.off('uncaughtException', onFault);
    process.exit = exit;
    returned = true;
    process.off('exit', onExit);
    await flushLogger(logger);
  }
}

/** With --json, a command that fails before its summary still answers on stdout: one JSON object. */
function printFailure(err: unknown): void {
  process.stdout.write(JSON.stringify({ record: 'failure', code: errorCodeOf(err), exitCode: errorExitCode(err), error: redactSecrets(errorMessage(err)) }) + '\n');
}

function report(logger: Logger | undefined, err: unknown): void {
  const code = err instanceof PivotArchiveError ? `${err.code}: ` : '';
  const text = `${code}${errorMessage(err)}`;
  if (logger) logger.error(text);
  // The logger masks secrets; a usage error can quote a word that holds one (a sink URL typed without --sink).
  else process.stderr.write(`pivot-archive: ${redactSecrets(text)}\n`);
  // A bug's stack, for its report: its first line is the message, which may quote anything.
  if (!(err instanceof PivotArchiveError) && err instanceof Error && err.stack) process.stderr.write(redactSecrets(err.stack) + '\n');
}

/** A first word that is no command is refused by name, with the nearest command if it looks like a typo. */
function checkCommandName(args: string[]): void {
  const [first] = args;
  if (first === undefined || first.startsWith('-') || COMMANDS.includes(first)) return;
  const guess = nearest(first, COMMANDS);
  throw new PivotArchiveError(ErrorCode.USAGE, `unknown command ${JSON.stringify(first)}; ${guess ? `did you mean ${JSON.stringify(guess)}?` : `the commands are ${COMMANDS.join(', ')}`}`);
}

/**
 * yargs' "Unknown argument: sinkk", with the nearest flag of the command for each (messages are
 * pinned to English) and without the camelCase twin yargs lists for a dashed name.
 */
function withFlagGuesses(message: string, known: string[], args: string[]): string {
  const listed = /^Unknown arguments?: (.*)$/.exec(message)?.[1]?.split(', ');
  if (!listed) return message;
  const named = listed.filter((name) => !listed.some((other) => other !== name && camel(other) === name));
  // A word that is no flag (one too many) may be a password typed in the wrong place: counted, not quoted.
  const typedAsFlag = (name: string) => args.some((arg) => arg.replace(/^--?/, '').split('=')[0] === name && arg.startsWith('-'));
  const unknown = named.filter(typedAsFlag);
  const words = named.length - unknown.length;
  const guesses = unknown.flatMap((name) => {
    const guess = nearest(name, known);
    return guess ? [unknown.length === 1 ? `--${guess}` : `--${guess} for ${name}`] : [];
  });
  const flags = unknown.length > 0 ? `${unknownArguments(unknown)}${guesses.length ? `; did you mean ${guesses.join(', ')}?` : ''}` : '';
  const extra = words > 0 ? `${words === 1 ? 'an extra word' : `${words} extra words`} (not repeated here: a value needs its flag, and a command takes one archive at most)` : '';
  return [flags, extra].filter(Boolean).join('; ');
}

/** yargs' wording for flags it does not know, which `withFlagGuesses` reads. */
const unknownArguments = (names: string[]) => `Unknown argument${names.length > 1 ? 's' : ''}: ${names.join(', ')}`;

/** The flags of `args` (before a `--`) that are none of `known` (as typed, dashed or camelCase, or negated with no-). */
function unknownFlags(args: string[], known: string[]): string[] {
  const names = new Set([...known, ...known.map(camel), 'version']);
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).flatMap((arg) => {
    const name = /^--?([^=]+)/.exec(arg)?.[1];
    if (name === undefined || /^-\d/.test(arg)) return [];
    const bare = name.replace(/^no-/, '');
    return names.has(name) || names.has(bare) ? [] : [name];
  });
}

/** The parser of the whole command line; `setExitCode` receives what an executed command resolves to. */
function commandLine(args: string[], mode: Mode, setExitCode: (code: number) => void) {
  const optionCommand = (command: Command) => (y: Argv) => {
    const positional = yargsPositionalOf(command);
    const options = yargsOptionsOf(command);
    return (positional ? y.positional(positional.name, positional.options) : y).options(options).check(() => checkBooleansWritten(args, options));
  };
  // The version string itself (`.version(true)` printed "true"); none when only checking a command.
  const parser = mode === 'execute' ? yargs(args).version(TOOL.version) : yargs(args).version(false);
  return parser
    .scriptName('pivot-archive')
    .locale('en')
    .usage('$0 <command> [options]\n\nArchive Pivot chat export archives into mailboxes.')
    .command(
      'run [archive]',
      'Deliver one Pivot export archive (a path, or - for stdin) to a sink',
      (y) =>
        optionCommand('run')(y)
          .example('$0 run pivot-acme-2026-11-23.zip --sink maildir:/srv/mail --status-log run.jsonl', '')
          .example('cat export.zip | $0 run - --sink maildir:/srv/mail', '')
          .example('$0 run --sample --sink maildir:./out --domain acme.example', '')
          .epilog(`${EXAMPLES}\n\n${SIZES}\n\nSink options (after ? in --sink, & between them):\n${sinkOptionsHelp()}`),
      async (argv) => {
        if (mode === 'check') await checkGiven(await checkFlags('run', flagsOf(argv, args)));
        else setExitCode(await runCommand(await configOrRecord('run', flagsOf(argv, args))));
      },
    )
    .command(
      'sample',
      'Write a synthetic Pivot export archive, for demos and benchmarks',
      (y) =>
        onlyOnce(y, SAMPLE_OPTIONS, args),
      async (argv) => {
        const events = wholeNumberFlag(argv.events, 'events', 0);
        const seed = wholeNumberFlag(argv.seed, 'seed', 0, 2 ** 32 - 1);
        const messageFiles = argv.files === undefined ? undefined : wholeNumberFlag(argv.files, 'files', 1, MAX_SAMPLE_FILES);
        if (mode === 'check') return;
        const { generateSample } = await import('./sample/generate.js');
        const info = await generateSample(argv.out, { events, seed, messageFiles, edgeCases: argv['edge-cases'] }).catch((err: unknown) => {
          // A place that cannot be written (no such folder, a folder, no permission, a full disk): the user's to fix.
          if (typeof (err as NodeJS.ErrnoException).code === 'string') throw new PivotArchiveError(ErrorCode.USAGE, `cannot write --out ${argv.out}: ${errorMessage(err)}`);
          throw err;
        });
        process.stdout.write(`${info.path}: export ${visible(info.exportId)}, ${info.events} events\n`);
      },
    )
    .command(
      'import',
      'Deliver staged batches (written by --sink azblob://...) into a mailbox sink; marks what it imported',
      (y) =>
        optionCommand('import')(y)
          .example("$0 import --from 'azblob://pivot-staging/acme' --sink maildir:/srv/mail", '')
          .epilog(`${EXAMPLES}\n\n${SIZES}\n\nSink options (after ? in --sink, & between them):\n${sinkOptionsHelp()}`),
      async (argv) => {
        if (mode === 'check') {
          const given = await checkFlags('import', argv);
          await checkGiven(given);
          // As import reads it (a SAS written into it is refused, unquoted), without reaching the container.
          if (typeof given.from === 'string') (await import('./sources/staged-batches/index.js')).parseStagedFrom(given.from);
        }
        else setExitCode(await importCommand(await configOrRecord('import', argv)));
      },
    )
    .command(
      'status',
      'Show the last runs recorded in a state dir: counters and what failed',
      (y) =>
        onlyOnce(y, STATUS_OPTIONS, args),
      async (argv) => {
        if (mode !== 'execute') return;
        const dirs = argv['state-dir'].map(String);
        const last = wholeNumberFlag(argv.last, 'last', 1);
        // A mistyped path must not read as a quiet "no runs" (exit 0) to a health check.
        for (const dir of dirs) {
          if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) throw new PivotArchiveError(ErrorCode.CONFIG, `${dir} is not a state dir (no such directory, or it cannot be read): give status the --state-dir the runs were given`);
        }
        if (dirs.length > 1) {
          const { text, exitCode } = await statusOfShards(dirs, { last, exportId: argv.export, publicKey: argv['public-key'], json: argv.json ?? false });
          setExitCode(exitCode);
          return void process.stdout.write(text);
        }
        const state = new StateDir(dirs[0]!);
        if (argv.export === undefined) return void process.stdout.write(await formatStatus(state, last, argv.json ?? false));
        const { accountExitCode, readExportAccount, ledgerTrust, noRunOf, requireLedger } = await import('./ledger/index.js');
        const { account, check } = await readExportAccount(await requireLedger(state, () => unrecordedRunsHint(state)), argv.export, await ledgerTrust(argv['public-key'], [], state.checkpointNotePath));
        if (account.runs.length === 0) throw noRunOf(state.ledgerPath, argv.export, await unrecordedRunsHint(state));
        setExitCode(accountExitCode(account, check));
        process.stdout.write(argv.json ? `${JSON.stringify({ account, ledger: check })}\n` : formatExportStatus(account, check));
      },
    )
    .command(
      'report',
      "Write one export's account as a self-contained HTML report for an auditor (and its item list as CSV)",
      (y) => onlyOnce(y, REPORT_OPTIONS, args).example('$0 report --state-dir /var/lib/pivot-archive --export acme-2026-11-23 --out report.html --csv items.csv', ''),
      async (argv) => {
        if (mode !== 'execute') return;
        const { report } = await import('./report/index.js');
        const { ledgerExitCode } = await import('./ledger/index.js');
        const { account, check, rows } = await report({ stateDir: argv['state-dir'], exportId: argv.export, out: argv.out, csv: argv.csv, publicKey: argv['public-key'], checkpoints: argv.checkpoint.map(String) });
        setExitCode(ledgerExitCode(check));
        process.stdout.write(`${argv.out}: export ${visible(account.exportId)}, ${accountVerdict(account)}${account.shard ? ' (not the whole export)' : ''}; ledger ${check.chainIntact ? 'intact' : 'BROKEN'}, signature ${check.signature}${argv.csv ? `\n${argv.csv}: ${rows} items` : ''}\n`);
      },
    )
    .command(
      'keygen',
      'Make an Ed25519 key pair that signs the ledger (run --signing-key FILE; verify --public-key FILE.pub)',
      (y) => onlyOnce(y, KEYGEN_OPTIONS, args),
      async (argv) => {
        if (mode !== 'execute') return;
        const { keygen } = await import('./keygen.js');
        const verifier = await keygen(argv.out, argv.name);
        process.stdout.write(`private key: ${argv.out} (keep it secret; give it to run --signing-key)\npublic key: ${argv.out}.pub\n${verifier}`);
      },
    )
    .command(
      'verify',
      'Prove the ledger whole and the store holding every message it records, byte for byte',
      (y) =>
        onlyOnce(y, VERIFY_OPTIONS, args)
          .example('$0 verify --state-dir /var/lib/pivot-archive --sink maildir:/srv/mail --public-key ledger.key.pub', '')
          .epilog('Exit codes: 0 the ledger holds, every message it records is there, unaltered, and no delivery it records failed is undelivered; 1 not everything is archived, as status --export says INCOMPLETE: the ledger records (mailbox, item) pairs that failed and no run delivered since, or an export whose runs never settled every item (its archive not read to the end, rejected items not kept) (NOT COMPLETE); 6 missing, altered or unexpected messages; 7 the ledger fails its chain, a checkpoint or a signature; 2 usage or a store that cannot be read.'),
      async (argv) => {
        if (mode !== 'execute') return;
        setExitCode(await verifyCommand(argv));
      },
    )
    .command(
      'cron',
      'Print a crontab line that runs the rest of the command line every night',
      (y) =>
        onlyOnce(y, CRON_OPTIONS, args)
          .usage('$0 cron --print --at 02:30 -- run --inbox /srv/pivot/incoming --state-dir /var/lib/pivot-archive --sink maildir:/srv/mail --domain acme.com')
          .epilog('The command after -- is checked now: its command, flags, their values and the config file it names (a missing archive is fine: it may appear later).'),
      async (argv) => {
        const words = (argv['--'] as string[] | undefined) ?? [];
        const line = crontabLine(String(argv.at), words, process.cwd());
        await parseCommandLine(words, 'check', () => undefined);
        if (mode === 'execute') process.stdout.write(line + '\n');
      },
    )
    .demandCommand(1, 'Name a command: run, import, sample, status, verify, report, keygen or cron.')
    .parserConfiguration({ 'populate--': true })
    .strict()
    // yargs' strict mode takes any spelling that camel-cases to a flag (--STATE-DIR, --dry--run,
    // --dry-Run) and the handler then reads the dashed name: the flag was ignored and the run
    // exited 0 (helper-115: a "dry run" delivered, a state dir never made). Only the flag as
    // declared, its camelCase, or its no- form is taken.
    .check(() => {
      const known = [...(FLAGS[args[0]!] ?? []), 'help'];
      const typo = unknownFlags(args, known);
      if (typo.length > 0) throw new PivotArchiveError(ErrorCode.USAGE, withFlagGuesses(unknownArguments(typo), known, args));
      return true;
    })
    .epilog(EXAMPLES)
    .help(mode === 'execute')
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((message, err) => {
      const known = [...(FLAGS[args[0]!] ?? []), 'help'];
      // yargs names a missing required flag before an unknown one; the typo is the better lead.
      const typo = /^Missing required argument/.test(message) ? unknownFlags(args, known) : [];
      const failure = err ?? new PivotArchiveError(ErrorCode.USAGE, withFlagGuesses(typo.length ? unknownArguments(typo) : message, known, args));
      refusedByParser.add(failure);
      throw failure;
    });
}

/**
 * A command line's flags as written (by flag name, also when typed camelCase, as yargs takes them),
 * read without the checks the parser refused it by; `--dry-run` as a word, so that one refused for
 * its value (`--dry-run=yes`) still reads as meant.
 */
function lenientFlags(args: string[]): Record<string, unknown> {
  const alias = Object.fromEntries((FLAGS[args[0]!] ?? []).filter((flag) => camel(flag) !== flag).map((flag) => [flag, [camel(flag)]]));
  return Parser(args.slice(1), { boolean: ['json'], alias, configuration: { 'camel-case-expansion': false } }) as Record<string, unknown>;
}

/** Errors of the command-line parser itself (an unknown flag, a missing value), which no later step recorded. */
const refusedByParser = new WeakSet<object>();
/** Refusals already recorded in the state dir (yargs hands a handler's error to `fail` too: it must not be recorded twice). */
const recordedRefusals = new WeakSet<object>();

/**
 * A run or import whose command line the parser refused (`--setle 60`) is recorded where the
 * rest of that line says the run would have kept its records, read leniently.
 */
async function recordRefusedCommandLine(args: string[], err: unknown): Promise<void> {
  const command = args[0];
  if ((command !== 'run' && command !== 'import') || typeof err !== 'object' || err === null || !refusedByParser.has(err) || recordedRefusals.has(err)) return;
  const flags = lenientFlags(args);
  const targets = await recordTargets(command, flags, process.env, process.cwd()).catch(() => ({}));
  const { recordFailureBeforeStart } = await import('./job.js');
  await recordFailureBeforeStart(targets, err, inputOf({ ...flags, archive: String((flags._ as unknown[] | undefined)?.[0] ?? '') }));
}

/** The input a failure record names: the staging, or the archive with its file (for its size and sha256; not stdin). */
function inputOf(flags: Record<string, unknown>): InputIdentity {
  if (typeof flags.from === 'string') return { archive: flags.from };
  const archive = typeof flags.archive === 'string' ? flags.archive : '';
  return archive === '' || archive === '-' ? { archive } : { archive, path: resolve(archive) };
}

/**
 * The command's config, its status log and log file checked before the log opens; a flag or config
 * value it refuses is still recorded where the run would have kept its records.
 */
async function configOrRecord<C extends 'run' | 'import'>(command: C, flags: Record<string, unknown>): Promise<C extends 'run' ? RunConfig : ImportConfig> {
  try {
    const config = await resolveConfig(command, flags, process.env);
    await checkRecordPaths(config, process.cwd());
    checkOpenFileLimit('run');
    if (config.logFile) await (await import('./logger.js')).checkLogFile(config.logFile);
    return config as C extends 'run' ? RunConfig : ImportConfig;
  } catch (err) {
    const { recordFailureBeforeStart } = await import('./job.js');
    await recordFailureBeforeStart(await recordTargets(command, flags, process.env, process.cwd()), err, inputOf(flags));
    if (typeof err === 'object' && err !== null) recordedRefusals.add(err);
    throw err;
  }
}

/** What a command refused under a low open-file limit names: what needs more, and what it did not do. */
const LOW_LIMIT_WORDS = {
  run: { large: 'a large export', notDone: 'Nothing was delivered' },
  verify: { large: 'a large store', notDone: 'Nothing was checked' },
} as const;

/**
 * A run, import or verify under a soft open-file limit below MIN_OPEN_FILES is refused before it
 * starts (E_OPEN_FILE_LIMIT, exit 2; a run's and an import's refusal recorded): its deliveries or
 * reads would fail EMFILE one by one, or the modules it loads as it goes would. From it up, each
 * keeps within the limit.
 */
function checkOpenFileLimit(command: keyof typeof LOW_LIMIT_WORDS, limit = openFileLimit()): void {
  if (limit === undefined || limit >= MIN_OPEN_FILES) return;
  const { large, notDone } = LOW_LIMIT_WORDS[command];
  throw new PivotArchiveError(
    ErrorCode.OPEN_FILE_LIMIT,
    `the open-file limit (ulimit -n) is ${limit}, too low to ${command}: pivot-archive needs at least ${MIN_OPEN_FILES} open files (1024 or more for ${large}); raise it (ulimit -n 1024 in the shell or crontab line, LimitNOFILE=1024 in a systemd unit), then ${command} again. ${notDone}`,
  );
}

/**
 * A command line checked for later (cron): its sink spec as the run will parse it, but not the
 * secrets it will read then; where its status log and log file would write.
 */
async function checkGiven(given: Record<string, unknown>): Promise<void> {
  if (typeof given.sink === 'string') await checkSinkSpec(given.sink, { cwd: process.cwd(), insecure: given.insecure === true });
  await checkRecordPaths(given, process.cwd());
}

async function parseCommandLine(args: string[], mode: Mode, setExitCode: (code: number) => void): Promise<void> {
  checkCommandName(args);
  await commandLine(args, mode, setExitCode).parseAsync();
}

/** The command-line interface; resolves to the process exit code (never calls process.exit). */
export async function main(args: string[] = hideBin(process.argv)): Promise<number> {
  // A reader of the output that goes away (a closed pipe, a restarted journal) must not end the
  // run half way: the status log and the state dir are its record, not the terminal.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
  let exitCode: number = ExitCode.OK;
  try {
    await parseCommandLine(args, 'execute', (code) => (exitCode = code));
  } catch (err) {
    report(undefined, err);
    await recordRefusedCommandLine(args, err);
    if ((args[0] === 'run' || args[0] === 'import') && lenientFlags(args).json === true) printFailure(err);
    if (!(err instanceof PivotArchiveError) || err.code === ErrorCode.USAGE) process.stderr.write('Run pivot-archive --help for usage.\n');
    return errorExitCode(err);
  }
  return exitCode;
}
