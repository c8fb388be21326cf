import { graphOptions } from '../sinks/graph/options.js';
import { imapOptions } from '../sinks/imap/options.js';
import { maildirOptions } from '../sinks/maildir/options.js';
import { type Command, type OptionSpec, type ValueTypes } from './spec.js';

/** A day at most: far under setTimeout's limit (about 24.8 days), past which it would fire at once. */
const PLUGIN_TIMEOUT_RANGE = { min: 1, max: 86400 };
/** A day at most: an archive copied in takes minutes; one left unmodified for longer is there to be read. */
const SETTLE_RANGE = { min: 0, max: 86400 };

/**
 * Every option of `run` and `import`, declared once. The yargs options and their help, the
 * config-file keys and their validation, the defaults and the RunConfig/ImportConfig types are
 * all derived from this table.
 */
export const OPTIONS = [
  { key: 'archive', flag: 'archive', type: 'string', positional: true, commands: ['run'], describe: 'export archive (.zip), or - to read it from stdin' },
  { key: 'sample', flag: 'sample', type: 'boolean', default: false, commands: ['run'], describe: 'use the built-in sample archive instead' },
  {
    key: 'from',
    flag: 'from',
    type: 'string',
    required: { what: 'staging', example: 'azblob://CONTAINER[/PREFIX]' },
    commands: ['import'],
    describe: 'staging: azblob://CONTAINER[/PREFIX] (credentials in AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_URL with a SAS)',
  },
  {
    key: 'sink',
    flag: 'sink',
    type: 'string',
    required: { what: 'sink', example: 'maildir:DIR' },
    commands: ['run', 'import'],
    describe: {
      // The defaults shown are the sinks' own (their option tables), never copies that drift.
      run: `where to deliver: maildir:DIR[?folder=${maildirOptions.folder.default}&concurrency=${maildirOptions.concurrency.default}&links=${maildirOptions.links.default}], imap://ADMIN@HOST[:PORT]/?folder=${imapOptions.folder.default} (password in ${imapOptions.passwordEnv.default}), imap://outlook.office365.com/?auth=xoauth2&tenant=TENANT&clientId=APP_ID (Microsoft 365; secret in ${imapOptions.secretEnv.default}), graph://TENANT/?clientId=APP_ID&folder=${graphOptions.folder.default} (Microsoft 365; secret in ${graphOptions.secretEnv.default}) or azblob://CONTAINER[/PREFIX] (credentials in AZURE_STORAGE_CONNECTION_STRING); every sink option: see the end of run --help`,
      import: 'where to deliver: maildir:DIR or imap://ADMIN@HOST/...',
    },
  },
  { key: 'exportId', flag: 'export', type: 'string', commands: ['import'], describe: 'only the batches of this export id [default: every batch not imported yet]' },
  { key: 'again', flag: 'again', type: 'boolean', default: false, commands: ['import'], describe: 'read batches already marked as imported into this sink too (still nothing twice)' },
  {
    key: 'statusLog',
    flag: 'status-log',
    type: 'string',
    commands: ['run', 'import'],
    describe: {
      run: 'append one JSON line per outcome and a final summary to FILE',
      import: 'append one JSON line per outcome and per batch, and a summary, to FILE',
    },
  },
  { key: 'plugins', flag: 'plugin', type: 'strings', default: [], commands: ['run'], describe: 'transform plugin: a path or a package name (repeatable)' },
  {
    key: 'pluginTimeout',
    flag: 'plugin-timeout',
    type: 'seconds',
    // A plugin that calls a service waits seconds at worst; one that never settles must not hold the run, or its stop, for ever.
    default: 60,
    range: PLUGIN_TIMEOUT_RANGE,
    env: 'PIVOT_ARCHIVE_PLUGIN_TIMEOUT',
    commands: ['run'],
    describe: `seconds a plugin may take on one item (${PLUGIN_TIMEOUT_RANGE.min} to ${PLUGIN_TIMEOUT_RANGE.max}); an item it has not finished by then is rejected as plugin:NAME and kept in --rejects; a plugin that has not loaded by then stops the run (E_PLUGIN_LOAD)`,
  },
  {
    key: 'config',
    flag: 'config',
    type: 'string',
    env: 'PIVOT_ARCHIVE_CONFIG',
    flagOnly: true,
    commands: ['run', 'import'],
    describe: 'JSON config file: the options below as camelCase keys (e.g. "maxItemSize"); flags override it',
  },
  { key: 'stateDir', flag: 'state-dir', type: 'string', commands: ['run', 'import'], describe: 'lock (one run at a time) and history of runs, for scheduled runs' },
  {
    key: 'signingKey',
    flag: 'signing-key',
    type: 'string',
    env: 'PIVOT_ARCHIVE_SIGNING_KEY',
    commands: ['run', 'import'],
    describe: {
      run: "Ed25519 key file (see keygen) that signs each run's checkpoint in the --state-dir ledger, and a staging run's index (azblob://; an import checks it with --public-key)",
      import: "Ed25519 key file (see keygen) that signs each run's checkpoint in the --state-dir ledger",
    },
  },
  {
    key: 'publicKey',
    flag: 'public-key',
    type: 'string',
    env: 'PIVOT_ARCHIVE_PUBLIC_KEY',
    commands: ['import'],
    describe: "verifier key (keygen's .pub file, or its text) of the staging runs' --signing-key: only staging indexes it signed are trusted, any other fails the import, and an export folder without one is refused",
  },
  { key: 'keepRuns', flag: 'keep-runs', type: 'count', default: 0, commands: ['run', 'import'], describe: 'runs kept under --state-dir, the oldest removed first (0: for ever)' },
  {
    key: 'shard',
    flag: 'shard',
    type: 'shard',
    env: 'PIVOT_ARCHIVE_SHARD',
    commands: ['run', 'import'],
    describe:
      "K/N: deliver only the mailboxes whose hash falls in shard K of N (1/N..N/N), so N hosts or pods together deliver everything once; each shard needs its own --state-dir; shard 1 alone keeps rejected items (Kubernetes' 0-based JOB_COMPLETION_INDEX is shard INDEX+1)",
  },
  { key: 'inbox', flag: 'inbox', type: 'string', commands: ['run'], describe: 'drop folder: every settled .zip not completed yet, oldest first (needs --state-dir)' },
  { key: 'keep', flag: 'keep', type: 'boolean', default: false, commands: ['run'], describe: 'with --inbox: leave completed archives in place (else they move to done/; always with --shard: the other shards still read them)' },
  {
    key: 'settleSeconds',
    flag: 'settle',
    type: 'seconds',
    default: 60,
    range: SETTLE_RANGE,
    commands: ['run'],
    describe: `with --inbox: seconds an archive must be unmodified before it is read (${SETTLE_RANGE.min} to ${SETTLE_RANGE.max})`,
  },
  {
    key: 'maxItemSize',
    flag: 'max-item-size',
    type: 'size',
    default: '10MiB',
    commands: ['run', 'import'],
    describe: {
      run: 'largest message delivered (a size: see below); larger items are kept in --rejects',
      import: 'largest staged message accepted (a size: see below)',
    },
  },
  {
    key: 'maxEventSize',
    flag: 'max-event-size',
    type: 'size',
    // Far under V8's longest string (about 512 MiB), far over any chat event with its text.
    default: '64MiB',
    commands: ['run'],
    describe: 'largest event (its JSON) held in memory (a size: see below); larger events are rejected and their bytes streamed to --rejects',
  },
  {
    key: 'maxZipRatio',
    flag: 'max-zip-ratio',
    type: 'count',
    // Chat JSON deflates about 5-20:1; deflate cannot pass about 1032:1, which zero-filled bombs approach.
    default: 200,
    commands: ['run'],
    describe: 'largest uncompressed/compressed ratio of an archive entry over 1 MiB before the archive is refused as a zip bomb (0 for no limit: for a day with one huge repetitive message or attachment)',
  },
  {
    key: 'maxRejected',
    flag: 'max-rejected',
    type: 'share',
    // A mapping mistake (a typo in --domain, a wrong user map) rejects most items as `unmapped`;
    // a normal day rejects a few oversize or bad items, well under this.
    default: '10%',
    commands: ['run'],
    describe: 'share of the items that may be rejected before the run exits 5 (a percentage such as 10%, or a fraction below 1 such as 0.1); 100% to never alarm',
  },
  { key: 'rejects', flag: 'rejects', type: 'string', default: './pivot-rejects', commands: ['run'], describe: 'folder for rejected items (event JSON and attachments)' },
  {
    key: 'domains',
    flag: 'domain',
    type: 'strings',
    default: [],
    commands: ['run'],
    describe: "organisation's mail domain; only its mailboxes are targets (repeatable; a maildir sink needs it, or --all-domains)",
  },
  {
    key: 'allDomains',
    flag: 'all-domains',
    type: 'boolean',
    default: false,
    commands: ['run'],
    describe: "deliver to participants of every domain, other firms' traders included (a maildir sink then creates their mailboxes)",
  },
  { key: 'userMap', flag: 'user-map', type: 'string', commands: ['run'], describe: 'CSV of "pivot email or user id,mailbox" that overrides the Email property' },
  { key: 'defaultMailbox', flag: 'default-mailbox', type: 'string', commands: ['run'], describe: 'mailbox for items that have no target (else they are rejected as unmapped)' },
  {
    key: 'dryRun',
    flag: 'dry-run',
    type: 'boolean',
    default: false,
    commands: ['run'],
    describe:
      'read and check everything and fan out, then print the summary and how many items each mailbox would receive; delivers nothing, keeps no rejects and writes nothing to --state-dir or --status-log (with --inbox: reads every settled archive, moves none)',
  },
  { key: 'quiet', flag: 'quiet', type: 'boolean', default: false, commands: ['run', 'import'], describe: 'no progress bar (TTY) and no progress lines (off a TTY)' },
  { key: 'logLevel', flag: 'log-level', type: 'choice', choices: ['error', 'warn', 'info', 'verbose', 'debug'], default: 'info', commands: ['run', 'import'], describe: 'log level' },
  { key: 'logFile', flag: 'log-file', type: 'string', commands: ['run', 'import'], describe: 'also write the log to FILE as JSON lines (appended; SIGHUP reopens it, for logrotate)' },
  { key: 'insecure', flag: 'insecure', type: 'boolean', default: false, commands: ['run', 'import'], describe: 'allow IMAP without TLS, or Graph and its login host over http, to a host that is not loopback' },
  {
    key: 'json',
    flag: 'json',
    type: 'boolean',
    default: false,
    commands: ['run', 'import'],
    describe: 'JSON log lines on stderr (the default off a terminal) and a JSON summary on stdout',
  },
] as const satisfies readonly OptionSpec[];

type Option = (typeof OPTIONS)[number];
/** The options of a command that are part of its config (not `--config`, which names the file). */
type ConfigOption<C extends Command> = Option extends infer O ? (O extends { commands: readonly (infer Cs)[]; flagOnly?: undefined } ? (C extends Cs ? O : never) : never) : never;
/** An option always has a value once defaults, file and flags are merged: it has a default or is required. */
type Always<O> = O extends { default: unknown } | { required: unknown } ? O : never;
type ConfigOf<C extends Command> = { [O in Always<ConfigOption<C>> as O['key']]: ValueTypes[O['type']] } & {
  [O in Exclude<ConfigOption<C>, Always<ConfigOption<C>>> as O['key']]?: ValueTypes[O['type']];
};
type Flat<T> = { [K in keyof T]: T[K] };

/** Everything a run can be told, by flags or by the config file (the table's keys). */
export interface RunConfig extends Flat<ConfigOf<'run'>> {}
/** Everything an import can be told, by flags or by the config file (the table's keys). */
export interface ImportConfig extends Flat<ConfigOf<'import'>> {}
export type ConfigFor<C extends Command> = C extends 'run' ? RunConfig : ImportConfig;

/** The options of `command`, in table order. */
export function optionsOf(command: Command): readonly OptionSpec[] {
  return OPTIONS.filter((o: OptionSpec) => o.commands.includes(command));
}
