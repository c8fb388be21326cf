import { ErrorCode, PivotArchiveError, errorMessage } from './errors.js';
import { readVerifierKey } from './ledger/index.js';
import { openSignedText } from './formats/signed-note/index.js';
import { runJob, type JobOptions, type JobResult } from './job.js';
import type { Logger } from './logger.js';
import type { ImportConfig } from './options/index.js';
import { importMarkerKey, openStagedBatches } from './sources/staged-batches/index.js';
import { StagedBatchSource } from './sources/staged-batches/source.js';
import { PluginRegistry } from './transforms/plugins/index.js';
import { formatShard } from './transforms/shard/index.js';

/**
 * `import --from`: the staged batches not yet imported into the sink go through the chain
 * (their messages are built already: each is checked against the manifest's sha256 and
 * delivered); a batch wholly delivered is marked, so the next import starts after it.
 */
export async function runImport(config: ImportConfig, logger: Logger, options: JobOptions & { env?: NodeJS.ProcessEnv } = {}): Promise<JobResult> {
  return runJob(config, logger, options, {
    command: 'import',
    input: () => ({ archive: config.from }),
    outcomeOptions: { exportId: config.exportId ?? null, again: config.again },
    async open({ sink, statusLog }) {
      if (sink.kind === 'azblob') throw new PivotArchiveError(ErrorCode.USAGE, 'import delivers into a mailbox sink (maildir:DIR or imap://...), not back into staging');
      const key = config.publicKey === undefined ? undefined : await readVerifierKey(config.publicKey).catch((err: unknown) => {
        throw err instanceof PivotArchiveError ? err : new PivotArchiveError(ErrorCode.CONFIG, `--public-key ${config.publicKey} cannot be read: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
      });
      const staged = openStagedBatches(config.from, options.env, key && ((note) => openSignedText(note, key).signature));
      // Nothing staged where it looks (a typo in --from or --export) is a usage error, found here before the import starts, as the
      // others are: the job records it (a start and a failure record, in the state dir's run log and ledger too), no summary.
      await staged.checkSomethingStaged(config.exportId);
      logger.info(`importing from ${staged.description}${config.exportId ? ` (export ${config.exportId})` : ''} into ${sink.description}`);
      const source = new StagedBatchSource(staged, {
        // A shard marks the batches it imported for its part only: every shard reads every batch.
        markerKey: importMarkerKey(config.shard ? `${sink.description}#shard=${formatShard(config.shard)}` : sink.description),
        sinkDescription: sink.description,
        exportId: config.exportId,
        again: config.again,
        maxItemSize: config.maxItemSize,
        statusLog,
        logger,
      });
      // Staged messages were checked, transformed and routed when they were staged.
      return { source, started: { from: staged.description, exportId: config.exportId ?? null }, plugins: new PluginRegistry(), fanOut: { domains: [], userMap: new Map() }, maxRejected: 1 };
    },
  });
}
