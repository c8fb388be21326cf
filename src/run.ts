import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import type { RunConfig } from './options/index.js';
import { ErrorCode, PivotArchiveError } from './errors.js';
import { DryRunRejects, DryRunSink, targetSink } from './dry-run.js';
import { settledEveryItem } from './exit-policy.js';
import { checkAddress } from './formats/address/index.js';
import { RejectsFolder } from './formats/rejects/index.js';
import { sha256Hex } from './hash.js';
import { runJob, type InputIdentity, type JobContext, type JobOptions, type JobResult } from './job.js';
import type { Logger } from './logger.js';
import { positionText } from './model.js';
import type { FoldersToLook, Sink } from './sinks/sink.js';
import { PivotExportArchive } from './sources/pivot-zip/index.js';
import { PivotZipSource } from './sources/pivot-zip/source.js';
import { spoolToTempFile } from './sources/pivot-zip/spool.js';
import { Checkpoint, resumesNothing } from './state/checkpoint.js';
import { parseDomain, readUserMap, userMapUnmatched, type FanOutConfig } from './transforms/fan-out/index.js';
import { PluginRegistry, isPluginPath, loadPlugin } from './transforms/plugins/index.js';
import { formatShard } from './transforms/shard/index.js';

export const SAMPLE_EVENTS = 1000;
/** How the summary names the built-in sample (its temporary file is gone by then). */
export const SAMPLE_ARCHIVE_NAME = '(built-in sample)';

export interface RunOptions extends JobOptions {
  stdin?: NodeJS.ReadableStream;
}

export interface RunResult extends JobResult {
  /** A dry run's items per mailbox, as its sink counted them (sorted by mailbox). */
  mailboxes?: Record<string, number>;
}

/**
 * One run of an export archive: everything is checked (sink spec, plugins, user map, archive)
 * before the first delivery; then the chain runs from the archive and the summary says whether
 * every item is accounted for. A killed run resumes from the state dir's checkpoint.
 */
export async function run(config: RunConfig, logger: Logger, options: RunOptions = {}): Promise<RunResult> {
  const cwd = options.cwd ?? process.cwd();
  const name = config.sample ? SAMPLE_ARCHIVE_NAME : config.archive === '-' ? '-' : resolve(cwd, config.archive ?? '');
  const input: InputIdentity = { archive: config.sample ? SAMPLE_ARCHIVE_NAME : (config.archive ?? '') };
  // A file given by path is known from the start: a failure before it is opened (a state dir that cannot be used) records its size and sha256 too.
  if (!config.sample && config.archive !== undefined && config.archive !== '-') input.path = name;
  let dryRun: DryRunSink | undefined;
  const outcomeOptions = runOutcomeOptions(config, cwd);
  const result = await runJob(config, logger, options, {
    command: 'run',
    input: () => input,
    outcomeOptions,
    async open({ sink, statusLog, state, cleanup }) {
      if (sink instanceof DryRunSink) dryRun = sink;
      const target = targetSink(sink);
      const fanOut = await checkRunConfig(config, target, cwd);
      const plugins = new PluginRegistry(config.pluginTimeout);
      // What each plugin is (its name, version, and a file's content): a plugin fixed in place must not resume what the old one settled.
      const pluginContent: string[] = [];
      for (const specifier of config.plugins) {
        const plugin = plugins.register(await loadPlugin(specifier, cwd, { timeLimitSeconds: config.pluginTimeout, stop: options.stop }), specifier);
        const label = `${plugin.name}${plugin.version ? `@${plugin.version}` : ''}`;
        logger.info(`plugin ${label} registered`);
        pluginContent.push(`${label} ${await pluginFileHash(specifier, cwd)}`);
      }
      input.path = await archivePath(config, cwd, options.stdin, cleanup, logger);
      const archive = await PivotExportArchive.open({ path: input.path, label: config.archive === '-' ? 'stdin' : input.path, maxEventBytes: config.maxEventSize, maxZipRatio: config.maxZipRatio });
      cleanup(() => archive.close());
      Object.assign(input, { sha256: archive.sha256, size: archive.size });
      logger.info(`export ${archive.exportId} (tenant ${archive.tenant}): ${archive.eventCount} events in ${archive.messageFiles.length} messages file(s), sha256 ${archive.sha256}`);
      if (config.userMap) logger.info(userMapReport(config.userMap, fanOut.userMap, userMapUnmatched(fanOut.userMap, archive.users.values(), [...archive.conversations.values()].flatMap((c) => c.members))));
      // Resumed only under the options that made it: another --domain (a typo fixed) must see the items rejected under the old one,
      // and another sink (a typo in its path fixed) must get the items the old one got.
      const wholeExport = target.readsWholeExport === true;
      // The user map by its content, not its path: a map corrected in place must not resume what the old one settled.
      const userMapContent = config.userMap ? sha256Hex(JSON.stringify([...fanOut.userMap].sort())) : null;
      // The folders the checkpoint's runs wrote to go to the sink, which looks at them too: one deleted between the runs is found.
      const folders = { resume: (f: FoldersToLook) => target.resumeFolders?.(f) ?? false, current: () => target.foldersToLook?.() };
      // The shard too: another shard's checkpoint (its state dir's shard file lost) skips items this shard never delivered.
      const shard = config.shard ? formatShard(config.shard) : null;
      const checkpoint = state ? await Checkpoint.load(state.dir, archive, statusLog, { sink: target.description, maxItemSize: config.maxItemSize, ...outcomeOptions, userMapContent, pluginContent, shard }, !wholeExport, folders) : undefined;
      if (state && wholeExport) logger.info(`${target.kind} sink: its index names every item of the export, so ${archive.exportId} is read from the start (what is there already is skipped)`);
      if (checkpoint?.discarded) logger.info(`an earlier run's checkpoint of ${archive.exportId} ${checkpoint.discarded}: read from the start (what the sink holds is skipped)`);
      if (checkpoint?.resumeAt && resumesNothing(checkpoint.resumeAt)) logger.info(`${archive.exportId} is read from the start; the folders an earlier run could not confirm in place at its end are looked at again`);
      else if (checkpoint?.resumeAt) logger.info(`resuming ${archive.exportId} from an earlier run's checkpoint (${positionText(checkpoint.resumeAt)})`);
      return {
        source: new PivotZipSource(archive, name, checkpoint),
        started: { exportId: archive.exportId, tenant: archive.tenant, eventsInArchive: archive.eventCount },
        plugins,
        fanOut,
        maxRejected: config.maxRejected,
        checkpoint,
        rejects: new (config.dryRun ? DryRunRejects : RejectsFolder)(resolve(cwd, config.rejects)),
        finish: async (s) => checkpoint?.finish(settledEveryItem(s), s.storageLost === true || s.lookStopped === true, s.mailboxesLost),
      };
    },
  });
  return dryRun ? { ...result, mailboxes: dryRun.mailboxes() } : result;
}

/** The options of a run that decide its items' outcomes (with those of every job, its start record's and its checkpoint's). */
export function runOutcomeOptions(config: RunConfig, cwd: string): Record<string, unknown> {
  return {
    domains: config.domains,
    allDomains: config.allDomains,
    userMap: config.userMap ?? null,
    defaultMailbox: config.defaultMailbox ?? null,
    plugins: config.plugins,
    maxEventSize: config.maxEventSize,
    rejects: resolve(cwd, config.rejects),
  };
}

/** The sha256 of a plugin given as a file (a package is named by its version alone), or '' when it cannot be read. */
async function pluginFileHash(specifier: string, cwd: string): Promise<string> {
  if (!isPluginPath(specifier)) return '';
  return readFile(resolve(cwd, specifier)).then(sha256Hex, () => '');
}

/** Keys shown of those that name no user of the export. */
const UNMATCHED_SHOWN = 5;

/** How much of the user map this export's users.json uses: a key that names nobody is a typo, or a user not in this day's export. */
function userMapReport(path: string, userMap: ReadonlyMap<string, string>, unmatched: string[]): string {
  const shown = unmatched.slice(0, UNMATCHED_SHOWN).map((k) => JSON.stringify(k)).join(', ');
  return `user map ${path}: ${userMap.size - unmatched.length} of ${userMap.size} entries name a user of this export${unmatched.length > 0 ? `; ${unmatched.length} name none (${shown}${unmatched.length > UNMATCHED_SHOWN ? ', ...' : ''}): a typo, or a user not in this export` : ''}`;
}

/** The archive file to read: the given path, stdin spooled to a file, or the built-in sample written to one. */
async function archivePath(config: RunConfig, cwd: string, stdin: NodeJS.ReadableStream | undefined, cleanup: JobContext['cleanup'], logger: Logger): Promise<string> {
  if (config.sample) {
    const dir = await mkdtemp(join(tmpdir(), 'pivot-archive-sample-'));
    cleanup(() => rm(dir, { recursive: true, force: true }));
    // archiver (the sample's zip writer) is loaded only for the sample.
    const { generateSample } = await import('./sample/generate.js');
    const path = (await generateSample(join(dir, 'pivot-sample.zip'), { events: SAMPLE_EVENTS })).path;
    logger.info(`built-in sample: ${SAMPLE_EVENTS} chat events plus edge cases`);
    return path;
  }
  if (config.archive === '-') {
    const spooled = await spoolToTempFile((stdin ?? process.stdin) as Readable);
    cleanup(spooled.remove);
    return spooled.path;
  }
  return resolve(cwd, config.archive!);
}

/** Checks what the run's options say before anything is read; returns the fan-out settings. */
async function checkRunConfig(config: RunConfig, sink: Sink, cwd: string): Promise<FanOutConfig> {
  const defaultMailbox = config.defaultMailbox === undefined ? undefined : checkAddress(config.defaultMailbox);
  if (defaultMailbox && !defaultMailbox.ok) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `--default-mailbox ${JSON.stringify(config.defaultMailbox)} is not an email address: ${defaultMailbox.reason}`);
  }
  // Staging is the boundary between the export host and the importers: it holds the whole export, importers shard.
  if (config.shard && sink.kind === 'azblob') {
    throw new PivotArchiveError(ErrorCode.USAGE, '--shard with an azblob:// sink: stage the whole export from one host (run --sink azblob://...), and shard the importers (import --from azblob://... --shard K/N)');
  }
  return {
    domains: config.domains.map(parseDomain),
    userMap: config.userMap ? await readUserMap(resolve(cwd, config.userMap)) : new Map(),
    defaultMailbox: defaultMailbox?.ok ? defaultMailbox.address.mailbox : undefined,
  };
}
