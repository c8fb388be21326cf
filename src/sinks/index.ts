import { ErrorCode, PivotArchiveError } from '../errors.js';
import { redactSecrets } from '../redact.js';
import { maildirSinkFactory } from './maildir/index.js';
import { imapSinkFactory, imapsSinkFactory } from './imap/index.js';
import { azureBlobSinkFactory } from './azblob/index.js';
import type { Sink, SinkFactory, SinkOptions } from './sink.js';

export type { Sink, SinkFactory, SinkOptions, WriteOutcome } from './sink.js';

const builtIn: SinkFactory[] = [maildirSinkFactory, imapSinkFactory, imapsSinkFactory, azureBlobSinkFactory];

/** Creates the sink a spec such as `maildir:/srv/mail` names, validating it before any I/O. */
export function createSink(spec: string, options: SinkOptions, factories: SinkFactory[] = builtIn): Sink {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(spec)?.[1]?.toLowerCase();
  const factory = factories.find((f) => f.scheme === scheme);
  if (!factory) {
    throw new PivotArchiveError(
      ErrorCode.SINK_CONFIG,
      `unknown sink ${JSON.stringify(redactSecrets(spec.replace(/\?.*$/, '')))}: expected one of ${factories.map((f) => `${f.scheme}:...`).join(', ')}`,
    );
  }
  return factory.create(spec, options);
}
