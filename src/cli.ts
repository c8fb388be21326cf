import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { mergeConfig, parseSize, readConfigFile, validateConfig, type RunConfig } from './config.js';
import { DEFAULT_MAX_ITEM_SIZE } from './transforms/size-filter/index.js';
import { ErrorCode, ExitCode, PivotArchiveError, errorMessage } from './errors.js';
import { createLogger, flushLogger, reopenLogFile, type Logger } from './logger.js';
import { run } from './run.js';
import { formatSummary } from './summary.js';
import type { ImportConfig } from './import.js';
import type { RunSummary } from './status-log.js';
import { runInbox } from './state/inbox.js';
import { progressReporter } from './progress.js';
import { StateDir } from './state/index.js';
import { crontabLine, formatStatus } from './state/report.js';

const EXAMPLES = `Exit codes: 0 every item accounted for; 1 some items failed (not delivered, or rejected and not kept); 2 usage, config, sink or archive error before any delivery; 3 another run holds the state dir; 4 stopped by SIGINT/SIGTERM (run again to finish); 5 everything accounted for, but nothing was delivered or more items than --max-rejected were rejected (a mapping mistake?); 70 a bug in pivot-archive.`;

/** Options for scheduled `run` and `import`: one at a time per state dir, every run kept. */
const STATE_OPTIONS = {
  'state-dir': { type: 'string', describe: 'lock (one run at a time) and history of runs, for scheduled runs' },
  'keep-runs': { type: 'number', describe: 'runs kept under --state-dir, the oldest removed first [default: 0, for ever]' },
} as const;

/** Options `run` and `import` share. */
const LOG_AND_SINK_OPTIONS = {
  'log-level': { type: 'string', choices: ['error', 'warn', 'info', 'verbose', 'debug'], describe: 'log level [default: info]' },
  'log-file': { type: 'string', describe: 'also write the log to FILE as JSON lines (appended; SIGHUP reopens it, for logrotate)' },
  insecure: { type: 'boolean', describe: 'allow IMAP without TLS to a host that is not loopback' },
  json: { type: 'boolean', describe: 'JSON log lines on stderr (the default off a terminal) and a JSON summary on stdout' },
} as const;

async function runCommand(argv: Record<string, unknown>, args: string[]): Promise<number> {
  // yargs hands a lone "-" positional over as "": put the stdin marker back.
  const archive = argv.archive === '' && args.includes('-') ? '-' : argv.archive;
  const configFile = argv.config ?? process.env.PIVOT_ARCHIVE_CONFIG;
  const fromFile = configFile ? await readConfigFile(String(configFile)) : {};
  const fromFlags = validateConfig(
    {
      archive,
      sample: argv.sample,
      sink: argv.sink,
      statusLog: argv['status-log'],
      plugins: argv.plugin,
      maxItemSize: argv['max-item-size'],
      maxEventSize: argv['max-event-size'],
      maxRejected: argv['max-rejected'],
      rejects: argv.rejects,
      domains: argv.domain,
      allDomains: argv['all-domains'],
      userMap: argv['user-map'],
      defaultMailbox: argv['default-mailbox'],
      logLevel: argv['log-level'],
      json: argv.json,
      insecure: argv.insecure,
      stateDir: argv['state-dir'],
      inbox: argv.inbox,
      logFile: argv['log-file'],
      keepRuns: argv['keep-runs'],
      keep: argv.keep,
      settleSeconds: argv.settle,
    },
    'command line',
  );
  const config: RunConfig = mergeConfig(fromFile, fromFlags);
  return withLoggerAndSignals({ level: config.logLevel, json: config.json, file: config.logFile }, async (logger, stop) => {
    const progress = progressReporter(logger, { quiet: argv.quiet === true, tty: process.stderr.isTTY === true && !config.json });
    const runOptions = { stop, progress: progress.report, progressEveryMs: progress.everyMs };
    const print = (summary: RunSummary) => process.stdout.write((config.json ? JSON.stringify(summary) : formatSummary(summary)) + '\n');
    if (config.inbox) {
      const inbox = await runInbox(config, logger, runOptions);
      for (const r of inbox.results) {
        if (r.run) print(r.run.summary);
        else if (!config.json) process.stdout.write(`pivot-archive: ${r.archive}: ${r.outcome}${r.reason ? ` (${r.reason})` : ''}\n`);
      }
      if (!config.json) process.stdout.write(`pivot-archive: inbox: ${inbox.results.length} archive(s) handled, ${inbox.waiting.length} still being copied in\n`);
      return inbox.exitCode;
    }
    const { summary, exitCode } = await run(config, logger, runOptions);
    print(summary);
    return exitCode;
  });
}

async function importCommand(argv: Record<string, unknown>): Promise<number> {
  const json = argv.json === true;
  const level = typeof argv['log-level'] === 'string' ? argv['log-level'] : 'info';
  return withLoggerAndSignals({ level, json, file: argv['log-file'] as string | undefined }, async (logger, stop) => {
    const config: ImportConfig = {
      from: String(argv.from),
      sink: String(argv.sink),
      exportId: argv.export as string | undefined,
      again: argv.again === true,
      statusLog: argv['status-log'] as string | undefined,
      maxItemSize: argv['max-item-size'] === undefined ? DEFAULT_MAX_ITEM_SIZE : parseSize(argv['max-item-size'], '--max-item-size'),
      insecure: argv.insecure === true,
      stateDir: argv['state-dir'] as string | undefined,
      keepRuns: (argv['keep-runs'] as number | undefined) ?? 0,
    };
    // Loaded on use: import brings the Azure Storage client (about 25 MB) that runs need not.
    const { runImport } = await import('./import.js');
    const { summary, exitCode } = await runImport(config, logger, { stop });
    process.stdout.write((json ? JSON.stringify(summary) : formatSummary(summary)) + '\n');
    return exitCode;
  });
}

/**
 * Logs human-readable on a terminal, JSON lines with --json or off a terminal (cron, log
 * collectors); SIGINT/SIGTERM abort `stop`, so no further item is read and those in flight finish.
 */
async function withLoggerAndSignals(
  options: { level: string; json: boolean; file?: string },
  body: (logger: Logger, stop: AbortSignal) => Promise<number>,
): Promise<number> {
  const logger = createLogger({ level: options.level, json: options.json || !process.stderr.isTTY, file: options.file });
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (stop.signal.aborted) return;
    logger.warn(`${signal}: stopping after the items in flight; run again to finish`);
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // With a log file SIGHUP means "reopen it" (logrotate); without one it keeps its usual meaning.
  const onHangup = () => {
    reopenLogFile(logger, options.file!);
    logger.info(`SIGHUP: log file ${options.file} reopened`);
  };
  if (options.file) process.on('SIGHUP', onHangup);
  try {
    return await body(logger, stop.signal);
  } catch (err) {
    report(logger, err);
    return exitCodeOf(err);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onHangup);
    await flushLogger(logger);
  }
}

function exitCodeOf(err: unknown): number {
  if (!(err instanceof PivotArchiveError) || err.code === ErrorCode.INTERNAL) return ExitCode.INTERNAL;
  return err.code === ErrorCode.LOCKED ? ExitCode.LOCKED : ExitCode.SETUP_FAILED;
}

function report(logger: Logger | undefined, err: unknown): void {
  const code = err instanceof PivotArchiveError ? `${err.code}: ` : '';
  const text = `${code}${errorMessage(err)}`;
  if (logger) logger.error(text);
  else process.stderr.write(`pivot-archive: ${text}\n`);
  if (!(err instanceof PivotArchiveError) && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
}

/** The command-line interface; resolves to the process exit code (never calls process.exit). */
export async function main(args: string[] = hideBin(process.argv)): Promise<number> {
  let exitCode: number = ExitCode.OK;
  const parser = yargs(args)
    .scriptName('pivot-archive')
    .usage('$0 <command> [options]\n\nArchive Pivot chat export archives into mailboxes.')
    .command(
      'run [archive]',
      'Deliver one Pivot export archive (a path, or - for stdin) to a sink',
      (y) =>
        y
          .positional('archive', { type: 'string', describe: 'export archive (.zip), or - to read it from stdin' })
          .option('sample', { type: 'boolean', describe: 'use the built-in sample archive instead' })
          .option('sink', { type: 'string', describe: 'where to deliver: maildir:DIR[?folder=.INBOX.Pivot&concurrency=256&links=1], imap://ADMIN@HOST[:PORT]/?folder=INBOX/Pivot (password in PIVOT_IMAP_PASSWORD) or azblob://CONTAINER[/PREFIX] (credentials in AZURE_STORAGE_CONNECTION_STRING)' })
          .option('status-log', { type: 'string', describe: 'append one JSON line per outcome and a final summary to FILE' })
          .option('plugin', { type: 'string', array: true, describe: 'transform plugin: a path or a package name (repeatable)' })
          .option('config', { type: 'string', describe: 'JSON config file (or PIVOT_ARCHIVE_CONFIG); flags override it' })
          .options(STATE_OPTIONS)
          .option('inbox', { type: 'string', describe: 'drop folder: every settled .zip not completed yet, oldest first (needs --state-dir)' })
          .option('keep', { type: 'boolean', describe: 'with --inbox: leave completed archives in place (else they move to done/)' })
          .option('settle', { type: 'number', describe: 'with --inbox: seconds an archive must be unmodified before it is read [default: 60]' })
          .option('max-item-size', { type: 'string', describe: 'largest message delivered (default 10MiB); larger items are kept in --rejects' })
          .option('max-event-size', { type: 'string', describe: 'largest event (its JSON) held in memory (default 64MiB); larger events are rejected and their bytes streamed to --rejects' })
          .option('max-rejected', { type: 'string', describe: 'share of the items that may be rejected before the run exits 5, e.g. 10% (default), 100% to never alarm' })
          .option('rejects', { type: 'string', describe: 'folder for rejected items (event JSON and attachments) [default: ./pivot-rejects]' })
          .option('domain', { type: 'string', array: true, describe: "organisation's mail domain; only its mailboxes are targets (repeatable; a maildir sink needs it, or --all-domains)" })
          .option('all-domains', { type: 'boolean', describe: 'deliver to participants of every domain, other firms\' traders included (a maildir sink then creates their mailboxes)' })
          .option('user-map', { type: 'string', describe: 'CSV of "pivot email or user id,mailbox" that overrides the Email property' })
          .option('default-mailbox', { type: 'string', describe: 'mailbox for items that have no target (else they are rejected as unmapped)' })
          .option('quiet', { type: 'boolean', describe: 'no progress bar (TTY) and no progress lines (off a TTY)' })
          .options(LOG_AND_SINK_OPTIONS)
          .example('$0 run pivot-acme-2026-11-23.zip --sink maildir:/srv/mail --status-log run.jsonl', '')
          .example('cat export.zip | $0 run - --sink maildir:/srv/mail', '')
          .example('$0 run --sample --sink maildir:./out', '')
          .epilog(EXAMPLES),
      async (argv) => {
        exitCode = await runCommand(argv as Record<string, unknown>, args);
      },
    )
    .command(
      'sample',
      'Write a synthetic Pivot export archive, for demos and benchmarks',
      (y) =>
        y
          .option('out', { type: 'string', demandOption: true, describe: 'path of the .zip to write' })
          .option('events', { type: 'number', default: 1000, describe: 'number of chat events' })
          .option('seed', { type: 'number', default: 1, describe: 'the same seed makes the same archive' })
          .option('files', { type: 'number', describe: 'number of messages/*.json files' })
          .option('edge-cases', { type: 'boolean', default: true, describe: 'add bad, oversize and hostile items' }),
      async (argv) => {
        if (!Number.isInteger(argv.events) || argv.events < 0) throw new PivotArchiveError(ErrorCode.USAGE, '--events must be a whole number');
        const { generateSample } = await import('./sample/generate.js');
        const info = await generateSample(argv.out, { events: argv.events, seed: argv.seed, messageFiles: argv.files, edgeCases: argv['edge-cases'] });
        process.stdout.write(`${info.path}: export ${info.exportId}, ${info.events} events\n`);
      },
    )
    .command(
      'import',
      'Deliver staged batches (written by --sink azblob://...) into a mailbox sink; marks what it imported',
      (y) =>
        y
          .option('from', { type: 'string', demandOption: true, describe: 'staging: azblob://CONTAINER[/PREFIX] (credentials in AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_URL with a SAS)' })
          .option('sink', { type: 'string', demandOption: true, describe: 'where to deliver: maildir:DIR or imap://ADMIN@HOST/...' })
          .option('export', { type: 'string', describe: 'only the batches of this export id [default: every batch not imported yet]' })
          .option('again', { type: 'boolean', describe: 'read batches already marked as imported into this sink too (still nothing twice)' })
          .option('status-log', { type: 'string', describe: 'append one JSON line per outcome and per batch, and a summary, to FILE' })
          .option('max-item-size', { type: 'string', describe: 'largest staged message accepted (default 10MiB)' })
          .options(STATE_OPTIONS)
          .options(LOG_AND_SINK_OPTIONS)
          .example("$0 import --from 'azblob://pivot-staging/acme' --sink maildir:/srv/mail", '')
          .epilog(EXAMPLES),
      async (argv) => {
        exitCode = await importCommand(argv as Record<string, unknown>);
      },
    )
    .command(
      'status',
      'Show the last runs recorded in a state dir: counters and what failed',
      (y) =>
        y
          .option('state-dir', { type: 'string', demandOption: true, describe: 'the state dir given to run or import' })
          .option('last', { type: 'number', default: 10, describe: 'how many runs, newest first' })
          .option('json', { type: 'boolean', describe: 'one JSON object per run' }),
      async (argv) => {
        process.stdout.write(await formatStatus(new StateDir(argv['state-dir']), argv.last, argv.json ?? false));
      },
    )
    .command(
      'cron',
      'Print a crontab line that runs the rest of the command line every night',
      (y) =>
        y
          .option('print', { type: 'boolean', demandOption: true, describe: 'print the line (nothing is installed)' })
          .option('at', { type: 'string', default: '02:30', describe: 'time of day, HH:MM, in the cron daemon\'s time zone' })
          .usage('$0 cron --print --at 02:30 -- run --inbox /srv/pivot/incoming --sink maildir:/srv/mail'),
      (argv) => {
        process.stdout.write(crontabLine(String(argv.at), (argv['--'] as string[] | undefined) ?? [], process.cwd()) + '\n');
      },
    )
    .demandCommand(1, 'Name a command: run, import, sample, status or cron.')
    .parserConfiguration({ 'populate--': true })
    .strict()
    .epilog(EXAMPLES)
    .help()
    .version()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((message, err) => {
      throw err ?? new PivotArchiveError(ErrorCode.USAGE, message);
    });
  try {
    await parser.parseAsync();
  } catch (err) {
    report(undefined, err);
    if (!(err instanceof PivotArchiveError) || err.code === ErrorCode.USAGE) process.stderr.write('Run pivot-archive --help for usage.\n');
    return exitCodeOf(err);
  }
  return exitCode;
}


