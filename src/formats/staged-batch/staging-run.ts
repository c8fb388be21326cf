// The record a staging run leaves in an export's folder before it stages a batch of it, and marks
// finished once the export's index is written: an import tells by it that the export's staging is
// part-way (a run killed, failed or still running), whatever older index still stands. See
// src/sinks/azblob/SPEC.md and src/sources/staged-batches/SPEC.md.
import { exportFolder, type AzureBlobLocation } from './location.js';
import { folderOfIndex } from './staging-index.js';

/**
 * The blob in an export's folder whose lease a staging run holds while it stages that export, so
 * that two runs never stage one export at once (each reads what the export holds once, and would
 * stage what the other stages). Not a `.zip` and not an `index-*.json`: the staging listing, the
 * import and verify's reader pass it by. A run that ends deletes it; a killed run's lease expires.
 */
export const STAGING_LOCK = 'staging.lock';

/** `<prefix>/<URL-encoded exportId>/staging.lock`. */
export function stagingLockName(location: AzureBlobLocation, exportId: string): string {
  return `${exportFolder(location, exportId)}${STAGING_LOCK}`;
}

export const RUN_FORMAT = 'pivot-archive-staging-run';
/**
 * The record's blob name in an export's folder. Not a `.zip` nor an `index-*.json`; it sorts after
 * `staging.lock`, so a folder holding the lock and this alone still has no batches to the sink.
 */
export const STAGING_RUN = 'staging.run';

/**
 * The blob metadata every batch a staging run of this version stages carries: the run that staged it
 * wrote the export's staging-run record first, and writes an index when it finishes. So a folder
 * whose batches carry it, with neither that record nor an index beside them, is a staging run's that
 * did not finish (the container emptied or recreated under it, a clean-up that left the batches),
 * never an older version's staging (whose batches lack it, and which wrote neither).
 */
export const STAGED_BY_RECORDING_RUN = { stagingrun: '1' } as const;

/** Whether a batch's blob metadata says a staging run that writes its staging-run record staged it (`STAGED_BY_RECORDING_RUN`). */
export function stagedByRecordingRun(metadata: Record<string, string> | undefined): boolean {
  return metadata?.stagingrun !== undefined;
}

export interface StagingRun {
  format: typeof RUN_FORMAT;
  version: 1;
  exportId: string;
  startedAt: string;
  /** `<host> pid <pid>` of the staging run. */
  by: string;
  /** Set once the run wrote the export's index (`index`): absent, the export's staging is part-way. */
  finishedAt?: string;
  index?: string;
}

/** `<prefix>/<URL-encoded exportId>/staging.run`. */
export function stagingRunName(location: AzureBlobLocation, exportId: string): string {
  return `${exportFolder(location, exportId)}${STAGING_RUN}`;
}

/** The export folder of a staging-run blob's name, or undefined when it is none. */
export function folderOfStagingRun(name: string): string | undefined {
  const slash = name.lastIndexOf('/');
  return name.slice(slash + 1) === STAGING_RUN ? name.slice(0, slash + 1) : undefined;
}

export function stagingRunText(run: StagingRun): string {
  return `${JSON.stringify(run)}\n`;
}

/** The record in a blob's text; throws when it is not one. */
export function parseStagingRun(text: string): StagingRun {
  const value = JSON.parse(text) as Partial<StagingRun> | null;
  if (value?.format !== RUN_FORMAT || value.version !== 1 || typeof value.exportId !== 'string' || typeof value.startedAt !== 'string' || typeof value.by !== 'string') {
    throw new Error(`not a ${RUN_FORMAT} version 1`);
  }
  if (value.finishedAt !== undefined && typeof value.finishedAt !== 'string') throw new Error('its finishedAt is not a time');
  if (value.index !== undefined && (typeof value.index !== 'string' || folderOfIndex(value.index) === undefined)) throw new Error('its index is not the name of a staging index');
  // A run marks its record finished together with the index it wrote (every version did): finished without one, it vouches for nothing.
  if (value.finishedAt !== undefined && value.index === undefined) throw new Error('it is marked finished but names no staging index');
  return value as StagingRun;
}
