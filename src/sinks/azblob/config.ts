import { ErrorCode, PivotArchiveError } from '../../errors.js';
import { redactSecrets } from '../../redact.js';
import { parseAzureBlobLocation, type AzureBlobLocation } from '../../formats/staged-batch/location.js';
import { integerOption } from '../query.js';

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

const SINK_KEYS = ['messages', 'mib', 'events', 'concurrency', 'linger', 'retries'];

/** Parses `azblob://CONTAINER[/PREFIX][?messages=500&mib=8&events=1000&concurrency=2&linger=250&retries=3]`. */
export function parseAzureBlobSpec(spec: string): AzureBlobSinkConfig {
  const bad = (why: string) => new PivotArchiveError(ErrorCode.SINK_CONFIG, `Azure Blob sink ${redactSecrets(spec)}: ${why}`);
  const { location, query } = parseAzureBlobLocation(spec, bad);
  for (const key of query.keys()) {
    if (!SINK_KEYS.includes(key)) throw bad(`unknown option ${JSON.stringify(key)} (known: ${SINK_KEYS.join(', ')})`);
  }
  return {
    ...location,
    messages: integerOption(query.get('messages'), 500, 1, 50_000, 'messages', bad),
    maxBatchBytes: integerOption(query.get('mib'), 8, 1, 256, 'mib', bad) * 1024 * 1024,
    windowEvents: integerOption(query.get('events'), 1000, 1, 1_000_000, 'events', bad),
    concurrency: integerOption(query.get('concurrency'), 2, 1, 32, 'concurrency', bad),
    lingerMs: integerOption(query.get('linger'), 250, 0, 60_000, 'linger', bad),
    retries: integerOption(query.get('retries'), 3, 0, 20, 'retries', bad),
  };
}
