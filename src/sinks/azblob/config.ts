import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { redactSecrets } from '../../redact.js';
import { parseAzureBlobLocation, type AzureBlobLocation } from '../../formats/staged-batch/location.js';
import { parseSinkOptions, withoutQuery } from '../options.js';
import { azureBlobOptions } from './options.js';

export interface AzureBlobSinkConfig extends AzureBlobLocation {
  /** Messages in one batch at most. */
  messages: number;
  /** Bytes of messages in one batch at most (a single larger message gets a batch of its own). */
  maxBatchBytes: number;
  /** Events per window: batches never span windows, so a re-run checks one window at a time. */
  windowEvents: number;
  /** Batches uploading at once. */
  concurrency: number;
  /** A batch waits this long for more messages before it is uploaded as it is. */
  lingerMs: number;
  /** Attempts after the first for each storage request. */
  retries: number;
}

/** Parses `azblob://CONTAINER[/PREFIX][?OPTIONS]` (see `azureBlobOptions`). */
export function parseAzureBlobSpec(spec: string): AzureBlobSinkConfig {
  // Redacted first: a password may hold a `?`.
  const bad = (why: string) => new PivotArchiveError(ErrorCode.SINK_CONFIG, `Azure Blob sink ${withoutQuery(redactSecrets(spec))}: ${why}`);
  const { location } = parseAzureBlobLocation(spec, bad);
  // The query as typed (the location's parse decodes it): an unknown key is named as the user wrote it.
  const q = spec.indexOf('?');
  const options = parseSinkOptions(azureBlobOptions, q < 0 ? '' : spec.slice(q + 1), bad);
  return {
    ...location,
    messages: options.messages,
    maxBatchBytes: options.mib * 1024 * 1024,
    windowEvents: options.events,
    concurrency: options.concurrency,
    lingerMs: options.linger,
    retries: options.retries,
  };
}
