import { Readable } from 'node:stream';
import { ErrorCode, FailReason, PivotArchiveError, errorMessage } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { EventPosition } from '../../model.js';
import type { Unit } from '../../pipeline/unit.js';
import type { StatusLog } from '../../status-log.js';
import type { Source, SourceSummary } from '../source.js';
import { exportOfBatch } from '../../formats/staged-batch/location.js';
import type { StagedBatches, StagedListing } from './index.js';

interface BatchAccount {
  name: string;
  items: number;
  settled: number;
  failed: number;
  /** Why the batch fails as a whole (it does not hold what staging recorded), if it does. */
  problem?: string;
}

/**
 * Staged batches as the chain's source: one `delivery` unit per staged message (already built
 * for its mailbox), a `failed` unit for one that fails its check. Unit positions are
 * (batch number in this import, message number in the batch). A batch is marked imported once
 * every message of it settled and none failed; a batch that cannot be read is recorded failed.
 */
export class StagedBatchSource implements Source {
  readonly kind = 'staged-batches';
  readonly notes = [];
  exhausted = false;
  private readonly batches: BatchAccount[] = [];
  private messagesRead = 0;
  private itemsStaged = 0;
  private batchesImported = 0;
  private batchesFailed = 0;
  /** Of `batchesFailed`, the batches refused because no finished staging run vouches for them (`StagedListing.outside`). */
  private batchesRefused = 0;
  /**
   * Messages staging recorded in batches that failed as a whole, that no `failed` outcome stands
   * for (a batch gone or unreadable, entries missing from its manifest): not imported, and known
   * by count only.
   */
  private itemsStagedNotRead = 0;
  private readonly listing: StagedListing = { folders: 0, gone: [], goneImported: [], outside: new Map(), outsideMarked: [], unfinished: [], indexGone: [], indexed: new Map(), marked: new Set(), passedOver: 0, contents: new Map(), unindexed: [], untrusted: [], unreadableIndexes: [], withoutTrustedIndex: [] };
  /** Batches wholly delivered by this import. */
  private readonly importedNow = new Set<string>();

  constructor(
    private readonly staged: StagedBatches,
    private readonly options: {
      markerKey: string;
      sinkDescription: string;
      exportId?: string;
      again: boolean;
      maxItemSize: number;
      statusLog: StatusLog;
      logger: Logger;
    },
  ) {}

  read(stop?: AbortSignal): Readable {
    return Readable.from(this.units(stop), { objectMode: true, highWaterMark: 16 });
  }

  private async *units(stop?: AbortSignal): AsyncGenerator<Unit> {
    const { staged, options } = this;
    const { gone } = this.listing;
    for await (const name of staged.pending(options.markerKey, { exportId: options.exportId, again: options.again }, this.listing)) {
      // A batch is read whole or not at all: a signal stops between batches.
      if (stop?.aborted) return;
      let batch: Awaited<ReturnType<StagedBatches['read']>>;
      const recorded = this.listing.contents.get(name);
      try {
        batch = await staged.read(name, options.maxItemSize, recorded);
      } catch (err) {
        this.batchesFailed++;
        if (this.listing.outside.has(name)) this.batchesRefused++;
        this.itemsStagedNotRead += recorded?.items ?? 0;
        const items = recorded ? ` (${recorded.items} message(s) by the staging index)` : '';
        options.logger.error(`staged batch ${name}${items} cannot be imported: ${errorMessage(err)}`);
        await options.statusLog.write({ record: 'batch', batch: name, outcome: 'failed', ...(recorded ? { items: recorded.items } : {}), detail: errorMessage(err) });
        continue;
      }
      const file = this.batches.length;
      const account: BatchAccount = { name, items: batch.manifest.entries.length, settled: 0, failed: 0 };
      this.batches.push(account);
      this.itemsStaged += account.items;
      // A batch of another export put in this one's folder (its name kept): its messages are not this export's.
      const folderExport = exportOfBatch(name) ?? batch.manifest.exportId;
      const outside = this.listing.outside.get(name);
      if (outside) {
        // No index of its export names it: whoever made it, no staging run that finished vouches for what it holds.
        account.problem = `${outside.code}: staged batch ${name} is not imported: ${outside.why}; the whole batch fails, none of its messages is imported`;
        this.batchesRefused++;
        options.logger.error(account.problem);
      } else if (folderExport !== batch.manifest.exportId) {
        account.problem = `${ErrorCode.STAGING_INCOMPLETE}: staged batch ${name}, in the folder of export ${JSON.stringify(folderExport)}, holds messages of export ${JSON.stringify(batch.manifest.exportId)}; the whole batch fails as ${JSON.stringify(folderExport)}'s, none of its messages is imported (delete the batch, stage ${JSON.stringify(folderExport)} again, then import again)`;
        this.itemsStagedNotRead += recorded?.items ?? 0;
        options.logger.error(account.problem);
      } else if (batch.mismatch) {
        // Not what staging wrote: none of it is delivered, whatever each message's check says.
        account.problem = `${ErrorCode.STAGING_INCOMPLETE}: staged batch ${name} does not hold what the staging run recorded: ${batch.mismatch}; the whole batch fails, none of its messages is imported (delete the batch, stage the export again, then import again)`;
        this.itemsStagedNotRead += Math.max(0, (batch.recordedItems ?? 0) - account.items);
        options.logger.error(account.problem);
      }
      if (account.items === 0) await this.close(account);
      if (account.problem) {
        for (const [index, entry] of batch.manifest.entries.entries()) {
          this.messagesRead++;
          yield { kind: 'failed', position: { file, index }, exportId: folderExport, itemId: entry.itemId, conversationId: entry.conversationId, mailbox: entry.mailbox, reason: FailReason.STAGED_MISMATCH, detail: account.problem };
        }
        continue;
      }
      let index = 0;
      for await (const x of batch.entries) {
        this.messagesRead++;
        const { entry } = x;
        const position = { file, index: index++ };
        if ('problem' in x) {
          yield { kind: 'failed', position, exportId: batch.manifest.exportId, itemId: entry.itemId, conversationId: entry.conversationId, mailbox: entry.mailbox, reason: FailReason.STAGED_MISMATCH, detail: x.problem };
          continue;
        }
        const delivery = {
          mailbox: entry.mailbox,
          exportId: batch.manifest.exportId,
          position: entry.position,
          itemId: entry.itemId,
          conversationId: entry.conversationId,
          messageId: entry.messageId,
          internalDate: entry.internalDate,
          message: x.message,
          copyKey: `sha256:${entry.sha256}`,
        };
        yield { kind: 'delivery', position, delivery };
      }
    }
    // Nothing staged where the import looks is found before it starts (`checkSomethingStaged`, E_USAGE). Found here, what was
    // there then is gone since (deleted while the import began): not an empty success.
    if (this.listing.folders === 0 && this.listing.outside.size === 0) {
      throw new PivotArchiveError(
        ErrorCode.STAGING_INCOMPLETE,
        `${staged.description}${options.exportId ? ` (export ${options.exportId})` : ''}: what was staged there when this import began is gone (no staged batch, staging index, staging-run record or staging lock is left): nothing of it was imported; find out what removed it`,
      );
    }
    this.sayPassedOver();
    for (const folder of this.listing.unindexed) {
      options.logger.warn(
        `the staged batches under ${folder} have no staging index (staged by an older version, by a staging run that failed, was stopped part-way or is still running, or the index was deleted): a batch gone from there cannot be told, so the export is not reported imported whole; run its staging again to the end to index it`,
      );
    }
    // An index the staging key did not sign was passed over (the signed one before it, if any, stood for its folder): someone else wrote it.
    const { untrusted } = this.listing;
    for (const { name, why } of untrusted) {
      options.logger.error(`${ErrorCode.STAGING_UNTRUSTED}: the staging index ${name} is not trusted: ${why}; it was passed over (a writer to the container other than the staging run made it)`);
    }
    const { goneImported, unfinished, indexGone, outside, outsideMarked, marked, unreadableIndexes, withoutTrustedIndex } = this.listing;
    // An export whose staging index cannot be read: none of its batches was imported (each failed above, as refused).
    for (const { exportId, name, why } of unreadableIndexes) {
      options.logger.error(`${ErrorCode.ARCHIVE_UNREADABLE}: the staging index ${name} of export ${exportId} cannot be read: ${why}; none of the export's batches is imported, and it is not imported whole`);
    }
    // With --public-key, a folder no signed index vouches for: none of its batches was imported (each failed above, or as imported earlier, below).
    for (const { folder, why, batches } of withoutTrustedIndex) {
      options.logger.error(`${ErrorCode.STAGING_UNTRUSTED}: the export folder ${folder} has no staging index of its own signed by the --public-key key (${why}): this import imports none of its ${batches} batch(es), and the export is not imported whole; ${restageOrAcceptUnsigned(false)}`);
    }
    if (goneImported.length > 0) {
      options.logger.info(
        `${goneImported.length} staged batch${goneImported.length > 1 ? 'es' : ''} that the staging index lists ${goneImported.length > 1 ? 'are' : 'is'} gone from staging but ${goneImported.length > 1 ? 'were' : 'was'} imported into this sink before (${goneImported.length > 1 ? 'their' : 'its'} import marker is there): counted as imported (${goneImported.slice(0, 5).join(', ')}${goneImported.length > 5 ? ', ...' : ''})`,
      );
    }
    for (const { exportId, why } of unfinished) {
      options.logger.error(`${ErrorCode.STAGING_INCOMPLETE}: the staging of export ${exportId} is part-way: ${why}; batches no index of it names are not imported, and it is not imported whole`);
    }
    for (const { exportId, why } of indexGone) {
      options.logger.error(`${ErrorCode.STAGING_INCOMPLETE}: the staging index of export ${exportId} is gone: ${why}; batches no index left names are not imported, and it is not imported whole`);
    }
    // Batches a staging run listed that are gone: their messages were read by nothing, and are counted here only.
    for (const name of gone) {
      const recorded = this.listing.contents.get(name);
      this.batchesFailed++;
      this.itemsStagedNotRead += recorded?.items ?? 0;
      await options.statusLog.write({ record: 'batch', batch: name, outcome: 'failed', ...(recorded ? { items: recorded.items } : {}), detail: 'listed by the staging index, not in the container' });
    }
    // Batches no index names that an earlier import imported into this sink (a version that did not refuse them, say): not read again, failed all the same.
    for (const name of outsideMarked) {
      const { code, why } = outside.get(name)!;
      this.batchesFailed++;
      this.batchesRefused++;
      await options.statusLog.write({ record: 'batch', batch: name, outcome: 'failed', detail: `${code}: staged batch ${name} was imported into this sink by an earlier import (its import marker for this sink is there), but ${why}` });
    }
    if (gone.length > 0) {
      throw new PivotArchiveError(
        ErrorCode.STAGING_INCOMPLETE,
        `${gone.length} staged batch${gone.length > 1 ? 'es' : ''} that the staging run listed ${gone.length > 1 ? 'are' : 'is'} gone (${gone.slice(0, 5).join(', ')}${gone.length > 5 ? ', ...' : ''}): ${gone.length > 1 ? 'their' : 'its'} messages were not imported; run the staging of that export again (it stages what is missing), then import again`,
      );
    }
    if (unfinished.length > 0) {
      throw new PivotArchiveError(
        ErrorCode.STAGING_INCOMPLETE,
        `the staging of ${unfinished.length > 1 ? `${unfinished.length} exports` : `export ${unfinished[0]!.exportId}`} is part-way (${unfinished.slice(0, 5).map((u) => u.why).join('; ')}${unfinished.length > 5 ? '; ...' : ''}): batches no index names are not imported, and no export is reported imported whole by this import; run the staging of ${unfinished.length > 1 ? 'those exports' : 'that export'} again to the end (it stages what is missing and indexes it), then import again`,
      );
    }
    if (indexGone.length > 0) {
      const many = indexGone.length > 1;
      throw new PivotArchiveError(
        ErrorCode.STAGING_INCOMPLETE,
        `the staging index of ${many ? `${indexGone.length} exports` : `export ${indexGone[0]!.exportId}`} is gone (${indexGone.slice(0, 5).map((g) => g.why).join('; ')}${indexGone.length > 5 ? '; ...' : ''}): what ${many ? 'those exports hold' : 'the export holds'} cannot be told (a batch gone with it would go unseen), batches no index left names are not imported, and no export is reported imported whole by this import; run the staging of ${many ? 'those exports' : 'that export'} again to the end (it stages what is missing and indexes it), then import again`,
      );
    }
    if (unreadableIndexes.length > 0) {
      const many = unreadableIndexes.length > 1;
      throw new PivotArchiveError(
        ErrorCode.ARCHIVE_UNREADABLE,
        `the staging index of ${many ? `${unreadableIndexes.length} exports` : `export ${unreadableIndexes[0]!.exportId}`} cannot be read (${unreadableIndexes
          .slice(0, 5)
          .map((u) => `${u.name}: ${u.why}`)
          .join('; ')}${many && unreadableIndexes.length > 5 ? '; ...' : ''}): what ${many ? 'those exports hold' : 'the export holds'} cannot be told, so none of ${many ? 'their' : 'its'} batches was imported, and no export is reported imported whole by this import; the other exports' batches were imported. Find out what wrote or spoiled ${many ? 'those indexes' : 'that index'} (or bring ${many ? 'them' : 'it'} back from the Archive tier), or stage ${many ? 'those exports' : 'that export'} again, then import again`,
      );
    }
    if ([...outside.values()].some((o) => o.kind !== 'refused')) {
      // Those this sink's marker is on were imported by an earlier import (also with --again, when this one read them again).
      // Batches refused as their export's (its index cannot be read, or no signed index is its own) are told of by their folder.
      const names = [...outside].filter(([, o]) => o.kind !== 'refused' && o.kind !== 'unsigned').map(([name]) => name);
      const never = names.filter((name) => !marked.has(name));
      const earlier = names.filter((name) => marked.has(name));
      const them = (batches: string[]) => (batches.length > 1 ? 'them' : 'it');
      throw new PivotArchiveError(
        ErrorCode.STAGING_UNTRUSTED,
        [
          withoutTrustedIndex.length > 0 && foldersWithoutTrustedIndex(withoutTrustedIndex),
          never.length > 0 &&
            `${stagedOutside(never)} not imported: no staging run that finished staged ${them(never)}; find out who put ${them(never)} there and delete ${them(never)} (a staging run of the export names every batch in its folder in the index it writes, so check before staging the export again)`,
          earlier.length > 0 &&
            `${stagedOutside(earlier)} imported into this sink by an earlier import (${earlier.length > 1 ? 'their' : 'its'} import marker for this sink is there), but no staging run that finished vouches for ${them(earlier)}; check who staged ${them(earlier)} and what ${earlier.length > 1 ? 'they hold' : 'it holds'}, then stage the export again (its index then names ${them(earlier)}) or delete ${them(earlier)}`,
          'no export is reported imported whole by this import',
        ]
          .filter(Boolean)
          .join('; '),
      );
    }
    if (untrusted.length > 0) {
      throw new PivotArchiveError(
        ErrorCode.STAGING_UNTRUSTED,
        `${untrusted.length} staging index${untrusted.length > 1 ? 'es' : ''} not signed by the --public-key key (${untrusted.slice(0, 5).map((u) => u.name).join(', ')}${untrusted.length > 5 ? ', ...' : ''}) ${untrusted.length > 1 ? 'were' : 'was'} passed over: someone other than the staging run wrote to the container; no export is reported imported whole by this import`,
      );
    }
    this.exhausted = true;
  }

  /**
   * Batches passed over because this sink's import marker is on them: said, with `--again`. Loudly
   * (a warning) when they were all this import found: nothing read, nothing delivered. A repeat of an
   * import that is complete looks so, and so does an import into a sink emptied or replaced since
   * (the same description, so the same markers), whose messages are then nowhere: only `--again`
   * imports them again. Was (2026-12-02): an import into an emptied Maildir exited 0, 0 delivered, unsaid.
   */
  private sayPassedOver(): void {
    const { passedOver } = this.listing;
    if (passedOver === 0) return;
    const batches = `${passedOver} staged batch${passedOver > 1 ? 'es' : ''}`;
    const marked = `${passedOver > 1 ? 'their' : 'its'} import marker for ${this.options.sinkDescription} is in the container`;
    if (this.batches.length === 0 && this.batchesFailed === 0) {
      this.options.logger.warn(
        `nothing imported: all ${batches} found ${passedOver > 1 ? 'were' : 'was'} passed over as imported by an earlier import (${marked}). If that sink was emptied, moved or replaced since, those messages are not in it: import again with --again to re-import them (what the sink holds is skipped)`,
      );
    } else {
      this.options.logger.info(`${batches} passed over as imported by an earlier import (${marked}); --again re-imports ${passedOver > 1 ? 'them' : 'it'}`);
    }
  }

  async settled(position: EventPosition, ok: boolean): Promise<void> {
    const account = this.batches[position.file]!;
    account.settled++;
    if (!ok) account.failed++;
    if (account.settled === account.items) await this.close(account);
  }

  /** Every message of the batch settled: marked imported, or recorded failed. */
  private async close(account: BatchAccount): Promise<void> {
    const { staged, options } = this;
    if (account.failed > 0 || account.problem) {
      this.batchesFailed++;
      await options.statusLog.write({ record: 'batch', batch: account.name, outcome: 'failed', items: account.items, detail: account.problem ?? `${account.failed} message(s) failed` });
      return;
    }
    try {
      await staged.markImported(account.name, options.markerKey, { sink: options.sinkDescription, items: account.items });
    } catch (err) {
      // Not fatal: the next import reads the batch again and skips what the sink holds.
      options.logger.warn(`staged batch ${account.name} is imported but could not be marked so: ${errorMessage(err)}`);
    }
    this.batchesImported++;
    this.importedNow.add(account.name);
    await options.statusLog.write({ record: 'batch', batch: account.name, outcome: 'imported', items: account.items });
  }

  progress() {
    return { read: this.messagesRead };
  }

  /**
   * The exports every batch of whose latest staging index is now in the sink (for this shard),
   * by this import or an earlier one: what lets `status` call an import-only export complete.
   */
  private exportsImportedWhole(): string[] {
    if (!this.exhausted || this.listing.gone.length > 0) return [];
    const { indexed, marked } = this.listing;
    // With --public-key a marker is no proof (see `trustsMarkers`): every batch was read, and counts only if imported now.
    const importedEarlier = (batch: string) => this.staged.trustsMarkers && marked.has(batch);
    return [...indexed].filter(([, batches]) => batches.every((b) => importedEarlier(b) || this.importedNow.has(b))).map(([exportId]) => exportId).sort();
  }

  /**
   * The exports this import found not whole (a staging run of it part-way, the index its finished
   * staging run wrote gone, its index unreadable, a batch its index lists gone, a batch no finished staging run vouches for): `status` no longer calls them imported
   * whole on an earlier import's word.
   */
  private exportsNotWhole(): string[] {
    const { unfinished, indexGone, gone, outside, unreadableIndexes } = this.listing;
    const exports = [
      ...unfinished.map((u) => u.exportId),
      ...indexGone.map((g) => g.exportId),
      ...unreadableIndexes.map((u) => u.exportId),
      ...gone.flatMap((batch) => exportOfBatch(batch) ?? []),
      // A batch in no export's folder: no export is told by it (and none is reported imported whole by this import).
      ...[...outside].flatMap(([batch, o]) => o.exportId ?? (o.kind === 'stray' ? [] : (exportOfBatch(batch) ?? []))),
    ];
    return [...new Set(exports)].sort();
  }

  summaryFields(): SourceSummary {
    return {
      identity: { from: this.staged.description, exportId: this.options.exportId ?? null },
      counters: {
        batchesImported: this.batchesImported,
        batchesImportedEarlier: this.listing.passedOver,
        batchesFailed: this.batchesFailed,
        itemsStaged: this.itemsStaged,
        itemsStagedNotRead: this.itemsStagedNotRead,
        exportsWithoutIndex: this.listing.unindexed.length,
        stagingIndexesUntrusted: this.listing.untrusted.length,
        stagingIndexesUnreadable: this.listing.unreadableIndexes.length,
        batchesRefused: this.batchesRefused,
      },
      exportsImportedWhole: this.exportsImportedWhole(),
      exportsNotWhole: this.exportsNotWhole(),
      itemsDoneEarlier: 0,
      // Every message listed in the manifests read was read (the chain accounts for each one read).
      balanced: this.messagesRead === this.itemsStaged,
    };
  }
}

/** What to do about export folders (`many`) that no staging index the --public-key key signed vouches for. */
function restageOrAcceptUnsigned(many: boolean): string {
  const them = many ? 'those exports' : 'that export';
  return `the batches are kept in the container to be examined; stage ${them} again with --signing-key (the signed index then vouches for what is staged) and import again, or, to accept stagings made without a signing key (older ones) knowingly, import ${them} without --public-key`;
}

/** `2 export folders have no staging index of their own signed by the --public-key key (a/: why; b/: why): ...`: the first five named. */
function foldersWithoutTrustedIndex(folders: StagedListing['withoutTrustedIndex']): string {
  const many = folders.length > 1;
  const batches = folders.reduce((sum, f) => sum + f.batches, 0);
  const named = `${folders
    .slice(0, 5)
    .map((f) => `${f.folder}: ${f.why}`)
    .join('; ')}${folders.length > 5 ? '; ...' : ''}`;
  return `${many ? `${folders.length} export folders have` : 'the export folder has'} no staging index of ${many ? 'their' : 'its'} own signed by the --public-key key (${named}), and anyone who can write to the container can make such a folder: this import imported none of ${many ? 'their' : 'its'} ${batches} batch(es); ${restageOrAcceptUnsigned(many)}`;
}

/** `2 staged batches that no staging index names (a, b) were`: the first five named. */
function stagedOutside(names: string[]): string {
  return `${names.length} staged batch${names.length > 1 ? 'es' : ''} that no staging index names (${names.slice(0, 5).join(', ')}${names.length > 5 ? ', ...' : ''}) ${names.length > 1 ? 'were' : 'was'}`;
}
