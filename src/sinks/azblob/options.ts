import { integer } from '../options.js';

/** The spec's form, for messages and help. */
export const AZURE_BLOB_FORM = 'azblob://CONTAINER[/PREFIX][?messages=&mib=&events=&concurrency=&linger=&retries=]';

/** The options of `azblob://CONTAINER/PREFIX?...`, each with its default and bounds (see SPEC.md). */
export const azureBlobOptions = {
  messages: integer({ default: 500, min: 1, max: 50_000, help: 'messages in one batch at most' }),
  mib: integer({ default: 8, min: 1, max: 256, unit: 'MiB', help: 'bytes of messages in one batch at most (a larger message is a batch of its own)' }),
  events: integer({ default: 1000, min: 1, max: 1_000_000, help: 'events per window: batches never span windows' }),
  concurrency: integer({ default: 2, min: 1, max: 32, help: 'batches uploading at once' }),
  linger: integer({ default: 250, min: 0, max: 60_000, unit: 'ms', help: 'how long a batch waits for more messages before it is uploaded' }),
  retries: integer({ default: 3, min: 0, max: 20, help: 'attempts after the first for each storage request' }),
};
