import { ErrorCode, PivotArchiveError } from '../errors.js';
import { maildirSinkFactory } from './maildir/index.js';
import type { Sink, SinkFactory } from './sink.js';

export type { Sink, SinkFactory, WriteOutcome } from './sink.js';

const builtIn: SinkFactory[] = [maildirSinkFactory];

/** Creates the sink a spec such as `maildir:/srv/mail` names, validating it before any I/O. */
export function createSink(spec: string, options: { cwd: string }, factories: SinkFactory[] = builtIn): Sink {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(spec)?.[1]?.toLowerCase();
  const factory = factories.find((f) => f.scheme === scheme);
  if (!factory) {
    throw new PivotArchiveError(
      ErrorCode.SINK_CONFIG,
      `unknown sink ${JSON.stringify(spec.replace(/\?.*$/, ''))}: expected one of ${factories.map((f) => `${f.scheme}:...`).join(', ')}`,
    );
  }
  return factory.create(spec, options);
}
